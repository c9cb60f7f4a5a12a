"""Hypothesis state machine: random allocate / append / fork / free / preempt against a shadow KV store.

The shadow store plays the backend: it writes each token into its slot and copies pages on copy-on-write.
If the manager ever shares a page it should not (wrong prefix hit, missed copy-on-write, reuse of a live
page), some live sequence reads back tokens that are not its own and the invariant fails.
"""

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pabench.core import BlockManager, OutOfPagesError, Sequence, SequenceStatus

ALPHABET = st.integers(0, 2)  # tiny, so equal prefixes (and thus prefix hits) are common


def snapshot(bm: BlockManager) -> tuple:
    pages = tuple(bm.page(i) for i in range(bm.num_pages))
    return (pages, tuple(bm._fresh), tuple(bm.cached_page_ids), dict(bm._prefix_cache._hash_to_page),
            bm.prefix_hit_tokens, bm.prefix_query_tokens, bm.num_cow_copies)


class BlockManagerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.bm: BlockManager | None = None
        self.live: dict[int, Sequence] = {}  # sequences holding pages
        self.waiting: dict[int, Sequence] = {}  # preempted: no pages, tokens kept
        self.kv: dict[int, list[int | None]] = {}  # page_id -> token written in each offset
        self.next_id = 0

    @initialize(num_pages=st.integers(2, 20), page_size=st.integers(1, 4), prefix_caching=st.booleans(),
                prefixes=st.lists(st.lists(ALPHABET, max_size=12), min_size=1, max_size=3),
                shuffle_seed=st.none() | st.integers(0, 2**63 - 1))
    def setup(self, num_pages, page_size, prefix_caching, prefixes, shuffle_seed):
        self.bm = BlockManager(num_pages, page_size, prefix_caching, shuffle_seed=shuffle_seed)
        self.prefixes = prefixes
        self.kv = {i: [None] * page_size for i in range(num_pages)}

    # ---- the backend's side: write K/V (here: the token id) into slots ------------------------------
    def write(self, seq: Sequence, start: int) -> None:
        size = self.bm.page_size
        for position in range(start, seq.num_tokens):
            page_id, offset = seq.page_table[position // size], position % size
            self.kv[page_id][offset] = seq.token_ids[position]

    def try_allocate(self, seq: Sequence) -> None:
        can = self.bm.can_allocate(seq)
        before = snapshot(self.bm)
        try:
            self.bm.allocate(seq)
        except OutOfPagesError:
            assert not can, "can_allocate said yes, allocate ran out of pages"
            assert snapshot(self.bm) == before and seq.page_table is None
            self.waiting[seq.seq_id] = seq
            return
        assert can, "can_allocate said no, allocate succeeded"
        assert seq.num_cached_tokens < seq.num_tokens
        if not self.bm.enable_prefix_caching:
            assert seq.num_cached_tokens == 0
        self.waiting.pop(seq.seq_id, None)
        seq.status = SequenceStatus.RUNNING
        self.write(seq, seq.num_cached_tokens)  # hit pages must already hold the right tokens
        seq.num_computed_tokens = seq.num_tokens
        self.live[seq.seq_id] = seq

    def preempt(self, seq: Sequence) -> None:
        self.bm.free(seq)
        seq.reset_for_recompute()
        del self.live[seq.seq_id]
        self.waiting[seq.seq_id] = seq

    # ---- rules -------------------------------------------------------------------------------------
    @rule(data=st.data(), suffix=st.lists(ALPHABET, max_size=6))
    def allocate_new(self, data, suffix):
        prefix = data.draw(st.sampled_from(self.prefixes))
        prefix = prefix[: data.draw(st.integers(0, len(prefix)))]
        token_ids = (prefix + suffix) or [0]
        seq = Sequence(self.next_id, token_ids)
        self.next_id += 1
        self.try_allocate(seq)

    @precondition(lambda self: self.waiting)
    @rule(data=st.data())
    def allocate_waiting(self, data):
        seq = self.waiting[data.draw(st.sampled_from(sorted(self.waiting)))]
        self.try_allocate(seq)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), token=ALPHABET)
    def append(self, data, token):
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        can_next = self.bm.can_append(seq)  # asked before the token exists: cost of the next token
        seq.append_token(token)
        assert self.bm.can_append(seq) == can_next
        before = snapshot(self.bm)
        try:
            copy = self.bm.append_slot(seq)
        except OutOfPagesError:
            assert not can_next and snapshot(self.bm) == before
            self.preempt(seq)  # what an engine does when it cannot grow a sequence
            return
        assert can_next
        if copy is not None:
            src, dst = copy
            assert src != dst and self.bm.page(src).ref_count >= 1
            self.kv[dst] = list(self.kv[src])
        self.write(seq, seq.num_tokens - 1)
        seq.num_computed_tokens = seq.num_tokens

    @precondition(lambda self: self.live)
    @rule(data=st.data(), tokens=st.lists(ALPHABET, min_size=4, max_size=4))
    def append_batch(self, data, tokens):
        """A decode step's `append_slots` over several sequences; those from `stop` on are preempted."""
        ids = data.draw(st.lists(st.sampled_from(sorted(self.live)), min_size=1, max_size=4, unique=True))
        seqs = [self.live[i] for i in ids]
        num_pages = [len(seq.page_table) for seq in seqs]
        for seq, token in zip(seqs, tokens):
            seq.append_token(token)
        stop, changed = self.bm.append_slots(seqs)
        copies = dict(changed)
        assert all(i < stop for i in copies)
        for i, seq in enumerate(seqs[:stop]):
            if i not in copies:
                assert len(seq.page_table) == num_pages[i]  # unchanged table: it filled its last page
            elif copies[i] is not None:
                src, dst = copies[i]
                self.kv[dst] = list(self.kv[src])
            self.write(seq, seq.num_tokens - 1)
            seq.num_computed_tokens = seq.num_tokens
        for seq in seqs[stop:]:
            self.preempt(seq)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def fork(self, data):
        parent = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        used = self.bm.num_used_pages
        child = parent.fork(self.next_id)
        self.next_id += 1
        self.bm.fork(parent, child)
        assert self.bm.num_used_pages == used  # sharing costs no page
        self.live[child.seq_id] = child

    @precondition(lambda self: self.live)
    @rule(data=st.data(), tokens=st.lists(ALPHABET, min_size=4, max_size=4), num_children=st.integers(1, 3))
    def beam_step(self, data, tokens, num_children):
        """One beam-search step: a beam chosen several times forks, another chosen never is pruned, then every
        survivor writes one token in one `append_slots` (copy-on-write wherever the last page is shared)."""
        ids = sorted(self.live)
        parent = self.live[data.draw(st.sampled_from(ids))]
        pruned = data.draw(st.sampled_from([None] + [i for i in ids if i != parent.seq_id]))
        if pruned is not None:
            self.bm.free(self.live.pop(pruned))  # its pages return before the forks write
        beams = [parent]
        for _ in range(num_children):
            child = parent.fork(self.next_id)
            self.next_id += 1
            self.bm.fork(parent, child)
            self.live[child.seq_id] = child
            beams.append(child)
        for seq, token in zip(beams, tokens):
            seq.append_token(token)
        stop, changed = self.bm.append_slots(beams)
        for i, copy in changed:
            if copy is not None:
                src, dst = copy
                self.kv[dst] = list(self.kv[src])
        for seq in beams[:stop]:
            self.write(seq, seq.num_tokens - 1)
            seq.num_computed_tokens = seq.num_tokens
        for seq in beams[stop:]:
            self.preempt(seq)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def finish(self, data):
        seq = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
        self.bm.free(seq)
        seq.status = SequenceStatus.FINISHED
        assert seq.page_table is None

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def preempt_one(self, data):
        self.preempt(self.live[data.draw(st.sampled_from(sorted(self.live)))])

    # ---- invariants ----------------------------------------------------------------------------------
    @invariant()
    def bookkeeping_consistent(self):
        if self.bm is None:
            return
        bm = self.bm
        bm.check_invariants()
        refs = Counter(page_id for seq in self.live.values() for page_id in seq.page_table)
        for page_id in range(bm.num_pages):
            page = bm.page(page_id)
            assert page.ref_count >= 0
            assert page.ref_count == refs[page_id], f"page {page_id}: ref {page.ref_count}, tables {refs[page_id]}"
        assert sum(bm.page(i).ref_count for i in range(bm.num_pages)) == sum(refs.values())
        assert bm.num_used_pages == len(refs) and bm.num_free_pages + bm.num_used_pages == bm.num_pages
        assert all(seq.page_table is None for seq in self.waiting.values())

    @invariant()
    def every_live_sequence_reads_back_its_tokens(self):
        if self.bm is None:
            return
        size = self.bm.page_size
        for seq in self.live.values():
            assert len(seq.page_table) == self.bm.pages_needed(seq.num_tokens)
            stored = [self.kv[seq.page_table[p // size]][p % size] for p in range(seq.num_tokens)]
            assert stored == seq.token_ids, f"seq {seq.seq_id} reads {stored}, owns {seq.token_ids}"

    def teardown(self):
        if self.bm is None:
            return
        for seq in list(self.live.values()):
            self.bm.free(seq)
        self.live.clear()
        self.bm.check_invariants()
        assert self.bm.num_free_pages == self.bm.num_pages and self.bm.num_used_pages == 0


BlockManagerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)
TestBlockManagerStateMachine = BlockManagerMachine.TestCase
