"""Prefill shape buckets on CUDA: a step's token count and its logits rows are rounded up to a few sizes.

cuBLAS chooses a GEMM kernel per shape on the host, ~0.25 ms per projection the first time a row count is seen
on the H200 (`benchmarks/gemm_first_shape.py`; benchmarks/NOTES.md, ninth session). Eager prefill steps of a
serving run each have their own token count, so the first backend of a run paid that choice at almost every
prefill step and the next backend, running the same schedule, found every choice cached: the run order, not the
KV cache, decided prefill time. With buckets, `warm_prefill_gemms` makes every choice once before any timed run,
and the padding rows (at most one bucket's worth, never attended or written to the cache) cost little next to
a launch-bound eager forward. The CPU has no such cost and runs unpadded.
"""

from __future__ import annotations

import torch

from pabench.engine.model import DecoderModel

TOKEN_BUCKET = 64  # prefill tokens per step round up to a multiple of this
ROW_BUCKET = 16  # logits rows (sequences) per prefill step round up to a multiple of this


def bucket(n: int, multiple: int) -> int:
    """`n` rounded up to a multiple of `multiple`."""
    return -(-n // multiple) * multiple


@torch.inference_mode()
def warm_prefill_gemms(model: DecoderModel, max_tokens: int, max_rows: int) -> int:
    """Run each prefill projection once at every token bucket up to `max_tokens`, and the LM head at every row
    bucket up to `max_rows`, so cuBLAS has chosen its kernels before anything is timed. Returns the GEMM count."""
    c, layer = model.config, model.layers[0]
    top = bucket(max_tokens, TOKEN_BUCKET)
    x = torch.randn(top, c.hidden_size, device=model.device).to(model.dtype)  # [T, hidden]
    mid = torch.randn(top, c.intermediate_size, device=model.device).to(model.dtype)  # [T, I]
    o = torch.randn(top, c.num_q_heads * c.head_dim, device=model.device).to(model.dtype)  # [T, Hq D]
    count = 0
    for t in range(TOKEN_BUCKET, top + 1, TOKEN_BUCKET):
        x[:t] @ layer["wqkv"], o[:t] @ layer["wo"], x[:t] @ layer["w_gate_up"], mid[:t] @ layer["w_down"]
        count += 4
    for n in range(ROW_BUCKET, bucket(max_rows, ROW_BUCKET) + 1, ROW_BUCKET):
        x[:n] @ model.lm_head  # [n, vocab]
        count += 1
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return count
