"""Triton KV write against the torch reference (index_copy_), for paged caches, slabs and strided caches."""

import pytest
import torch

from pabench.errors import ConfigError
from pabench.kernels import write_kv, write_kv_reference

H, D = 2, 64


def _random(shape, dtype, gen):
    return torch.randn(shape, generator=gen).to(dtype)


@pytest.mark.parametrize("page_size", [1, 16, None])  # None: a contiguous slab [num_slots, H, D]
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("slot_dtype", [torch.int32, torch.int64])
def test_triton_write_matches_reference(page_size, dtype, slot_dtype):
    gen = torch.Generator().manual_seed(1)
    num_slots = 64
    shape = (num_slots, H, D) if page_size is None else (num_slots // page_size, page_size, H, D)
    k_cache, v_cache = _random(shape, dtype, gen), _random(shape, dtype, gen)
    num_tokens = 11
    slots = torch.randperm(num_slots, generator=gen)[:num_tokens].to(slot_dtype)  # [num_tokens]
    k, v = _random((num_tokens, H, D), dtype, gen), _random((num_tokens, H, D), dtype, gen)
    expect_k, expect_v = k_cache.clone(), v_cache.clone()
    write_kv_reference(expect_k, expect_v, slots, k, v)
    write_kv(k_cache, v_cache, slots, k, v, impl="triton")
    assert torch.equal(k_cache, expect_k) and torch.equal(v_cache, expect_v)
    flat_k = k_cache.reshape(num_slots, H, D)
    assert torch.equal(flat_k[slots.long()], k)  # the written rows hold the new keys


def test_reference_writes_only_given_slots():
    gen = torch.Generator().manual_seed(2)
    k_cache, v_cache = _random((4, 8, H, D), torch.float32, gen), _random((4, 8, H, D), torch.float32, gen)
    before = k_cache.clone()
    slots = torch.tensor([3, 17, 30])
    k, v = _random((3, H, D), torch.float32, gen), _random((3, H, D), torch.float32, gen)
    write_kv(k_cache, v_cache, slots, k, v, impl="torch")
    changed = (k_cache != before).flatten(0, 1).flatten(1).any(-1)  # [num_slots]
    assert changed.nonzero().flatten().tolist() == [3, 17, 30]
    assert torch.equal(v_cache.flatten(0, 1)[slots], v)


def test_strided_cache():
    """A cache that is a slice of a bigger tensor (K and V interleaved per page) is written in place."""
    gen = torch.Generator().manual_seed(3)
    pool = _random((6, 2, 4, H, D), torch.float32, gen)  # [num_pages, k/v, page_size, H, D]
    expect = pool.clone()
    slots = torch.tensor([0, 5, 23, 9], dtype=torch.int32)
    k, v = _random((4, H, D), torch.float32, gen), _random((4, H, D), torch.float32, gen)
    write_kv_reference(expect[:, 0], expect[:, 1], slots, k, v)
    write_kv(pool[:, 0], pool[:, 1], slots, k, v, impl="triton")
    assert torch.equal(pool, expect)


def test_bad_inputs():
    cache = torch.randn(4, 8, H, D)
    k = torch.randn(3, H, D)
    with pytest.raises(ConfigError):
        write_kv(cache, cache.clone(), torch.tensor([0, 1]), k, k.clone())  # 2 slots, 3 tokens
    with pytest.raises(ConfigError):
        write_kv(cache, cache.clone(), torch.tensor([0, 1, 2]), torch.randn(3, H + 1, D), torch.randn(3, H + 1, D))
    with pytest.raises(ConfigError):
        write_kv(cache, cache.clone(), torch.tensor([0.0, 1.0, 2.0]), k, k.clone())
    with pytest.raises(ConfigError):
        write_kv(cache, torch.randn(4, 8, H, D, dtype=torch.float16), torch.tensor([0, 1, 2]), k, k.clone())
