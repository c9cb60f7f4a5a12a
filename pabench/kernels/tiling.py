"""`DecodeConfig`, the decode kernels' tiling and work split, and the heuristic that picks one from the shape.

Kept apart from the kernels (decode.py) so the choice reads on its own: the tile size follows head_dim and the
KV dtype, the pipeline depth and the number of work items the batch's size; the chunk each program reads is then
computed on the device from sum(seq_lens) (decode.py's `_chunk_schedule`). Measurements: benchmarks/NOTES.md and
KERNEL_NOTES.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton

from pabench.errors import ConfigError
from pabench.kernels.checks import DecodeShape


@dataclass(frozen=True)
class DecodeConfig:
    """Tiling of the decode kernels. `items_per_sm` sets how many (chunk, KV head) items the work is cut into."""

    block_n: int = 64  # KV tokens per tile
    num_warps: int = 4
    num_stages: int = 2
    items_per_sm: int = 16  # target work items per SM; the chunk size follows from sum(seq_lens) on device
    merge_block: int = 8  # partials merged per step
    merge_warps: int = 1
    prefetch_pages: bool = False  # load the next tile's page ids one iteration ahead (helps only at 2 stages)
    maxnreg: int = 0  # cap on registers per thread (0: the compiler's): more programs per SM when latency binds
    min_tiles: int = 0  # floor on a chunk, in tiles: fewer, longer programs when sum(seq_lens) is small

    def __post_init__(self) -> None:
        for name in ("block_n", "num_warps", "merge_block", "merge_warps"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ConfigError(f"DecodeConfig.{name} must be a power of two, got {value}")
        if self.block_n < 16 or self.merge_block < 2:
            raise ConfigError("DecodeConfig needs block_n >= 16 and merge_block >= 2")
        if self.num_stages < 1 or self.items_per_sm < 1 or not (self.maxnreg == 0 or 32 <= self.maxnreg <= 255):
            raise ConfigError("DecodeConfig needs num_stages >= 1, items_per_sm >= 1 and maxnreg 0 or 32..255")
        if self.min_tiles < 0:
            raise ConfigError(f"DecodeConfig.min_tiles must be >= 0, got {self.min_tiles}")

    def launch_options(self) -> dict:
        """Triton launch options past warps and stages: the register cap, only when set."""
        return {"maxnreg": self.maxnreg} if self.maxnreg else {}


@functools.lru_cache(maxsize=8)
def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 2 for the CPU interpreter (keeps test grids small)."""
    if device.type != "cuda":
        return 2
    return torch.cuda.get_device_properties(device).multi_processor_count


LARGE_BATCH = 128  # batches above this get the large-batch tiling


def block_b(batch: int) -> int:
    """Lanes of the in-kernel chunk schedule: a power of two >= batch, few distinct values (fewer recompiles)."""
    return max(64, triton.next_power_of_2(batch))


def variant_batches(max_batch: int) -> list[int]:
    """The smallest batch of each compiled decode-kernel variant up to `max_batch` (tiling, BLOCK_B, Triton's
    specialization of `batch`: == 1, divisible by 16): warming these keeps compiles out of timed eager steps."""
    seen: dict[tuple, int] = {}
    for b in range(1, max_batch + 1):
        seen.setdefault((block_b(b), b > LARGE_BATCH, b == 1, b % 16 == 0), b)
    return sorted(seen.values())


@functools.lru_cache(maxsize=256)
def choose_decode_config(shape: DecodeShape, dtype: torch.dtype, kv_fp8: bool = False,
                         paged: bool = True) -> DecodeConfig:
    """A small shape-keyed heuristic, tuned on an H200 for head_dim 128 (benchmarks/KERNEL_NOTES.md): 64-token
    tiles; ~8 work items per SM for small batches (bigger chunks, fewer partials) and ~16 for large ones, whose
    mixed lengths balance better in smaller chunks; small batches floor a chunk at 256 tokens per KV head and, with
    <= 4 KV heads, cut into fewer items (<= 2 KV heads: 2 per SM over double-width tiles). Paged
    fp8 (e4m3 pages, latency bound with few warps in flight) takes 128-token tiles, 2 stages and a 128-register
    cap; the contiguous fp8 slab keeps the bf16 tiling, which it reads faster (s15-1)."""
    block_n = {32: 128, 64: 128, 128: 64, 256: 32}[shape.head_dim]  # ~16 KB per K (or V) tile in bf16
    if dtype == torch.float32:
        block_n = max(16, block_n // 2)  # fp32 tiles take twice the registers and shared memory
    large = shape.batch > LARGE_BATCH
    wide = min(128, 2 * block_n)  # double-width tiles: paged fp8, and small batches with few KV heads
    if kv_fp8 and paged:
        return DecodeConfig(block_n=wide, num_stages=2, items_per_sm=16 if large else 8, maxnreg=128)
    floor = 256 * shape.num_kv_heads  # tokens: a chunk of at least 256 per KV head (s15-8: a long sequence among
    # short ones splits into fewer, longer programs; skewed batches gain, uniform ones do not move)
    if not large and shape.num_kv_heads <= 2:  # few KV heads: fewer, longer programs over double-width tiles
        # (s15-1's fastest for Qwen2.5 1.5B uniform and skewed, where FlashInfer was ahead in s16-2)
        return DecodeConfig(block_n=wide, num_stages=2, items_per_sm=2, min_tiles=floor // wide)
    if not large:
        few = shape.num_kv_heads <= 4  # s15-1's fastest for Qwen2.5 7B (4 KV heads)
        return DecodeConfig(block_n=block_n, num_stages=3 if few else 4, items_per_sm=4 if few else 8,
                            min_tiles=floor // block_n)
    # large batches (mixed lengths, many short chunks): smaller chunks, and the next tile's page ids loaded
    # one iteration ahead so the table -> K/V load chain leaves the critical path of short loops
    return DecodeConfig(block_n=block_n, num_stages=3, items_per_sm=16, prefetch_pages=True)

__all__ = ["DecodeConfig", "block_b", "choose_decode_config", "num_sms", "variant_batches"]
