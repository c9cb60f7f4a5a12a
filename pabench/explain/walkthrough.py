"""`Walkthrough`: plays a tiny scenario through the REAL `BlockManager` and a contiguous slab, recording `Step`s.

The paged side admits (prefix hits first), forks samples, appends with copy-on-write, preempts by recompute
(latest admitted first) and frees. The contiguous side (`ContiguousSlab`) shadows it: it tries to hold the
sequences the paged cache runs; a request it cannot place waits, and if the paged cache finishes that request
first, the contiguous one simply never got to start it. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceABC

from pabench.core import BlockManager, Sequence, SequenceStatus
from pabench.errors import ConfigError, SequenceStateError
from pabench.explain.slab import ContiguousSlab
from pabench.explain.steps import Event, PageView, PoolView, Step, TableView, seq_name


class Walkthrough:
    """Plays requests through a BlockManager and a contiguous slab of the same size, recording `Step`s."""

    def __init__(self, num_pages: int, page_size: int, max_model_len: int, *, policy: str = "max") -> None:
        self._events: list[Event] = []
        self.blocks = BlockManager(num_pages, page_size, enable_prefix_caching=True)
        self.contiguous = ContiguousSlab(num_pages * page_size, max_model_len, policy,  # same bytes: a slot a token
                                         self._events.append)
        self.page_size, self.max_model_len = page_size, max_model_len
        self.seqs: dict[int, Sequence] = {}
        self.steps: list[Step] = []
        self._max_len: dict[int, int] = {}  # seq_id -> final length (prompt + output)
        self._running_ids: list[int] = []  # admission order: the last one is preempted first
        self._next_token_id = 1000  # generated tokens: distinct from every prompt token

    # ---- actions ------------------------------------------------------------------------------------------
    def arrive(self, seq_id: int, prompt: SequenceABC[int], *, max_len: int, num_samples: int = 1) -> None:
        """A request arrives: prefill it (prefix hits first), fork its extra samples, try the slab too.

        Samples get ids seq_id + 1 ... seq_id + num_samples - 1. If the pool cannot take the request it stays
        WAITING (`resume` admits it later, as a single sequence).
        """
        if not len(prompt) <= max_len <= self.max_model_len:
            raise ConfigError(f"{seq_name(seq_id)}: need len(prompt) <= max_len <= {self.max_model_len}")
        new_ids = range(seq_id, seq_id + num_samples)
        if num_samples < 1 or any(i in self.seqs for i in new_ids):
            raise ConfigError(f"{seq_name(seq_id)}: need num_samples >= 1 and unused seq ids {list(new_ids)}")
        seq = Sequence(seq_id, prompt)
        self.seqs[seq_id], self._max_len[seq_id] = seq, max_len
        group = [seq_id]
        if self._admit(seq):
            for child_id in new_ids[1:]:
                child = seq.fork(child_id)
                self.blocks.fork(seq, child)
                self.seqs[child_id], self._max_len[child_id] = child, max_len
                self._running_ids.append(child_id)
                group.append(child_id)
                self._emit("fork", (seq_id, child_id), seq.page_table.page_ids,
                           f"{seq_name(child_id)} points at all {seq.num_pages} pages of {seq_name(seq_id)}")
        self.contiguous.arrive(group, max_len)

    def fork(self, parent_id: int, child_id: int) -> None:
        """A beam chosen twice: `child_id` shares every page of `parent_id` (ref_count + 1, no copy yet); the
        contiguous cache gives it a region of its own and copies the parent's tokens into it."""
        parent = self.seqs[parent_id]
        if child_id in self.seqs or parent.status is not SequenceStatus.RUNNING:
            raise ConfigError(f"{seq_name(child_id)}: needs an unused id and a running parent")
        child = parent.fork(child_id)
        self.blocks.fork(parent, child)
        self.seqs[child_id], self._max_len[child_id] = child, self._max_len[parent_id]
        self._running_ids.append(child_id)
        self._emit("fork", (parent_id, child_id), parent.page_table.page_ids,
                   f"{seq_name(child_id)} points at all {parent.num_pages} pages of {seq_name(parent_id)}")
        self.contiguous.fork(parent_id, child_id, parent.num_tokens)

    def decode(self, num_tokens: int = 1, seq_ids: SequenceABC[int] | None = None) -> None:
        """Every running sequence (or `seq_ids`) generates `num_tokens` tokens, one round at a time."""
        for _ in range(num_tokens):
            for seq_id in list(self._running_ids if seq_ids is None else seq_ids):
                self._decode_one(self.seqs[seq_id])

    def finish(self, seq_id: int) -> None:
        """A sequence ends: its pages go back (registered prefix pages stay cached), its slab region too."""
        seq = self.seqs[seq_id]
        returned, kept = self._release(seq)
        seq.status = SequenceStatus.FINISHED
        self._emit("finish", (seq_id,), (), f"{seq_name(seq_id)} finished with {seq.num_tokens} tokens")
        self._emit("free", (seq_id,), returned,
                   f"{len(returned)} page(s) returned, {len(kept)} of them kept as cached prefix pages")
        self.contiguous.finish(seq_id)

    def resume(self, seq_id: int) -> None:
        """A preempted (or waiting) sequence is prefilled again, prompt + generated tokens; cached pages cut
        the work."""
        seq = self.seqs[seq_id]
        if seq.status not in (SequenceStatus.PREEMPTED, SequenceStatus.WAITING):
            raise SequenceStateError(f"{seq_name(seq_id)} is {seq.status.name}, not PREEMPTED or WAITING")
        self._admit(seq)

    def step(self, title: str, sentence: str) -> Step:
        """Record the moment: the events since the last step, the sentence, frozen views of both caches."""
        self.blocks.check_invariants()
        self.contiguous.check_invariants()
        tables = tuple(TableView(s.seq_id, s.status.name, tuple(self.blocks.seq_page_ids(s)), s.num_tokens,
                                 s.num_cached_tokens) for _, s in sorted(self.seqs.items()))
        slab = self.contiguous.view({i: s.num_tokens for i, s in self.seqs.items()})
        snapshot = Step(title, sentence, tuple(self._events), self.pool_view(), tables, slab)
        self._events.clear()
        self.steps.append(snapshot)
        return snapshot

    def pending(self, kind: str) -> list[Event]:
        """Events of `kind` since the last step (scenarios quote their numbers in the sentence)."""
        return [e for e in self._events if e.kind == kind]

    def pool_view(self) -> PoolView:
        """The page pool now (also what each `Step` freezes)."""
        owners: dict[int, list[int]] = {}
        for seq_id in sorted(self.seqs):
            for page_id in self.blocks.seq_page_ids(self.seqs[seq_id]):
                owners.setdefault(page_id, []).append(seq_id)
        views = []
        for page_id in range(self.blocks.num_pages):
            page = self.blocks.page(page_id)
            if page.ref_count == 0:
                state = "free" if page.content_hash is None else "cached"
            else:
                state = "shared" if page.ref_count > 1 else "used"
            views.append(PageView(page_id, page.ref_count, page.num_tokens, tuple(owners.get(page_id, ())), state))
        return PoolView(self.page_size, tuple(views))

    # ---- the paged side -----------------------------------------------------------------------------------
    def _admit(self, seq: Sequence) -> bool:
        """Allocate `seq`'s pages (prefix hits first); on a full pool it keeps waiting."""
        if not self.blocks.can_allocate(seq):
            need = self.blocks.pages_needed(seq.num_tokens)
            self._emit("admit_fail", (seq.seq_id,), (),
                       f"{seq_name(seq.seq_id)} needs up to {need} pages, {self.blocks.num_free_pages} free: it waits")
            return False
        cached_before = self._cached_hashes()
        self.blocks.allocate(seq)
        seq.status = SequenceStatus.RUNNING
        seq.num_computed_tokens = seq.num_tokens  # the prefill ran
        self._running_ids.append(seq.seq_id)
        page_ids = seq.page_table.page_ids
        num_hits = seq.num_cached_tokens // self.page_size
        if num_hits:
            self._emit("prefix_hit", (seq.seq_id,), page_ids[:num_hits],
                       f"{seq.num_cached_tokens} tokens found in the prefix cache: no new memory, no recompute")
        self._emit("allocate", (seq.seq_id,), page_ids[num_hits:],
                   f"{seq_name(seq.seq_id)} gets {len(page_ids) - num_hits} new page(s) for {seq.num_tokens} tokens")
        self._note_evictions(cached_before)
        return True

    def _decode_one(self, seq: Sequence) -> None:
        """One new token for `seq`; preempts the latest admitted sequences first when no page is left."""
        if seq.status is not SequenceStatus.RUNNING:
            return
        if seq.num_tokens >= self._max_len[seq.seq_id]:
            raise SequenceStateError(f"scenario error: {seq_name(seq.seq_id)} is at its max_len")
        while not self.blocks.can_append(seq):
            victim_id = self._running_ids[-1]
            self._preempt(self.seqs[victim_id])
            if victim_id == seq.seq_id:
                return
        cached_before = self._cached_hashes()
        num_pages_before = seq.num_pages
        seq.append_token(self._next_token_id)
        self._next_token_id += 1
        copied = self.blocks.append_slot(seq)
        seq.num_computed_tokens = seq.num_tokens
        if copied is not None:
            src, dst = copied
            self._emit("cow", (seq.seq_id,), (src, dst),
                       f"page {src} is shared, so {seq_name(seq.seq_id)} copies it to page {dst} before writing")
        elif seq.num_pages > num_pages_before:
            self._emit("append_page", (seq.seq_id,), (seq.page_table[-1],),
                       f"{seq_name(seq.seq_id)} filled its last page and opens page {seq.page_table[-1]}")
        self._note_evictions(cached_before)

    def _preempt(self, seq: Sequence) -> None:
        """Preemption by recompute: drop every page now, prefill prompt + generated tokens again later."""
        returned, _ = self._release(seq)
        seq.reset_for_recompute()
        seq.status = SequenceStatus.PREEMPTED
        self._emit("preempt", (seq.seq_id,), returned,
                   f"out of pages: {seq_name(seq.seq_id)} preempted by recompute, {len(returned)} pages returned")

    def _release(self, seq: Sequence) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Free `seq`'s pages; (pages whose ref_count reached 0, those of them kept as cached prefix pages)."""
        if seq.page_table is None:
            raise SequenceStateError(f"{seq_name(seq.seq_id)} is {seq.status.name} and holds no pages")
        returned = tuple(i for i in seq.page_table.page_ids if self.blocks.page(i).ref_count == 1)
        self.blocks.free(seq)
        self._running_ids.remove(seq.seq_id)
        kept = tuple(i for i in returned if self.blocks.page(i).content_hash is not None)
        return returned, kept

    def _cached_hashes(self) -> dict[int, int]:
        """page_id -> content hash of every cached page (free, still holding a reusable prefix page)."""
        pages = (self.blocks.page(i) for i in range(self.blocks.num_pages))
        return {p.page_id: p.content_hash for p in pages if p.ref_count == 0 and p.content_hash is not None}

    def _note_evictions(self, cached_before: dict[int, int]) -> None:
        """An `evict` event for every page cached in `cached_before` whose content has since been replaced."""
        evicted = tuple(i for i, h in cached_before.items() if self.blocks.page(i).content_hash != h)
        if evicted:
            self._emit("evict", (), evicted, f"no fresh page left: {len(evicted)} cached prefix page(s) reused")

    def _emit(self, kind: str, seq_ids: tuple[int, ...], page_ids: SequenceABC[int], detail: str) -> None:
        self._events.append(Event(kind, tuple(seq_ids), tuple(page_ids), detail))
