"""The JSON export: every backend's flat row, config and capacity, a summary of its steps (per kind, a memory
timeline, every prefill step, decode steps by batch size with the host-time split) and its raw requests.

The CSV (`report.write_csv`) holds the flat rows only; this file is what to read when a number needs explaining.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

import pabench
from pabench.atomic import atomic_write_text
from pabench.engine.records import RequestRecord, StepSample
from pabench.bench.metrics import Result, Stats, host_over_device
from pabench.report.tables import git_commit, result_row


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively, so the JSON is standard."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
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
    return {"by_kind": by_kind, "timeline": timeline, "prefill_steps": prefill_steps,
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
    """One raw request sample, times rounded to the microsecond. Per-token times are summarised per sample
    (first, last, count) so a 1000-request GPU run stays a few hundred KB; ITL stats are in the rows."""
    doc = {f.name: getattr(request, f.name) for f in dataclasses.fields(request) if f.name != "token_times_s"}
    doc["sample_first_token_s"] = [round(float(t[0]), 6) for t in request.token_times_s]  # [num_samples]
    doc["sample_finish_s"] = [round(float(t[-1]), 6) for t in request.token_times_s]  # [num_samples]
    doc["sample_num_tokens"] = [len(t) for t in request.token_times_s]  # [num_samples]
    for key in ("arrival_s", "first_token_s", "finish_s"):
        doc[key] = round(float(doc[key]), 6)
    return doc


def results_json(results: list[Result], *, include_samples: bool = True) -> dict[str, Any]:
    """The JSON export as a dict: flat rows, then per backend its config, capacity, step summary, raw requests."""
    backends = []
    for r in results:
        entry: dict[str, Any] = _json_safe({"backend": r.backend, "config": r.config, "capacity": r.capacity,
                                            "steps": steps_summary(r.steps)})
        if include_samples:  # finite floats and ints already: skip the (slow, per-value) _json_safe walk
            entry["requests"] = [_request_json(q) for q in r.requests]
        backends.append(entry)
    return {"pabench_version": pabench.__version__, "git_commit": git_commit(),
            "rows": _json_safe([result_row(r) for r in results]), "backends": backends}


def write_json(results: list[Result], path: str | Path, *, include_samples: bool = True) -> Path:
    """Write `results_json` atomically as compact JSON (parent directories created)."""
    doc = results_json(results, include_samples=include_samples)
    return atomic_write_text(path, json.dumps(doc, separators=(",", ":"), default=str) + "\n")
