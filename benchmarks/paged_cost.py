"""Where paging's cost goes at equal batch (issue 15): paged vs contiguous-oracle on the same requests and batches.

    PYTHONPATH=. python3 benchmarks/paged_cost.py [--layers 4] [--kv-budget 4GiB] [--variants default,async]
        [--rounds N --alternate] [--profile] [--micro 50,300] [--decode-sweep] [--out DIR]

On the CPU (tiny model, issue 15's target 5): `--kv-budget 256MiB --rounds 5 --alternate`.

For each variant (engine flags), the backends run alternately, `--rounds` times each, on one prepared workload
(one model, one request list), and the script prints per backend: output tok/s, prefill and decode device time
per step (CUDA events), the host time of a prefill step's forward enqueue (a launch-bound forward shows up as
enqueue ~ device), host time per full-batch decode step split into schedule / stage / bookkeeping, and Python GC
pauses. Then the paged / oracle ratios. `--profile` adds a torch.profiler window over prefill steps 5..45 of each
backend (CPU ops and CUDA kernels, by total time) written to DIR. Runs on the CPU too (tiny model), for a dry run.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pabench.bench.runner import RunConfig, prepare, run_backend  # noqa: E402
from pabench.engine.engine import Engine  # noqa: E402
from pabench.units import parse_size  # noqa: E402

VARIANTS = {
    "default": {},
    "sync": {"async_scheduling": False},
    "async": {"async_scheduling": True},
    "noprefix": {"prefix_caching": False},
    "async-noprefix": {"async_scheduling": True, "prefix_caching": False},
}


class GcPauses:
    """Python GC pauses while installed: count, total and longest, per generation."""

    def __init__(self) -> None:
        self.by_gen: dict[int, list[float]] = {}
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.by_gen.setdefault(info["generation"], []).append(time.perf_counter() - self._t0)

    def summary(self) -> dict:
        return {g: {"n": len(v), "total_ms": round(sum(v) * 1e3, 2), "max_ms": round(max(v) * 1e3, 2)}
                for g, v in sorted(self.by_gen.items())}


def device_allocs() -> int:
    """cudaMalloc calls of torch's caching allocator so far (0 on the CPU): a new segment stalls the host."""
    import torch

    return torch.cuda.memory_stats().get("num_device_alloc", 0) if torch.cuda.is_available() else 0


def instrument_prefill(enqueue_s: list[float], allocs: list[int] | None = None):
    """Wrap Engine._prefill's model.forward to record how long the host takes to enqueue it (no sync inside),
    and, when `allocs` is given, how many device segments the allocator had to cudaMalloc during it."""
    original = Engine._prefill

    def _prefill(self, states, timer):
        forward = self.model.forward

        def timed_forward(*args, **kwargs):
            a0 = device_allocs() if allocs is not None else 0
            t0 = time.perf_counter()
            out = forward(*args, **kwargs)
            enqueue_s.append(time.perf_counter() - t0)
            if allocs is not None:
                allocs.append(device_allocs() - a0)
            return out

        self.model.forward = timed_forward
        try:
            return original(self, states, timer)
        finally:
            del self.model.forward

    return _prefill


def summarize(record, enqueue_s: list[float], gc_pauses: GcPauses, max_num_seqs: int,
              allocs: list[int] | None = None) -> dict:
    steps = record.steps
    pre = [s for s in steps if s.kind == "prefill"]
    enqueue_s = enqueue_s[-len(pre):]  # the warm-up's prefills came first (same patched class)
    allocs = (allocs or [])[-len(pre):]
    grew = [s.device_s for s, a in zip(pre, allocs) if a > 0]
    still = [s.device_s for s, a in zip(pre, allocs) if a == 0]
    dec = [s for s in steps if s.kind == "decode"]
    full = [s for s in dec if s.num_seqs >= max_num_seqs - 15] or dec
    out_tokens = sum(r.num_output_tokens for r in record.requests)
    med = statistics.median
    mean = statistics.fmean
    return {
        "output_tok_s": out_tokens / record.wall_s, "wall_s": record.wall_s,
        "mean_batch": mean(s.num_seqs for s in dec), "num_prefill": len(pre), "num_decode": len(dec),
        "prefill_device_mean_ms": 1e3 * mean(s.device_s for s in pre),
        "prefill_device_p50_ms": 1e3 * med(s.device_s for s in pre),
        "prefill_step_mean_ms": 1e3 * mean(s.step_s for s in pre),
        "prefill_host_mean_ms": 1e3 * mean(s.host_s for s in pre),
        "prefill_enqueue_mean_ms": 1e3 * mean(enqueue_s) if enqueue_s else 0.0,
        "prefill_enqueue_p50_ms": 1e3 * med(enqueue_s) if enqueue_s else 0.0,
        "decode_device_mean_ms": 1e3 * mean(s.device_s for s in dec),
        "decode_step_mean_ms": 1e3 * mean(s.step_s for s in dec),
        "full_decode_host_ms": 1e3 * mean(s.host_s for s in full),
        "full_decode_schedule_ms": 1e3 * mean(s.host_split_s[0] for s in full),
        "full_decode_stage_ms": 1e3 * mean(s.host_split_s[1] for s in full),
        "full_decode_book_ms": 1e3 * mean(s.host_split_s[2] for s in full),
        "full_decode_device_ms": 1e3 * mean(s.device_s for s in full),
        "prefill_steps_with_malloc": len(grew), "prefill_mallocs": sum(allocs),
        "prefill_device_with_malloc_ms": 1e3 * mean(grew) if grew else 0.0,
        "prefill_device_without_malloc_ms": 1e3 * mean(still) if still else 0.0,
        "gc": gc_pauses.summary(),
    }


def profile_window(p, backend: str, out_dir: Path, first: int = 5, last: int = 45) -> None:
    """torch.profiler over prefill steps first..last of one run: op and kernel tables to out_dir."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    prof = profile(activities=acts, record_shapes=False)
    original = Engine._prefill
    count = [0]

    def _prefill(self, states, timer):
        count[0] += 1
        if count[0] == first:
            prof.__enter__()
        try:
            return original(self, states, timer)
        finally:
            if count[0] == last:
                torch.cuda.synchronize() if torch.cuda.is_available() else None
                prof.__exit__(None, None, None)

    Engine._prefill = _prefill
    try:
        run_backend(p, backend)
    finally:
        Engine._prefill = original
        if first <= count[0] < last:  # the run had fewer prefill steps than the window
            prof.__exit__(None, None, None)
    ka = prof.key_averages()
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    text = (f"# {backend}: prefill steps {first}..{last} (decode steps between them included)\n"
            f"## by {sort}\n{ka.table(sort_by=sort, row_limit=40)}\n"
            f"## by cpu_time_total\n{ka.table(sort_by='cpu_time_total', row_limit=40)}\n")
    (out_dir / f"profile_{backend}.txt").write_text(text)
    print(text[:6000], flush=True)


def micro(p, lengths: list[int], reps: int = 15) -> None:
    """One prefill step of one fresh sequence per backend, alternating: host wall, forward enqueue, device time;
    then the KV write alone (device time by do_bench where CUDA is, host enqueue per call everywhere)."""
    import torch

    from pabench.bench.runner import build_backend, scheduler_config
    from pabench.core import Sequence
    from pabench.engine.scheduler import SeqState

    engines = {b: Engine(p.model, build_backend(p, b), scheduler_config(p)) for b in p.config.backends}
    vocab = p.model.config.vocab_size
    for length in lengths:
        rows: dict[str, list[tuple[float, float, float]]] = {b: [] for b in engines}
        for rep in range(reps):
            for b, e in engines.items():  # distinct tokens per rep: no prefix-cache hit
                tokens = [(7919 * i + 104729 * rep + length) % (vocab - 1) + 1 for i in range(length)]
                st = SeqState(Sequence(rep, tokens), rep, 0, length, 4)
                e.backend.admit(st.seq, length + 4)
                enqueue: list[float] = []
                wrapped = instrument_prefill(enqueue)
                t0 = time.perf_counter()
                wrapped(e, [st], e._timer)
                wall = time.perf_counter() - t0
                rows[b].append((wall, enqueue[0], e._timer.elapsed_s()))
                e.backend.release(st.seq)
        for b, r in rows.items():
            r = r[2:]
            print(f"micro prefill len {length} {b}: wall {1e3 * statistics.median(x[0] for x in r):.3f} ms, "
                  f"enqueue {1e3 * statistics.median(x[1] for x in r):.3f} ms, "
                  f"device {1e3 * statistics.median(x[2] for x in r):.3f} ms", flush=True)
        lay = p.layout
        k = torch.randn(length, lay.num_kv_heads, lay.head_dim, device=lay.device).to(lay.torch_dtype)  # [L, H, D]
        v = torch.randn_like(k)  # [L, H, D]
        for b, e in engines.items():  # tokens no earlier prefill used: no prefix hit shortens the slots
            seq = Sequence(10_000 + length, [(104723 * i + 31 * length) % (vocab - 1) + 1 for i in range(length)])
            e.backend.admit(seq, length + 4)
            slots = e.backend.prepare_prefill(seq).slots.to(lay.device)  # [L'] (L' < L on a prefix hit)
            kk, vv = k[:len(slots)], v[:len(slots)]  # [L', H, D]
            write = lambda: e.backend.write_kv(0, slots, kk, vv)  # noqa: E731
            for _ in range(5):
                write()
            n = 200
            t0 = time.perf_counter()
            for _ in range(n):
                write()
            enq = (time.perf_counter() - t0) / n
            dev = float("nan")
            if torch.cuda.is_available():
                import triton

                torch.cuda.synchronize()
                dev = triton.testing.do_bench(write, warmup=20, rep=100) * 1e3  # ms -> us
            print(f"micro write_kv len {length} {b}: enqueue {enq * 1e6:.1f} us/call, device {dev:.1f} us",
                  flush=True)
            e.backend.release(seq)


def decode_sweep(p, batch: int = 256, seed: int = 0) -> None:
    """The decode kernel alone at the run's full-batch shape (the lengths of `batch` requests part-way through
    their outputs, the block table as wide as max_model_len), paged vs contiguous per tiling, graph replays."""
    import random

    import torch
    import triton

    from pabench import kernels
    from pabench.kernelbench.data import make_decode_data, paginate
    from pabench.kernels.tiling import DecodeConfig

    rng = random.Random(seed)
    reqs = p.requests[:batch]
    lens = [len(r.prompt_token_ids) + rng.randint(1, r.output_len) for r in reqs]
    lay = p.layout
    hq = p.model.config.num_q_heads
    data = make_decode_data(lens, hq, lay.num_kv_heads, lay.head_dim, lay.torch_dtype, lay.device, seed=seed)
    k_cache, v_cache, table = paginate(data, p.config.page_size)
    width = -(-p.config.max_model_len // p.config.page_size)
    wide = torch.full((len(lens), width), 0, dtype=torch.int32, device=lay.device)  # [B, max_pages] as the engine's
    wide[:, :table.shape[1]] = table
    configs = [None] + [DecodeConfig(block_n=bn, num_stages=st, items_per_sm=it, prefetch_pages=pf)
                        for bn in (32, 64) for st in (2, 3, 4) for it in (8, 16) for pf in (False, True)]
    ref = kernels.contiguous_decode_attention(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens,
                                              impl="triton", check_values=False)  # [B, Hq, D]
    print(f"decode sweep: batch {len(lens)}, mean len {statistics.fmean(lens):.0f}, table width {width}", flush=True)
    rows = []
    for cfg in configs:
        def paged():
            return kernels.paged_decode_attention(data.q, k_cache, v_cache, wide, data.seq_lens, impl="triton",
                                                  check_values=False, config=cfg)

        def contiguous():
            return kernels.contiguous_decode_attention(data.q, data.k_slab, data.v_slab, data.seq_starts,
                                                       data.seq_lens, impl="triton", check_values=False, config=cfg)

        err = max((paged() - ref).abs().max().item(), (contiguous() - ref).abs().max().item())
        bench = getattr(triton.testing, "do_bench_cudagraph", None) or triton.testing.do_bench
        tp, tc = bench(paged, rep=50) * 1e3, bench(contiguous, rep=50) * 1e3  # ms -> us
        name = "heuristic" if cfg is None else f"bn{cfg.block_n} st{cfg.num_stages} it{cfg.items_per_sm} pf{int(cfg.prefetch_pages)}"
        rows.append((name, tp, tc, err))
        print(f"  {name:22s} paged {tp:7.1f} us  contiguous {tc:7.1f} us  p/c {tp / tc:.3f}  max err {err:.2e}",
              flush=True)
    best_c = min(r[2] for r in rows)
    best_p = min(rows, key=lambda r: r[1])
    print(f"decode sweep: best paged {best_p[0]} {best_p[1]:.1f} us = {best_p[1] / best_c:.3f} x best contiguous "
          f"{best_c:.1f} us; heuristic {rows[0][1]:.1f} / {rows[0][2]:.1f} us", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="sharegpt-like")
    ap.add_argument("--model", default=None)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--kv-budget", default="4GiB")
    ap.add_argument("--max-num-seqs", type=int, default=None)
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--num-requests", type=int, default=None)
    ap.add_argument("--backends", default="paged,contiguous-oracle")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--alternate", action="store_true", help="reverse the backend order every other round")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--micro", default="", help="comma list of prompt lengths for the one-step prefill micro-benchmark")
    ap.add_argument("--decode-sweep", action="store_true", help="time the decode kernel alone per tiling (CUDA)")
    ap.add_argument("--out", default="/tmp/paged_cost")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    import torch

    cuda = torch.cuda.is_available()
    base = RunConfig(workload=args.workload, backends=tuple(args.backends.split(",")),
                     model=args.model or ("llama-3-8b" if cuda else None), layers=args.layers or (4 if cuda else None),
                     kv_budget_bytes=parse_size(args.kv_budget), max_num_seqs=args.max_num_seqs,
                     max_model_len=args.max_model_len, num_requests=args.num_requests)
    p = prepare(base)
    if args.micro:
        micro(p, [int(x) for x in args.micro.split(",")])
    if args.decode_sweep and cuda:
        decode_sweep(p, p.config.max_num_seqs)
    results = {}
    for variant in filter(None, args.variants.split(",")):
        cfg = replace(p.config, **VARIANTS[variant])
        pv = replace(p, config=cfg)
        for rnd in range(args.rounds):
            order = cfg.backends[::-1] if args.alternate and rnd % 2 else cfg.backends
            for backend in order:
                enqueue: list[float] = []
                allocs: list[int] = []
                pauses = GcPauses()
                original = Engine._prefill
                Engine._prefill = instrument_prefill(enqueue, allocs)
                gc.callbacks.append(pauses)
                try:
                    record = run_backend(pv, backend)
                finally:
                    gc.callbacks.remove(pauses)
                    Engine._prefill = original
                s = summarize(record, enqueue, pauses, cfg.max_num_seqs, allocs)
                results.setdefault(variant, {}).setdefault(backend, []).append(s)
                print(f"[{variant} round {rnd}] {backend}: " + ", ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()), flush=True)
        names = cfg.backends
        if len(names) == 2 and variant in results:
            a, b = (results[variant][n] for n in names)
            for key in ("output_tok_s", "prefill_device_mean_ms", "prefill_enqueue_mean_ms", "decode_device_mean_ms",
                        "full_decode_host_ms", "full_decode_device_ms"):
                ratios = [x[key] / y[key] for x, y in zip(a, b) if y[key]]
                if ratios:
                    print(f"[{variant}] {names[0]} / {names[1]} {key}: "
                          + " ".join(f"{r:.3f}" for r in ratios) + f" (median {statistics.median(ratios):.3f})",
                          flush=True)
    (out_dir / "paged_cost.json").write_text(json.dumps(results, indent=1))
    if args.profile:
        for backend in p.config.backends:
            profile_window(p, backend, out_dir)


if __name__ == "__main__":
    main()
