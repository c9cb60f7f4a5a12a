"""prefill_attention (torch SDPA) against a naive per-token loop in float64."""

import pytest
import torch
from kernel_checks import assert_close

from pabench.errors import ConfigError
from pabench.kernels import prefill_attention


def naive_prefill(q, k, v, scale=None):
    """New token i (of n_new) sees cached positions 0 .. n_total - n_new + i, one token at a time."""
    n_new, num_q_heads, head_dim = q.shape
    n_total, num_kv_heads, _ = k.shape
    group = num_q_heads // num_kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty(n_new, num_q_heads, head_dim, dtype=torch.float64)
    for i in range(n_new):
        last = n_total - n_new + i
        for h in range(num_q_heads):
            keys = k[: last + 1, h // group].double()  # [last + 1, D]
            scores = keys @ q[i, h].double() * scale  # [last + 1]
            out[i, h] = torch.softmax(scores, 0) @ v[: last + 1, h // group].double()
    return out


@pytest.mark.parametrize("n_new,n_total", [(6, 6), (3, 10), (1, 7)])
@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_matches_naive_loop(n_new, n_total, group, dtype):
    gen = torch.Generator().manual_seed(n_new * 100 + n_total)
    num_kv_heads, head_dim = 2, 32
    q = torch.randn(n_new, num_kv_heads * group, head_dim, generator=gen).to(dtype)
    k = torch.randn(n_total, num_kv_heads, head_dim, generator=gen).to(dtype)
    v = torch.randn(n_total, num_kv_heads, head_dim, generator=gen).to(dtype)
    out = prefill_attention(q, k, v)
    assert out.dtype == dtype
    assert_close(out, naive_prefill(q, k, v), dtype)


def test_prefill_scale_and_errors():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(n, 2, 16, generator=gen) for n in (2, 5, 5))
    assert_close(prefill_attention(q, k, v, scale=0.5), naive_prefill(q, k, v, scale=0.5), torch.float32)
    with pytest.raises(ConfigError):
        prefill_attention(torch.randn(6, 2, 16), k, v)  # n_new > n_total
    with pytest.raises(ConfigError):
        prefill_attention(torch.randn(2, 3, 16), k, v)  # 3 q heads over 2 kv heads


def test_prefill_backend_choice_is_parsed_and_bad_values_are_named(monkeypatch):
    from pabench.kernels import prefill

    monkeypatch.setenv(prefill.PREFILL_SDPA_ENV, "torch")
    assert prefill.prefill_backends() is None
    monkeypatch.setenv(prefill.PREFILL_SDPA_ENV, "flash, efficient")
    assert [b.name for b in prefill.prefill_backends()] == ["FLASH_ATTENTION", "EFFICIENT_ATTENTION"]
    monkeypatch.setenv(prefill.PREFILL_SDPA_ENV, "flash,bogus")
    with pytest.raises(ConfigError, match="PABENCH_PREFILL_SDPA"):
        prefill.prefill_backends()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("choice", ["torch", "flash,efficient", "efficient", "cudnn,flash,efficient"])
@pytest.mark.parametrize("n_new,n_total", [(37, 37), (20, 90)])
def test_prefill_on_gpu_under_each_backend_choice(monkeypatch, choice, n_new, n_total):
    """Every pinned choice (bf16, GQA 4:1, masked and causal) matches the float64 loop."""
    from pabench.kernels import prefill

    monkeypatch.setenv(prefill.PREFILL_SDPA_ENV, choice)
    gen = torch.Generator().manual_seed(n_new)
    q = torch.randn(n_new, 8, 128, generator=gen).bfloat16()
    k = torch.randn(n_total, 2, 128, generator=gen).bfloat16()
    v = torch.randn(n_total, 2, 128, generator=gen).bfloat16()
    out = prefill_attention(q.cuda(), k.cuda(), v.cuda())
    assert_close(out.cpu(), naive_prefill(q, k, v), torch.bfloat16)
