"""The options `pabench run` and `pabench sweep` share, declared once so their names, defaults and help agree.

Each alias is `Annotated[type, typer.Option(...)]`; a command gives the default (`= "default"`). Torch-free, like
the rest of the CLI's top level.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

RUN, MEM, SCHED, OUT, GRID, METRICS = "Run", "KV memory", "Scheduler", "Output", "Grid", "Metrics"

Workload = Annotated[str, typer.Option(
    "--workload", "-w", help="Preset name (see `pabench workloads`) or a TOML file.", rich_help_panel=RUN)]
Backend = Annotated[str, typer.Option(
    "--backend", "-b",
    help="Comma-separated: paged, contiguous-max, contiguous-pow2, contiguous-oracle (or paged+prefix, "
         "paged-noprefix), or 'all'.", rich_help_panel=RUN)]
Model = Annotated[Optional[str], typer.Option(
    help="tiny, llama-3-8b, llama-3.1-70b, mistral-7b, qwen2.5-7b. Default: tiny on CPU, llama-3-8b on CUDA.",
    rich_help_panel=RUN)]
Layers = Annotated[Optional[int], typer.Option(
    help="Run only the first N layers of the model (same shapes).", rich_help_panel=RUN)]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda.", rich_help_panel=RUN)]
Dtype = Annotated[Optional[str], typer.Option(
    help="bf16, fp16 or fp32. Default: fp32 on CPU, bf16 on CUDA.", rich_help_panel=RUN)]
NumRequests = Annotated[Optional[int], typer.Option(help="Override the preset's request count.", rich_help_panel=RUN)]
Seed = Annotated[Optional[int], typer.Option(
    help="Override the preset's seed (requests and weights).", rich_help_panel=RUN)]
AttnImpl = Annotated[str, typer.Option(
    help="Attention kernels: auto (Triton on CUDA, torch on CPU), triton or torch.", rich_help_panel=RUN)]
CudaGraphs = Annotated[Optional[bool], typer.Option(
    "--cuda-graphs/--no-cuda-graphs", help="Replay decode steps as CUDA graphs (default: on with CUDA).",
    rich_help_panel=RUN)]
PrefixCaching = Annotated[Optional[bool], typer.Option(
    "--prefix-caching/--no-prefix-caching",
    help="Share full prompt pages by content hash (paged backend; default on). paged+prefix and paged-noprefix "
         "set it per backend, so giving this flag with one of them that says the opposite is an error.",
    rich_help_panel=MEM)]
Watermark = Annotated[float, typer.Option(
    help="Paged: fraction of pages admission leaves free for running sequences to grow into (fewer preemptions).",
    rich_help_panel=MEM)]
MaxModelLen = Annotated[Optional[int], typer.Option(
    help="Longest sequence (prompt + output). Default: 1024 on CPU, 2048 on CUDA.", rich_help_panel=SCHED)]
MaxBatchedTokens = Annotated[int, typer.Option(
    help="Most prompt tokens in one prefill step; with --chunked-prefill, every token of a step (decode and "
         "prompt chunks).", rich_help_panel=SCHED)]
MinPrefillSeqs = Annotated[int, typer.Option(
    help="Hold a prefill step back until this many batch seats are free (fewer, larger prefill steps; 1 = admit at "
         "once, as vLLM).", rich_help_panel=SCHED)]
AsyncScheduling = Annotated[Optional[bool], typer.Option(
    "--async-scheduling/--no-async-scheduling",
    help="Schedule and stage decode step t+1 while the device runs step t, so host work hides behind device time "
         "(same tokens and schedule). Default: on with CUDA (as vLLM), off on the CPU.", rich_help_panel=SCHED)]
ChunkedPrefill = Annotated[bool, typer.Option(
    "--chunked-prefill/--no-chunked-prefill",
    help="vLLM v1's scheduling: one token budget per step (--max-batched-tokens), every running sequence's decode "
         "token first, then chunks of prompts in what remains, in the same step.", rich_help_panel=SCHED)]
MaxNumPartialPrefills = Annotated[int, typer.Option(
    help="With --chunked-prefill: prompts left partly prefilled at a time (vLLM's default 1).", rich_help_panel=SCHED)]
BeamWidth = Annotated[Optional[int], typer.Option(
    help="Beam search over this many beams per request (vLLM's beam_width; overrides the workload's beam_width; "
         "1 = greedy). Beams share pages and fork / prune every step.", rich_help_panel=SCHED)]
Progress = Annotated[bool, typer.Option(
    "--progress/--no-progress", help="Progress bar on stderr.", rich_help_panel=OUT)]
Goodput = Annotated[Optional[str], typer.Option(
    help="Latency targets in ms, any subset of ttft:MS,tpot:MS,e2el:MS (vLLM's --goodput): a request is good when "
         "each is met (<=); adds request_goodput (good requests/s) and slo_attainment_pct to the table and exports.",
    rich_help_panel=METRICS)]
PercentileMetrics = Annotated[Optional[str], typer.Option(
    help="Latency metrics the table shows percentiles of: comma list of ttft, tpot, itl, e2el (vLLM's flag; "
         "default with --metric-percentiles: ttft,tpot,itl). Exports keep every metric.", rich_help_panel=METRICS)]
MetricPercentiles = Annotated[Optional[str], typer.Option(
    help="Percentiles the table shows, e.g. 50,90,99 (in (0, 100]; vLLM's flag; default with --percentile-metrics: "
         "99). Exports always have p50/p90/p99 and gain a {metric}_pP_ms column for each other one.",
    rich_help_panel=METRICS)]
