"""Metrics: turn one engine run (`RunRecord`) into a `Result` of throughput, latency `Stats` and KV memory.

Latency definitions (per request or per sample; kept in seconds here, exported in ms by `metric_row`):
- TTFT: first output token - arrival. E2E: last token of the last sample - arrival.
- TPOT: per sample with >= 2 tokens, (last token - first token) / (num tokens - 1).
- ITL: every gap between consecutive tokens of each sample.
Throughput: output tokens / wall; total = (prompt + output tokens) / wall; requests / wall.
Goodput (`goodput.py`, with `--goodput`): good requests / wall, and their share. Extra percentiles (with
`--metric-percentiles`) become `{metric}_p{P}_ms` columns beside the fixed p50/p90/p99.
Memory means are over *working* steps (prefill/decode; "idle" steps, waiting for arrivals, are skipped);
`mean_waste_pct` also skips steps with nothing reserved. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from pabench.bench.goodput import GoodputSpec, count_good
from pabench.engine.records import RequestRecord, RunRecord, StepSample
from pabench.errors import ConfigError

PERCENTILES = (50, 90, 99)
NAN = float("nan")
# vLLM's --percentile-metrics names -> pabench's column prefix (vLLM's e2el is pabench's e2e)
LATENCY_METRICS = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2el": "e2e"}


@dataclass(frozen=True)
class Stats:
    """Summary of samples: mean, population std (numpy's default), percentiles (linear), min, max, count."""

    mean: float
    std: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    count: int

    @classmethod
    def from_samples(cls, samples: Iterable[float]) -> Stats:
        """Summarise `samples`; no samples gives NaN everywhere and count 0 (not an error)."""
        values = np.asarray(list(samples), dtype=np.float64)  # [count]
        if values.size == 0:
            return cls(NAN, NAN, NAN, NAN, NAN, NAN, NAN, 0)
        p50, p90, p99 = np.percentile(values, PERCENTILES)
        return cls(mean=float(values.mean()), std=float(values.std()), p50=float(p50), p90=float(p90),
                   p99=float(p99), min=float(values.min()), max=float(values.max()), count=int(values.size))

    def as_dict(self, prefix: str, unit: str = "", scale: float = 1.0) -> dict[str, float | int]:
        """Flat columns `{prefix}_{stat}_{unit}` (values times `scale`, e.g. 1e3 for s -> ms) and `{prefix}_count`."""
        suffix = f"_{unit}" if unit else ""
        flat: dict[str, float | int] = {}
        for f in fields(self):
            if f.name == "count":
                flat[f"{prefix}_count"] = self.count
            else:
                flat[f"{prefix}_{f.name}{suffix}"] = getattr(self, f.name) * scale
        return flat


@dataclass
class Result:
    """What one backend achieved on one workload: the numbers the report prints and exports."""

    backend: str
    config: dict[str, Any]
    # throughput
    output_tok_s: float
    total_tok_s: float
    req_s: float
    # latency (seconds)
    ttft_s: Stats
    tpot_s: Stats
    itl_s: Stats
    e2e_s: Stats
    # scheduling
    concurrency: Stats  # running sequences after each decode step
    peak_concurrency: int
    num_preemptions: int
    prefix_hit_rate: float
    num_cow_copies: int
    kv_copied_bytes: int
    num_forks: int
    num_pruned: int
    recomputed_tokens: int  # prefill tokens whose K/V had been computed before (preemption, beam restarts)
    # memory
    kv_budget_bytes: int
    peak_reserved_bytes: int
    mean_waste_pct: float  # slack / reserved: reserved KV holding no token
    mean_slack_pct: float  # of budget
    mean_idle_pct: float  # of budget
    mean_used_pct: float  # of budget
    peak_saved_bytes: int
    mean_saved_bytes: float
    saved_pct: float  # the vLLM paper's sharing metric: saved / (reserved + saved), mean over steps that share
    # host overhead
    host_frac: float  # sum(host_s) / sum(step_s) over decode steps
    decode_step_s: Stats
    decode_device_s: Stats  # device time of decode steps (CUDA events); NaN (count 0) on the CPU
    host_over_device: float  # sum(host_s) / sum(device_s) over decode steps: is Python the bottleneck?
    host_over_device_peak: float  # the same over decode steps at >= 90% of the run's largest batch
    # totals
    wall_s: float
    num_steps: int
    num_requests: int
    num_prompt_tokens: int
    num_output_tokens: int
    capacity: dict[str, Any] = field(default_factory=dict)
    requests: list[RequestRecord] = field(default_factory=list, repr=False)  # raw, kept for JSON
    steps: list[StepSample] = field(default_factory=list, repr=False)  # raw, summarised in JSON
    # --goodput: the targets, good requests per second of wall_s and their share of all requests (NaN without)
    goodput: GoodputSpec | None = None
    request_goodput: float = NAN
    slo_attainment_pct: float = NAN
    # --metric-percentiles beyond p50/p90/p99: export column (`ttft_p95_ms`) -> value in ms
    extra_percentiles_ms: dict[str, float] = field(default_factory=dict)
    # `run --repeat N` over seeds: export column -> half-width of its 95% confidence interval (the numbers above
    # are then means over the seeds; bench/repeat.py); empty for a single run
    ci95: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LatencyView:
    """What the latency table shows (`--percentile-metrics`, `--metric-percentiles`, as `vllm bench serve`):
    metrics among ttft, tpot, itl, e2el and percentiles in (0, 100]."""

    metrics: tuple[str, ...] = ("ttft", "tpot", "itl")  # vLLM's defaults
    percentiles: tuple[float, ...] = (99.0,)

    def __post_init__(self) -> None:
        if not self.metrics or not self.percentiles:
            raise ConfigError("--percentile-metrics / --metric-percentiles: no value given")
        for name in self.metrics:
            if name not in LATENCY_METRICS:
                raise ConfigError(f"--percentile-metrics: unknown metric {name!r}; choose from "
                                  f"{', '.join(LATENCY_METRICS)}")
        for p in self.percentiles:
            if not (math.isfinite(p) and 0 < p <= 100):
                raise ConfigError(f"--metric-percentiles: {p:g} is not a percentile in (0, 100]")
        for what, values in (("--percentile-metrics", self.metrics), ("--metric-percentiles", self.percentiles)):
            if len(set(values)) != len(values):
                raise ConfigError(f"{what}: a value is listed twice")

    @classmethod
    def from_options(cls, metrics: str | None, percentiles: str | None) -> LatencyView | None:
        """The view the two options ask for; None when neither is given (pabench's own table)."""
        if metrics is None and percentiles is None:
            return None
        names = tuple(m.strip().lower() for m in metrics.split(",")) if metrics is not None else cls.metrics
        if percentiles is None:
            return cls(names)
        try:
            values = tuple(float(p) for p in percentiles.split(","))
        except ValueError:
            raise ConfigError(f"--metric-percentiles: expected comma-separated numbers, got {percentiles!r}") from None
        return cls(names, values)

    @property
    def extra_percentiles(self) -> tuple[float, ...]:
        """The percentiles the exports do not already carry (p50, p90 and p99 always are)."""
        return tuple(p for p in self.percentiles if p not in PERCENTILES)


def percentile_column(metric: str, p: float) -> str:
    """The export column of percentile `p` of a latency metric: ('ttft', 95) -> 'ttft_p95_ms', 99.9 -> p99.9."""
    word = str(int(p)) if float(p).is_integer() else f"{p:g}"
    return f"{LATENCY_METRICS.get(metric, metric)}_p{word}_ms"


def percentile_ms(result: Result, metric: str, p: float) -> float:
    """Percentile `p` of a latency metric (vLLM or pabench name) in ms: p50/p90/p99 from its Stats, others from
    the extra columns the run computed (KeyError if it did not: pass them to `build_result`)."""
    prefix = LATENCY_METRICS.get(metric, metric)
    if p in PERCENTILES:
        return getattr(getattr(result, f"{prefix}_s"), f"p{int(p)}") * 1e3
    return result.extra_percentiles_ms[percentile_column(prefix, p)]


def latency_samples(requests: list[RequestRecord]) -> dict[str, list[float]]:
    """Every latency sample of a run, in seconds, keyed by pabench's prefix: ttft, tpot, itl, e2e."""
    tpot, itl = _sample_gaps(requests)
    return {"ttft": [r.first_token_s - r.arrival_s for r in requests], "tpot": tpot, "itl": itl,
            "e2e": [r.finish_s - r.arrival_s for r in requests]}


def _extra_percentiles(requests: list[RequestRecord], percentiles: tuple[float, ...]) -> dict[str, float]:
    """{`ttft_p95_ms`: value} for every latency metric and each of `percentiles` (NaN with no samples)."""
    out: dict[str, float] = {}
    for prefix, samples in latency_samples(requests).items():
        for p in percentiles:
            out[percentile_column(prefix, p)] = float(np.percentile(samples, p)) * 1e3 if samples else NAN
    return out


def _per_second(count: float, wall_s: float) -> float:
    return count / wall_s if wall_s > 0 else NAN


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else NAN


def _sample_gaps(requests: list[RequestRecord]) -> tuple[list[float], list[float]]:
    """(TPOT per sample with >= 2 tokens, every inter-token gap of every sample)."""
    tpot: list[float] = []
    itl: list[float] = []
    for request in requests:
        for times in request.token_times_s:
            if len(times) >= 2:
                tpot.append((times[-1] - times[0]) / (len(times) - 1))
                itl.extend(np.diff(times).tolist())  # [len(times) - 1]
    return tpot, itl


def host_over_device(steps: list[StepSample]) -> float:
    """sum(host_s) / sum(device_s) of `steps`; NaN without device timings (CPU runs) or steps."""
    if not steps or not all(s.device_s > 0 for s in steps):
        return NAN
    return sum(s.host_s for s in steps) / sum(s.device_s for s in steps)


def build_result(run: RunRecord, goodput: GoodputSpec | None = None, percentiles: tuple[float, ...] = ()) -> Result:
    """Summarise one backend's run; empty runs give NaN statistics rather than errors. `goodput` adds the
    goodput numbers, `percentiles` the extra percentile columns (those not in PERCENTILES)."""
    requests = run.requests
    num_output = sum(r.num_output_tokens for r in requests)
    num_prompt = sum(r.num_prompt_tokens for r in requests)
    samples = latency_samples(requests)
    num_good = count_good(goodput, requests) if goodput is not None else 0
    decode = [s for s in run.steps if s.kind == "decode"]
    working = [s.memory for s in run.steps if s.kind != "idle"]
    # running sequences after every step that decodes: chunked prefill's mixed steps decode too
    concurrency = Stats.from_samples(s.num_running for s in run.steps if s.kind in ("decode", "mixed"))
    decode_step_total = sum(s.step_s for s in decode)
    peak_batch = max((s.num_seqs for s in decode), default=0)
    budget = run.steps[0].memory.budget_bytes if run.steps else int(run.config.get("kv_budget_bytes", 0))
    return Result(
        backend=run.backend,
        config=dict(run.config),
        output_tok_s=_per_second(num_output, run.wall_s),
        total_tok_s=_per_second(num_prompt + num_output, run.wall_s),
        req_s=_per_second(len(requests), run.wall_s),
        ttft_s=Stats.from_samples(samples["ttft"]),
        tpot_s=Stats.from_samples(samples["tpot"]),
        itl_s=Stats.from_samples(samples["itl"]),
        e2e_s=Stats.from_samples(samples["e2e"]),
        concurrency=concurrency,
        peak_concurrency=int(concurrency.max) if concurrency.count else 0,
        num_preemptions=run.num_preemptions,
        prefix_hit_rate=run.prefix_hit_rate,
        num_cow_copies=run.num_cow_copies,
        kv_copied_bytes=run.kv_copied_bytes,
        num_forks=run.num_forks,
        num_pruned=run.num_pruned,
        kv_budget_bytes=budget,
        peak_reserved_bytes=max((s.memory.reserved_bytes for s in run.steps), default=0),
        mean_waste_pct=_mean([m.waste_pct for m in working if m.reserved_bytes > 0]),
        mean_slack_pct=_mean([m.slack_pct for m in working]),
        mean_idle_pct=_mean([m.idle_pct for m in working]),
        mean_used_pct=_mean([m.used_pct for m in working]),
        peak_saved_bytes=max((s.memory.saved_bytes for s in run.steps), default=0),
        mean_saved_bytes=_mean([m.saved_bytes for m in working]),
        saved_pct=_mean([100.0 * m.saved_bytes / (m.reserved_bytes + m.saved_bytes) for m in working
                         if m.reserved_bytes]),
        recomputed_tokens=run.recomputed_tokens,
        host_frac=sum(s.host_s for s in decode) / decode_step_total if decode_step_total > 0 else NAN,
        decode_step_s=Stats.from_samples(s.step_s for s in decode),
        decode_device_s=Stats.from_samples(s.device_s for s in decode if s.device_s > 0),
        host_over_device=host_over_device(decode),
        host_over_device_peak=host_over_device([s for s in decode if s.num_seqs >= 0.9 * peak_batch]),
        wall_s=run.wall_s,
        num_steps=len(run.steps),
        num_requests=len(requests),
        num_prompt_tokens=num_prompt,
        num_output_tokens=num_output,
        capacity=dict(run.capacity),
        requests=list(requests),
        steps=list(run.steps),
        goodput=goodput,
        request_goodput=_per_second(num_good, run.wall_s) if goodput is not None else NAN,
        slo_attainment_pct=100.0 * num_good / len(requests) if goodput is not None and requests else NAN,
        extra_percentiles_ms=_extra_percentiles(requests, tuple(p for p in percentiles if p not in PERCENTILES)),
    )


def metric_row(result: Result) -> dict[str, Any]:
    """Every metric of `result` as flat columns with units in their names (the CSV/JSON row, minus config).
    The goodput and extra percentile columns are there only when the run asked for them."""
    row = {
        "output_tok_per_s": result.output_tok_s,
        "total_tok_per_s": result.total_tok_s,
        "req_per_s": result.req_s,
        **result.ttft_s.as_dict("ttft", "ms", 1e3),
        **result.tpot_s.as_dict("tpot", "ms", 1e3),
        **result.itl_s.as_dict("itl", "ms", 1e3),
        **result.e2e_s.as_dict("e2e", "ms", 1e3),  # ms like every latency (0.1.0 wrote e2e_*_s: docs/EXPORT.md)
        **result.concurrency.as_dict("concurrency"),
        "peak_concurrency": result.peak_concurrency,
        "num_preemptions": result.num_preemptions,
        "prefix_hit_pct": 100.0 * result.prefix_hit_rate,
        "num_cow_copies": result.num_cow_copies,
        "kv_copied_bytes": result.kv_copied_bytes,
        "num_forks": result.num_forks,
        "num_pruned": result.num_pruned,
        "kv_budget_bytes": result.kv_budget_bytes,
        "peak_reserved_bytes": result.peak_reserved_bytes,
        "mean_waste_pct": result.mean_waste_pct,
        "mean_slack_pct": result.mean_slack_pct,
        "mean_idle_pct": result.mean_idle_pct,
        "mean_used_pct": result.mean_used_pct,
        "peak_saved_bytes": result.peak_saved_bytes,
        "mean_saved_bytes": result.mean_saved_bytes,
        "saved_pct": result.saved_pct,
        "recomputed_tokens": result.recomputed_tokens,
        "host_pct": 100.0 * result.host_frac,
        **result.decode_step_s.as_dict("decode_step", "ms", 1e3),
        **result.decode_device_s.as_dict("decode_device", "ms", 1e3),
        "host_over_device_pct": 100.0 * result.host_over_device,
        "host_over_device_peak_batch_pct": 100.0 * result.host_over_device_peak,
        "wall_s": result.wall_s,
        "num_steps": result.num_steps,
        "num_requests": result.num_requests,
        "num_prompt_tokens": result.num_prompt_tokens,
        "num_output_tokens": result.num_output_tokens,
    }
    if result.goodput is not None:
        row.update(goodput=result.goodput.text(), request_goodput=result.request_goodput,
                   slo_attainment_pct=result.slo_attainment_pct)
    row.update(result.extra_percentiles_ms)
    return row


def is_missing(value: Any) -> bool:
    """True for None and NaN (an empty statistic)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


# Every metric column an export row carries (what a row of no run at all still has).
METRIC_COLUMNS = frozenset(metric_row(build_result(RunRecord(backend="", config={}))))
