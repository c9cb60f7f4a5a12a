"""Prefix caching: the chained content hash of full pages, and the cache of pages it indexes.

Page i's hash covers its own tokens AND (through `parent_hash`) every token before it, so two sequences
share page i only if their whole prefixes up to the end of page i are equal. Python's tuple hash is fast and
stable for ints; a hit is still verified by comparing `(parent_hash, token_ids)`, so a collision never shares.

`PrefixCache` owns the registry `content hash -> page id` and the LRU of *cached* pages: free
(ref_count 0) pages that still hold a registered full page, reusable on a hit, evicted oldest first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from collections.abc import Sequence as SequenceABC

from pabench.core.page import Page

ROOT_HASH = 0x9E3779B97F4A7C15  # stands in for the (absent) parent of a sequence's first page


def page_hash(parent_hash: int | None, token_ids: tuple[int, ...]) -> int:
    """Hash of one full page: its tokens chained with the previous page's hash (None for the first page)."""
    return hash((ROOT_HASH if parent_hash is None else parent_hash, token_ids))


def page_token_ids(token_ids: SequenceABC[int], page_index: int, page_size: int) -> tuple[int, ...]:
    """The tokens of logical page `page_index` (as a tuple: hashable and immutable)."""
    start = page_index * page_size
    return tuple(token_ids[start:start + page_size])


def chain_hashes(token_ids: SequenceABC[int], page_size: int, num_full_pages: int) -> list[int]:
    """Chained hashes of the first `num_full_pages` full pages of `token_ids` (for tests and tools)."""
    hashes: list[int] = []
    parent: int | None = None
    for i in range(num_full_pages):
        parent = page_hash(parent, page_token_ids(token_ids, i, page_size))
        hashes.append(parent)
    return hashes


class PrefixCache:
    """Registry of hashed full pages plus the LRU of free pages still holding one. Used by `BlockManager`."""

    def __init__(self, pages: Mapping[int, Page], page_size: int) -> None:
        self._pages = pages  # the manager's live pages, by id (shared, not copied); registered pages are live
        self._page_size = page_size
        self._hash_to_page: dict[int, int] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()  # cached page ids, first = evicted first

    def __len__(self) -> int:
        """Cached pages: free, but holding a reusable prefix page."""
        return len(self._lru)

    @property
    def cached_page_ids(self) -> list[int]:
        """Cached page ids, next to be evicted first."""
        return list(self._lru)

    def match(self, token_ids: SequenceABC[int], max_pages: int) -> tuple[list[int], int | None]:
        """Registered pages equal to the leading full pages of `token_ids`, up to `max_pages`, stopping at
        the first miss (a chain); also returns the hash of the last hit (the parent of the next page)."""
        hit_ids: list[int] = []
        parent: int | None = None
        for index in range(max_pages):
            page_tokens = page_token_ids(token_ids, index, self._page_size)
            content_hash = page_hash(parent, page_tokens)
            page_id = self._hash_to_page.get(content_hash)
            if page_id is None:
                break
            page = self._pages[page_id]
            if page.parent_hash != parent or page.token_ids != page_tokens:
                break  # hash collision: different content behind the same hash
            hit_ids.append(page_id)
            parent = content_hash
        return hit_ids, parent

    def register(self, page: Page, parent: int | None, token_ids: tuple[int, ...]) -> int:
        """Give a full page its chained hash; register it unless another page already holds that hash."""
        content_hash = page_hash(parent, token_ids)
        page.content_hash, page.parent_hash, page.token_ids = content_hash, parent, token_ids
        self._hash_to_page.setdefault(content_hash, page.page_id)
        return content_hash

    def register_decoded(self, page_ids: list[int], token_ids: list[int], index: int) -> None:
        """Hash logical page `index` of a sequence (its `page_ids`, its `token_ids`), filled during decode, if its
        chain of hashes is unbroken (an unhashed predecessor means no lookup could ever reach it)."""
        parent = None
        if index > 0:
            parent = self._pages[page_ids[index - 1]].content_hash
            if parent is None:
                return
        ps = self._page_size
        self.register(self._pages[page_ids[index]], parent, tuple(token_ids[index * ps:(index + 1) * ps]))

    def is_registered(self, page: Page) -> bool:
        """True when `page` is the one page a hit on its hash would return."""
        return page.content_hash is not None and self._hash_to_page.get(page.content_hash) == page.page_id

    def park(self, page_id: int) -> None:
        """A registered page reached ref_count 0: keep it, most recently freed (evicted last)."""
        self._lru[page_id] = None

    def revive(self, page_id: int) -> None:
        """A cached page got a hit: it is in use again, no longer evictable."""
        del self._lru[page_id]

    def evict(self) -> int:
        """Take the least recently freed cached page and unregister it; the caller wipes its content."""
        page_id, _ = self._lru.popitem(last=False)
        del self._hash_to_page[self._pages[page_id].content_hash]
        return page_id

    def check_invariants(self) -> None:
        """Debug: every cached page is free and registered; the registry points at pages with that hash."""
        for page_id in self._lru:
            page = self._pages[page_id]
            assert page.ref_count == 0 and self.is_registered(page), f"bad cached page: {page}"
        for content_hash, page_id in self._hash_to_page.items():
            assert self._pages[page_id].content_hash == content_hash, f"registry points at wrong page {page_id}"
        for page in self._pages.values():
            if page.content_hash is not None:
                assert page.num_tokens == self._page_size, f"hashed page is not full: {page}"
                assert page.content_hash == page_hash(page.parent_hash, page.token_ids), f"stale hash: {page}"
