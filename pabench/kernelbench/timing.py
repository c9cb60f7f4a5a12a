"""Timing for `pabench kernels`: CUDA events through `triton.testing.do_bench` after warm-up on a GPU (optionally of
CUDA-graph replays), wall clock on the CPU; medians with p10/p90, and the device's copy bandwidth as the 100% line."""

from __future__ import annotations

import time
from typing import Any, Callable


def time_us(fn: Callable[[], Any], device: Any, warmup_ms: float, rep_ms: float,
            cuda_graph: bool = False) -> tuple[float, float, float]:
    """(median, p10, p90) of fn's run time in microseconds: CUDA events via do_bench, else perf_counter.

    cuda_graph=True (CUDA only) captures one call of fn in a CUDA graph and times its replays, so a
    launch-bound call reads its device time instead of its Python and launch overhead.
    """
    if device.type == "cuda":
        import triton.testing

        run = capture_graph(fn) if cuda_graph else fn
        p10, p50, p90 = triton.testing.do_bench(run, warmup=warmup_ms, rep=rep_ms, quantiles=[0.1, 0.5, 0.9])
        return p50 * 1e3, p10 * 1e3, p90 * 1e3
    import numpy as np

    deadline = time.perf_counter() + warmup_ms / 1e3
    fn()
    while time.perf_counter() < deadline:
        fn()
    samples: list[float] = []
    deadline = time.perf_counter() + rep_ms / 1e3
    while len(samples) < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    p10, p50, p90 = np.percentile(samples, [10, 50, 90])
    return float(p50), float(p10), float(p90)


def capture_graph(fn: Callable[[], Any]) -> Callable[[], None]:
    """fn captured once in a CUDA graph (after one eager call that compiles and warms it): returns the replay."""
    import torch

    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph.replay


def copy_bandwidth_gbps(device: Any, warmup_ms: float, rep_ms: float) -> float:
    """Device-to-device copy of a large buffer, counting bytes read plus bytes written, in GB/s."""
    import torch

    nbytes = 1 << 30 if device.type == "cuda" else 1 << 26
    src = torch.ones(nbytes // 2, device=device, dtype=torch.float16)  # [nbytes // 2]
    dst = torch.empty_like(src)  # [nbytes // 2]
    median_us, _, _ = time_us(lambda: dst.copy_(src), device, warmup_ms, rep_ms)
    return 2 * nbytes / (median_us * 1e-6) / 1e9
