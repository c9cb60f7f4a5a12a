"""fp8 (e4m3, per-tensor scale) KV cache: the number format, the KV write and decode attention over fp8 pages, on
the CPU (torch path and the Triton interpreter) against references that dequantise in fp32 / fp64."""

import pytest
import torch
from kernel_checks import rel_err

from pabench.errors import ConfigError
from pabench.kernelbench.data import make_decode_data, paginate, to_fp8
from pabench.kernels import (contiguous_decode_attention, contiguous_decode_reference, paged_decode_attention,
                             write_kv)
from pabench.kernels.fp8 import FP8_DTYPE, FP8_MAX, amax_scale, dequantize, quantize
from pabench.units import check_kv_dtype

CPU = torch.device("cpu")


def test_quantize_round_trip_error_and_saturation():
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 3  # [4096]
    scale = amax_scale(x)
    back = dequantize(quantize(x, scale), scale)  # [4096]
    assert float(scale) == pytest.approx(float(x.abs().max()) / FP8_MAX)
    # e4m3 keeps 3 mantissa bits: at most half an ulp (1/16 relative) off for normal values
    normal = x.abs() > scale * 2**-6
    assert ((back - x).abs()[normal] <= x.abs()[normal] / 16 + 1e-12).all()
    assert 0.01 < rel_err(back, x) < 0.05  # really quantised, not a float copy
    big = quantize(torch.tensor([1e6, -1e6, float(FP8_MAX) * 2]), torch.ones(1))  # [3]
    assert big.float().tolist() == [FP8_MAX, -FP8_MAX, FP8_MAX]  # saturates: never NaN
    assert float(amax_scale(torch.zeros(3))) == 1.0


def _grid_values(shape, gen, scale):
    """Values exactly on the e4m3 grid times a power-of-two scale: writing them must reproduce every byte (the
    interpreter's fp8 rounding mishandles a carry into the exponent, so rounding is checked on the GPU)."""
    return quantize(torch.randn(shape, generator=gen) * 100, torch.ones(1)).float() * scale


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("paged", [True, False])
def test_write_kv_stores_scaled_e4m3(impl, paged):
    gen = torch.Generator().manual_seed(1)
    k_scale, v_scale = torch.tensor([0.25]), torch.tensor([2.0**-5])
    k, v = _grid_values((37, 2, 64), gen, k_scale), _grid_values((37, 2, 64), gen, v_scale)  # [T, H, D] each
    shape = (8, 16, 2, 64) if paged else (128, 2, 64)
    k_cache = torch.randn(shape, generator=gen).to(FP8_DTYPE)  # noise, not zeros
    v_cache = torch.randn(shape, generator=gen).to(FP8_DTYPE)
    slots = torch.randperm(128, generator=gen)[:37].int()  # [T]
    write_kv(k_cache, v_cache, slots, k, v, impl=impl, k_scale=k_scale, v_scale=v_scale)
    rows = slots.long()
    for cache, new, scale in ((k_cache, k, k_scale), (v_cache, v, v_scale)):
        stored = cache.view(torch.uint8).reshape(128, 2, 64)[rows]  # [T, H, D] bytes
        assert torch.equal(stored, quantize(new, scale).view(torch.uint8))
        assert torch.equal(dequantize(stored.view(FP8_DTYPE), scale), new)


LENS = [([16, 33, 1], 2, 16), ([70, 3, 129], 4, 64), ([7, 40], 3, 1)]


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("lens,group,page_size", LENS)
@pytest.mark.parametrize("q_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_decode_over_fp8_pages_matches_dequantised_reference(impl, lens, group, page_size, q_dtype, poison_scratch):
    data = to_fp8(make_decode_data(lens, 2 * group, 2, 64, q_dtype, CPU, seed=len(lens)))
    k_cache, v_cache, table = paginate(data, page_size)
    assert k_cache.dtype == FP8_DTYPE
    ref = contiguous_decode_reference(data.q.double(), dequantize(data.k_slab, data.k_scale).double(),
                                      dequantize(data.v_slab, data.v_scale).double(), data.seq_starts, data.seq_lens)
    paged = paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, impl=impl, **data.scales())
    contiguous = contiguous_decode_attention(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens,
                                             impl=impl, **data.scales())
    tol = 1e-5 if q_dtype == torch.float32 else 1e-2  # 16-bit q: the softmax weights round to fp16
    for out in (paged, contiguous):
        assert out.dtype == q_dtype and not out.isnan().any()
        assert rel_err(out, ref) < tol


@pytest.mark.parametrize("q_gain", [3e5, 1e-6])
def test_fp8_decode_keeps_q_outside_fp16_range(q_gain, poison_scratch):
    """The kernels read an fp8 cache in fp16 with q scaled by a power of two: q beyond fp16's range (or deep in its
    subnormals) must still give the reference's output, not inf / NaN or zeros."""
    data = to_fp8(make_decode_data([40, 129, 3], 8, 2, 64, torch.bfloat16, CPU, seed=5))
    data.q.mul_(q_gain)  # [B, Hq, D] bf16 holds both ends; fp16 holds neither
    data.k_scale.div_(q_gain)  # [1] the same scores as before: a peaked softmax, so q's precision shows
    k_cache, v_cache, table = paginate(data, 16)
    ref = contiguous_decode_reference(data.q.double(), dequantize(data.k_slab, data.k_scale).double(),
                                      dequantize(data.v_slab, data.v_scale).double(), data.seq_starts, data.seq_lens)
    out = paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, impl="triton", **data.scales())
    assert not out.isnan().any() and rel_err(out, ref) < 1e-2


def test_fp8_error_against_the_unquantised_cache_is_small():
    """What fp8 storage costs in accuracy: decode over fp8 pages against the same batch in fp32 (the number the
    kernel bench reports as kv_quant_err); random K/V, amax scales."""
    data = make_decode_data([300, 77, 512, 5], 8, 2, 128, torch.float32, CPU, seed=3)
    exact = contiguous_decode_reference(data.q.double(), data.k_slab.double(), data.v_slab.double(), data.seq_starts,
                                        data.seq_lens)
    fp8 = to_fp8(data)
    out = contiguous_decode_attention(fp8.q, fp8.k_slab, fp8.v_slab, fp8.seq_starts, fp8.seq_lens, impl="torch",
                                      **fp8.scales())
    assert 1e-3 < rel_err(out, exact) < 0.08


def test_bad_fp8_input_is_one_clear_error():
    data = to_fp8(make_decode_data([5, 9], 4, 2, 64, torch.float32, CPU))
    args = (data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens)
    with pytest.raises(ConfigError, match="needs k_scale"):
        contiguous_decode_attention(*args, impl="torch")
    with pytest.raises(ConfigError, match="one-element float32"):
        contiguous_decode_attention(*args, impl="torch", k_scale=data.k_scale, v_scale=data.v_scale.double())
    plain = make_decode_data([5, 9], 4, 2, 64, torch.float32, CPU)
    with pytest.raises(ConfigError, match="fp8 cache only"):
        contiguous_decode_attention(plain.q, plain.k_slab, plain.v_slab, plain.seq_starts, plain.seq_lens,
                                    impl="torch", k_scale=data.k_scale, v_scale=data.v_scale)
    with pytest.raises(ConfigError, match="q's"):
        contiguous_decode_attention(plain.q.bfloat16(), plain.k_slab, plain.v_slab, plain.seq_starts, plain.seq_lens)
    with pytest.raises(ConfigError, match="kv dtype must be one of auto, fp8"):
        check_kv_dtype("int4")
