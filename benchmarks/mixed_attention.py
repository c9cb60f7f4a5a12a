"""Time one layer of a chunked-prefill mixed step's attention, three ways, on llama-3-8b heads (32/8, head_dim 128,
bf16, page 16, shuffled pages), on CUDA:

  unified   the unified Triton kernel (`kernels/mixed.py`), paged and contiguous, query block auto / 4 / 16; the
            paged one also at the CONFIGS tilings and with its items in sequence order (not heaviest first)
  gather    what mixed steps ran before it: gather every row's whole context into a packed copy, then
            FlashAttention varlen over all sequences (PABENCH_MIXED_ATTENTION=gather)
  separate  the prompt chunks through gather + FlashAttention varlen, the decode rows through the paged decode
            kernel: two attention launches (what an engine without a unified kernel does)

Times are `triton.testing.do_bench` medians (ms) of device work only; the host cost of each path's per-step
metadata (the gather's O(tokens) slots vs the schedule's O(sequences)) is timed apart. The unified output is
checked against the float64 reference on the first case and against the gather path (fp32 softmax in both) on
every case; NaN fails. Usage: python3 benchmarks/mixed_attention.py --out results/... (PYTHONPATH=.)
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pabench import kernels
from pabench.kernels.reference import mixed_attention_reference

HQ, HKV, D, PAGE = 32, 8, 128, 16
CONFIGS = {  # tilings of the paged unified kernel timed beside the default (block_n, warps, stages, prefetch)
    "n64_w4_s2": kernels.MixedConfig(64, 4, 2, 0),
    "n16_w4_s3_pf": kernels.MixedConfig(16, 4, 3, 1),  # one page per tile (page 16): affine addresses inside it
    "n16_w4_s4_pf": kernels.MixedConfig(16, 4, 4, 1),
    "n16_w2_s3_pf": kernels.MixedConfig(16, 2, 3, 1),
    "n32_w4_s3_pf": kernels.MixedConfig(32, 4, 3, 1),
}


def lognormal(rng, n, mean, lo, hi):
    """n lengths, lognormal around `mean` (sigma 0.6), clipped to [lo, hi]."""
    return np.clip(rng.lognormal(np.log(mean), 0.6, n), lo, hi).astype(int).tolist()


def cases(rng):
    """(name, [(seq_len, q_len)]): long-context chunks beside decode rows, a ShareGPT-like step, decode-heavy,
    prefill-only. Decode rows have q_len 1."""
    ctx = lognormal(rng, 24, 3000, 256, 7680)
    share = lognormal(rng, 200, 700, 64, 2000)
    return [
        ("longctx chunk 512 + 24 decode", [(3012, 512)] + [(n, 1) for n in ctx]),
        ("longctx chunk 256 + 24 decode", [(2756, 256)] + [(n, 1) for n in ctx]),
        ("sharegpt 2 chunks + 200 decode", [(1400, 800), (1000, 1000)] + [(n, 1) for n in share]),
        ("decode-heavy chunk 16 + 255 decode", [(500, 16)] + [(n, 1) for n in lognormal(rng, 255, 1000, 64, 4000)]),
        ("prefill-only chunk 2048 at 2048", [(4096, 2048)]),
    ]


def build(plan, gen):
    """Random bf16 K/V for every sequence in shuffled pages and in a slab, q, and the per-path metadata."""
    lens = [n for n, _ in plan]
    pages = [-(-n // PAGE) for n in lens]
    num_pages = sum(pages) + 1
    k_pool = torch.randn(num_pages, PAGE, HKV, D, device="cuda", generator=gen).to(torch.bfloat16)
    v_pool = torch.randn(num_pages, PAGE, HKV, D, device="cuda", generator=gen).to(torch.bfloat16)
    perm = torch.randperm(num_pages, generator=torch.Generator().manual_seed(len(plan))).tolist()
    table = np.zeros((len(plan), max(pages)), dtype=np.int32)
    used = 0
    for i, p in enumerate(pages):
        table[i, :p] = perm[used:used + p]
        used += p
    starts = np.cumsum([0] + lens)[:-1].tolist()
    slot_of = [(table[i, np.arange(n) // PAGE].astype(np.int64) * PAGE + np.arange(n) % PAGE) for i, n in
               enumerate(lens)]
    flat_k, flat_v = k_pool.view(-1, HKV, D), v_pool.view(-1, HKV, D)  # [slots, Hkv, D]
    all_slots = torch.from_numpy(np.concatenate(slot_of)).cuda()  # [sum(lens)]
    k_slab, v_slab = flat_k[all_slots].contiguous(), flat_v[all_slots].contiguous()  # regions end to end
    cu_q = np.cumsum([0] + [q for _, q in plan]).tolist()
    q = torch.randn(cu_q[-1], HQ, D, device="cuda", generator=gen).to(torch.bfloat16)  # [T, Hq, D]
    return dict(lens=lens, table=torch.from_numpy(table).cuda(), starts=starts, slot_of=slot_of, k_pool=k_pool,
                v_pool=v_pool, k_slab=k_slab, v_slab=v_slab, q=q, cu_q=cu_q, flat_k=flat_k, flat_v=flat_v)


def gather_meta(d):
    """The gather path's per-step metadata: every attended slot, O(tokens) on the host."""
    slots = torch.from_numpy(np.concatenate(d["slot_of"])).cuda(non_blocking=True)  # [sum(lens)]
    cu_k = np.cumsum([0] + d["lens"]).tolist()
    return slots, cu_k


def gather_attention(d, slots, cu_k, rows=None):
    """Gather + FlashAttention varlen over `rows` (default all sequences)."""
    k, v = d["flat_k"][slots], d["flat_v"][slots]  # [T_total, Hkv, D]
    return kernels.varlen_prefill_attention(d["q"] if rows is None else rows, k, v, d["cu_q"], cu_k)


def separate_paths(d, plan):
    """Chunks (q_len > 1) through gather + varlen; decode rows through the paged decode kernel."""
    chunk = [i for i, (_, ql) in enumerate(plan) if ql > 1]
    dec = [i for i, (_, ql) in enumerate(plan) if ql == 1]
    cu_q, lens = d["cu_q"], d["lens"]
    q_rows = torch.tensor([r for i in chunk for r in range(cu_q[i], cu_q[i + 1])], device="cuda")
    c_slots = torch.from_numpy(np.concatenate([d["slot_of"][i] for i in chunk])).cuda()
    c_cu_q = np.cumsum([0] + [plan[i][1] for i in chunk]).tolist()
    c_cu_k = np.cumsum([0] + [lens[i] for i in chunk]).tolist()
    d_rows = torch.tensor([cu_q[i] for i in dec], device="cuda", dtype=torch.long)
    d_table = d["table"][dec] if dec else None
    d_lens = torch.tensor([lens[i] for i in dec], device="cuda", dtype=torch.int32)

    def run():
        qc = d["q"][q_rows]
        out = kernels.varlen_prefill_attention(qc, d["flat_k"][c_slots], d["flat_v"][c_slots], c_cu_q, c_cu_k)
        if dec:
            kernels.paged_decode_attention(d["q"][d_rows], d["k_pool"], d["v_pool"], d_table, d_lens,
                                           check_values=False)
        return out
    return run


def host_us(fn, reps=50):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    torch.cuda.synchronize()
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from triton.testing import do_bench

    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for index, (name, plan) in enumerate(cases(rng)):
        d = build(plan, gen)
        refs = list(range(len(plan)))
        sched = {bq: kernels.mixed_schedule(d["cu_q"], d["lens"], refs, "cuda", bq) for bq in (None, 4, 16)}
        csched = kernels.mixed_schedule(d["cu_q"], d["lens"], d["starts"], "cuda")
        slots, cu_k = gather_meta(d)

        def unified(bq=None):
            return kernels.paged_mixed_attention(d["q"], d["k_pool"], d["v_pool"], d["table"], sched[bq])
        out = unified()
        ref_out = gather_attention(d, slots, cu_k)
        assert torch.isfinite(out).all(), name
        err_gather = float((out.double() - ref_out.double()).norm() / ref_out.double().norm())
        err_ref = float("nan")
        if index == 0:  # the float64 oracle once (it loops over sequences on the host)
            ks = [d["flat_k"][torch.from_numpy(s).cuda()].cpu() for s in d["slot_of"]]
            vs = [d["flat_v"][torch.from_numpy(s).cuda()].cpu() for s in d["slot_of"]]
            exact = mixed_attention_reference(d["q"].cpu(), ks, vs, d["cu_q"])
            err_ref = float((out.cpu().double() - exact).norm() / exact.norm())
            assert err_ref < 2e-2, (name, err_ref)
        assert err_gather < 2e-2, (name, err_gather)
        cont = kernels.contiguous_mixed_attention(d["q"], d["k_slab"], d["v_slab"], csched)
        err_layouts = float((cont.double() - out.double()).abs().max())  # one kernel, two layouts
        sep = separate_paths(d, plan)
        in_order = kernels.mixed_schedule(d["cu_q"], d["lens"], refs, "cuda", heavy_first=False)
        variants = {}
        for name, cfg in CONFIGS.items():  # each tiling paged and contiguous: the page-table cost per tiling
            variants[f"cfg_{name}_ms"] = do_bench(lambda c=cfg: kernels.paged_mixed_attention(
                d["q"], d["k_pool"], d["v_pool"], d["table"], sched[None], config=c), return_mode="median")
            variants[f"cfg_{name}_contiguous_ms"] = do_bench(lambda c=cfg: kernels.contiguous_mixed_attention(
                d["q"], d["k_slab"], d["v_slab"], csched, config=c), return_mode="median")
        variants["in_order_items_ms"] = do_bench(lambda: kernels.paged_mixed_attention(
            d["q"], d["k_pool"], d["v_pool"], d["table"], in_order), return_mode="median")
        t = {"unified_paged_ms": do_bench(unified, return_mode="median"),
             "unified_paged_bq4_ms": do_bench(lambda: unified(4), return_mode="median"),
             "unified_paged_bq16_ms": do_bench(lambda: unified(16), return_mode="median"),
             "unified_contiguous_ms": do_bench(lambda: kernels.contiguous_mixed_attention(
                 d["q"], d["k_slab"], d["v_slab"], csched), return_mode="median"),
             "gather_varlen_ms": do_bench(lambda: gather_attention(d, slots, cu_k), return_mode="median"),
             "separate_ms": do_bench(sep, return_mode="median")}
        kv_bytes = 2 * sum(d["lens"]) * HKV * D * 2
        row = {"case": name, "num_seqs": len(plan), "q_tokens": d["cu_q"][-1], "kv_tokens": sum(d["lens"]),
               "block_q_auto": sched[None].block_q, **{k: round(v, 4) for k, v in {**t, **variants}.items()},
               "paged_over_contiguous": round(t["unified_paged_ms"] / t["unified_contiguous_ms"], 3),
               "gather_over_unified": round(t["gather_varlen_ms"] / t["unified_paged_ms"], 3),
               "separate_over_unified": round(t["separate_ms"] / t["unified_paged_ms"], 3),
               "unified_kv_gbps": round(kv_bytes / t["unified_paged_ms"] / 1e6, 1),
               "host_schedule_us": round(host_us(lambda: kernels.mixed_schedule(d["cu_q"], d["lens"], refs,
                                                                                "cuda")), 1),
               "host_gather_slots_us": round(host_us(lambda: gather_meta(d)), 1),
               "rel_err_vs_gather": f"{err_gather:.2e}", "max_diff_layouts": f"{err_layouts:.2e}", "rel_err_vs_float64": f"{err_ref:.2e}"}
        rows.append(row)
        print(row, flush=True)
    with open(args.out / "mixed_attention.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
