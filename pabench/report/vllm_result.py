"""`pabench run --save-result DIR`: one JSON per backend in `vllm bench serve --save-result`'s format.

Keys, units and meanings follow vLLM's `vllm/benchmarks/serve.py` (`benchmark()`'s result dict and `main_async`'s
header keys, checked against vllm-project/vllm at 009e6d4): `duration` and the raw `ttfts`, `itls`, `latencies`,
`start_times` in seconds, every `*_ms` statistic in ms, `std` the population std (np.std), `median` np.median,
`pXX` linear percentiles. Where pabench differs (no network or client, no tokenizer, dummy weights, n > 1 samples)
is in the README's "vLLM-format results" and in each file's `comparability` object. A file is
`<backend>-<workload>-<seed>.json`, written atomically: `run --repeat N` over seeds writes one per backend and seed
(each a single run, as vLLM's files are), with `--same-seed` one per backend (the medians).
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

from pabench.atomic import atomic_write_text
from pabench.bench.metrics import LATENCY_METRICS, Result, percentile_ms
from pabench.report.export import json_safe, result_row

# The CSV columns a file's `pabench` object repeats: what the cache did with the memory, and how the run was set.
PABENCH_KEYS = ("backend", "workload", "seed", "model", "layers", "device", "dtype", "page_size", "kv_budget_bytes",
                "max_num_seqs", "max_model_len", "max_batched_tokens", "prefix_caching", "watermark",
                "chunked_prefill", "async_scheduling", "cuda_graphs", "mean_waste_pct", "mean_used_pct",
                "mean_slack_pct", "mean_idle_pct", "peak_reserved_bytes", "peak_saved_bytes", "mean_saved_bytes",
                "saved_pct", "num_preemptions", "recomputed_tokens", "prefix_hit_pct", "num_cow_copies",
                "peak_concurrency", "goodput", "slo_attainment_pct", "repeat", "interrupted", "pabench_version",
                "git_commit")
DEFAULT_PERCENTILES = (99.0,)  # vLLM's --metric-percentiles default; p99 is always written


def result_file_name(backend: str, workload: str, seed: int) -> str:
    """'<backend>-<workload>-<seed>.json', characters other than letters, digits, '.', '+', '_' and '-' as '_'."""
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", f"{backend}-{workload}-{seed}") + ".json"


def max_concurrent_requests(intervals: list[tuple[float, float]]) -> int:
    """Most requests in flight at once over half-open [arrival, finish) intervals (vLLM's sweep line: at one
    instant a finish is counted before an arrival)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def _word(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else f"{p:g}"


def vllm_result(result: Result, contract: dict[str, Any], percentiles: tuple[float, ...] = ()) -> dict[str, Any]:
    """One backend's result as vLLM's dict, plus `pabench` (KV and run settings) and `comparability` (`contract`).

    `percentiles`: the `pXX_*_ms` keys besides p99 (those of `--metric-percentiles`; they must be p50/p90/p99 or
    among the percentiles the result was built with)."""
    row = result_row(result)
    requests = sorted(result.requests, key=lambda r: r.request_id)
    wall = result.wall_s
    doc: dict[str, Any] = {
        "date": datetime.datetime.now().strftime("%Y%m%d-%H%M%S"),
        "backend": result.backend,
        "model_id": row.get("model"),
        "tokenizer_id": None,  # no tokenizer: prompts are token ids
        "num_prompts": result.num_requests,
        "request_rate": contract.get("request_rate"),
        "burstiness": contract.get("burstiness"),
        "max_concurrency": None,  # no client-side concurrency limit (max_num_seqs bounds the engine's batch)
        "duration": wall,
        "completed": result.num_requests,
        "failed": 0,
        "total_input_tokens": result.num_prompt_tokens,
        "total_output_tokens": result.num_output_tokens,
        "request_throughput": result.req_s,
        "request_goodput": result.request_goodput if result.goodput is not None else None,
        "output_throughput": result.output_tok_s,
        "total_token_throughput": result.total_tok_s,
        "input_lens": [r.num_prompt_tokens for r in requests],
        "output_lens": [r.num_output_tokens for r in requests],
        "ttfts": [round(r.first_token_s - r.arrival_s, 6) for r in requests],
        # per request, every gap of each sample in sample order (one sample: vLLM's itl list exactly)
        "itls": [[round(b - a, 6) for t in r.token_times_s for a, b in zip(t, t[1:])] for r in requests],
        "latencies": [round(r.finish_s - r.arrival_s, 6) for r in requests],
        "start_times": [round(r.arrival_s, 6) for r in requests],
        "max_concurrent_requests": max_concurrent_requests([(r.arrival_s, r.finish_s) for r in requests]),
    }
    chosen = sorted(set(DEFAULT_PERCENTILES) | set(percentiles))
    for name, prefix in LATENCY_METRICS.items():
        stats = getattr(result, f"{prefix}_s")
        doc.update({f"mean_{name}_ms": stats.mean * 1e3, f"median_{name}_ms": stats.p50 * 1e3,
                    f"std_{name}_ms": stats.std * 1e3})
        doc.update({f"p{_word(p)}_{name}_ms": percentile_ms(result, name, p) for p in chosen})
    doc["pabench"] = {**{k: row[k] for k in PABENCH_KEYS if k in row}, "capacity": dict(result.capacity),
                      "goodput_ms": result.goodput.as_dict() if result.goodput is not None else None}
    doc["comparability"] = contract
    return json_safe(doc)


def result_files(directory: str | Path, backends: tuple[str, ...], workload: str,
                 seeds: tuple[int, ...]) -> dict[str, Path]:
    """The files `write_vllm_results` will write for these backends and seeds (one per seed of `run --repeat`
    over seeds), keyed '--save-result (<backend>, seed <seed>)' for `check_outputs`' messages."""
    return {f"--save-result ({b}, seed {s})": Path(directory) / result_file_name(b, workload, s)
            for s in dict.fromkeys(seeds) for b in backends}


def write_vllm_results(results: list[Result], directory: str | Path, contract: dict[str, Any] | None = None,
                       percentiles: tuple[float, ...] = ()) -> list[Path]:
    """Write `vllm_result` of each result to `directory` (created), one atomic file per backend. `contract`: the
    run's comparability contract; None takes each result's own (the one its export rows state)."""
    written = []
    for r in results:
        path = Path(directory) / result_file_name(r.backend, str(r.config.get("workload")), r.config.get("seed", 0))
        doc = vllm_result(r, contract if contract is not None else r.config.get("comparability", {}), percentiles)
        written.append(atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n"))
    return written
