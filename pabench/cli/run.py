"""`pabench run`: serve one workload through each backend and print the tables. Parse, call the library (imported
lazily), print."""

from __future__ import annotations

import contextlib
from typing import Annotated, Optional

import typer

from pabench.cli import options as opt
from pabench.cli.app import app, err_console, fail_runs, friendly, out_console, with_progress
from pabench.cli.options import MEM, OUT, SCHED


@app.command()
@friendly
def run(
    workload: opt.Workload = "default",
    backend: opt.Backend = "all",
    model: opt.Model = None,
    layers: opt.Layers = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = None,
    num_requests: opt.NumRequests = None,
    seed: opt.Seed = None,
    page_size: Annotated[int, typer.Option(help="Tokens per page (power of two, 1..256).", rich_help_panel=MEM)] = 16,
    kv_budget: Annotated[Optional[str], typer.Option(
        help="KV bytes for every backend, e.g. 4GiB. Default: room for max-num-seqs/8 sequences at max-model-len.",
        rich_help_panel=MEM)] = None,
    num_pages: Annotated[Optional[int], typer.Option(
        help="KV budget as a number of pages instead of bytes.", rich_help_panel=MEM)] = None,
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
        min=1, help="Run each backend N times on the same workload: timing metrics are the median, with a "
                    "<metric>_spread_pct column (what `check --timing` allows for); the rest must be identical.",
        rich_help_panel=opt.RUN)] = 1,
    csv: Annotated[Optional[str], typer.Option(
        "--csv", help="Write one row per backend here (- for stdout).", rich_help_panel=OUT)] = None,
    json: Annotated[Optional[str], typer.Option(
        "--json", help="Write results plus raw per-request samples here (- for stdout).", rich_help_panel=OUT)] = None,
    save_result: Annotated[Optional[str], typer.Option(
        "--save-result", metavar="DIR", help="Also write one vLLM-format JSON per backend (vllm bench serve's "
        "--save-result keys) into DIR, named <backend>-<workload>-<seed>.json.", rich_help_panel=OUT)] = None,
    goodput: opt.Goodput = None,
    percentile_metrics: opt.PercentileMetrics = None,
    metric_percentiles: opt.MetricPercentiles = None,
    progress: opt.Progress = True,
) -> None:
    """Serve a workload through each KV cache backend and compare throughput, latency and KV waste."""
    from pabench.atomic import check_output_dir, check_outputs
    from pabench.backends import parse_backends
    from pabench.report.export import write_json
    from pabench.report.export import write_csv
    from pabench.report.tables import capacity_line, run_table, summary_line
    from pabench.bench.goodput import GoodputSpec
    from pabench.bench.metrics import LatencyView
    from pabench.bench.runner import RunConfig, interrupted_runs, prepare, run_benchmark
    from pabench.units import parse_size

    view = LatencyView.from_options(percentile_metrics, metric_percentiles)
    cfg = RunConfig(workload=workload, backends=tuple(parse_backends(backend)), model=model, layers=layers,
                    device=device, dtype=dtype, page_size=page_size,
                    kv_budget_bytes=parse_size(kv_budget) if kv_budget else None, num_pages=num_pages,
                    prefix_caching=prefix_caching, watermark=watermark, max_num_seqs=max_num_seqs,
                    max_model_len=max_model_len, max_batched_tokens=max_batched_tokens,
                    min_prefill_seqs=min_prefill_seqs, num_requests=num_requests, seed=seed, attn_impl=attn_impl,
                    cuda_graphs=cuda_graphs, async_scheduling=async_scheduling, beam_width=beam_width,
                    chunked_prefill=chunked_prefill, max_num_partial_prefills=max_num_partial_prefills,
                    goodput=GoodputSpec.from_text(goodput) if goodput is not None else None,
                    percentiles=view.percentiles if view else ())
    check_outputs({"--csv": csv, "--json": json})  # before the run: a bad path must not cost the whole run
    if save_result is not None:
        check_output_dir(save_result, "--save-result")
    err = err_console()
    with err.status("preparing model and workload...") if progress else contextlib.nullcontext():
        p = prepare(cfg)  # bad input (a budget too small for some request) fails here, before the header
    if save_result is not None:  # the file names need the workload's name and seed; still before the run
        check_outputs({"--csv": csv, "--json": json, **_result_files(p, save_result)})
    out = out_console((csv, json))
    c = p.config
    beams = (f" | beam search, width {p.spec.beam_width} (synchronous engine, eager decode)"
             if p.spec.beam_width > 1 else "")
    if c.chunked_prefill:
        beams += f" | chunked prefill, {c.max_batched_tokens} tokens per step"
    out.print(f"workload {p.spec.name}: {len(p.requests)} requests | model {p.model.config.name} "
              f"({p.model.config.num_layers} layers, {c.dtype}) on {c.device} | max_num_seqs {c.max_num_seqs}, "
              f"max_model_len {c.max_model_len}{beams}")
    out.print(capacity_line(_capacity(p)))
    if repeat > 1:
        results, failures = _run_repeated(cfg, p, repeat, progress)
    else:
        results, _, _, failures = with_progress(lambda cb: run_benchmark(cfg, cb, prepared=p),
                                                 len(c.backends) * len(p.requests), progress)
    if not results:  # every backend failed: nothing to show or write
        fail_runs(failures, finished=False)
    out.print(run_table(results, view=view))
    out.print(summary_line(results))
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
    if save_result is not None:
        from pabench.bench.contract import comparability
        from pabench.report.vllm_result import write_vllm_results

        for path in write_vllm_results(results, save_result, comparability(p), view.percentiles if view else ()):
            err.print(f"wrote {path}")
    fail_runs(failures, finished=True)  # the finished backends are shown and written above


def _result_files(p, directory: str) -> dict[str, str]:
    """`--save-result`'s files of a prepared run, one per backend, keyed for `check_outputs`' messages."""
    import os

    from pabench.report.vllm_result import result_file_name

    seed = p.spec.seed if p.config.seed is None else p.config.seed
    return {f"--save-result ({b})": os.path.join(directory, result_file_name(b, p.spec.name, seed))
            for b in p.config.backends}


def _capacity(p) -> dict:
    """The run header's capacity: what the paged backend will hold at this budget (the contiguous ones hold the
    same bytes as tokens), read from the backend's own rule, not recomputed here."""
    from pabench.backends.paged import pages_for_budget, paged_capacity

    c = p.config
    pages = pages_for_budget(p.layout, c.page_size, p.kv_budget_bytes)
    return {**paged_capacity(p.layout, c.page_size, pages, c.max_model_len),
            "bytes_per_token": p.layout.bytes_per_token}


def _run_repeated(cfg, p, repeats: int, progress: bool) -> tuple[list, list]:
    """`run --repeat N`: bench/repeat.py under the progress bar (one task per backend and repeat), then one line
    per backend whose deterministic metrics did not reproduce, and the throughput spread."""
    from pabench.bench.repeat import run_repeated, spread_column

    err = err_console()

    def work(cb):
        def on_repeat(i: int, n: int) -> None:
            state["repeat"] = f"{i}/{n}"
            if progress:
                err.print(f"repeat {i}/{n}")

        state = {"repeat": ""}
        per_repeat = (lambda name, done, total: cb(f"{name} {state['repeat']}", done, total)) if cb else None
        return run_repeated(cfg, repeats, prepared=p, on_progress=per_repeat, on_repeat=on_repeat)

    done = with_progress(work, len(p.config.backends) * len(p.requests) * repeats, progress)
    for backend, columns in done.varied.items():
        err.print(f"[yellow]note:[/] {backend}: {', '.join(columns)} differed across the {repeats} repeats "
                  "(deterministic for a seed with burst arrivals; the export has the median and a spread)",
                  soft_wrap=True)
    spreads = ", ".join(f"{r.backend} {r.config.get(spread_column('output_tok_per_s'), float('nan')):.1f}%"
                        for r in done.results)
    err.print(f"median of {repeats} repeats; output tok/s spread (max-min)/median: {spreads}", soft_wrap=True)
    return done.results, done.failures
