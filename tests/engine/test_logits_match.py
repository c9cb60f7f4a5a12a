"""Paging is transparent at the logit level: the same prefill + decode steps through a paged and a contiguous
cache give the same logits (fp32 on CPU: ~1e-6; bf16 on GPU with identical batches: small relative error)."""

import pytest
import torch

from pabench.backends import KVLayout, make_backend
from pabench.backends.base import PrefillBatch
from pabench.core import Sequence
from pabench.engine.attention import prefill_attn
from pabench.engine.model import DecoderModel, ModelConfig

CFG = ModelConfig("t", vocab_size=101, hidden_size=64, num_layers=2, num_q_heads=4, num_kv_heads=2, head_dim=64,
                  intermediate_size=96)


def logits_through(model: DecoderModel, backend_name: str, prompts: list[list[int]], steps: int, device: str,
                   dtype: str, kv_dtype: str = "auto") -> torch.Tensor:
    """Prefill every prompt, then `steps` greedy decode steps; returns the decode logits `[steps, B, vocab]`."""
    layout = KVLayout(CFG.num_layers, CFG.num_kv_heads, CFG.head_dim, dtype=dtype, device=device, kv_dtype=kv_dtype)
    backend = make_backend(backend_name, layout, kv_budget_bytes=4096 * layout.bytes_per_token, page_size=4,
                           max_num_seqs=8, max_model_len=256,
                           kv_scales=model.kv_scales() if kv_dtype == "fp8" else None)
    seqs = [Sequence(i, p) for i, p in enumerate(prompts)]
    for s in seqs:
        backend.admit(s, 256)
        meta = backend.prepare_prefill(s)
        pos = torch.arange(s.num_tokens, device=device)

        batch = PrefillBatch.build([meta], backend.kv_slots, device)
        ids = torch.tensor(s.token_ids, device=device)
        tok = int(model.forward(ids, pos, prefill_attn(backend, batch),
                                logits_rows=torch.tensor([s.num_tokens - 1], device=device)).argmax())
        s.num_computed_tokens = s.num_tokens
        s.append_token(tok)
    out = []
    for _ in range(steps):
        for s in seqs:
            backend.grow(s)
        slots = backend.prepare_decode(seqs)

        def attn(layer, q, k, v):
            backend.write_kv(layer, slots, k, v)
            return backend.decode_attention(layer, q)

        ids = torch.tensor([s.last_token_id for s in seqs], device=device)
        pos = torch.tensor([s.num_tokens - 1 for s in seqs], device=device)
        logits = model.forward(ids, pos, attn)  # [B, vocab]
        out.append(logits)
        for s, t in zip(seqs, logits.argmax(-1).tolist()):
            s.num_computed_tokens = s.num_tokens
            s.append_token(t)
    return torch.stack(out)  # [steps, B, vocab]


def _prompts(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, CFG.vocab_size, (int(torch.randint(1, 30, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def test_logits_match_on_cpu_fp32():
    model = DecoderModel(CFG, dtype=torch.float32, device="cpu", seed=3, max_position=512)
    ref = logits_through(model, "paged", _prompts(), 6, "cpu", "fp32")
    for name in ("contiguous-max", "contiguous-oracle"):
        other = logits_through(model, name, _prompts(), 6, "cpu", "fp32")
        assert not torch.isnan(other).any()
        assert (other - ref).abs().max() < 1e-4, name


@pytest.mark.gpu
def test_logits_match_on_gpu_bf16():
    """Same kernels family, same batch: bf16 logits agree within 1% relative error (stated tolerance)."""
    model = DecoderModel(CFG, dtype=torch.bfloat16, device="cuda", seed=3, max_position=512)
    ref = logits_through(model, "paged", _prompts(), 6, "cuda", "bf16")
    other = logits_through(model, "contiguous-oracle", _prompts(), 6, "cuda", "bf16")
    rel = (other - ref).norm() / ref.norm()
    assert not torch.isnan(other).any() and rel < 1e-2, float(rel)


@pytest.mark.gpu
def test_fp8_logits_on_gpu_match_across_backends_and_stay_near_bf16():
    """fp8 pages on CUDA (Triton write, decode kernel): paged and contiguous logits agree as in bf16, and the first
    decode step is within 5% of the bf16 cache's (stated tolerance: e4m3 keeps 3 mantissa bits)."""
    model = DecoderModel(CFG, dtype=torch.bfloat16, device="cuda", seed=3, max_position=512)
    exact = logits_through(model, "paged", _prompts(), 6, "cuda", "bf16")
    ref = logits_through(model, "paged", _prompts(), 6, "cuda", "bf16", kv_dtype="fp8")
    other = logits_through(model, "contiguous-oracle", _prompts(), 6, "cuda", "bf16", kv_dtype="fp8")
    assert not torch.isnan(ref).any() and float((other - ref).norm() / ref.norm()) < 1e-2
    rel = float((ref[0] - exact[0]).norm() / exact[0].norm())
    assert 1e-4 < rel < 0.05, rel
