"""Vectorised torch decode attention: the engine's fast path where Triton does not run (the CPU).

The references in `reference.py` loop over the batch for clarity; serving a workload needs one batched pass.
Both cache layouts go through the same code, differing only in how a token's slot is computed (page table
lookup vs region start + position), mirroring the `PAGED` flag of the Triton kernel.
Bytes moved: the gathered copy makes it read the live KV twice and write it once (3x the floor).
"""

from __future__ import annotations

import torch


def _attend_slots(q: torch.Tensor, k_flat: torch.Tensor, v_flat: torch.Tensor, slots: torch.Tensor,
                  valid: torch.Tensor, scale: float | None, k_scale: torch.Tensor | None = None,
                  v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """q [B, Hq, D] attends over k/v_flat[slots] `[B, L, Hkv, D]` where `valid` `[B, L]`; fp32 softmax. An fp8
    cache's values are dequantised (times k_scale / v_scale) in fp32 after the gather."""
    B, Hq, D = q.shape
    Hkv = k_flat.shape[1]
    scale = D**-0.5 if scale is None else scale
    if k_scale is not None:  # fp8: gather the bytes (torch indexes no fp8 tensor on the CPU), then dequantise
        k = k_flat.view(torch.uint8)[slots].view(k_flat.dtype).float() * k_scale  # [B, L, Hkv, D]
        v = v_flat.view(torch.uint8)[slots].view(v_flat.dtype).float() * v_scale  # [B, L, Hkv, D]
    else:
        k = k_flat[slots].float()  # [B, L, Hkv, D]
        v = v_flat[slots].float()  # [B, L, Hkv, D]
    qg = q.float().view(B, Hkv, Hq // Hkv, D)  # [B, Hkv, G, D]
    scores = torch.einsum("bkgd,blkd->bkgl", qg, k) * scale  # [B, Hkv, G, L]
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # [B, Hkv, G, L]
    out = torch.einsum("bkgl,blkd->bkgd", probs, v)  # [B, Hkv, G, D]
    return out.reshape(B, Hq, D).to(q.dtype)


def paged_decode_batched(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                         seq_lens: torch.Tensor, scale: float | None = None, k_scale: torch.Tensor | None = None,
                         v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Decode over a paged cache `[num_pages, page_size, Hkv, D]` in one batched gather. Returns `[B, Hq, D]`."""
    page_size = k_cache.shape[1]
    lens = seq_lens.long()  # [B]
    L = int(lens.max())
    pos = torch.arange(L, device=q.device)  # [L]
    valid = pos[None, :] < lens[:, None]  # [B, L]
    pages = page_table.long().gather(1, (pos // page_size)[None, :].expand(len(lens), -1))  # [B, L]
    slots = torch.where(valid, pages * page_size + pos % page_size, 0)  # [B, L]; padding reads slot 0
    return _attend_slots(q, k_cache.flatten(0, 1), v_cache.flatten(0, 1), slots, valid, scale, k_scale, v_scale)


def contiguous_decode_batched(q: torch.Tensor, k_slab: torch.Tensor, v_slab: torch.Tensor, seq_starts: torch.Tensor,
                              seq_lens: torch.Tensor, scale: float | None = None,
                              k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Decode over a slab `[num_slots, Hkv, D]`, token p of sequence b at row seq_starts[b] + p. `[B, Hq, D]`."""
    lens = seq_lens.long()  # [B]
    L = int(lens.max())
    pos = torch.arange(L, device=q.device)  # [L]
    valid = pos[None, :] < lens[:, None]  # [B, L]
    slots = torch.where(valid, seq_starts.long()[:, None] + pos[None, :], 0)  # [B, L]
    return _attend_slots(q, k_slab, v_slab, slots, valid, scale, k_scale, v_scale)
