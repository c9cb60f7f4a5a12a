"""Where the paged fp8 decode kernel's time goes (issue 19): after the fp16 read (s14-1) contiguous fp8 reaches ~66%
of copy bandwidth but paged only ~49%, while in bf16 they tie. Runs `pabench kernels` case a (Llama-3-8B heads,
64 x 4096 tokens, page 16) over fp8 and bf16 K/V, paged then contiguous, twice each as warm-up and once more for a
profiler to catch. Run on a CUDA machine from the repo root, under Nsight Compute where it reads counters:
    ncu --clock-control none -k regex:_decode_chunk --launch-skip 8 --launch-count 4 \
        --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis \
        python3 benchmarks/fp8_profile.py
"""

from __future__ import annotations

import torch

from pabench.kernelbench.data import make_decode_data, paginate, to_fp8
from pabench.kernelbench.run import NAMED_CASES, case_lengths
from pabench.kernels import contiguous_decode_attention, paged_decode_attention


def main() -> None:
    device = torch.device("cuda")
    lens = case_lengths(NAMED_CASES["a"])
    data = make_decode_data(lens, 32, 8, 128, torch.bfloat16, device, seed=0)
    runs = []
    for d in (to_fp8(data), data):
        k, v, table = paginate(d, 16)
        runs.append(lambda d=d, k=k, v=v, table=table: paged_decode_attention(
            d.q, k, v, table, d.seq_lens, impl="triton", check_values=False, **d.scales()))
        runs.append(lambda d=d: contiguous_decode_attention(
            d.q, d.k_slab, d.v_slab, d.seq_starts, d.seq_lens, impl="triton", check_values=False, **d.scales()))
    for _ in range(2):  # warm-up: compiles every variant, so the profiled launches are the 9th to 12th
        for fn in runs:
            fn()
    torch.cuda.synchronize()
    for name, fn in zip(("paged fp8", "contiguous fp8", "paged bf16", "contiguous bf16"), runs):
        out = fn()
        torch.cuda.synchronize()
        print(f"{name}: finite {bool(out.isfinite().all())}")


if __name__ == "__main__":
    main()
