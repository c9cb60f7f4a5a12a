"""`BlockManager`: hands out physical pages to sequences, shares them by reference count, caches prefixes.

Every page is in exactly one of three places: fresh (free, holding nothing reusable), the prefix cache's LRU
(free, but holding a registered full page: reused on a hit, evicted oldest first when no fresh page is left), or
used (ref_count > 0: in the page tables of one or more sequences). Every call is O(pages it touches), memory is
O(pages in use or cached): pages materialise on first use, fresh ids come from a counter (core/free_pages.py).
A decode token landing in its sequence's own last page touches no page: that page's fill is read from its table
(`_tails`) until it closes, is shared or freed, so a decode step costs one integer test per sequence plus
O(pages opened or copied). Failure is all-or-nothing: each mutating call checks first (`OutOfPagesError`,
`SequenceStateError`), then mutates.

Caveat: prefix hits may reference pages registered at `allocate` (or `extend`) time, before their K/V is
computed, so a backend must write a step's K/V before attention reads it (true for one packed step per layer).
"""

from __future__ import annotations

from pabench.errors import ConfigError, OutOfPagesError, SequenceStateError
from pabench.core.free_pages import FreshPages, LivePages
from pabench.core.hashing import PrefixCache, page_token_ids
from pabench.core.page import FrozenPage, Page
from pabench.core.page_table import PageTable
from pabench.core.sequence import Sequence


class BlockManager:
    """Page allocator with reference counting, copy-on-write and (optional) chained-hash prefix caching."""

    def __init__(self, num_pages: int, page_size: int, enable_prefix_caching: bool = False, *,
                 shuffle_seed: int | None = None) -> None:
        """`shuffle_seed` permutes the initial free order so a sequence's pages are not accidentally contiguous
        (a seeded affine permutation, O(1) memory; see `affine_permutation`)."""
        if not isinstance(num_pages, int) or num_pages <= 0:
            raise ConfigError(f"num_pages must be a positive int, got {num_pages!r}")
        if not isinstance(page_size, int) or page_size <= 0:
            raise ConfigError(f"page_size must be a positive int, got {page_size!r}")
        self._num_pages, self._page_size = num_pages, page_size
        self._enable_prefix_caching = bool(enable_prefix_caching)
        self._pages = LivePages()  # page_id -> Page, only for pages in use or cached
        self._fresh = FreshPages(num_pages, shuffle_seed)
        self._prefix_cache = PrefixCache(self._pages, page_size)
        self.prefix_hit_tokens = 0  # prompt tokens served from the cache, summed over allocate calls
        self.prefix_query_tokens = 0  # tokens looked up, summed over allocate calls (prefix caching on)
        self.num_cow_copies = 0
        # Kept up to date by every mutation, so memory accounting is O(1) per step instead of a pass over tables:
        self._num_filled_slots = 0  # sum of num_tokens over used pages (shared pages once)
        self._num_page_refs = 0  # sum of ref_count over pages = total length of all page tables
        # Exclusive last pages whose `Page.num_tokens` is stale: their fill is their table's (`_fill`).
        self._tails: dict[int, PageTable] = {}

    # ---- sizes and counters ------------------------------------------------------------------------
    @property
    def num_pages(self) -> int:
        """Pages in the pool, free or used."""
        return self._num_pages

    @property
    def page_size(self) -> int:
        """Tokens per page."""
        return self._page_size

    @property
    def enable_prefix_caching(self) -> bool:
        """Whether full pages are hashed and shared between sequences with the same prefix."""
        return self._enable_prefix_caching

    @property
    def num_free_pages(self) -> int:
        """Pages with ref_count 0 (cached prefix pages included: they are evicted on demand)."""
        return len(self._fresh) + len(self._prefix_cache)

    @property
    def num_used_pages(self) -> int:
        """Pages with ref_count > 0."""
        return self._num_pages - self.num_free_pages

    @property
    def num_filled_slots(self) -> int:
        """Token slots filled in used pages, each shared page counted once: the tokens the cache really holds."""
        return self._num_filled_slots

    @property
    def num_page_refs(self) -> int:
        """Page-table entries over all sequences; minus `num_used_pages`, the pages that sharing saves."""
        return self._num_page_refs

    @property
    def num_cached_pages(self) -> int:
        """Free pages that still hold a reusable, hashed full page."""
        return len(self._prefix_cache)

    @property
    def cached_page_ids(self) -> list[int]:
        """Cached pages in eviction order (next evicted first)."""
        return self._prefix_cache.cached_page_ids

    @property
    def usage(self) -> float:
        """Share of pages in use, 0.0..1.0."""
        return self.num_used_pages / self._num_pages

    @property
    def prefix_hit_rate(self) -> float:
        """Tokens served from the prefix cache / tokens looked up (0.0 before any lookup)."""
        return self.prefix_hit_tokens / self.prefix_query_tokens if self.prefix_query_tokens else 0.0

    def page(self, page_id: int) -> FrozenPage:
        """Read-only snapshot of one page."""
        if not isinstance(page_id, int) or not 0 <= page_id < self._num_pages:
            raise ConfigError(f"page_id must be in 0..{self._num_pages - 1}, got {page_id!r}")
        snapshot = self._pages.peek(page_id).frozen()
        if page_id in self._tails:  # the page's fill follows its table
            object.__setattr__(snapshot, "num_tokens", self._tails[page_id].last_page_tokens)
        return snapshot

    def pages_needed(self, num_tokens: int) -> int:
        """Pages that hold `num_tokens` tokens: ceil(num_tokens / page_size)."""
        if num_tokens < 0:
            raise ConfigError(f"num_tokens must be >= 0, got {num_tokens}")
        return -(-num_tokens // self._page_size)

    def seq_page_ids(self, seq: Sequence) -> list[int]:
        """Physical page ids of `seq` (empty when it holds none)."""
        return [] if seq.page_table is None else seq.page_table.page_ids

    # ---- prefill -----------------------------------------------------------------------------------
    def can_allocate(self, seq: Sequence, max_new_tokens: int | None = None) -> bool:
        """Whether `allocate(seq, max_new_tokens)` would succeed now (prefix hits counted)."""
        self._require_no_table(seq, "can_allocate")
        hit_ids = self._match_prefix(seq)[0]
        return self._num_missing(seq, hit_ids, self._first_end(seq, hit_ids, max_new_tokens)) <= 0

    def allocate(self, seq: Sequence, max_new_tokens: int | None = None) -> None:
        """Give `seq` a page table covering all its tokens, reusing cached prefix pages when enabled; with
        `max_new_tokens` (a chunked prefill's first chunk) only the cached prefix and that many tokens after it."""
        self._require_no_table(seq, "allocate")
        hit_ids, parent = self._match_prefix(seq)
        end = self._first_end(seq, hit_ids, max_new_tokens)
        missing = self._num_missing(seq, hit_ids, end)
        if missing > 0:
            num_new = self.pages_needed(end) - len(hit_ids)
            raise OutOfPagesError(num_new, num_new - missing, f"allocate seq {seq.seq_id}")
        table = PageTable(self._page_size)  # checks done: mutate from here on
        for page_id in hit_ids:
            page = self._pages[page_id]
            if page.ref_count == 0:
                self._prefix_cache.revive(page_id)
                self._num_filled_slots += page.num_tokens
            page.ref_count += 1
            table.append(page_id)
        num_full = end // self._page_size
        for index in range(len(hit_ids), self.pages_needed(end)):
            page = self._pages[self._take_free_page()]
            page.ref_count = 1
            page.num_tokens = min(self._page_size, end - index * self._page_size)
            self._num_filled_slots += page.num_tokens
            if self._enable_prefix_caching and index < num_full:
                tokens = page_token_ids(seq.token_ids, index, self._page_size)
                parent = self._prefix_cache.register(page, parent, tokens)
            table.append(page.page_id)
        table._num_tokens = end
        self._tails[table[-1]] = table  # a fresh page (hits never reach the last token): its fill is the table's
        seq.page_table = table
        self._num_page_refs += len(table)
        seq.num_cached_tokens = len(hit_ids) * self._page_size
        if self._enable_prefix_caching:
            self.prefix_hit_tokens += seq.num_cached_tokens
            self.prefix_query_tokens += seq.num_tokens

    def extend(self, seq: Sequence, num_tokens: int) -> None:
        """Cover positions up to `num_tokens` (the next chunk of a chunked prefill): fresh pages for the chunk, and
        with prefix caching the pages it fills are hashed (their K/V is computed in the chunk's step)."""
        table = seq.page_table
        if table is None or not table._num_tokens <= num_tokens <= seq.num_tokens or table._shared_tail:
            raise SequenceStateError(f"extend: sequence {seq.seq_id} cannot grow to {num_tokens} tokens ({table})")
        need = self.pages_needed(num_tokens) - len(table)
        if need > self.num_free_pages:
            raise OutOfPagesError(need, self.num_free_pages, f"extend seq {seq.seq_id}")
        self._settle_tail(table)
        ps, page_ids, first = self._page_size, table._page_ids, len(table) - 1
        for index in range(first, self.pages_needed(num_tokens)):
            page = self._pages[page_ids[index] if index == first else self._take_free_page()]
            if index > first:
                page.ref_count = 1
                page_ids.append(page.page_id)
                self._num_page_refs += 1
            fill = min(ps, num_tokens - index * ps)
            self._num_filled_slots += fill - page.num_tokens
            page.num_tokens = fill
            if self._enable_prefix_caching and fill == ps and page.content_hash is None:
                self._prefix_cache.register_decoded(page_ids, seq._token_ids, index)
        table._num_tokens = num_tokens
        self._tails[page_ids[-1]] = table

    # ---- decode ------------------------------------------------------------------------------------
    def can_append(self, seq: Sequence) -> bool:
        """Whether the pool can give a slot to the newest token (or, if it already has one, to the next)."""
        covered = self._coverage(seq)  # a fresh page is needed to open a page, or to copy a shared last one
        needs_page = covered % self._page_size == 0 or self._pages[seq.page_table[-1]].ref_count > 1
        return not needs_page or self.num_free_pages > 0

    def append_slot(self, seq: Sequence) -> tuple[int, int] | None:
        """Make the page table cover `seq.num_tokens` (call once after each `seq.append_token`).

        Returns `(src_page_id, dst_page_id)` when the last page was shared and had to be copied
        (copy-on-write: the backend copies the page's K/V), else None. With prefix caching, a page filled
        during decode is hashed and registered when the next page opens (its K/V is computed by then).
        """
        covered = self._coverage(seq)
        if covered == len(seq._token_ids):
            return None  # already covered
        table = seq.page_table
        if covered % self._page_size and not table._shared_tail:  # (3), the common case: room in its own last page
            table._num_tokens = covered + 1
            self._num_filled_slots += 1
            return None
        return self._grow_tail(seq, table, covered)

    def _grow_tail(self, seq: Sequence, table: PageTable, covered: int) -> tuple[int, int] | None:
        """`append_slot` for a checked table that covers all but the newest token, when that token opens a page
        (1) or lands in a last page that may be shared (2)."""
        ps = self._page_size
        last = self._pages[table._page_ids[-1]]
        if covered % ps and last.ref_count == 1:  # flagged shared, but its sharers are gone: (3) from now on
            table._shared_tail = False
            self._tails[last.page_id] = table
            table._num_tokens = covered + 1
            self._num_filled_slots += 1
            return None
        page_id = self._take_free_page()  # (1) and (2) need exactly one page; None: none left, nothing changed
        if page_id is None:
            raise OutOfPagesError(1, 0, f"append_slot seq {seq.seq_id}")
        page_ids, tails = table._page_ids, self._tails
        if covered % ps == 0:  # (1) the new token opens a new page; the closed one's fill is final, on the page
            if tails.get(last.page_id) is table:
                del tails[last.page_id]
                last.num_tokens = ps
            if self._enable_prefix_caching and last.content_hash is None:
                self._prefix_cache.register_decoded(page_ids, seq._token_ids, len(page_ids) - 1)
            page = self._pages[page_id]
            page.ref_count, page.num_tokens = 1, 1
            page_ids.append(page_id)
            tails[page_id] = table
            table._num_tokens, table._shared_tail = covered + 1, False
            self._num_filled_slots += 1
            self._num_page_refs += 1
            return None
        # (2) the last page has room but is shared: copy-on-write (a shared page's num_tokens is exact, see fork)
        page = self._pages[page_id]
        page.ref_count, page.num_tokens = 1, last.num_tokens + 1
        last.ref_count -= 1  # still used: it was shared
        table.replace_last(page.page_id)
        self._tails[page.page_id] = table
        table._num_tokens, table._shared_tail = covered + 1, False
        self._num_filled_slots += page.num_tokens
        self.num_cow_copies += 1
        return last.page_id, page.page_id

    def append_slots(self, seqs: list[Sequence],
                     start: int = 0) -> tuple[int, list[tuple[int, tuple[int, int] | None]]]:
        """`append_slot` for `seqs[start:]` in order, the hot path of a decode step: `(stop, changed)`. `stop`: the
        first sequence that needed a page when none was free (it and those after it untouched), else `len(seqs)`;
        `changed`: `(index, copy)` per table that changed (a new page, or a copy-on-write `copy`)."""
        page_size, changed, num_filled = self._page_size, [], 0
        try:
            for i in range(start, len(seqs)):
                seq = seqs[i]
                # Once per sequence per decode step: append_slot's test (3) on the table's own fields, no Page
                # touched, no call (core-internal, benchmarks/NOTES.md); no table reads as -2 (the slow path).
                table = seq.page_table
                covered = table._num_tokens if table is not None else -2
                if covered % page_size and covered == len(seq._token_ids) - 1 and not table._shared_tail:
                    table._num_tokens = covered + 1
                    num_filled += 1
                    continue
                if table is not None and table._page_ids and covered == len(seq._token_ids) - 1:
                    try:
                        copy = self._grow_tail(seq, table, covered)  # a new page, or a shared last page
                    except OutOfPagesError:
                        return i, changed
                    if copy is not None or not covered % page_size:  # a copy, or a page opened
                        changed.append((i, copy))
                else:
                    self.append_slot(seq)  # no table, or not one token behind: its checks raise or do nothing
        finally:
            self._num_filled_slots += num_filled
        return len(seqs), changed

    # ---- sharing and release -----------------------------------------------------------------------
    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Make `child` point at every page of `parent` (ref_count + 1 each). Needs no free page."""
        if parent is child or parent.page_table is None:
            raise SequenceStateError(f"fork needs a distinct parent that holds pages (parent {parent.seq_id})")
        self._require_no_table(child, "fork")
        if child.token_ids != parent.token_ids:
            raise SequenceStateError(f"child {child.seq_id} must have the parent's tokens (use parent.fork())")
        self._check_table(parent)
        table = parent.page_table
        for page_id in table:
            self._pages[page_id].ref_count += 1
        self._settle_tail(table)  # a shared page keeps its own fill
        table._shared_tail = True
        child.page_table = table.copy()
        self._num_page_refs += len(child.page_table)
        child.num_computed_tokens = parent.num_computed_tokens
        child.num_cached_tokens = parent.num_cached_tokens

    def free(self, seq: Sequence) -> None:
        """Release every page of `seq` (tail first, so LRU eviction takes tails first) and drop its table."""
        if seq.page_table is None:
            raise SequenceStateError(f"sequence {seq.seq_id} holds no pages (freed twice, or never allocated)")
        self._check_table(seq)
        self._settle_tail(seq.page_table)
        for page_id in reversed(seq.page_table.page_ids):
            page = self._pages[page_id]
            page.ref_count -= 1
            self._num_page_refs -= 1
            if page.ref_count > 0:
                continue
            self._num_filled_slots -= page.num_tokens
            if self._prefix_cache.is_registered(page):
                self._prefix_cache.park(page_id)  # free, but its prefix stays reusable
            else:
                del self._pages[page_id]  # back to the defaults: a fresh page costs no memory
                self._fresh.put(page_id)
        seq.page_table = None

    # ---- internals ---------------------------------------------------------------------------------
    def _require_no_table(self, seq: Sequence, what: str) -> None:
        if seq.page_table is not None:
            raise SequenceStateError(f"{what}: sequence {seq.seq_id} already has a page table")

    def _check_table(self, seq: Sequence) -> None:
        """Refuse a table this manager cannot have produced (other page size, bad id, page not held)."""
        table = seq.page_table
        if table.page_size != self._page_size:
            raise SequenceStateError(f"sequence {seq.seq_id}'s page table has page_size {table.page_size}, "
                                     f"this manager {self._page_size}")
        for page_id in table:
            if not 0 <= page_id < self._num_pages or self._pages.peek(page_id).ref_count <= 0:
                raise SequenceStateError(f"sequence {seq.seq_id} points at page {page_id}, which it does not hold")

    def _match_prefix(self, seq: Sequence) -> tuple[list[int], int | None]:
        """Cached pages equal to `seq`'s leading full pages, keeping >= 1 token to compute (it yields logits)."""
        if not self._enable_prefix_caching:
            return [], None
        return self._prefix_cache.match(seq.token_ids, (seq.num_tokens - 1) // self._page_size)

    def _first_end(self, seq: Sequence, hit_ids: list[int], max_new_tokens: int | None) -> int:
        """Tokens `allocate` covers: all of them, or the cached prefix plus `max_new_tokens`."""
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        return seq.num_tokens if max_new_tokens is None else min(seq.num_tokens, len(hit_ids) * self._page_size
                                                                  + max_new_tokens)

    def _num_missing(self, seq: Sequence, hit_ids: list[int], end: int) -> int:
        """Pages `allocate` lacks (<= 0 when it fits). Cached hit pages are reused, so not free for others."""
        num_new = self.pages_needed(end) - len(hit_ids)
        num_hit_cached = sum(1 for page_id in hit_ids if self._pages[page_id].ref_count == 0)
        return num_new - (self.num_free_pages - num_hit_cached)

    def _fill(self, page: Page) -> int:
        """Tokens in `page` now: its own count, or its table's for an exclusive last page (`_tails`)."""
        return self._tails[page.page_id].last_page_tokens if page.page_id in self._tails else page.num_tokens

    def _settle_tail(self, table: PageTable) -> None:
        """Write the fill of `table`'s last page back to the page, which stops following the table."""
        page_id = table._page_ids[-1] if table._page_ids else None
        if page_id is not None and self._tails.get(page_id) is table:
            self._pages[page_id].num_tokens = self._tails.pop(page_id).last_page_tokens

    def _coverage(self, seq: Sequence) -> int:
        """Tokens the table covers; raises unless coverage lags by 0 or 1 token."""
        table = seq.page_table
        if table is None or not table._page_ids:
            raise SequenceStateError(f"sequence {seq.seq_id} has no page table; allocate it first")
        covered = table._num_tokens
        if not 0 <= len(seq._token_ids) - covered <= 1:
            raise SequenceStateError(f"sequence {seq.seq_id} has {seq.num_tokens} tokens but its table covers "
                                     f"{covered}: call append_slot once per appended token")
        return covered

    def _take_free_page(self) -> int | None:
        """A page to overwrite: a fresh one, else evict the least recently freed cached page; None if neither."""
        if (page_id := self._fresh.take()) is not None:
            return page_id
        if not self._prefix_cache:
            return None
        page_id = self._prefix_cache.evict()
        self._pages[page_id].forget_content()
        return page_id

    def check_invariants(self) -> None:
        """Debug: assert the bookkeeping is consistent (tests only; core/invariants.py)."""
        from pabench.core.invariants import check_block_manager
        check_block_manager(self)

    def __repr__(self) -> str:
        return (f"BlockManager(pages={self._num_pages} x {self._page_size} tokens, used={self.num_used_pages}, "
                f"free={self.num_free_pages} (cached {self.num_cached_pages}), prefix={self._enable_prefix_caching})")
