"""One decode batch stored every way the kernels read it: a packed contiguous slab, a shuffled page pool with a
page table, and a padded tensor for vendor SDPA. Random (never zero) values; unused slots hold noise, not zeros,
so a kernel that reads past a sequence's end cannot pass by accident. Used by `pabench kernels` and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class DecodeData:
    """One decode batch stored both ways: a packed contiguous slab and (per page size) a shuffled page pool."""

    lens: list[int]
    q: Any  # [batch, num_q_heads, head_dim]
    k_slab: Any  # [num_slots, num_kv_heads, head_dim]
    v_slab: Any
    seq_starts: Any  # int32 [batch]
    seq_lens: Any  # int32 [batch]
    generator: Any = field(repr=False, default=None)
    k_scale: Any = None  # fp32 [1] when the slab is fp8 (e4m3), else None
    v_scale: Any = None

    def scales(self) -> dict[str, Any]:
        """The kernels' k_scale/v_scale keyword arguments ({} for a float slab)."""
        return {} if self.k_scale is None else {"k_scale": self.k_scale, "v_scale": self.v_scale}


def make_decode_data(lens: list[int], num_q_heads: int, num_kv_heads: int, head_dim: int, dtype: Any, device: Any,
                     seed: int = 0) -> DecodeData:
    """Random (never zero) q and K/V; sequence b's tokens are slab rows seq_starts[b] ... (packed, in order)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    num_slots = sum(lens)
    starts = [0]
    for n in lens[:-1]:
        starts.append(starts[-1] + n)
    kw = dict(device=device, generator=gen)
    q = torch.randn(len(lens), num_q_heads, head_dim, **kw).to(dtype)  # [batch, Hq, D]
    k_slab = torch.randn(num_slots, num_kv_heads, head_dim, **kw).to(dtype)  # [num_slots, Hkv, D]
    v_slab = torch.randn(num_slots, num_kv_heads, head_dim, **kw).to(dtype)  # [num_slots, Hkv, D]
    as_int = dict(device=device, dtype=torch.int32)
    return DecodeData(lens, q, k_slab, v_slab, torch.tensor(starts, **as_int), torch.tensor(lens, **as_int), gen)


def to_fp8(data: DecodeData) -> DecodeData:
    """The same batch with K/V stored as fp8 e4m3 under per-tensor amax scales (kernels/fp8.py's format); q keeps
    its dtype, as the kernels read an fp8 cache with q's."""
    from pabench.kernels.fp8 import amax_scale, quantize

    k_scale, v_scale = amax_scale(data.k_slab), amax_scale(data.v_slab)  # fp32 [1] each
    return replace(data, k_slab=quantize(data.k_slab, k_scale), v_slab=quantize(data.v_slab, v_scale),
                   k_scale=k_scale, v_scale=v_scale)


def _bytes(t: Any) -> Any:
    """A byte view of an fp8 tensor (torch indexes no fp8 tensor on the CPU), the tensor itself otherwise."""
    import torch

    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def _noise_pair(data: DecodeData, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """K and V buffers of `shape` full of noise in the slab's dtype: never-written slots must not read as zeros."""
    import torch

    rand = dict(device=data.k_slab.device, generator=data.generator)
    k = torch.randn(shape, **rand).to(data.k_slab.dtype)  # [*shape]
    v = torch.randn(shape, **rand).to(data.k_slab.dtype)  # [*shape]
    return k, v


def paginate(data: DecodeData, page_size: int) -> tuple[Any, Any, Any]:
    """The same K/V in a page pool with a random permutation of pages; unused table entries hold garbage ids."""
    import torch

    device = data.k_slab.device
    num_used = [-(-n // page_size) for n in data.lens]
    num_pages, width = sum(num_used), max(num_used)
    perm = torch.randperm(num_pages, device=device, generator=data.generator)  # [num_pages]
    table = torch.randint(10**6, 2 * 10**6, (len(data.lens), width), device=device, dtype=torch.int32,
                          generator=data.generator)  # [batch, width] garbage past each sequence's pages
    shape = (num_pages, page_size) + tuple(data.k_slab.shape[1:])
    k_cache, v_cache = _noise_pair(data, shape)  # [num_pages, page_size, Hkv, D] each; tails stay noise
    first = 0
    for b, (start, n, used) in enumerate(zip(data.seq_starts.tolist(), data.lens, num_used)):
        pages = perm[first : first + used]  # [used]
        table[b, :used] = pages.to(torch.int32)  # [used]
        slots = (pages[:, None] * page_size + torch.arange(page_size, device=device)).flatten()[:n]  # [n]
        _bytes(k_cache).view(-1, *shape[2:])[slots] = _bytes(data.k_slab[start : start + n])  # [n, Hkv, D]
        _bytes(v_cache).view(-1, *shape[2:])[slots] = _bytes(data.v_slab[start : start + n])  # [n, Hkv, D]
        first += used
    return k_cache, v_cache, table


def pad_slab(data: DecodeData) -> tuple[Any, Any]:
    """The slab as a padded [batch, max_len, Hkv, D] tensor pair (what vendor SDPA wants); padding is noise."""
    batch, max_len = len(data.lens), max(data.lens)
    shape = (batch, max_len) + tuple(data.k_slab.shape[1:])
    k_pad, v_pad = _noise_pair(data, shape)  # [batch, max_len, Hkv, D] each; padding stays noise
    for b, (start, n) in enumerate(zip(data.seq_starts.tolist(), data.lens)):
        _bytes(k_pad)[b, :n] = _bytes(data.k_slab[start : start + n])  # [n, Hkv, D]
        _bytes(v_pad)[b, :n] = _bytes(data.v_slab[start : start + n])  # [n, Hkv, D]
    return k_pad, v_pad
