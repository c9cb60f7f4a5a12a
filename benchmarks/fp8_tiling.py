"""fp8 decode tiling probe (issue 19): triton-paged and triton-contiguous over fp8 pages on `pabench kernels` cases a
(uniform) and b (lognormal) under the fp8 heuristic and other tilings (one stage, register caps), next to the bf16
heuristic over bf16 pages, as % of the copy bandwidth measured in the same run (one byte per fp8 element).
Run on a CUDA machine from the repo root:
    PYTHONPATH=. python3 benchmarks/fp8_tiling.py > fp8_tiling.txt
"""

from __future__ import annotations

from dataclasses import replace

import torch

from pabench.kernelbench.data import make_decode_data, paginate, to_fp8
from pabench.kernelbench.run import NAMED_CASES, case_lengths
from pabench.kernelbench.timing import copy_bandwidth_gbps, time_us
from pabench.kernels import DecodeConfig, choose_decode_config, contiguous_decode_attention, paged_decode_attention
from pabench.kernels.checks import DecodeShape

TILINGS = [None, DecodeConfig(block_n=128, num_stages=1, items_per_sm=8),
           DecodeConfig(block_n=128, num_stages=1, items_per_sm=8, maxnreg=128),
           DecodeConfig(block_n=64, num_stages=1, items_per_sm=8),
           DecodeConfig(block_n=64, num_stages=1, items_per_sm=8, maxnreg=128),
           DecodeConfig(block_n=64, num_stages=1, items_per_sm=8, maxnreg=96),
           DecodeConfig(block_n=32, num_stages=1, items_per_sm=8, maxnreg=96)]
# s15-6: under 2+ stages the loop keeps future tiles in registers (no cp.async), 255 registers or spills under a
# cap; one stage holds one tile. s14-3: paged fp8 is latency bound at 3 programs per SM; these caps
# allow 4, 5 and 6 programs on the heuristic's tiling (spills, if any, show as a slowdown)
MAXNREG = [128, 96, 80]


def main() -> None:
    device = torch.device("cuda")
    copy = copy_bandwidth_gbps(device, 25, 200)
    print(f"device {torch.cuda.get_device_name(device)}, copy bandwidth {copy:.0f} GB/s")
    for case in ("a", "b"):
        lens = case_lengths(NAMED_CASES[case])
        data = make_decode_data(lens, 32, 8, 128, torch.bfloat16, device, seed=0)
        for kv in ("bf16", "fp8"):
            d = to_fp8(data) if kv == "fp8" else data
            k, v, table = paginate(d, 16)
            elem = 1 if kv == "fp8" else 2
            kv_bytes = 2 * sum(lens) * 8 * 128 * elem
            shape = DecodeShape(len(lens), 32, 8, 128, 16, table.shape[1] * 16)
            base = choose_decode_config(shape, d.q.dtype, kv_fp8=kv == "fp8")
            capped = [replace(base, maxnreg=r) for r in MAXNREG]
            for cfg in TILINGS + capped if kv == "fp8" else [None]:
                name = "heuristic" if cfg is None else str(cfg)
                picked = cfg or base
                times = {}
                for layout, fn in (
                        ("paged", lambda: paged_decode_attention(d.q, k, v, table, d.seq_lens, impl="triton",
                                                                 check_values=False, config=picked, **d.scales())),
                        ("contiguous", lambda: contiguous_decode_attention(
                            d.q, d.k_slab, d.v_slab, d.seq_starts, d.seq_lens, impl="triton", check_values=False,
                            config=picked, **d.scales()))):
                    times[layout] = time_us(fn, device, 25, 200, cuda_graph=True)[0]
                pct = 100 * kv_bytes / (times["paged"] * 1e-6) / 1e9 / copy
                print(f"case {case} kv {kv} {name}: paged {times['paged']:.1f} us ({pct:.1f}% copy), contiguous "
                      f"{times['contiguous']:.1f} us, paged/contiguous {times['paged'] / times['contiguous']:.3f}")


if __name__ == "__main__":
    main()
