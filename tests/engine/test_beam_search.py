"""Beam search (engine/beam.py and the engine's beam steps): the choice rule, an independent reference over the
model's logits, every cache holding beams its own way with the same result, and bad input."""

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pabench.bench.runner import RunConfig, prepare, run_backend, token_agreement
from pabench.engine import beam
from pabench.errors import ConfigError
from pabench.kernels import prefill_attention

WORKLOAD = """
name = "beams"
description = "beam search test"
num_requests = {n}
arrival = "burst"
beam_width = {width}
seed = 3
[prompt]
kind = "uniform"
mean = 12
range_ratio = 0.5
[output]
kind = "uniform"
mean = 10
range_ratio = 0.4
"""


def workload(tmp_path, n=4, width=3):
    path = tmp_path / "beams.toml"
    path.write_text(WORKLOAD.format(n=n, width=width))
    return str(path)


def test_select_keeps_the_best_and_breaks_ties_by_beam_then_rank():
    choices = beam.select([0.0, -1.0], [[-0.5, -2.0], [-0.1, -0.2]], [[7, 8], [9, 10]], 3)
    assert [(c.beam, c.token) for c in choices] == [(0, 7), (1, 9), (1, 10)]  # -0.5, -1.1, -1.2
    tied = beam.select([0.0, 0.0], [[-1.0, -1.0], [-1.0, -3.0]], [[5, 6], [7, 8]], 2)
    assert [(c.beam, c.token) for c in tied] == [(0, 5), (0, 6)]  # equal scores: lower beam, then better rank
    assert beam.score(-6.0, 3, 1.0) == -2.0 and beam.score(-6.0, 4, 0.5) == -3.0
    with pytest.raises(ConfigError):
        beam.select([0.0], [[-1.0]], [[1]], 2)


def reference_beams(model, prompt, width, output_len, penalty=1.0):
    """Beam search with no KV cache at all: every beam's logits from a full causal forward over its tokens."""
    def logprobs(tokens):
        ids = torch.tensor(tokens)
        pos = torch.arange(len(tokens))
        logits = model.forward(ids, pos, lambda layer, q, k, v: prefill_attention(q, k, v),
                               logits_rows=torch.tensor([len(tokens) - 1]))  # [1, vocab]
        return logits.float().log_softmax(-1)[0]  # [vocab]

    values, indices = logprobs(list(prompt)).topk(width)
    beams = [(list(prompt) + [t], v) for v, t in zip(values.tolist(), indices.tolist())]
    for _ in range(output_len - 1):
        tops = [logprobs(tokens).topk(2 * width) for tokens, _ in beams]
        choices = beam.select([cum for _, cum in beams], [v.tolist() for v, _ in tops],
                              [i.tolist() for _, i in tops], width)
        beams = [(beams[c.beam][0] + [c.token], c.cum_logprob) for c in choices]
    best = max(beams, key=lambda b: beam.score(b[1], len(b[0]), penalty))  # first of equals: stable max
    return tuple(best[0][len(prompt):])


def test_engine_beams_match_a_reference_without_kv_cache(tmp_path):
    p = prepare(RunConfig(workload=workload(tmp_path), backends=("paged",), warmup=False))
    record = run_backend(p, "paged")
    for r in p.requests:
        assert record.output_token_ids[r.request_id] == (reference_beams(p.model, r.prompt_token_ids, r.beam_width,
                                                                         r.output_len),)
    assert record.num_forks > 0 and record.num_pruned > 0 and record.num_cow_copies > 0
    assert record.num_forks - record.num_pruned == len(p.requests) * (3 - 1)  # width stays 3: W - 1 forks at prefill
    assert record.kv_copied_bytes == record.num_cow_copies * 16 * p.layout.bytes_per_token


@pytest.mark.parametrize("overrides", [{"num_pages": 512}, {"num_pages": 16, "watermark": 0.0}],
                         ids=["roomy", "preempting"])
def test_every_cache_serves_the_same_beams(tmp_path, overrides):
    backends = ("paged", "paged-noprefix", "paged-reprefill", "contiguous-oracle", "contiguous-max")
    p = prepare(RunConfig(workload=workload(tmp_path, n=6), backends=backends, warmup=False,
                          max_model_len=64, **overrides))
    records = {b: run_backend(p, b) for b in backends}
    ref = records["paged"]
    for name, record in records.items():
        assert token_agreement(ref, record)["token_match_pct"] == 100.0, name
        assert len(record.requests) == len(p.requests) and all(r.num_samples == 1 for r in record.requests)
    if overrides["num_pages"] == 16:
        assert records["paged"].num_preemptions > 0  # whole beam searches restarted, same beams found
    oracle = records["contiguous-oracle"]
    assert oracle.kv_copied_bytes > 0 and oracle.num_cow_copies == 0  # a fork copies the parent's whole region
    reprefill = records["paged-reprefill"]  # vLLM v1: no decode step, no copy; partial pages computed again
    assert all(s.kind == "prefill" for s in reprefill.steps) and reprefill.kv_copied_bytes == 0
    assert reprefill.recomputed_tokens > 0 and reprefill.prefix_hit_rate > 0.2  # short beams: few full pages
    if not ref.num_preemptions and not reprefill.num_preemptions:  # a restart forks and prunes its beams again
        assert (reprefill.num_forks, reprefill.num_pruned) == (ref.num_forks, ref.num_pruned)


def test_backend_all_adds_reprefill_for_beam_workloads(tmp_path):
    from pabench.backends import BACKENDS

    assert prepare(RunConfig(workload=workload(tmp_path), num_requests=1)).config.backends == BACKENDS + (
        "paged-reprefill",)
    assert prepare(RunConfig(workload="default", num_requests=1)).config.backends == BACKENDS


def test_cli_beam_width_flag_and_bad_input(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "pabench", "run", "--no-progress", "--num-requests", "2",
                               "--backend", "paged", *args], capture_output=True, text=True, timeout=300)

    ok = run("--beam-width", "2", "--csv", str(tmp_path / "ok.csv"))
    assert ok.returncode == 0, ok.stderr
    import pandas as pd

    row = pd.read_csv(tmp_path / "ok.csv").iloc[0]
    assert row["beam_width"] == 2 and row["num_forks"] > 0 and row["num_pruned"] > 0
    (tmp_path / "both.toml").write_text(WORKLOAD.format(n=2, width=2).replace("seed = 3", "seed = 3\nnum_samples = 2"))
    bad = run("--beam-width", "0", "--csv", str(tmp_path / "bad.csv"))  # one real process: its stderr, exit code
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "pabench: error: --beam-width must be >= 1, got 0"], bad.stderr
    from typer.testing import CliRunner

    from pabench.cli import app

    for args, needle in ((("--beam-width", "64"), "max_num_seqs"),  # the rest in process (a second each, not 3)
                         (("--workload", str(tmp_path / "both.toml")), "choose one")):
        res = CliRunner().invoke(app, ["run", "--no-progress", "--num-requests", "2", "--backend", "paged", *args,
                                       "--csv", str(tmp_path / "bad.csv")])
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 1 and len(lines) == 1 and needle in lines[0], res.stderr
        assert "Traceback" not in res.output and not (tmp_path / "bad.csv").exists()


def test_async_and_graph_engines_refuse_beams(tmp_path):
    from pabench.bench.runner import build_backend, scheduler_config
    from pabench.engine.pipelined import PipelinedEngine

    p = prepare(RunConfig(workload=workload(tmp_path, n=2), backends=("paged",), warmup=False))
    engine = PipelinedEngine(p.model, build_backend(p, "paged"), scheduler_config(p))
    with pytest.raises(ConfigError, match="async"):
        engine.run(p.requests, realtime=False)
    with pytest.raises(ConfigError, match="--async-scheduling"):
        prepare(RunConfig(workload=workload(tmp_path, n=2), async_scheduling=True))


@settings(max_examples=8, deadline=None)
@given(width=st.integers(2, 4), num_pages=st.integers(10, 40), n=st.integers(1, 4), seed=st.integers(0, 50))
def test_random_beam_runs_finish_and_return_every_page(width, num_pages, n, seed, tmp_path_factory):
    """Random widths, budgets and workloads: every request finishes in every holder with the same beams, and the
    paged pool ends with every page free and no negative ref_count."""
    path = tmp_path_factory.mktemp("beams") / "w.toml"
    path.write_text(WORKLOAD.format(n=n, width=width).replace("seed = 3", f"seed = {seed}"))
    try:
        p = prepare(RunConfig(workload=str(path), backends=("paged", "paged-reprefill", "contiguous-oracle"),
                              warmup=False, max_model_len=64, num_pages=num_pages, watermark=0.0))
    except ConfigError:
        return  # a budget too small for some request is refused up front: also right
    from pabench.bench.runner import build_backend, scheduler_config
    from pabench.engine.engine import Engine

    records = {}
    for name in p.config.backends:
        backend = build_backend(p, name)
        records[name] = Engine(p.model, backend, scheduler_config(p)).run(p.requests, realtime=False)
        assert len(records[name].requests) == n
        if backend.is_paged:
            bm = backend.block_manager
            bm.check_invariants()
            assert bm.num_used_pages == 0 and bm.num_page_refs == 0
    for name, record in records.items():
        assert token_agreement(records["paged"], record)["token_match_pct"] == 100.0, name
