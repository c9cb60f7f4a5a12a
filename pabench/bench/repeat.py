"""`pabench run --repeat N`: every backend N times on one prepared workload, summarised as one result each.

Timing metrics (throughput, latency, wall time) are the median across repeats, and each checked one gets a
`<metric>_spread_pct` = (max - min) / median * 100 beside it, which `pabench check --timing` uses as the noise
floor. Everything else (memory, preemptions, schedule) is deterministic for a seed and must be identical across
repeats; a column that is not is reported (`Repeated.varied`) and gets a spread too, so a check does not hold
it tighter than it reproduces. Torch-free at import (the runner is imported when a run starts).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pabench.bench.metrics import Result, Stats, metric_row

# The timing columns `check --timing` judges (and that get a spread column). Latencies in ms; `e2e_*_s` is the
# old export's name for e2e in seconds, still read (LEGACY_NAMES maps it to the ms name).
TIMING_METRICS = ("output_tok_per_s", "total_tok_per_s", "req_per_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms",
                  "tpot_p99_ms", "itl_p50_ms", "itl_p99_ms", "e2e_p50_ms", "e2e_p99_ms", "wall_s")
LEGACY_NAMES = {"e2e_p50_s": "e2e_p50_ms", "e2e_p99_s": "e2e_p99_ms"}
# Every wall-clock column of an export (not only the checked ones): these may differ between repeats.
_TIMING_PREFIXES = ("ttft_", "tpot_", "itl_", "e2e_", "decode_step_", "decode_device_", "host_")
_TIMING_NAMES = frozenset({"output_tok_per_s", "total_tok_per_s", "req_per_s", "wall_s", "request_goodput",
                           "slo_attainment_pct"})

RepeatFn = Callable[[int, int], None]  # (repeat number from 1, repeats)


def spread_column(metric: str) -> str:
    """The export column holding `metric`'s spread across repeats, in % of its median."""
    return f"{metric}_spread_pct"


def is_timing(column: str) -> bool:
    """Is this export column measured on the wall clock (so it may differ between two runs of one seed)?"""
    return column in _TIMING_NAMES or (column.startswith(_TIMING_PREFIXES) and not column.endswith("_count"))


def spread_pct(values: list[float]) -> float:
    """(max - min) / median * 100 of the finite `values`; 0 when all are equal, NaN with none or a zero median."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan
    lo, hi, mid = min(finite), max(finite), float(np.median(finite))
    if hi == lo:
        return 0.0
    return math.nan if mid == 0 else 100.0 * (hi - lo) / abs(mid)


def _same(values: list[Any]) -> bool:
    """All equal, NaN equal to NaN."""
    first = values[0]
    return all(v == first or (isinstance(v, float) and isinstance(first, float) and math.isnan(v)
                              and math.isnan(first)) for v in values[1:])


def _median(values: list[Any]) -> Any:
    """The first value when all agree (ints stay ints), else the median of the finite ones (NaN with none)."""
    if _same(values):
        return values[0]
    finite = [v for v in values if not math.isnan(v)]
    return float(np.median(finite)) if finite else math.nan


def aggregate(runs: list[Result]) -> tuple[Result, list[str]]:
    """One backend's repeats as one Result: every number the median across repeats (`config` gains `repeat` and
    the spread columns; raw requests and steps are the first repeat's), and the non-timing export columns that
    differed between repeats (empty when the run reproduced, as it should for a seed)."""
    assert runs and len({r.backend for r in runs}) == 1, "aggregate takes the repeats of one backend"
    first = runs[0]
    merged: dict[str, Any] = {}
    for f in dataclasses.fields(Result):
        values = [getattr(r, f.name) for r in runs]
        if isinstance(values[0], Stats):
            merged[f.name] = Stats(**{s.name: _median([getattr(v, s.name) for v in values])
                                      for s in dataclasses.fields(Stats)})
        elif isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            merged[f.name] = _median(values)
        elif f.name == "extra_percentiles_ms":  # {column: ms}, the same columns in every repeat
            merged[f.name] = {column: _median([v[column] for v in values]) for column in values[0]}
    rows = [metric_row(r) for r in runs]
    varied = [c for c in rows[0] if not is_timing(c) and not _same([row[c] for row in rows])]
    spreads = {spread_column(c): spread_pct([float(row[c]) for row in rows])
               for c in rows[0] if c in TIMING_METRICS or c in LEGACY_NAMES or c in varied}
    config = {**first.config, "repeat": len(runs), **spreads}
    return dataclasses.replace(first, config=config, **merged), varied


@dataclass
class Repeated:
    """What `run_repeated` returns: one aggregated Result per backend that finished at least once."""

    results: list[Result]
    failures: list = field(default_factory=list)  # BackendFailure of any repeat
    varied: dict[str, list[str]] = field(default_factory=dict)  # backend -> deterministic columns that differed

    def __post_init__(self) -> None:
        assert all(b in {r.backend for r in self.results} for b in self.varied), "varied names a missing backend"


def run_repeated(cfg, repeats: int, prepared=None, on_progress=None, on_repeat: RepeatFn | None = None) -> Repeated:
    """Run every backend of `cfg` `repeats` times on one prepared workload (`prepare` runs once) and aggregate.

    on_progress: the runner's per-request callback; on_repeat(i, repeats) is called before repeat i (from 1)."""
    from pabench.bench.runner import interrupted_runs, mark_interrupted, prepare, run_benchmark
    from pabench.errors import ConfigError

    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ConfigError(f"--repeat {repeats}: must be a whole number >= 1")
    p = prepared or prepare(cfg)
    by_backend: dict[str, list[Result]] = {}
    failures: list = []
    for i in range(1, repeats + 1):
        if on_repeat:
            on_repeat(i, repeats)
        results, _, _, failed = run_benchmark(cfg, on_progress, prepared=p)
        for r in results:
            by_backend.setdefault(r.backend, []).append(r)
        failures.extend(f for f in failed if f not in failures)
        if interrupted_runs(failed):  # Ctrl-C: no further repeat; what finished is kept, marked
            break
    merged, varied = [], {}
    for name in p.config.backends:
        if name in by_backend:
            result, columns = aggregate(by_backend[name])
            merged.append(result)
            if columns:
                varied[name] = columns
    if interrupted_runs(failures):  # fewer repeats than asked, or backends missing: the comparison is cut short
        mark_interrupted(merged)
    return Repeated(merged, failures, varied)
