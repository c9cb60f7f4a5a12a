"""How each `pabench plot` panel is drawn, on the matplotlib `Axes` it is given (no pyplot, no global state).

`PANELS` maps the names `plot.choose_panels` returns to drawing functions; `draw_panel` adds the legend and grid.
Colours follow series order (C0, C1, ...); backends without a page size show as dashed reference lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pabench.plot.series import (first_column, is_paged, kernel_lines, mean_by, page_size_column, series_labels,
                                  shared_points)
from pabench.units import MIB

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

_THROUGHPUT = "output throughput (tok/s)"


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
    others = frame[~is_paged(frame)]
    for i, (name, value) in enumerate(mean_by(others, others["backend"].astype(str), None, y).items()):
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
    _lines(ax, mean_by(frame, series_labels(frame, True), x, "output_tok_per_s"))
    _log2_axis(ax, frame[x], xlabel)
    ax.set_ylabel(_THROUGHPUT)
    ax.set_title(title)


def _latency_lines(ax: Axes, frame: pd.DataFrame, metric: str) -> None:
    """`metric` ('ttft' or 'tpot') p50 solid and p99 dashed against the swept request rate."""
    label = series_labels(frame, False)
    _lines(ax, mean_by(frame, label, "sweep_rate", f"{metric}_p50_ms"), "-", prefix="p50 ")
    _lines(ax, mean_by(frame, label, "sweep_rate", f"{metric}_p99_ms"), "--", marker="x", prefix="p99 ")
    ax.set_xlabel("request rate (requests/s)")
    ax.set_ylabel(f"{metric.upper()} (ms)")
    ax.set_yscale("log")
    ax.set_title(f"{metric.upper()} p50 / p99 vs request rate")


# ---- panels: each draws on `ax`; one that adds a twin y axis returns it (the legend covers both) -------

def _panel_throughput_vs_budget(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> None:
    budget = first_column(frame, "sweep_kv_budget_bytes", "kv_budget_bytes")
    _throughput_lines(ax, frame.assign(_mib=frame[budget] / MIB), "_mib", "KV budget (MiB)",
                      "Throughput vs KV budget")


def _panel_throughput_vs_max_num_seqs(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> None:
    _throughput_lines(ax, frame, "sweep_max_num_seqs", "max_num_seqs (batch limit, sequences)",
                      "Throughput vs batch limit")


def _titled(title: str, note: str) -> str:
    return f"{title}\n({note})" if note else title


def _panel_throughput(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> None:
    frame, label, note = shared_points(frame, series_labels(frame, True))
    _bars(ax, mean_by(frame, label, None, "output_tok_per_s"), _THROUGHPUT, _titled("Throughput per backend", note))


def _panel_waste(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> None:
    frame, label, note = shared_points(frame, series_labels(frame, True))
    names = list(dict.fromkeys(label))
    bottom = [0.0] * len(names)
    for column, colour, name in (("mean_used_pct", "0.55", "used (tokens)"), ("mean_slack_pct", "C1", "slack"),
                                 ("mean_idle_pct", "C9", "idle")):
        values = [mean_by(frame, label, None, column)[n] for n in names]
        ax.bar(range(len(names)), values, bottom=bottom, color=colour, label=name)
        bottom = [b + (0.0 if math.isnan(v) else v) for b, v in zip(bottom, values)]
    if "mean_waste_pct" in frame.columns:
        waste = mean_by(frame, label, None, "mean_waste_pct")
        for i, n in enumerate(names):
            if not math.isnan(waste[n]):
                ax.text(i, bottom[i] + 1, f"waste {waste[n]:.0f}%", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylim(0, 115)
    ax.set_ylabel("% of KV budget (mean over the run)")
    ax.set_title(_titled("KV memory: used / slack / idle", note))


def _panel_ttft_vs_rate(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> None:
    _latency_lines(ax, frame, "ttft")


def _panel_tpot_vs_rate(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> None:
    _latency_lines(ax, frame, "tpot")


def _panel_latency(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> None:
    frame, label, note = shared_points(frame, series_labels(frame, True))
    names = list(dict.fromkeys(label))
    metrics = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms")
    width = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        if metric in frame.columns:
            values = mean_by(frame, label, None, metric)
            ax.bar([i + (j - 1.5) * width for i in range(len(names))], [values[n] for n in names], width,
                   label=f"{metric[:4].upper()} {metric[5:8]}", color=f"C{j}")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.set_title(_titled("Latency percentiles", note))


def _panel_waste_vs_page_size(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> None:
    column = page_size_column(frame)
    paged = frame[is_paged(frame)]
    series = mean_by(paged, paged["backend"].astype(str), column, "mean_waste_pct")
    _lines(ax, series)
    _contiguous_refs(ax, frame, "mean_waste_pct", len(series))
    _log2_axis(ax, paged[column], "page size (tokens)")
    ax.set_ylabel("KV waste (% of reserved)")
    ax.set_title("Waste vs page size")


def _panel_time_vs_page_size(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> Axes | None:
    column = page_size_column(frame)
    kernel_series = kernel_lines(kernels)
    sizes = [v for s in kernel_series.values() for v in s.index]
    target = ax
    if column is not None and "decode_step_mean_ms" in frame.columns:
        paged = frame[is_paged(frame)]
        series = mean_by(paged, paged["backend"].astype(str), column, "decode_step_mean_ms")
        sizes += list(paged[column])
        _lines(ax, series)
        _contiguous_refs(ax, frame, "decode_step_mean_ms", len(series))
        ax.set_ylabel("mean decode step (ms)")
        if kernel_series:
            target = ax.twinx()
    if kernel_series:
        for i, (name, s) in enumerate(kernel_series.items()):
            target.plot(s.index, s.values, ":", marker="s", color=f"C{5 + i}", label=f"kernel {name}")
        target.set_ylabel("decode kernel time (µs)")
    _log2_axis(ax, sizes, "page size (tokens)")
    ax.set_title("Decode cost vs page size")
    return None if target is ax else target


def max_met_rate(rates_met: dict[float, bool]) -> float:
    """The highest rate that met the SLO below the lowest that missed it (NaN: none did); the rule `sweep --slo`
    reports by (bench/sweep.py's `bisect_rate`), applied to the rows of an export."""
    first_miss = min((r for r, met in rates_met.items() if not met), default=math.inf)
    return max((r for r, met in rates_met.items() if met and r < first_miss), default=math.nan)


def _panel_slo_rate_vs_budget(ax: Axes, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> None:
    """`sweep --slo`: per series, the highest request rate that met every target against the KV budget."""
    import pandas as pd  # the module imports it for types only

    budget = first_column(frame, "sweep_kv_budget_bytes", "kv_budget_bytes")
    label = series_labels(frame, True)
    series = {}
    for name in dict.fromkeys(label):
        rows = frame[label == name]
        by_budget = {b / MIB: max_met_rate(dict(zip(group["sweep_rate"].astype(float),
                                                    group["slo_met"].astype(str) == "True")))
                     for b, group in rows.groupby(budget)}
        series[name] = pd.Series(by_budget).sort_index()
    _lines(ax, series)
    _log2_axis(ax, frame[budget] / MIB, "KV budget (MiB)")
    ax.set_ylabel("max request rate within the SLO (req/s)")
    slo = frame["slo"].dropna().astype(str)
    ax.set_title(f"Max sustainable rate vs KV budget ({slo.iloc[0] if len(slo) else 'SLO'})", fontsize=9)


PANELS: dict[str, Callable[[Axes, pd.DataFrame, pd.DataFrame | None], Axes | None]] = {
    "throughput_vs_budget": _panel_throughput_vs_budget,
    "throughput_vs_max_num_seqs": _panel_throughput_vs_max_num_seqs,
    "throughput": _panel_throughput,
    "waste": _panel_waste,
    "ttft_vs_rate": _panel_ttft_vs_rate,
    "tpot_vs_rate": _panel_tpot_vs_rate,
    "latency": _panel_latency,
    "waste_vs_page_size": _panel_waste_vs_page_size,
    "time_vs_page_size": _panel_time_vs_page_size,
    "slo_rate_vs_budget": _panel_slo_rate_vs_budget,
}


def draw_panel(ax: Axes, panel: str, frame: pd.DataFrame, kernels: pd.DataFrame | None) -> None:
    """Draw `panel` on `ax`, then one legend (covering a twin y axis too) and a light grid."""
    twin = PANELS[panel](ax, frame, kernels)
    handles, labels = ax.get_legend_handles_labels()
    if twin is not None:
        twin_handles, twin_labels = twin.get_legend_handles_labels()
        handles, labels = handles + twin_handles, labels + twin_labels
    if handles:
        (twin or ax).legend(handles, labels, fontsize=7, loc="best")
    ax.grid(True, alpha=0.3)
