"""BlockManager unit tests: allocation, prefix caching, copy-on-write, eviction, and all-or-nothing failure."""

import pytest

from pabench.core import BlockManager, ConfigError, OutOfPagesError, Sequence, SequenceStateError
from pabench.core.hashing import chain_hashes

PAGE = 4


def snapshot(bm: BlockManager, *seqs: Sequence) -> tuple:
    """Everything observable plus the private pools, so 'nothing changed' can be asserted exactly."""
    pages = tuple(bm.page(i) for i in range(bm.num_pages))
    tables = tuple((s.page_table.page_ids if s.page_table else None, s.num_cached_tokens) for s in seqs)
    return (pages, tuple(bm._fresh), tuple(bm.cached_page_ids), dict(bm._prefix_cache._hash_to_page), tables,
            bm.prefix_hit_tokens, bm.prefix_query_tokens, bm.num_cow_copies)


def tokens(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def ref_counts(bm: BlockManager, seq: Sequence) -> list[int]:
    return [bm.page(i).ref_count for i in seq.page_table]


# ---- construction ----------------------------------------------------------------------------------
@pytest.mark.parametrize("num_pages, page_size", [(0, 4), (-1, 4), (4, 0), (4, -2), (2.5, 4)])
def test_bad_sizes(num_pages, page_size):
    with pytest.raises(ConfigError):
        BlockManager(num_pages, page_size)


def test_fresh_manager():
    bm = BlockManager(8, 3)
    assert (bm.num_pages, bm.page_size, bm.enable_prefix_caching) == (8, 3, False)
    assert bm.num_free_pages == 8 and bm.num_used_pages == 0 and bm.num_cached_pages == 0
    assert bm.usage == 0.0 and bm.prefix_hit_rate == 0.0 and bm.num_cow_copies == 0
    assert [bm.pages_needed(n) for n in (0, 1, 3, 4, 6, 7)] == [0, 1, 1, 2, 2, 3]
    with pytest.raises(ConfigError):
        bm.page(8)
    with pytest.raises(ConfigError):
        bm.pages_needed(-1)
    bm.check_invariants()


def test_page_snapshot_is_read_only():
    bm = BlockManager(4, PAGE)
    seq = Sequence(0, tokens(5))
    bm.allocate(seq)
    view = bm.page(seq.page_table[0])
    with pytest.raises(AttributeError):
        view.ref_count = 0
    assert bm.page(seq.page_table[0]).ref_count == 1


def test_shuffled_free_order_is_seeded():
    a = BlockManager(64, PAGE, shuffle_seed=3)
    b = BlockManager(64, PAGE, shuffle_seed=3)
    seq_a, seq_b = Sequence(0, tokens(40)), Sequence(0, tokens(40))
    a.allocate(seq_a)
    b.allocate(seq_b)
    assert seq_a.page_table.page_ids == seq_b.page_table.page_ids
    assert seq_a.page_table.page_ids != list(range(10))


# ---- allocate / free -------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix_caching", [False, True])
@pytest.mark.parametrize("num_tokens", [1, 3, 4, 5, 12, 13])
def test_allocate_free_round_trip(prefix_caching, num_tokens):
    bm = BlockManager(10, PAGE, prefix_caching)
    seq = Sequence(0, tokens(num_tokens, start=1))
    assert bm.can_allocate(seq)
    bm.allocate(seq)
    n = bm.pages_needed(num_tokens)
    assert seq.num_pages == n and bm.num_used_pages == n and bm.num_free_pages == 10 - n
    assert len(set(seq.page_table)) == n and ref_counts(bm, seq) == [1] * n
    assert [bm.page(i).num_tokens for i in seq.page_table] == [PAGE] * (n - 1) + [num_tokens - (n - 1) * PAGE]
    assert seq.num_cached_tokens == 0
    bm.check_invariants()
    bm.free(seq)
    assert seq.page_table is None and bm.num_free_pages == 10 and bm.num_used_pages == 0
    bm.check_invariants()


def test_allocate_twice_and_double_free():
    bm = BlockManager(4, PAGE)
    seq = Sequence(0, tokens(5))
    bm.allocate(seq)
    with pytest.raises(SequenceStateError):
        bm.allocate(seq)
    with pytest.raises(SequenceStateError):
        bm.can_allocate(seq)
    bm.free(seq)
    with pytest.raises(SequenceStateError):
        bm.free(seq)
    with pytest.raises(SequenceStateError):
        bm.free(Sequence(1, [1]))  # never allocated
    assert bm.num_free_pages == 4
    bm.check_invariants()


@pytest.mark.parametrize("prefix_caching", [False, True])
def test_out_of_pages_on_allocate_changes_nothing(prefix_caching):
    bm = BlockManager(5, PAGE, prefix_caching)
    a = Sequence(0, tokens(9))  # 3 pages
    bm.allocate(a)
    big = Sequence(1, tokens(9, start=100))  # 3 more pages, only 2 free
    assert not bm.can_allocate(big)
    before = snapshot(bm, a, big)
    with pytest.raises(OutOfPagesError) as info:
        bm.allocate(big)
    assert (info.value.num_needed, info.value.num_free) == (3, 2)
    assert snapshot(bm, a, big) == before
    assert big.page_table is None
    bm.check_invariants()


def test_free_releases_tail_first_into_lru():
    bm = BlockManager(8, PAGE, enable_prefix_caching=True)
    seq = Sequence(0, tokens(13))  # 3 full hashed pages + 1 partial
    bm.allocate(seq)
    ids = seq.page_table.page_ids
    bm.free(seq)
    assert bm.cached_page_ids == [ids[2], ids[1], ids[0]]  # tail freed first = evicted first
    assert bm.num_cached_pages == 3 and bm.num_free_pages == 8
    assert bm.page(ids[3]).content_hash is None  # the partial page returned fresh


def test_foreign_table_refused():
    bm = BlockManager(4, PAGE)
    other = BlockManager(4, PAGE)
    seq = Sequence(0, tokens(5))
    other.allocate(seq)  # pages held in `other`, none in `bm`
    before = snapshot(bm)
    with pytest.raises(SequenceStateError):
        bm.free(seq)
    assert snapshot(bm) == before


# ---- prefix caching --------------------------------------------------------------------------------
def test_prefix_hit_shares_three_pages():
    bm = BlockManager(16, PAGE, enable_prefix_caching=True)
    prefix = tokens(3 * PAGE, start=10)
    a = Sequence(0, prefix + [1, 2])
    b = Sequence(1, prefix + [7])
    bm.allocate(a)
    assert ref_counts(bm, a) == [1, 1, 1, 1]
    used = bm.num_used_pages
    bm.allocate(b)
    assert b.page_table.page_ids[:3] == a.page_table.page_ids[:3]
    assert b.page_table[3] != a.page_table[3]
    assert ref_counts(bm, a)[:3] == [2, 2, 2]
    assert bm.num_used_pages == used + 1  # only the partial tail page is new
    assert b.num_cached_tokens == 3 * PAGE
    assert bm.prefix_hit_tokens == 3 * PAGE
    assert bm.prefix_query_tokens == a.num_tokens + b.num_tokens
    assert bm.prefix_hit_rate == pytest.approx(12 / 27)
    bm.check_invariants()


def test_hashes_are_chained():
    bm = BlockManager(16, PAGE, enable_prefix_caching=True)
    seq = Sequence(0, tokens(9))
    bm.allocate(seq)
    assert [bm.page(i).content_hash for i in seq.page_table][:2] == chain_hashes(seq.token_ids, PAGE, 2)
    # same second page, different first page: no hit on the second page either
    other = Sequence(1, [99] + tokens(8)[1:] + [5])
    bm.allocate(other)
    assert other.num_cached_tokens == 0


def test_hit_after_free_revives_cached_pages():
    bm = BlockManager(8, PAGE, enable_prefix_caching=True)
    prompt = tokens(2 * PAGE + 1)
    a = Sequence(0, prompt)
    bm.allocate(a)
    ids = a.page_table.page_ids
    bm.free(a)
    assert bm.num_cached_pages == 2 and bm.num_free_pages == 8
    b = Sequence(1, prompt)
    bm.allocate(b)
    assert b.page_table.page_ids[:2] == ids[:2] and b.num_cached_tokens == 2 * PAGE
    assert bm.num_cached_pages == 0 and bm.num_used_pages == 3
    assert ref_counts(bm, b) == [1, 1, 1]
    bm.check_invariants()


def test_partial_last_page_never_shared():
    bm = BlockManager(8, PAGE, enable_prefix_caching=True)
    a, b = Sequence(0, tokens(6)), Sequence(1, tokens(6))
    bm.allocate(a)
    bm.allocate(b)
    assert bm.page(a.page_table[1]).content_hash is None
    assert a.page_table[0] == b.page_table[0] and a.page_table[1] != b.page_table[1]
    assert b.num_cached_tokens == PAGE


@pytest.mark.parametrize("num_full_pages", [1, 2, 3])
def test_exact_full_pages_share_at_most_n_minus_1(num_full_pages):
    bm = BlockManager(16, PAGE, enable_prefix_caching=True)
    prompt = tokens(num_full_pages * PAGE)
    a, b = Sequence(0, prompt), Sequence(1, prompt)
    bm.allocate(a)
    bm.allocate(b)
    shared = [i for i, j in zip(a.page_table, b.page_table) if i == j]
    assert len(shared) == num_full_pages - 1
    assert b.num_cached_tokens == (num_full_pages - 1) * PAGE < b.num_tokens
    assert bm.num_used_pages == num_full_pages + 1
    bm.check_invariants()
    bm.free(a)
    bm.free(b)
    bm.check_invariants()
    assert bm.num_free_pages == 16


def test_can_allocate_counts_cached_hits_correctly():
    bm = BlockManager(3, PAGE, enable_prefix_caching=True)
    prompt = tokens(2 * PAGE + 1)  # 3 pages, 2 hashed
    a = Sequence(0, prompt)
    bm.allocate(a)
    bm.free(a)  # 2 cached + 1 fresh free
    b = Sequence(1, prompt)
    assert bm.can_allocate(b)  # 2 hits from cache + 1 fresh
    # a different prompt of 3 pages must evict both cached pages to fit
    c = Sequence(2, tokens(2 * PAGE + 1, start=50))
    assert bm.can_allocate(c)
    bm.allocate(c)
    assert bm.num_cached_pages == 0 and bm.num_free_pages == 0
    bm.check_invariants()
    # b would hit nothing now (evicted) and needs 3 pages: none free
    assert not bm.can_allocate(b)


def test_can_allocate_hit_pages_are_not_also_free_pages():
    bm = BlockManager(4, PAGE, enable_prefix_caching=True)
    prompt = tokens(2 * PAGE + 1)
    a = Sequence(0, prompt)
    bm.allocate(a)
    bm.free(a)  # free: 2 cached (prefix) + 2 fresh
    filler = Sequence(1, tokens(PAGE, start=90))
    bm.allocate(filler)  # takes 1 fresh -> free: 2 cached + 1 fresh
    b = Sequence(2, prompt + tokens(PAGE, start=200))  # 2 hits + 2 new pages, only 1 page besides the hits
    assert bm.num_free_pages == 3
    assert not bm.can_allocate(b)
    before = snapshot(bm, b)
    with pytest.raises(OutOfPagesError) as info:
        bm.allocate(b)
    assert (info.value.num_needed, info.value.num_free) == (2, 1)
    assert snapshot(bm, b) == before


def test_lru_eviction_order():
    bm = BlockManager(6, PAGE, enable_prefix_caching=True)
    x, y = Sequence(0, tokens(PAGE + 1, start=0)), Sequence(1, tokens(PAGE + 1, start=100))
    bm.allocate(x)
    bm.allocate(y)
    x_page, y_page = x.page_table[0], y.page_table[0]
    bm.free(y)
    bm.free(x)  # cached LRU: y's page (older) then x's page
    assert bm.cached_page_ids == [y_page, x_page]
    assert bm.num_cached_pages == 2
    big = Sequence(2, tokens(5 * PAGE, start=500))  # needs 5: 4 fresh + evict the oldest cached
    bm.allocate(big)
    assert y_page in big.page_table.page_ids and x_page not in big.page_table.page_ids
    assert bm.cached_page_ids == [x_page]
    bm.check_invariants()
    again_y = Sequence(3, tokens(PAGE + 1, start=100))
    again_x = Sequence(4, tokens(PAGE + 1, start=0))
    bm.free(big)
    bm.allocate(again_x)
    bm.allocate(again_y)
    assert again_x.num_cached_tokens == PAGE and again_x.page_table[0] == x_page
    assert again_y.num_cached_tokens == 0  # its page was evicted


def test_prefix_caching_off_never_shares():
    bm = BlockManager(8, PAGE, enable_prefix_caching=False)
    a, b = Sequence(0, tokens(9)), Sequence(1, tokens(9))
    bm.allocate(a)
    bm.allocate(b)
    assert not set(a.page_table) & set(b.page_table)
    assert b.num_cached_tokens == 0 and bm.prefix_query_tokens == 0
    assert all(bm.page(i).content_hash is None for i in range(8))


def test_hash_collision_is_not_shared(monkeypatch):
    import pabench.core.hashing as hashing

    monkeypatch.setattr(hashing, "page_hash", lambda parent, token_ids: 42)  # every page collides
    bm = BlockManager(8, PAGE, enable_prefix_caching=True)
    a, b = Sequence(0, tokens(5)), Sequence(1, tokens(5, start=7))
    bm.allocate(a)
    bm.allocate(b)
    assert b.num_cached_tokens == 0 and a.page_table[0] != b.page_table[0]
    c = Sequence(2, tokens(5))  # same content as a: the verified hit still works
    bm.allocate(c)
    assert c.num_cached_tokens == PAGE and c.page_table[0] == a.page_table[0]


# ---- decode: append_slot and copy-on-write ---------------------------------------------------------
def test_append_fills_then_opens_a_page():
    bm = BlockManager(4, PAGE)
    seq = Sequence(0, tokens(3))
    bm.allocate(seq)
    seq.append_token(3)
    assert bm.append_slot(seq) is None and seq.num_pages == 1
    assert bm.page(seq.page_table[0]).num_tokens == PAGE
    seq.append_token(4)
    assert bm.can_append(seq)
    assert bm.append_slot(seq) is None and seq.num_pages == 2
    assert bm.page(seq.page_table[1]).num_tokens == 1
    assert bm.append_slot(seq) is None and seq.num_pages == 2  # already covered: no-op
    bm.check_invariants()


def test_append_lagging_more_than_one_token_raises():
    bm = BlockManager(4, PAGE)
    seq = Sequence(0, tokens(3))
    with pytest.raises(SequenceStateError):
        bm.append_slot(seq)  # no table
    bm.allocate(seq)
    seq.append_token(1)
    seq.append_token(2)
    with pytest.raises(SequenceStateError):
        bm.append_slot(seq)
    with pytest.raises(SequenceStateError):
        bm.can_append(seq)


def test_fork_then_append_copies_once():
    bm = BlockManager(8, PAGE)
    parent = Sequence(0, tokens(6))  # pages: full, partial (2 tokens)
    bm.allocate(parent)
    child = parent.fork(1)
    bm.fork(parent, child)
    assert child.page_table.page_ids == parent.page_table.page_ids
    assert ref_counts(bm, parent) == [2, 2] and bm.num_used_pages == 2
    shared_tail = parent.page_table[1]
    child.append_token(50)
    copy = bm.append_slot(child)
    assert copy is not None and copy[0] == shared_tail
    assert child.page_table[1] == copy[1] != shared_tail and child.page_table[0] == parent.page_table[0]
    assert bm.page(copy[1]).num_tokens == 3 and bm.page(shared_tail).num_tokens == 2
    assert bm.page(shared_tail).ref_count == 1 and bm.num_cow_copies == 1
    # parent is now the sole owner of the old tail: no copy
    parent.append_token(60)
    assert bm.append_slot(parent) is None
    assert bm.num_cow_copies == 1 and bm.page(shared_tail).num_tokens == 3
    bm.check_invariants()


def test_second_child_owning_the_page_alone_needs_no_copy():
    bm = BlockManager(8, PAGE)
    parent = Sequence(0, tokens(5))
    bm.allocate(parent)
    c1, c2 = parent.fork(1), parent.fork(2)
    bm.fork(parent, c1)
    bm.fork(parent, c2)
    bm.free(parent)  # now the tail is shared by c1 and c2 only
    tail = c1.page_table[1]
    c1.append_token(7)
    assert bm.append_slot(c1) == (tail, c1.page_table[1])
    c2.append_token(8)
    assert bm.append_slot(c2) is None and c2.page_table[1] == tail
    assert bm.num_cow_copies == 1
    bm.check_invariants()


def test_full_shared_last_page_is_not_copied():
    bm = BlockManager(8, PAGE)
    parent = Sequence(0, tokens(PAGE))
    bm.allocate(parent)
    child = parent.fork(1)
    bm.fork(parent, child)
    child.append_token(1)
    assert bm.append_slot(child) is None  # new token opens a new page; the full one stays shared
    assert child.page_table[0] == parent.page_table[0] and bm.num_cow_copies == 0


def test_out_of_pages_on_append_changes_nothing():
    bm = BlockManager(2, PAGE)
    parent = Sequence(0, tokens(PAGE + 1))
    bm.allocate(parent)  # 2 pages, pool full
    child = parent.fork(1)
    bm.fork(parent, child)
    child.append_token(9)
    assert not bm.can_append(child)  # CoW needs a page
    before = snapshot(bm, parent, child)
    with pytest.raises(OutOfPagesError) as info:
        bm.append_slot(child)
    assert (info.value.num_needed, info.value.num_free) == (1, 0)
    assert snapshot(bm, parent, child) == before
    bm.check_invariants()
    bm.free(parent)  # now child owns everything alone: append fits in place
    assert bm.can_append(child) and bm.append_slot(child) is None


def test_out_of_pages_when_opening_a_page():
    bm = BlockManager(1, PAGE)
    seq = Sequence(0, tokens(PAGE))
    bm.allocate(seq)
    seq.append_token(1)
    before = snapshot(bm, seq)
    with pytest.raises(OutOfPagesError):
        bm.append_slot(seq)
    assert snapshot(bm, seq) == before


def test_decode_filled_page_is_registered_for_sharing():
    bm = BlockManager(8, PAGE, enable_prefix_caching=True)
    seq = Sequence(0, tokens(PAGE - 1))
    bm.allocate(seq)
    for t in (PAGE - 1, PAGE):  # fill page 0, then open page 1 -> page 0 gets hashed
        seq.append_token(t)
        bm.append_slot(seq)
    assert bm.page(seq.page_table[0]).content_hash == chain_hashes(seq.token_ids, PAGE, 1)[0]
    other = Sequence(1, tokens(PAGE + 2))
    bm.allocate(other)
    assert other.page_table[0] == seq.page_table[0] and other.num_cached_tokens == PAGE
    bm.check_invariants()


# ---- fork misuse -----------------------------------------------------------------------------------
def test_fork_misuse():
    bm = BlockManager(8, PAGE)
    parent = Sequence(0, tokens(5))
    child = parent.fork(1)
    with pytest.raises(SequenceStateError):
        bm.fork(parent, child)  # parent has no pages
    bm.allocate(parent)
    with pytest.raises(SequenceStateError):
        bm.fork(parent, parent)
    stranger = Sequence(2, tokens(5, start=1))
    with pytest.raises(SequenceStateError):
        bm.fork(parent, stranger)  # different tokens
    bm.fork(parent, child)
    with pytest.raises(SequenceStateError):
        bm.fork(parent, child)  # child already has pages
    assert ref_counts(bm, parent) == [2, 2]
    bm.check_invariants()


# ---- lazy pool: O(1) memory per page -----------------------------------------------------------------
def test_a_billion_page_pool_is_built_in_constant_time_and_memory():
    import time
    import tracemalloc

    tracemalloc.start()
    start = time.perf_counter()
    bm = BlockManager(10**9, PAGE, enable_prefix_caching=True, shuffle_seed=7)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 0.5 and peak < 64 * 1024, (seconds, peak)  # the old manager: one Page per page up front
    seq = Sequence(0, tokens(3 * PAGE + 1))
    bm.allocate(seq)
    assert bm.num_used_pages == 4 and bm.num_free_pages == 10**9 - 4
    assert all(bm.page(i).ref_count == 1 for i in seq.page_table)
    assert bm.page(10**9 - 1).ref_count in (0, 1)  # a never-used page reads as a fresh snapshot
    seq.append_token(0)
    bm.append_slot(seq)
    bm.free(seq)
    assert bm.num_used_pages == 0 and bm.num_free_pages == 10**9
    bm.check_invariants()  # visits live pages only, so it runs on a 10**9 pool too


def test_freed_fresh_pages_cost_no_memory():
    bm = BlockManager(64, PAGE)
    seqs = [Sequence(i, tokens(2 * PAGE)) for i in range(8)]
    for seq in seqs:
        bm.allocate(seq)
    for seq in seqs:
        bm.free(seq)
    assert len(bm._pages) == 0  # back at their defaults, pages are dropped (they read as fresh again)
    bm.check_invariants()


@pytest.mark.parametrize("num_pages", [1, 2, 3, 4, 5, 64, 97, 1000])
def test_shuffled_order_is_a_permutation_without_unit_strides(num_pages):
    bm = BlockManager(num_pages, PAGE, shuffle_seed=11)
    order = list(bm._fresh)
    assert sorted(order) == list(range(num_pages))
    if num_pages >= 5:  # a stride of one page (up or down) would make a sequence's pages adjacent
        steps = {(b - a) % num_pages for a, b in zip(order, order[1:])}
        assert steps.isdisjoint({1, num_pages - 1})


def test_free_order_without_a_seed_is_unchanged():
    bm = BlockManager(6, PAGE)
    a, b = Sequence(0, tokens(2 * PAGE)), Sequence(1, tokens(2 * PAGE))
    bm.allocate(a)
    bm.allocate(b)
    assert a.page_table.page_ids == [0, 1] and b.page_table.page_ids == [2, 3]
    bm.free(a)  # tail first: 1, then 0 go to the back of the fresh list, after the never-used 4 and 5
    c = Sequence(2, tokens(4 * PAGE))
    bm.allocate(c)
    assert c.page_table.page_ids == [4, 5, 1, 0]
