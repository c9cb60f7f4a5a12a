"""A chunked-prefill mixed step's attention (decode tokens and prompt chunks packed in one call per layer) against
a float64 reference: every query token attends to its own sequence's earlier K/V (cached pages or region) and to
itself. Any page size, GQA, chunk boundaries on and off page boundaries, both caches."""

import math

import pytest
import torch

from pabench.backends import KVLayout, make_backend
from pabench.backends.base import PrefillBatch
from pabench.core import Sequence

H_Q, H_KV, D = 4, 2, 32  # head_dim 32: the smallest the Triton kernels tile


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> torch.Tensor:
    """float64 causal attention of q `[n, Hq, D]` (positions start..start+n-1) over k, v `[start + n, Hkv, D]`."""
    group = H_Q // H_KV
    k, v = k.double().repeat_interleave(group, dim=1), v.double().repeat_interleave(group, dim=1)  # [T, Hq, D]
    scores = torch.einsum("qhd,khd->hqk", q.double(), k) / math.sqrt(D)  # [Hq, n, T]
    pos = torch.arange(q.shape[0])[:, None] + start  # [n, 1]
    scores = scores.masked_fill(torch.arange(k.shape[0])[None, :] > pos, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)  # [n, Hq, D]


@pytest.mark.parametrize("impl", ["torch", "triton"])  # gather + SDPA, or the unified kernel reading in place
@pytest.mark.parametrize("backend_name", ["paged", "paged-noprefix", "contiguous-oracle"])
@pytest.mark.parametrize("page_size", [1, 4, 16])
def test_mixed_step_matches_float64(backend_name, page_size, impl):
    gen = torch.Generator().manual_seed(page_size)
    layout = KVLayout(1, H_KV, D, "fp32")
    backend = make_backend(backend_name, layout, kv_budget_bytes=4096 * layout.bytes_per_token, page_size=page_size,
                           max_num_seqs=8, max_model_len=256, attn_impl=impl)
    assert backend.unified_attention == (impl == "triton")
    # (tokens so far, positions this step computes): two decode tokens, a first chunk, a middle chunk that starts
    # on no page boundary, a last chunk ending the prompt
    plan = [(37, (36, 37)), (9, (8, 9)), (50, (0, 21)), (70, (21, 45)), (33, (16, 33))]
    seqs, metas, kv = [], [], {}
    for i, (n, (start, end)) in enumerate(plan):
        seq = Sequence(i, [1 + (13 * i + j) % 97 for j in range(n)])
        backend.admit(seq, 200, max_new_tokens=start or end)  # the cached part (or the first chunk) has memory
        covered = end if seq.page_table is None else seq.page_table.num_tokens  # contiguous: reserved whole
        if end > covered:  # the step's own tokens (a chunk, or the decode token) get their slots
            backend.grow_chunk(seq, end)
        kv[i] = (torch.randn(end, H_KV, D, generator=gen), torch.randn(end, H_KV, D, generator=gen))
        if start:  # the earlier tokens' K/V are in the cache already
            backend.write_kv(0, backend.prepare_prefill(seq, 0, start).slots, kv[i][0][:start], kv[i][1][:start])
        seqs.append(seq)
        metas.append(backend.prepare_prefill(seq, start, end))
    batch = PrefillBatch.build(metas, backend.kv_slots, unified=backend.unified_attention)
    assert (batch.mixed is not None) == (impl == "triton")
    q = torch.randn(batch.cu_q[-1], H_Q, D, generator=gen)  # [T_new, Hq, D]
    k_new = torch.cat([kv[i][0][s:e] for i, (_, (s, e)) in enumerate(plan)])  # [T_new, Hkv, D]
    v_new = torch.cat([kv[i][1][s:e] for i, (_, (s, e)) in enumerate(plan)])
    backend.write_kv(0, batch.slots, k_new, v_new)
    out = backend.prefill_attention(0, q, k_new, v_new, batch)  # [T_new, Hq, D]
    assert torch.isfinite(out).all()
    for i, (_, (start, end)) in enumerate(plan):
        rows = slice(batch.cu_q[i], batch.cu_q[i + 1])
        expect = reference(q[rows], kv[i][0][:end], kv[i][1][:end], start)
        torch.testing.assert_close(out[rows].double(), expect, rtol=1e-4, atol=1e-5)
