"""The unified mixed-step Triton kernel (prompt chunks and decode tokens in one launch) against the float64
reference, on the CPU interpreter: shuffled page tables, GQA groups (power of two or not), page sizes, chunks
that start and end on and off page boundaries, both layouts."""

import numpy as np
import pytest
import torch
from kernel_checks import assert_close

from pabench.errors import ConfigError
from pabench.kernels import MixedConfig, contiguous_mixed_attention, mixed_schedule, paged_mixed_attention
from pabench.kernels.reference import mixed_attention_reference

NUM_KV_HEADS = 2

# (seq_len, q_len) per sequence: decode tokens (q_len 1), a whole first chunk, chunks off and on page boundaries
STEPS = [
    [(37, 1), (9, 1), (21, 21), (45, 24), (33, 17)],
    [(1, 1), (64, 16), (17, 1), (80, 80)],
    [(130, 5), (2, 2), (50, 1)],
]


def _step(plan, group, head_dim, dtype, page_size, seed):
    """Random K/V per sequence, stored paged (shuffled pages) and in a slab (regions with gaps), and q."""
    gen = torch.Generator().manual_seed(seed)
    ks = [torch.randn(n, NUM_KV_HEADS, head_dim, generator=gen).to(dtype) for n, _ in plan]
    vs = [torch.randn(n, NUM_KV_HEADS, head_dim, generator=gen).to(dtype) for n, _ in plan]
    cu_q = np.cumsum([0] + [q for _, q in plan]).tolist()
    q = torch.randn(cu_q[-1], NUM_KV_HEADS * group, head_dim, generator=gen).to(dtype)  # [T, Hq, D]
    pages = [-(-n // page_size) for n, _ in plan]
    num_pages = sum(pages) + 3
    order = torch.randperm(num_pages, generator=gen)  # shuffled physical pages
    k_pool = torch.full((num_pages, page_size, NUM_KV_HEADS, head_dim), float("nan"), dtype=dtype)
    v_pool = torch.full_like(k_pool, float("nan"))
    table = torch.zeros(len(plan) + 1, max(pages), dtype=torch.int32)  # row 0 unused: refs are not row indices
    used = 0
    for i, (n, _) in enumerate(plan):
        for p in range(pages[i]):
            pid = int(order[used])
            used += 1
            table[i + 1, p] = pid
            rows = slice(p * page_size, min(n, (p + 1) * page_size))
            k_pool[pid, : rows.stop - rows.start] = ks[i][rows]
            v_pool[pid, : rows.stop - rows.start] = vs[i][rows]
    starts = np.cumsum([3] + [n + 5 for n, _ in plan])[:-1].tolist()  # regions with gaps of 5 slots
    k_slab = torch.full((starts[-1] + plan[-1][0] + 2, NUM_KV_HEADS, head_dim), float("nan"), dtype=dtype)
    v_slab = torch.full_like(k_slab, float("nan"))
    for i, (n, _) in enumerate(plan):
        k_slab[starts[i]:starts[i] + n], v_slab[starts[i]:starts[i] + n] = ks[i], vs[i]
    expect = mixed_attention_reference(q, ks, vs, cu_q)
    return q, cu_q, (k_pool, v_pool, table), (k_slab, v_slab, starts), expect


# every plan, group, page size, query block and prefetch distance appears, not every product (the interpreter is
# slow: block_q 1 makes one program per token)
@pytest.mark.parametrize("plan,group,page_size,block_q,prefetch", [
    (STEPS[0], 2, 16, None, 0), (STEPS[0], 2, 16, 1, 1), (STEPS[1], 3, 4, 4, 2), (STEPS[1], 3, 4, 16, 1),
    (STEPS[2], 1, 1, None, 2), (STEPS[2], 1, 1, 4, 1), (STEPS[0], 4, 8, 16, 2), (STEPS[0], 4, 8, None, 1)])
def test_mixed_fp32_both_layouts(plan, group, page_size, block_q, prefetch):
    q, cu_q, (k_pool, v_pool, table), (k_slab, v_slab, starts), expect = _step(plan, group, 32, torch.float32,
                                                                               page_size, seed=group + page_size)
    lens = [n for n, _ in plan]
    paged = paged_mixed_attention(q, k_pool, v_pool, table,
                                  mixed_schedule(cu_q, lens, list(range(1, len(plan) + 1)), "cpu", block_q),
                                  config=MixedConfig(block_n=16, prefetch_pages=prefetch))
    contiguous = contiguous_mixed_attention(q, k_slab, v_slab, mixed_schedule(cu_q, lens, starts, "cpu", block_q))
    assert_close(paged, expect, torch.float32)
    assert_close(contiguous, expect, torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_low_precision(dtype):
    plan = STEPS[0]
    q, cu_q, (k_pool, v_pool, table), _, expect = _step(plan, 4, 64, dtype, 16, seed=7)
    out = paged_mixed_attention(q, k_pool, v_pool, table,
                                mixed_schedule(cu_q, [n for n, _ in plan], list(range(1, len(plan) + 1)), "cpu"))
    assert out.dtype == dtype
    assert_close(out, expect, dtype)


def test_schedule_items_cover_every_token_once_heaviest_first():
    sched = mixed_schedule([0, 1, 6, 23], [40, 5, 30], [0, 1, 2], "cpu", block_q=4)
    views = sched.views()
    cu, lens, refs, item_seq, item_q0 = (t.tolist() for t in views)
    assert (cu, lens, refs) == ([0, 1, 6, 23], [40, 5, 30], [0, 1, 2])
    # keys read: seq 0 40; seq 2's blocks 17, 21, 25, 29, 30; seq 1's 4, 5
    assert list(zip(item_seq, item_q0)) == [(0, 0), (2, 16), (2, 12), (2, 8), (2, 4), (2, 0), (1, 4), (1, 0)]
    assert all(v.data_ptr() % 16 == 0 for v in views)  # Triton specializes on pointer alignment


@pytest.mark.parametrize("cu_q,lens", [([0, 0], [3]), ([0, 5], [4]), ([1, 3], [3]), ([0], [])])
def test_schedule_rejects_impossible_steps(cu_q, lens):
    with pytest.raises(ConfigError, match="mixed schedule"):
        mixed_schedule(cu_q, lens, [0] * len(lens), "cpu")


def test_mixed_rejects_bad_shapes():
    q = torch.randn(3, 4, 24)  # head_dim 24: no Triton tiling for it
    k = torch.randn(10, 2, 24)
    with pytest.raises(ConfigError, match="head_dim"):
        contiguous_mixed_attention(q, k, k, mixed_schedule([0, 3], [5], [0], "cpu"))


@pytest.mark.parametrize("q_dtype", [torch.float32, torch.bfloat16])
def test_mixed_over_fp8_caches_matches_the_dequantised_reference(q_dtype):
    """An e4m3 cache (per-tensor scales, fp8.py) read by the unified kernel, both layouts, against float64 over the
    dequantised K/V: the kernel's in-register conversion and scale folding, not fp8's rounding, is what is tested."""
    from pabench.kernels.fp8 import FP8_DTYPE, dequantize, quantize

    plan = STEPS[1]
    q, cu_q, (k_pool, v_pool, table), (k_slab, v_slab, starts), _ = _step(plan, 3, 32, torch.float32, 4, seed=11)
    k_scale, v_scale = torch.tensor([2.0**-6]), torch.tensor([0.01])  # one a power of two, one not
    k_pool8, v_pool8 = quantize(k_pool, k_scale), quantize(v_pool, v_scale)  # NaN padding stays NaN, never read
    k_slab8, v_slab8 = quantize(k_slab, k_scale), quantize(v_slab, v_scale)
    assert k_pool8.dtype == FP8_DTYPE
    ks = [dequantize(k_slab8[s:s + n], k_scale) for s, (n, _) in zip(starts, plan)]  # [n, Hkv, D] each
    vs = [dequantize(v_slab8[s:s + n], v_scale) for s, (n, _) in zip(starts, plan)]
    expect = mixed_attention_reference(q, ks, vs, cu_q)
    lens, q = [n for n, _ in plan], q.to(q_dtype)
    scales = {"k_scale": k_scale, "v_scale": v_scale}
    paged = paged_mixed_attention(q, k_pool8, v_pool8, table,
                                  mixed_schedule(cu_q, lens, list(range(1, len(plan) + 1)), "cpu"), **scales)
    contiguous = contiguous_mixed_attention(q, k_slab8, v_slab8, mixed_schedule(cu_q, lens, starts, "cpu"), **scales)
    for out in (paged, contiguous):
        assert out.dtype == q_dtype
        assert_close(out, expect, q_dtype)
    with pytest.raises(ConfigError, match="needs k_scale"):
        contiguous_mixed_attention(q, k_slab8, v_slab8, mixed_schedule(cu_q, lens, starts, "cpu"))
