"""The "see it" commands: `pabench explain` (a guided tour of paging), `pabench sweep`, `pabench plot`.

Registered on the main Typer app by importing this module from `pabench.cli`. Thin, like the rest of the CLI:
parse, call the library (imported lazily: `pabench --help` stays torch-free), print, exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pabench import cli_options as opt
from pabench.cli import _fail_runs, _int_list, _number_list, _stderr, _stdout, app, friendly
from pabench.cli_options import OUT

SCENARIO_NAMES = ("tour", "prefix-sharing", "parallel-sampling", "preemption", "fragmentation")
GRID = "Grid"


# ---------------------------------------------------------------------------------------------- explain
@app.command()
@friendly
def explain(
    scenario: Annotated[str, typer.Option("--scenario", "-s", help=f"One of: {', '.join(SCENARIO_NAMES)}.")] = "tour",
    step: Annotated[bool, typer.Option("--step", help="Wait for Enter between steps (end of input stops).")] = False,
) -> None:
    """Walk through what vLLM's memory manager does, step by step, on the real block manager (no GPU needed)."""
    from pabench.explain import run_scenario
    from pabench.explain_render import LEGEND, render_plain, render_rich

    steps = run_scenario(scenario)
    out = _stdout()
    coloured = out.is_terminal
    if coloured:
        out.print(LEGEND, style="dim", markup=False)
    else:
        typer.echo(LEGEND + "\n")
    for index, one in enumerate(steps):
        if coloured:
            out.print(render_rich(one, index, len(steps), out.width))
        else:
            typer.echo(render_plain(one, index, len(steps)))
        if step and index + 1 < len(steps):
            _stderr().print(f"[dim]Enter: step {index + 2}/{len(steps)}[/]", end="")
            if not sys.stdin.readline():
                _stderr().print(f"\n(end of input: stopped after step {index + 1} of {len(steps)})")
                return


# ---------------------------------------------------------------------------------------------- sweep
def _float_list(text: str, what: str) -> tuple[float, ...]:
    return _number_list(text, what, float)


@app.command()
@friendly
def sweep(
    page_sizes: Annotated[Optional[str], typer.Option(help="Comma-separated page sizes (paged backends only).", rich_help_panel=GRID)] = "8,16,32",
    kv_budgets: Annotated[Optional[str], typer.Option(help="Comma-separated KV budgets, e.g. 32MiB,64MiB. Default: run's default budget.", rich_help_panel=GRID)] = None,
    rates: Annotated[Optional[str], typer.Option(help="Comma-separated request rates (requests/s, Poisson). Default: the workload's arrivals.", rich_help_panel=GRID)] = None,
    max_num_seqs: Annotated[Optional[str], typer.Option(help="Comma-separated batch limits. Default: run's default.", rich_help_panel=GRID)] = None,
    backend: opt.Backend = "all",
    workload: opt.Workload = "default",
    model: opt.Model = None,
    layers: opt.Layers = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = None,
    num_requests: opt.NumRequests = None,
    seed: opt.Seed = None,
    max_model_len: opt.MaxModelLen = None,
    prefix_caching: opt.PrefixCaching = True,
    min_prefill_seqs: opt.MinPrefillSeqs = 1,
    attn_impl: opt.AttnImpl = "auto",
    watermark: opt.Watermark = 0.04,
    max_batched_tokens: opt.MaxBatchedTokens = 8192,
    cuda_graphs: opt.CudaGraphs = None,
    async_scheduling: opt.AsyncScheduling = False,
    csv: Annotated[Path, typer.Option("--csv", help="The tidy CSV: one row per (point, backend).", rich_help_panel=OUT)] = Path("results/sweep.csv"),
    json: Annotated[Optional[Path], typer.Option("--json", help="Also write every run's full result (per-request samples, step timings) as JSON.", rich_help_panel=OUT)] = None,
    progress: opt.Progress = True,
) -> None:
    """Run `pabench run`'s engine over a grid (page size x KV budget x rate x max-num-seqs); one tidy CSV.

    Contiguous backends do not depend on the page size: they run once per point of the other parameters,
    with an empty sweep_page_size.
    """
    from pabench.atomic import atomic_write_text
    from pabench.backends import parse_backends
    from pabench.runner import RunConfig
    from pabench.sweep import SweepGrid, sweep_summary, sweep_table
    from pabench.units import parse_size

    grid = SweepGrid(
        page_sizes=_int_list(page_sizes, "--page-sizes") if page_sizes else None,
        kv_budgets=tuple(parse_size(s) for s in kv_budgets.split(",") if s.strip()) if kv_budgets else None,
        rates=_float_list(rates, "--rates") if rates else None,
        max_num_seqs=_int_list(max_num_seqs, "--max-num-seqs") if max_num_seqs else None)
    base = RunConfig(workload=workload, backends=tuple(parse_backends(backend)), model=model, layers=layers,
                     device=device, dtype=dtype, prefix_caching=prefix_caching, max_model_len=max_model_len,
                     num_requests=num_requests, seed=seed, attn_impl=attn_impl, min_prefill_seqs=min_prefill_seqs,
                     watermark=watermark, max_batched_tokens=max_batched_tokens, cuda_graphs=cuda_graphs,
                     async_scheduling=async_scheduling)
    kept: list | None = [] if json else None
    failures: list = []
    frame = _sweep_with_progress(grid, base, progress, kept, failures)
    if frame.empty:  # every run failed: nothing to show or write
        _fail_runs(failures, finished=False)
    out = _stdout()
    out.print(sweep_table(frame))
    out.print(sweep_summary(frame))
    _stderr().print(f"wrote {atomic_write_text(csv, frame.to_csv(index=False))}")
    if json:
        from pabench.export_json import write_json

        _stderr().print(f"wrote {write_json(kept, json)}")
    _fail_runs(failures, finished=True)  # the finished runs are shown and written above


def _sweep_with_progress(grid, base, enabled: bool, keep: list | None = None, failures: list | None = None):
    """`run_sweep` under one rich progress bar on stderr (total = runs x requests)."""
    from pabench.sweep import run_sweep

    if not enabled:
        return run_sweep(grid, base, keep=keep, failures=failures)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_stderr(), transient=True) as bar:
        task = bar.add_task("preparing", total=None)
        return run_sweep(grid, base, lambda label, done, total: bar.update(task, description=label,
                                                                          completed=done, total=total),
                         keep, failures)


# ---------------------------------------------------------------------------------------------- plot
@app.command()
@friendly
def plot(
    result: Annotated[list[Path], typer.Argument(help="CSVs from `pabench sweep` or `pabench run --csv` (several are concatenated, e.g. one sweep per GPU call).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="PNG to write. Default: the CSV path with .png.")] = None,
    kernels: Annotated[Optional[Path], typer.Option("--kernels", help="A `pabench kernels --csv` file: kernel µs vs page size.")] = None,
) -> None:
    """Plot the panels a result CSV supports: throughput vs budget, KV waste, latency vs rate, page-size trade-off."""
    from pabench.plot import require_matplotlib, plot_results
    from pabench.report import read_results

    require_matplotlib()  # before reading anything: one clear line when the extra is missing
    import pandas as pd

    frame = pd.concat([read_results(path) for path in result], ignore_index=True)
    kernel_frame = None
    if kernels is not None:
        try:
            kernel_frame = pd.read_csv(kernels)
        except (OSError, ValueError, pd.errors.ParserError) as error:
            from pabench.core.errors import ConfigError

            raise ConfigError(f"{kernels}: cannot read kernel results: {error}") from None
    path, panels = plot_results(frame, output or result[0].with_suffix(".png"), kernel_frame)
    _stdout().print(f"wrote {path} ({len(panels)} panels: {', '.join(panels)})", markup=False)
