"""The engine's batched CPU decode path agrees with the loop-per-sequence torch references."""

import pytest
import torch

from pabench.kernels.batched import contiguous_decode_batched, paged_decode_batched
from pabench.kernels.reference import contiguous_decode_reference, paged_decode_reference


@pytest.mark.parametrize("page_size,group", [(1, 1), (4, 2), (16, 4)])
def test_batched_matches_reference(page_size, group):
    g = torch.Generator().manual_seed(page_size * 10 + group)
    B, Hkv, D = 5, 2, 16
    lens = torch.tensor([1, page_size, 3 * page_size, 7, 40], dtype=torch.int32)
    num_pages = B * -(-40 // page_size) * 4 + 8
    q = torch.randn(B, Hkv * group, D, generator=g)
    k = torch.randn(num_pages, page_size, Hkv, D, generator=g)
    v = torch.randn(num_pages, page_size, Hkv, D, generator=g)
    max_pages = -(-int(lens.max()) // page_size)
    table = torch.randperm(num_pages, generator=g)[: B * max_pages].view(B, max_pages).int()  # shuffled pages
    out = paged_decode_batched(q, k, v, table, lens)
    ref = paged_decode_reference(q, k, v, table, lens)
    assert not torch.isnan(out).any()
    assert (out - ref).norm() / ref.norm() < 1e-5
    slab_k, slab_v = k.flatten(0, 1), v.flatten(0, 1)  # [num_slots, Hkv, D]
    starts = torch.tensor([0, 50, 100, 200, 300], dtype=torch.int32)
    out = contiguous_decode_batched(q, slab_k, slab_v, starts, lens)
    ref = contiguous_decode_reference(q, slab_k, slab_v, starts, lens)
    assert (out - ref).norm() / ref.norm() < 1e-5
