"""`pabench run --requests-csv PATH`: one row per request and sample of every backend and run, for latency plots
of one's own (a CDF of TTFT, E2E against arrival time, ...) without reading the JSON.

A sample is one of a request's n parallel samples or beams; its TTFT and E2E are measured to its own first and
last token (a request's, in the main export, to the earliest first token and the latest last one). Times are
seconds since the run started, latencies ms. `arrival_s`, `prompt_len` and `output_len` of sample 0 are a trace
`arrival = "trace"` can replay (`timestamp_s,prompt_len,output_len`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from pabench.atomic import atomic_write_text
from pabench.bench.metrics import Result

REQUEST_COLUMNS = ("backend", "seed", "repeat", "request_id", "sample", "arrival_s", "first_token_s", "finish_s",
                   "prompt_len", "output_len", "num_preemptions", "ttft_ms", "tpot_ms", "e2e_ms")


def request_rows(result: Result, repeat: int = 1) -> list[dict[str, Any]]:
    """One backend's requests, a row per sample, in request order (`repeat`: which run of `--repeat`, from 1)."""
    rows = []
    for request in sorted(result.requests, key=lambda r: r.request_id):
        for sample, times in enumerate(request.token_times_s):
            first, last = (times[0], times[-1]) if times else (math.nan, math.nan)
            rows.append({"backend": result.backend, "seed": result.config.get("seed"), "repeat": repeat,
                         "request_id": request.request_id, "sample": sample,
                         "arrival_s": round(request.arrival_s, 6), "first_token_s": round(first, 6),
                         "finish_s": round(last, 6), "prompt_len": request.num_prompt_tokens,
                         "output_len": len(times), "num_preemptions": request.num_preemptions,
                         "ttft_ms": (first - request.arrival_s) * 1e3,
                         "tpot_ms": (last - first) / (len(times) - 1) * 1e3 if len(times) >= 2 else math.nan,
                         "e2e_ms": (last - request.arrival_s) * 1e3})
    return rows


def requests_frame(runs: list[list[Result]]) -> pd.DataFrame:
    """Every run's (runs[i]: run i + 1 of `--repeat`, its backends' results) requests as one frame."""
    rows = [row for i, run in enumerate(runs, start=1) for result in run for row in request_rows(result, i)]
    frame = pd.DataFrame(rows, columns=list(REQUEST_COLUMNS))
    if not frame.empty:
        frame["seed"] = frame["seed"].astype("Int64")  # an integer even where a run has no seed
    return frame


def write_requests_csv(runs: list[list[Result]], path: str | Path) -> Path:
    """Write `requests_frame(runs)` as CSV, atomically (parent directories created; `-` for stdout)."""
    return atomic_write_text(path, requests_frame(runs).to_csv(index=False, float_format="%.6f"))
