"""What the model's attention layers call during a step: the backend writes K/V and attends (prefill or decode).

Shared by the eager engine and the CUDA-graph capture, so neither imports the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pabench.backends.base import KVCacheBackend, PrefillBatch
from pabench.core import Sequence
from pabench.engine.model import AttentionFn


def decode_token_fields(seqs: list[Sequence]) -> tuple[list[int], list[int]]:
    """What a decode step feeds the model per sequence: its newest token id and that token's position."""
    return [s.last_token_id for s in seqs], [s.num_tokens - 1 for s in seqs]


def prefill_attn(backend: KVCacheBackend, batch: PrefillBatch) -> AttentionFn:
    """Attention of a packed prefill batch: write the new tokens' K/V, then one varlen attention per layer."""

    def attn(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        rows, n = q.shape[0], batch.cu_q[-1]
        if rows != n:  # a padded step (engine/padding.py): pad rows are neither written nor attended
            q, k, v = q[:n], k[:n], v[:n]  # [n, H, D] each
        backend.write_kv(layer, batch.slots, k, v)
        out = backend.prefill_attention(layer, q, k, v, batch)  # [n, Hq, D]
        return out if rows == n else F.pad(out, (0, 0, 0, 0, 0, rows - n))  # [rows, Hq, D]

    return attn


def decode_attn(backend: KVCacheBackend, slots: torch.Tensor) -> AttentionFn:
    """Attention of a prepared decode batch: write each newest token's K/V at `slots` `[B]`, then attend."""

    def attn(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        backend.write_kv(layer, slots, k, v)
        return backend.decode_attention(layer, q)

    return attn
