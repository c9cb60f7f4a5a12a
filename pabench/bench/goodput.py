"""Goodput: how many requests met every latency target (`--goodput ttft:MS,tpot:MS,e2el:MS`).

DistServe's definition as `vllm bench serve --goodput` implements it (vllm/benchmarks/serve.py,
`calculate_metrics` and `check_goodput_args`): a request is *good* when each named metric is within its bound
(value <= bound, so equality is good); `request_goodput` = good requests / the run's duration. Per request:
TTFT = first output token - arrival, E2EL = last token - arrival, TPOT = (last - first token) / (tokens - 1) and
0 for a one-token output, as vLLM. A request with several samples (n > 1, or beams) is judged once, on its own
TTFT and E2EL and on the worst TPOT of its samples. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from pabench.engine.records import RequestRecord
from pabench.errors import ConfigError

GOODPUT_METRICS = ("ttft", "tpot", "e2el")  # vLLM's request-level names (its `e2el` is pabench's E2E)


@dataclass(frozen=True)
class GoodputSpec:
    """Latency bounds in ms, e.g. (("ttft", 500.0), ("tpot", 50.0)): each metric at most once, bounds >= 0."""

    bounds_ms: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        if not self.bounds_ms:
            raise ConfigError("--goodput: no target given; expected e.g. ttft:500,tpot:50 (ms)")
        seen: set[str] = set()
        for name, bound in self.bounds_ms:
            if name not in GOODPUT_METRICS:
                raise ConfigError(f"--goodput: unknown metric {name!r}; choose from {', '.join(GOODPUT_METRICS)}")
            if name in seen:
                raise ConfigError(f"--goodput: {name} is given twice")
            if not isinstance(bound, (int, float)) or isinstance(bound, bool):
                raise ConfigError(f"--goodput: {name}: {bound!r} is not a number of ms")
            if not (math.isfinite(bound) and bound >= 0):
                raise ConfigError(f"--goodput: {name}:{bound:g} must be a finite number of ms >= 0")
            seen.add(name)

    @classmethod
    def from_text(cls, text: str) -> GoodputSpec:
        """Parse 'ttft:500,tpot:50' (vLLM's KEY:VALUE pairs, comma-separated here; values in ms)."""
        pairs = []
        for item in (part.strip() for part in text.split(",")):
            name, sep, value = item.partition(":")
            try:
                bound = float(value) if sep else None
            except ValueError:
                bound = None
            if bound is None:
                raise ConfigError(f"--goodput: {item!r} is not METRIC:MS (e.g. ttft:500,tpot:50,e2el:2000)")
            pairs.append((name.strip().lower(), bound))
        return cls(tuple(pairs))

    def text(self) -> str:
        """The spec as the option takes it: 'ttft:500,tpot:50'."""
        return ",".join(f"{name}:{bound:g}" for name, bound in self.bounds_ms)

    def as_dict(self) -> dict[str, float]:
        """{metric: bound in ms}, vLLM's `goodput_config_dict`."""
        return dict(self.bounds_ms)

    def is_good(self, request: RequestRecord) -> bool:
        """Does `request` meet every bound (value <= bound)?"""
        latency_s = request_latencies(request)
        return all(latency_s[name] <= bound / 1e3 for name, bound in self.bounds_ms)


def request_tpot(request: RequestRecord) -> float:
    """The worst TPOT (s) of the request's samples with >= 2 tokens; 0 when none has (vLLM's one-token rule)."""
    tpots = [(t[-1] - t[0]) / (len(t) - 1) for t in request.token_times_s if len(t) >= 2]
    return max(tpots, default=0.0)


def request_latencies(request: RequestRecord) -> dict[str, float]:
    """One request's goodput metrics in seconds: {'ttft', 'tpot', 'e2el'}."""
    return {"ttft": request.first_token_s - request.arrival_s, "tpot": request_tpot(request),
            "e2el": request.finish_s - request.arrival_s}


def count_good(spec: GoodputSpec, requests: Iterable[RequestRecord]) -> int:
    """How many of `requests` meet every bound of `spec`."""
    return sum(spec.is_good(r) for r in requests)
