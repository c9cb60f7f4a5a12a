"""Torch reference attention for decode (paged and contiguous) and the KV write, in plain indexing.

These are the ground truth the Triton kernels are tested against, so they share no code with them:
gather each sequence's K/V with ordinary indexing, then softmax in fp32. They loop over the batch
(clear, not fast) and double as the `impl="torch"` path on machines without a GPU.

Bytes each must move (the floor any implementation shares), per call, with e = bytes per element:
  decode:   read  2 * sum(seq_lens) * num_kv_heads * head_dim * e   (K and V of every live token)
            + q and out: 2 * batch * num_q_heads * head_dim * e      (negligible next to the KV)
  write_kv: read and write 2 * num_tokens * num_kv_heads * head_dim * e each
"""

from __future__ import annotations

import torch

from pabench.kernels.fp8 import is_fp8, quantize


def _attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """One sequence's decode attention in fp32. q [Hq, D], k/v [n, Hkv, D] -> [Hq, D] (fp32)."""
    num_kv_heads, head_dim = k.shape[1], k.shape[2]
    qg = q.float().view(num_kv_heads, -1, head_dim)  # [Hkv, group, D]: query heads sharing one KV head
    scores = torch.einsum("kgd,nkd->kgn", qg, k.float()) * scale  # [Hkv, group, n]
    probs = torch.softmax(scores, dim=-1)  # [Hkv, group, n]
    return torch.einsum("kgn,nkd->kgd", probs, v.float()).reshape(q.shape)  # [Hq, D]


def paged_decode_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Decode attention over a paged cache: token p of sequence b is at page page_table[b, p // page_size]."""
    # q [batch, num_q_heads, head_dim]; k_cache/v_cache [num_pages, page_size, num_kv_heads, head_dim]
    page_size, head_dim = k_cache.shape[1], q.shape[-1]
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty_like(q)  # [batch, num_q_heads, head_dim]
    for b, n in enumerate(seq_lens.tolist()):
        num_pages = -(-n // page_size)
        page_ids = page_table[b, :num_pages].long()  # [num_pages]
        k = k_cache[page_ids].flatten(0, 1)[:n]  # [n, num_kv_heads, head_dim]
        v = v_cache[page_ids].flatten(0, 1)[:n]  # [n, num_kv_heads, head_dim]
        out[b] = _attend_one(q[b], k, v, scale).to(q.dtype)
    return out


def contiguous_decode_reference(
    q: torch.Tensor,
    k_slab: torch.Tensor,
    v_slab: torch.Tensor,
    seq_starts: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Decode attention over a slab: token p of sequence b is at row seq_starts[b] + p."""
    # q [batch, num_q_heads, head_dim]; k_slab/v_slab [num_slots, num_kv_heads, head_dim]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out = torch.empty_like(q)  # [batch, num_q_heads, head_dim]
    for b, (start, n) in enumerate(zip(seq_starts.tolist(), seq_lens.tolist())):
        k = k_slab[start : start + n]  # [n, num_kv_heads, head_dim]
        v = v_slab[start : start + n]  # [n, num_kv_heads, head_dim]
        out[b] = _attend_one(q[b], k, v, scale).to(q.dtype)
    return out


def write_kv_reference(
    k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> None:
    """Scatter k, v [num_tokens, H, D] to rows slot_mapping [num_tokens] of the caches, in place (an fp8 cache gets
    clamp(x / scale) in e4m3, fp8.py's format)."""
    slots = slot_mapping.long()  # [num_tokens]
    if is_fp8(k_cache.dtype):  # torch indexes no fp8 tensor on the CPU: move the same bytes as uint8
        k, v = quantize(k, k_scale).view(torch.uint8), quantize(v, v_scale).view(torch.uint8)  # [T, H, D] each
        k_cache, v_cache = k_cache.view(torch.uint8), v_cache.view(torch.uint8)  # same storage, byte views
    for cache, new in ((k_cache, k), (v_cache, v)):
        if cache.dim() == 3:
            cache.index_copy_(0, slots, new.to(cache.dtype))  # [num_slots, H, D]
        elif cache.stride(0) == cache.shape[1] * cache.stride(1):  # pages end to end: one row per slot
            # index_copy_ over the flattened pool is one pass; a two-index put costs ~2.5x on the CPU
            cache.view(-1, *cache.shape[2:]).index_copy_(0, slots, new.to(cache.dtype))  # [P * page, H, D]
        else:  # any strides: index (page, offset) directly instead of relying on a flattened view
            page_size = cache.shape[1]
            cache[slots // page_size, slots % page_size] = new.to(cache.dtype)  # [num_tokens, H, D]


def mixed_attention_reference(q: torch.Tensor, k: list[torch.Tensor], v: list[torch.Tensor],
                              cu_q: list[int]) -> torch.Tensor:
    """A mixed step in float64: sequence i's new tokens q[cu_q[i]:cu_q[i+1]] are the last of its keys k[i], v[i]
    `[seq_len_i, Hkv, D]`, and token j of them sees keys 0 .. seq_len_i - q_len_i + j. Returns [T, Hq, D] float64."""
    # q [T, Hq, D]
    head_dim = q.shape[-1]
    out = torch.empty(q.shape, dtype=torch.float64)  # [T, Hq, D]
    for i, (ki, vi) in enumerate(zip(k, v)):
        qi = q[cu_q[i]:cu_q[i + 1]].double()  # [n, Hq, D]
        n, total, group = qi.shape[0], ki.shape[0], q.shape[1] // ki.shape[1]
        kr = ki.double().repeat_interleave(group, dim=1)  # [total, Hq, D]
        vr = vi.double().repeat_interleave(group, dim=1)  # [total, Hq, D]
        scores = torch.einsum("nhd,thd->hnt", qi, kr) * head_dim**-0.5  # [Hq, n, total]
        seen = torch.arange(total)[None, :] <= torch.arange(n)[:, None] + (total - n)  # [n, total]
        scores = scores.masked_fill(~seen, float("-inf"))
        out[cu_q[i]:cu_q[i + 1]] = torch.einsum("hnt,thd->nhd", scores.softmax(-1), vr)  # [n, Hq, D]
    return out
