"""`PagedBackend`: the KV cache as a pool of fixed-size pages, handed out by the core `BlockManager`.

Memory for a sequence grows one page at a time, pages can be shared (prefix caching, forks) and copied on
write. The device keeps one persistent block table `int32 [max_seqs, max_pages_per_seq]`; each step writes
only the entries that changed (new pages, copy-on-write replacements), never rebuilding it from Python lists.
"""

from __future__ import annotations


import numpy as np
import torch

from pabench.backends.base import KVLayout, PrefillBatch, PrefillMeta, attend_prefill
from pabench.backends.block_table import DeviceBlockTable
from pabench.backends.staging import PinnedUpload, StagedBatch
from pabench.core import BlockManager, Sequence
from pabench.errors import ConfigError, OutOfPagesError, SequenceStateError
from pabench.core.memory import MemorySnapshot
from pabench import kernels
from pabench.kernels.checks import resolve_impl
from pabench.units import check_page_size


def pages_for_budget(layout: KVLayout, page_size: int, kv_budget_bytes: int) -> int:
    """How many whole pages a byte budget buys."""
    return kv_budget_bytes // (page_size * layout.bytes_per_token)


def paged_capacity(layout: KVLayout, page_size: int, num_pages: int, max_model_len: int) -> dict:
    """What `num_pages` pages hold: bytes, pages, tokens, sequences at max_model_len (a backend's `capacity()`,
    and the run header's before any backend is built)."""
    tokens = num_pages * page_size
    return {"kv_budget_bytes": tokens * layout.bytes_per_token, "num_pages": num_pages, "page_size": page_size,
            "num_tokens": tokens, "max_len_seqs": tokens // max_model_len, "max_model_len": max_model_len}


class PagedBackend:
    """Paged KV cache: `num_pages` pages of `page_size` tokens per layer, shared and copied on write."""

    is_paged = True

    name = "paged"

    def __init__(self, layout: KVLayout, *, page_size: int = 16, num_pages: int | None = None,
                 kv_budget_bytes: int | None = None, enable_prefix_caching: bool = False,
                 max_num_seqs: int = 256, max_model_len: int = 2048, attn_impl: str = "auto",
                 watermark: float = 0.04, kv_scales: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        check_page_size(page_size)
        if (num_pages is None) == (kv_budget_bytes is None):
            raise ConfigError("give exactly one of num_pages or kv_budget_bytes")
        if num_pages is None:
            num_pages = pages_for_budget(layout, page_size, kv_budget_bytes)
            if num_pages < 1:
                raise ConfigError(f"KV budget of {kv_budget_bytes} bytes is smaller than one page "
                                  f"({page_size * layout.bytes_per_token} bytes)")
        if max_num_seqs <= 0 or max_model_len <= 0:
            raise ConfigError("max_num_seqs and max_model_len must be > 0")
        self.layout = layout
        self.page_size = page_size
        self.num_pages = num_pages
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        resolve_impl(attn_impl, torch.device(layout.device))  # an unknown impl, or Triton where it cannot run
        self.attn_impl = attn_impl
        self.unified_attention = kernels.unified_supported(attn_impl, layout.device, layout.head_dim)
        self.enable_prefix_caching = enable_prefix_caching
        if enable_prefix_caching:
            self.name = "paged+prefix"
        self.block_manager = BlockManager(num_pages, page_size, enable_prefix_caching=enable_prefix_caching)
        if not 0.0 <= watermark < 1.0:
            raise ConfigError(f"watermark must be a fraction in [0, 1), got {watermark}")
        # Pages admission leaves free for the running sequences to grow into. Without it, admission fills the
        # pool to the last page, the next decode step preempts, the victim is re-admitted, and so on (the
        # measured preemptions per watermark are in benchmarks/NOTES.md, "Preemption").
        self.watermark = watermark
        self.watermark_pages = max(1, int(num_pages * watermark)) if watermark > 0 else 0
        dev, dt = layout.device, layout.cache_dtype
        self._scales = layout.layer_scales(kv_scales)  # per layer: {} or an fp8 cache's k_scale, v_scale views
        L, H, D = layout.num_layers, layout.num_kv_heads, layout.head_dim
        # One extra "scratch" page, never handed out: padding rows of a CUDA-graph batch write and read it.
        self.scratch_page = num_pages
        self.k_pool = torch.empty(L, num_pages + 1, page_size, H, D, dtype=dt, device=dev)  # [L, P + 1, page, H, D]
        self.v_pool = torch.empty(L, num_pages + 1, page_size, H, D, dtype=dt, device=dev)  # [L, P + 1, page, H, D]
        self.max_pages_per_seq = -(-max_model_len // page_size)
        # The persistent device block table (one row per running sequence, plus the padding row).
        # A decode step's (block-table row, length) per sequence and its block-table writes travel in one upload:
        # the staged descriptor's rows, then the writes' (padding rows read the padding row, length 1).
        noop = DeviceBlockTable.noop_rows(max_num_seqs, self.max_pages_per_seq, self.scratch_page)
        rows = StagedBatch.DESC_ROWS
        self._upload = PinnedUpload((rows + DeviceBlockTable.WRITE_ROWS, max_num_seqs), (0,) * rows + noop,
                                    torch.device(dev))  # [7, max_seqs]
        self.table = DeviceBlockTable(max_num_seqs, self.max_pages_per_seq, self.scratch_page, dev, self._upload, rows)
        self.scratch_ref = self.table.padding_row  # a kv_ref that reads only the scratch page (kernel warm-ups)
        self._staged = StagedBatch(max_num_seqs, (max_num_seqs, 1), torch.int32, dev, shared=self._upload)
        self._live: dict[int, Sequence] = {}
        self.kv_copied_bytes = 0  # K/V bytes copied on write, every layer
        self._decode: tuple[torch.Tensor, torch.Tensor] | None = None  # (page table rows, seq_lens)

    # ------------------------------------------------------------------ admission and growth
    def can_admit(self, seq: Sequence, max_total_tokens: int, num_forks: int = 0,
                  max_new_tokens: int | None = None) -> bool:
        """Room for the prompt's pages (a chunked prefill's first chunk: `max_new_tokens` after the cached prefix)
        plus a watermark of free pages for the running sequences to grow into."""
        if self.table.num_free_rows < 1 + num_forks:
            return False
        bm = self.block_manager
        if not self._live:  # an empty cache admits anything that fits at all
            return bm.can_allocate(seq, max_new_tokens)
        # The watermark test first: it is O(1), while can_allocate hashes the prompt's pages for prefix hits, and
        # a memory-bound run asks about the head of the queue at every decode step.
        need = bm.pages_needed(seq.num_tokens if max_new_tokens is None else min(seq.num_tokens, max_new_tokens))
        return bm.num_free_pages - need >= self.watermark_pages and bm.can_allocate(seq, max_new_tokens)

    def admit(self, seq: Sequence, max_total_tokens: int, num_forks: int = 0,
              max_new_tokens: int | None = None) -> None:
        """Pages for the prompt (or its first chunk); forks need nothing now (they share pages until they write)."""
        if max_total_tokens > self.max_model_len:
            raise ConfigError(f"sequence needs {max_total_tokens} tokens > max_model_len {self.max_model_len}")
        if not self.table.num_free_rows:
            raise OutOfPagesError(1, 0, what="a block-table row for admit")
        self.block_manager.allocate(seq, max_new_tokens)
        self._attach(seq, "admit")

    def grow_chunk(self, seq: Sequence, end: int) -> None:
        """Pages for a chunked prefill's next chunk, up to position `end` (OutOfPagesError, untouched, if none)."""
        table = seq.page_table
        before = len(table)
        self.block_manager.extend(seq, end)
        for index in range(before, len(table)):
            self.table.set_entry(seq.seq_id, index, table[index])

    def can_grow(self, seq: Sequence) -> bool:
        return self.block_manager.can_append(seq)

    def grow(self, seq: Sequence) -> None:
        if self.grow_many([seq]) == 0:
            raise OutOfPagesError(1, 0, f"grow seq {seq.seq_id}")

    def grow_many(self, seqs: list[Sequence], start: int = 0) -> int:
        """Grow `seqs[start:]` in order; record only the block-table entries that changed (new pages, copies)."""
        stop, changed = self.block_manager.append_slots(seqs, start)
        set_entry = self.table.set_entry
        for i, copy in changed:
            seq = seqs[i]
            if copy is not None:
                src, dst = copy
                self.kv_copied_bytes += self.page_size * self.layout.bytes_per_token
                self.k_pool[:, dst].copy_(self.k_pool[:, src])  # [L, page_size, H, D] copy-on-write, every layer
                self.v_pool[:, dst].copy_(self.v_pool[:, src])
            n = seq.num_pages
            set_entry(seq.seq_id, n - 1, seq.page_table[n - 1])  # a new last page, or its copy
        return stop

    def fork(self, parent: Sequence, child: Sequence) -> None:
        if not self.table.num_free_rows:
            raise OutOfPagesError(1, 0, what="a block-table row for fork")
        self.block_manager.fork(parent, child)
        self._attach(child, "fork")

    def release(self, seq: Sequence) -> None:
        if seq.seq_id not in self._live:
            raise SequenceStateError(f"sequence {seq.seq_id} holds no memory in {self.name}")
        self.block_manager.free(seq)
        self.table.detach(seq.seq_id)
        del self._live[seq.seq_id]

    def _attach(self, seq: Sequence, what: str) -> None:
        self.table.attach(seq.seq_id, seq.page_table.page_ids, what)
        self._live[seq.seq_id] = seq

    # ------------------------------------------------------------------ step preparation
    def prepare_prefill(self, seq: Sequence, start: int | None = None, end: int | None = None) -> PrefillMeta:
        """The slots of positions [start, end) through the page table, on the host (numpy: O(new tokens + pages),
        no per-sequence torch ops); the page ids stay for `kv_slots`, the table row for the unified kernel."""
        start = seq.num_cached_tokens if start is None else start
        end = seq.num_tokens if end is None else end
        ps = self.page_size
        pids = np.asarray(seq.page_table.page_ids[:-(-end // ps)], dtype=np.int64)  # [pages covering 0..end-1]
        pos = np.arange(start, end, dtype=np.int64)  # [n_new]
        slots = torch.from_numpy(pids[pos // ps] * ps + pos % ps)  # [n_new]
        return PrefillMeta(slots=slots, n_new=end - start, n_total=end, kv_index=pids,
                           kv_ref=self.table.rows[seq.seq_id])

    def invalidate_decode_staging(self) -> None:
        """Sequences advanced outside decode steps (chunked prefill's mixed steps): restage every row next time."""
        self._staged.invalidate()

    def prepare_decode(self, seqs: list[Sequence]) -> torch.Tensor:
        self.stage_decode(seqs, len(seqs))
        return self.decode_meta(len(seqs))

    def stage_decode(self, seqs: list[Sequence], batch: int) -> None:
        """Host side of a decode step: stage the block-table writes and the rows and lengths (one copy for both).

        Rows `len(seqs)..batch` are padding (CUDA-graph buckets): the scratch row, length 1.
        """
        host = self._upload.host()  # [7, max_seqs] this step's buffer: rows and lengths, then the table's writes
        self.table.stage_writes(host)
        self._staged.stage(seqs, batch, self._decode_fields, host)
        self._upload.send()

    def _decode_fields(self, seqs: list[Sequence]) -> tuple[list[int], list[int]]:
        row = self.table.rows
        return [row[s.seq_id] for s in seqs], [s.num_tokens for s in seqs]

    def decode_meta(self, batch: int) -> torch.Tensor:
        """Device side of a decode step (graph-capturable): the batch's table rows and the new tokens' slots."""
        self.table.apply_writes()  # this step's block-table writes
        self._staged.apply(batch)  # rows and lengths from the staged descriptor, on the device
        lens = self._staged.counters[:batch]  # [batch]
        table = self.table.tensor.index_select(0, self._staged.keys[:batch])  # [batch, max_pages] persistent rows
        pos = (lens - 1).long()  # [batch]
        page = table.gather(1, (pos // self.page_size)[:, None])[:, 0].long()  # [batch]
        self._decode = (table, lens)
        return page * self.page_size + pos % self.page_size  # [batch] slot of each newest token

    # ------------------------------------------------------------------ per-layer device work
    def write_kv(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        kernels.write_kv(self.k_pool[layer], self.v_pool[layer], slots, k, v, impl=self.attn_impl,
                         **self._scales[layer])

    def kv_slots(self, meta: PrefillMeta) -> torch.Tensor:
        ps = self.page_size  # every slot of the sequence's pages, cut at n_total
        return torch.from_numpy((meta.kv_index[:, None] * ps + np.arange(ps)).reshape(-1)[:meta.n_total])

    def prefill_attention(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          batch: PrefillBatch) -> torch.Tensor:
        if batch.mixed is not None:  # the unified kernel reads every context through the device block table
            self.table.flush()  # this step's new pages (a no-op after the first layer)
            return kernels.paged_mixed_attention(q, self.k_pool[layer], self.v_pool[layer], self.table.tensor,
                                                 batch.mixed, **self._scales[layer])  # [T_new, Hq, D]
        H, D = self.layout.num_kv_heads, self.layout.head_dim  # a cached prefix is read through the page table:
        return attend_prefill(q, k, v, batch, self.k_pool[layer].view(-1, H, D),  # its slots index pages flattened
                              self.v_pool[layer].view(-1, H, D), self._scales[layer])  # [T_new, Hq, D]

    def decode_attention(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        table, lens = self._decode
        return kernels.paged_decode_attention(q, self.k_pool[layer], self.v_pool[layer], table, lens,
                                              impl=self.attn_impl, check_values=False, **self._scales[layer])

    # ------------------------------------------------------------------ accounting
    def memory(self) -> MemorySnapshot:
        """Token-level bytes in O(1), from the block manager's counters: a token counts as used once it has its
        slot (the newest sampled token gets it at the next step's grow); shared pages count once."""
        ps, bpt = self.page_size, self.layout.bytes_per_token
        bm = self.block_manager
        num_used_pages = bm.num_used_pages
        used_tokens = bm.num_filled_slots
        reserved = num_used_pages * ps * bpt
        budget = self.num_pages * ps * bpt
        free_bytes = (self.num_pages - num_used_pages) * ps * bpt
        return MemorySnapshot(budget_bytes=budget, reserved_bytes=reserved, used_bytes=used_tokens * bpt,
                              slack_bytes=reserved - used_tokens * bpt, idle_bytes=budget - reserved,
                              saved_bytes=(bm.num_page_refs - num_used_pages) * ps * bpt,
                              largest_free_extent_bytes=free_bytes, num_seqs=len(self._live))

    def capacity(self) -> dict:
        return paged_capacity(self.layout, self.page_size, self.num_pages, self.max_model_len)

    def fits_when_empty(self, total_tokens: int, num_forks: int = 0, together: bool = False) -> bool:
        """One sample must fit: its siblings can be preempted and recomputed while it runs. Beams (`together`) run
        side by side: each may hold its own copy of every page (a bound; sharing makes it smaller)."""
        return -(-total_tokens // self.page_size) * (1 + num_forks if together else 1) <= self.num_pages

    def describe(self) -> dict:
        bm = self.block_manager
        return {"page_size": self.page_size, "prefix_caching": self.enable_prefix_caching,
                "watermark": self.watermark, "prefix_hit_rate": bm.prefix_hit_rate,
                "num_cow_copies": bm.num_cow_copies, "kv_copied_bytes": self.kv_copied_bytes}
