"""`pabench sweep`: a grid of runs (and `--slo` searches) over sizes, budgets and rates. Parse, call the library
(imported lazily), print."""

from __future__ import annotations

import contextlib
import os
from typing import Annotated, Optional

import typer

from pabench.cli import options as opt
from pabench.cli.app import app, begin_command, err_console, fail_runs, float_list, friendly, int_list, out_console
from pabench.cli.options import GRID, OUT


@app.command()
@friendly
def sweep(
    page_sizes: Annotated[Optional[str], typer.Option(
        "--page-sizes", "--page-size", help="Comma-separated page sizes (paged backends only); one value runs only "
        "that one, as run's --page-size.", rich_help_panel=GRID)] = "8,16,32",
    kv_budgets: Annotated[Optional[str], typer.Option(
        "--kv-budgets", "--kv-budget", help="Comma-separated KV budgets, e.g. 32MiB,64MiB. Default: run's default "
        "budget.", rich_help_panel=GRID)] = None,
    rates: Annotated[Optional[str], typer.Option(
        "--rates", "--request-rate", help="Comma-separated request rates (requests/s: Poisson, or a trace's times "
        "rescaled). Default: the workload's arrivals.", rich_help_panel=GRID)] = None,
    max_num_seqs: Annotated[Optional[str], typer.Option(
        help="Comma-separated batch limits. Default: run's default. The KV budget stays what run's default is for "
             "the other options (a 'kv budget' column) unless budgets are swept too.", rich_help_panel=GRID)] = None,
    num_pages: opt.NumPages = None,
    backend: opt.Backend = "all",
    workload: opt.Workload = None,
    model: opt.Model = None,
    layers: opt.Layers = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = None,
    kv_dtypes: Annotated[str, typer.Option(
        "--kv-dtypes", "--kv-dtype", help="Comma-separated KV storage dtypes (auto = the model's dtype, fp8 = e4m3 "
        "as vLLM's --kv-cache-dtype fp8): two values make a grid axis (sweep_kv_dtype, at the same KV budget in "
        "bytes); one value runs only that one, as run's --kv-dtype.", rich_help_panel=GRID)] = "auto",
    num_requests: opt.NumRequests = None,
    seed: opt.Seed = None,
    input_len: opt.InputLen = None,
    output_len: opt.OutputLen = None,
    range_ratio: opt.RangeRatio = None,
    burstiness: opt.Burstiness = None,
    threads: opt.Threads = None,
    tensor_parallel: opt.TensorParallel = 1,
    max_model_len: opt.MaxModelLen = None,
    prefix_caching: opt.PrefixCaching = None,
    min_prefill_seqs: opt.MinPrefillSeqs = 1,
    attn_impl: opt.AttnImpl = "auto",
    watermark: opt.Watermark = 0.04,
    max_batched_tokens: opt.MaxBatchedTokens = 8192,
    cuda_graphs: opt.CudaGraphs = None,
    async_scheduling: opt.AsyncScheduling = None,
    beam_width: opt.BeamWidth = None,
    chunked_prefill: opt.ChunkedPrefill = False,
    max_num_partial_prefills: opt.MaxNumPartialPrefills = 1,
    csv: Annotated[str, typer.Option(
        "--csv", help="The tidy CSV: one row per (point, backend) (- for stdout).",
        rich_help_panel=OUT)] = "results/sweep.csv",
    json: Annotated[Optional[str], typer.Option(
        "--json", help="Also write every run's full result (per-request samples, step timings) as JSON.",
        rich_help_panel=OUT)] = None,
    goodput: opt.Goodput = None,
    metric_percentiles: opt.MetricPercentiles = None,
    slo: Annotated[Optional[str], typer.Option(
        help="Targets on export columns, e.g. ttft_p99_ms<=500,tpot_p99_ms<=50 (vLLM's p99_ttft_ms too): per backend "
             "and point, the highest rate meeting all, bisected between the swept --rates.",
        rich_help_panel=opt.METRICS)] = None,
    slo_iterations: Annotated[int, typer.Option(
        min=0, help="With --slo: bisection runs per backend and point.", rich_help_panel=opt.METRICS)] = 3,
    progress: opt.Progress = True,
    quiet: opt.Quiet = False,
) -> None:
    """Run `pabench run`'s engine over a grid (page size x KV budget x KV dtype x rate x max-num-seqs); one tidy CSV.

    Contiguous backends do not depend on the page size: they run once per point of the other parameters,
    with an empty sweep_page_size.
    """
    from pabench.atomic import atomic_write_text, check_outputs
    from pabench.backends import parse_backends
    from pabench.bench.goodput import GoodputSpec
    from pabench.bench.metrics import LatencyView
    from pabench.bench.runner import RunConfig
    from pabench.bench.sweep import SloSpec, SweepGrid, hold_budget, search_slo
    from pabench.cli.cpuload import LoadWatch, apply_threads
    from pabench.cli.defaults import run_defaults
    from pabench.cli.traffic import TrafficFlags
    from pabench.errors import ConfigError
    from pabench.report.export import sweep_frame
    from pabench.report.tables import slo_table, sweep_summary, sweep_table
    from pabench.units import parse_size

    progress, d = progress and not quiet, run_defaults(device, workload, model, layers, num_requests)
    watch = LoadWatch(apply_threads(device, threads))
    if tensor_parallel > 1:  # a rank's busy peers are not "other processes": no contention warning
        watch.warn = lambda message: None
    begin_command(quiet, watch)
    if num_pages is not None and kv_budgets:
        raise ConfigError("--num-pages fixes the KV budget and --kv-budgets sweeps it: give one of them")
    kv_list = tuple(s.strip() for s in kv_dtypes.split(",") if s.strip())  # one value: run's, no grid axis
    if not kv_list:
        raise ConfigError("--kv-dtypes: no value given; choose from auto, fp8")
    grid = SweepGrid(
        page_sizes=int_list(page_sizes, "--page-sizes") if page_sizes else None,
        kv_budgets=tuple(parse_size(s) for s in kv_budgets.split(",") if s.strip()) if kv_budgets else None,
        rates=float_list(rates, "--rates") if rates else None,
        max_num_seqs=int_list(max_num_seqs, "--max-num-seqs") if max_num_seqs else None,
        kv_dtypes=kv_list if len(kv_list) > 1 else None)
    traffic = TrafficFlags(input_len, output_len, range_ratio, burstiness=burstiness)
    base = RunConfig(workload=traffic.workload(d.workload, rates_swept=grid.rates is not None),
                     backends=tuple(parse_backends(backend)), model=model, layers=d.layers, num_pages=num_pages,
                     device=device, dtype=dtype, kv_dtype=kv_list[0], prefix_caching=prefix_caching,
                     max_model_len=max_model_len,
                     num_requests=d.num_requests, seed=seed, attn_impl=attn_impl, min_prefill_seqs=min_prefill_seqs,
                     watermark=watermark, max_batched_tokens=max_batched_tokens, cuda_graphs=cuda_graphs,
                     async_scheduling=async_scheduling, beam_width=beam_width, chunked_prefill=chunked_prefill,
                     max_num_partial_prefills=max_num_partial_prefills,
                     goodput=GoodputSpec.from_text(goodput) if goodput is not None else None,
                     percentiles=LatencyView.from_options(None, metric_percentiles).percentiles
                     if metric_percentiles is not None else (),
                     tensor_parallel=tensor_parallel)
    check_outputs({"--csv": csv, "--json": json})  # before the first run
    failures: list = []
    search = SloSpec.from_text(slo) if slo is not None else None
    if search is not None and not grid.rates:
        raise ConfigError("--slo needs --rates: the search bisects between the swept rates")
    if search is not None and tensor_parallel > 1:  # each rank would judge the targets on its own clock
        raise ConfigError("--slo with --tensor-parallel is not supported yet: sweep --rates and read the table")
    from pabench.bench.budget import check_tensor_parallel
    from pabench.parallel import start_ranks

    if start_ranks(sweep, tensor_parallel, {"csv": os.devnull, "json": None, "progress": False, "quiet": True},
                   lambda: check_tensor_parallel(base)):
        return  # every rank ran this sweep: rank 0 printed and wrote it
    with err_console().status("preparing model and workload...") if progress else contextlib.nullcontext():
        grid, model_built = hold_budget(grid, base)  # a --max-num-seqs sweep keeps one budget
    results = _sweep_with_progress(grid, base, progress, failures, model_built, watch)
    findings = None
    if search is not None and results:
        with err_console().status("SLO search...") if progress else contextlib.nullcontext() as status:
            def probing(label: str, done: int, total: int) -> None:
                watch.seen(label)
                if status is not None:
                    status.update(f"SLO search: {label} ({done}/{total} requests)")

            findings, probes = search_slo(grid, base, search, results, slo_iterations, failures, probing)
            watch.finish()
        results += probes
    frame = sweep_frame(results, grid.swept)
    if frame.empty:  # every run failed: nothing to show or write
        fail_runs(failures, finished=False)
    out = out_console((csv, json))
    out.print(sweep_table(frame))
    out.print(sweep_summary(frame))
    if findings:
        out.print(slo_table(findings, search))
    err_console().print(f"wrote {atomic_write_text(csv, frame.to_csv(index=False))}")
    if json:
        from pabench.report.export import write_json

        err_console().print(f"wrote {write_json(results, json)}")
    fail_runs(failures, finished=True)  # the finished runs are shown and written above


def _sweep_with_progress(grid, base, enabled: bool, failures: list, model, watch) -> list:
    """`run_sweep` under one rich progress bar on stderr (total = runs x requests; the label counts the runs);
    `watch` sees each run's label (the CPU load around it), bar or not."""
    from pabench.bench.sweep import run_sweep
    from pabench.cli.app import watched

    if not enabled:
        return watched(lambda cb: run_sweep(grid, base, cb, failures, model), None, watch)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console(), transient=True) as bar:
        task = bar.add_task("preparing", total=None)

        def update(label: str, done: int, total: int) -> None:
            bar.update(task, description=label, completed=done, total=total)

        return watched(lambda cb: run_sweep(grid, base, cb, failures, model), update, watch)
