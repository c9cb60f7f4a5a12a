"""The options `pabench run` and `pabench sweep` share, declared once so their names, defaults and help agree.

Each alias is `Annotated[type, typer.Option(...)]`; a command gives the default (`= "default"`). Torch-free, like
the rest of the CLI's top level.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

RUN, MEM, SCHED, OUT, GRID, METRICS = "Run", "KV memory", "Scheduler", "Output", "Grid", "Metrics"
TRAFFIC = "Traffic (vLLM's random dataset, over the preset)"

Workload = Annotated[Optional[str], typer.Option(
    "--workload", "-w", help="Preset name (see `pabench workloads`) or a TOML file. Default: default on CPU; on "
    "CUDA sharegpt-like, 500 requests (and llama-3-8b's first 4 layers when neither --model nor --layers is given).",
    rich_help_panel=RUN)]
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
KvDtype = Annotated[str, typer.Option(
    help="How pages and slabs store K/V: auto = the model's dtype; fp8 = e4m3, one byte per element with per-layer "
         "scales (vLLM's --kv-cache-dtype fp8), so a KV budget holds 2x the bf16 tokens.", rich_help_panel=MEM)]
NumRequests = Annotated[Optional[int], typer.Option(
    "--num-requests", "--num-prompts", help="Override the preset's request count (--num-prompts: vLLM's name).",
    rich_help_panel=RUN)]
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
    help="Longest sequence (prompt + output). Default: the workload's longest request, at least 1024 on CPU and "
         "2048 on CUDA (what contiguous-max reserves per sequence).", rich_help_panel=SCHED)]
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
NumPages = Annotated[Optional[int], typer.Option(
    help="KV budget as a number of pages instead of bytes.", rich_help_panel=MEM)]
Quiet = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Only the results and errors: no progress, notes or 'wrote' lines (a warning that other "
    "processes loaded the CPU during the timed runs still prints).", rich_help_panel=OUT)]
Threads = Annotated[Optional[int], typer.Option(
    help="CPU runs: torch threads (torch.set_num_threads). Default: torch's own (one per core).", rich_help_panel=RUN)]
InputLen = Annotated[Optional[int], typer.Option(
    help="Prompt lengths: integers uniform in [L(1-r), L(1+r)] (vLLM's --random-input-len; r: --range-ratio), "
         "after the preset's shared prefix if it has one.", rich_help_panel=TRAFFIC)]
OutputLen = Annotated[Optional[int], typer.Option(
    help="Output lengths: integers uniform in [L(1-r), L(1+r)] (vLLM's --random-output-len).",
    rich_help_panel=TRAFFIC)]
RangeRatio = Annotated[Optional[float], typer.Option(
    help="r in [0, 1) for --input-len/--output-len (vLLM's --random-range-ratio; default 0: exact lengths); alone, "
         "it makes both of the preset's lengths uniform around their means.", rich_help_panel=TRAFFIC)]
Burstiness = Annotated[Optional[float], typer.Option(
    help="Gamma shape of the gaps between arrivals (vLLM's --burstiness: 1 = Poisson, < 1 burstier, > 1 more "
         "regular); needs Poisson arrivals (the preset's, a finite request rate, or swept rates).",
    rich_help_panel=TRAFFIC)]
RequestRate = Annotated[Optional[float], typer.Option(
    help="Requests/s (vLLM's --request-rate): inf puts every request at t=0, a number draws gamma gaps "
         "(--burstiness) at that mean rate, or rescales a trace's times; replaces the preset's arrivals.",
    rich_help_panel=TRAFFIC)]
TensorParallel = Annotated[int, typer.Option(
    min=1, help="Shard the model over N ranks (Megatron-style tensor parallelism over torch.distributed: NCCL with "
    "one GPU per rank, gloo on the CPU), started by pabench itself (or run under torchrun --nproc-per-node N). "
    "The KV budget and the memory columns are per GPU.", rich_help_panel=RUN)]
