"""The fp8 KV cache end to end (issue 19): K/V stored as e4m3 with per-layer scales calibrated once per model, on
every backend, through prefill, decode, prefix hits, forks, beams, chunked prefill and preemption, on the CPU."""

import pytest
import torch
from test_logits_match import CFG, _prompts, logits_through

from pabench.backends import KVLayout, make_backend
from pabench.engine.model import DecoderModel
from pabench.errors import ConfigError
from pabench.kernels.fp8 import FP8_DTYPE, FP8_MAX


def test_storage_is_one_byte_per_element_and_the_budget_holds_more_tokens():
    fp32 = KVLayout(4, 2, 64, dtype="fp32")
    fp8 = KVLayout(4, 2, 64, dtype="fp32", kv_dtype="fp8")
    bf16 = KVLayout(4, 2, 64, dtype="bf16", kv_dtype="fp8")
    assert fp32.bytes_per_token == 4 * fp8.bytes_per_token and bf16.bytes_per_token == fp8.bytes_per_token == 1024
    for name in ("paged", "contiguous-oracle"):
        a = make_backend(name, fp32, kv_budget_bytes=2**20, max_model_len=256)
        b = make_backend(name, fp8, kv_budget_bytes=2**20, max_model_len=256)
        assert b.capacity()["num_tokens"] == 4 * a.capacity()["num_tokens"]
        assert b.capacity()["kv_budget_bytes"] == a.capacity()["kv_budget_bytes"] == 2**20
        pool = b.k_pool if name == "paged" else b.k_slab
        assert pool.dtype == FP8_DTYPE and pool.element_size() == 1
    with pytest.raises(ConfigError, match="kv dtype must be one of auto, fp8"):
        KVLayout(4, 2, 64, kv_dtype="int8")
    with pytest.raises(ConfigError, match=r"\[num_layers=4\]"):
        fp8.layer_scales((torch.ones(3), torch.ones(3)))


def test_calibrated_scales_are_per_layer_deterministic_and_leave_headroom():
    model = DecoderModel(CFG, dtype=torch.float32, device="cpu", seed=3, max_position=1024)
    k, v = model.kv_scales()
    assert k.shape == v.shape == (CFG.num_layers,) and (k > 0).all() and (v > 0).all()
    again = DecoderModel(CFG, dtype=torch.float32, device="cpu", seed=3, max_position=1024).kv_scales()
    assert torch.equal(k, again[0]) and torch.equal(v, again[1])
    other = DecoderModel(CFG, dtype=torch.float32, device="cpu", seed=4, max_position=1024).kv_scales()
    assert not torch.equal(k, other[0])
    # headroom 2: the probe's largest K maps to half of e4m3's range, so longer contexts rarely saturate
    assert float(k.max()) * FP8_MAX / 2 == pytest.approx(float(k.max() * FP8_MAX / 2))


def test_fp8_logits_same_on_every_backend_and_close_to_the_float_cache():
    """Paging stays transparent in fp8 (the same bytes, the same arithmetic), and fp8 costs a small, real error."""
    model = DecoderModel(CFG, dtype=torch.float32, device="cpu", seed=3, max_position=512)
    exact = logits_through(model, "paged", _prompts(), 6, "cpu", "fp32")
    paged = logits_through(model, "paged", _prompts(), 6, "cpu", "fp32", kv_dtype="fp8")
    assert not paged.isnan().any()
    for name in ("contiguous-max", "contiguous-oracle"):
        other = logits_through(model, name, _prompts(), 6, "cpu", "fp32", kv_dtype="fp8")
        assert (other - paged).abs().max() < 1e-4, name
    # the first decode step reads every prompt's K/V back from fp8 (later steps follow their own greedy tokens,
    # which a near-tie can flip, after which the two runs decode different text)
    rel = float((paged[0] - exact[0]).norm() / exact[0].norm())
    assert 1e-4 < rel < 0.05, rel  # quantised (not a float copy), yet close


@pytest.mark.parametrize("workload,backends,options", [
    ("shared-prefix", ("paged", "contiguous-oracle"), {"num_requests": 6}),
    ("parallel-sampling", ("paged", "contiguous-pow2"), {"num_requests": 2}),
    ("default", ("paged", "contiguous-oracle"), {"num_requests": 10, "chunked_prefill": True,
                                                  "max_batched_tokens": 64}),
    ("default", ("paged", "contiguous-oracle"), {"num_requests": 10, "num_pages": 30, "watermark": 0.0}),
    ("default", ("paged", "paged-reprefill"), {"num_requests": 4, "beam_width": 2}),
])
def test_fp8_runs_serve_every_feature_with_the_same_tokens_on_every_backend(workload, backends, options):
    from pabench.bench.runner import RunConfig, run_benchmark

    results, records, p, failures = run_benchmark(RunConfig(workload=workload, backends=backends, warmup=False,
                                                            kv_dtype="fp8", realtime=False, **options))
    assert not failures and p.layout.is_fp8
    for r in results:
        assert r.config["kv_dtype"] == "fp8" and r.config["token_match_pct"] == 100.0
        assert r.config["kv_budget_bytes"] == p.kv_budget_bytes
    if "num_pages" in options:
        assert records[0].num_preemptions > 0  # the tight budget really preempts and recomputes


def test_fp8_on_a_gpu_without_e4m3_is_one_line(monkeypatch):
    from pabench.kernels import fp8

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(ConfigError, match="compute capability >= 8.9.*8.0"):
        fp8.check_fp8_device("cuda")
