"""Engine + scheduler + model on CPU: paging is transparent (same tokens), preemption, forks, prefix hits."""

import pytest
import torch

from pabench.backends import KVLayout, make_backend
from pabench.errors import ConfigError
from pabench.engine.engine import Engine
from pabench.engine.model import DecoderModel, ModelConfig
from pabench.engine.scheduler import SchedulerConfig
from pabench.bench.workloads import Request

CFG = ModelConfig("test", vocab_size=97, hidden_size=64, num_layers=2, num_q_heads=4, num_kv_heads=2,
                  head_dim=16, intermediate_size=96)


@pytest.fixture(scope="module")
def model():
    return DecoderModel(CFG, dtype=torch.float32, device="cpu", seed=1, max_position=256)


def requests(n=12, seed=0, prompt=(3, 40), out=(1, 30), samples=1, prefix=None):
    g = torch.Generator().manual_seed(seed)
    reqs = []
    for i in range(n):
        p = int(torch.randint(prompt[0], prompt[1] + 1, (1,), generator=g))
        o = int(torch.randint(out[0], out[1] + 1, (1,), generator=g))
        toks = torch.randint(0, CFG.vocab_size, (p,), generator=g).tolist()
        if prefix:
            toks = list(prefix) + toks
        reqs.append(Request(i, 0.0, tuple(toks), o, samples))
    return reqs


def serve(model, name, reqs, budget_tokens, page_size=4, max_num_seqs=8, prefix=False, min_prefill_seqs=1):
    layout = KVLayout(CFG.num_layers, CFG.num_kv_heads, CFG.head_dim, dtype="fp32")
    b = make_backend(name, layout, kv_budget_bytes=budget_tokens * layout.bytes_per_token, page_size=page_size,
                     enable_prefix_caching=prefix, max_num_seqs=max_num_seqs, max_model_len=128,
                     attn_impl="torch")
    eng = Engine(model, b, SchedulerConfig(max_num_seqs=max_num_seqs, max_batched_tokens=256, max_model_len=128,
                                           min_prefill_seqs=min_prefill_seqs))
    rec = eng.run(reqs, realtime=False)
    return rec, b


@pytest.mark.parametrize("name", ["contiguous-max", "contiguous-pow2", "contiguous-oracle"])
def test_paged_and_contiguous_produce_the_same_tokens(model, name):
    reqs = requests()
    paged, _ = serve(model, "paged", reqs, budget_tokens=256)
    other, _ = serve(model, name, reqs, budget_tokens=256)
    assert paged.output_token_ids == other.output_token_ids
    for r in reqs:
        assert [len(t) for t in paged.output_token_ids[r.request_id]] == [r.output_len]


def test_min_prefill_seqs_batches_prefills_without_changing_tokens(model):
    """Holding prefill back changes the schedule (fewer, larger prefill steps), never the tokens."""
    reqs = requests(n=20, out=(1, 12))
    eager, _ = serve(model, "paged", reqs, budget_tokens=1024, max_num_seqs=4)
    batched, _ = serve(model, "paged", reqs, budget_tokens=1024, max_num_seqs=4, min_prefill_seqs=3)
    contiguous, _ = serve(model, "contiguous-oracle", reqs, budget_tokens=1024, max_num_seqs=4, min_prefill_seqs=3)
    assert batched.output_token_ids == eager.output_token_ids == contiguous.output_token_ids
    prefills = lambda rec: [s.num_seqs for s in rec.steps if s.kind == "prefill"]  # noqa: E731
    assert len(prefills(batched)) < len(prefills(eager))
    assert min(prefills(batched)[:-1]) >= 3


def test_preemption_by_recompute_finishes_everything_with_same_tokens(model):
    reqs = requests(n=10, prompt=(10, 30), out=(20, 40))
    roomy, _ = serve(model, "paged", reqs, budget_tokens=1024)
    tight, b = serve(model, "paged", reqs, budget_tokens=96)  # forces preemption
    assert tight.num_preemptions > 0 and roomy.num_preemptions == 0
    assert len(tight.requests) == len(reqs)
    assert tight.output_token_ids == roomy.output_token_ids
    assert b.block_manager.num_used_pages == 0  # every page returned
    b.block_manager.check_invariants()


def test_parallel_sampling_forks_share_pages_and_copy_on_write(model):
    reqs = requests(n=4, prompt=(9, 15), out=(5, 8), samples=3)
    rec, b = serve(model, "paged", reqs, budget_tokens=512)
    assert all(len(rec.output_token_ids[r.request_id]) == 3 for r in reqs)
    for r in rec.requests:
        assert r.num_samples == 3
    samples = rec.output_token_ids[0]
    assert samples[0][0] != samples[1][0]  # the samples diverge at their first token
    assert rec.num_cow_copies > 0
    assert max(s.memory.saved_bytes for s in rec.steps) > 0
    cont, _ = serve(model, "contiguous-oracle", reqs, budget_tokens=512)
    assert cont.output_token_ids == rec.output_token_ids


def test_prefix_caching_hits_and_is_transparent(model):
    prefix = tuple(range(1, 17))  # 4 full pages of 4
    reqs = requests(n=6, prompt=(2, 6), out=(2, 5), prefix=prefix)
    on, b = serve(model, "paged", reqs, budget_tokens=512, prefix=True, max_num_seqs=2)
    off, _ = serve(model, "paged", reqs, budget_tokens=512, prefix=False, max_num_seqs=2)
    assert on.prefix_hit_rate > 0.3 and off.prefix_hit_rate == 0
    assert on.output_token_ids == off.output_token_ids


def test_budget_too_small_is_a_clear_error(model):
    reqs = requests(n=2, prompt=(40, 40), out=(20, 20))
    with pytest.raises(ConfigError, match="cannot hold request"):
        serve(model, "paged", reqs, budget_tokens=32)
    with pytest.raises(ConfigError, match="cannot hold request"):
        serve(model, "contiguous-max", reqs, budget_tokens=100)  # max reserves 128


def test_records_are_consistent(model):
    reqs = requests(n=6)
    rec, _ = serve(model, "paged", reqs, budget_tokens=256)
    for r, req in zip(rec.requests, reqs):
        assert r.num_output_tokens == req.output_len
        assert r.arrival_s <= r.first_token_s <= r.finish_s
        assert list(r.token_times_s[0]) == sorted(r.token_times_s[0])
    assert {s.kind for s in rec.steps} == {"prefill", "decode"}
    assert all(0 <= s.host_s <= s.step_s for s in rec.steps)


def test_model_presets():
    assert ModelConfig.from_name("llama-3-8b").num_kv_heads == 8
    assert ModelConfig.from_name("llama-3-8b", 2).num_layers == 2
    assert 7.9e9 < ModelConfig.from_name("llama-3-8b").num_params < 8.1e9
    with pytest.raises(ConfigError, match="unknown model"):
        ModelConfig.from_name("gpt-5")
    with pytest.raises(ConfigError):
        ModelConfig("bad", 10, 64, 2, num_q_heads=3, num_kv_heads=2, head_dim=16, intermediate_size=10)


@pytest.mark.parametrize("name", ["contiguous-max", "contiguous-pow2", "contiguous-oracle"])
def test_contiguous_reserves_fork_regions_at_admission(model, name):
    """Regression (seen on the H200): two parallel-sampling groups admitted in one step must not both count on
    the same free region for their forks. Regions for forks are reserved with the parent, all or nothing."""
    reqs = requests(n=6, prompt=(9, 15), out=(5, 8), samples=3)
    rec, b = serve(model, name, reqs, budget_tokens=7 * 128, max_num_seqs=16)  # 7 regions at max_model_len
    assert len(rec.requests) == 6
    assert b.memory().reserved_bytes == 0 and b.allocator.free_extents() == [(0, b.num_slots)]
    paged, _ = serve(model, "paged", reqs, budget_tokens=7 * 128, max_num_seqs=16)
    assert rec.output_token_ids == paged.output_token_ids
