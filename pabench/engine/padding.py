"""Prefill shape buckets on CUDA: a step's token count and its logits rows are rounded up to a few sizes.

cuBLAS chooses a GEMM kernel per shape on the host, ~0.25 ms per projection the first time a row count is seen
on the H200 (`benchmarks/gemm_first_shape.py`; benchmarks/NOTES.md, ninth session). Eager prefill steps of a
serving run each have their own token count, so the first backend of a run paid that choice at almost every
prefill step and the next backend, running the same schedule, found every choice cached: the run order, not the
KV cache, decided prefill time. With buckets, `warm_prefill_gemms` makes every choice once before any timed run,
and the padding rows (at most one bucket's worth, never attended or written to the cache) cost little next to
a launch-bound eager forward. The CPU has no such cost and runs unpadded.

Eager decode steps (beam search runs them; CUDA graphs capture every bucket up front) meet batch sizes as
they come: `warm_eager_decode` makes those GEMM choices and the decode kernels' Triton compiles before timing;
`warm_mixed_attention` compiles the unified mixed-step kernel's variants for chunked-prefill runs.
"""

from __future__ import annotations

import torch

from pabench.backends.base import KVCacheBackend
from pabench.engine.model import DecoderModel

TOKEN_BUCKET = 64  # prefill tokens per step round up to a multiple of this
ROW_BUCKET = 16  # logits rows (sequences) per prefill step round up to a multiple of this


def bucket(n: int, multiple: int) -> int:
    """`n` rounded up to a multiple of `multiple`."""
    return -(-n // multiple) * multiple


def _project(layer: dict, x: torch.Tensor, o: torch.Tensor, mid: torch.Tensor) -> int:
    """A layer's four projections on `x` `[n, hidden]`, `o` `[n, Hq D]` and `mid` `[n, I]`: the GEMM shapes cuBLAS
    chooses a kernel for at row count n. Returns the GEMM count."""
    x @ layer["wqkv"], o @ layer["wo"], x @ layer["w_gate_up"], mid @ layer["w_down"]
    return 4


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
        count += _project(layer, x[:t], o[:t], mid[:t])
    for n in range(ROW_BUCKET, bucket(max_rows, ROW_BUCKET) + 1, ROW_BUCKET):
        x[:n] @ model.lm_head  # [n, vocab]
        count += 1
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return count


@torch.inference_mode()
def warm_eager_decode(model: DecoderModel, backend: KVCacheBackend, max_batch: int) -> int:
    """Each decode projection and the LM head at every batch size up to `max_batch`, and the backend's KV write and
    decode attention at each compiled variant's batch (padding rows: scratch slot, length 1). Returns the calls.

    The first backend of a run met these one-time costs inside its timed steps (a ~0.7 s Triton compile at a new
    variant), the next found them paid. Run it on a throwaway backend: it writes into the scratch slot."""
    from pabench.kernels import variant_batches

    c, layer = model.config, model.layers[0]
    x = torch.randn(max_batch, c.hidden_size, device=model.device).to(model.dtype)  # [B, hidden]
    mid = torch.randn(max_batch, c.intermediate_size, device=model.device).to(model.dtype)  # [B, I]
    o = torch.randn(max_batch, c.num_q_heads * c.head_dim, device=model.device).to(model.dtype)  # [B, Hq D]
    count = 0
    for b in range(1, max_batch + 1):
        count += _project(layer, x[:b], o[:b], mid[:b])
        x[:b] @ model.lm_head  # [b, vocab]
        count += 1
    q = o.view(max_batch, c.num_q_heads, c.head_dim)  # [B, Hq, D]
    kv = q[:, :c.num_kv_heads]  # [B, Hkv, D]
    for b in variant_batches(max_batch):
        backend.stage_decode([], b)
        slots = backend.decode_meta(b)  # [b]
        backend.write_kv(0, slots, kv[:b], kv[:b])
        backend.decode_attention(0, q[:b])  # [b, Hq, D]
        count += 2
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return count


@torch.inference_mode()
def warm_mixed_attention(model: DecoderModel, backend: KVCacheBackend) -> int:
    """Compile each variant of the unified mixed-step kernel (every query-block size) on the backend's scratch
    slot, so a chunked run's first mixed step of a new kind pays no compile. Returns the calls (0: not used)."""
    from pabench.backends.base import PrefillBatch
    from pabench.kernels import mixed_schedule
    from pabench.kernels.mixed import BLOCK_Q_SIZES

    if not backend.unified_attention:
        return 0
    c = model.config
    q = torch.randn(1, c.num_q_heads, c.head_dim, device=model.device).to(model.dtype)  # [1, Hq, D]
    for block_q in BLOCK_Q_SIZES:
        sched = mixed_schedule([0, 1], [1], [backend.scratch_ref], model.device, block_q)
        batch = PrefillBatch(slots=torch.zeros(1, dtype=torch.int64), cu_q=(0, 1), cu_k=(0, 1), kv_slots=None,
                             mixed=sched)
        backend.prefill_attention(0, q, q[:, :c.num_kv_heads], q[:, :c.num_kv_heads], batch)  # [1, Hq, D]
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return len(BLOCK_Q_SIZES)
