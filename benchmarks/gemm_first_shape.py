"""Does a GEMM pay a one-time host cost per new row count? (issue 15: the first backend's prefill steps are slower)

    PYTHONPATH=. python3 benchmarks/gemm_first_shape.py

Times the host side of F.linear on [T, 4096] bf16 inputs (the model's projections) for 600 distinct T, twice in
the same order: a per-shape cost (cuBLAS heuristics) shows up as a first pass slower than the second.
"""

import random
import statistics
import time

import torch
import torch.nn.functional as F

torch.manual_seed(0)
dev = "cuda"
ws = [torch.randn(n, 4096, device=dev, dtype=torch.bfloat16) for n in (6144, 4096, 28672)]
w_down = torch.randn(4096, 14336, device=dev, dtype=torch.bfloat16)
sizes = random.Random(0).sample(range(16, 8192), 600)
x_big = torch.randn(8192, 14336, device=dev, dtype=torch.bfloat16)


def one_pass(sizes):
    times = []
    for t in sizes:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for w in ws:
            F.linear(x_big[:t, :4096], w)
        F.linear(x_big[:t], w_down)
        times.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    return times


F.linear(x_big[:8, :4096], ws[0])
first = one_pass(sizes)
second = one_pass(sizes)
print(f"host per 4 GEMMs, first pass: median {statistics.median(first) * 1e6:.1f} us, mean "
      f"{statistics.fmean(first) * 1e6:.1f} us; second pass: median {statistics.median(second) * 1e6:.1f} us, "
      f"mean {statistics.fmean(second) * 1e6:.1f} us ({len(sizes)} row counts)")
t0 = time.perf_counter()
one_pass(range(1, 8193))
print(f"a pass over every row count 1..8192: {time.perf_counter() - t0:.2f} s")
third = one_pass(random.Random(1).sample(range(16, 8192), 600))
print(f"after it, 600 other row counts: median {statistics.median(third) * 1e6:.1f} us, "
      f"mean {statistics.fmean(third) * 1e6:.1f} us")
