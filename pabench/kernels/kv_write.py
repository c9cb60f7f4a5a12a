"""KV write: scatter each new token's K and V to its slot of the cache (the slot mapping step of paging).

Works for a paged cache [num_pages, page_size, H, D] (slot = page_id * page_size + offset) and for a
contiguous slab [num_slots, H, D]; any strides, as long as head_dim is contiguous.

An fp8 cache stores clamp(x / scale, +-448) as e4m3 (fp8.py's format), converted in registers.
Reference: `pabench.kernels.reference.write_kv_reference` (index_copy_ / index_put).
Bytes moved: read k, v and write them once: 2 * num_tokens * num_kv_heads * head_dim * (elem_in + elem_cache).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pabench.errors import ConfigError
from pabench.kernels.checks import FLOAT_DTYPES, INDEX_DTYPES, resolve_impl
from pabench.kernels.fp8 import check_scales, is_fp8
from pabench.kernels.reference import write_kv_reference


@triton.jit
def _write_kv_kernel(
    # inputs: k, v [T, H, D]; slots [T]; caches as (page, offset, head, dim) with head_dim contiguous
    k_ptr, v_ptr, slot_ptr, k_cache_ptr, v_cache_ptr, k_scale_ptr, v_scale_ptr,
    # strides, in elements
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_kcp, stride_kcs, stride_kch, stride_vcp, stride_vcs, stride_vch,
    # compile-time shape
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE_SIZE: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, KV_FP8: tl.constexpr,
):
    """One program = one token: copy its [H, D] keys and values to slot `slots[token]`."""
    token = tl.program_id(0)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    page = slot // PAGE_SIZE
    offset = slot % PAGE_SIZE
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_h[:, None] < NUM_HEADS) & (offs_d[None, :] < HEAD_DIM)  # [BLOCK_H, BLOCK_D]
    src = offs_h[:, None] * stride_kh + offs_d[None, :]
    k = tl.load(k_ptr + token * stride_kt + src, mask=mask)  # [BLOCK_H, BLOCK_D]
    if KV_FP8:
        k = tl.clamp(k.to(tl.float32) / tl.load(k_scale_ptr), -448.0, 448.0)  # FP8_MAX
    dst = page * stride_kcp + offset * stride_kcs + offs_h[:, None] * stride_kch + offs_d[None, :]
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    src = offs_h[:, None] * stride_vh + offs_d[None, :]
    v = tl.load(v_ptr + token * stride_vt + src, mask=mask)
    if KV_FP8:
        v = tl.clamp(v.to(tl.float32) / tl.load(v_scale_ptr), -448.0, 448.0)
    dst = page * stride_vcp + offset * stride_vcs + offs_h[:, None] * stride_vch + offs_d[None, :]
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def _check_write(k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor, k_scale: torch.Tensor | None, v_scale: torch.Tensor | None) -> None:
    """Shapes, dtypes and devices of a KV write."""
    if k_cache.dim() not in (3, 4) or k_cache.shape != v_cache.shape:
        raise ConfigError(f"caches must both be [num_pages, page_size, H, D] or [num_slots, H, D], "
                          f"got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    if k.dim() != 3 or k.shape != v.shape or k.shape[1:] != k_cache.shape[-2:]:
        raise ConfigError(f"k, v must be [num_tokens, H={k_cache.shape[-2]}, D={k_cache.shape[-1]}], "
                          f"got {tuple(k.shape)} and {tuple(v.shape)}")
    if slot_mapping.shape != (k.shape[0],) or slot_mapping.dtype not in INDEX_DTYPES:
        raise ConfigError(f"slot_mapping must be int32/int64 [num_tokens={k.shape[0]}], "
                          f"got {slot_mapping.dtype} {tuple(slot_mapping.shape)}")
    if len({t.device for t in (k_cache, v_cache, slot_mapping, k, v)}) > 1:
        raise ConfigError("k_cache, v_cache, slot_mapping, k and v must be on one device")
    cache_ok = k_cache.dtype in FLOAT_DTYPES or is_fp8(k_cache.dtype)
    if not cache_ok or v_cache.dtype != k_cache.dtype or k.dtype not in FLOAT_DTYPES or v.dtype != k.dtype:
        raise ConfigError(f"cache dtypes must match and be floating or fp8, k/v floating, got {k_cache.dtype}, "
                          f"{v_cache.dtype}, {k.dtype}, {v.dtype}")
    check_scales(k_cache, k_scale, v_scale)


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor, k: torch.Tensor,
             v: torch.Tensor, *, impl: str = "auto", k_scale: torch.Tensor | None = None,
             v_scale: torch.Tensor | None = None) -> None:
    """Write k, v [num_tokens, H, D] into the caches at slot_mapping [num_tokens], in place.

    Slots must lie in [0, num_slots): they are not read back to check (that would sync a GPU). An fp8 cache needs
    k_scale and v_scale (fp32 [1]).
    """
    _check_write(k_cache, v_cache, slot_mapping, k, v, k_scale, v_scale)
    if k.shape[0] == 0:
        return
    if resolve_impl(impl, k.device) == "torch":
        write_kv_reference(k_cache, v_cache, slot_mapping, k, v, k_scale, v_scale)
        return
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ConfigError("triton write_kv needs the caches' head_dim axis contiguous (stride 1)")
    k = k if k.stride(-1) == 1 else k.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    num_tokens, num_heads, head_dim = k.shape
    if k_cache.dim() == 4:  # [num_pages, page_size, H, D]
        page_size = k_cache.shape[1]
        kc = (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2))
        vc = (v_cache.stride(0), v_cache.stride(1), v_cache.stride(2))
    else:  # [num_slots, H, D]: a page of one slot
        page_size = 1
        kc = (k_cache.stride(0), 0, k_cache.stride(1))
        vc = (v_cache.stride(0), 0, v_cache.stride(1))
    fp8 = is_fp8(k_cache.dtype)
    _write_kv_kernel[(num_tokens,)](
        k, v, slot_mapping, k_cache, v_cache, k_scale if fp8 else slot_mapping, v_scale if fp8 else slot_mapping,
        stride_kt=k.stride(0), stride_kh=k.stride(1), stride_vt=v.stride(0), stride_vh=v.stride(1),
        stride_kcp=kc[0], stride_kcs=kc[1], stride_kch=kc[2], stride_vcp=vc[0], stride_vcs=vc[1], stride_vch=vc[2],
        NUM_HEADS=num_heads, HEAD_DIM=head_dim, PAGE_SIZE=page_size,
        BLOCK_H=triton.next_power_of_2(num_heads), BLOCK_D=triton.next_power_of_2(head_dim), KV_FP8=fp8,
        num_warps=4,
    )
