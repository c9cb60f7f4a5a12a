"""pabench command line: thin Typer commands over the library. Parse, call, print, exit code.

Exit codes: 0 ok, 1 user error (one line on stderr, no traceback, no partial files), 2 regression found.
Nothing heavy is imported at module level: `pabench --help` must not import torch.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from pabench import cli_options as opt
from pabench.cli_options import MEM, OUT, SCHED
from pabench.core.errors import ConfigError, PabenchError

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
                  help="Measure what a paged KV cache buys over a contiguous one, on your own GPU or CPU.")
workloads_app = typer.Typer(help="List the workload presets, or show one.", invoke_without_command=True)
app.add_typer(workloads_app, name="workloads")


def _err(message: str) -> None:
    print(f"pabench: error: {message}", file=sys.stderr)


def _fail_runs(failures: list, finished: bool) -> None:
    """Runs that failed at run time, one line each, then exit 1. With nothing `finished` there is nothing to
    show or write: the first failure is raised (one line, exit 1), the others printed before it."""
    if not failures:
        return
    if not finished:
        for f in failures[1:]:
            _err(str(f))
        raise ConfigError(str(failures[0]))
    for f in failures:
        _err(str(f))
    raise typer.Exit(1)


def friendly(fn: Callable) -> Callable:
    """Turn expected failures into one line on stderr and exit 1 (130 on Ctrl-C)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PabenchError as e:
            _err(str(e))
            raise typer.Exit(1)
        except KeyboardInterrupt:
            _err("interrupted; no result file was written")
            raise typer.Exit(130)
        except FileNotFoundError as e:
            _err(f"no such file: {e.filename}")
            raise typer.Exit(1)
        except Exception as e:  # noqa: BLE001 - torch OOM and friends deserve one line too
            if type(e).__name__ == "OutOfMemoryError":
                _err(f"the device ran out of memory: {str(e).splitlines()[0]} (try --kv-budget, --layers or "
                     f"--max-num-seqs)")
                raise typer.Exit(1)
            raise

    return wrapper


def _stdout():
    """Results console. Not a terminal (pipe, file, tests): 140 columns so tables are never truncated."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _number_list(text: str, what: str, kind: type = int) -> tuple:
    """'8,16,32' -> (8, 16, 32) of `kind`; a clear ConfigError naming the option otherwise."""
    from pabench.core.errors import ConfigError

    try:
        values = tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        noun = "integers" if kind is int else "numbers"
        raise ConfigError(f"{what}: expected comma-separated {noun}, got {text!r}") from None
    if not values:
        raise ConfigError(f"{what}: no value given")
    return values


def _int_list(text: str, what: str) -> tuple[int, ...]:
    return _number_list(text, what, int)


# ---------------------------------------------------------------------------------------------- run
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
    kv_budget: Annotated[Optional[str], typer.Option(help="KV bytes for every backend, e.g. 4GiB. Default: room for max-num-seqs/8 sequences at max-model-len.", rich_help_panel=MEM)] = None,
    num_pages: Annotated[Optional[int], typer.Option(help="KV budget as a number of pages instead of bytes.", rich_help_panel=MEM)] = None,
    prefix_caching: opt.PrefixCaching = True,
    watermark: opt.Watermark = 0.04,
    max_num_seqs: Annotated[Optional[int], typer.Option(help="Most sequences in a batch. Default: 32 on CPU, 256 on CUDA.", rich_help_panel=SCHED)] = None,
    max_model_len: opt.MaxModelLen = None,
    max_batched_tokens: opt.MaxBatchedTokens = 8192,
    min_prefill_seqs: opt.MinPrefillSeqs = 1,
    attn_impl: opt.AttnImpl = "auto",
    cuda_graphs: opt.CudaGraphs = None,
    async_scheduling: opt.AsyncScheduling = False,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Write one row per backend here.", rich_help_panel=OUT)] = None,
    json: Annotated[Optional[Path], typer.Option("--json", help="Write results plus raw per-request samples here.", rich_help_panel=OUT)] = None,
    progress: opt.Progress = True,
) -> None:
    """Serve a workload through each KV cache backend and compare throughput, latency and KV waste."""
    from pabench.backends import parse_backends
    from pabench.export_json import write_json
    from pabench.report import capacity_line, run_table, summary_line, write_csv
    from pabench.runner import RunConfig, prepare, run_benchmark
    from pabench.units import parse_size

    cfg = RunConfig(workload=workload, backends=tuple(parse_backends(backend)), model=model, layers=layers,
                    device=device, dtype=dtype, page_size=page_size,
                    kv_budget_bytes=parse_size(kv_budget) if kv_budget else None, num_pages=num_pages,
                    prefix_caching=prefix_caching, watermark=watermark, max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                    max_batched_tokens=max_batched_tokens, min_prefill_seqs=min_prefill_seqs, num_requests=num_requests, seed=seed, attn_impl=attn_impl,
                    cuda_graphs=cuda_graphs, async_scheduling=async_scheduling)
    err = _stderr()
    with err.status("preparing model and workload...") if progress else _nullcontext():
        p = prepare(cfg)  # bad input (a budget too small for some request) fails here, before the header
    out = _stdout()
    c = p.config
    out.print(f"workload {p.spec.name}: {len(p.requests)} requests | model {p.model.config.name} "
              f"({p.model.config.num_layers} layers, {c.dtype}) on {c.device} | max_num_seqs {c.max_num_seqs}, "
              f"max_model_len {c.max_model_len}")
    out.print(capacity_line(_capacity(p)))
    results, _, _, failures = _with_progress(lambda cb: run_benchmark(cfg, cb, prepared=p),
                                             len(c.backends) * len(p.requests), progress)
    if not results:  # every backend failed: nothing to show or write
        _fail_runs(failures, finished=False)
    out.print(run_table(results))
    out.print(summary_line(results))
    for r in results:
        if r.num_preemptions > 0.25 * max(1, r.num_requests):
            err.print(f"[yellow]note:[/] {r.backend} preempted {r.num_preemptions} sequences for {r.num_requests} "
                      f"requests (each one is recomputed): the KV budget is tight for this load; a larger "
                      f"--watermark or --kv-budget trades batch size for fewer preemptions")
    if csv:
        err.print(f"wrote {write_csv(results, csv)}")
    if json:
        err.print(f"wrote {write_json(results, json)}")
    _fail_runs(failures, finished=True)  # the finished backends are shown and written above


def _capacity(p) -> dict:
    layout, c = p.layout, p.config
    tokens = p.kv_budget_bytes // layout.bytes_per_token
    pages = p.kv_budget_bytes // (layout.bytes_per_token * c.page_size)
    return {"kv_budget_bytes": p.kv_budget_bytes, "num_pages": pages, "page_size": c.page_size,
            "num_tokens": tokens, "max_len_seqs": tokens // c.max_model_len, "max_model_len": c.max_model_len,
            "bytes_per_token": layout.bytes_per_token}


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _with_progress(work: Callable, total: int, enabled: bool):
    """Run `work(callback)` under one rich progress bar on stderr (one task per backend)."""
    if not enabled:
        return work(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:>18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_stderr(), transient=True) as bar:
        tasks: dict[str, int] = {}

        def cb(name: str, done: int, n: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=n)
            bar.update(tasks[name], completed=done)

        return work(cb)


# ---------------------------------------------------------------------------------------------- workloads
@workloads_app.callback()
@friendly
def workloads(ctx: typer.Context) -> None:
    """List the workload presets with their key parameters."""
    if ctx.invoked_subcommand is not None:
        return
    from pabench.report import workloads_table
    from pabench.workload_toml import list_presets

    _stdout().print(workloads_table(list_presets()))


@workloads_app.command("show")
@friendly
def workloads_show(name: Annotated[str, typer.Argument(help="Preset name or TOML file.")]) -> None:
    """Print one workload: its parameters and the length distributions it draws."""
    from pabench.report import workload_detail
    from pabench.workload_toml import load_workload

    _stdout().print(workload_detail(load_workload(name)))


# ---------------------------------------------------------------------------------------------- kernels
@app.command()
@friendly
def kernels(
    case: Annotated[str, typer.Option(help="a (batch 64, ctx 4096), b (batch 256, lognormal lengths), c (batch 8, ctx 32768), d (batch 32, ctx 512), custom or all.")] = "custom",
    batch: Annotated[int, typer.Option(help="Batch size (custom case).")] = 64,
    context: Annotated[int, typer.Option(help="Context length, or mean length for lognormal (custom case).")] = 4096,
    lengths: Annotated[str, typer.Option(help="fixed or lognormal (custom case).")] = "fixed",
    page_sizes: Annotated[str, typer.Option(help="Comma-separated page sizes for the paged kernel.")] = "8,16,32,64,128",
    num_q_heads: Annotated[int, typer.Option(help="Query heads.")] = 32,
    num_kv_heads: Annotated[int, typer.Option(help="KV heads.")] = 8,
    head_dim: Annotated[int, typer.Option(help="Head dimension.")] = 128,
    dtype: Annotated[str, typer.Option(help="bf16, fp16 or fp32.")] = "bf16",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs/--no-cuda-graphs", help="CUDA: time replays of each call captured in a CUDA graph (device time, no Python or launch overhead; for launch-bound cases like d).")] = False,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Write one row per (case, impl, page size).")] = None,
    json: Annotated[Optional[Path], typer.Option("--json", help="Write the rows as JSON.")] = None,
) -> None:
    """Time decode attention: paged (Triton) vs contiguous (same kernel family) vs SDPA, in GB/s and % of copy bandwidth."""
    from pabench.atomic import atomic_write_text
    from pabench.kernel_report import kernel_summary, kernel_table
    from pabench.kernelbench import KernelBenchConfig, run_kernel_bench

    cfg = KernelBenchConfig(case=case, batch=batch, context=context, lengths=lengths,
                            page_sizes=_int_list(page_sizes, "--page-sizes"), num_q_heads=num_q_heads,
                            num_kv_heads=num_kv_heads, head_dim=head_dim, dtype=dtype, device=device,
                            cuda_graphs=cuda_graphs)
    err = _stderr()
    rows = run_kernel_bench(cfg, progress=lambda msg: err.print(msg))
    out = _stdout()
    out.print(kernel_table(rows))
    for line in kernel_summary(rows):
        out.print(line)
    if csv:
        import pandas as pd

        atomic_write_text(csv, pd.DataFrame(rows).to_csv(index=False))
        err.print(f"wrote {csv}")
    if json:
        import json as _json

        atomic_write_text(json, _json.dumps(rows, indent=2, default=str))
        err.print(f"wrote {json}")


# ---------------------------------------------------------------------------------------------- compare / check
@app.command()
@friendly
def compare(
    a: Annotated[Path, typer.Argument(help="First export (CSV or JSON from `pabench run`).")],
    b: Annotated[Path, typer.Argument(help="Second export.")],
) -> None:
    """Side-by-side of two exports, with B/A ratios."""
    from pabench.compare import compare_table
    from pabench.report import read_results

    _stdout().print(compare_table(read_results(a), read_results(b)))


@app.command()
@friendly
def check(
    result: Annotated[Path, typer.Argument(help="The export to check (CSV or JSON).")],
    baseline: Annotated[Path, typer.Option(help="The export it must not be worse than.")],
    max_regression: Annotated[str, typer.Option(help="Tolerance, e.g. 10% or 0.1.")] = "10%",
    metrics: Annotated[Optional[str], typer.Option(help="Comma-separated metrics to check, e.g. mean_waste_pct,num_preemptions (deterministic for a seed). Default: all.")] = None,
) -> None:
    """Exit 2 when any metric of any backend is worse than the baseline by more than the tolerance (CI guard)."""
    from pabench.compare import check_regressions, parse_tolerance
    from pabench.report import read_results

    chosen = tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None
    regressions, table = check_regressions(read_results(result), read_results(baseline),
                                           parse_tolerance(max_regression), chosen)
    out = _stdout()
    out.print(table)
    if regressions:
        out.print(f"{len(regressions)} regression(s) beyond {max_regression}:")
        for r in regressions:
            out.print(f"  {r}")
        raise typer.Exit(2)
    out.print(f"no regression beyond {max_regression}")


from pabench import cli_see  # noqa: E402,F401  registers explain, sweep, plot


def main(argv: list[str] | None = None) -> None:
    """The `pabench` entry point: Typer's usage errors (unknown option, bad value) become one line and exit 1,
    like every other input error, so exit 2 keeps meaning "`check` found a regression"."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = app(args or ["--help"], prog_name="pabench", standalone_mode=False)
    except Exception as error:  # noqa: BLE001 - matched by class name: Typer vendors click, older Typers import it
        names = {cls.__name__ for cls in type(error).__mro__}
        if "UsageError" in names:
            ctx = getattr(error, "ctx", None)
            where = ctx.command_path if ctx is not None else "pabench"
            _err(f"{' '.join(error.format_message().split())} (see '{where} --help')")
            sys.exit(1)
        if "Abort" in names:
            _err("aborted; no result file was written")
            sys.exit(130)
        raise
    sys.exit(code if isinstance(code, int) else 0)
