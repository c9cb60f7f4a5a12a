"""Chunked prefill (vLLM v1's one token budget per step): the same tokens as unchunked scheduling on the CPU in
fp32, every step within its budget, long prompts over several steps, preemption and prefix caching, bad input."""

import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pabench.bench.runner import RunConfig, build_backend, prepare, run_backend, scheduler_config, token_agreement
from pabench.engine.engine import Engine
from pabench.engine.scheduler import SchedulerConfig
from pabench.errors import ConfigError

CASES = [("paged", "default", {"num_requests": 12}), ("contiguous-oracle", "default", {"num_requests": 12}),
         ("paged", "shared-prefix", {"num_requests": 12, "max_model_len": 1024}),
         ("paged", "parallel-sampling", {"num_requests": 2, "max_model_len": 2048}),
         ("contiguous-oracle", "parallel-sampling", {"num_requests": 2, "max_model_len": 2048}),
         ("paged", "default", {"num_requests": 12, "num_pages": 30, "watermark": 0.0}),  # decodes preempt chunks
         ("paged-noprefix", "default", {"num_requests": 12, "num_pages": 30, "watermark": 0.0})]


@pytest.mark.parametrize("backend, workload, overrides", CASES,
                         ids=["paged", "oracle", "prefix-hits", "forks", "oracle-forks", "preempting",
                              "preempting-noprefix"])
def test_chunked_serves_the_same_tokens_within_the_budget(backend, workload, overrides):
    """fp32 on the CPU: a chunk attends to the earlier chunks' cached K/V and itself, so every sequence's logits
    are those of the unchunked prefill up to summation order; the greedy tokens agree (100% here; a near-tie of the
    random model could flip one, which would show as a lower match, not pass silently)."""
    budget = 48
    base = RunConfig(workload=workload, backends=(backend,), warmup=False, **overrides)
    p = prepare(base)
    plain = run_backend(p, backend)
    chunked = run_backend(prepare(replace(base, chunked_prefill=True, max_batched_tokens=budget), model=p.model),
                          backend)
    assert token_agreement(plain, chunked)["token_match_pct"] == 100.0
    assert all(s.num_tokens <= budget for s in chunked.steps)
    mixed = [s for s in chunked.steps if s.kind == "mixed"]
    assert mixed and all(0 <= s.num_decode_tokens <= s.num_seqs for s in mixed)
    assert any(s.num_decode_tokens and s.num_tokens > s.num_decode_tokens for s in mixed)  # decode beside chunks
    assert not any(s.kind == "prefill" for s in chunked.steps)  # every prompt went through the budget
    if "num_pages" in overrides:  # and the decode steps between mixed ones restaged rows that moved on
        assert chunked.num_preemptions > 0 and any(s.kind == "decode" for s in chunked.steps)


def test_a_prompt_longer_than_the_budget_takes_several_steps(tmp_path):
    path = tmp_path / "long.toml"
    path.write_text('name = "long"\ndescription = "one long prompt"\nnum_requests = 3\narrival = "burst"\n'
                    '[prompt]\nkind = "fixed"\nmean = 200\n[output]\nkind = "fixed"\nmean = 5\n')
    p = prepare(RunConfig(workload=str(path), backends=("paged",), warmup=False, chunked_prefill=True,
                          max_batched_tokens=64))
    record = run_backend(p, "paged")
    prompt_steps = [s for s in record.steps if s.kind == "mixed" and s.num_tokens > s.num_decode_tokens]
    assert sum(s.num_tokens - s.num_decode_tokens for s in prompt_steps) == 3 * 200  # no token computed twice
    assert len(prompt_steps) >= 3 * 200 // 64 and all(s.num_tokens <= 64 for s in record.steps)
    assert len(record.requests) == 3


@settings(max_examples=10, deadline=None)
@given(budget=st.integers(32, 96), num_pages=st.integers(24, 120), n=st.integers(1, 10), seed=st.integers(0, 99),
       partial=st.integers(1, 3))
def test_random_chunked_runs_finish_and_return_every_page(budget, num_pages, n, seed, partial):
    p = prepare(RunConfig(workload="default", backends=("paged",), warmup=False, num_requests=n, seed=seed,
                          num_pages=num_pages, watermark=0.0, chunked_prefill=True, max_batched_tokens=budget,
                          max_num_partial_prefills=partial))
    backend = build_backend(p, "paged")
    record = Engine(p.model, backend, scheduler_config(p)).run(p.requests, realtime=False)
    assert len(record.requests) == n and all(s.num_tokens <= budget for s in record.steps)
    bm = backend.block_manager
    bm.check_invariants()
    assert bm.num_used_pages == 0 and bm.num_page_refs == 0


def test_bad_budgets_are_refused():
    with pytest.raises(ConfigError, match="at least max_num_seqs"):
        SchedulerConfig(max_num_seqs=32, max_batched_tokens=16, chunked_prefill=True)
    done = subprocess.run([sys.executable, "-m", "pabench", "run", "--no-progress", "--num-requests", "2",
                           "--chunked-prefill", "--max-batched-tokens", "16"], capture_output=True, text=True,
                          timeout=300)  # one real process: its stderr and exit code; the rest in process
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "at least max_num_seqs" in lines[0], done.stderr
    from typer.testing import CliRunner

    from pabench.cli import app

    for args in (("--max-batched-tokens", "0"), ("--max-num-partial-prefills", "0")):
        res = CliRunner().invoke(app, ["run", "--no-progress", "--num-requests", "2", "--chunked-prefill", *args])
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 1 and len(lines) == 1 and "must be > 0" in lines[0], res.stderr


# chunks on and off page boundaries (page 16); triton: later chunks run the unified kernel (interpreter, slow: one
# chunk size per backend)
@pytest.mark.parametrize("backend_name,chunk,impl", [
    ("paged", 16, "torch"), ("paged", 23, "torch"), ("contiguous-oracle", 16, "torch"),
    ("contiguous-oracle", 23, "torch"), ("paged", 23, "triton"), ("contiguous-oracle", 16, "triton")])
def test_chunked_logits_match_one_shot_prefill(backend_name, chunk, impl):
    """The model's logits after the last chunk of a 70-token prompt equal those of one unchunked prefill, fp32."""
    p = prepare(RunConfig(workload="default", backends=(backend_name,), warmup=False, num_requests=1,
                          attn_impl=impl))
    prompt = [1 + (7 * j) % 500 for j in range(70)]
    logits = {}
    original = p.model.forward

    def capture(key):
        def forward(*args, **kwargs):
            out = original(*args, **kwargs)
            logits[key] = out.clone()
            return out
        return forward

    from pabench.core import Sequence
    from pabench.engine.scheduler import SeqState

    for mode in ("one-shot", "chunked"):
        engine = Engine(p.model, build_backend(p, backend_name), scheduler_config(p))
        assert engine.backend.unified_attention == (impl == "triton")
        st = SeqState(Sequence(0, prompt), 0, 0, len(prompt), 4)
        p.model.forward = capture(mode)
        try:
            if mode == "one-shot":
                engine.backend.admit(st.seq, 74)
                engine._prefill([st], engine._timer)
            else:
                engine.backend.admit(st.seq, 74, max_new_tokens=chunk)
                for start in range(0, len(prompt), chunk):
                    end = min(len(prompt), start + chunk)
                    if start:
                        engine.backend.grow_chunk(st.seq, end)
                    engine._prefill([st], engine._timer, [(start, end)])
        finally:
            del p.model.forward
    torch.testing.assert_close(logits["chunked"], logits["one-shot"], rtol=1e-4, atol=1e-4)

