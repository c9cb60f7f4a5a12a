"""`pabench kernels`: time the attention kernels, paged vs contiguous vs peers. Parse, call the library (imported
lazily), print."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pabench.cli.app import app, err_console, friendly, int_list, out_console


@app.command()
@friendly
def kernels(
    case: Annotated[str, typer.Option(
        help="a (batch 64, ctx 4096), b (batch 256, lognormal lengths), c (batch 8, ctx 32768), d (batch 32, ctx "
             "512), custom or all.")] = "custom",
    # None = not given: on a CPU only defaults shrink to a smoke-test size; a value the user typed is honoured.
    batch: Annotated[Optional[int], typer.Option(
        help="Batch size (custom case). Default: 64 (8 on a CPU).", show_default=False)] = None,
    context: Annotated[Optional[int], typer.Option(
        help="Context length, or mean length for lognormal (custom case). Default: 4096 (256 on a CPU).",
        show_default=False)] = None,
    lengths: Annotated[str, typer.Option(help="fixed or lognormal (custom case).")] = "fixed",
    page_sizes: Annotated[Optional[str], typer.Option(
        help="Comma-separated page sizes for the paged kernel. Default: 8,16,32,64,128 (16 with --models).",
        show_default=False)] = None,
    models: Annotated[Optional[str], typer.Option(
        help="Instead of --case: each model's head shape (all, or a comma list: llama-3-8b, llama-3-70b, "
             "llama-3.2-1b, llama-3.2-3b, qwen2.5-1.5b, qwen2.5-7b, qwen2.5-72b, mistral-7b, llama-2-7b) with "
             "uniform, lognormal and skewed lengths.", show_default=False)] = None,
    impls: Annotated[Optional[str], typer.Option(
        help="Comma-separated implementations to time (default: every one available here): triton-paged, "
             "triton-contiguous, torch-sdpa, gather+sdpa, flex-paged, flashinfer-paged (FlashInfer's tensor-core "
             "path), flashinfer-paged-cc (its CUDA-core path), torch-reference. FlashInfer rows run only where it "
             "is installed.",
        show_default=False)] = None,
    num_q_heads: Annotated[int, typer.Option(help="Query heads.")] = 32,
    num_kv_heads: Annotated[int, typer.Option(help="KV heads.")] = 8,
    head_dim: Annotated[int, typer.Option(help="Head dimension.")] = 128,
    dtype: Annotated[str, typer.Option(help="bf16, fp16 or fp32.")] = "bf16",
    kv_dtype: Annotated[str, typer.Option(
        help="auto (K/V in --dtype) or fp8 (e4m3, one scale per tensor as vLLM's --kv-cache-dtype fp8; times the "
             "Triton kernels and the reference, bytes counted at 1 per element, kv_quant_err vs the float cache).")
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    cuda_graphs: Annotated[bool, typer.Option(
        "--cuda-graphs/--no-cuda-graphs",
        help="CUDA: time replays of each call captured in a CUDA graph (device time, no Python or launch overhead; "
             "for launch-bound cases like d).")] = False,
    csv: Annotated[Optional[str], typer.Option("--csv", help="Write one row per (case, impl, page size).")] = None,
    json: Annotated[Optional[str], typer.Option("--json", help="Write the rows as JSON.")] = None,
) -> None:
    """Time decode attention: paged (Triton) vs contiguous (same kernel family) vs SDPA, in GB/s and % of copy
    bandwidth."""
    from pabench.atomic import atomic_write_text, check_outputs
    from pabench.report.kernels import kernel_summary, kernel_table
    from pabench.errors import ConfigError
    from pabench.kernelbench.models import parse_models, run_models_bench
    from pabench.kernelbench.run import KernelBenchConfig, run_kernel_bench

    names = parse_models(models) if models is not None else None
    if names is not None and (batch is not None or context is not None):
        raise ConfigError("--models sets each case's shape; drop --batch and --context")
    chosen = tuple(i.strip() for i in (impls or "").split(",") if i.strip())  # KernelBenchConfig checks them
    sizes = page_sizes or ("16" if names else "8,16,32,64,128")
    cfg = KernelBenchConfig(case=case, batch=batch, context=context, lengths=lengths,
                            page_sizes=int_list(sizes, "--page-sizes"), num_q_heads=num_q_heads,
                            num_kv_heads=num_kv_heads, head_dim=head_dim, dtype=dtype, device=device,
                            cuda_graphs=cuda_graphs, impls=chosen, kv_dtype=kv_dtype)
    check_outputs({"--csv": csv, "--json": json})  # before the timing runs
    err = err_console()
    if names is not None:
        from pabench.kernelbench.run import resolve_device

        rows = run_models_bench(names, cfg, resolve_device(device).type != "cuda", progress=lambda m: err.print(m))
    else:
        rows = run_kernel_bench(cfg, progress=lambda msg: err.print(msg))
    out = out_console((csv, json))
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
