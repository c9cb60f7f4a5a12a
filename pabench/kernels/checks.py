"""Shape, dtype and device checks shared by every kernel launcher, run before anything is launched.

Metadata checks (shapes, dtypes, devices) cost nothing. Value checks (lengths, page ids) read the tensors,
which on a GPU means a device-to-host sync: callers in a hot loop pass `check_values=False`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from pabench.errors import ConfigError
from pabench.kernels.fp8 import is_fp8
from pabench.units import check_page_size

SUPPORTED_HEAD_DIMS = (32, 64, 128, 256)  # the Triton kernels tile the whole head dim at once
MAX_TRITON_BATCH = 4096  # the decode kernel keeps one lane per sequence for its schedule
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INDEX_DTYPES = (torch.int32, torch.int64)
IMPLS = ("auto", "torch", "triton")


@dataclass(frozen=True)
class DecodeShape:
    """Sizes of one decode call, read off the tensors."""

    batch: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    page_size: int  # 1 for a contiguous slab
    capacity: int  # tokens a sequence can address: pages_per_seq * page_size, or the slab's rows

    @property
    def group(self) -> int:
        """Query heads per KV head (1: MHA, >1: GQA)."""
        return self.num_q_heads // self.num_kv_heads


def interpreter_enabled() -> bool:
    """True when Triton kernels run on the CPU through the interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_impl(impl: str, device: torch.device) -> str:
    """Map "auto" to "triton" on CUDA and "torch" elsewhere; refuse "triton" where it cannot run."""
    if impl not in IMPLS:
        raise ConfigError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        return "triton" if device.type == "cuda" else "torch"
    if impl == "triton" and device.type != "cuda" and not interpreter_enabled():
        raise ConfigError("impl='triton' needs a CUDA device (or TRITON_INTERPRET=1 on the CPU); use impl='torch'")
    return impl


def _same(what: str, tensors: dict[str, torch.Tensor], attr: str) -> None:
    values = {name: getattr(t, attr) for name, t in tensors.items()}
    if len(set(values.values())) > 1:
        raise ConfigError(f"{what} differ: " + ", ".join(f"{n}={v}" for n, v in values.items()))


def check_decode_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor, seq_lens: torch.Tensor, *, paged: bool
) -> DecodeShape:
    """Validate a decode call's metadata. `table` is the page table (paged) or `seq_starts` (contiguous)."""
    cache_rank = 4 if paged else 3
    cache_name = "k_cache/v_cache [num_pages, page_size, num_kv_heads, head_dim]" if paged else \
        "k_slab/v_slab [num_slots, num_kv_heads, head_dim]"
    if q.dim() != 3:
        raise ConfigError(f"q must be [batch, num_q_heads, head_dim], got shape {tuple(q.shape)}")
    if k.dim() != cache_rank or k.shape != v.shape:
        raise ConfigError(f"{cache_name} must match, got {tuple(k.shape)} and {tuple(v.shape)}")
    _same("devices", {"q": q, "k": k, "v": v, "table": table, "seq_lens": seq_lens}, "device")
    _same("dtypes", {"k": k, "v": v}, "dtype")
    if q.dtype not in FLOAT_DTYPES:
        raise ConfigError(f"q/k/v dtype must be one of {FLOAT_DTYPES}, got {q.dtype}")
    if k.dtype != q.dtype and not is_fp8(k.dtype):  # an fp8 cache is read with q's dtype
        raise ConfigError(f"the cache's dtype must be q's ({q.dtype}) or fp8 e4m3, got {k.dtype}")
    if table.dtype not in INDEX_DTYPES or seq_lens.dtype not in INDEX_DTYPES:
        raise ConfigError(f"page_table/seq_starts and seq_lens must be int32 (or int64), "
                          f"got {table.dtype}, {seq_lens.dtype}")
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[-2]
    if k.shape[-1] != head_dim:
        raise ConfigError(f"head_dim differs: q has {head_dim}, the cache has {k.shape[-1]}")
    if num_kv_heads < 1 or num_q_heads % num_kv_heads:
        raise ConfigError(f"num_q_heads ({num_q_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
    if batch < 1:
        raise ConfigError("batch must be >= 1")
    if seq_lens.shape != (batch,):
        raise ConfigError(f"seq_lens must be [batch={batch}], got {tuple(seq_lens.shape)}")
    if paged:
        if table.dim() != 2 or table.shape[0] != batch:
            raise ConfigError(f"page_table must be [batch={batch}, max_pages_per_seq], got {tuple(table.shape)}")
        page_size = k.shape[1]
        capacity = table.shape[1] * page_size
    else:
        if table.shape != (batch,):
            raise ConfigError(f"seq_starts must be [batch={batch}], got {tuple(table.shape)}")
        page_size, capacity = 1, k.shape[0]
    return DecodeShape(batch, num_q_heads, num_kv_heads, head_dim, page_size, capacity)


def check_triton_decode(shape: DecodeShape, k: torch.Tensor, v: torch.Tensor) -> None:
    """Limits of the Triton decode kernel (the torch reference has none of them)."""
    if shape.head_dim not in SUPPORTED_HEAD_DIMS:
        raise ConfigError(f"triton decode supports head_dim in {SUPPORTED_HEAD_DIMS}, got {shape.head_dim}; "
                          "use impl='torch'")
    check_page_size(shape.page_size, "triton decode's page_size")
    if shape.batch > MAX_TRITON_BATCH:
        raise ConfigError(f"triton decode supports batch <= {MAX_TRITON_BATCH}, got {shape.batch}")
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ConfigError("the KV cache's head_dim axis must be contiguous (stride 1)")


def check_paged_values(seq_lens: torch.Tensor, page_table: torch.Tensor, page_size: int, num_pages: int) -> None:
    """Every length in [1, capacity] and every page id a sequence uses in [0, num_pages). Syncs on a GPU."""
    lens = seq_lens.detach().to("cpu", torch.int64)  # [batch]
    capacity = page_table.shape[1] * page_size
    if int(lens.min()) < 1 or int(lens.max()) > capacity:
        raise ConfigError(f"seq_lens must lie in [1, {capacity}] (pages_per_seq * page_size), "
                          f"got min {int(lens.min())}, max {int(lens.max())}")
    table = page_table.detach().to("cpu", torch.int64)  # [batch, max_pages_per_seq]
    num_used = (lens + page_size - 1) // page_size  # [batch]
    used = torch.arange(table.shape[1])[None, :] < num_used[:, None]  # [batch, max_pages_per_seq]
    ids = table[used]  # [sum(num_used)]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_pages):
        raise ConfigError(f"page_table holds page ids outside [0, {num_pages}) for pages in use")


def check_contiguous_values(seq_lens: torch.Tensor, seq_starts: torch.Tensor, num_slots: int) -> None:
    """Every length >= 1 and every region [start, start + len) inside the slab. Syncs on a GPU."""
    lens = seq_lens.detach().to("cpu", torch.int64)  # [batch]
    starts = seq_starts.detach().to("cpu", torch.int64)  # [batch]
    if int(lens.min()) < 1:
        raise ConfigError(f"seq_lens must be >= 1, got min {int(lens.min())}")
    if int(starts.min()) < 0 or int((starts + lens).max()) > num_slots:
        raise ConfigError(f"every region [seq_start, seq_start + seq_len) must lie in [0, {num_slots})")
