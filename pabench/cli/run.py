"""`pabench run`: serve one workload through each backend and print the tables. Parse, call the library (imported
lazily), print."""

from __future__ import annotations

import contextlib
from typing import Annotated, Optional

import typer

from pabench.cli import options as opt
from pabench.cli.app import app, begin_command, err_console, fail_runs, friendly, out_console, with_progress
from pabench.cli.options import MEM, OUT, SCHED


@app.command()
@friendly
def run(
    workload: opt.Workload = None,
    backend: opt.Backend = "all",
    model: opt.Model = None,
    layers: opt.Layers = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = None,
    kv_dtype: opt.KvDtype = "auto",
    num_requests: opt.NumRequests = None,
    seed: opt.Seed = None,
    input_len: opt.InputLen = None,
    output_len: opt.OutputLen = None,
    range_ratio: opt.RangeRatio = None,
    request_rate: opt.RequestRate = None,
    burstiness: opt.Burstiness = None,
    threads: opt.Threads = None,
    tensor_parallel: opt.TensorParallel = 1,
    page_size: Annotated[int, typer.Option(help="Tokens per page (power of two, 1..256).", rich_help_panel=MEM)] = 16,
    kv_budget: Annotated[Optional[str], typer.Option(
        help="KV bytes for every backend, e.g. 4GiB. Default: room for max-num-seqs/8 sequences at max-model-len.",
        rich_help_panel=MEM)] = None,
    num_pages: opt.NumPages = None,
    prefix_caching: opt.PrefixCaching = None,
    watermark: opt.Watermark = 0.04,
    max_num_seqs: Annotated[Optional[int], typer.Option(
        help="Most sequences in a batch. Default: 32 on CPU, 256 on CUDA.", rich_help_panel=SCHED)] = None,
    max_model_len: opt.MaxModelLen = None,
    max_batched_tokens: opt.MaxBatchedTokens = 8192,
    min_prefill_seqs: opt.MinPrefillSeqs = 1,
    attn_impl: opt.AttnImpl = "auto",
    cuda_graphs: opt.CudaGraphs = None,
    async_scheduling: opt.AsyncScheduling = None,
    beam_width: opt.BeamWidth = None,
    chunked_prefill: opt.ChunkedPrefill = False,
    max_num_partial_prefills: opt.MaxNumPartialPrefills = 1,
    repeat: Annotated[int, typer.Option(
        min=1, help="Run N times on seeds seed..seed+N-1 (each its own workload, every backend on each): each metric "
                    "is the mean, with its 95% confidence interval (<metric>_ci95; mean ± CI in the table), and the "
                    "summary's ratios are taken per seed. With --same-seed: N times on one workload instead.",
        rich_help_panel=opt.RUN)] = 1,
    same_seed: Annotated[bool, typer.Option(
        "--same-seed", help="With --repeat: every run on the same seed; timing metrics are the median, with a "
                            "<metric>_spread_pct column (what `check --timing` allows for); the rest must be "
                            "identical.",
        rich_help_panel=opt.RUN)] = False,
    csv: Annotated[Optional[str], typer.Option(
        "--csv", help="Write one row per backend here (- for stdout).", rich_help_panel=OUT)] = None,
    json: Annotated[Optional[str], typer.Option(
        "--json", help="Write results plus raw per-request samples here (- for stdout).", rich_help_panel=OUT)] = None,
    requests_csv: Annotated[Optional[str], typer.Option(
        "--requests-csv", metavar="PATH", help="Write one row per request and sample here: arrival, first token, "
        "finish, lengths, preemptions, TTFT/TPOT/E2E ms, per backend and run (- for stdout).", rich_help_panel=OUT)
    ] = None,
    save_result: Annotated[Optional[str], typer.Option(
        "--save-result", metavar="DIR", help="Also write one vLLM-format JSON per backend (vllm bench serve's "
        "--save-result keys) into DIR, named <backend>-<workload>-<seed>.json.", rich_help_panel=OUT)] = None,
    goodput: opt.Goodput = None,
    percentile_metrics: opt.PercentileMetrics = None,
    metric_percentiles: opt.MetricPercentiles = None,
    progress: opt.Progress = True,
    quiet: opt.Quiet = False,
) -> None:
    """Serve a workload through each KV cache backend and compare throughput, latency and KV waste."""
    from pabench.cli.cpuload import LoadWatch, apply_threads
    from pabench.cli.defaults import run_defaults
    from pabench.cli.traffic import TrafficFlags
    from pabench.atomic import check_output_dir, check_outputs
    from pabench.backends import parse_backends
    from pabench.bench.repeat import run_seeds
    from pabench.errors import ConfigError
    from pabench.report.export import write_csv, write_json
    from pabench.report.requests import write_requests_csv
    from pabench.report.vllm_result import result_files, write_vllm_results
    from pabench.report.tables import capacity_line, run_table, summary_line
    from pabench.bench.goodput import GoodputSpec
    from pabench.bench.metrics import LatencyView
    from pabench.bench.runner import RunConfig, interrupted_runs, prepare, run_benchmark
    from pabench.units import parse_size

    view = LatencyView.from_options(percentile_metrics, metric_percentiles)
    progress, d = progress and not quiet, run_defaults(device, workload, model, layers, num_requests)
    watch = LoadWatch(apply_threads(device, threads))
    if tensor_parallel > 1:  # a rank's busy peers are not "other processes": no contention warning
        watch.warn = lambda message: None
    begin_command(quiet, watch)
    traffic = TrafficFlags(input_len, output_len, range_ratio, request_rate, burstiness)
    cfg = RunConfig(workload=traffic.workload(d.workload), backends=tuple(parse_backends(backend)), model=model,
                    layers=d.layers,
                    device=device, dtype=dtype, kv_dtype=kv_dtype, page_size=page_size,
                    kv_budget_bytes=parse_size(kv_budget) if kv_budget else None, num_pages=num_pages,
                    prefix_caching=prefix_caching, watermark=watermark, max_num_seqs=max_num_seqs,
                    max_model_len=max_model_len, max_batched_tokens=max_batched_tokens,
                    min_prefill_seqs=min_prefill_seqs, num_requests=d.num_requests, seed=seed, attn_impl=attn_impl,
                    cuda_graphs=cuda_graphs, async_scheduling=async_scheduling, beam_width=beam_width,
                    chunked_prefill=chunked_prefill, max_num_partial_prefills=max_num_partial_prefills,
                    goodput=GoodputSpec.from_text(goodput) if goodput is not None else None,
                    percentiles=view.percentiles if view else (), tensor_parallel=tensor_parallel)
    if same_seed and repeat == 1:
        raise ConfigError("--same-seed: give --repeat N (N > 1) too")
    outputs = {"--csv": csv, "--json": json, "--requests-csv": requests_csv}
    check_outputs(outputs)  # before the run: a bad path must not cost the whole run
    if save_result is not None:
        check_output_dir(save_result, "--save-result")
    from pabench.bench.budget import check_tensor_parallel
    from pabench.parallel import start_ranks

    if start_ranks(run, tensor_parallel, {"csv": None, "json": None, "requests_csv": None, "save_result": None,
                                          "progress": False, "quiet": True}, lambda: check_tensor_parallel(cfg)):
        return  # every rank ran this command: rank 0 printed and wrote the results
    err = err_console()
    with err.status("preparing model and workload...") if progress else contextlib.nullcontext():
        p = prepare(cfg)  # bad input (a budget too small for some request) fails here, before the header
    if save_result is not None:  # the file names need the workload's name and seed; still before the run
        seeds = run_seeds(p, repeat, same_seed)
        check_outputs({**outputs, **result_files(save_result, p.config.backends, p.spec.name, seeds)})
    out = out_console((csv, json, requests_csv))
    c = p.config
    beams = (f" | beam search, width {p.spec.beam_width} (synchronous engine, eager decode)"
             if p.spec.beam_width > 1 else "")
    if c.chunked_prefill:
        beams += f" | chunked prefill, {c.max_batched_tokens} tokens per step"
    if c.tensor_parallel > 1:
        beams += f" | tensor parallel {c.tensor_parallel}: KV budget and memory per GPU"
    out.print(f"workload {p.spec.name}: {len(p.requests)} requests | model {p.model.config.name} "
              f"({p.model.config.num_layers} layers, {c.dtype}{', KV fp8 e4m3' if p.layout.is_fp8 else ''}) on "
              f"{c.device}{_threads_text(c.device)} | "
              f"max_num_seqs {c.max_num_seqs}, max_model_len {c.max_model_len}{beams}")
    out.print(capacity_line(_capacity(p)))
    repeated = None
    if repeat > 1:
        repeated = _run_repeated(cfg, p, repeat, same_seed, progress)
        results, failures, runs = repeated.results, repeated.failures, repeated.runs
    else:
        results, _, _, failures = with_progress(lambda cb: run_benchmark(cfg, cb, prepared=p),
                                                 len(c.backends) * len(p.requests), progress)
        runs = [results]
    if not results:  # every backend failed: nothing to show or write
        fail_runs(failures, finished=False)
    out.print(run_table(results, view=view))
    out.print(summary_line(results, repeated))
    if interrupted_runs(failures):
        out.print(f"[yellow]interrupted:[/] {', '.join(interrupted_runs(failures))} did not finish; the rows above "
                  "are whole runs, but the comparison is incomplete")
    for r in results:
        if r.num_preemptions > 0.25 * max(1, r.num_requests):
            err.print(f"[yellow]note:[/] {r.backend} preempted {r.num_preemptions} sequences for {r.num_requests} "
                      f"requests (each one is recomputed): the KV budget is tight for this load; a larger "
                      f"--watermark or --kv-budget trades batch size for fewer preemptions")
    if csv:
        err.print(f"wrote {write_csv(results, csv)}")
    if json:
        err.print(f"wrote {write_json(results, json)}")
    if requests_csv:
        err.print(f"wrote {write_requests_csv(runs, requests_csv)}")
    if save_result is not None:  # over seeds one file per backend and seed, each its run's own (vLLM's files are)
        for group in runs if repeat > 1 and not same_seed else [results]:
            for path in write_vllm_results(group, save_result, percentiles=view.percentiles if view else ()):
                err.print(f"wrote {path}")
    fail_runs(failures, finished=True)  # the finished backends are shown and written above


def _capacity(p) -> dict:
    """The run header's capacity: what the paged backend will hold at this budget (the contiguous ones hold the
    same bytes as tokens), read from the backend's own rule, not recomputed here."""
    from pabench.backends.paged import pages_for_budget, paged_capacity

    c = p.config
    pages = pages_for_budget(p.layout, c.page_size, p.kv_budget_bytes)
    return {**paged_capacity(p.layout, c.page_size, pages, c.max_model_len),
            "bytes_per_token": p.layout.bytes_per_token, **({"stored as": "fp8 e4m3"} if p.layout.is_fp8 else {})}


def _run_repeated(cfg, p, repeats: int, same_seed: bool, progress: bool):
    """`run --repeat N`: bench/repeat.py under the progress bar (one task per backend and run), then what the
    numbers are: means over seeds, or (--same-seed) medians, the throughput spread and any deterministic metric
    that did not reproduce."""
    from pabench.bench.repeat import run_repeated, run_seeds, seeds_text, spread_column

    err = err_console()
    seeds = run_seeds(p, repeats, same_seed)

    def work(cb):
        def on_repeat(i: int, n: int) -> None:
            state["repeat"] = f"{i}/{n}" if same_seed else f"seed {seeds[i - 1]}"
            if progress:
                err.print(f"repeat {i}/{n}" + ("" if same_seed else f" (seed {seeds[i - 1]})"))

        state = {"repeat": ""}
        per_repeat = (lambda name, done, total: cb(f"{name} {state['repeat']}", done, total)) if cb else None
        return run_repeated(cfg, repeats, prepared=p, on_progress=per_repeat, on_repeat=on_repeat,
                            same_seed=same_seed)

    done = with_progress(work, len(p.config.backends) * len(p.requests) * repeats, progress)
    if not same_seed:
        err.print(f"mean of {len(done.runs)} runs on seeds {seeds_text(list(done.seeds))} ± the 95% confidence "
                  "interval (Student t); the exports have <metric>_ci95", soft_wrap=True)
        return done
    for backend, columns in done.varied.items():
        err.print(f"[yellow]note:[/] {backend}: {', '.join(columns)} differed across the {repeats} repeats "
                  "(deterministic for a seed with burst arrivals; the export has the median and a spread)",
                  soft_wrap=True)
    spreads = ", ".join(f"{r.backend} {r.config.get(spread_column('output_tok_per_s'), float('nan')):.1f}%"
                        for r in done.results)
    err.print(f"median of {repeats} repeats; output tok/s spread (max-min)/median: {spreads}", soft_wrap=True)
    return done


def _threads_text(device: str) -> str:
    """', 2 threads' on the CPU (torch's threads: what --threads sets), nothing on CUDA."""
    import torch

    n = torch.get_num_threads()
    return f", {n} thread{'' if n == 1 else 's'}" if device == "cpu" else ""
