"""Unified attention for a chunked-prefill mixed step: prompt chunks and decode tokens in ONE launch per layer.

Sequence i brings q_len_i >= 1 new tokens (a chunk, or 1 for decode) at positions seq_len_i - q_len_i ..
seq_len_i - 1; each attends causally to its own earlier K/V and itself, read in place through the page table
(or the slab region), so a mixed step gathers no copy of any context. One program = one block of `block_q`
consecutive query tokens of one sequence, for one KV head and all GROUP query heads sharing it (rows of the
tile are (token, head) pairs: every K/V tile is read once for block_q * GROUP query rows). The same kernel
serves both layouts (`PAGED` constexpr), like the decode kernel, so paged vs contiguous differ only by the
table lookup. vLLM's "unified attention" Triton kernel is the public example of the idea (not of this code).

Reference: `pabench.kernels.reference.mixed_attention_reference` (float64, per sequence, plain indexing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import triton
import triton.language as tl

from pabench.errors import ConfigError
from pabench.kernels.checks import SUPPORTED_HEAD_DIMS, resolve_impl
from pabench.kernels.decode import LOG2E, tile_pages
from pabench.kernels.fp8 import check_scales, dot_query, is_fp8
from pabench.units import check_page_size


@triton.jit
def _mixed_kernel(
    # inputs: q [T, Hq, D]; k/v [P, S, Hkv, D] (paged) or [num_slots, Hkv, D]; table [rows, pages] (paged only)
    q_ptr, k_ptr, v_ptr, table_ptr, k_scale_ptr, v_scale_ptr,  # k/v scales [1] fp32 (read only when KV_FP8)
    # the step's schedule (int32, one device tensor): cu_q [n + 1], seq_lens [n], refs [n], item seq / first q [m]
    cu_q_ptr, lens_ptr, refs_ptr, item_seq_ptr, item_q0_ptr,
    out_ptr, sm_scale_log2,
    stride_qt, stride_qh, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh, stride_tb,
    stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE_SIZE: tl.constexpr, PAGED: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PREFETCH_PAGES: tl.constexpr,
    DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr, KV_FP8: tl.constexpr,
):
    """One program = query tokens q0 .. q0 + BLOCK_Q - 1 of one sequence, one KV head, its GROUP query heads.

    The KV head is the fastest grid axis and items come heaviest first, so the longest contexts start first (the
    programs of a long decode row would otherwise be the step's tail). PREFETCH_PAGES (0, 1, 2) loads page ids that
    many tiles ahead, so K/V addresses never wait on a table load of the same iteration. KV_FP8: K/V tiles are
    e4m3, converted to fp16 in registers (fp32 for fp32 q); k_scale folds into the score scale, v_scale into the
    final division."""
    kv_head = tl.program_id(0)
    item = tl.program_id(1)
    seq = tl.load(item_seq_ptr + item)
    q0 = tl.load(item_q0_ptr + item)  # first new token of the block, counted within the sequence's new tokens
    q_begin = tl.load(cu_q_ptr + seq)
    q_len = tl.load(cu_q_ptr + seq + 1) - q_begin
    seq_len = tl.load(lens_ptr + seq)
    ref = tl.load(refs_ptr + seq).to(tl.int64)  # block-table row (paged) or region start (contiguous)
    ctx = seq_len - q_len  # tokens cached before this step

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    qi = q0 + offs_m // GROUP  # [BLOCK_M] new-token index of each row
    m_mask = (offs_m < BLOCK_Q * GROUP) & (qi < q_len)
    q_rows = (q_begin + qi).to(tl.int64)
    q_heads = kv_head * GROUP + offs_m % GROUP  # [BLOCK_M]
    q = tl.load(q_ptr + q_rows[:, None] * stride_qt + q_heads[:, None] * stride_qh + offs_d[None, :],
                mask=m_mask[:, None], other=0.0)  # [BLOCK_M, HEAD_DIM]
    q, qk_scale = dot_query(q, sm_scale_log2, k_scale_ptr, KV_FP8, DOT_UPCAST)  # q as the dots take it
    pos = ctx + qi  # [BLOCK_M] position of each row's token; it sees keys 0..pos
    kv_end = ctx + tl.minimum(q0 + BLOCK_Q, q_len)  # the block's last token sees keys < kv_end
    k_base = k_ptr + kv_head * stride_kh
    v_base = v_ptr + kv_head * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max (log2 domain); key 0 is seen by every row
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    table_row = table_ptr + ref * stride_tb
    if PAGED:
        page = tile_pages(table_row, 0, kv_end, PAGE_SIZE, BLOCK_N)  # the first tile's pages
        page2 = tile_pages(table_row, BLOCK_N, kv_end, PAGE_SIZE, BLOCK_N)  # the second's (prefetch distance 2)
    for tile in range(0, kv_end, BLOCK_N):
        tok = tile + offs_n  # [BLOCK_N] logical key positions
        tok_mask = tok < kv_end
        if PAGED:
            if PREFETCH_PAGES == 2:  # page ids two tiles ahead: deeper pipelines never wait on the table
                cur = page
                page = page2
                page2 = tile_pages(table_row, tile + 2 * BLOCK_N, kv_end, PAGE_SIZE, BLOCK_N)
            elif PREFETCH_PAGES == 1:
                cur = page
                page = tile_pages(table_row, tile + BLOCK_N, kv_end, PAGE_SIZE, BLOCK_N)  # for the next tile
            else:
                cur = tile_pages(table_row, tile, kv_end, PAGE_SIZE, BLOCK_N)
            k_rows = cur * stride_kp + (tok % PAGE_SIZE) * stride_ks  # [BLOCK_N]
            v_rows = cur * stride_vp + (tok % PAGE_SIZE) * stride_vs
        else:
            k_rows = (ref + tok) * stride_ks
            v_rows = (ref + tok) * stride_vs
        k = tl.load(k_base + k_rows[:, None] + offs_d[None, :], mask=tok_mask[:, None], other=0.0)  # [N, D]
        if KV_FP8 or DOT_UPCAST:
            k = k.to(q.dtype)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N]
        s = tl.where((tok[None, :] <= pos[:, None]) & tok_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])  # [BLOCK_M, BLOCK_N]
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + v_rows[:, None] + offs_d[None, :], mask=tok_mask[:, None], other=0.0)  # [N, D]
        if KV_FP8 or DOT_UPCAST:
            v = v.to(q.dtype)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    if KV_FP8:
        acc = acc * tl.load(v_scale_ptr)
    out = acc / l_i[:, None]
    tl.store(out_ptr + q_rows[:, None] * stride_ot + q_heads[:, None] * stride_oh + offs_d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=m_mask[:, None])


MIXED_ENV = "PABENCH_MIXED_ATTENTION"  # "unified" (default where Triton runs) or "gather": the A/B switch


def unified_supported(impl: str, device: torch.device | str, head_dim: int) -> bool:
    """Do a backend's mixed steps run the unified kernel? Where its attention resolves to Triton and the head dim
    has a tiling, unless $PABENCH_MIXED_ATTENTION=gather (the older gather + FlashAttention-varlen path)."""
    choice = os.environ.get(MIXED_ENV, "unified")
    if choice not in ("unified", "gather"):
        raise ConfigError(f"{MIXED_ENV}={choice!r}: expected 'unified' or 'gather'")
    return choice == "unified" and resolve_impl(impl, torch.device(device)) == "triton" and (
        head_dim in SUPPORTED_HEAD_DIMS)


BLOCK_Q_SIZES = (4, 16)  # the query-block sizes `default_block_q` picks (each a compiled variant)


def default_block_q(max_q_len: int) -> int:
    """Query tokens per program: 4 when the step is mostly decode tokens (little wasted MMA work on rows of
    one token), 16 once chunks are long (each K/V tile then serves 16 tokens, a quarter of the re-reads)."""
    return BLOCK_Q_SIZES[1] if max_q_len >= 128 else BLOCK_Q_SIZES[0]


@dataclass(frozen=True)
class MixedSchedule:
    """One mixed step's sequences and work items, packed in one int32 device tensor (built once, read by every
    layer): cu_q [n + 1], seq_lens [n], refs [n] (table row or region start), item seq [m], item first q [m]."""

    packed: torch.Tensor  # int32, the five parts each padded to 16 bytes
    num_seqs: int
    num_items: int
    block_q: int
    max_q_len: int

    def __post_init__(self) -> None:
        n, m = self.num_seqs, self.num_items
        if n < 1 or m < n or self.packed.numel() != sum(_aligned(c) for c in self._counts()) or (
                self.packed.dtype != torch.int32):
            raise ConfigError(f"mixed schedule: {n} sequences and {m} items do not fit a packed tensor of "
                              f"{self.packed.numel()} {self.packed.dtype}")
        if self.block_q < 1 or self.block_q & (self.block_q - 1):
            raise ConfigError(f"mixed schedule: block_q must be a power of two, got {self.block_q}")

    def _counts(self) -> list[int]:
        n, m = self.num_seqs, self.num_items
        return [n + 1, n, n, m, m]

    def views(self) -> tuple[torch.Tensor, ...]:
        """(cu_q, seq_lens, refs, item_seq, item_q0) as views of `packed` (each 16-byte aligned)."""
        counts = self._counts()
        parts = self.packed.split([_aligned(c) for c in counts])
        return tuple(p[:c] for p, c in zip(parts, counts))


def mixed_schedule(cu_q: Sequence[int], seq_lens: Sequence[int], refs: Sequence[int],
                   device: torch.device | str, block_q: int | None = None,
                   heavy_first: bool = True) -> MixedSchedule:
    """The step's work items on the host (O(sequences + items), numpy), then one copy to `device`; `heavy_first`
    False keeps them in sequence order (the benchmark's A/B)."""
    cu = np.asarray(cu_q, dtype=np.int64)  # [n + 1]
    q_lens = np.diff(cu)  # [n]
    lens = np.asarray(seq_lens, dtype=np.int64)  # [n]
    n = len(q_lens)
    if n < 1 or len(lens) != n or len(refs) != n or cu[0] != 0 or (q_lens < 1).any() or (lens < q_lens).any():
        raise ConfigError(f"mixed schedule: need 1 <= q_len <= seq_len per sequence, got q offsets {list(cu_q)} "
                          f"and seq_lens {list(seq_lens)}")
    max_q = int(q_lens.max())
    block_q = default_block_q(max_q) if block_q is None else block_q
    blocks = -(-q_lens // block_q)  # [n] programs per sequence
    item_seq = np.repeat(np.arange(n), blocks)  # [m]
    first = np.cumsum(blocks) - blocks  # [n] first item of each sequence
    item_q0 = (np.arange(len(item_seq)) - np.repeat(first, blocks)) * block_q  # [m]
    # keys each item reads (its last token's context), heaviest first: the longest programs start first
    work = lens[item_seq] - q_lens[item_seq] + np.minimum(item_q0 + block_q, q_lens[item_seq])  # [m]
    order = np.argsort(-work, kind="stable") if heavy_first else np.arange(len(work))  # [m]
    parts = [cu, lens, np.asarray(refs, dtype=np.int64), item_seq[order], item_q0[order]]
    host = np.zeros(sum(_aligned(len(x)) for x in parts), dtype=np.int32)  # each part 16-byte aligned: a
    at = 0  # pointer's alignment is part of Triton's specialization key, so unaligned parts would recompile
    for x in parts:
        host[at:at + len(x)] = x
        at += _aligned(len(x))
    packed = torch.from_numpy(host).to(device, non_blocking=True)  # [sum of aligned part lengths]
    return MixedSchedule(packed, n, len(item_seq), block_q, max_q)


def _aligned(count: int) -> int:
    """int32 elements rounded up to a multiple of 4 (16 bytes)."""
    return -(-count // 4) * 4


@dataclass(frozen=True)
class MixedConfig:
    """Tiling of the unified kernel besides the schedule's query block: KV tile, warps, pipeline stages, page-id
    prefetch. None picks the default (`default_mixed_config`)."""

    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3
    prefetch_pages: int = 1  # tiles ahead whose page ids are loaded: 0, 1 or 2

    def __post_init__(self) -> None:
        for name in ("block_n", "num_warps"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ConfigError(f"MixedConfig.{name} must be a power of two, got {value}")
        if self.block_n < 16 or self.num_stages < 1 or self.prefetch_pages not in (0, 1, 2):
            raise ConfigError("MixedConfig needs block_n >= 16, num_stages >= 1 and prefetch_pages 0, 1 or 2")


def default_mixed_config(head_dim: int, dtype: torch.dtype) -> MixedConfig:
    """64-token KV tiles (32 for fp32 or head_dim 256: registers), 4 warps, 3 stages, page ids one tile ahead:
    the best or within 6% of the best of the tilings timed on the H200 (benchmarks/NOTES.md, eleventh session)."""
    return MixedConfig(block_n=64 if head_dim <= 128 and dtype != torch.float32 else 32)


def _launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor | None, sched: MixedSchedule,
            scale: float | None, config: MixedConfig | None, k_scale: torch.Tensor | None,
            v_scale: torch.Tensor | None) -> torch.Tensor:
    paged = table is not None
    fp8 = is_fp8(k.dtype)
    check_scales(k, k_scale, v_scale)
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = k.shape[-2]
    if head_dim not in SUPPORTED_HEAD_DIMS or num_q_heads % num_kv_heads or k.shape != v.shape:
        raise ConfigError(f"mixed attention: q {tuple(q.shape)} and k, v {tuple(k.shape)}, {tuple(v.shape)} do not "
                          f"fit (head_dim in {SUPPORTED_HEAD_DIMS}, query heads a multiple of KV heads)")
    if k.stride(-1) != 1 or v.stride(-1) != 1 or (q.dtype != k.dtype and not fp8) or v.dtype != k.dtype or (
            q.device != k.device):
        raise ConfigError("mixed attention: q, k, v must share dtype (or k, v be fp8) and device, head_dim contiguous")
    group = num_q_heads // num_kv_heads
    page_size = k.shape[1] if paged else 1
    if paged:
        check_page_size(page_size, "mixed attention's page_size")
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = torch.empty_like(q)  # [T, Hq, D]
    block_m = max(16, triton.next_power_of_2(sched.block_q * group))
    config = config or default_mixed_config(head_dim, q.dtype)
    if paged:  # k/v [num_pages, page_size, Hkv, D]
        strides = (k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), table.stride(0))
    else:  # k/v [num_slots, Hkv, D]
        strides = (0, k.stride(0), k.stride(1), 0, v.stride(0), v.stride(1), 0)
    scale = head_dim**-0.5 if scale is None else float(scale)
    _mixed_kernel[(num_kv_heads, sched.num_items)](
        q, k, v, table if paged else q, k_scale if fp8 else q, v_scale if fp8 else q, *sched.views(), out,
        scale * LOG2E,
        q.stride(0), q.stride(1), *strides, out.stride(0), out.stride(1),
        GROUP=group, HEAD_DIM=head_dim, PAGE_SIZE=page_size, PAGED=paged,
        BLOCK_Q=sched.block_q, BLOCK_M=block_m, BLOCK_N=config.block_n,
        PREFETCH_PAGES=int(config.prefetch_pages) if paged else 0,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        DOT_UPCAST=q.dtype == torch.bfloat16 and q.device.type != "cuda", KV_FP8=fp8,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


def paged_mixed_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor,
                          sched: MixedSchedule, *, scale: float | None = None, config: MixedConfig | None = None,
                          k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """A mixed step's attention over a paged cache, one Triton launch; sched.refs are rows of `table`.

    q [T, Hq, D] (sequences end to end, as cu_q says); k_cache/v_cache [num_pages, page_size, Hkv, D];
    table [rows, max_pages] int32. Every token's K/V, this step's included, must be in the cache. Returns
    [T, Hq, D]. An fp8 cache needs k_scale and v_scale (fp32 [1], fp8.py). Triton only (CUDA, or the CPU under
    TRITON_INTERPRET=1): the torch path gathers and calls SDPA.
    """
    resolve_impl("triton", q.device)
    if k_cache.dim() != 4 or table.dim() != 2:
        raise ConfigError(f"paged mixed attention needs k/v [pages, page, Hkv, D] and a 2-D table, got "
                          f"{tuple(k_cache.shape)} and {tuple(table.shape)}")
    return _launch(q, k_cache, v_cache, table, sched, scale, config, k_scale, v_scale)


def contiguous_mixed_attention(q: torch.Tensor, k_slab: torch.Tensor, v_slab: torch.Tensor, sched: MixedSchedule,
                               *, scale: float | None = None, config: MixedConfig | None = None,
                               k_scale: torch.Tensor | None = None,
                               v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The same over a slab `[num_slots, Hkv, D]`; sched.refs are region starts. Returns [T, Hq, D]."""
    resolve_impl("triton", q.device)
    if k_slab.dim() != 3:
        raise ConfigError(f"contiguous mixed attention needs k/v [slots, Hkv, D], got {tuple(k_slab.shape)}")
    return _launch(q, k_slab, v_slab, None, sched, scale, config, k_scale, v_scale)
