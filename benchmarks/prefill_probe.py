"""Why is the first backend's prefill slow? Time `prefill_attention` on lengths it has never seen (cold) and again
(warm), under each SDPA backend choice, on llama-3-8b attention shapes (bf16, 32 query / 8 KV heads, dim 128).

If a backend builds a plan per new sequence length (cuDNN does), cold calls cost far more than warm ones, and a
serving run, which sees hundreds of prompt lengths, pays that inside its measured prefill steps.

    PYTHONPATH=. python3 benchmarks/prefill_probe.py --out results/gpu/e2e/prefill_probe.csv
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from pabench.kernels import prefill_attention
from pabench.kernels.prefill import PREFILL_SDPA_ENV

CHOICES = ("torch", "cudnn", "flash,efficient", "efficient")


def _default_choice(n: int) -> str:
    """The backend torch itself picks for an unmasked causal GQA prefill of n tokens (private API; may be absent)."""
    try:
        from torch.nn.attention import SDPBackend

        q = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16)  # [1, Hq, n, D]
        k = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16)  # [1, Hkv, n, D]
        return SDPBackend(torch._fused_sdp_choice(q, k, k, None, 0.0, True, None, True)).name
    except Exception as error:  # noqa: BLE001 - diagnostic only
        return f"unknown ({type(error).__name__})"


def _one(n_new: int, n_total: int, gen: torch.Generator) -> float:
    """Wall ms of one prefill_attention call, synchronised (the cold cost includes any plan build)."""
    q = torch.randn(n_new, 32, 128, generator=gen).to("cuda", torch.bfloat16)  # [n_new, Hq, D]
    k = torch.randn(n_total, 8, 128, generator=gen).to("cuda", torch.bfloat16)  # [n_total, Hkv, D]
    v = torch.randn(n_total, 8, 128, generator=gen).to("cuda", torch.bfloat16)  # [n_total, Hkv, D]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = prefill_attention(q, k, v)  # [n_new, Hq, D]
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-lengths", type=int, default=48)
    parser.add_argument("--out", default=None, help="CSV path for the per-choice summary")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # sharegpt-like prompt lengths (lognormal, median ~100), disjoint per choice so no choice reuses another's plans
    base = np.unique(np.clip(np.round(rng.lognormal(np.log(100), 1.0, 4 * args.num_lengths)), 16, 1024).astype(int))
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; torch's own pick for causal GQA "
          f"prefill of 97 tokens: {_default_choice(97)}, of 1000: {_default_choice(1000)}")
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i, choice in enumerate(CHOICES):
        os.environ[PREFILL_SDPA_ENV] = choice
        lengths = [int(n) * 4 + i for n in base[: args.num_lengths]]  # distinct lengths for each choice
        for masked in (False, True):
            cold, warm = [], []
            for n in lengths:
                n_new = n // 2 if masked else n
                cold.append(_one(n_new, n, gen))
                warm.append(statistics.median(_one(n_new, n, gen) for _ in range(3)))
            rows.append({"choice": choice, "masked": masked, "num_lengths": len(lengths),
                         "cold_ms_median": statistics.median(cold), "cold_ms_total": sum(cold),
                         "warm_ms_median": statistics.median(warm), "warm_ms_total": sum(warm)})
            r = rows[-1]
            print(f"{choice:>18} masked={masked!s:5}  cold median {r['cold_ms_median']:8.3f} ms (total "
                  f"{r['cold_ms_total']:9.1f})  warm median {r['warm_ms_median']:7.3f} ms (total "
                  f"{r['warm_ms_total']:7.1f})", flush=True)
    if args.out:
        import pandas as pd

        pd.DataFrame(rows).to_csv(args.out, index=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
