"""Compare two exports side by side, and check one against a baseline (the CI guard behind `pabench check`).

Runs are paired on their full configuration (report/pairing.py). `check` holds what is deterministic for a seed
(memory, preemptions, schedule) exactly, and timing only when asked, within the larger of the tolerance and the
spread or the confidence interval that `pabench run --repeat N` measured: a guard that fails on noise gets switched
off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
from rich import box
from rich.table import Table

from pabench.bench.metrics import is_missing
from pabench.bench.repeat import LEGACY_NAMES, TIMING_METRICS, ci_column, spread_column
from pabench.errors import ConfigError
from pabench.report.fit import Column, FitTable
from pabench.report.pairing import pair_runs
from pabench.report.tables import cell

# Deterministic for a seed (the same requests, the same schedule): held exactly.
DETERMINISTIC_METRICS = ("mean_waste_pct", "mean_slack_pct", "mean_used_pct", "mean_idle_pct", "peak_reserved_bytes",
                         "peak_saved_bytes", "mean_saved_bytes", "num_preemptions", "num_cow_copies", "prefix_hit_pct",
                         "concurrency_mean", "concurrency_max", "peak_concurrency", "num_steps")
CHECKED_METRICS = DETERMINISTIC_METRICS + TIMING_METRICS  # what `check` knows how to judge
# Higher is better; every other checked metric is lower-is-better. Idle (free budget) counts as better: for the
# same work, budget that stays free is budget not spent on slack.
HIGHER_IS_BETTER = frozenset({"output_tok_per_s", "total_tok_per_s", "req_per_s", "mean_used_pct", "mean_idle_pct",
                              "peak_saved_bytes", "mean_saved_bytes", "prefix_hit_pct", "concurrency_mean",
                              "concurrency_max", "peak_concurrency"})
COMPARED_METRICS = ("output_tok_per_s", "total_tok_per_s", "req_per_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms",
                    "tpot_p99_ms", "e2e_p50_ms", "e2e_p99_ms", "mean_waste_pct", "num_preemptions")  # compare's rows
EXACT = 1e-9  # "exactly", relative: float sums may differ in the last bits across numpy builds
ALL_RUNS = "(every run)"


def with_ms_latency(frame: pd.DataFrame) -> pd.DataFrame:
    """An export with the old `e2e_*_s` columns also under their `e2e_*_ms` names (values x 1000)."""
    added = {}
    for old, new in LEGACY_NAMES.items():
        if old in frame.columns and new not in frame.columns:
            added[new] = pd.to_numeric(frame[old], errors="coerce") * 1e3 if _numeric(frame[old]) else frame[old]
            if spread_column(old) in frame.columns:
                added[spread_column(new)] = frame[spread_column(old)]
    return frame.assign(**added) if added else frame


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column)


def _number(value: Any, name: str, column: str, run: str) -> float | None:
    """A metric cell as a float (None when empty); ConfigError naming the file, column, run and value otherwise."""
    if is_missing(value) or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {column} of {run} is not a number: {value!r}") from None
    return None if math.isnan(number) else number


def _worsening(metric: str, baseline: float, current: float) -> float:
    """Relative change in the bad direction: +0.2 = 20% worse, negative = better, inf when baseline is 0."""
    delta = baseline - current if metric in HIGHER_IS_BETTER else current - baseline
    if baseline == 0:
        return 0.0 if delta <= 0 else math.inf
    return delta / abs(baseline)


def compare_table(a: pd.DataFrame, b: pd.DataFrame, on_warning: Callable[[str], None] | None = None,
                  names: tuple[str, str] = ("A", "B")) -> Table:
    """Side by side key metrics of export A and export B, paired run by run, with B/A. Mismatched or duplicate
    runs do not stop a comparison: each is one line passed to `on_warning`."""
    a, b = with_ms_latency(a), with_ms_latency(b)
    pairing = pair_runs(a, b, names=names, mismatch="warn")
    for line in pairing.warnings:
        if on_warning:
            on_warning(line)
    metrics = [m for m in COMPARED_METRICS if m in a.columns and m in b.columns]
    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    for header, justify in (("run", "left"), ("metric", "left"), ("A", "right"), ("B", "right"), ("B/A", "right")):
        table.add_column(header, justify=justify)
    rows = [(p.run, p.baseline, p.current) for p in pairing.pairs] + [(run, None, r) for run, r in pairing.extra]
    for run, row_a, row_b in rows:
        for i, metric in enumerate(metrics):
            va = None if row_a is None else _number(row_a[metric], names[0], metric, run)
            vb = None if row_b is None else _number(row_b[metric], names[1], metric, run)
            ratio = "–"
            if va is not None and vb is not None and va != 0:
                worse = _worsening(metric, va, vb)
                colour = "red" if worse > 0.005 else "green" if worse < -0.005 else ""
                ratio = f"[{colour}]{vb / va:.2f}×[/]" if colour else f"{vb / va:.2f}×"
            table.add_row(run if i == 0 else "", metric, "missing" if row_a is None else cell(va),
                          "missing" if row_b is None else cell(vb), ratio, end_section=i == len(metrics) - 1)
    return table


def parse_tolerance(text: str) -> float:
    """'10%' -> 0.10, '0.1' -> 0.1. Bare numbers are fractions in [0, 1]; ConfigError otherwise."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"tolerance {text!r}: expected a percentage like '10%' or a fraction like '0.1'") from None
    if not math.isfinite(value) or value < 0 or (not raw.endswith("%") and value > 1):
        raise ConfigError(f"tolerance {text!r}: must be >= 0 (a fraction <= 1, or a percentage like '10%')")
    return value


@dataclass(frozen=True)
class Regression:
    """One metric of one run that got worse than the baseline by more than its tolerance (or went missing)."""

    run: str  # backend and the settings that tell runs apart, or ALL_RUNS for a column missing from current
    metric: str  # column name, or "(run)" when the whole run is missing from current
    baseline: float | None
    current: float | None
    change: float  # relative worsening: 0.2 = 20% worse; inf when missing or the baseline was 0

    def __str__(self) -> str:
        if self.metric == "(run)":
            return f"{self.run}: missing from the current results"
        if self.run == ALL_RUNS:
            return f"{self.metric}: the baseline has it, the current results have no such column"
        if self.current is None:
            return f"{self.run}: {self.metric} has no value in the current results"
        return f"{self.run}: {self.metric} {self.baseline:g} -> {self.current:g} ({self.change:+.1%} worse)"


def chosen_metrics(baseline: pd.DataFrame, metrics: tuple[str, ...] | None, timing: bool,
                   baseline_name: str = "baseline") -> list[str]:
    """The metrics a check judges: those named (each must be in the baseline), else the deterministic ones the
    baseline has; plus, with `timing`, the timing ones it has. ConfigError for an unknown or absent name."""
    named = [LEGACY_NAMES.get(m, m) for m in metrics or ()]
    unknown = sorted(set(named) - set(CHECKED_METRICS))
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(CHECKED_METRICS)}")
    absent = [m for m in named if m not in baseline.columns]
    if absent:
        raise ConfigError(f"{baseline_name}: no {', '.join(absent)} column to check against (asked for by --metrics)")
    chosen = set(named) if named else {m for m in DETERMINISTIC_METRICS if m in baseline.columns}
    if timing:
        chosen |= {m for m in TIMING_METRICS if m in baseline.columns}
    if not chosen:
        raise ConfigError(f"{baseline_name}: none of the checked metrics is in it ({', '.join(CHECKED_METRICS)})")
    return [m for m in CHECKED_METRICS if m in chosen]


def _tolerance(metric: str, max_regression: float, before: pd.Series, now: pd.Series,
               names: tuple[str, str], run: str) -> float:
    """EXACT for a deterministic metric; for a timing one the largest of max_regression, either side's repeat
    spread and, for means over seeds, the two 95% intervals combined (sqrt(a² + b²)) relative to the baseline
    (a deterministic metric that a repeated run saw vary gets its spread too; over the same seeds it is exact).
    `names`: (baseline, current), for messages."""
    timing = metric in TIMING_METRICS
    column = spread_column(metric)
    sides = ((before, names[0]), (now, names[1]))
    spreads = [_number(row.get(column), name, column, run) for row, name in sides]
    allowed = [max_regression if timing else EXACT, *(s / 100 for s in spreads if s is not None and math.isfinite(s))]
    base = _number(before.get(metric), names[0], metric, run)
    if timing and base:
        cis = [_number(row.get(ci_column(metric)), name, ci_column(metric), run) for row, name in sides]
        cis = [c for c in cis if c is not None and math.isfinite(c)]
        if cis:
            allowed.append(math.sqrt(sum(c * c for c in cis)) / abs(base))
    return max(allowed)


def check_regressions(current: pd.DataFrame, baseline: pd.DataFrame, max_regression: float,
                      metrics: tuple[str, ...] | None = None, *, timing: bool = False,
                      allow_config_mismatch: bool = False,
                      names: tuple[str, str] = ("current", "baseline")) -> tuple[list[Regression], FitTable]:
    """Direction-aware check of `current` against `baseline`, run by run on the full configuration.

    Deterministic metrics must not get worse at all; timing metrics (with `timing`, or named in `metrics`) may
    get worse by max(max_regression, the spread of either side's repeats). `names`: (current, baseline) as the
    user wrote them, for messages. ConfigError for input problems (the caller's exit 1)."""
    if not (math.isfinite(max_regression) and max_regression >= 0):
        raise ConfigError(f"max_regression: must be >= 0 (got {max_regression})")
    current, baseline = with_ms_latency(current), with_ms_latency(baseline)
    chosen = chosen_metrics(baseline, metrics, timing, names[1])
    pairing = pair_runs(baseline, current, names=(names[1], names[0]),
                        mismatch="allow" if allow_config_mismatch else "error")
    regressions = [Regression(ALL_RUNS, m, None, None, math.inf) for m in chosen if m not in current.columns]
    present = [m for m in chosen if m in current.columns]
    lines: list[tuple[str, ...]] = []  # (run, metric, baseline, current, change, allowed, status)
    for r in regressions:
        lines.append((ALL_RUNS, r.metric, "", "no column", "", "", "[red]MISSING[/]"))
    for pair in pairing.pairs:
        if pair.current is None:
            regressions.append(Regression(pair.run, "(run)", None, None, math.inf))
            lines.append((pair.run, "(all)", "", "missing", "", "", "[red]MISSING[/]"))
            continue
        for metric in present:
            b = _number(pair.baseline[metric], names[1], metric, pair.run)
            c = _number(pair.current[metric], names[0], metric, pair.run)
            if b is None:  # nothing to hold it to (e.g. device time on a CPU run)
                continue
            allowed = _tolerance(metric, max_regression, pair.baseline, pair.current, names[::-1], pair.run)
            worse = math.inf if c is None else _worsening(metric, b, c)
            bad = worse > allowed
            if bad:
                regressions.append(Regression(pair.run, metric, b, c, worse))
            change = "–" if c is None else "n/a" if b == 0 else f"{(c - b) / abs(b):+.1%}"
            status = "[red]REGRESSION[/]" if bad else "[green]ok[/]" if worse <= EXACT else "[green]ok (noise)[/]"
            lines.append((pair.run, metric, cell(b), "–" if c is None else cell(c), change,
                          "exact" if allowed == EXACT else f"{allowed:.1%}", status))
    for run, _ in pairing.extra:  # not a regression: nothing to hold it to
        lines.append((run, "(all)", "missing", "", "", "", "new"))
    timed = [m for m in chosen if m in TIMING_METRICS]
    rule = "deterministic metrics exact" + (f"; timing within max({max_regression:.1%}, spread)" if timed else "")
    headers = ("run", "metric", "baseline", "current", "change", "allowed", "status")
    columns = [Column(h, [line[i] for line in lines], justify="left" if h in ("run", "metric", "status") else "right")
               for i, h in enumerate(headers)]
    # a FitTable: at 80 columns the values stack under repeated run/metric keys instead of being cut to "…"
    table = FitTable(columns[:2], columns[2:], title=f"{len(regressions)} regression(s): {rule}")
    return regressions, table
