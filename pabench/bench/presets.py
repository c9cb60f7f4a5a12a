"""Workload presets as TOML: `load_workload(name_or_path)`, `list_presets()`, `parse_workload(text)`.

Every error names the file and the key (`sharegpt.toml: prompt.mean: must be a number`), unknown keys are
rejected before missing ones are reported, and the dataclasses in `workloads.py` validate the values.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pabench
from pabench.errors import ConfigError
from pabench.bench.trace import Trace, read_trace
from pabench.bench.workloads import LengthDist, SharedPrefix, WorkloadSpec


def presets_dir() -> Path:
    """The repo's `workloads/` folder, found relative to the installed package."""
    return Path(pabench.__file__).resolve().parent.parent / "workloads"


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


_TOP_KEYS = ("name", "description", "num_requests", "arrival", "rate", "burstiness", "num_samples", "beam_width",
             "length_penalty", "seed", "prompt", "output", "shared_prefix", "trace", "ramp", "ramp_start_rate",
             "ramp_end_rate")
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
    arrival = _take(table, "arrival", str, source, "")
    trace = _trace(table, arrival, source)
    num_requests = _take(table, "num_requests", int, source, "", trace.num_rows if trace else ...)
    rate = _take(table, "rate", float, source, "", None)
    burstiness = _take(table, "burstiness", float, source, "", 1.0)
    ramp = {key: _take(table, key, str if key == "ramp" else float, source, "", None)
            for key in ("ramp", "ramp_start_rate", "ramp_end_rate")}
    num_samples = _take(table, "num_samples", int, source, "", 1)
    beam_width = _take(table, "beam_width", int, source, "", 1)
    length_penalty = _take(table, "length_penalty", float, source, "", 1.0)
    seed = _take(table, "seed", int, source, "", 0)
    if trace is not None:  # the trace's columns, described (the rows themselves are replayed)
        prompt, output = LengthDist.from_lengths(trace.prompt_lens), LengthDist.from_lengths(trace.output_lens)
    else:
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
                        shared_prefix=shared_prefix, num_samples=num_samples, beam_width=beam_width,
                        length_penalty=length_penalty, seed=seed, source=source, trace=trace, **ramp)


def _trace(table: dict[str, Any], arrival: str, source: str) -> Trace | None:
    """arrival = "trace": the file named by `trace` (relative to the TOML file), read and checked; it gives every
    length, so [prompt] and [output] are refused. Any other arrival: `trace` is refused."""
    if arrival != "trace":
        if "trace" in table:
            raise ConfigError(f"{source}: trace: only used with arrival = 'trace'")
        return None
    for key in ("prompt", "output"):
        if key in table:
            raise ConfigError(f"{source}: {key}: not used with arrival = 'trace' (the trace gives every length)")
    path = Path(_take(table, "trace", str, source, ""))
    return read_trace(path if path.is_absolute() else Path(source).parent / path)


def load_workload(name_or_path: str | WorkloadSpec) -> WorkloadSpec:
    """A preset by name (`workloads/NAME.toml`) or a TOML file by path; a `WorkloadSpec` is taken as it is (a
    `RunConfig` may carry one built in code, e.g. a preset with `run --input-len`'s overrides)."""
    if isinstance(name_or_path, WorkloadSpec):
        return name_or_path
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
