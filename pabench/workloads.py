"""Workloads: what traffic a run serves. A `WorkloadSpec` (from a TOML preset) and a seeded generator of `Request`s.

A spec says how many requests arrive when, how long their prompts and outputs are (`LengthDist`), whether
prompts start with a shared system prompt (`SharedPrefix`) and how many samples each request asks for.
`generate` turns a spec into requests with its own `numpy.random.default_rng(seed)`: same spec + seed,
same requests, on any machine. Torch-free on purpose (`pabench workloads` must stay fast).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pabench
from pabench.core.errors import ConfigError

LENGTH_KINDS = ("fixed", "uniform", "normal", "lognormal")
ARRIVALS = ("burst", "poisson")
_KIND_PARAM = {"uniform": "range_ratio", "normal": "std", "lognormal": "sigma"}  # the one extra key each needs


def presets_dir() -> Path:
    """The repo's `workloads/` folder, found relative to the installed package."""
    return Path(pabench.__file__).resolve().parent.parent / "workloads"


@dataclass(frozen=True)
class LengthDist:
    """A distribution of token counts, rounded to integers then clipped to [min, max].

    - fixed: always `mean`.
    - uniform: integers in [round(mean*(1-range_ratio)), round(mean*(1+range_ratio))], both ends included
      (vLLM's random dataset `--random-range-ratio` convention); 0 <= range_ratio < 1.
    - normal: Normal(mean, std).
    - lognormal: heavy-tailed; `sigma` is the underlying normal's sigma and mu = ln(mean) - sigma^2/2, so the
      distribution's mean (before clipping) is `mean`.
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
        if self.kind not in LENGTH_KINDS:
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
        if self.max is None and self.kind in ("normal", "lognormal"):
            raise ConfigError(f"max: required for kind {self.kind!r} (it is unbounded)")
        if self.max is not None and self.max < self.min:
            raise ConfigError(f"max: min > max ({self.min} > {self.max})")

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
                 "lognormal": f" σ {self.sigma or 0:g}"}[self.kind]
        return f"{self.kind} ~{self.mean:g}{extra} [{self.lower}-{self.upper}]"


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
    < 1 burstier, > 1 more regular; vLLM's --burstiness). The first request arrives at t=0.
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
    seed: int = 0
    source: str = ""  # file the spec came from, for error messages

    def error(self, key: str, problem: str) -> ConfigError:
        """A ConfigError reading "FILE: KEY: problem" (the caller raises it)."""
        return ConfigError(f"{self.source or f'workload {self.name!r}'}: {key}: {problem}")

    def __post_init__(self) -> None:
        if self.num_requests < 1:
            raise self.error("num_requests", f"must be >= 1 (got {self.num_requests})")
        if self.arrival not in ARRIVALS:
            raise self.error("arrival", f"unknown arrival {self.arrival!r} (expected one of {', '.join(ARRIVALS)})")
        if self.arrival == "poisson" and (self.rate is None or not (math.isfinite(self.rate) and self.rate > 0)):
            raise self.error("rate", f"must be > 0 requests/s for poisson arrival (got {self.rate})")
        if self.arrival == "burst" and self.rate is not None:
            raise self.error("rate", "only used with arrival = 'poisson'")
        if not (math.isfinite(self.burstiness) and self.burstiness > 0):
            raise self.error("burstiness", f"must be > 0 (got {self.burstiness})")
        if self.num_samples < 1:
            raise self.error("num_samples", f"must be >= 1 (got {self.num_samples})")

    @property
    def max_request_len(self) -> int:
        """Longest prompt + output one request can need (prefix + prompt.upper + output.upper)."""
        prefix_len = self.shared_prefix.length if self.shared_prefix else 0
        return prefix_len + self.prompt.upper + self.output.upper

    def arrival_text(self) -> str:
        """'burst' or e.g. 'poisson 8 req/s' (with burstiness when it is not 1)."""
        if self.arrival == "burst":
            return "burst"
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

    def __post_init__(self) -> None:
        if not self.prompt_token_ids or self.output_len < 1 or self.num_samples < 1:
            raise ConfigError(f"request {self.request_id}: needs a prompt, output_len >= 1 and num_samples >= 1")

    @property
    def num_prompt_tokens(self) -> int:
        """Prompt length in tokens (shared prefix included)."""
        return len(self.prompt_token_ids)


def generate(spec: WorkloadSpec, *, vocab_size: int, max_model_len: int,
             num_requests: int | None = None, seed: int | None = None) -> list[Request]:
    """Requests for `spec` (optionally overriding its count and seed); deterministic in (spec, seed)."""
    if vocab_size < 1:
        raise ConfigError(f"vocab_size: must be >= 1 (got {vocab_size})")
    if spec.max_request_len > max_model_len:
        prefix = "shared_prefix.length + " if spec.shared_prefix else ""
        raise spec.error(f"{prefix}prompt.max + output.max",
                          f"a request can need {spec.max_request_len} tokens > max_model_len {max_model_len}")
    n = spec.num_requests if num_requests is None else num_requests
    if n < 1:
        raise ConfigError(f"num_requests: must be >= 1 (got {n})")
    rng = np.random.default_rng(spec.seed if seed is None else seed)
    if spec.arrival == "poisson":
        scale = 1.0 / (spec.rate * spec.burstiness)
        gaps = rng.gamma(shape=spec.burstiness, scale=scale, size=n - 1)  # [n - 1]
        arrivals = np.concatenate([[0.0], np.cumsum(gaps)])  # [n]
    else:
        arrivals = np.zeros(n)  # [n]
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
                                prefix_id=prefix_ids[i]))
    return requests


# ---- loading TOML presets ---------------------------------------------------------------------------------

_TYPES = {int: "an integer", float: "a number", str: "a string", dict: "a table"}


def _take(table: dict[str, Any], key: str, kind: type, where: str, path: str, default: Any = ...) -> Any:
    """Pop `key` from `table` checking its type; `default=...` means required. Errors name file and key."""
    full = f"{path}.{key}" if path else key
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: {full}: missing required key")
        return default
    value = table.pop(key)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise ConfigError(f"{where}: {full}: must be {_TYPES[kind]} (got {type(value).__name__} {value!r})")
    return value


_TOP_KEYS = ("name", "description", "num_requests", "arrival", "rate", "burstiness", "num_samples", "seed",
             "prompt", "output", "shared_prefix")
_DIST_KEYS = ("kind", "mean", "range_ratio", "std", "sigma", "min", "max")
_PREFIX_KEYS = ("num_prefixes", "length")


def _reject_unknown(table: dict[str, Any], allowed: tuple[str, ...], where: str, path: str) -> None:
    """Checked before anything else: a misspelt key explains a "missing" one better than the reverse."""
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{where}: {key}: unknown key (expected one of {', '.join(allowed)})")


def _nested(build: Any, where: str, path: str, **kwargs: Any) -> Any:
    """Construct a nested dataclass, prefixing its "KEY: problem" errors with the file and table name."""
    try:
        return build(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{where}: {path}.{error}") from None


def _length_dist(raw: dict[str, Any], where: str, path: str) -> LengthDist:
    table = dict(raw)
    _reject_unknown(table, _DIST_KEYS, where, path)
    kwargs = dict(kind=_take(table, "kind", str, where, path), mean=_take(table, "mean", float, where, path),
                  range_ratio=_take(table, "range_ratio", float, where, path, None),
                  std=_take(table, "std", float, where, path, None),
                  sigma=_take(table, "sigma", float, where, path, None),
                  min=_take(table, "min", int, where, path, 1), max=_take(table, "max", int, where, path, None))
    return _nested(LengthDist, where, path, **kwargs)


def parse_workload(text: str, source: str, default_name: str = "workload") -> WorkloadSpec:
    """A `WorkloadSpec` from TOML text; `source` names the file in every error."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: malformed TOML: {error}") from None
    _reject_unknown(table, _TOP_KEYS, source, "")
    name = _take(table, "name", str, source, "", default_name)
    description = _take(table, "description", str, source, "")
    num_requests = _take(table, "num_requests", int, source, "")
    arrival = _take(table, "arrival", str, source, "")
    rate = _take(table, "rate", float, source, "", None)
    burstiness = _take(table, "burstiness", float, source, "", 1.0)
    num_samples = _take(table, "num_samples", int, source, "", 1)
    seed = _take(table, "seed", int, source, "", 0)
    prompt = _length_dist(_take(table, "prompt", dict, source, ""), source, "prompt")
    output = _length_dist(_take(table, "output", dict, source, ""), source, "output")
    shared_prefix = None
    if "shared_prefix" in table:
        raw = dict(_take(table, "shared_prefix", dict, source, ""))
        _reject_unknown(raw, _PREFIX_KEYS, source, "shared_prefix")
        kwargs = dict(num_prefixes=_take(raw, "num_prefixes", int, source, "shared_prefix"),
                      length=_take(raw, "length", int, source, "shared_prefix"))
        shared_prefix = _nested(SharedPrefix, source, "shared_prefix", **kwargs)
    return WorkloadSpec(name=name, description=description, num_requests=num_requests, arrival=arrival,
                        prompt=prompt, output=output, rate=rate, burstiness=burstiness,
                        shared_prefix=shared_prefix, num_samples=num_samples, seed=seed, source=source)


def load_workload(name_or_path: str) -> WorkloadSpec:
    """A preset by name (`workloads/NAME.toml`) or a TOML file by path."""
    path = Path(name_or_path)
    looks_like_path = path.suffix == ".toml" or len(path.parts) > 1 or path.is_file()
    if not looks_like_path:
        path = presets_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            names = ", ".join(p.stem for p in sorted(presets_dir().glob("*.toml")))
            raise ConfigError(f"unknown workload {name_or_path!r}: not a file and not a preset (presets: {names})")
    if not path.is_file():
        raise ConfigError(f"{path}: workload file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read workload file: {error}") from None
    return parse_workload(text, source=str(path), default_name=path.stem)


def list_presets() -> list[WorkloadSpec]:
    """Every preset in `workloads/`, sorted by name."""
    return sorted((load_workload(str(p)) for p in presets_dir().glob("*.toml")), key=lambda spec: spec.name)
