"""`pabench run --repeat N`: every backend N times, summarised as one result each, in one of two ways.

Over seeds (the default): run i serves its own workload, prepared with seed `seed + i` (requests and weights, as
`--seed` does), and every backend serves each. Every number is the mean over the seeds and `Result.ci95` holds
the half-width of each export column's 95% confidence interval (Student t, n - 1 degrees of freedom; none for
n = 1); AIPerf and GuideLLM report intervals too. Two backends saw the same trace in each run, so a ratio
between them is taken per seed first and then summarised (`Repeated.ratio`).

On one seed (`same_seed`): N runs of one prepared workload. Timing metrics (throughput, latency, wall time) are the
median, and each checked one gets a `<metric>_spread_pct` = (max - min) / median * 100 beside it, which `pabench
check --timing` uses as the noise floor. Everything else (memory, preemptions, schedule) is deterministic for a
seed and must be identical across repeats; a column that is not is reported (`Repeated.varied`) and gets a spread
too, so a check does not hold it tighter than it reproduces. Torch-free at import (the runner is imported when a
run starts).
"""

from __future__ import annotations

import dataclasses
import gc
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
# Outcomes the runner puts in a result's config (not metric_row): averaged over seeds like the metrics.
_CONFIG_OUTCOMES = ("token_match_pct", "request_match_pct")
# t quantile 0.975 for 1..30 degrees of freedom; beyond, the Cornish-Fisher series (within 1e-4 there).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
         2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959964

RepeatFn = Callable[[int, int], None]  # (repeat number from 1, repeats)


def spread_column(metric: str) -> str:
    """The export column holding `metric`'s spread across repeats, in % of its median."""
    return f"{metric}_spread_pct"


def ci_column(metric: str) -> str:
    """The export column holding the half-width of `metric`'s 95% confidence interval over seeds."""
    return f"{metric}_ci95"


def is_timing(column: str) -> bool:
    """Is this export column measured on the wall clock (so it may differ between two runs of one seed)?"""
    return column in _TIMING_NAMES or (column.startswith(_TIMING_PREFIXES) and not column.endswith("_count"))


def t_quantile(dof: int) -> float:
    """Student t's 0.975 quantile for `dof` >= 1 degrees of freedom: a 95% two-sided interval's multiplier."""
    assert dof >= 1, "a t quantile needs at least one degree of freedom"
    if dof <= len(_T975):
        return _T975[dof - 1]
    z, n = _Z975, float(dof)
    return (z + (z**3 + z) / (4 * n) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * n**3))


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


@dataclass(frozen=True)
class Interval:
    """Mean of `n` values and the half-width of its 95% confidence interval (NaN for n < 2: no interval)."""

    mean: float
    ci95: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Interval:
        """The interval of the finite `values` (Student t, n - 1 degrees of freedom, sample std)."""
        finite = _finite(values)
        if not finite:
            return cls(math.nan, math.nan, 0)
        n, mean = len(finite), float(np.mean(finite))
        if n < 2:
            return cls(mean, math.nan, n)
        return cls(mean, t_quantile(n - 1) * float(np.std(finite, ddof=1)) / math.sqrt(n), n)

    def includes(self, value: float) -> bool:
        """Is `value` inside [mean - ci95, mean + ci95]? False without an interval."""
        return not math.isnan(self.ci95) and abs(value - self.mean) <= self.ci95


def spread_pct(values: list[float]) -> float:
    """(max - min) / median * 100 of the finite `values`; 0 when all are equal, NaN with none or a zero median."""
    finite = _finite(values)
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


def _combine(values: list[Any], how: Callable[[list[float]], float]) -> Any:
    """The first value when all agree (ints stay ints), else `how` (median, mean) of the finite ones (NaN: none)."""
    if _same(values):
        return values[0]
    finite = _finite(values)
    return float(how(finite)) if finite else math.nan


def _merge_numbers(runs: list[Result], how: Callable[[list[float]], float]) -> dict[str, Any]:
    """Every number of `runs` (plain fields, each Stats field, the extra percentiles) combined by `how`."""
    merged: dict[str, Any] = {}
    for f in dataclasses.fields(Result):
        values = [getattr(r, f.name) for r in runs]
        if isinstance(values[0], Stats):
            merged[f.name] = Stats(**{s.name: _combine([getattr(v, s.name) for v in values], how)
                                      for s in dataclasses.fields(Stats)})
        elif isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            merged[f.name] = _combine(values, how)
        elif f.name == "extra_percentiles_ms":  # {column: ms}, the same columns in every run
            merged[f.name] = {column: _combine([v[column] for v in values], how) for column in values[0]}
    return merged


def aggregate(runs: list[Result]) -> tuple[Result, list[str]]:
    """One backend's repeats of one seed as one Result: every number the median across repeats (`config` gains
    `repeat` and the spread columns; raw requests and steps are the first repeat's), and the non-timing export
    columns that differed between repeats (empty when the run reproduced, as it should for a seed)."""
    assert runs and len({r.backend for r in runs}) == 1, "aggregate takes the repeats of one backend"
    rows = [metric_row(r) for r in runs]
    varied = [c for c in rows[0] if not is_timing(c) and not _same([row[c] for row in rows])]
    spreads = {spread_column(c): spread_pct([float(row[c]) for row in rows])
               for c in rows[0] if c in TIMING_METRICS or c in LEGACY_NAMES or c in varied}
    config = {**runs[0].config, "repeat": len(runs), **spreads}
    return dataclasses.replace(runs[0], config=config, **_merge_numbers(runs, np.median)), varied


def seeds_text(seeds: list[int]) -> str:
    """'0..2' for consecutive seeds, '0,2' otherwise, '5' for one: the `seeds` column of a mean over seeds."""
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ",".join(str(s) for s in seeds)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def aggregate_seeds(runs: list[Result]) -> Result:
    """One backend's runs on different seeds as one Result: every number the mean over the seeds, `ci95` the
    95% half-width of every numeric export column; config says `repeat` (runs) and `seeds`, and its contract
    lists them; raw requests and steps are the first seed's."""
    assert runs and len({r.backend for r in runs}) == 1, "aggregate_seeds takes the runs of one backend"
    first, rows = runs[0], [metric_row(r) for r in runs]
    ci95 = {c: Interval.of([row[c] for row in rows]).ci95 for c, v in rows[0].items() if _is_number(v)}
    seeds = [r.config.get("seed") for r in runs]
    config = {**first.config, "repeat": len(runs), "seeds": seeds_text(seeds)}
    for key in _CONFIG_OUTCOMES:
        if key in first.config:
            config[key] = _combine([r.config.get(key, math.nan) for r in runs], np.mean)
            ci95[key] = Interval.of([r.config.get(key, math.nan) for r in runs]).ci95
    if isinstance(first.config.get("comparability"), dict):  # a mean over these seeds
        config["comparability"] = {**first.config["comparability"], "seed": seeds}
    return dataclasses.replace(first, config=config, ci95=ci95, **_merge_numbers(runs, np.mean))


@dataclass
class Repeated:
    """What `run_repeated` returns: one aggregated Result per backend that finished at least once, and every run.

    runs[i]: the results of run i (seed `seeds[i]`), in backend order. same_seed: medians and spreads of one
    seed's repeats, else means and intervals over the seeds."""

    results: list[Result]
    failures: list = field(default_factory=list)  # BackendFailure of any run
    varied: dict[str, list[str]] = field(default_factory=dict)  # backend -> deterministic columns that differed
    runs: list[list[Result]] = field(default_factory=list)
    seeds: tuple[int, ...] = ()
    same_seed: bool = False

    def __post_init__(self) -> None:
        assert all(b in {r.backend for r in self.results} for b in self.varied), "varied names a missing backend"
        assert len(self.runs) == len(self.seeds), "one seed per run"

    def ratio(self, a: str, b: str, metric: str = "output_tok_s") -> Interval | None:
        """`a`'s `metric` (a Result field) over `b`'s, taken in each run both finished and then summarised: both
        served the same trace there. None when no run has both with a positive `b`."""
        values = []
        for run in self.runs:
            by_name = {r.backend: getattr(r, metric) for r in run}
            top, bottom = by_name.get(a, math.nan), by_name.get(b, math.nan)
            if not (math.isnan(top) or math.isnan(bottom)) and bottom > 0:
                values.append(top / bottom)
        return Interval.of(values) if values else None


def base_seed(p) -> int:
    """The seed a prepared run's workload was drawn with: `--seed`, else the preset's."""
    return p.spec.seed if p.config.seed is None else p.config.seed


def run_seeds(p, repeats: int, same_seed: bool = False) -> tuple[int, ...]:
    """The seed of each of `repeats` runs of prepared run `p`: seed..seed+N-1, or seed N times with `same_seed`."""
    seed = base_seed(p)
    return tuple(seed if same_seed else seed + i for i in range(repeats))


def _check_seeds(p, seeds: tuple[int, ...]) -> None:
    """Before anything runs: every seed's requests fit every backend (drawn as `prepare` draws them; the model,
    which `prepare` builds per seed, is not needed for the check)."""
    from pabench.bench.runner import Prepared, check_all_fit
    from pabench.bench.workloads import generate

    c = p.config
    for seed in dict.fromkeys(seeds[1:]):
        requests = generate(p.spec, vocab_size=p.model.config.vocab_size, max_model_len=c.max_model_len,
                            num_requests=c.num_requests, seed=seed)
        check_all_fit(Prepared(dataclasses.replace(c, seed=seed), p.spec, requests, None, p.layout,
                               p.kv_budget_bytes))


def _release_device_memory(device: str) -> None:
    """After a seed's runs: its model and pools back to the device, so the next seed's `prepare` sees them free."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def run_repeated(cfg, repeats: int, prepared=None, on_progress=None, on_repeat: RepeatFn | None = None,
                 same_seed: bool = False) -> Repeated:
    """Run every backend of `cfg` `repeats` times and aggregate: on seeds seed..seed+N-1 (each prepared in turn,
    the first being `prepared`), or with `same_seed` on the one prepared workload.

    on_progress: the runner's per-request callback; on_repeat(i, repeats) is called before run i (from 1). A
    Ctrl-C stops the runs: the aggregates of the runs that finished are kept, marked interrupted (over seeds, a
    run cut short is dropped unless it is the only one: a mean is over whole runs)."""
    from pabench.bench.runner import interrupted_runs, mark_interrupted, prepare, run_benchmark
    from pabench.errors import ConfigError

    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ConfigError(f"--repeat {repeats}: must be a whole number >= 1")
    first = prepared or prepare(cfg)
    seeds = run_seeds(first, repeats, same_seed)
    if not same_seed:
        _check_seeds(first, seeds)
    runs: list[list[Result]] = []
    failures: list = []
    for i, seed in enumerate(seeds, start=1):
        if on_repeat:
            on_repeat(i, repeats)
        p = first if same_seed or i == 1 else prepare(dataclasses.replace(cfg, seed=seed))
        results, _, _, failed = run_benchmark(cfg, on_progress, prepared=p)
        failures.extend(f for f in failed if f not in failures)
        cut = bool(interrupted_runs(failed))
        if not (cut and runs and not same_seed):  # over seeds, only whole runs make a mean (but keep a first)
            runs.append(results)
        del p, results
        if not same_seed and i > 1:
            _release_device_memory(first.config.device)
        if cut:  # Ctrl-C: no further run; what finished is kept, marked
            break
    merged, varied = [], {}
    for name in first.config.backends:
        mine = [r for run in runs for r in run if r.backend == name]
        if not mine:
            continue
        if same_seed:
            result, columns = aggregate(mine)
            if columns:
                varied[name] = columns
        else:
            result = aggregate_seeds(mine)
        merged.append(result)
    if interrupted_runs(failures):  # fewer runs than asked, or backends missing: the comparison is cut short
        mark_interrupted(merged)
    return Repeated(merged, failures, varied, runs, seeds[:len(runs)], same_seed)
