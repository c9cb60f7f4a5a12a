"""`PipelinedEngine` (--async-scheduling): the host runs one decode step ahead with placeholder tokens. On the CPU
it must serve exactly what `Engine` serves: the same tokens, the same schedule (step kinds and batch sizes), the
same preemptions and prefix hits, through forks, preemption by recompute, prefix caching and every backend."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pabench.backends import KVLayout, make_backend
from pabench.engine.engine import Engine
from pabench.engine.model import DecoderModel, ModelConfig
from pabench.engine.pipelined import PipelinedEngine
from pabench.engine.scheduler import SchedulerConfig
from pabench.bench.workloads import Request
from tests.engine.test_engine import CFG, model, requests  # noqa: F401  (model is a fixture)


def serve_with(engine_cls, model, name, reqs, budget_tokens, *, prefix=False, max_num_seqs=8, min_prefill_seqs=1):  # noqa: F811
    layout = KVLayout(CFG.num_layers, CFG.num_kv_heads, CFG.head_dim, dtype="fp32")
    backend = make_backend(name, layout, kv_budget_bytes=budget_tokens * layout.bytes_per_token, page_size=4,
                           enable_prefix_caching=prefix, max_num_seqs=max_num_seqs, max_model_len=128,
                           attn_impl="torch")
    config = SchedulerConfig(max_num_seqs=max_num_seqs, max_batched_tokens=256, max_model_len=128,
                             min_prefill_seqs=min_prefill_seqs)
    return engine_cls(model, backend, config).run(reqs, realtime=False), backend


def assert_same_run(a, b):
    assert a.output_token_ids == b.output_token_ids
    assert [(s.kind, s.num_seqs, s.num_tokens) for s in a.steps] == [(s.kind, s.num_seqs, s.num_tokens) for s in b.steps]
    assert a.num_preemptions == b.num_preemptions and a.prefix_hit_rate == b.prefix_hit_rate
    assert [r.request_id for r in a.requests] == [r.request_id for r in b.requests]
    for x, y in zip(a.requests, b.requests):
        assert x.num_output_tokens == y.num_output_tokens and x.num_samples == y.num_samples
        assert all(len(t) == len(u) for t, u in zip(x.token_times_s, y.token_times_s))
    assert all(s.memory == t.memory for s, t in zip(a.steps, b.steps))


@pytest.mark.parametrize("name,budget,samples,prefix", [
    ("paged", 1024, 1, False),  # roomy
    ("paged", 96, 1, False),  # preemption by recompute
    ("paged", 1024, 3, False),  # forks and copy-on-write
    ("paged", 1024, 1, True),  # prefix caching
    ("contiguous-oracle", 512, 1, False),
    ("contiguous-max", 1024, 2, False),
])
def test_pipelined_serves_exactly_what_the_engine_serves(model, name, budget, samples, prefix):  # noqa: F811
    reqs = requests(n=12, prompt=(3, 30), out=(1, 30), samples=samples,
                    prefix=[5, 6, 7, 8, 9, 10, 11, 12] if prefix else None)
    sync, _ = serve_with(Engine, model, name, reqs, budget, prefix=prefix)
    piped, backend = serve_with(PipelinedEngine, model, name, reqs, budget, prefix=prefix)
    assert_same_run(piped, sync)
    assert backend.memory().reserved_bytes == 0
    if budget == 96:
        assert piped.num_preemptions > 0
    if prefix:
        assert piped.prefix_hit_rate > 0


def test_no_placeholder_survives(model):  # noqa: F811
    """Every generated token is the model's: a run whose model never samples token 0 shows no 0 anywhere."""
    reqs = requests(n=10, prompt=(3, 20), out=(5, 25))
    sync, _ = serve_with(Engine, model, "paged", reqs, 96)
    piped, _ = serve_with(PipelinedEngine, model, "paged", reqs, 96)
    produced = [t for samples in sync.output_token_ids.values() for s in samples for t in s]
    if 0 in produced:
        pytest.skip("this model samples token 0, so the check cannot tell")
    assert all(t != 0 for samples in piped.output_token_ids.values() for s in samples for t in s)


PCFG = ModelConfig("prop", vocab_size=61, hidden_size=32, num_layers=1, num_q_heads=2, num_kv_heads=1, head_dim=16,
                   intermediate_size=32)
PMODEL = DecoderModel(PCFG, dtype=torch.float32, device="cpu", seed=3, max_position=128)
LAYOUT = KVLayout(PCFG.num_layers, PCFG.num_kv_heads, PCFG.head_dim, dtype="fp32")


@settings(max_examples=20, deadline=None)
@given(reqs=st.lists(st.tuples(st.integers(1, 20), st.integers(1, 12), st.integers(1, 2)), min_size=1, max_size=8),
       max_num_seqs=st.integers(2, 5), min_prefill=st.integers(1, 3), budget_tokens=st.integers(64, 200),
       page_size=st.sampled_from([2, 4, 8]))
def test_pipelined_matches_on_random_workloads(reqs, max_num_seqs, min_prefill, budget_tokens, page_size):
    g = torch.Generator().manual_seed(len(reqs))
    requests_ = [Request(i, 0.0, tuple(torch.randint(0, PCFG.vocab_size, (p,), generator=g).tolist()), o, n)
                 for i, (p, o, n) in enumerate(reqs)]
    runs = []
    for engine_cls in (Engine, PipelinedEngine):
        backend = make_backend("paged", LAYOUT, kv_budget_bytes=budget_tokens * LAYOUT.bytes_per_token,
                               page_size=page_size, max_num_seqs=max_num_seqs, max_model_len=64, attn_impl="torch")
        config = SchedulerConfig(max_num_seqs=max_num_seqs, max_batched_tokens=64, max_model_len=64,
                                 min_prefill_seqs=min(min_prefill, max_num_seqs))
        runs.append(engine_cls(PMODEL, backend, config).run(requests_, realtime=False))
        assert backend.memory().reserved_bytes == 0
    assert_same_run(runs[1], runs[0])


def test_pipelined_with_staggered_arrivals(model):  # noqa: F811
    """Requests that arrive while the engine idles or runs (simulated clock): the same service as `Engine`."""
    base = requests(n=10, prompt=(3, 20), out=(1, 20))
    reqs = [Request(r.request_id, 0.05 * (i // 3), r.prompt_token_ids, r.output_len, r.num_samples)
            for i, r in enumerate(base)]
    sync, _ = serve_with(Engine, model, "paged", reqs, 256)
    piped, _ = serve_with(PipelinedEngine, model, "paged", reqs, 256)
    assert piped.output_token_ids == sync.output_token_ids
    assert len(piped.requests) == len(reqs)


def test_cli_async_scheduling_runs_and_says_so(tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from pabench.cli import app

    out = tmp_path / "run.csv"
    res = CliRunner().invoke(app, ["run", "--backend", "paged,contiguous-oracle", "--num-requests", "8", "--layers", "1",
                                   "--async-scheduling", "--no-progress", "--csv", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert df["async_scheduling"].all() and (df["token_match_pct"] == 100.0).all()
