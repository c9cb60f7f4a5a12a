"""fp8 decode probe (issue 19): triton-paged and triton-contiguous over fp8 pages on `pabench kernels` cases a
(uniform) and b (lognormal), under the heuristic and a few tilings, with each of the kernel's three ways into its
dots (DecodeConfig.fp8_dot), as % of the copy bandwidth measured in the same run (one byte per element) and the
output's error against the unquantized bf16 cache. Run on a CUDA machine from the repo root:
    PYTHONPATH=. python3 benchmarks/fp8_tiling.py > fp8_tiling.txt
"""

from __future__ import annotations

from dataclasses import replace

import torch

from pabench.kernelbench.data import make_decode_data, paginate, to_fp8
from pabench.kernelbench.run import NAMED_CASES, case_lengths
from pabench.kernelbench.timing import copy_bandwidth_gbps, time_us
from pabench.kernels import (DecodeConfig, choose_decode_config, contiguous_decode_attention,
                             contiguous_decode_reference, paged_decode_attention)
from pabench.kernels.checks import DecodeShape

TILINGS = [None, DecodeConfig(block_n=128, num_stages=2, items_per_sm=8, maxnreg=128),
           DecodeConfig(block_n=128, num_stages=3, items_per_sm=8, maxnreg=128),
           DecodeConfig(block_n=128, num_stages=2, items_per_sm=8),
           DecodeConfig(block_n=64, num_stages=3, items_per_sm=8, maxnreg=128),
           DecodeConfig(block_n=128, num_stages=2, num_warps=8, items_per_sm=8)]
# fp8_dot 0: e4m3 tiles converted to fp16 for fp16 dots (the default); 1: q in e4m3, q.K^T on fp8 tensor cores;
# 2: p.V in e4m3 too. Each is timed under every tiling, with its output error against the unquantized cache.
FP8_DOTS = (0, 1, 2)


def main() -> None:
    device = torch.device("cuda")
    copy = copy_bandwidth_gbps(device, 25, 200)
    print(f"device {torch.cuda.get_device_name(device)}, copy bandwidth {copy:.0f} GB/s")
    for case in ("a", "b"):
        lens = case_lengths(NAMED_CASES[case])
        data = make_decode_data(lens, 32, 8, 128, torch.bfloat16, device, seed=0)
        ref = contiguous_decode_reference(data.q.float(), data.k_slab.float(), data.v_slab.float(), data.seq_starts,
                                          data.seq_lens).float()  # [B, Hq, D] fp32 over the bf16 cache
        d = to_fp8(data)
        k, v, table = paginate(d, 16)
        kv_bytes = 2 * sum(lens) * 8 * 128  # one byte per element
        shape = DecodeShape(len(lens), 32, 8, 128, 16, table.shape[1] * 16)
        for dot in FP8_DOTS:
            for cfg in TILINGS:
                base = cfg or choose_decode_config(shape, d.q.dtype, kv_fp8=True)
                picked = replace(base, fp8_dot=dot)
                name = ("heuristic " if cfg is None else "") + str(picked)
                try:
                    out = paged_decode_attention(d.q, k, v, table, d.seq_lens, impl="triton", config=picked,
                                                 **d.scales()).float()
                except Exception as error:  # noqa: BLE001 - a variant that does not compile is a line, not a stop
                    print(f"case {case} fp8_dot {dot} {name}: {type(error).__name__}: {str(error)[:200]}")
                    continue
                err = float((out - ref).norm() / ref.norm())
                times = {}
                for layout, fn in (
                        ("paged", lambda: paged_decode_attention(d.q, k, v, table, d.seq_lens, impl="triton",
                                                                 check_values=False, config=picked, **d.scales())),
                        ("contiguous", lambda: contiguous_decode_attention(
                            d.q, d.k_slab, d.v_slab, d.seq_starts, d.seq_lens, impl="triton", check_values=False,
                            config=picked, **d.scales()))):
                    times[layout] = time_us(fn, device, 25, 200, cuda_graph=True)[0]
                pct = 100 * kv_bytes / (times["paged"] * 1e-6) / 1e9 / copy
                print(f"case {case} fp8_dot {dot} {name}: paged {times['paged']:.1f} us ({pct:.1f}% copy), "
                      f"contiguous {times['contiguous']:.1f} us, paged/contiguous "
                      f"{times['paged'] / times['contiguous']:.3f}, rel err {err:.4f}", flush=True)


if __name__ == "__main__":
    main()
