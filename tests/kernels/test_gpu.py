"""GPU checks (skipped without CUDA): realistic shapes in bf16, every page size, graph capture."""

import pytest
import torch
from kernel_checks import assert_close, rel_err

from pabench.kernelbench.data import make_decode_data, paginate
from pabench.kernelbench.run import NAMED_CASES, case_lengths
from pabench.kernels import (DecodeConfig, contiguous_decode_attention, contiguous_decode_reference,
                             paged_decode_attention, write_kv, write_kv_reference)
from pabench.kernelbench.timing import capture_graph, time_us

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
MIXED = [1, 16, 17, 255, 256, 1000, 2048, 3001, 64, 5, 4096, 333]


def _reference(data):
    return contiguous_decode_reference(data.q.float(), data.k_slab.float(), data.v_slab.float(), data.seq_starts,
                                       data.seq_lens)


@pytest.mark.parametrize("page_size", [1, 8, 16, 32, 64, 128, 256])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_paged_bf16_all_page_sizes(page_size, head_dim, poison_scratch):
    data = make_decode_data(MIXED, 32, 8, head_dim, torch.bfloat16, CUDA, seed=page_size)
    k_cache, v_cache, table = paginate(data, page_size)
    out = torch.full_like(data.q, float("nan"))
    paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, out=out)  # auto -> triton on CUDA
    assert_close(out, _reference(data), torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("group", [1, 4, 8])
def test_dtypes_and_groups(dtype, group, poison_scratch):
    data = make_decode_data(MIXED[:6], 8 * group, 8, 128, dtype, CUDA, seed=group)
    k_cache, v_cache, table = paginate(data, 16)
    out = paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, impl="triton")
    assert_close(out, _reference(data), dtype)


@pytest.mark.parametrize("case", ["b", "d"])
def test_bench_cases_paged_equals_contiguous(case, poison_scratch):
    data = make_decode_data(case_lengths(NAMED_CASES[case]), 32, 8, 128, torch.bfloat16, CUDA, seed=1)
    k_cache, v_cache, table = paginate(data, 16)
    paged = paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens)
    contiguous = contiguous_decode_attention(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens)
    assert rel_err(paged, contiguous) < 1e-3
    assert_close(paged, _reference(data), torch.bfloat16)


@pytest.mark.parametrize("config", [DecodeConfig(block_n=32, num_warps=8, num_stages=4, items_per_sm=64),
                                    DecodeConfig(block_n=128, num_stages=3, items_per_sm=4),
                                    DecodeConfig(block_n=64, num_stages=2, prefetch_pages=True),
                                    DecodeConfig(block_n=64, num_stages=4, items_per_sm=8, maxnreg=96),
                                    DecodeConfig(block_n=64, items_per_sm=32, min_tiles=16, merge_block=32,
                                                 merge_warps=4)])
def test_configs(config, poison_scratch):
    data = make_decode_data(MIXED, 32, 8, 128, torch.bfloat16, CUDA, seed=3)
    k_cache, v_cache, table = paginate(data, 16)
    out = paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, config=config)
    assert_close(out, _reference(data), torch.bfloat16)


@pytest.mark.parametrize("lens, seed", [(MIXED, 4), (case_lengths(NAMED_CASES["d"]), 5)])
def test_graph_capture(lens, seed):
    """No host sync inside the launcher (check_values=False): a CUDA graph (`timing.capture_graph`, which
    `pabench kernels --cuda-graphs` times) replays it with new data."""
    data = make_decode_data(lens, 32, 8, 128, torch.bfloat16, CUDA, seed=seed)
    k_cache, v_cache, table = paginate(data, 16)
    last = {}

    def step():
        last["out"] = paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, check_values=False)
        return last["out"]

    replay = capture_graph(step)
    out = last["out"]  # the graph's output buffer
    data.q.copy_(torch.randn_like(data.q))
    replay()
    torch.cuda.synchronize()
    assert_close(out, _reference(data), torch.bfloat16)


def test_cuda_graph_timing_of_a_launch_bound_call():
    """`time_us(..., cuda_graph=True)` times graph replays: case (d) reads no slower than when timed eagerly."""
    data = make_decode_data(case_lengths(NAMED_CASES["d"]), 32, 8, 128, torch.bfloat16, CUDA, seed=5)
    k_cache, v_cache, table = paginate(data, 16)

    def step():
        return paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, check_values=False)

    graphed = time_us(step, CUDA, 5, 20, cuda_graph=True)
    eager = time_us(step, CUDA, 5, 20)
    assert 0 < graphed[0] <= 1.2 * eager[0], (graphed, eager)


@pytest.mark.parametrize("page_size", [1, 16, 256])
def test_write_kv_gpu(page_size):
    gen = torch.Generator(device=CUDA).manual_seed(page_size)
    num_pages = 4096 // page_size
    shape = (num_pages, page_size, 8, 128)
    k_cache = torch.randn(shape, device=CUDA, generator=gen).bfloat16()
    v_cache = torch.randn(shape, device=CUDA, generator=gen).bfloat16()
    slots = torch.randperm(4096, device=CUDA, generator=gen)[:300].int()
    k = torch.randn(300, 8, 128, device=CUDA, generator=gen).bfloat16()
    v = torch.randn(300, 8, 128, device=CUDA, generator=gen).bfloat16()
    expect_k, expect_v = k_cache.clone(), v_cache.clone()
    write_kv_reference(expect_k, expect_v, slots, k, v)
    write_kv(k_cache, v_cache, slots, k, v)
    assert torch.equal(k_cache, expect_k) and torch.equal(v_cache, expect_v)


def test_kernel_bench_in_cuda_graphs_on_mixed_lengths():
    """`pabench kernels --cuda-graphs` on mixed lengths: the padded SDPA and gather+SDPA rows (their masks built
    once, outside the captured call) and the Triton rows are captured, checked and timed; none is an ERROR row."""
    from pabench.kernelbench.run import KernelBenchConfig, run_kernel_bench

    cfg = KernelBenchConfig(case="custom", batch=8, context=512, lengths="lognormal", page_sizes=(16,),
                            warmup_ms=2, rep_ms=10, device="cuda", cuda_graphs=True,
                            impls=("triton-paged", "triton-contiguous", "torch-sdpa", "gather+sdpa"))
    rows = run_kernel_bench(cfg)
    assert {r["impl"].split("[")[0] for r in rows} == {"triton-paged", "triton-contiguous", "torch-sdpa", "gather+sdpa"}
    assert all(r["check"] == "ok" and r["timing"] == "cuda-graph" and r["median_us"] > 0 for r in rows), rows


@pytest.mark.parametrize("block_q,fp8", [(None, False), (4, False), (16, False), (None, True)])
def test_mixed_step_bf16_long_context(block_q, fp8):
    """The unified mixed-step kernel at serving sizes: a 300-token chunk at 1,500 tokens of context, decode rows
    to 4,000 tokens, one whole first chunk; shuffled pages, against the float64 reference (fp8: e4m3 pages under
    amax scales, against the reference over the dequantised K/V)."""
    from pabench.kernels import mixed_schedule, paged_mixed_attention
    from pabench.kernels.fp8 import amax_scale, dequantize, quantize
    from pabench.kernels.reference import mixed_attention_reference

    gen = torch.Generator().manual_seed(11)
    plan = [(1800, 300), (4000, 1), (17, 1), (2500, 1), (129, 129), (640, 1)]
    ks = [torch.randn(n, 8, 128, generator=gen).to(torch.bfloat16) for n, _ in plan]
    vs = [torch.randn(n, 8, 128, generator=gen).to(torch.bfloat16) for n, _ in plan]
    cu_q = [0]
    for _, q_len in plan:
        cu_q.append(cu_q[-1] + q_len)
    q = torch.randn(cu_q[-1], 32, 128, generator=gen).to(torch.bfloat16)  # [T, Hq, D]
    pages = [-(-n // 16) for n, _ in plan]
    order = torch.randperm(sum(pages), generator=gen)
    k_pool = torch.zeros(sum(pages), 16, 8, 128, dtype=torch.bfloat16)
    v_pool = torch.zeros_like(k_pool)
    table = torch.zeros(len(plan), max(pages), dtype=torch.int32)
    used = 0
    for i, (n, _) in enumerate(plan):
        ids = order[used:used + pages[i]]
        used += pages[i]
        table[i, :pages[i]] = ids.int()
        pad = pages[i] * 16 - n
        k_pool[ids] = torch.cat([ks[i], ks[i][:pad]]).view(-1, 16, 8, 128)
        v_pool[ids] = torch.cat([vs[i], vs[i][:pad]]).view(-1, 16, 8, 128)
    sched = mixed_schedule(cu_q, [n for n, _ in plan], list(range(len(plan))), CUDA, block_q)
    scales = {}
    if fp8:
        scales = {"k_scale": amax_scale(k_pool).to(CUDA), "v_scale": amax_scale(v_pool).to(CUDA)}
        k_pool, v_pool = quantize(k_pool, scales["k_scale"].cpu()), quantize(v_pool, scales["v_scale"].cpu())
        ks = [dequantize(quantize(k, scales["k_scale"].cpu()), scales["k_scale"].cpu()) for k in ks]
        vs = [dequantize(quantize(v, scales["v_scale"].cpu()), scales["v_scale"].cpu()) for v in vs]
    out = paged_mixed_attention(q.to(CUDA), k_pool.to(CUDA), v_pool.to(CUDA), table.to(CUDA), sched, **scales)
    assert_close(out.cpu(), mixed_attention_reference(q, ks, vs, cu_q), torch.bfloat16)


def test_fp8_write_rounds_like_torch_and_decode_matches_the_dequantised_reference():
    """fp8 KV on the device: the KV write's e4m3 bytes equal torch's rounding of clamp(x / scale) on random data
    (the interpreter cannot check this: its fp8 rounding mishandles carries), and decode over fp8 pages matches
    the float reference on the dequantised cache, at a realistic shape and mixed lengths."""
    from pabench.kernelbench.data import to_fp8
    from pabench.kernels.fp8 import FP8_DTYPE, amax_scale, dequantize, quantize

    gen = torch.Generator(device=CUDA).manual_seed(8)
    k = torch.randn(500, 8, 128, device=CUDA, generator=gen).bfloat16() * 4  # [T, H, D]
    v = torch.randn(500, 8, 128, device=CUDA, generator=gen).bfloat16()
    k_scale, v_scale = amax_scale(k), amax_scale(v)
    k_cache = torch.randn(64, 16, 8, 128, device=CUDA, generator=gen).to(FP8_DTYPE)
    v_cache = torch.randn(64, 16, 8, 128, device=CUDA, generator=gen).to(FP8_DTYPE)
    slots = torch.randperm(1024, device=CUDA, generator=gen)[:500].int()  # [T]
    write_kv(k_cache, v_cache, slots, k, v, k_scale=k_scale, v_scale=v_scale)
    for cache, new, scale in ((k_cache, k, k_scale), (v_cache, v, v_scale)):
        stored = cache.view(torch.uint8).view(1024, 8, 128)[slots.long()]  # [T, H, D]
        assert torch.equal(stored, quantize(new, scale).view(torch.uint8))
    data = make_decode_data(MIXED, 32, 8, 128, torch.bfloat16, CUDA, seed=9)
    exact = _reference(data)
    fp8 = to_fp8(data)
    ref = contiguous_decode_reference(fp8.q.float(), dequantize(fp8.k_slab, fp8.k_scale),
                                      dequantize(fp8.v_slab, fp8.v_scale), fp8.seq_starts, fp8.seq_lens)
    k8, v8, table = paginate(fp8, 16)
    paged = paged_decode_attention(fp8.q, k8, v8, table, fp8.seq_lens, impl="triton", **fp8.scales())
    contiguous = contiguous_decode_attention(fp8.q, fp8.k_slab, fp8.v_slab, fp8.seq_starts, fp8.seq_lens,
                                             impl="triton", **fp8.scales())
    for out in (paged, contiguous):
        assert_close(out.float(), ref, torch.bfloat16)
        assert 1e-3 < rel_err(out.float(), exact) < 0.08


@pytest.mark.parametrize("q_gain", [3e5, 1e-6])
def test_fp8_kernels_keep_q_outside_fp16_range_on_device(q_gain):
    """The compiled kernels read an fp8 cache in fp16 with q scaled by a power of two (fp8.fp16_query): q beyond
    fp16's range, or deep in its subnormals, must still match the dequantised reference in decode and mixed."""
    from pabench.kernelbench.data import to_fp8
    from pabench.kernels import mixed_schedule, paged_mixed_attention
    from pabench.kernels.fp8 import dequantize

    fp8 = to_fp8(make_decode_data(MIXED, 32, 8, 128, torch.bfloat16, CUDA, seed=13))
    fp8.q.mul_(q_gain)  # [B, Hq, D] bf16 holds both ends; fp16 holds neither
    fp8.k_scale.div_(q_gain)  # [1] the same scores as before: a peaked softmax, so q's precision shows
    k_deq, v_deq = dequantize(fp8.k_slab, fp8.k_scale), dequantize(fp8.v_slab, fp8.v_scale)  # [T, Hkv, D] fp32
    ref = contiguous_decode_reference(fp8.q.double(), k_deq.double(), v_deq.double(), fp8.seq_starts, fp8.seq_lens)
    k8, v8, table = paginate(fp8, 16)
    decode = paged_decode_attention(fp8.q, k8, v8, table, fp8.seq_lens, impl="triton", **fp8.scales())
    lens = fp8.seq_lens.tolist()
    sched = mixed_schedule(list(range(len(lens) + 1)), lens, list(range(len(lens))), CUDA, None)
    mixed = paged_mixed_attention(fp8.q, k8, v8, table, sched, **fp8.scales())  # one decode row per sequence
    for out in (decode, mixed):
        assert not out.isnan().any() and rel_err(out.double(), ref) < 2e-2
