"""Paged and contiguous backends: exact token-level accounting, incremental block table, copy-on-write."""

import pytest
import torch

from pabench.backends import KVLayout, make_backend, parse_backends
from pabench.backends.contiguous import ContiguousBackend, reservation
from pabench.backends.paged import PagedBackend
from pabench.core import Sequence
from pabench.errors import ConfigError, OutOfPagesError

LAYOUT = KVLayout(num_layers=2, num_kv_heads=2, head_dim=8, dtype="fp32")
BPT = LAYOUT.bytes_per_token  # 2 * 2 * 2 * 8 * 4 = 256


def seq(i, n, base=0):
    return Sequence(i, [base + t for t in range(n)])


def check_table(b: PagedBackend, seqs):
    """The persistent device block table matches every live sequence's page table."""
    b.table.flush()
    for s in seqs:
        row = b.table.rows[s.seq_id]
        assert b.table.tensor[row, : len(s.page_table)].tolist() == s.page_table.page_ids


def test_paged_accounting_and_incremental_table():
    b = PagedBackend(LAYOUT, page_size=4, num_pages=16, max_num_seqs=4, max_model_len=64)
    a = seq(0, 6)
    assert b.can_admit(a, 10)
    b.admit(a, 10)
    m = b.memory()
    assert m.budget_bytes == 16 * 4 * BPT
    assert m.reserved_bytes == 2 * 4 * BPT  # 2 pages
    assert m.used_bytes == 6 * BPT and m.slack_bytes == 2 * BPT
    for t in range(3):  # grow 6 -> 9 tokens: crosses into page 3
        a.append_token(100 + t)
        assert b.can_grow(a)
        b.grow(a)
    check_table(b, [a])
    m = b.memory()
    assert m.reserved_bytes == 3 * 4 * BPT and m.used_bytes == 9 * BPT
    b.release(a)
    m = b.memory()
    assert m.reserved_bytes == 0 and m.idle_bytes == m.budget_bytes


def test_paged_fork_shares_then_copies_on_write():
    b = PagedBackend(LAYOUT, page_size=4, num_pages=16, max_num_seqs=4, max_model_len=64,
                     enable_prefix_caching=False)
    p = seq(0, 6)
    b.admit(p, 12)
    meta = b.prepare_prefill(p)
    k = torch.randn(6, 2, 8)  # [n, H, D]
    v = torch.randn(6, 2, 8)
    for layer in range(2):
        b.write_kv(layer, meta.slots, k, v)
    p.num_computed_tokens = 6
    c = p.fork(1)
    b.fork(p, c)
    m = b.memory()
    assert m.reserved_bytes == 2 * 4 * BPT  # nothing new: both tables point at the same 2 pages
    assert m.saved_bytes == 2 * 4 * BPT
    c.append_token(7)
    b.grow(c)  # last page shared -> copy on write, every layer
    src, dst = p.page_table[1], c.page_table[1]
    assert src != dst
    assert torch.equal(b.k_pool[:, dst, :2], b.k_pool[:, src, :2])
    assert torch.equal(b.v_pool[:, dst, :2], b.v_pool[:, src, :2])
    check_table(b, [p, c])
    m = b.memory()
    assert m.reserved_bytes == 3 * 4 * BPT and m.used_bytes == (6 + 3) * BPT  # shared page counted once


def test_paged_decode_slots_and_attention_match_reference():
    torch.manual_seed(0)
    b = PagedBackend(LAYOUT, page_size=4, num_pages=32, max_num_seqs=4, max_model_len=64, attn_impl="torch")
    seqs = [seq(i, n, base=10 * i) for i, n in enumerate((5, 8, 1))]
    for s in seqs:
        b.admit(s, 20)
        meta = b.prepare_prefill(s)
        for layer in range(2):
            b.write_kv(layer, meta.slots, torch.randn(s.num_tokens, 2, 8), torch.randn(s.num_tokens, 2, 8))
        s.num_computed_tokens = s.num_tokens
        s.append_token(1)
        b.grow(s)
    slots = b.prepare_decode(seqs)
    expect = [s.page_table.slot(s.num_tokens - 1) for s in seqs]
    assert slots.tolist() == expect
    q = torch.randn(3, 4, 8)
    for layer in range(2):
        b.write_kv(layer, slots, torch.randn(3, 2, 8), torch.randn(3, 2, 8))
        out = b.decode_attention(layer, q)
        # independent reference: gather each sequence's K/V token by token
        for i, s in enumerate(seqs):
            idx = torch.tensor([s.page_table.slot(p) for p in range(s.num_tokens)])
            k = b.k_pool[layer].reshape(-1, 2, 8)[idx].repeat_interleave(2, dim=1)  # [n, Hq, D]
            v = b.v_pool[layer].reshape(-1, 2, 8)[idx].repeat_interleave(2, dim=1)
            w = torch.softmax((k * q[i]).sum(-1) / 8 ** 0.5, dim=0)  # [n, Hq]
            ref = (w[..., None] * v).sum(0)  # [Hq, D]
            torch.testing.assert_close(out[i], ref, rtol=1e-4, atol=1e-5)


def test_contiguous_policies():
    assert reservation("max", 100, 2048) == 2048
    assert reservation("pow2", 100, 2048) == 128
    assert reservation("pow2", 128, 2048) == 128
    assert reservation("pow2", 1500, 1024) == 1024
    assert reservation("oracle", 100, 2048) == 100
    with pytest.raises(ConfigError):
        reservation("exact", 1, 1)


def test_contiguous_accounting_and_fragmentation():
    b = ContiguousBackend(LAYOUT, policy="oracle", num_slots=100, max_num_seqs=8, max_model_len=100)
    a, c, d = seq(0, 10), seq(1, 10), seq(2, 10)
    b.admit(a, 30)
    b.admit(c, 40)
    b.admit(d, 30)
    m = b.memory()
    assert m.reserved_bytes == 100 * BPT and m.used_bytes == 30 * BPT and m.slack_bytes == 70 * BPT
    b.release(a)
    b.release(d)
    m = b.memory()
    assert m.idle_bytes == 60 * BPT and m.largest_free_extent_bytes == 30 * BPT
    assert not b.can_admit(seq(3, 5), 31)  # 60 slots free, but no 31-slot hole: external fragmentation
    with pytest.raises(OutOfPagesError):
        b.admit(seq(3, 5), 31)


def test_contiguous_fork_copies_prompt():
    b = ContiguousBackend(LAYOUT, policy="pow2", num_slots=64, max_num_seqs=4, max_model_len=64)
    p = seq(0, 5)
    b.admit(p, 9)
    meta = b.prepare_prefill(p)
    k = torch.randn(5, 2, 8)
    b.write_kv(0, meta.slots, k, k)
    p.num_computed_tokens = 5
    c = p.fork(1)
    b.fork(p, c)
    cs = b._start[c.seq_id]
    assert torch.equal(b.k_slab[0, cs:cs + 5], k)
    assert b.memory().reserved_bytes == 2 * 16 * BPT


def test_factory_and_bad_input():
    assert parse_backends("all") == ["paged", "contiguous-max", "contiguous-pow2", "contiguous-oracle"]
    with pytest.raises(ConfigError, match="unknown backend"):
        parse_backends("paged,contig")
    with pytest.raises(ConfigError, match="smaller than one page"):
        make_backend("paged", LAYOUT, kv_budget_bytes=BPT, page_size=16)
    with pytest.raises(ConfigError, match="power of two"):
        PagedBackend(LAYOUT, page_size=12, num_pages=4)
    b = make_backend("paged-noprefix", LAYOUT, kv_budget_bytes=64 * BPT, page_size=4)
    assert b.num_pages == 16 and not b.enable_prefix_caching


def test_prefill_batch_packs_offsets_and_gathers_only_with_a_cached_prefix():
    import torch

    from pabench.backends.base import PrefillBatch, PrefillMeta

    fresh = [PrefillMeta(slots=torch.tensor([4, 5, 6]), n_new=3, n_total=3, kv_index=torch.tensor([4, 5, 6])),
             PrefillMeta(slots=torch.tensor([9]), n_new=1, n_total=1, kv_index=torch.tensor([9]))]
    calls = []
    batch = PrefillBatch.build(fresh, lambda m: calls.append(m) or m.kv_index)
    assert batch.cu_q == batch.cu_k == (0, 3, 4) and batch.kv_slots is None and not calls
    assert batch.slots.tolist() == [4, 5, 6, 9]
    cached = PrefillMeta(slots=torch.tensor([7]), n_new=1, n_total=3, kv_index=torch.tensor([0, 1, 7]))
    batch = PrefillBatch.build([fresh[0], cached], lambda m: m.kv_index)
    assert batch.cu_q == (0, 3, 4) and batch.cu_k == (0, 3, 6)
    assert batch.kv_slots.tolist() == [4, 5, 6, 0, 1, 7] and batch.slots.tolist() == [4, 5, 6, 7]
    with pytest.raises(ConfigError):
        PrefillBatch(slots=torch.tensor([1]), cu_q=(0, 1), cu_k=(0, 2), kv_slots=None)


def test_paged_block_table_writes_ride_the_decode_descriptor_and_overflow_flushes_eagerly():
    """A decode step's block-table writes are applied by decode_meta from a fixed-size descriptor (2 x max_num_seqs
    entries, no-ops padded); more than that (a big admission) is flushed eagerly. Either way the device table
    matches every page table, and the no-op entries leave the scratch row as it was."""
    b = PagedBackend(LAYOUT, page_size=1, num_pages=64, max_num_seqs=2, max_model_len=32)
    seqs = [seq(0, 9), seq(1, 3)]  # 12 pages pending > the 4-entry descriptor: eager flush
    for s in seqs:
        b.admit(s, 32)
        s.num_computed_tokens = s.num_tokens
    assert b.table.num_pending == 12 > b.table.writes_cap == 4
    b.prepare_decode(seqs)
    check_table(b, seqs)
    for _ in range(3):  # one new page per sequence per step (page_size 1): through the descriptor
        for s in seqs:
            s.append_token(1)
        b.grow_many(seqs)
        assert b.table.num_pending == 2
        b.stage_decode(seqs, 2)
        assert not b.table.num_pending
        b.decode_meta(2)
        for s in seqs:
            assert b.table.tensor[b.table.rows[s.seq_id], : len(s.page_table)].tolist() == s.page_table.page_ids
    assert b.table.tensor[2].tolist() == [b.scratch_page] * b.max_pages_per_seq  # the no-op target is untouched


def test_a_decode_step_stages_rows_and_table_writes_in_one_upload_and_no_stale_write_returns(monkeypatch):
    """Rows, lengths and block-table writes share one pinned upload (one copy per step). Its two host buffers
    alternate, so a buffer comes back holding the writes of the step before last: they must not be re-applied
    once that sequence's row belongs to another sequence."""
    from pabench.backends.staging import PinnedUpload

    sends = []
    real_send = PinnedUpload.send
    monkeypatch.setattr(PinnedUpload, "send", lambda self: (sends.append(self), real_send(self))[1])
    b = PagedBackend(LAYOUT, page_size=4, num_pages=64, max_num_seqs=2, max_model_len=32)
    seqs = [seq(0, 3), seq(1, 5)]
    for s in seqs:
        b.admit(s, 32)
        s.num_computed_tokens = s.num_tokens
    for step in range(9):
        if step == 4:  # sequence 0 leaves, a new one takes its block-table row
            b.release(seqs[0])
            seqs[0] = seq(2, 6)
            b.admit(seqs[0], 32)
            seqs[0].num_computed_tokens = seqs[0].num_tokens
        for s in seqs:
            s.append_token(1)
        b.grow_many(seqs)
        b.table.flush() if step == 4 else None  # the admission's pages go eagerly, as a prefill step does
        sends.clear()
        b.stage_decode(seqs, 2)
        assert len(sends) == 1  # one copy for the step's rows, lengths and table writes
        b.decode_meta(2)
        check_table(b, seqs)
    assert b.table.tensor[2].tolist() == [b.scratch_page] * b.max_pages_per_seq


def test_backends_answer_their_own_questions():
    """fits_when_empty, describe and is_paged come from the backend, not from its name or its capacity keys."""
    paged = make_backend("paged", LAYOUT, kv_budget_bytes=16 * 4 * BPT, page_size=4, max_num_seqs=4,
                         max_model_len=64, watermark=0.1)
    assert paged.is_paged and paged.fits_when_empty(64) and not paged.fits_when_empty(65)
    assert paged.fits_when_empty(64, num_forks=3)  # siblings can be preempted: one sample must fit
    assert not paged.fits_when_empty(64, num_forks=3, together=True)  # beams run side by side
    assert paged.fits_when_empty(16, num_forks=3, together=True)
    assert paged.describe() == {"page_size": 4, "prefix_caching": True, "watermark": 0.1, "prefix_hit_rate": 0.0,
                                "num_cow_copies": 0, "kv_copied_bytes": 0}
    assert make_backend("paged-noprefix", LAYOUT, kv_budget_bytes=16 * 4 * BPT).describe()["prefix_caching"] is False
    oracle = make_backend("contiguous-oracle", LAYOUT, kv_budget_bytes=64 * BPT, max_num_seqs=4, max_model_len=64)
    assert not oracle.is_paged and oracle.fits_when_empty(32, num_forks=1) and not oracle.fits_when_empty(33, 1)
    whole = make_backend("contiguous-max", LAYOUT, kv_budget_bytes=64 * BPT, max_num_seqs=4, max_model_len=64)
    assert whole.fits_when_empty(1) and not whole.fits_when_empty(1, num_forks=1)  # max reserves 64 per sample
    assert whole.describe() == {"page_size": 1, "prefix_caching": False, "watermark": 0.0, "prefix_hit_rate": 0.0,
                                "num_cow_copies": 0, "kv_copied_bytes": 0}


def test_is_paged_reads_backend_names_as_exports_hold_them():
    from pabench.backends import BACKENDS, EXTRA_BACKENDS, is_paged

    assert [is_paged(n) for n in BACKENDS + EXTRA_BACKENDS] == [True, False, False, False, True, True, True]
    assert all(make_backend(n, LAYOUT, kv_budget_bytes=64 * BPT, max_model_len=64).is_paged == is_paged(n)
               for n in BACKENDS + EXTRA_BACKENDS)
