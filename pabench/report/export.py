"""The exports: flat CSV rows (one per backend and swept setting, units in column names, the run's config and
the pabench version/commit beside the numbers), the JSON (those rows plus a summary of every backend's steps and
its raw requests: what to read when a number needs explaining), and reading either back as a frame.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import pabench
from pabench.atomic import atomic_write_text
from pabench.backends import is_paged
from pabench.bench.metrics import PERCENTILES, Result, Stats, host_over_device, metric_row
from pabench.bench.repeat import ci_column
from pabench.errors import ConfigError

if TYPE_CHECKING:
    from pabench.engine.records import RequestRecord, StepSample

META_COLUMNS = ("pabench_version", "git_commit")
# Export columns that hold text. `read_results` reads them as text: pandas would otherwise parse a commit such as
# "3e92438" as the float 3e92438 (= inf) and "1234567" as an int.
TEXT_COLUMNS = frozenset({"backend", "date", "workload", "model", "device", "dtype", "attn_impl", "arrival",
                          "token_match_vs", "goodput", "comparability", "seeds", *META_COLUMNS})
CONTRACT_COLUMN = "comparability"  # the run's comparability contract (bench/contract.py): the last column
# Columns that only a paged cache has a value for: a contiguous row writes them empty (null in JSON), not the
# page_size=1 / prefix_caching=False its `describe()` reports, which read as settings that were chosen.
PAGED_ONLY_COLUMNS = ("page_size", "prefix_caching", "watermark", "prefix_hit_pct", "num_cow_copies",
                      "capacity_page_size")
# Old column -> (new column, factor). pabench 0.1.0 wrote E2E in seconds; `read_results` renames them so older
# exports (results/gpu/, baselines) still compare against new ones. Kept for one release.
COLUMN_ALIASES = {f"e2e_{stat}_s": (f"e2e_{stat}_ms", 1e3)
                  for stat in ("mean", "std", *(f"p{p}" for p in PERCENTILES), "min", "max")}


@lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit of the repo pabench runs from, or 'unknown' (never raises)."""
    if os.environ.get("PABENCH_COMMIT"):  # set by scripts that run a copy of the tree without .git (a GPU box)
        return os.environ["PABENCH_COMMIT"]
    root = Path(pabench.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return "unknown"
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


# ---- CSV rows ----------------------------------------------------------------------------------------------

def _flat_value(value: Any) -> Any:
    """Scalars as they are, anything else as sorted JSON text (one CSV cell)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def result_row(result: Result) -> dict[str, Any]:
    """One flat export row: backend, config keys, metrics, `capacity_*`, version and commit.

    A config key that is also a metric name keeps the measured value; if the config differs it is kept as
    `config_<key>`.
    """
    metrics = metric_row(result)
    row: dict[str, Any] = {"backend": result.backend}
    for key, value in result.config.items():
        if key in ("backend", CONTRACT_COLUMN):
            continue
        if key in metrics:
            if value != metrics[key]:
                row[f"config_{key}"] = _flat_value(value)
            continue
        row[key] = _flat_value(value)
    row.update(metrics)
    row.update({ci_column(column): value for column, value in result.ci95.items()})  # `run --repeat` over seeds
    row.update({f"capacity_{k}": _flat_value(v) for k, v in result.capacity.items()})
    row.update(pabench_version=pabench.__version__, git_commit=git_commit())
    if not is_paged(result.backend):
        row.update({c: None for column in PAGED_ONLY_COLUMNS for c in (column, ci_column(column)) if c in row})
    if CONTRACT_COLUMN in result.config:  # one JSON-encoded cell in a CSV (results_json puts the object back)
        row[CONTRACT_COLUMN] = _flat_value(result.config[CONTRACT_COLUMN])
    return row


def _typed(values: pd.Series) -> pd.Series:
    """Integer columns as pandas' nullable Int64, so a missing cell does not turn 16 into 16.0 in the CSV."""
    present = [v for v in values if not (v is None or (isinstance(v, float) and math.isnan(v)))]
    if present and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in present):
        return values.astype("Int64")
    return values.mask(values.isna(), np.nan)  # None -> NaN, as the CSV reads back


def results_frame(results: list[Result]) -> pd.DataFrame:
    """One row per result, flat columns with units in their names (see `result_row`); ints stay ints."""
    frame = pd.DataFrame([result_row(r) for r in results], dtype=object)
    if CONTRACT_COLUMN in frame.columns:  # last, after every backend's own columns
        frame = frame[[c for c in frame.columns if c != CONTRACT_COLUMN] + [CONTRACT_COLUMN]]
    return frame.apply(_typed).infer_objects() if not frame.empty else frame


def sweep_frame(results: list[Result], swept: tuple[str, ...]) -> pd.DataFrame:
    """A sweep's tidy frame: one row per run, the swept `sweep_*` columns first, then backend, then the rest."""
    frame = results_frame(results)
    if frame.empty:
        return frame
    first = [c for c in swept if c in frame.columns] + ["backend"]
    return frame[first + [c for c in frame.columns if c not in first]]


def write_csv(results: list[Result], path: str | Path) -> Path:
    """Write `results_frame(results)` as CSV, atomically (parent directories created)."""
    return atomic_write_text(path, results_frame(results).to_csv(index=False))


def read_results(path: str | Path) -> pd.DataFrame:
    """Read an export back (CSV, or JSON's `rows`) as a frame; ConfigError if it is not a pabench export."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            frame = pd.DataFrame(json.loads(path.read_text(encoding="utf-8"))["rows"])
        else:
            frame = pd.read_csv(path, dtype={column: str for column in TEXT_COLUMNS})
    except (OSError, ValueError, KeyError, TypeError, pd.errors.ParserError) as error:
        raise ConfigError(f"{path}: cannot read results: {error}") from None
    if "backend" not in frame.columns:
        raise ConfigError(f"{path}: not a pabench export (no 'backend' column)")
    return _upgrade(frame)


def _upgrade(frame: pd.DataFrame) -> pd.DataFrame:
    """An older export in today's schema: `COLUMN_ALIASES` renamed and scaled, paged-only cells of contiguous rows
    emptied (0.1.0 wrote page_size 1 there), so it matches a new export row for row."""
    for old, (new, factor) in COLUMN_ALIASES.items():
        if old in frame.columns and new not in frame.columns:
            frame[old] = pd.to_numeric(frame[old], errors="coerce") * factor
            frame = frame.rename(columns={old: new})
    contiguous = ~frame["backend"].map(is_paged).astype(bool)
    for column in PAGED_ONLY_COLUMNS:
        if column in frame.columns and contiguous.any():
            frame[column] = frame[column].mask(contiguous)
    return frame.copy()  # one block per dtype again: column-wise edits above fragment it (pandas warns later)


# ---- JSON -------------------------------------------------------------------------------------------------

def json_safe(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively, so the JSON is standard."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def steps_summary(steps: list[StepSample], max_points: int = 256) -> dict[str, Any]:
    """Per step kind: counts and Stats of step/host time and batch size; plus a memory timeline of <= max_points."""
    by_kind: dict[str, Any] = {}
    for kind in sorted({s.kind for s in steps}):
        chosen = [s for s in steps if s.kind == kind]
        by_kind[kind] = dict(num_steps=len(chosen), num_tokens=sum(s.num_tokens for s in chosen),
                             step_s=dataclasses.asdict(Stats.from_samples(s.step_s for s in chosen)),
                             host_s=dataclasses.asdict(Stats.from_samples(s.host_s for s in chosen)),
                             device_s=dataclasses.asdict(Stats.from_samples(s.device_s for s in chosen)),
                             num_seqs=dataclasses.asdict(Stats.from_samples(s.num_seqs for s in chosen)))
    picks = sorted(set(np.linspace(0, len(steps) - 1, min(len(steps), max_points)).round().astype(int).tolist()))
    sampled = [steps[i] for i in picks]
    timeline = {"time_s": [s.time_s for s in sampled], "kind": [s.kind for s in sampled],
                "num_running": [s.num_running for s in sampled], "num_waiting": [s.num_waiting for s in sampled]}
    for name in ("reserved_bytes", "used_bytes", "slack_bytes", "idle_bytes", "saved_bytes"):
        timeline[name] = [getattr(s.memory, name) for s in sampled]
    # Every prefill step (they are few): shows whether slow prefills are one-time costs early in a run.
    prefills = [s for s in steps if s.kind == "prefill"]
    prefill_steps = {"time_s": [round(s.time_s, 6) for s in prefills], "num_seqs": [s.num_seqs for s in prefills],
                     "num_tokens": [s.num_tokens for s in prefills],
                     "step_ms": [round(s.step_s * 1e3, 3) for s in prefills],
                     "device_ms": [round(s.device_s * 1e3, 3) for s in prefills]}
    # Every mixed step (chunked prefill): how its token budget split between prompt chunks and decode tokens.
    mixed = [s for s in steps if s.kind == "mixed"]
    mixed_steps = {"time_s": [round(s.time_s, 6) for s in mixed], "num_seqs": [s.num_seqs for s in mixed],
                   "num_prefill_tokens": [s.num_tokens - s.num_decode_tokens for s in mixed],
                   "num_decode_tokens": [s.num_decode_tokens for s in mixed],
                   "step_ms": [round(s.step_s * 1e3, 3) for s in mixed],
                   "device_ms": [round(s.device_s * 1e3, 3) for s in mixed]}
    timeline["num_prefill_tokens"] = [s.num_tokens - s.num_decode_tokens if s.kind != "idle" else 0 for s in sampled]
    timeline["num_decode_tokens"] = [s.num_decode_tokens for s in sampled]
    return {"by_kind": by_kind, "timeline": timeline, "prefill_steps": prefill_steps, "mixed_steps": mixed_steps,
            "decode_by_batch": decode_by_batch(steps)}


BATCH_BUCKETS = (1, 33, 65, 129, 193, 241, 10**9)  # lower edges: 1-32, 33-64, ..., 193-240, 241+


def decode_by_batch(steps: list[StepSample]) -> list[dict[str, Any]]:
    """Decode steps grouped by batch size: mean host and device ms and host/device %, so the host overhead at
    a given batch (e.g. 241-256) is read directly instead of extrapolated from a run's mean batch."""
    rows = []
    for lo, hi in zip(BATCH_BUCKETS, BATCH_BUCKETS[1:]):
        chosen = [s for s in steps if s.kind == "decode" and lo <= s.num_seqs < hi]
        if not chosen:
            continue
        mean_ms = lambda values: round(1e3 * sum(values) / len(chosen), 4)  # noqa: E731
        ratio = host_over_device(chosen)  # the Result's own measure, per bucket; NaN (null in JSON) on the CPU
        rows.append({"batch_min": lo, "batch_max": min(hi - 1, max(s.num_seqs for s in chosen)),
                     "num_steps": len(chosen), "host_ms": mean_ms(s.host_s for s in chosen),
                     "device_ms": mean_ms(s.device_s for s in chosen), "host_over_device_pct": round(100 * ratio, 2),
                     # where the host time goes, and the step's wall time that is neither host work nor device
                     # time (launch, waiting for the tokens, memory accounting). With --async-scheduling a step's
                     # wall time spans the step queued before it on the device, so other_ms is mostly that wait
                     # there
                     "schedule_ms": mean_ms(s.host_split_s[0] for s in chosen),
                     "stage_ms": mean_ms(s.host_split_s[1] for s in chosen),
                     "bookkeeping_ms": mean_ms(s.host_split_s[2] for s in chosen),
                     "other_ms": mean_ms(s.step_s - s.host_s - s.device_s for s in chosen)})
    return rows


def _request_json(request: RequestRecord) -> dict[str, Any]:
    """One raw request sample, times rounded to the microsecond: its timestamps, a per-sample summary (first,
    last, count) and every output token's time, so a latency plot can be drawn from the file alone."""
    doc = {f.name: getattr(request, f.name) for f in dataclasses.fields(request) if f.name != "token_times_s"}
    doc["sample_first_token_s"] = [round(float(t[0]), 6) for t in request.token_times_s]  # [num_samples]
    doc["sample_finish_s"] = [round(float(t[-1]), 6) for t in request.token_times_s]  # [num_samples]
    doc["sample_num_tokens"] = [len(t) for t in request.token_times_s]  # [num_samples]
    doc["token_times_s"] = [[round(float(x), 6) for x in t] for t in request.token_times_s]  # [num_samples][len]
    for key in ("arrival_s", "first_token_s", "finish_s"):
        doc[key] = round(float(doc[key]), 6)
    return doc


def results_json(results: list[Result], *, include_samples: bool = True) -> dict[str, Any]:
    """The JSON export as a dict: flat rows, then per backend its config, capacity, step summary, raw requests."""
    backends = []
    for r in results:
        config, capacity = dict(r.config), dict(r.capacity)
        config.pop(CONTRACT_COLUMN, None)  # stated once per row, as an object
        if not is_paged(r.backend):  # as in the rows: null where a contiguous cache has no such setting
            config.update({k: None for k in PAGED_ONLY_COLUMNS if k in config})
            capacity.update({k: None for k in ("page_size",) if k in capacity})
        entry: dict[str, Any] = json_safe({"backend": r.backend, "config": config, "capacity": capacity,
                                            "steps": steps_summary(r.steps)})
        if include_samples:  # finite floats and ints already: skip the (slow, per-value) json_safe walk
            entry["requests"] = [_request_json(q) for q in r.requests]
        backends.append(entry)
    rows = [{**result_row(r), **({CONTRACT_COLUMN: r.config[CONTRACT_COLUMN]} if CONTRACT_COLUMN in r.config else {})}
            for r in results]
    return {"pabench_version": pabench.__version__, "git_commit": git_commit(), "rows": json_safe(rows),
            "backends": backends}


def write_json(results: list[Result], path: str | Path, *, include_samples: bool = True) -> Path:
    """Write `results_json` atomically as compact JSON (parent directories created)."""
    doc = results_json(results, include_samples=include_samples)
    return atomic_write_text(path, json.dumps(doc, separators=(",", ":"), default=str) + "\n")
