"""`check_block_manager`: the debug scan behind `BlockManager.check_invariants()` (tests and walkthroughs only).

It reads the manager's private state on purpose: it is the manager's own self-check, kept in a file of its own so
the allocator itself stays short.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pabench.core.block_manager import BlockManager


def check_block_manager(bm: "BlockManager") -> None:
    """Debug: scan the live pages and the returned ids and assert the bookkeeping is consistent (tests only).

    Returned, cached and used pages are disjoint sets of ids that left the never-used range; their sizes summing
    to the number taken proves every page is in exactly one place without visiting the never-used ones."""
    returned, cached = list(bm._fresh.returned_ids()), set(bm._prefix_cache.cached_page_ids)
    assert len(set(returned)) == len(returned), "a page is twice in the fresh deque"
    for page_id in returned:
        assert page_id not in bm._pages, f"a fresh page keeps state: {bm._pages[page_id]}"
        assert bm._fresh.was_taken(page_id), f"page {page_id} is returned but was never handed out"
    used = []
    for page_id, table in bm._tails.items():  # each follows the one table it ends, unshared, in use
        assert table._page_ids[-1:] == [page_id] and not table._shared_tail, f"bad tail {page_id}: {table}"
        assert bm._pages.peek(page_id).ref_count >= 1 and 0 < table.last_page_tokens <= bm._page_size
    for page_id, page in bm._pages.items():
        assert page.page_id == page_id and bm._fresh.was_taken(page_id), f"live page never handed out: {page}"
        assert page.ref_count >= 0, f"negative ref_count: {page}"
        assert 0 <= bm._fill(page) <= bm._page_size, f"num_tokens out of range: {page}"
        assert (page_id in cached) == (page.ref_count == 0), f"page is neither free nor used, or both: {page}"
        assert page.content_hash is None or bm._enable_prefix_caching, f"hash without caching: {page}"
        if page.ref_count > 0:
            used.append(page)
    assert cached <= bm._pages.keys(), "a cached page has no state"
    bm._prefix_cache.check_invariants()
    assert bm._num_filled_slots == sum(bm._fill(page) for page in used), "filled-slot counter drifted"
    assert bm._num_page_refs == sum(page.ref_count for page in used), "page-ref counter drifted"
    assert len(returned) + len(cached) + len(used) == bm._fresh.num_taken, "a page was lost or counted twice"
    assert bm.num_free_pages + bm.num_used_pages == bm._num_pages

