"""Property test of the whole serving loop on the CPU: for random small workloads, budgets, batch limits and
prefill batching, every request finishes, the batch limit holds, and every backend gives the same tokens."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pabench.backends import KVLayout, make_backend
from pabench.engine.engine import Engine
from pabench.engine.model import DecoderModel, ModelConfig
from pabench.engine.scheduler import SchedulerConfig
from pabench.bench.workloads import Request

CFG = ModelConfig("prop", vocab_size=61, hidden_size=32, num_layers=1, num_q_heads=2, num_kv_heads=1, head_dim=16,
                  intermediate_size=32)
MODEL = DecoderModel(CFG, dtype=torch.float32, device="cpu", seed=3, max_position=128)
LAYOUT = KVLayout(CFG.num_layers, CFG.num_kv_heads, CFG.head_dim, dtype="fp32")

requests_strategy = st.lists(st.tuples(st.integers(1, 20), st.integers(1, 12), st.integers(1, 2)), min_size=1,
                             max_size=8)


@settings(max_examples=25, deadline=None)
@given(reqs=requests_strategy, max_num_seqs=st.integers(2, 5), min_prefill=st.integers(1, 3),
       budget_tokens=st.integers(64, 200), page_size=st.sampled_from([2, 4, 8]))
def test_everything_finishes_and_paging_is_transparent(reqs, max_num_seqs, min_prefill, budget_tokens, page_size):
    g = torch.Generator().manual_seed(len(reqs))
    requests = [Request(i, 0.0, tuple(torch.randint(0, CFG.vocab_size, (p,), generator=g).tolist()), o, n)
                for i, (p, o, n) in enumerate(reqs)]
    outputs = {}
    for name in ("paged", "contiguous-oracle"):
        backend = make_backend(name, LAYOUT, kv_budget_bytes=budget_tokens * LAYOUT.bytes_per_token,
                               page_size=page_size, max_num_seqs=max_num_seqs, max_model_len=64, attn_impl="torch")
        config = SchedulerConfig(max_num_seqs=max_num_seqs, max_batched_tokens=64, max_model_len=64,
                                 min_prefill_seqs=min(min_prefill, max_num_seqs))
        record = Engine(MODEL, backend, config).run(requests, realtime=False)
        assert sorted(r.request_id for r in record.requests) == [r.request_id for r in requests]
        assert all(s.num_running <= max_num_seqs for s in record.steps)
        for r in requests:  # every sample produced exactly its output length
            assert [len(t) for t in record.output_token_ids[r.request_id]] == [r.output_len] * r.num_samples
        assert backend.memory().reserved_bytes == 0  # everything returned
        outputs[name] = record.output_token_ids
    assert outputs["paged"] == outputs["contiguous-oracle"]
