"""Compare two exports side by side, and check one against a baseline (the CI guard behind `pabench check`).

Rows are matched on backend plus every setting that varies in either export; a metric regresses when it moved
the wrong way (throughput down, latency, waste or preemptions up) by more than the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.table import Table

from pabench.bench.metrics import METRIC_COLUMNS, is_missing
from pabench.errors import ConfigError
from pabench.report.export import META_COLUMNS
from pabench.report.tables import cell

HIGHER_IS_BETTER = ("output_tok_per_s", "total_tok_per_s", "req_per_s")
LOWER_IS_BETTER = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "e2e_p50_s", "e2e_p99_s",
                   "mean_waste_pct", "num_preemptions")
CHECKED_METRICS = HIGHER_IS_BETTER + LOWER_IS_BETTER  # what `check` looks at

def join_columns(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """Columns two exports are matched on: backend plus every setting both have that varies within either."""
    keys = ["backend"]
    for column in a.columns:
        if column in keys or column in METRIC_COLUMNS or column in META_COLUMNS or column.startswith("capacity_"):
            continue
        if column in b.columns and (a[column].nunique(dropna=False) > 1 or b[column].nunique(dropna=False) > 1):
            keys.append(column)
    return keys


def _key_value(value: Any) -> Any:
    """A hashable, comparable cell: numpy scalars as Python, NaN as None."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if is_missing(value) else value


def _rows_by_key(frame: pd.DataFrame, keys: list[str]) -> dict[tuple[Any, ...], pd.Series]:
    """First row of each key tuple, in frame order."""
    rows: dict[tuple[Any, ...], pd.Series] = {}
    for _, row in frame.iterrows():
        rows.setdefault(tuple(_key_value(row[k]) for k in keys), row)
    return rows


def _worsening(metric: str, baseline: float, current: float) -> float:
    """Relative change in the bad direction: +0.2 = 20% worse, negative = better, inf when baseline is 0."""
    delta = baseline - current if metric in HIGHER_IS_BETTER else current - baseline
    if baseline == 0:
        return 0.0 if delta <= 0 else math.inf
    return delta / abs(baseline)


def _key_text(keys: list[str], key: tuple[Any, ...]) -> str:
    return " ".join(str(v) if k == "backend" else f"{k}={v}" for k, v in zip(keys, key))


def compare_table(a: pd.DataFrame, b: pd.DataFrame) -> Table:
    """Side by side key metrics of export A and export B, matched on backend (and swept settings), with B/A."""
    keys = join_columns(a, b)
    metrics = [m for m in CHECKED_METRICS if m in a.columns and m in b.columns]
    rows_a, rows_b = _rows_by_key(a, keys), _rows_by_key(b, keys)
    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    for header, justify in (("run", "left"), ("metric", "left"), ("A", "right"), ("B", "right"), ("B/A", "right")):
        table.add_column(header, justify=justify)
    for key in list(rows_a) + [k for k in rows_b if k not in rows_a]:
        row_a, row_b = rows_a.get(key), rows_b.get(key)
        for i, metric in enumerate(metrics):
            va = None if row_a is None else row_a[metric]
            vb = None if row_b is None else row_b[metric]
            ratio = "–"
            if not (is_missing(va) or is_missing(vb)) and va != 0:
                worse = _worsening(metric, float(va), float(vb))
                colour = "red" if worse > 0.005 else "green" if worse < -0.005 else ""
                ratio = f"[{colour}]{vb / va:.2f}×[/]" if colour else f"{vb / va:.2f}×"
            table.add_row(_key_text(keys, key) if i == 0 else "", metric,
                          "missing" if row_a is None else cell(va), "missing" if row_b is None else cell(vb),
                          ratio, end_section=i == len(metrics) - 1)
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
    """One metric of one run that got worse than the baseline by more than the tolerance (or went missing)."""

    run: str  # backend and swept settings, e.g. "paged page_size=16"
    metric: str  # column name, or "(run)" when the whole run is missing from current
    baseline: float | None
    current: float | None
    change: float  # relative worsening: 0.2 = 20% worse; inf when missing or the baseline was 0

    def __str__(self) -> str:
        if self.metric == "(run)":
            return f"{self.run}: missing from the current results"
        if self.current is None:
            return f"{self.run}: {self.metric} has no value in the current results"
        return f"{self.run}: {self.metric} {self.baseline:g} -> {self.current:g} ({self.change:+.1%} worse)"


def check_regressions(current: pd.DataFrame, baseline: pd.DataFrame, max_regression: float,
                      metrics: tuple[str, ...] | None = None) -> tuple[list[Regression], Table]:
    """Direction-aware check of `current` against `baseline`: a metric regresses when worse by > max_regression.

    `metrics` narrows the check (default: every metric in CHECKED_METRICS), e.g. to the memory metrics, which
    are deterministic for a seed, so CI can hold them tightly and wall-clock metrics loosely."""
    if not (math.isfinite(max_regression) and max_regression >= 0):
        raise ConfigError(f"max_regression: must be >= 0 (got {max_regression})")
    unknown = sorted(set(metrics or ()) - set(CHECKED_METRICS))
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(CHECKED_METRICS)}")
    keys = join_columns(baseline, current)
    chosen = metrics or CHECKED_METRICS
    metrics = [m for m in CHECKED_METRICS if m in chosen and m in baseline.columns and m in current.columns]
    rows_now = _rows_by_key(current, keys)
    regressions: list[Regression] = []
    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    for header, justify in (("run", "left"), ("metric", "left"), ("baseline", "right"), ("current", "right"),
                            ("change", "right"), ("status", "left")):
        table.add_column(header, justify=justify)
    for key, before in _rows_by_key(baseline, keys).items():
        run = _key_text(keys, key)
        now = rows_now.get(key)
        if now is None:
            regressions.append(Regression(run, "(run)", None, None, math.inf))
            table.add_row(run, "(all)", "", "missing", "", "[red]REGRESSION[/]", end_section=True)
            continue
        for i, metric in enumerate(metrics):
            b, c = before[metric], now[metric]
            if is_missing(b):
                continue
            worse = math.inf if is_missing(c) else _worsening(metric, float(b), float(c))
            bad = worse > max_regression
            if bad:
                regressions.append(Regression(run, metric, float(b), None if is_missing(c) else float(c), worse))
            change = "–" if is_missing(c) else "n/a" if b == 0 else f"{(float(c) - float(b)) / abs(float(b)):+.1%}"
            table.add_row(run if i == 0 else "", metric, cell(b), cell(c), change,
                          "[red]REGRESSION[/]" if bad else "[green]ok[/]", end_section=i == len(metrics) - 1)
    table.title = f"{len(regressions)} regression(s) at tolerance {max_regression:.1%}"
    return regressions, table
