"""Workloads: what traffic a run serves. A `WorkloadSpec` (read from TOML by `workload_toml.py`) and a seeded
generator of `Request`s.

A spec says how many requests arrive when, how long their prompts and outputs are (`LengthDist`), whether
prompts start with a shared system prompt (`SharedPrefix`) and how many samples each request asks for.
`generate` turns a spec into requests with its own `numpy.random.default_rng(seed)`: same spec + seed,
same requests, on any machine. Torch-free on purpose (`pabench workloads` must stay fast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from pabench.bench.trace import Trace, check_trace_fits
from pabench.errors import ConfigError
from pabench.units import MAX_SEED, check_seed

LENGTH_KINDS = ("fixed", "uniform", "normal", "lognormal")
TRACE_KIND = "trace"  # the lengths a trace file lists: described by mean and range, never sampled
ARRIVALS = ("burst", "poisson", "trace")
RAMPS = ("linear", "exponential")  # vLLM's --ramp-up-strategy: how a Poisson rate moves from start to end
_KIND_PARAM = {"uniform": "range_ratio", "normal": "std", "lognormal": "sigma"}  # the one extra key each needs
# Poisson arrivals are honoured on the wall clock, so a tiny rate (1e-9 req/s) would make a run sleep for years
# in silence. An hour of arrivals is far past any benchmark pabench ships (poisson.toml: ~25 s) and still short
# enough that a mistyped rate is caught before the run rather than noticed the next morning.
MAX_ARRIVAL_SPAN_S = 3600.0


@dataclass(frozen=True)
class LengthDist:
    """A distribution of token counts, rounded to integers then clipped to [min, max].

    - fixed: always `mean`.
    - uniform: integers in [round(mean*(1-range_ratio)), round(mean*(1+range_ratio))], both ends included
      (vLLM's random dataset `--random-range-ratio` convention); 0 <= range_ratio < 1.
    - normal: Normal(mean, std).
    - lognormal: heavy-tailed; `sigma` is the underlying normal's sigma and mu = ln(mean) - sigma^2/2, so the
      distribution's mean (before clipping) is `mean`.
    - trace: the lengths of a trace file's rows (`from_lengths`), not a distribution to sample from.
    normal and lognormal are unbounded, so they need `max`. Errors read "KEY: problem" (the loader adds the file).
    """

    kind: str
    mean: float
    range_ratio: float | None = None
    std: float | None = None
    sigma: float | None = None
    min: int = 1
    max: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in LENGTH_KINDS + (TRACE_KIND,):
            raise ConfigError(f"kind: unknown kind {self.kind!r} (expected one of {', '.join(LENGTH_KINDS)})")
        if not (math.isfinite(self.mean) and self.mean > 0):
            raise ConfigError(f"mean: must be > 0 (got {self.mean})")
        if self.kind == "fixed" and self.mean != int(self.mean):
            raise ConfigError(f"mean: must be a whole number for kind 'fixed' (got {self.mean})")
        for key in _KIND_PARAM.values():
            if getattr(self, key) is not None and _KIND_PARAM.get(self.kind) != key:
                raise ConfigError(f"{key}: not used by kind {self.kind!r}")
        needed = _KIND_PARAM.get(self.kind)
        if needed is not None and getattr(self, needed) is None:
            raise ConfigError(f"{needed}: required for kind {self.kind!r}")
        if self.range_ratio is not None and not 0 <= self.range_ratio < 1:
            raise ConfigError(f"range_ratio: must be in [0, 1) (got {self.range_ratio})")
        for key in ("std", "sigma"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{key}: must be > 0 (got {value})")
        if self.min < 1:
            raise ConfigError(f"min: must be >= 1 (got {self.min})")
        if self.max is None and self.kind in ("normal", "lognormal", TRACE_KIND):
            raise ConfigError(f"max: required for kind {self.kind!r} (it is unbounded)")
        if self.max is not None and self.max < self.min:
            raise ConfigError(f"max: min > max ({self.min} > {self.max})")

    @classmethod
    def from_lengths(cls, lengths: tuple[int, ...] | list[int]) -> LengthDist:
        """The `trace` kind: the mean and range of a trace column (what tables and the contract show)."""
        return cls(TRACE_KIND, float(np.mean(lengths)), min=int(min(lengths)), max=int(max(lengths)))

    @property
    def lower(self) -> int:
        """The smallest length `sample` can return."""
        natural = {"fixed": int(self.mean), "uniform": round(self.mean * (1 - (self.range_ratio or 0)))}
        return min(max(self.min, natural.get(self.kind, self.min)), self.upper)

    @property
    def upper(self) -> int:
        """The largest length `sample` can return."""
        if self.kind == "fixed":
            natural = int(self.mean)
        elif self.kind == "uniform":
            natural = round(self.mean * (1 + self.range_ratio))
        else:
            natural = self.max
        return max(self.min, natural if self.max is None else min(natural, self.max))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw `n` lengths from `rng`: int64 array of shape [n], every value in [min, upper]."""
        assert self.kind != TRACE_KIND, "a trace's lengths are read from its rows, not sampled"
        if self.kind == "fixed":
            raw = np.full(n, int(self.mean), dtype=np.int64)  # [n]
        elif self.kind == "uniform":
            low, high = round(self.mean * (1 - self.range_ratio)), round(self.mean * (1 + self.range_ratio))
            raw = rng.integers(low, high + 1, size=n, dtype=np.int64)  # [n]
        elif self.kind == "normal":
            raw = np.rint(rng.normal(self.mean, self.std, size=n))  # [n]
        else:
            mu = math.log(self.mean) - self.sigma**2 / 2
            raw = np.rint(rng.lognormal(mu, self.sigma, size=n))  # [n]
        return np.clip(raw, self.min, self.upper).astype(np.int64)  # [n]

    def short(self) -> str:
        """One-line description, e.g. 'lognormal ~160 σ 1 [4-1024]' (~ marks the mean)."""
        if self.kind == "fixed":
            return f"fixed {self.lower}"
        extra = {"uniform": f" ±{self.range_ratio or 0:.0%}", "normal": f" sd {self.std or 0:g}",
                 "lognormal": f" σ {self.sigma or 0:g}", TRACE_KIND: ""}[self.kind]
        mean = f"{self.mean:.3g}" if self.kind == TRACE_KIND else f"{self.mean:g}"  # a trace's mean is measured
        return f"{self.kind} ~{mean}{extra} [{self.lower}-{self.upper}]"


@dataclass(frozen=True)
class SharedPrefix:
    """`num_prefixes` distinct system prompts of `length` tokens; each prompt = one prefix + its own tokens."""

    num_prefixes: int
    length: int

    def __post_init__(self) -> None:
        if self.num_prefixes < 1:
            raise ConfigError(f"num_prefixes: must be >= 1 (got {self.num_prefixes})")
        if self.length < 1:
            raise ConfigError(f"length: must be >= 1 (got {self.length})")


@dataclass(frozen=True)
class WorkloadSpec:
    """A named traffic pattern. With a shared prefix, a prompt is prefix.length + prompt-sampled tokens long.

    Arrivals: "burst" puts every request at t=0; "poisson" draws inter-arrival gaps from
    Gamma(shape=burstiness, scale=1/(rate*burstiness)) (mean 1/rate; burstiness 1.0 is a Poisson process,
    < 1 burstier, > 1 more regular; vLLM's --burstiness); "trace" replays a `Trace` file's rows (times and
    lengths; `prompt`/`output` then describe its columns). The first request arrives at t=0.
    A ramp (Poisson only, in place of `rate`) moves the rate from `ramp_start_rate` to `ramp_end_rate` over the
    requests as vLLM's ramp-up does: request i's gap is drawn at the rate reached at progress i / (n - 1), linearly
    or exponentially (start * (end / start) ** progress).
    """

    name: str
    description: str
    num_requests: int
    arrival: str
    prompt: LengthDist
    output: LengthDist
    rate: float | None = None
    burstiness: float = 1.0
    shared_prefix: SharedPrefix | None = None
    num_samples: int = 1
    beam_width: int = 1  # > 1: beam search (vLLM's BeamSearchParams.beam_width); 1: greedy
    length_penalty: float = 1.0  # beam search's final score: cum_logprob / num_tokens ** length_penalty
    seed: int = 0
    source: str = ""  # file the spec came from, for error messages
    trace: Trace | None = None  # arrival = "trace": the rows replayed (num_requests takes the first ones)
    ramp: str | None = None  # "linear" or "exponential" (Poisson): the rate ramps from ramp_start_rate to ramp_end_rate
    ramp_start_rate: float | None = None
    ramp_end_rate: float | None = None

    def error(self, key: str, problem: str) -> ConfigError:
        """A ConfigError reading "FILE: KEY: problem" (the caller raises it)."""
        return ConfigError(f"{self.source or f'workload {self.name!r}'}: {key}: {problem}")

    def __post_init__(self) -> None:
        if self.num_requests < 1:
            raise self.error("num_requests", f"must be >= 1 (got {self.num_requests})")
        if self.arrival not in ARRIVALS:
            raise self.error("arrival", f"unknown arrival {self.arrival!r} (expected one of {', '.join(ARRIVALS)})")
        self._check_ramp()
        if self.arrival == "poisson" and self.ramp is None and (
                self.rate is None or not (math.isfinite(self.rate) and self.rate > 0)):
            raise self.error("rate", f"must be > 0 requests/s for poisson arrival (got {self.rate})")
        if self.arrival != "poisson" and self.rate is not None:
            raise self.error("rate", "only used with arrival = 'poisson'")
        if (self.arrival == "trace") != (self.trace is not None):
            raise self.error("trace", "a trace file goes with arrival = 'trace', and arrival = 'trace' needs one")
        if self.trace is not None and self.shared_prefix is not None:
            raise self.error("shared_prefix", "not used with arrival = 'trace' (the trace gives whole prompt lengths)")
        if self.trace is not None and self.num_requests > self.trace.num_rows:
            raise self.error("num_requests", f"{self.num_requests} > the {self.trace.num_rows} rows of the trace")
        if not (math.isfinite(self.burstiness) and self.burstiness > 0):
            raise self.error("burstiness", f"must be > 0 (got {self.burstiness})")
        if self.num_samples < 1:
            raise self.error("num_samples", f"must be >= 1 (got {self.num_samples})")
        if self.beam_width < 1:
            raise self.error("beam_width", f"must be >= 1 (got {self.beam_width})")
        if self.beam_width > 1 and self.num_samples > 1:
            raise self.error("beam_width", f"beam search ({self.beam_width} beams) and parallel sampling "
                                           f"({self.num_samples} samples) in one request: choose one")
        if not math.isfinite(self.length_penalty):
            raise self.error("length_penalty", f"must be a finite number (got {self.length_penalty})")
        try:
            check_seed(self.seed)
        except ConfigError:
            raise self.error("seed", f"must be an integer in [0, 2**63 - 1 = {MAX_SEED}] (got {self.seed!r})") from None

    def _check_ramp(self) -> None:
        """A ramp goes with Poisson arrivals, replaces `rate`, and needs a start and an end rate > 0."""
        rates = {"ramp_start_rate": self.ramp_start_rate, "ramp_end_rate": self.ramp_end_rate}
        if self.ramp is None:
            for key, value in rates.items():
                if value is not None:
                    raise self.error(key, "only used with a ramp (ramp = 'linear' or 'exponential')")
            return
        if self.ramp not in RAMPS:
            raise self.error("ramp", f"unknown ramp {self.ramp!r} (expected one of {', '.join(RAMPS)})")
        if self.arrival != "poisson":
            raise self.error("ramp", "only used with arrival = 'poisson'")
        if self.rate is not None:
            raise self.error("rate", "a ramp sets the rate (ramp_start_rate to ramp_end_rate): drop rate")
        for key, value in rates.items():
            if value is None or not (math.isfinite(value) and value > 0):
                raise self.error(key, f"must be > 0 requests/s for a ramp (got {value})")

    def rates(self, n: int) -> np.ndarray:
        """The Poisson rate each of `n` requests' gaps is drawn at: [n] (the first request arrives at t=0)."""
        if self.ramp is None:
            return np.full(n, self.rate)  # [n]
        progress = np.arange(n) / max(n - 1, 1)  # [n]
        start, end = self.ramp_start_rate, self.ramp_end_rate
        if self.ramp == "linear":
            return start + (end - start) * progress  # [n]
        return start * (end / start) ** progress  # [n]

    @property
    def max_request_len(self) -> int:
        """Longest prompt + output one request can need (prefix + prompt.upper + output.upper)."""
        if self.trace is not None:
            return max(p + o for p, o in zip(self.trace.prompt_lens, self.trace.output_lens))
        prefix_len = self.shared_prefix.length if self.shared_prefix else 0
        return prefix_len + self.prompt.upper + self.output.upper

    def arrival_text(self) -> str:
        """'burst' or e.g. 'poisson 8 req/s' (with burstiness when it is not 1)."""
        if self.arrival == "burst":
            return "burst"
        if self.trace is not None:
            return self.trace.text()
        if self.ramp is not None:
            return (f"poisson ramp {self.ramp} {self.ramp_start_rate:g}->{self.ramp_end_rate:g} req/s"
                    + (f" burstiness {self.burstiness:g}" if self.burstiness != 1 else ""))
        return f"poisson {self.rate:g} req/s" + (f" burstiness {self.burstiness:g}" if self.burstiness != 1 else "")


@dataclass(frozen=True)
class Request:
    """One generated request: when it arrives, its prompt, how many tokens each of its samples must produce."""

    request_id: int
    arrival_s: float
    prompt_token_ids: tuple[int, ...]
    output_len: int
    num_samples: int = 1
    prefix_id: int | None = None  # which shared system prompt the prompt starts with
    beam_width: int = 1  # > 1: beam search over this many beams (engine/beam.py)
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not self.prompt_token_ids or self.output_len < 1 or self.num_samples < 1 or self.beam_width < 1:
            raise ConfigError(f"request {self.request_id}: needs a prompt, output_len >= 1, num_samples >= 1 and "
                              "beam_width >= 1")
        if self.beam_width > 1 and self.num_samples > 1:
            raise ConfigError(f"request {self.request_id}: beam search and parallel sampling in one request")

    @property
    def num_seqs(self) -> int:
        """Sequences the request runs side by side: its samples, or its beams."""
        return max(self.num_samples, self.beam_width)

    @property
    def num_prompt_tokens(self) -> int:
        """Prompt length in tokens (shared prefix included)."""
        return len(self.prompt_token_ids)


def with_rate(spec: WorkloadSpec, rate: float) -> WorkloadSpec:
    """`spec` at `rate` requests/s (`sweep --rates`, `run --request-rate`): Poisson arrivals, or a trace's times
    rescaled to that mean; inf (vLLM's default rate) puts every request at t=0."""
    if spec.trace is not None:
        return replace(spec, trace=spec.trace.scaled_to(rate))
    burst = math.isinf(rate)
    return replace(spec, arrival="burst" if burst else "poisson", rate=None if burst else rate, ramp=None,
                   ramp_start_rate=None, ramp_end_rate=None)


def check_arrival_span(rate: float | np.ndarray, num_requests: int) -> None:
    """Refuse Poisson arrivals expected to span more than MAX_ARRIVAL_SPAN_S (the run would mostly sleep).
    `rate`: one rate, or each request's ([num_requests], a ramp)."""
    rates = np.broadcast_to(np.asarray(rate, dtype=float), (num_requests,))  # [n]
    span = float(np.sum(1.0 / rates[1:]))  # the expected time of the last arrival: n - 1 gaps of mean 1 / rate
    if span > MAX_ARRIVAL_SPAN_S:
        text = f"{rate:g} req/s" if np.ndim(rate) == 0 else f"{rates[0]:g}->{rates[-1]:g} req/s"
        raise ConfigError(f"rate {text}: {num_requests} requests would arrive over ~{_duration(span)} "
                          f"(expected); arrival spans over {_duration(MAX_ARRIVAL_SPAN_S)} are refused: raise the "
                          f"rate or lower num_requests")


def _duration(seconds: float) -> str:
    """'42 s', '3.5 min', '2 h', '4.1 days', '1,490 years' (for messages)."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size or unit == "s":
            value = seconds / size
            return f"{value:.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    raise AssertionError("unreachable")


def _would_do(need: int) -> str:
    """The hint a too-small --max-model-len gets: the value that would do, and that leaving it out does too."""
    return f"; --max-model-len {need} would do (left out, it follows the workload)"


def generate(spec: WorkloadSpec, *, vocab_size: int, max_model_len: int,
             num_requests: int | None = None, seed: int | None = None) -> list[Request]:
    """Requests for `spec` (optionally overriding its count and seed); deterministic in (spec, seed)."""
    if vocab_size < 1:
        raise ConfigError(f"vocab_size: must be >= 1 (got {vocab_size})")
    if spec.trace is None and spec.max_request_len > max_model_len:  # a trace's rows are checked one by one
        prefix = "shared_prefix.length + " if spec.shared_prefix else ""
        raise spec.error(f"{prefix}prompt.max + output.max",
                          f"a request can need {spec.max_request_len} tokens > max_model_len {max_model_len}"
                          f"{_would_do(spec.max_request_len)}")
    n = spec.num_requests if num_requests is None else num_requests
    if n < 1:
        raise ConfigError(f"num_requests: must be >= 1 (got {n})")
    rng = np.random.default_rng(spec.seed if seed is None else check_seed(seed))
    if spec.trace is not None:
        try:
            check_trace_fits(spec.trace, n, max_model_len)
        except ConfigError as error:  # name the value that fits every row replayed
            need = max(p + o for p, o in zip(spec.trace.prompt_lens[:n], spec.trace.output_lens[:n]))
            raise ConfigError(f"{error}{_would_do(need) if need > max_model_len else ''}") from None
        if spec.trace.arrival_s[n - 1] > MAX_ARRIVAL_SPAN_S:
            raise ConfigError(f"{spec.trace.path}: {n} rows arrive over {_duration(spec.trace.arrival_s[n - 1])}; "
                              f"arrival spans over {_duration(MAX_ARRIVAL_SPAN_S)} are refused")
        arrivals = np.asarray(spec.trace.arrival_s[:n])  # [n]
        prompt_lens = np.asarray(spec.trace.prompt_lens[:n], dtype=np.int64)  # [n]
        output_lens = np.asarray(spec.trace.output_lens[:n], dtype=np.int64)  # [n]
    elif spec.arrival == "poisson":
        rates = spec.rates(n)  # [n]
        check_arrival_span(spec.rate if spec.ramp is None else rates, n)
        # one rate: a scalar scale, as before ramps existed (the same draws, so the same requests for a seed)
        scale = 1.0 / (spec.rate * spec.burstiness) if spec.ramp is None else 1.0 / (rates[1:] * spec.burstiness)
        gaps = rng.gamma(shape=spec.burstiness, scale=scale, size=n - 1)  # [n - 1]
        arrivals = np.concatenate([[0.0], np.cumsum(gaps)])  # [n]
    else:
        arrivals = np.zeros(n)  # [n]
    if spec.trace is None:
        prompt_lens = spec.prompt.sample(rng, n)  # [n]
        output_lens = spec.output.sample(rng, n)  # [n]
    prefixes: list[list[int]] = []
    prefix_ids: list[int | None] = [None] * n
    if spec.shared_prefix is not None:
        k, p = spec.shared_prefix.num_prefixes, spec.shared_prefix.length
        prefixes = rng.integers(0, vocab_size, size=(k, p)).tolist()  # [k, p]
        prefix_ids = rng.integers(0, k, size=n).tolist()  # [n]
    tokens = rng.integers(0, vocab_size, size=int(prompt_lens.sum())).tolist()  # [sum(prompt_lens)]
    starts = np.concatenate([[0], np.cumsum(prompt_lens)]).tolist()  # [n + 1]
    requests = []
    for i in range(n):
        own = tokens[starts[i]:starts[i + 1]]
        prompt = own if prefix_ids[i] is None else prefixes[prefix_ids[i]] + own
        requests.append(Request(request_id=i, arrival_s=float(arrivals[i]), prompt_token_ids=tuple(prompt),
                                output_len=int(output_lens[i]), num_samples=spec.num_samples,
                                prefix_id=prefix_ids[i], beam_width=spec.beam_width,
                                length_penalty=spec.length_penalty))
    return requests
