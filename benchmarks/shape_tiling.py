"""Decode-kernel partitioning probe (issue 19 section 1): on every `pabench kernels --models` shape, the paged
kernel under the heuristic's tiling and a grid of tilings and work splits (items per SM), as CUDA-graph replays,
so the best split per shape shows what a shape-derived partitioning must pick. Also fp8 on Llama-3-8B's two cases
with warps and register caps. One CSV row per (case, tiling); a summary line per case on stdout.
`--stage floor` times the heuristic against itself with no chunk floor and one of 1k, 2k and 4k tokens (min_tiles).
`--stage fp8` times fp8 pages on every shape under the fp8 heuristic and its neighbours (`fp8_shape_grid`).
`--stage partition` instead varies the work split around the heuristic's tiling (items per SM, a floor on the
chunk in tiles, the merge's width) and times, per case, a read-only pass (a sum) and a copy of the case's bytes:
what the memory system itself reaches at that size, the ceiling a kernel of that size can be held to.
Run on a CUDA machine from the repo root:
    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/shape_tiling.py --out $OUT [--budget-s 480] [--stage partition]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from pabench.kernelbench.data import make_decode_data, paginate, to_fp8
from pabench.kernelbench.models import LENGTH_SETS, MODEL_SHAPES
from pabench.kernelbench.run import NAMED_CASES, CaseSpec, case_lengths
from pabench.kernelbench.timing import copy_bandwidth_gbps, time_us
from pabench.kernels import DecodeConfig, choose_decode_config, contiguous_decode_attention, paged_decode_attention
from pabench.kernels.checks import DecodeShape

START = time.time()
ITEMS = (2, 4, 8, 16, 32)


def bf16_grid(batch: int) -> list[DecodeConfig]:
    """Tile size x pipeline depth; the page-id prefetch as the heuristic sets it for the batch."""
    return [DecodeConfig(block_n=bn, num_stages=st, items_per_sm=8, prefetch_pages=batch > 128)
            for bn, st in itertools.product((32, 64, 128), (2, 3, 4))]


def fp8_grid() -> list[DecodeConfig]:
    """fp8: tile size x depth x warps x register cap (s14-5: 128 helped, lower caps spilled)."""
    return [DecodeConfig(block_n=bn, num_stages=st, num_warps=w, items_per_sm=8, maxnreg=r)
            for bn, st, w, r in itertools.product((64, 128), (2, 3, 4), (4, 8), (0, 128))]


def fp8_shape_grid(base: DecodeConfig, num_kv_heads: int) -> list[DecodeConfig]:
    """fp8 pages on every shape (`--stage fp8`): tile x depth x register cap x items per SM, each with no chunk floor
    and with bf16's (256 tokens per KV head), around the fp8 heuristic, which has neither a per-shape split nor a
    floor (s16-4: Qwen2.5 1.5B skewed at 24% of copy, paged / contiguous 1.44)."""
    grid = [replace(base, block_n=bn, num_stages=st, maxnreg=r, items_per_sm=i, min_tiles=t * 256 * num_kv_heads // bn)
            for bn, st, r, i, t in itertools.product((64, 128), (2, 3), (0, 128), (2, 4, 8, 16), (0, 1))]
    return [c for c in grid if c != base]


def partition_grid(base: DecodeConfig) -> list[DecodeConfig]:
    """The heuristic's tiling under other work splits: items per SM x chunk floor x merge width."""
    return [replace(base, items_per_sm=i, min_tiles=t, merge_block=mb, merge_warps=mw)
            for i, t, (mb, mw) in itertools.product((4, 8, 16), (0, 8, 16), ((8, 1), (32, 2), (64, 4)))]


def size_roofline(kv_bytes: int, device: torch.device) -> tuple[float, float]:
    """(read-only sum, copy) of kv_bytes, in microseconds: the memory system's own time at this size."""
    buf = torch.randn(kv_bytes // 2, device=device, dtype=torch.bfloat16)  # [kv_bytes / 2]
    read_us = time_us(lambda: buf.sum(dtype=torch.float32), device, 10, 40, cuda_graph=True)[0]
    half = buf[: buf.numel() // 2]  # copy half the bytes: read + write = kv_bytes moved
    dst = torch.empty_like(half)
    copy_us = time_us(lambda: dst.copy_(half), device, 10, 40, cuda_graph=True)[0]
    return read_us, copy_us


def probe(name: str, heads: tuple[int, int, int], lens: list[int], kv: str, grid: list[DecodeConfig],
          copy_bw: float, writer: csv.DictWriter, budget_s: float, partition: bool = False,
          variants: Callable[[DecodeConfig], list[DecodeConfig]] | None = None) -> None:
    """Time the heuristic, then every grid tiling at every items-per-SM split; contiguous under the heuristic and
    under the best paged tiling. Prints one summary line."""
    device = torch.device("cuda")
    data = make_decode_data(lens, *heads, torch.bfloat16, device, seed=0)
    data = to_fp8(data) if kv == "fp8" else data
    k, v, table = paginate(data, 16)
    elem = 1 if kv == "fp8" else 2
    kv_bytes = 2 * sum(lens) * heads[1] * heads[2] * elem
    shape = DecodeShape(len(lens), heads[0], heads[1], heads[2], 16, table.shape[1] * 16)
    heuristic = choose_decode_config(shape, data.q.dtype, kv_fp8=kv == "fp8")
    ref = paged_decode_attention(data.q, k, v, table, data.seq_lens, impl="triton", check_values=False,
                                 config=heuristic, **data.scales()).float()  # [B, Hq, D]

    def paged(cfg: DecodeConfig):
        return lambda: paged_decode_attention(data.q, k, v, table, data.seq_lens, impl="triton", check_values=False,
                                              config=cfg, **data.scales())

    def contig(cfg: DecodeConfig):
        return lambda: contiguous_decode_attention(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens,
                                                   impl="triton", check_values=False, config=cfg, **data.scales())

    results: list[tuple[float, DecodeConfig]] = []
    configs = [heuristic] + (variants(heuristic) if variants else
                             [c for c in partition_grid(heuristic) if c != heuristic] if partition else
                             [replace(c, items_per_sm=i) for c in grid for i in ITEMS])
    read_us = copy_us = None
    if partition:
        read_us, copy_us = size_roofline(kv_bytes, device)
    for n, cfg in enumerate(configs):
        if n and time.time() - START > budget_s:
            print(f"{name}: budget reached after {n} tilings")
            break
        row = {"case": name, "kv_dtype": kv, "batch": len(lens), "mean_len": sum(lens) / len(lens),
               "num_q_heads": heads[0], "num_kv_heads": heads[1], "head_dim": heads[2], "kv_bytes": kv_bytes,
               "heuristic": n == 0, **cfg.__dict__, "read_us": read_us, "copy_us": copy_us}
        try:
            out = paged(cfg)().float()
            err = float((out - ref).norm() / ref.norm())
            if not err < 2e-2:  # NaN fails too
                raise ValueError(f"output differs from the heuristic's by {err:.3g}")
            median = time_us(paged(cfg), device, 10, 40, cuda_graph=True)[0]
            row.update(rel_diff=err, median_us=median, pct_of_copy_bw=100 * kv_bytes / (median * 1e-6) / 1e9 / copy_bw)
            results.append((median, cfg))
        except Exception as err:  # noqa: BLE001 - a tiling that fails to compile is a row, not a crash
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:150] if str(err) else ''}"
        writer.writerow(row)
    if not results:
        return
    best_us, best = min(results, key=lambda r: r[0])
    pct = lambda us: 100 * kv_bytes / (us * 1e-6) / 1e9 / copy_bw  # noqa: E731
    contig_h = time_us(contig(heuristic), device, 10, 40, cuda_graph=True)[0]
    contig_b = time_us(contig(best), device, 10, 40, cuda_graph=True)[0]
    print(f"{name} {kv} ({kv_bytes / 2**30:.2f} GiB): heuristic {results[0][0]:.1f} us {pct(results[0][0]):.1f}% "
          f"(contiguous {contig_h:.1f}); best {best_us:.1f} us {pct(best_us):.1f}% (contiguous {contig_b:.1f}, "
          f"paged/contig {best_us / contig_b:.3f}) bn {best.block_n} st {best.num_stages} w {best.num_warps} "
          f"items {best.items_per_sm} pf {best.prefetch_pages} reg {best.maxnreg} tiles {best.min_tiles} merge "
          f"{best.merge_block}/{best.merge_warps}"
          + (f"; this size's read-only sum {read_us:.1f} us, copy {copy_us:.1f} us: best / read "
             f"{best_us / read_us:.2f}" if partition else ""), flush=True)
    del data, k, v, table, ref
    torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=480)
    parser.add_argument("--stage", choices=["tiling", "partition", "floor", "fp8"], default="tiling")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    copy_bw = copy_bandwidth_gbps(device, 25, 200)
    print(f"device {torch.cuda.get_device_name(device)}, copy bandwidth {copy_bw:.0f} GB/s", flush=True)
    fields = ["case", "kv_dtype", "batch", "mean_len", "num_q_heads", "num_kv_heads", "head_dim", "kv_bytes",
              "heuristic", *DecodeConfig.__dataclass_fields__, "read_us", "copy_us", "rel_diff", "median_us",
              "pct_of_copy_bw", "error"]
    partition = args.stage == "partition"
    floors = (lambda h: [c for c in (replace(h, min_tiles=t * 1024 // h.block_n) for t in (0, 1, 2, 4)) if c != h]
              if args.stage == "floor" else None)  # no floor, 1k, 2k, 4k tokens
    with open(args.out / f"shape_{args.stage}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        # the shapes under 90% first (s11-7), so a budget cut drops the ones already fast
        order = ["qwen2.5-1.5b", "qwen2.5-7b", "llama-3.2-1b", "llama-3-8b", "llama-3-70b", "llama-2-7b",
                 "llama-3.2-3b", "qwen2.5-72b", "mistral-7b"]
        for model in order:
            hs = MODEL_SHAPES[model]
            for label, (batch, context, kind) in LENGTH_SETS.items():
                lens = case_lengths(CaseSpec(batch, context, kind))
                heads = (hs.num_q_heads, hs.num_kv_heads, hs.head_dim)
                if args.stage == "fp8":
                    probe(f"{model}/{label}", heads, lens, "fp8", [], copy_bw, writer, args.budget_s * 0.95,
                          variants=lambda h, kv=hs.num_kv_heads: fp8_shape_grid(h, kv))
                else:
                    probe(f"{model}/{label}", heads, lens, "bf16", bf16_grid(batch), copy_bw, writer,
                          args.budget_s * 0.8, partition, floors)
                f.flush()
            if model == "llama-3-8b" and args.stage == "floor":  # `pabench kernels` cases c, d and one long sequence
                for label, spec in (("case-c", NAMED_CASES["c"]), ("case-d", NAMED_CASES["d"]),
                                    ("one-128k", CaseSpec(1, 131072, "fixed"))):
                    probe(f"{model}/{label}", (32, 8, 128), case_lengths(spec), "bf16", [], copy_bw, writer,
                          args.budget_s * 0.8, variants=floors)
                    f.flush()
            if model == "llama-3-8b" and args.stage == "tiling":
                for label in ("uniform", "lognormal"):
                    batch, context, kind = LENGTH_SETS[label]
                    probe(f"{model}/{label}", (32, 8, 128), case_lengths(CaseSpec(batch, context, kind)), "fp8",
                          fp8_grid(), copy_bw, writer, args.budget_s)
                    f.flush()
    print(f"done in {time.time() - START:.0f} s")


if __name__ == "__main__":
    main()
