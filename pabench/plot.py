"""`plot_results`: one PNG with the panels a result CSV supports, from `pabench sweep` or a single `pabench run`.

Panels, each only when the data has what it needs:
  * throughput (output tok/s) vs KV budget per backend, or per backend as bars when the budget is fixed
    (and vs max_num_seqs when that was swept);
  * the KV budget split into used / slack / idle % per backend (stacked bars), with the waste % on top;
  * TTFT and TPOT (p50 solid, p99 dashed) vs request rate, or as bars when the rate is fixed;
  * for a page-size sweep (vLLM paper's trade-off): waste % vs page size, and decode step ms (plus kernel µs
    from a `pabench kernels` CSV) vs page size; contiguous backends, which have no page size, as dashed lines.
Rows that differ in other swept parameters are averaged. matplotlib is optional (`pabench[plot]`) and is
imported here, lazily, through its Agg canvas only: no pyplot, no global backend state.
"""

from __future__ import annotations

import datetime as _dt
import io
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pabench.core.errors import ConfigError, PabenchError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

PANEL_W_IN, PANEL_H_IN, TITLE_H_IN, DPI = 6.4, 4.2, 0.5, 100
MAX_COLUMNS = 2
_MIB = 2**20
_THROUGHPUT = "output throughput (tok/s)"


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PabenchError("matplotlib is not installed: pip install 'pabench[plot]'") from None


def figure_size_px(num_panels: int) -> tuple[int, int]:
    """(width, height) in pixels of a figure with `num_panels` panels."""
    ncols = min(MAX_COLUMNS, num_panels)
    nrows = math.ceil(num_panels / ncols)
    return round(PANEL_W_IN * ncols * DPI), round((PANEL_H_IN * nrows + TITLE_H_IN) * DPI)


# ---- what the data supports -----------------------------------------------------------------------------------

def _column(frame: pd.DataFrame, *names: str) -> str | None:
    """The first of `names` that the frame has with at least one value."""
    return next((n for n in names if n in frame.columns and frame[n].notna().any()), None)


def _is_paged(frame: pd.DataFrame) -> pd.Series:
    return frame["backend"].astype(str).str.startswith("paged")


def _page_size_column(frame: pd.DataFrame) -> str | None:
    """The column holding paged rows' page size, if those rows have two or more distinct ones."""
    column = _column(frame, "sweep_page_size", "page_size")
    if column is None or frame.loc[_is_paged(frame), column].nunique() < 2:
        return None
    return column


def _varies(frame: pd.DataFrame, *names: str) -> str | None:
    column = _column(frame, *names)
    return column if column is not None and frame[column].nunique() > 1 else None


def choose_panels(frame: pd.DataFrame, kernels: pd.DataFrame | None = None) -> list[str]:
    """Names of the panels `frame` (and an optional kernels frame) can support, in drawing order."""
    panels = []
    if "output_tok_per_s" in frame.columns:
        panels.append("throughput_vs_budget" if _varies(frame, "sweep_kv_budget_bytes", "kv_budget_bytes")
                      else "throughput")
    if "output_tok_per_s" in frame.columns and _varies(frame, "sweep_max_num_seqs"):
        panels.append("throughput_vs_max_num_seqs")
    if {"mean_used_pct", "mean_slack_pct", "mean_idle_pct"} <= set(frame.columns):
        panels.append("waste")
    if _varies(frame, "sweep_rate"):
        panels += [p for p, c in (("ttft_vs_rate", "ttft_p50_ms"), ("tpot_vs_rate", "tpot_p50_ms"))
                   if c in frame.columns]
    elif {"ttft_p50_ms", "tpot_p50_ms"} <= set(frame.columns):
        panels.append("latency")
    page_sweep = _page_size_column(frame) is not None
    if page_sweep and "mean_waste_pct" in frame.columns:
        panels.append("waste_vs_page_size")
    if (page_sweep and "decode_step_mean_ms" in frame.columns) or _kernel_lines(kernels):
        panels.append("time_vs_page_size")
    if not panels:
        raise ConfigError("nothing to plot: the CSV has none of the pabench result columns")
    return panels


# ---- series -------------------------------------------------------------------------------------------------

def _labels(frame: pd.DataFrame, by_page_size: bool) -> pd.Series:
    """Series name per row: the backend, plus ' p<page size>' for paged rows when asked and page sizes vary."""
    labels = frame["backend"].astype(str)
    column = _page_size_column(frame) if by_page_size else None
    if column is not None:
        paged = _is_paged(frame)
        labels = labels.where(~paged, labels + " p" + frame[column].fillna(0).astype(int).astype(str))
    return labels


def _mean_by(frame: pd.DataFrame, label: pd.Series, x: str | None, y: str) -> dict[str, Any]:
    """{label: mean of y} (x None) or {label: Series of mean y indexed by sorted x}; rows keep first-seen order."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(label):
        rows = frame[label == name]
        out[name] = rows[y].mean() if x is None else rows.groupby(x)[y].mean().sort_index()
    return out


def _kernel_lines(kernels: pd.DataFrame | None) -> dict[str, Any]:
    """{'<impl> (case x)': median µs by page size} for kernel rows that have a page size and a time."""
    if kernels is None or "page_size" not in kernels.columns:
        return {}
    time = _column(kernels, "median_us", "mean_us", "time_us") or next(
        (c for c in kernels.columns if str(c).endswith("_us") and kernels[c].notna().any()), None)
    if time is None:
        return {}
    rows = kernels[kernels["page_size"].notna() & kernels[time].notna()]
    if "check" in rows.columns:
        rows = rows[rows["check"].astype(str) != "ERROR"]
    keys = [c for c in ("impl", "case") if c in rows.columns]
    lines: dict[str, Any] = {}
    for key, group in (rows.groupby(keys, sort=False) if keys else [((), rows)]):
        key = key if isinstance(key, tuple) else (key,)
        name = str(key[0]) if key else "kernel"
        if len(key) > 1 and rows["case"].nunique() > 1:
            name += f" (case {key[1]})"
        series = group.groupby("page_size")[time].mean().sort_index()
        if len(series) >= 1:
            lines[name] = series
    return lines


# ---- drawing helpers ----------------------------------------------------------------------------------------

def _bars(ax: Axes, values: dict[str, float], ylabel: str, title: str) -> None:
    """One bar per series, coloured in series order."""
    names = list(values)
    ax.bar(range(len(names)), [values[n] for n in names], color=[f"C{i}" for i in range(len(names))])
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def _lines(ax: Axes, series: dict[str, Any], style: str = "-", marker: str = "o", prefix: str = "") -> None:
    """One line per series (a Series indexed by x), coloured in series order."""
    for i, (name, s) in enumerate(series.items()):
        ax.plot(s.index, s.values, style, marker=marker, label=prefix + name, color=f"C{i}")


def _contiguous_refs(ax: Axes, frame: pd.DataFrame, y: str, start_colour: int) -> None:
    """Dashed horizontal lines for backends without a page size (their value does not depend on it)."""
    others = frame[~_is_paged(frame)]
    for i, (name, value) in enumerate(_mean_by(others, others["backend"].astype(str), None, y).items()):
        if not (isinstance(value, float) and math.isnan(value)):
            ax.axhline(value, ls="--", lw=1.2, color=f"C{start_colour + i}", label=f"{name} (no pages)")


def _log2_axis(ax: Axes, values: Iterable[float], label: str) -> None:
    """A log2 x axis ticked at the data's own values (8, 16, 32 rather than 2^3, 2^4, 2^5)."""
    ticks = sorted({float(v) for v in values if not math.isnan(float(v))})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(label)


def _throughput_lines(ax: Axes, frame: pd.DataFrame, x: str, xlabel: str, title: str) -> None:
    """Output tok/s per series against column `x`, on a log2 axis."""
    _lines(ax, _mean_by(frame, _labels(frame, True), x, "output_tok_per_s"))
    _log2_axis(ax, frame[x], xlabel)
    ax.set_ylabel(_THROUGHPUT)
    ax.set_title(title)


def _latency_lines(ax: Axes, frame: pd.DataFrame, metric: str) -> None:
    """`metric` ('ttft' or 'tpot') p50 solid and p99 dashed against the swept request rate."""
    label = _labels(frame, False)
    _lines(ax, _mean_by(frame, label, "sweep_rate", f"{metric}_p50_ms"), "-", prefix="p50 ")
    _lines(ax, _mean_by(frame, label, "sweep_rate", f"{metric}_p99_ms"), "--", marker="x", prefix="p99 ")
    ax.set_xlabel("request rate (requests/s)")
    ax.set_ylabel(f"{metric.upper()} (ms)")
    ax.set_yscale("log")
    ax.set_title(f"{metric.upper()} p50 / p99 vs request rate")


# ---- panels: each draws on `ax`, returning a twin y axis if it made one (it shares the legend) ----------------

def _panel_throughput_vs_budget(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> Axes | None:
    budget = _column(frame, "sweep_kv_budget_bytes", "kv_budget_bytes")
    _throughput_lines(ax, frame.assign(_mib=frame[budget] / _MIB), "_mib", "KV budget (MiB)",
                      "Throughput vs KV budget")
    return None


def _panel_throughput_vs_max_num_seqs(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> Axes | None:
    _throughput_lines(ax, frame, "sweep_max_num_seqs", "max_num_seqs (batch limit, sequences)",
                      "Throughput vs batch limit")
    return None


def _panel_throughput(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> Axes | None:
    _bars(ax, _mean_by(frame, _labels(frame, True), None, "output_tok_per_s"), _THROUGHPUT, "Throughput per backend")
    return None


def _panel_waste(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> Axes | None:
    label = _labels(frame, True)
    names = list(dict.fromkeys(label))
    bottom = [0.0] * len(names)
    for column, colour, name in (("mean_used_pct", "0.55", "used (tokens)"), ("mean_slack_pct", "C1", "slack"),
                                 ("mean_idle_pct", "C9", "idle")):
        values = [_mean_by(frame, label, None, column)[n] for n in names]
        ax.bar(range(len(names)), values, bottom=bottom, color=colour, label=name)
        bottom = [b + (0.0 if math.isnan(v) else v) for b, v in zip(bottom, values)]
    if "mean_waste_pct" in frame.columns:
        waste = _mean_by(frame, label, None, "mean_waste_pct")
        for i, n in enumerate(names):
            if not math.isnan(waste[n]):
                ax.text(i, bottom[i] + 1, f"waste {waste[n]:.0f}%", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylim(0, 115)
    ax.set_ylabel("% of KV budget (mean over the run)")
    ax.set_title("KV memory: used / slack / idle")
    return None


def _panel_ttft_vs_rate(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> Axes | None:
    _latency_lines(ax, frame, "ttft")
    return None


def _panel_tpot_vs_rate(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> Axes | None:
    _latency_lines(ax, frame, "tpot")
    return None


def _panel_latency(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> Axes | None:
    label = _labels(frame, True)
    names = list(dict.fromkeys(label))
    metrics = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms")
    width = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        if metric in frame.columns:
            values = _mean_by(frame, label, None, metric)
            ax.bar([i + (j - 1.5) * width for i in range(len(names))], [values[n] for n in names], width,
                   label=f"{metric[:4].upper()} {metric[5:8]}", color=f"C{j}")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency percentiles")
    return None


def _panel_waste_vs_page_size(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> Axes | None:
    column = _page_size_column(frame)
    paged = frame[_is_paged(frame)]
    series = _mean_by(paged, paged["backend"].astype(str), column, "mean_waste_pct")
    _lines(ax, series)
    _contiguous_refs(ax, frame, "mean_waste_pct", len(series))
    _log2_axis(ax, paged[column], "page size (tokens)")
    ax.set_ylabel("KV waste (% of reserved)")
    ax.set_title("Waste vs page size")
    return None


def _panel_time_vs_page_size(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> Axes | None:
    column = _page_size_column(frame)
    kernel_lines = _kernel_lines(kernels)
    sizes = [v for s in kernel_lines.values() for v in s.index]
    target = ax
    if column is not None and "decode_step_mean_ms" in frame.columns:
        paged = frame[_is_paged(frame)]
        series = _mean_by(paged, paged["backend"].astype(str), column, "decode_step_mean_ms")
        sizes += list(paged[column])
        _lines(ax, series)
        _contiguous_refs(ax, frame, "decode_step_mean_ms", len(series))
        ax.set_ylabel("mean decode step (ms)")
        if kernel_lines:
            target = ax.twinx()
    if kernel_lines:
        for i, (name, s) in enumerate(kernel_lines.items()):
            target.plot(s.index, s.values, ":", marker="s", color=f"C{5 + i}", label=f"kernel {name}")
        target.set_ylabel("decode kernel time (µs)")
    _log2_axis(ax, sizes, "page size (tokens)")
    ax.set_title("Decode cost vs page size")
    return None if target is ax else target


_PANELS: dict[str, Callable[[Axes, pd.DataFrame, pd.DataFrame | None], Axes | None]] = {
    "throughput_vs_budget": _panel_throughput_vs_budget,
    "throughput_vs_max_num_seqs": _panel_throughput_vs_max_num_seqs,
    "throughput": _panel_throughput,
    "waste": _panel_waste,
    "ttft_vs_rate": _panel_ttft_vs_rate,
    "tpot_vs_rate": _panel_tpot_vs_rate,
    "latency": _panel_latency,
    "waste_vs_page_size": _panel_waste_vs_page_size,
    "time_vs_page_size": _panel_time_vs_page_size,
}


def _draw(ax: Axes, panel: str, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> None:
    """Draw `panel` on `ax`, then one legend (covering a twin y axis too) and a light grid."""
    twin = _PANELS[panel](ax, frame, kernels)
    handles, labels = ax.get_legend_handles_labels()
    if twin is not None:
        twin_handles, twin_labels = twin.get_legend_handles_labels()
        handles, labels = handles + twin_handles, labels + twin_labels
    if handles:
        (twin or ax).legend(handles, labels, fontsize=7, loc="best")
    ax.grid(True, alpha=0.3)


# ---- the figure ---------------------------------------------------------------------------------------------

def _one(frame: pd.DataFrame, column: str) -> str:
    values = [str(v) for v in dict.fromkeys(frame[column].dropna())] if column in frame.columns else []
    return "/".join(values) if values else "?"


def figure_title(frame: pd.DataFrame, today: _dt.date | None = None) -> str:
    """'pabench · workload default · model tiny · cpu · 2025-01-31' (date from a `date` column, else today)."""
    date = _one(frame, "date") if _column(frame, "date") else (today or _dt.date.today()).isoformat()
    return (f"pabench · workload {_one(frame, 'workload')} · model {_one(frame, 'model')} · "
            f"{_one(frame, 'device')} · {date}")


def plot_results(frame: pd.DataFrame, out: str | Path, kernels: pd.DataFrame | None = None) -> tuple[Path, list[str]]:
    """Draw the panels `frame` supports into one PNG at `out` (written atomically); returns (path, panels)."""
    _require_matplotlib()
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
        _draw(ax, panel, frame, kernels)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(figure_title(frame))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return atomic_write_bytes(out, buffer.getvalue()), panels
