"""`ContiguousBackend`: each sequence reserves one unbroken region of a slab, sized up front by a policy.

This is the pre-vLLM way (FasterTransformer, Orca): `max` reserves max_model_len tokens, `pow2` the final
length rounded up to a power of two, `oracle` exactly the final length (an upper bound no real system reaches,
since it needs the output length in advance). Regions come from a first-fit `ExtentAllocator`, so external
fragmentation really happens and is measured.
"""

from __future__ import annotations

import torch

from pabench import kernels
from pabench.kernels.checks import resolve_impl
from pabench.backends.base import KVLayout, PrefillBatch, PrefillMeta, attend_prefill
from pabench.backends.staging import StagedBatch
from pabench.core import Sequence
from pabench.errors import ConfigError, OutOfPagesError, SequenceStateError
from pabench.core.extents import ExtentAllocator
from pabench.core.memory import MemorySnapshot

POLICIES = ("max", "pow2", "oracle")


def reservation(policy: str, max_total_tokens: int, max_model_len: int) -> int:
    """Tokens a policy reserves for a sequence whose final length is `max_total_tokens`."""
    if policy == "max":
        return max_model_len
    if policy == "pow2":
        return min(1 << (max_total_tokens - 1).bit_length(), max_model_len)
    if policy == "oracle":
        return max_total_tokens
    raise ConfigError(f"unknown contiguous policy {policy!r}; choose one of {', '.join(POLICIES)}")


class ContiguousBackend:
    """Contiguous KV cache: a `[num_slots, H, D]` slab per layer, one reserved extent per sequence."""

    is_paged = False

    def __init__(self, layout: KVLayout, *, policy: str = "max", kv_budget_bytes: int | None = None,
                 num_slots: int | None = None, max_num_seqs: int = 256, max_model_len: int = 2048,
                 attn_impl: str = "auto", kv_scales: "tuple[torch.Tensor, torch.Tensor] | None" = None) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"unknown contiguous policy {policy!r}; choose one of {', '.join(POLICIES)}")
        if (num_slots is None) == (kv_budget_bytes is None):
            raise ConfigError("give exactly one of num_slots or kv_budget_bytes")
        if num_slots is None:
            num_slots = kv_budget_bytes // layout.bytes_per_token
        if num_slots < 1:
            raise ConfigError(f"KV budget of {kv_budget_bytes} bytes is smaller than one token "
                              f"({layout.bytes_per_token} bytes)")
        self.name = f"contiguous-{policy}"
        self.policy = policy
        self.layout = layout
        self.num_slots = num_slots
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        resolve_impl(attn_impl, torch.device(layout.device))  # an unknown impl, or Triton where it cannot run
        self.attn_impl = attn_impl
        self.unified_attention = kernels.unified_supported(attn_impl, layout.device, layout.head_dim)
        self.allocator = ExtentAllocator(num_slots)
        dev, dt = layout.device, layout.cache_dtype
        self._scales = layout.layer_scales(kv_scales)  # per layer: {} or an fp8 cache's k_scale, v_scale views
        L, H, D = layout.num_layers, layout.num_kv_heads, layout.head_dim
        # One extra scratch slot, never reserved: padding rows of a CUDA-graph batch write and read it.
        self.scratch_ref = num_slots  # a kv_ref (region start) of the scratch slot (kernel warm-ups)
        self.k_slab = torch.empty(L, num_slots + 1, H, D, dtype=dt, device=dev)  # [L, num_slots + 1, H, D]
        self.v_slab = torch.empty(L, num_slots + 1, H, D, dtype=dt, device=dev)  # [L, num_slots + 1, H, D]
        # The decode batch's (region start, length) per sequence; padding rows read the scratch slot, length 1.
        self._staged = StagedBatch(max_num_seqs, (num_slots, 1), torch.int32, dev)
        self._start: dict[int, int] = {}  # seq_id -> first slot of its extent
        self._reserved: dict[int, int] = {}  # seq_id -> extent length
        self._live: dict[int, Sequence] = {}
        self.kv_copied_bytes = 0  # K/V bytes copied into forked children's regions, every layer
        self._fork_regions: dict[int, list[int]] = {}  # parent seq_id -> regions reserved for forks still to come
        self._reserved_total = 0
        # Tokens with a slot in use: all of a sequence's tokens at admission, then one more per grow (a just-sampled
        # token counts from the step that writes its K/V, as in the paged cache). A running total: O(1) memory().
        self._covered: dict[int, int] = {}  # seq_id -> its covered tokens
        self._covered_total = 0
        self._decode: tuple[torch.Tensor, torch.Tensor] | None = None  # (starts, lens)

    # ------------------------------------------------------------------ admission and growth
    def can_admit(self, seq: Sequence, max_total_tokens: int, num_forks: int = 0,
                  max_new_tokens: int | None = None) -> bool:
        """A region (per sample) of the policy's size: reserved whole even for a chunked prefill's first chunk."""
        num_pending = sum(len(v) for v in self._fork_regions.values())
        if len(self._live) + num_pending + 1 + num_forks > self.max_num_seqs:
            return False
        need = reservation(self.policy, max_total_tokens, self.max_model_len)
        if num_forks == 0:
            return self.allocator.can_allocate(need)
        extents = sorted((n for _, n in self.allocator.free_extents()), reverse=True)
        fits = sum(n // need for n in extents)  # regions of `need` that fit, first-fit packs each extent
        return fits >= 1 + num_forks

    def admit(self, seq: Sequence, max_total_tokens: int, num_forks: int = 0,
              max_new_tokens: int | None = None) -> None:
        """Reserve `seq`'s region, plus one region per future fork (parallel sampling): all up front, or none.
        A chunked prefill reserves the same whole region at its first chunk: a contiguous cache reserves by policy,
        not by what is computed."""
        if max_total_tokens > self.max_model_len:
            raise ConfigError(f"sequence needs {max_total_tokens} tokens > max_model_len {self.max_model_len}")
        length = reservation(self.policy, max_total_tokens, self.max_model_len)
        if not self.can_admit(seq, max_total_tokens, num_forks):
            raise OutOfPagesError(1 + num_forks, 0, what=f"{self.name} regions of {length} tokens")
        self._reserve(seq, length, covered=seq.num_tokens if max_new_tokens is None else
                      min(seq.num_tokens, max_new_tokens))
        if num_forks:
            self._fork_regions[seq.seq_id] = [self._allocate(length) for _ in range(num_forks)]
        seq.num_cached_tokens = 0

    def _allocate(self, length: int) -> int:
        start = self.allocator.allocate(length)
        if start is None:
            raise OutOfPagesError(length, self.allocator.largest_free_extent, what=f"{self.name} region (tokens)")
        self._reserved_total += length
        return start

    def _reserve(self, seq: Sequence, length: int, start: int | None = None, covered: int | None = None) -> None:
        if seq.seq_id in self._start:
            raise SequenceStateError(f"sequence {seq.seq_id} already holds a region")
        start = self._allocate(length) if start is None else start
        self._start[seq.seq_id], self._reserved[seq.seq_id] = start, length
        self._live[seq.seq_id] = seq
        covered = seq.num_tokens if covered is None else covered
        self._covered[seq.seq_id] = covered
        self._covered_total += covered

    def grow_chunk(self, seq: Sequence, end: int) -> None:
        """A chunked prefill's next chunk: its region was reserved whole; only the accounting moves."""
        if end > self._reserved[seq.seq_id]:
            raise OutOfPagesError(1, 0, what=f"a chunk beyond the {self._reserved[seq.seq_id]}-token reservation")
        self._covered_total += end - self._covered[seq.seq_id]
        self._covered[seq.seq_id] = end

    def can_grow(self, seq: Sequence) -> bool:
        return seq.num_tokens <= self._reserved[seq.seq_id]

    def grow(self, seq: Sequence) -> None:
        if self.grow_many([seq]) == 0:
            raise OutOfPagesError(1, 0, what=f"growth beyond the {self._reserved[seq.seq_id]}-token reservation")

    def grow_many(self, seqs: list[Sequence], start: int = 0) -> int:
        """Nothing to allocate: the index of the first of `seqs[start:]` past its reservation, else len(seqs)."""
        reserved, covered, delta = self._reserved, self._covered, 0
        stop = len(seqs)
        for i in range(start, len(seqs)):
            seq = seqs[i]
            n, sid = seq.num_tokens, seq.seq_id
            if n > reserved[sid]:
                stop = i
                break
            delta += n - covered[sid]
            covered[sid] = n
        self._covered_total += delta
        return stop

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Give the child its own region (reserved at admission) and copy the parent's cached tokens into it."""
        pending = self._fork_regions.get(parent.seq_id)
        start = pending.pop() if pending else None
        if pending is not None and not pending:  # its last reserved fork region is taken
            del self._fork_regions[parent.seq_id]
        self._reserve(child, self._reserved[parent.seq_id], start)
        ps, cs, n = self._start[parent.seq_id], self._start[child.seq_id], parent.num_computed_tokens
        self.k_slab[:, cs:cs + n].copy_(self.k_slab[:, ps:ps + n])  # [L, n, H, D]
        self.v_slab[:, cs:cs + n].copy_(self.v_slab[:, ps:ps + n])
        self.kv_copied_bytes += n * self.layout.bytes_per_token

    def release(self, seq: Sequence) -> None:
        if seq.seq_id not in self._start:
            raise SequenceStateError(f"sequence {seq.seq_id} holds no memory in {self.name}")
        self.allocator.free(self._start.pop(seq.seq_id))
        length = self._reserved.pop(seq.seq_id)
        self._reserved_total -= length
        for start in self._fork_regions.pop(seq.seq_id, []):  # regions for forks that never happened
            self.allocator.free(start)
            self._reserved_total -= length
        del self._live[seq.seq_id]
        self._covered_total -= self._covered.pop(seq.seq_id)

    # ------------------------------------------------------------------ step preparation
    def prepare_prefill(self, seq: Sequence, start: int | None = None, end: int | None = None) -> PrefillMeta:
        region = self._start[seq.seq_id]
        start = seq.num_cached_tokens if start is None else start
        end = seq.num_tokens if end is None else end
        slots = torch.arange(region + start, region + end)  # [n_new] on the host
        return PrefillMeta(slots=slots, n_new=end - start, n_total=end, kv_index=region, kv_ref=region)

    def invalidate_decode_staging(self) -> None:
        """Sequences advanced outside decode steps (chunked prefill's mixed steps): restage every row next time."""
        self._staged.invalidate()

    def prepare_decode(self, seqs: list[Sequence]) -> torch.Tensor:
        self.stage_decode(seqs, len(seqs))
        return self.decode_meta(len(seqs))

    def stage_decode(self, seqs: list[Sequence], batch: int) -> None:
        """Host side of a decode step: region starts and lengths into static buffers (padding: scratch slot)."""
        self._staged.stage(seqs, batch, self._decode_fields)

    def _decode_fields(self, seqs: list[Sequence]) -> tuple[list[int], list[int]]:
        start = self._start
        return [start[s.seq_id] for s in seqs], [s.num_tokens for s in seqs]

    def decode_meta(self, batch: int) -> torch.Tensor:
        """Device side of a decode step (graph-capturable): the new tokens' slots."""
        self._staged.apply(batch)  # starts and lengths from the staged descriptor, on the device
        starts, lens = self._staged.keys[:batch], self._staged.counters[:batch]  # [batch] each
        self._decode = (starts, lens)
        return (starts + lens - 1).long()  # [batch] slot of each newest token

    # ------------------------------------------------------------------ per-layer device work
    def write_kv(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        kernels.write_kv(self.k_slab[layer], self.v_slab[layer], slots, k, v, impl=self.attn_impl,
                         **self._scales[layer])

    def kv_slots(self, meta: PrefillMeta) -> torch.Tensor:
        return torch.arange(meta.kv_index, meta.kv_index + meta.n_total)  # [n_total] on the host

    def prefill_attention(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          batch: PrefillBatch) -> torch.Tensor:
        if batch.mixed is not None:  # the unified kernel reads every region in place
            return kernels.contiguous_mixed_attention(q, self.k_slab[layer], self.v_slab[layer],
                                                      batch.mixed, **self._scales[layer])  # [T_new, Hq, D]
        return attend_prefill(q, k, v, batch, self.k_slab[layer], self.v_slab[layer],
                              self._scales[layer])  # [T_new, Hq, D]

    def decode_attention(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        starts, lens = self._decode
        return kernels.contiguous_decode_attention(q, self.k_slab[layer], self.v_slab[layer], starts, lens,
                                                   impl=self.attn_impl, check_values=False,
                                                   **self._scales[layer])

    # ------------------------------------------------------------------ accounting
    def memory(self) -> MemorySnapshot:
        """Token-level bytes in O(1): used = tokens with a slot in use (a just-sampled token from its next step)."""
        bpt = self.layout.bytes_per_token
        used = self._covered_total  # O(1): kept by admit, grow, fork and release
        reserved = self._reserved_total
        return MemorySnapshot(budget_bytes=self.num_slots * bpt, reserved_bytes=reserved * bpt,
                              used_bytes=used * bpt, slack_bytes=(reserved - used) * bpt,
                              idle_bytes=(self.num_slots - reserved) * bpt, saved_bytes=0,
                              largest_free_extent_bytes=self.allocator.largest_free_extent * bpt,
                              num_seqs=len(self._live))

    def capacity(self) -> dict:
        return {"kv_budget_bytes": self.num_slots * self.layout.bytes_per_token, "num_slots": self.num_slots,
                "page_size": 1, "num_tokens": self.num_slots,
                "max_len_seqs": self.num_slots // self.max_model_len, "max_model_len": self.max_model_len}

    def fits_when_empty(self, total_tokens: int, num_forks: int = 0, together: bool = False) -> bool:
        """Every sample's (or beam's) reservation at once: siblings reserve up front, all or nothing."""
        return reservation(self.policy, total_tokens, self.max_model_len) * (1 + num_forks) <= self.num_slots

    def describe(self) -> dict:
        return {"page_size": 1, "prefix_caching": False, "watermark": 0.0, "prefix_hit_rate": 0.0,
                "num_cow_copies": 0, "kv_copied_bytes": self.kv_copied_bytes}
