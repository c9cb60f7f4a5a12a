"""varlen_prefill_attention (a whole prefill step in one call) against the float64 per-token loop, per sequence."""

import pytest
import torch
from kernel_checks import assert_close
from test_prefill import naive_prefill

from pabench.errors import ConfigError
from pabench.kernels import varlen_path, varlen_prefill_attention
from pabench.kernels.prefill import PREFILL_SDPA_ENV


def packed(pairs, num_kv_heads, group, head_dim, dtype, seed=0):
    """Random q (new tokens) and k, v (prefix + new) for each (n_new, n_total), packed end to end."""
    gen = torch.Generator().manual_seed(seed)
    qs, ks, vs, cu_q, cu_k = [], [], [], [0], [0]
    for n_new, n_total in pairs:
        qs.append(torch.randn(n_new, num_kv_heads * group, head_dim, generator=gen))
        ks.append(torch.randn(n_total, num_kv_heads, head_dim, generator=gen))
        vs.append(torch.randn(n_total, num_kv_heads, head_dim, generator=gen))
        cu_q.append(cu_q[-1] + n_new)
        cu_k.append(cu_k[-1] + n_total)
    q, k, v = (torch.cat(t).to(dtype) for t in (qs, ks, vs))
    return q, k, v, tuple(cu_q), tuple(cu_k)


def reference(q, k, v, cu_q, cu_k):
    return torch.cat([naive_prefill(q[cu_q[i]:cu_q[i + 1]], k[cu_k[i]:cu_k[i + 1]], v[cu_k[i]:cu_k[i + 1]])
                      for i in range(len(cu_q) - 1)])


MIXED = [(5, 5), (3, 11), (1, 1), (9, 9), (2, 7)]  # fresh prompts and cached prefixes side by side


@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_varlen_matches_per_sequence_reference_on_cpu(group, dtype):
    q, k, v, cu_q, cu_k = packed(MIXED, 2, group, 32, dtype)
    out = varlen_prefill_attention(q, k, v, cu_q, cu_k)
    assert out.dtype == dtype and varlen_path(q) == "loop"
    assert_close(out, reference(q, k, v, cu_q, cu_k), dtype)


@pytest.mark.parametrize("cu_q,cu_k,needle", [
    ((0, 3, 6), (0, 3), "do not match"),  # counts differ
    ((0, 4, 6), (0, 3, 9), "n_new <= n_total"),  # first sequence has more new tokens than tokens
    ((0, 3, 7), (0, 3, 9), "do not match"),  # q has 6 rows
])
def test_varlen_rejects_bad_offsets(cu_q, cu_k, needle):
    q, k, v = torch.randn(6, 4, 16), torch.randn(9, 2, 16), torch.randn(9, 2, 16)
    with pytest.raises(ConfigError, match=needle):
        varlen_prefill_attention(q, k, v, cu_q, cu_k)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pairs", [MIXED, [(130, 130), (64, 300), (1, 17), (257, 257)]])
def test_varlen_flash_path_on_gpu(pairs):
    """The fused path really runs on CUDA bf16 (GQA 4:1, head_dim 128) and matches the float64 loop."""
    q, k, v, cu_q, cu_k = packed(pairs, 2, 4, 128, torch.bfloat16, seed=len(pairs))
    qc, kc, vc = q.cuda(), k.cuda(), v.cuda()
    assert varlen_path(qc) == "flash-varlen"
    out = varlen_prefill_attention(qc, kc, vc, cu_q, cu_k)
    assert_close(out.cpu(), reference(q, k, v, cu_q, cu_k), torch.bfloat16)
    dev = [torch.tensor(c, dtype=torch.int32, device="cuda") for c in (cu_q, cu_k)]  # as a PrefillBatch holds them
    assert torch.equal(varlen_prefill_attention(qc, kc, vc, cu_q, cu_k, cu_q_dev=dev[0], cu_k_dev=dev[1]), out)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_varlen_loop_path_on_gpu_when_flash_is_not_first(monkeypatch):
    monkeypatch.setenv(PREFILL_SDPA_ENV, "efficient")
    q, k, v, cu_q, cu_k = packed(MIXED, 2, 4, 128, torch.bfloat16, seed=3)
    assert varlen_path(q.cuda()) == "loop"
    out = varlen_prefill_attention(q.cuda(), k.cuda(), v.cuda(), cu_q, cu_k)
    assert_close(out.cpu(), reference(q, k, v, cu_q, cu_k), torch.bfloat16)
