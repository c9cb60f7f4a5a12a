"""`pabench explain`: deterministic walks through tiny scenarios on the REAL core objects, step by step.

A `Walkthrough` drives a `BlockManager` (prefix caching, fork, copy-on-write, preemption, free) and, beside it,
a contiguous cache of the same size: an `ExtentAllocator` slab where each sequence reserves one unbroken region
up front. After each action it records a `Step`: a structured event log, one sentence saying what happened and
why, and frozen views of both caches. Torch-free; `explain_render.py` draws the steps.

The contiguous side is a shadow of the paged one: it tries to hold the sequences the paged cache runs. It never
preempts (it reserved the worst case up front); a request it cannot place waits, and if the paged cache finishes
that request first, the contiguous one simply never got to start it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence as SequenceABC
from dataclasses import dataclass

from pabench.core import BlockManager, Sequence, SequenceStatus
from pabench.core.errors import ConfigError, SequenceStateError
from pabench.core.extents import ExtentAllocator

EVENT_KINDS = ("allocate", "prefix_hit", "fork", "cow", "append_page", "evict", "preempt", "free", "finish",
               "admit_fail", "reserve_contiguous", "admit_fail_contiguous", "release_contiguous")
PAGE_STATES = ("free", "cached", "used", "shared")  # cached: free, but still holding a reusable prefix page
SLAB_POLICIES = ("max", "exact")  # reserve max_model_len tokens, or exactly the request's final length


def seq_label(seq_id: int) -> str:
    """The letter a sequence is drawn with: 0 -> A, 1 -> B, ... (then its id)."""
    return chr(ord("A") + seq_id) if 0 <= seq_id < 26 else str(seq_id)


def seq_name(seq_id: int) -> str:
    """'seq 4 (E)': how sentences name a sequence."""
    return f"seq {seq_id} ({seq_label(seq_id)})"


# ---- what a step records ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One thing that happened. `page_ids` are the pages involved (`cow`: (source, copy)); `detail` says more."""

    kind: str
    seq_ids: tuple[int, ...]  # fork: (parent, child); contiguous admission: every sample of the request
    page_ids: tuple[int, ...] = ()
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ConfigError(f"unknown event kind {self.kind!r}; choose from {', '.join(EVENT_KINDS)}")


@dataclass(frozen=True)
class PageView:
    """One physical page at one instant."""

    page_id: int
    ref_count: int
    num_tokens: int
    owner_ids: tuple[int, ...]  # sequences whose page table points at this page
    state: str  # one of PAGE_STATES

    def __post_init__(self) -> None:
        if self.state not in PAGE_STATES:
            raise ConfigError(f"unknown page state {self.state!r}")
        if len(self.owner_ids) != self.ref_count:  # every reference is one page table
            raise ConfigError(f"page {self.page_id}: ref_count {self.ref_count} but owners {self.owner_ids}")


@dataclass(frozen=True)
class PoolView:
    """The whole page pool at one instant, page id order."""

    page_size: int
    pages: tuple[PageView, ...]

    def count(self, state: str) -> int:
        """Pages in `state` (free, cached, used, shared)."""
        return sum(1 for p in self.pages if p.state == state)

    @property
    def num_in_use(self) -> int:
        return sum(1 for p in self.pages if p.ref_count > 0)

    @property
    def num_slack_tokens(self) -> int:
        """Token slots in pages in use that hold no token (the tail of each last page)."""
        return sum(self.page_size - p.num_tokens for p in self.pages if p.ref_count > 0)

    @property
    def num_saved_pages(self) -> int:
        """Pages sharing avoided storing twice: sum of (ref_count - 1)."""
        return sum(p.ref_count - 1 for p in self.pages if p.ref_count > 1)


@dataclass(frozen=True)
class TableView:
    """One sequence's page table (logical index = position in `page_ids`) and status."""

    seq_id: int
    status: str  # SequenceStatus name: WAITING, RUNNING, PREEMPTED, FINISHED
    page_ids: tuple[int, ...]
    num_tokens: int
    num_cached_tokens: int  # leading tokens served from the prefix cache at the last admission


@dataclass(frozen=True)
class Reservation:
    """One sequence's region of the contiguous slab."""

    seq_id: int
    start: int
    length: int
    num_tokens: int  # tokens it holds now

    @property
    def num_slack(self) -> int:
        return self.length - self.num_tokens


@dataclass(frozen=True)
class SlabView:
    """The contiguous cache at one instant: reservations, holes, and who could not be placed."""

    num_slots: int
    policy: str  # one of SLAB_POLICIES
    reservations: tuple[Reservation, ...]
    free_extents: tuple[tuple[int, int], ...]  # (start, length), lowest address first
    waiting_ids: tuple[int, ...]  # sequences the paged cache runs but the slab could not place

    @property
    def num_reserved(self) -> int:
        return sum(r.length for r in self.reservations)

    @property
    def num_slack(self) -> int:
        return sum(r.num_slack for r in self.reservations)

    @property
    def num_free(self) -> int:
        return self.num_slots - self.num_reserved

    @property
    def largest_free_extent(self) -> int:
        return max((n for _, n in self.free_extents), default=0)


@dataclass(frozen=True)
class Step:
    """One moment of a scenario: what happened (events, sentence) and both caches afterwards."""

    title: str
    sentence: str
    events: tuple[Event, ...]
    pool: PoolView
    tables: tuple[TableView, ...]
    contiguous: SlabView

    def kinds(self) -> list[str]:
        """Event kinds in order (what the tests assert on)."""
        return [e.kind for e in self.events]


# ---- the driver ---------------------------------------------------------------------------------------------

class Walkthrough:
    """Plays requests through a BlockManager and a contiguous slab of the same size, recording `Step`s."""

    def __init__(self, num_pages: int, page_size: int, max_model_len: int, *, policy: str = "max") -> None:
        if policy not in SLAB_POLICIES:
            raise ConfigError(f"unknown slab policy {policy!r}; choose from {', '.join(SLAB_POLICIES)}")
        self.blocks = BlockManager(num_pages, page_size, enable_prefix_caching=True)
        self.slab = ExtentAllocator(num_pages * page_size)  # same bytes: one slot per token
        self.page_size, self.max_model_len, self.policy = page_size, max_model_len, policy
        self.seqs: dict[int, Sequence] = {}
        self.steps: list[Step] = []
        self._max_len: dict[int, int] = {}  # seq_id -> final length (prompt + output)
        self._running_ids: list[int] = []  # admission order: the last one is preempted first
        self._slab_start: dict[int, int] = {}  # seq_id -> first slot of its region
        self._slab_waiting: list[list[int]] = []  # requests (all their samples) not yet placed, arrival order
        self._events: list[Event] = []
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
            for child_id in range(seq_id + 1, seq_id + num_samples):
                child = seq.fork(child_id)
                self.blocks.fork(seq, child)
                self.seqs[child_id], self._max_len[child_id] = child, max_len
                self._running_ids.append(child_id)
                group.append(child_id)
                self._emit("fork", (seq_id, child_id), seq.page_table.page_ids,
                           f"{seq_name(child_id)} points at all {seq.num_pages} pages of {seq_name(seq_id)}")
        self._slab_waiting.append(group)
        self._place_waiting(announce_ids=frozenset(group))

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
        if seq_id in self._slab_start:
            start = self._slab_start.pop(seq_id)
            self._emit("release_contiguous", (seq_id,), (),
                       f"slots {start}-{start + self.slab.extent_length(start) - 1} released")
            self.slab.free(start)
        else:  # the slab never got to start it
            self._slab_waiting = [[i for i in g if i != seq_id] for g in self._slab_waiting]
            self._slab_waiting = [g for g in self._slab_waiting if g]
        self._place_waiting()

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
        self.slab.check_invariants()
        snapshot = Step(title, sentence, tuple(self._events), self.pool_view(), self._table_views(),
                        self._slab_view())
        self._events.clear()
        self.steps.append(snapshot)
        return snapshot

    def pending(self, kind: str) -> list[Event]:
        """Events of `kind` since the last step (scenarios quote their numbers in the sentence)."""
        return [e for e in self._events if e.kind == kind]

    # ---- paged side ---------------------------------------------------------------------------------------
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
        evicted = tuple(i for i, h in cached_before.items() if self.blocks.page(i).content_hash != h)
        if evicted:
            self._emit("evict", (), evicted, f"no fresh page left: {len(evicted)} cached prefix page(s) reused")

    # ---- contiguous side ----------------------------------------------------------------------------------
    def _reservation(self, seq_id: int) -> int:
        return self.max_model_len if self.policy == "max" else self._max_len[seq_id]

    def _place_waiting(self, announce_ids: frozenset[int] = frozenset()) -> None:
        """Place every waiting request that fits (all its samples or none), first fit, arrival order."""
        still_waiting = []
        for group in self._slab_waiting:
            starts = []
            for seq_id in group:
                start = self.slab.allocate(self._reservation(seq_id))
                if start is None:
                    break
                starts.append(start)
            if len(starts) < len(group):  # roll back: a request is placed whole or not at all
                for start in starts:
                    self.slab.free(start)
                still_waiting.append(group)
                if announce_ids & set(group):
                    self._emit("admit_fail_contiguous", tuple(group), (),
                               f"needs {len(group)} x {self._reservation(group[0])} contiguous slots; "
                               f"{self.slab.num_free_slots} free in total, largest hole "
                               f"{self.slab.largest_free_extent}: it waits")
                continue
            for seq_id, start in zip(group, starts):
                self._slab_start[seq_id] = start
            regions = (f"{seq_label(i)}: slots {s}-{s + self._reservation(i) - 1}" for i, s in zip(group, starts))
            self._emit("reserve_contiguous", tuple(group), (), ", ".join(regions))
        self._slab_waiting = still_waiting

    # ---- views --------------------------------------------------------------------------------------------
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

    def _table_views(self) -> tuple[TableView, ...]:
        return tuple(TableView(s.seq_id, s.status.name, tuple(self.blocks.seq_page_ids(s)), s.num_tokens,
                               s.num_cached_tokens) for _, s in sorted(self.seqs.items()))

    def _slab_view(self) -> SlabView:
        reservations = tuple(sorted(
            (Reservation(i, start, self.slab.extent_length(start),
                         min(self.seqs[i].num_tokens, self.slab.extent_length(start)))
             for i, start in self._slab_start.items()), key=lambda r: r.start))
        waiting = tuple(i for group in self._slab_waiting for i in group)
        return SlabView(self.slab.num_slots, self.policy, reservations, tuple(self.slab.free_extents()), waiting)

    def _emit(self, kind: str, seq_ids: tuple[int, ...], page_ids: SequenceABC[int], detail: str) -> None:
        self._events.append(Event(kind, tuple(seq_ids), tuple(page_ids), detail))


# ---- scenarios ----------------------------------------------------------------------------------------------

SYSTEM_PROMPT = tuple(range(11, 19))  # 8 tokens = 2 pages of 4, shared by several requests


def _ids(events: list[Event]) -> str:
    """'pages 3, 7' from the page ids of some events."""
    page_ids = [i for e in events for i in e.page_ids]
    return ("page " if len(page_ids) == 1 else "pages ") + ", ".join(map(str, page_ids))


def tour() -> list[Step]:
    """Prefix sharing, parallel sampling with copy-on-write, preemption, and pages coming back: one story."""
    w = Walkthrough(num_pages=24, page_size=4, max_model_len=32)
    w.step("An empty pool", "24 pages of 4 tokens = 96 token slots. The contiguous cache beside it gets the same "
           "96 slots and reserves max_model_len = 32 of them for every sequence, whatever its real length.")
    w.arrive(0, SYSTEM_PROMPT + (21, 22, 23), max_len=28)
    w.step("A request arrives", "seq 0 (A) brings an 8-token system prompt and a 3-token question: 11 tokens fill "
           "3 pages; its 2 full pages get a content hash so later requests can find them. The contiguous cache "
           "reserves 32 slots for the same 11 tokens.")
    w.arrive(1, SYSTEM_PROMPT + (31, 32, 33, 34, 35), max_len=28)
    hit = w.pending("prefix_hit")
    w.step("Same system prompt: a prefix-cache hit",
           f"seq 1 (B) starts with the same system prompt: {_ids(hit)} are found by hash and shared "
           f"(ref_count 1 -> 2), so B needs only {len(w.pending('allocate')[0].page_ids)} new pages. The "
           "contiguous cache stores the system prompt a second time.")
    w.arrive(2, (41, 42, 43, 44, 45, 46), max_len=24, num_samples=2)
    w.step("Parallel sampling: fork",
           "seq 2 (C) asks for 2 samples: its 6 prompt tokens fill 2 pages, and the second sample seq 3 (D) is a "
           "fork that points at the same 2 pages (ref_count 2): no copy, no new memory. The contiguous cache needs "
           "2 x 32 slots for this request but has 32 left: it cannot admit it.")
    w.decode(1)
    cow = w.pending("cow")[0]
    w.step("First sampled token: copy-on-write",
           f"Everyone decodes one token. C's last page {cow.page_ids[0]} is half full and shared with D, so C "
           f"first copies it to page {cow.page_ids[1]} (copy-on-write), then writes; D now owns page "
           f"{cow.page_ids[0]} alone and writes in place. The full page stays shared.")
    w.decode(6)
    w.step("Growing page by page",
           f"Six more tokens each. A sequence takes a new page only when its last one is full "
           f"({len(w.pending('append_page'))} new pages this time), so at most 3 slots per sequence are ever "
           "empty. "
           "The contiguous reservations were sized for the worst case on arrival and do not move.")
    w.arrive(4, tuple(range(51, 68)), max_len=32)
    w.step("A long request",
           "seq 4 (E) brings a 17-token prompt: 5 pages. The contiguous cache puts it in its last free 32 slots: "
           f"it is now full, while the paged pool still has {w.blocks.num_free_pages} free pages.")
    w.decode(4)
    pre = w.pending("preempt")[0]
    w.step("Out of pages: preemption",
           f"Everyone decodes again until the pool runs dry: out of pages, {seq_name(pre.seq_ids[0])}, the last "
           f"one admitted, is preempted by recompute, {len(pre.page_ids)} pages returned; the others keep going. "
           "Its tokens are kept and it will be prefilled again when pages free up. The contiguous cache never "
           "preempts: it reserved the worst case up front, and pays for it by admitting fewer requests.")
    w.finish(0)
    w.finish(1)
    w.step("A and B finish",
           "A and B are done and return their pages. The shared system-prompt pages drop from ref_count 2 to 0 "
           f"but, like every full page, keep their content and hash: {w.blocks.num_cached_pages} pages are now "
           "cached (free, yet reusable by the next request with that prefix). In the contiguous cache the two "
           "freed regions merge into one hole of 64 slots: C and D get in at last.")
    w.resume(4)
    hit = w.pending("prefix_hit")
    w.step("E resumes",
           f"E is prefilled again. Its full pages were still in the prefix cache ({_ids(hit)}), so it gets them "
           f"back with no recompute and allocates only {len(w.pending('allocate')[0].page_ids)} page(s).")
    w.arrive(5, SYSTEM_PROMPT + (71, 72), max_len=20)
    w.step("The system prompt again",
           "seq 5 (F) starts with the system prompt: the cached pages go from ref_count 0 back to 1 with no new "
           "memory. The contiguous cache is full (C, D, E): F must wait there, although the paged pool serves it.")
    w.decode(2)
    for seq_id in (5, 2, 3, 4):
        w.finish(seq_id)
    w.step("Everyone finishes",
           "F, the shortest, finishes first: before the contiguous cache could even start it. Then the others: "
           f"all pages are back, {w.blocks.num_cached_pages} of them still holding cached prefixes, reusable "
           "until fresh pages run out.")
    return w.steps


def prefix_sharing() -> list[Step]:
    """Chained page hashes: requests share a system prompt, a diverging one shares less, cached pages, eviction."""
    system = tuple(range(11, 23))  # 12 tokens = 3 full pages
    w = Walkthrough(num_pages=12, page_size=4, max_model_len=16)
    w.arrive(0, system + (31, 32, 33, 34), max_len=16)
    w.step("The first request", "seq 0 (A): a 12-token system prompt plus 4 tokens = 4 full pages. Each full page "
           "gets a hash of its tokens chained with the previous page's hash, and is registered in the prefix cache.")
    w.arrive(1, system + (41, 42, 43, 44), max_len=16)
    w.arrive(2, system + (51, 52, 53, 54), max_len=16)
    w.step("Two more with the same prompt",
           "B and C hash their first pages the same way and find A's pages: the 3 system-prompt pages now have "
           f"ref_count 3 and are stored once ({w.pool_view().num_saved_pages} pages saved). Each request only "
           "allocates its own last page. The contiguous cache holds three copies of the prompt.")
    w.arrive(3, system[:4] + tuple(range(61, 71)), max_len=16)
    w.step("A prompt that diverges",
           "D shares only the first 4 tokens: its page 1 differs, and since every hash covers the whole prefix "
           "before it, nothing after the first difference can match. D shares 1 page and allocates 3. The "
           "contiguous cache is full: D waits there.")
    for seq_id in (0, 1, 2):
        w.finish(seq_id)
    w.step("The sharers finish",
           "A, B and C finish. Every page they held reaches ref_count 0 except page 0, which D still uses. Being "
           f"full and hashed, they stay cached: {w.blocks.num_cached_pages} free pages that still know their "
           "content, ready for reuse.")
    w.arrive(4, system + (81, 82, 83), max_len=16)
    w.step("A hit on cached pages", "E starts with the system prompt when no one but D holds any of it: pages 1 "
           "and 2 come back from the cache (ref_count 0 -> 1), page 0 gets its second owner, and E skips "
           "recomputing 12 tokens.")
    w.arrive(5, tuple(range(91, 107)), max_len=16)
    evicted = w.pending("evict")
    num_evicted = sum(len(e.page_ids) for e in evicted)
    w.step("Memory pressure: eviction",
           f"F needs 4 pages but only {4 - num_evicted} fresh ones are left, so the least recently freed cached "
           f"pages ({_ids(evicted)}) are evicted and overwritten: a cached page is free memory first, a cache "
           "second.")
    return w.steps


def parallel_sampling() -> list[Step]:
    """One prompt, three samples: fork shares everything, copy-on-write splits only the partly filled page."""
    w = Walkthrough(num_pages=16, page_size=4, max_model_len=20)
    w.arrive(0, tuple(range(11, 21)), max_len=20, num_samples=3)
    w.step("Fork: three samples, one copy of the prompt",
           "seq 0 (A) prefills 10 tokens into 3 pages; samples B and C are forks: every page has ref_count 3. "
           "The contiguous cache reserves 3 x 20 slots and stores the prompt three times.")
    w.decode(1)
    cows = w.pending("cow")
    w.step("Copy-on-write",
           f"Each sample writes its first own token into the last page, which holds 2 tokens and is shared. A "
           f"copies it ({cows[0].page_ids[0]} -> {cows[0].page_ids[1]}), then B copies it "
           f"({cows[1].page_ids[0]} -> {cows[1].page_ids[1]}); C is then the only owner and writes in place. "
           "The 2 full pages stay shared: only the page being written is ever copied.")
    w.decode(3)
    w.step("Growing apart", "Three more tokens each: the samples fill their last pages and each opens a page "
           "of its own. The prompt pages are still stored once.")
    w.finish(1)
    w.step("A sample is dropped", "B ends early (a pruned beam): its own pages go back to the free list, while the "
           "shared prompt pages only drop from ref_count 3 to 2: they still belong to A and C.")
    w.finish(0)
    w.finish(2)
    w.step("All done", "A and C finish: every page is back; the full prompt pages stay cached for the next request "
           "with the same prompt.")
    return w.steps


def preemption() -> list[Step]:
    """Overcommitting the pool: paging admits more, and preempts by recompute when growth runs out of pages."""
    w = Walkthrough(num_pages=12, page_size=4, max_model_len=24)
    w.arrive(0, tuple(range(11, 21)), max_len=24)
    w.arrive(1, tuple(range(21, 30)), max_len=24)
    w.arrive(2, tuple(range(31, 39)), max_len=24)
    w.step("Three requests, 8 pages", "A, B and C need 3 + 3 + 2 pages now. Paging admits all three on what they "
           "hold today; the contiguous cache must reserve 24 slots each and has room for two: C waits there.")
    w.decode(4)
    w.step("Growing", "Four tokens each: whenever a last page fills, a sequence takes a fresh page. 1 page is left.")
    w.decode(4)
    pre = w.pending("preempt")
    w.step("Preemption by recompute",
           "The pool runs dry while the sequences grow. The most recently admitted sequence is preempted: "
           + "; ".join(e.detail.removeprefix("out of pages: ") for e in pre)
           + ". Its KV is thrown away, its tokens kept; it will be prefilled again, which costs compute, not memory.")
    w.finish(0)
    w.resume(2)
    hits = w.pending("prefix_hit")
    w.step("A finishes, C resumes",
           "A's pages come back and C is prefilled again (prompt + the tokens it had generated). "
           + (f"{_ids(hits)} of C were still cached, so only the rest is recomputed. " if hits else "")
           + "In the contiguous cache C finally gets A's region.")
    w.decode(2)
    w.finish(1)
    w.finish(2)
    w.step("Done", "B and C finish; every page is back in the pool.")
    return w.steps


def fragmentation() -> list[Step]:
    """External fragmentation of a contiguous slab: free memory in total, but no hole long enough."""
    w = Walkthrough(num_pages=24, page_size=4, max_model_len=32, policy="exact")
    for seq_id, (prompt_len, max_len) in enumerate([(22, 24), (14, 16), (22, 24), (14, 16), (14, 16)]):
        w.arrive(seq_id, tuple(range(100 * (seq_id + 1), 100 * (seq_id + 1) + prompt_len)), max_len=max_len)
    w.step("Five requests fill both caches",
           "The contiguous cache here is the generous kind: it reserves each request's exact final length "
           "(24, 16, 24, 16, 16 slots, end to end). The paged pool holds the same five in 24 pages.")
    w.finish(1)
    w.finish(3)
    w.step("B and D finish", "Two 16-slot regions come free in the slab, with C between them: 32 slots free in "
           f"total, in two holes of 16. The paged pool simply has {w.blocks.num_free_pages} free pages.")
    w.arrive(5, tuple(range(700, 722)), max_len=24)
    w.step("No hole long enough",
           f"F needs 24 slots. The slab has {w.slab.num_free_slots} free, "
           f"but its largest hole is {w.slab.largest_free_extent}: F cannot be admitted. The paged cache gives F "
           "6 of its 8 free pages, wherever they are: a page table does not need neighbours.")
    w.finish(0)
    w.step("A finishes", "Only when A's 24 slots come free does the slab find a hole long enough for F. Paging "
           "never waited.")
    return w.steps


SCENARIOS: dict[str, tuple[Callable[[], list[Step]], str]] = {
    "tour": (tour, "prefix sharing, fork, copy-on-write, preemption and pages coming back, in one story"),
    "prefix-sharing": (prefix_sharing, "chained page hashes, shared system prompts, cached pages, eviction"),
    "parallel-sampling": (parallel_sampling, "parallel sampling / beam search: fork and copy-on-write"),
    "preemption": (preemption, "paging overcommits; when pages run out it preempts by recompute"),
    "fragmentation": (fragmentation, "a contiguous slab with free memory but no hole long enough"),
}


def run_scenario(name: str) -> list[Step]:
    """The steps of scenario `name` (ConfigError for an unknown one)."""
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    return SCENARIOS[name][0]()
