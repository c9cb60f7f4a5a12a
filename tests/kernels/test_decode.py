"""Triton split-K decode (paged and contiguous) against the independent torch reference, on the CPU interpreter."""

import pytest
import torch
from kernel_checks import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

from pabench.kernelbench.data import make_decode_data, paginate
from pabench.kernels import (DecodeConfig, contiguous_decode_attention, contiguous_decode_reference,
                             paged_decode_attention, paged_decode_reference)

NUM_KV_HEADS = 2

# (lengths, GQA group, head_dim, page_size): length 1, lengths ending exactly on a page boundary, mixed lengths
CASES = [
    ([1], 1, 64, 1),
    ([16, 33, 1], 2, 64, 16),
    ([64, 5, 48, 17], 4, 128, 4),
    ([70, 3], 2, 128, 64),
    ([300, 2], 4, 64, 256),
    ([7, 40, 129, 1, 64], 1, 128, 16),
]


def _data(lens, group, head_dim, dtype, seed=0):
    return make_decode_data(lens, NUM_KV_HEADS * group, NUM_KV_HEADS, head_dim, dtype, torch.device("cpu"), seed)


def _reference(data):
    """fp64 reference on the same (possibly low-precision) inputs."""
    return contiguous_decode_reference(data.q.double(), data.k_slab.double(), data.v_slab.double(), data.seq_starts,
                                       data.seq_lens)


@pytest.mark.parametrize("lens,group,head_dim,page_size", CASES)
def test_triton_paged_fp32(lens, group, head_dim, page_size, poison_scratch):
    data = _data(lens, group, head_dim, torch.float32, seed=len(lens))
    k_cache, v_cache, table = paginate(data, page_size)
    out = torch.full_like(data.q, float("nan"))
    paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, impl="triton", out=out)
    assert_close(out, _reference(data), torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", [CASES[1], CASES[2]])
def test_triton_paged_low_precision(case, dtype, poison_scratch):
    lens, group, head_dim, page_size = case
    data = _data(lens, group, head_dim, dtype, seed=3)
    k_cache, v_cache, table = paginate(data, page_size)
    out = torch.full_like(data.q, float("nan"))
    paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, impl="triton", out=out)
    assert out.dtype == dtype
    assert_close(out, _reference(data), dtype)


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]])
def test_paged_equals_contiguous(case, poison_scratch):
    """Same data, two layouts, one kernel: the page-table indirection must not change the result."""
    lens, group, head_dim, page_size = case
    data = _data(lens, group, head_dim, torch.float32, seed=5)
    k_cache, v_cache, table = paginate(data, page_size)
    paged = paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, impl="triton")
    contiguous = contiguous_decode_attention(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens,
                                             impl="triton")
    assert torch.allclose(paged, contiguous, rtol=1e-5, atol=1e-6)
    assert_close(contiguous, _reference(data), torch.float32)


@pytest.mark.parametrize("config,page_size", [
    (DecodeConfig(block_n=16, items_per_sm=1), 8),  # one chunk spans many tiles, a tile spans two pages
    (DecodeConfig(block_n=16, items_per_sm=1, prefetch_pages=True), 32),  # a page spans two tiles
    (DecodeConfig(block_n=16, items_per_sm=1, prefetch_pages=True), 4),
    (DecodeConfig(block_n=32, merge_block=2), 8),  # merges span several merge blocks
    (DecodeConfig(block_n=32, maxnreg=64), 16),  # a register cap is a launch option, not a different result
    (DecodeConfig(block_n=16, items_per_sm=4, min_tiles=10), 8),  # the floor (under its cap) sets the chunk
    (DecodeConfig(block_n=16, items_per_sm=64, min_tiles=5), 8),  # the floor's cap sets it
])
def test_tilings(config, page_size, poison_scratch):
    data = _data([200, 37, 96], 2, 64, torch.float32, seed=7)
    k_cache, v_cache, table = paginate(data, page_size)
    out = paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, impl="triton", config=config)
    assert_close(out, _reference(data), torch.float32)


def test_scale_argument():
    data = _data([20, 9], 2, 64, torch.float32, seed=9)
    k_cache, v_cache, table = paginate(data, 4)
    ref = paged_decode_reference(data.q, k_cache, v_cache, table, data.seq_lens, scale=0.3)
    out = paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, impl="triton", scale=0.3)
    assert_close(out, ref, torch.float32)


def test_torch_impl_and_references_agree():
    """auto on the CPU is the torch path; the paged and contiguous references agree on the same data."""
    data = _data([33, 1, 16], 4, 64, torch.float32, seed=11)
    k_cache, v_cache, table = paginate(data, 16)
    paged = paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens)  # impl="auto" -> torch
    contiguous = contiguous_decode_reference(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens)
    assert_close(paged, contiguous, torch.float32)


@settings(max_examples=6, deadline=None)
@given(
    lens=st.lists(st.integers(1, 80), min_size=1, max_size=4),
    page_size=st.sampled_from([1, 2, 8, 32]),
    group=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 2**16),
)
def test_random_batches(lens, page_size, group, seed):
    data = _data(lens, group, 64, torch.float32, seed=seed)
    k_cache, v_cache, table = paginate(data, page_size)
    out = paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, impl="triton")
    assert_close(out, _reference(data), torch.float32)


@pytest.mark.parametrize("num_kv_heads,items,stages", [(1, 2, 2), (2, 2, 2), (4, 4, 3), (8, 8, 4)])
def test_heuristic_cuts_few_kv_heads_into_fewer_longer_programs(num_kv_heads, items, stages):
    """Small batches: <= 2 KV heads get 2 items per SM over double-width tiles, <= 4 get 4 (s15-1, s16-4); every
    small-batch tiling keeps the 256-tokens-per-KV-head chunk floor; large batches are unchanged."""
    from pabench.kernels import choose_decode_config
    from pabench.kernels.checks import DecodeShape

    small = choose_decode_config(DecodeShape(64, 4 * num_kv_heads, num_kv_heads, 128, 16, 4096), torch.bfloat16)
    assert (small.items_per_sm, small.num_stages) == (items, stages)
    assert small.block_n == (128 if num_kv_heads <= 2 else 64)
    assert small.min_tiles * small.block_n == 256 * num_kv_heads
    large = choose_decode_config(DecodeShape(256, 4 * num_kv_heads, num_kv_heads, 128, 16, 4096), torch.bfloat16)
    assert (large.items_per_sm, large.min_tiles, large.prefetch_pages) == (16, 0, True)
