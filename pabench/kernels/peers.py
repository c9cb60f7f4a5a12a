"""The decode paths the Triton kernel is measured against in `pabench kernels` (none shares code with Triton):
torch SDPA over a padded contiguous cache (the vendor row), gather + SDPA (the naive paged way), torch
FlexAttention over the page pool, and FlashInfer's paged decode when it is importable.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Sequence

import torch

from pabench.errors import ConfigError
from pabench.kernels.prefill import SDPA_BACKENDS, backend_enum, sdpa_gqa


_PINNED: dict[tuple, str] = {}  # (device type, dtype, masked, shapes) -> the SDPA backend that ran


def _lengths_list(seq_lens: torch.Tensor | Sequence[int]) -> list[int]:
    return seq_lens.tolist() if isinstance(seq_lens, torch.Tensor) else [int(n) for n in seq_lens]


def decode_padding_mask(seq_lens: torch.Tensor | Sequence[int], max_len: int,
                        device: torch.device) -> torch.Tensor | None:
    """Boolean mask [batch, 1, 1, max_len] hiding a padded cache's padding; None when every length is max_len."""
    lens = _lengths_list(seq_lens)
    if all(n == max_len for n in lens):
        return None
    lens_t = torch.tensor(lens, device=device)  # [batch]
    return (torch.arange(max_len, device=device)[None, :] < lens_t[:, None])[:, None, None, :]  # [b, 1, 1, L]


def sdpa_decode_attention(q: torch.Tensor, k_padded: torch.Tensor, v_padded: torch.Tensor,
                          seq_lens: torch.Tensor | Sequence[int], *,
                          mask: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
    """Vendor decode over a padded contiguous cache [batch, max_len, Hkv, D]; returns (out [batch, Hq, D], backend).

    Uniform lengths equal to max_len run unmasked; otherwise a boolean mask hides the padding (pass `mask` from
    `decode_padding_mask` to build it once: a call that builds none copies nothing host-to-device, so a CUDA
    graph can capture it). The first SDPA backend that accepts the call (cudnn, flash, efficient, math) is
    pinned with `sdpa_kernel` and named. seq_lens may be a CPU tensor or list (a CUDA tensor costs one sync).
    """
    from torch.nn.attention import sdpa_kernel

    if q.dim() != 3 or k_padded.dim() != 4 or k_padded.shape != v_padded.shape:
        raise ConfigError(f"need q [batch, Hq, D] and k/v_padded [batch, max_len, Hkv, D], "
                          f"got {tuple(q.shape)}, {tuple(k_padded.shape)}, {tuple(v_padded.shape)}")
    batch, max_len = k_padded.shape[:2]
    lens = _lengths_list(seq_lens)
    if len(lens) != batch or min(lens) < 1 or max(lens) > max_len:
        raise ConfigError(f"seq_lens must hold {batch} lengths in [1, {max_len}]")
    qt = q.unsqueeze(2)  # [batch, Hq, 1, D]
    kt = k_padded.transpose(1, 2)  # [batch, Hkv, max_len, D]
    vt = v_padded.transpose(1, 2)  # [batch, Hkv, max_len, D]
    if mask is None:
        mask = decode_padding_mask(lens, max_len, q.device)  # [batch, 1, 1, max_len] or None
    elif tuple(mask.shape) != (batch, 1, 1, max_len) or mask.dtype != torch.bool:
        raise ConfigError(f"mask must be bool [{batch}, 1, 1, {max_len}], got {mask.dtype} {tuple(mask.shape)}")
    key = (q.device.type, q.dtype, mask is not None, tuple(q.shape), tuple(k_padded.shape))
    names = [_PINNED[key]] if key in _PINNED else list(SDPA_BACKENDS)
    errors = []
    for name in names:
        try:
            with warnings.catch_warnings(), sdpa_kernel([backend_enum(name)]):
                warnings.simplefilter("ignore")
                out = sdpa_gqa(qt, kt, vt, mask, False, None)  # [batch, Hq, 1, D]
        except RuntimeError as err:
            errors.append(f"{name}: {str(err).splitlines()[0]}")
            continue
        _PINNED[key] = name
        return out[:, :, 0], name
    raise ConfigError("no SDPA backend accepted the decode call: " + "; ".join(errors))


def pages_in_use(lens: torch.Tensor, page_size: int, pages_per_seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pages each sequence uses [batch], which table columns those are [batch, pages_per_seq] bool).

    Table entries past a sequence's pages may hold garbage; every peer masks them with this.
    """
    num_used = (lens + page_size - 1) // page_size  # [batch]
    used = torch.arange(pages_per_seq, device=lens.device)[None, :] < num_used[:, None]  # [batch, pages_per_seq]
    return num_used, used


def gather_paged(cache: torch.Tensor, page_table: torch.Tensor) -> torch.Tensor:
    """Copy every sequence's pages into a padded contiguous tensor [batch, pages_per_seq * page_size, H, D]."""
    pages = cache[page_table.long()]  # [batch, pages_per_seq, page_size, H, D]
    return pages.flatten(1, 2)  # [batch, pages_per_seq * page_size, H, D]


def gather_sdpa_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                       seq_lens: torch.Tensor | Sequence[int], *,
                       mask: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
    """The naive paged path: gather pages into a padded copy, then SDPA. Moves the KV three times, not once.

    Table entries past a sequence's pages may hold garbage: they are replaced by page 0 before the gather.
    `mask` (from `decode_padding_mask` over pages_per_seq * page_size) is built once by callers that repeat the
    call; with it the call copies nothing host-to-device, so a CUDA graph can capture it.
    """
    page_size = k_cache.shape[1]
    max_len = page_table.shape[1] * page_size
    if mask is None:
        mask = decode_padding_mask(seq_lens, max_len, page_table.device)  # [batch, 1, 1, max_len] or None
    table = page_table
    if mask is not None:  # some sequence ends before its last table column: clean the columns past its pages
        lens = mask[:, 0, 0, :].sum(dim=-1)  # [batch]
        _, used = pages_in_use(lens, page_size, page_table.shape[1])  # [batch, pages_per_seq]
        table = torch.where(used, page_table, 0)  # [batch, pages_per_seq]
    return sdpa_decode_attention(q, gather_paged(k_cache, table), gather_paged(v_cache, table), seq_lens,
                                 mask=mask)


def flex_available() -> bool:
    """True when torch ships FlexAttention."""
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=4)
def _flex_fn(compiled: bool) -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if compiled else flex_attention


def flex_paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                      seq_lens: torch.Tensor, *, compiled: bool | None = None) -> Callable[[], torch.Tensor]:
    """Prepare FlexAttention over the physical page pool; returns a zero-argument callable that runs it.

    The pool is one long KV sequence [1, Hkv, num_pages * page_size, D] shared by a batch of one-token
    queries; each query's block mask lists its own pages (KV block = one page), and the mask_mod hides
    other sequences' tokens and the unused tail of the last page. Needs page_size >= 16.
    """
    from torch.nn.attention.flex_attention import BlockMask

    num_pages, page_size, num_kv_heads, head_dim = k_cache.shape
    batch, num_q_heads, _ = q.shape
    if page_size < 16:
        raise ConfigError(f"the FlexAttention paged path needs page_size >= 16 (one page per KV block), "
                          f"got {page_size}")
    compiled = q.device.type == "cuda" if compiled is None else compiled
    device = q.device
    lens = seq_lens.to(device=device, dtype=torch.int64)  # [batch]
    table = page_table.to(device=device, dtype=torch.int32)  # [batch, pages_per_seq]
    num_used, used = pages_in_use(lens, page_size, table.shape[1])  # [batch], [batch, pages_per_seq]
    cols = torch.arange(table.shape[1], device=device)  # [pages_per_seq]
    owner = torch.full((num_pages,), batch, device=device, dtype=torch.int64)  # batch = "no sequence"
    logical = torch.zeros(num_pages, device=device, dtype=torch.int64)  # logical page index within its owner
    seq_ids = torch.arange(batch, device=device)[:, None].expand_as(table)  # [batch, pages_per_seq]
    owner[table[used].long()] = seq_ids[used]
    logical[table[used].long()] = cols[None, :].expand_as(table)[used]

    def mask_mod(b, h, q_idx, kv_idx):
        page = (kv_idx // page_size).clamp(0, num_pages - 1)  # provably in range: no device-side bounds assert
        return (owner[page] == b) & (logical[page] * page_size + kv_idx % page_size < lens[b])

    kv_num_blocks = num_used.to(torch.int32)[:, None, None]  # [batch, 1, 1]
    # one column per physical page: some torch versions size the block mask from the indices' last dim
    kv_indices = torch.zeros(batch, 1, 1, num_pages, device=device, dtype=torch.int32)  # [batch, 1, 1, num_pages]
    kv_indices[:, 0, 0, : table.shape[1]] = torch.where(used, table, 0)
    block_mask = BlockMask.from_kv_blocks(kv_num_blocks, kv_indices, BLOCK_SIZE=(128, page_size), mask_mod=mask_mod,
                                          seq_lengths=(1, num_pages * page_size))
    qf = q.unsqueeze(2)  # [batch, Hq, 1, D]
    kf = k_cache.flatten(0, 1).transpose(0, 1).unsqueeze(0)  # [1, Hkv, num_pages * page_size, D]
    vf = v_cache.flatten(0, 1).transpose(0, 1).unsqueeze(0)  # [1, Hkv, num_pages * page_size, D]
    fn = _flex_fn(compiled)

    def run() -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eager flex on the CPU warns that it is unfused
            out = fn(qf, kf, vf, block_mask=block_mask, enable_gqa=num_q_heads != num_kv_heads)
        return out[:, :, 0]  # [batch, Hq, D]

    return run


def flashinfer_available() -> bool:
    """True when the flashinfer package imports."""
    try:
        import flashinfer  # noqa: F401
    except ImportError:
        return False
    return True


def flashinfer_paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                            seq_lens: torch.Tensor, tensor_cores: bool = True) -> Callable[[], torch.Tensor]:
    """Plan FlashInfer's batch paged decode (NHD layout = our [num_pages, page_size, H, D]); returns a runner.
    tensor_cores picks its prefill-style tensor-core path or its CUDA-core decode path (the issue asks for the best)."""
    import flashinfer

    num_pages, page_size, num_kv_heads, head_dim = k_cache.shape
    lens = seq_lens.to(q.device, torch.int32)  # [batch]
    num_used, used = pages_in_use(lens, page_size, page_table.shape[1])  # [batch], [batch, pages]
    indices = page_table.to(q.device, torch.int32)[used]  # [sum(num_used)]
    indptr = torch.zeros(len(lens) + 1, device=q.device, dtype=torch.int32)  # [batch + 1]
    indptr[1:] = torch.cumsum(num_used, 0)
    last_len = lens - (num_used - 1) * page_size  # [batch], in [1, page_size]
    workspace = torch.empty(128 * 1024 * 1024, dtype=torch.uint8, device=q.device)
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=tensor_cores)
    wrapper.plan(indptr, indices, last_len, q.shape[1], num_kv_heads, head_dim, page_size,
                 q_data_type=q.dtype, kv_data_type=k_cache.dtype)
    return lambda: wrapper.run(q, (k_cache, v_cache))
