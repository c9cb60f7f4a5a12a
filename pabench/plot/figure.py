"""`plot_results`: one PNG with the panels a result CSV supports, from `pabench sweep` or a single `pabench run`.

Panels, each only when the data has what it needs:
  * throughput (output tok/s) vs KV budget per backend, or per backend as bars when the budget is fixed
    (and vs max_num_seqs when that was swept);
  * the KV budget split into used / slack / idle % per backend (stacked bars), with the waste % on top;
  * TTFT and TPOT (p50 solid, p99 dashed) vs request rate, or as bars when the rate is fixed;
  * for a page-size sweep (vLLM paper's trade-off): waste % vs page size, and decode step ms (plus kernel µs
    from a `pabench kernels` CSV) vs page size; contiguous backends, which have no page size, as dashed lines.
Rows that differ in other swept parameters are averaged. matplotlib is optional (`pabench[plot]`) and is
imported here, lazily, through its Agg canvas only: no pyplot, no global backend state. The series come from
`plot_series.py`; each panel is drawn by `plot_panels.py`.
"""

from __future__ import annotations

import datetime as _dt
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

from pabench.errors import ConfigError, PabenchError
from pabench.plot.panels import draw_panel
from pabench.plot.series import first_column, kernel_lines, page_size_column, varies

if TYPE_CHECKING:
    import pandas as pd

PANEL_W_IN, PANEL_H_IN, TITLE_H_IN, DPI = 6.4, 4.2, 0.5, 100
MAX_COLUMNS = 2


def require_matplotlib() -> None:
    """PabenchError with the install hint when the optional matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PabenchError("matplotlib is not installed: pip install 'pabench[plot]'") from None


def figure_size_px(num_panels: int) -> tuple[int, int]:
    """(width, height) in pixels of a figure with `num_panels` panels."""
    ncols = min(MAX_COLUMNS, num_panels)
    nrows = math.ceil(num_panels / ncols)
    return round(PANEL_W_IN * ncols * DPI), round((PANEL_H_IN * nrows + TITLE_H_IN) * DPI)


# ---- what the data supports -------------------------------------------------------------------------------

def choose_panels(frame: pd.DataFrame, kernels: pd.DataFrame | None = None) -> list[str]:
    """Names of the panels `frame` (and an optional kernels frame) can support, in drawing order."""
    panels = []
    if "output_tok_per_s" in frame.columns:
        panels.append("throughput_vs_budget" if varies(frame, "sweep_kv_budget_bytes", "kv_budget_bytes")
                      else "throughput")
    if "output_tok_per_s" in frame.columns and varies(frame, "sweep_max_num_seqs"):
        panels.append("throughput_vs_max_num_seqs")
    if {"mean_used_pct", "mean_slack_pct", "mean_idle_pct"} <= set(frame.columns):
        panels.append("waste")
    if varies(frame, "sweep_rate"):
        panels += [p for p, c in (("ttft_vs_rate", "ttft_p50_ms"), ("tpot_vs_rate", "tpot_p50_ms"))
                   if c in frame.columns]
    elif {"ttft_p50_ms", "tpot_p50_ms"} <= set(frame.columns):
        panels.append("latency")
    if "slo_met" in frame.columns and varies(frame, "sweep_rate"):  # sweep --slo
        panels.append("slo_rate_vs_budget")
    page_sweep = page_size_column(frame) is not None
    if page_sweep and "mean_waste_pct" in frame.columns:
        panels.append("waste_vs_page_size")
    if (page_sweep and "decode_step_mean_ms" in frame.columns) or kernel_lines(kernels):
        panels.append("time_vs_page_size")
    if not panels:
        raise ConfigError("nothing to plot: the CSV has none of the pabench result columns")
    return panels


# ---- the figure ---------------------------------------------------------------------------------------------

def _one(frame: pd.DataFrame, column: str) -> str:
    """The distinct values of `column`, joined by '/' ('?' when there are none)."""
    values = [str(v) for v in dict.fromkeys(frame[column].dropna())] if column in frame.columns else []
    return "/".join(values) if values else "?"


def figure_title(frame: pd.DataFrame, today: _dt.date | None = None) -> str:
    """'pabench · workload default · model tiny · cpu · 2025-01-31' (date from a `date` column, else today)."""
    date = _one(frame, "date") if first_column(frame, "date") else (today or _dt.date.today()).isoformat()
    return (f"pabench · workload {_one(frame, 'workload')} · model {_one(frame, 'model')} · "
            f"{_one(frame, 'device')} · {date}")


IMAGE_FORMATS = ("png", "pdf", "svg")  # what matplotlib writes without extra packages


def image_format(out: str | Path) -> str:
    """The format `out`'s extension names ('png', 'pdf' or 'svg'); ConfigError for any other, so a PDF name
    never holds PNG bytes."""
    suffix = Path(str(out)).suffix.lower().lstrip(".")
    if suffix not in IMAGE_FORMATS:
        named = f"extension .{suffix}" if suffix else "no extension"
        raise ConfigError(f"{out}: {named}; name the image .png, .pdf or .svg (the extension picks the format)")
    return suffix


def plot_results(frame: pd.DataFrame, out: str | Path, kernels: pd.DataFrame | None = None) -> tuple[Path, list[str]]:
    """Draw the panels `frame` supports into one image at `out` (PNG, PDF or SVG by extension; written
    atomically); returns (path, panels)."""
    fmt = image_format(out)
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pabench.atomic import atomic_write_bytes

    if "backend" not in frame.columns or frame.empty:
        raise ConfigError("nothing to plot: no result rows (is this a pabench CSV?)")
    panels = choose_panels(frame, kernels)
    width, height = figure_size_px(len(panels))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ncols = min(MAX_COLUMNS, len(panels))
    axes = fig.subplots(math.ceil(len(panels) / ncols), ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        draw_panel(ax, panel, frame, kernels)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(figure_title(frame))
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=DPI)
    return atomic_write_bytes(out, buffer.getvalue()), panels
