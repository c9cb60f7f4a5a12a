"""Split-K ("flash-decoding") Triton decode attention over a paged cache or a contiguous slab.

One kernel serves both layouts (`PAGED` constexpr: page-table lookup vs direct addressing), so their time ratio
isolates what the page-table indirection costs. The work is cut into fixed-size KV chunks spread over all sequences
(not one program per sequence): the chunk size is computed on device from sum(seq_lens), so a batch of very
different lengths still gives every SM about the same work.

Reference: `pabench.kernels.reference.paged_decode_reference` (gather, then fp32 softmax). Bytes moved:
2 * sum(seq_lens) * num_kv_heads * head_dim * elem for K and V, plus fp32 partials (num_chunks * num_q_heads *
(head_dim + 1) * 4, written once and read once, mostly from L2). Measured bandwidth: benchmarks/KERNEL_NOTES.md.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pabench.errors import ConfigError
from pabench.kernels.checks import (DecodeShape, check_contiguous_values, check_decode_inputs, check_paged_values,
                                    check_triton_decode, resolve_impl)
from pabench.kernels.batched import contiguous_decode_batched, paged_decode_batched
from pabench.kernels.fp8 import check_scales, dot_query, is_fp8
from pabench.kernels.tiling import DecodeConfig, block_b, choose_decode_config, num_sms

LOG2E = 1.4426950408889634
POISON_SCRATCH = False  # tests set True: fill the fp32 partials with NaN so a chunk left unwritten shows up


@triton.jit
def _chunk_schedule(lens_ptr, batch, target_chunks, min_chunk, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """Per-sequence chunk counts and their running sum; every program recomputes it (B lanes, no launch).
    min_chunk (a multiple of BLOCK_N) floors the chunk, so small batches do not cut into programs too short; the
    floor never leaves fewer than target_chunks / 2 chunks, so a small total still spreads over every SM."""
    offs_b = tl.arange(0, BLOCK_B)
    lens = tl.load(lens_ptr + offs_b, mask=offs_b < batch, other=0)  # [BLOCK_B]
    total = tl.sum(lens, axis=0)
    chunk = tl.cdiv(tl.cdiv(total, target_chunks), BLOCK_N) * BLOCK_N  # multiple of BLOCK_N
    cap = tl.cdiv(tl.cdiv(total, tl.maximum(target_chunks // 2, 1)), BLOCK_N) * BLOCK_N
    chunk = tl.maximum(chunk, tl.minimum(min_chunk, cap))
    num_chunks = tl.cdiv(lens, chunk)  # [BLOCK_B], 0 on padding lanes
    ends = tl.cumsum(num_chunks, axis=0)  # [BLOCK_B] first chunk id past each sequence
    return offs_b, chunk, num_chunks, ends


@triton.jit
def tile_pages(table_row_ptr, tile, end, PAGE_SIZE: tl.constexpr, BLOCK_N: tl.constexpr):
    """Physical page ids of the tile starting at logical position `tile` (0 past the end of the sequence)."""
    if PAGE_SIZE >= BLOCK_N:  # tiles start at multiples of BLOCK_N, so the whole tile lies in one page
        page = tl.load(table_row_ptr + tile // PAGE_SIZE, mask=tile < end, other=0)  # scalar
    else:
        tok = tile + tl.arange(0, BLOCK_N)
        page = tl.load(table_row_ptr + tok // PAGE_SIZE, mask=tok < end, other=0)  # [BLOCK_N]
    return page.to(tl.int64)


@triton.jit
def _decode_chunk_kernel(
    # inputs: q [B, Hq, D]; k/v cache [P, S, Hkv, D] (paged) or [num_slots, Hkv, D]; table [B, pages] or starts [B];
    # k/v scales [1] fp32 (read only when KV_FP8)
    q_ptr, k_ptr, v_ptr, table_ptr, lens_ptr, k_scale_ptr, v_scale_ptr,
    # outputs: fp32 partials, normalized, per (chunk, q head): out [C, Hq, D], log2-sum-exp lse [C, Hq]
    part_out_ptr, part_lse_ptr,
    batch, target_chunks, min_chunk, sm_scale_log2,  # runtime scalars
    # strides, in elements (head_dim is contiguous everywhere)
    stride_qb, stride_qh, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh, stride_tb,
    stride_oc, stride_oh, stride_lc,
    # compile-time shape and tiling
    NUM_KV_HEADS: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE_SIZE: tl.constexpr,
    PAGED: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
    PREFETCH_PAGES: tl.constexpr, DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr, KV_FP8: tl.constexpr,
):
    """One program = one KV chunk of one sequence for one KV head and all GROUP query heads sharing it.

    PREFETCH_PAGES loads the next tile's page ids one iteration ahead, so the K/V addresses of a tile never wait on
    a load of the same iteration (the software pipeliner then treats paged like direct addressing). KV_FP8: K/V
    tiles are e4m3, converted to fp16 (fp32 for fp32 q) in registers; the per-tensor scales fold into the score
    scale (K) and the final normalisation (V), so dequantising costs no multiply per element."""
    pid = tl.program_id(0)
    chunk_id = pid // NUM_KV_HEADS
    kv_head = pid % NUM_KV_HEADS
    offs_b, chunk, num_chunks, ends = _chunk_schedule(lens_ptr, batch, target_chunks, min_chunk, BLOCK_B, BLOCK_N)
    if chunk_id < tl.sum(num_chunks, axis=0):  # the grid is an upper bound; surplus programs do nothing
        seq = tl.sum((ends <= chunk_id).to(tl.int32), axis=0)  # the sequence owning this chunk
        first_chunk = tl.sum(tl.where(offs_b == seq, ends - num_chunks, 0), axis=0)
        seq_len = tl.load(lens_ptr + seq)
        start = (chunk_id - first_chunk) * chunk
        end = tl.minimum(start + chunk, seq_len)

        offs_h = tl.arange(0, BLOCK_H)  # query heads of the group, padded to >= 16 rows for tl.dot
        offs_d = tl.arange(0, HEAD_DIM)
        offs_n = tl.arange(0, BLOCK_N)
        q_heads = kv_head * GROUP + offs_h  # [BLOCK_H]
        h_mask = offs_h < GROUP
        q = tl.load(q_ptr + seq * stride_qb + q_heads[:, None] * stride_qh + offs_d[None, :],
                    mask=h_mask[:, None], other=0.0)  # [BLOCK_H, HEAD_DIM]
        q, qk_scale = dot_query(q, sm_scale_log2, k_scale_ptr, KV_FP8, DOT_UPCAST)  # q as the dots take it
        k_base = k_ptr + kv_head * stride_kh
        v_base = v_ptr + kv_head * stride_vh
        if PAGED:
            table_row = table_ptr + seq * stride_tb
            page = tile_pages(table_row, start, end, PAGE_SIZE, BLOCK_N)  # first tile's pages
        else:
            seq_start = tl.load(table_ptr + seq).to(tl.int64)

        m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)  # running max (log2 domain)
        l_i = tl.zeros([BLOCK_H], tl.float32)  # running sum of exp2
        acc = tl.zeros([BLOCK_H, HEAD_DIM], tl.float32)
        for tile in range(start, end, BLOCK_N):
            tok = tile + offs_n  # [BLOCK_N] logical positions
            tok_mask = tok < end
            if PAGED:
                if PREFETCH_PAGES:
                    cur = page
                    page = tile_pages(table_row, tile + BLOCK_N, end, PAGE_SIZE, BLOCK_N)  # for the next tile
                else:
                    cur = tile_pages(table_row, tile, end, PAGE_SIZE, BLOCK_N)
                slot_in_page = tok % PAGE_SIZE
                k_rows = cur * stride_kp + slot_in_page * stride_ks  # [BLOCK_N]
                v_rows = cur * stride_vp + slot_in_page * stride_vs
            else:
                k_rows = (seq_start + tok) * stride_ks
                v_rows = (seq_start + tok) * stride_vs
            k = tl.load(k_base + k_rows[:, None] + offs_d[None, :], mask=tok_mask[:, None], other=0.0)  # [N, D]
            if KV_FP8 or DOT_UPCAST:
                k = k.to(q.dtype)
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [BLOCK_H, BLOCK_N]
            s = tl.where(tok_mask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])  # [BLOCK_H, BLOCK_N]
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_base + v_rows[:, None] + offs_d[None, :], mask=tok_mask[:, None], other=0.0)  # [N, D]
            if KV_FP8 or DOT_UPCAST:
                v = v.to(q.dtype)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m_i = m_new

        if KV_FP8:
            acc = acc * tl.load(v_scale_ptr)
        out_ptrs = part_out_ptr + chunk_id * stride_oc + q_heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(out_ptrs, acc / l_i[:, None], mask=h_mask[:, None])
        tl.store(part_lse_ptr + chunk_id * stride_lc + q_heads, m_i + tl.log2(l_i), mask=h_mask)


@triton.jit
def _merge_kernel(
    # inputs: partials from _decode_chunk_kernel, seq_lens [B]; output out [B, Hq, D] in q's dtype
    part_out_ptr, part_lse_ptr, lens_ptr, out_ptr,
    batch, target_chunks, min_chunk,
    stride_oc, stride_oh, stride_lc, stride_ob, stride_oh_final,
    HEAD_DIM: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """One program = one (sequence, query head): softmax-weighted sum of its chunks' partial outputs."""
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_b, chunk, num_chunks, ends = _chunk_schedule(lens_ptr, batch, target_chunks, min_chunk, BLOCK_B, BLOCK_N)
    n = tl.sum(tl.where(offs_b == seq, num_chunks, 0), axis=0)
    first = tl.sum(tl.where(offs_b == seq, ends, 0), axis=0) - n
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, HEAD_DIM)
    m = float("-inf")
    total = 0.0
    acc = tl.zeros([HEAD_DIM], tl.float32)
    for c0 in range(0, n, BLOCK_C):
        c = first + c0 + offs_c  # [BLOCK_C] chunk ids
        c_mask = c0 + offs_c < n
        lse = tl.load(part_lse_ptr + c * stride_lc + head, mask=c_mask, other=float("-inf"))  # [BLOCK_C]
        o = tl.load(part_out_ptr + c[:, None] * stride_oc + head * stride_oh + offs_d[None, :],
                    mask=c_mask[:, None], other=0.0)  # [BLOCK_C, HEAD_DIM]
        m_new = tl.maximum(m, tl.max(lse, axis=0))
        alpha = tl.exp2(m - m_new)
        w = tl.exp2(lse - m_new)  # [BLOCK_C], 0 on masked lanes
        total = total * alpha + tl.sum(w, axis=0)
        acc = acc * alpha + tl.sum(w[:, None] * o, axis=0)
        m = m_new
    out = acc / total
    tl.store(out_ptr + seq * stride_ob + head * stride_oh_final + offs_d, out.to(out_ptr.dtype.element_ty))


CHUNK_KERNEL = _decode_chunk_kernel  # the Triton function itself, for tools that compile it offline (PTX census)


def num_compiled() -> int:
    """Decode-kernel binaries compiled in this process (chunk + merge): a test that a warm-up left none to compile."""
    total = 0
    for fn in (_decode_chunk_kernel, _merge_kernel):
        caches = getattr(fn, "device_caches", None)
        total += (sum(len(entry[0]) for entry in caches.values()) if caches is not None
                  else sum(len(c) for c in fn.cache.values()))
    return total


def _launch_decode(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor, seq_lens: torch.Tensor,
    shape: DecodeShape, scale: float, paged: bool, config: DecodeConfig | None, out: torch.Tensor | None,
    kv_scales: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Allocate partials, launch the chunk kernel over an upper-bound grid, then the merge kernel."""
    config = config or choose_decode_config(shape, q.dtype, kv_fp8=kv_scales is not None, paged=paged)
    q = q if q.stride(-1) == 1 else q.contiguous()
    target_chunks = max(1, -(-num_sms(q.device) * config.items_per_sm // shape.num_kv_heads))
    min_chunk = config.min_tiles * config.block_n  # tokens; both kernels must derive the same chunk schedule
    max_chunks = target_chunks + shape.batch  # sum(ceil(len/chunk)) <= sum(len)/chunk + batch
    alloc = torch.full if POISON_SCRATCH else torch.empty
    fill = (float("nan"),) if POISON_SCRATCH else ()
    part_out = alloc((max_chunks, shape.num_q_heads, shape.head_dim), *fill, device=q.device, dtype=torch.float32)
    part_lse = alloc((max_chunks, shape.num_q_heads), *fill, device=q.device, dtype=torch.float32)
    out = torch.empty_like(q) if out is None else out  # [batch, num_q_heads, head_dim]
    lanes = block_b(shape.batch)
    if paged:  # k/v [num_pages, page_size, Hkv, D]
        stride_kp, stride_ks, stride_kh = k.stride(0), k.stride(1), k.stride(2)
        stride_vp, stride_vs, stride_vh = v.stride(0), v.stride(1), v.stride(2)
        stride_tb = table.stride(0)
    else:  # k/v [num_slots, Hkv, D]
        stride_kp, stride_ks, stride_kh = 0, k.stride(0), k.stride(1)
        stride_vp, stride_vs, stride_vh = 0, v.stride(0), v.stride(1)
        stride_tb = 0
    k_scale, v_scale = kv_scales or (seq_lens, seq_lens)  # unread placeholders unless the cache is fp8
    _decode_chunk_kernel[(max_chunks * shape.num_kv_heads,)](
        q, k, v, table, seq_lens, k_scale, v_scale, part_out, part_lse,
        shape.batch, target_chunks, min_chunk, scale * LOG2E,
        stride_qb=q.stride(0), stride_qh=q.stride(1),
        stride_kp=stride_kp, stride_ks=stride_ks, stride_kh=stride_kh,
        stride_vp=stride_vp, stride_vs=stride_vs, stride_vh=stride_vh, stride_tb=stride_tb,
        stride_oc=part_out.stride(0), stride_oh=part_out.stride(1), stride_lc=part_lse.stride(0),
        NUM_KV_HEADS=shape.num_kv_heads, GROUP=shape.group, HEAD_DIM=shape.head_dim, PAGE_SIZE=shape.page_size,
        PAGED=paged, PREFETCH_PAGES=config.prefetch_pages, BLOCK_B=lanes,
        BLOCK_H=max(16, triton.next_power_of_2(shape.group)),
        BLOCK_N=config.block_n, DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        DOT_UPCAST=q.dtype == torch.bfloat16 and q.device.type != "cuda", KV_FP8=kv_scales is not None,
        num_warps=config.num_warps, num_stages=config.num_stages, **config.launch_options(),
    )
    _merge_kernel[(shape.batch, shape.num_q_heads)](
        part_out, part_lse, seq_lens, out,
        shape.batch, target_chunks, min_chunk,
        stride_oc=part_out.stride(0), stride_oh=part_out.stride(1), stride_lc=part_lse.stride(0),
        stride_ob=out.stride(0), stride_oh_final=out.stride(1),
        HEAD_DIM=shape.head_dim, BLOCK_B=lanes, BLOCK_N=config.block_n, BLOCK_C=config.merge_block,
        num_warps=config.merge_warps,
    )
    return out


def _check_out(out: torch.Tensor | None, q: torch.Tensor) -> None:
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype or out.device != q.device):
        raise ConfigError(f"out must match q ({tuple(q.shape)}, {q.dtype}, {q.device}), got "
                          f"{tuple(out.shape)}, {out.dtype}, {out.device}")


def _into(out: torch.Tensor | None, result: torch.Tensor) -> torch.Tensor:
    """Copy a torch-path result into `out` when the caller gave one."""
    if out is None:
        return result
    out.copy_(result)
    return out


def _kv_scales(cache: torch.Tensor, k_scale: torch.Tensor | None,
               v_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The scales the kernel reads, or None for a float cache (KV_FP8 off)."""
    return (k_scale, v_scale) if is_fp8(cache.dtype) else None


def _triton_allowed(impl: str, shape: DecodeShape, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Resolved impl "triton" runs Triton; "auto" also falls back to torch where the kernel has limits."""
    try:
        check_triton_decode(shape, k, v)
    except ConfigError:
        if impl == "auto":
            return False
        raise
    return True


def paged_decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor, seq_lens: torch.Tensor,
    *, scale: float | None = None, impl: str = "auto", check_values: bool = True, config: DecodeConfig | None = None,
    out: torch.Tensor | None = None, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode attention, one new token per sequence, over a paged KV cache. Returns [batch, num_q_heads, head_dim].

    impl: "triton" (CUDA, or the CPU under TRITON_INTERPRET=1), "torch" (the batched torch path of `batched.py`,
    the engine's CPU path), "auto" (Triton on CUDA where the kernel takes the shape, else torch). The float
    references in `reference.py` are the oracle only. check_values=False skips the length/page-id checks (they
    sync a GPU), and on the torch path the shape checks too (a backend's tensors are built consistent); config
    overrides the tiling heuristic; out (like q) receives the result instead of a fresh tensor. An fp8 (e4m3)
    cache needs k_scale and v_scale (fp32 [1], see fp8.py); a float cache has q's dtype and no scales.
    """
    # q [batch, Hq, D]; k_cache/v_cache [num_pages, page_size, Hkv, D]; page_table [batch, pages]; seq_lens [batch]
    resolved = resolve_impl(impl, q.device)
    if not check_values and out is None and resolved == "torch":  # a backend's CPU hot path
        return paged_decode_batched(q, k_cache, v_cache, page_table, seq_lens, scale, k_scale, v_scale)
    shape = check_decode_inputs(q, k_cache, v_cache, page_table, seq_lens, paged=True)
    check_scales(k_cache, k_scale, v_scale)
    _check_out(out, q)
    if check_values:
        check_paged_values(seq_lens, page_table, shape.page_size, k_cache.shape[0])
    scale = shape.head_dim**-0.5 if scale is None else float(scale)
    if resolved == "triton" and _triton_allowed(impl, shape, k_cache, v_cache):
        return _launch_decode(q, k_cache, v_cache, page_table, seq_lens, shape, scale, True, config, out,
                              _kv_scales(k_cache, k_scale, v_scale))
    return _into(out, paged_decode_batched(q, k_cache, v_cache, page_table, seq_lens, scale, k_scale, v_scale))


def contiguous_decode_attention(
    q: torch.Tensor, k_slab: torch.Tensor, v_slab: torch.Tensor, seq_starts: torch.Tensor, seq_lens: torch.Tensor,
    *, scale: float | None = None, impl: str = "auto", check_values: bool = True, config: DecodeConfig | None = None,
    out: torch.Tensor | None = None, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode attention where sequence b's tokens are rows seq_starts[b] .. seq_starts[b] + seq_lens[b] - 1.

    Keyword arguments as in `paged_decode_attention`.
    """
    # q [batch, Hq, D]; k_slab/v_slab [num_slots, Hkv, D]; seq_starts, seq_lens [batch]
    resolved = resolve_impl(impl, q.device)
    if not check_values and out is None and resolved == "torch":  # a backend's CPU hot path
        return contiguous_decode_batched(q, k_slab, v_slab, seq_starts, seq_lens, scale, k_scale, v_scale)
    shape = check_decode_inputs(q, k_slab, v_slab, seq_starts, seq_lens, paged=False)
    check_scales(k_slab, k_scale, v_scale)
    _check_out(out, q)
    if check_values:
        check_contiguous_values(seq_lens, seq_starts, k_slab.shape[0])
    scale = shape.head_dim**-0.5 if scale is None else float(scale)
    if resolved == "triton" and _triton_allowed(impl, shape, k_slab, v_slab):
        return _launch_decode(q, k_slab, v_slab, seq_starts, seq_lens, shape, scale, False, config, out,
                              _kv_scales(k_slab, k_scale, v_scale))
    return _into(out, contiguous_decode_batched(q, k_slab, v_slab, seq_starts, seq_lens, scale, k_scale, v_scale))


__all__ = ["contiguous_decode_attention", "paged_decode_attention"]
