"""Tensor parallelism is transparent: two gloo ranks serve a small run with the same logits as one process (fp32,
within the all-reduce's changed summation order) at every step, the same schedule, preemptions, forks and prefix
hits, and each rank holds exactly half of every KV byte (the pages are the same, each with half the KV heads).

One launch of two ranks serves every case (the processes cost seconds to start); one process serves them again."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pabench.parallel import launch

WORKLOAD = """
name = "tp"
description = "tensor-parallel test: a shared prefix, forks or beams, a tight pool"
num_requests = 4
arrival = "{arrival}"
{rate}
num_samples = {samples}
beam_width = {width}
seed = 5
[shared_prefix]
num_prefixes = 1
length = 32
[prompt]
kind = "uniform"
mean = 12
range_ratio = 0.5
[output]
kind = "uniform"
mean = 16
range_ratio = 0.5
"""
# (backend, workload options, run options): forks on both caches, preemption and prefix hits on the paged one (a
# contiguous cache reserves whole regions up front: it never preempts), beams, chunked prefill's mixed steps, and
# Poisson arrivals (admission by rank 0's clock: compared on tokens only)
CASES = [
    ("paged", {"samples": 2}, {"num_pages": 10, "watermark": 0.0}),
    ("contiguous-oracle", {"samples": 2}, {"num_pages": 10}),
    ("paged", {"width": 2}, {"num_pages": 10, "watermark": 0.0}),
    ("paged", {}, {"chunked_prefill": True, "max_batched_tokens": 32, "num_pages": 10, "watermark": 0.0}),
    ("paged", {"arrival": "poisson", "rate": "rate = 400.0"}, {}),
]


def serve(cases: list, tensor_parallel: int) -> list[dict]:
    """Each case through `prepare` and `run_backend` as `pabench run` does; every model step's logits recorded."""
    from pabench.bench.runner import RunConfig, prepare, run_backend

    out = []
    for path, backend, options in cases:
        p = prepare(RunConfig(workload=path, backends=(backend,), warmup=False, max_model_len=128,
                              tensor_parallel=tensor_parallel, **options))
        logits, forward = [], p.model.forward

        def logged(*args, **kwargs):
            result = forward(*args, **kwargs)  # [n, vocab]
            logits.append(result.clone())
            return result

        p.model.forward = logged
        record = run_backend(p, backend)
        out.append({"logits": logits, "steps": [dataclasses.astuple(s)[1:6] for s in record.steps],
                    "memory": [dataclasses.asdict(s.memory) for s in record.steps], "tokens": record.output_token_ids,
                    "counts": (record.num_preemptions, record.prefix_hit_rate, record.num_cow_copies,
                               record.num_forks, record.recomputed_tokens, record.kv_copied_bytes),
                    "tensor_parallel": record.config["tensor_parallel"], "heads": p.layout.num_kv_heads})
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(one process, two ranks) for every case."""
    tmp = tmp_path_factory.mktemp("tp")
    cases = []
    for i, (backend, workload, options) in enumerate(CASES):
        path = tmp / f"tp{i}.toml"
        path.write_text(WORKLOAD.format(**{"arrival": "burst", "rate": "", "samples": 1, "width": 1, **workload}))
        cases.append((str(path), backend, options))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank has (cores / ranks): a tiny model, and a CI box of 2 cores
    try:
        return serve(cases, 1), launch(serve, {"cases": cases, "tensor_parallel": 2}, 2)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("case", range(len(CASES) - 1), ids=[f"{b}-{'-'.join(w) or 'plain'}" for b, w, _ in CASES[:-1]])
def test_two_ranks_match_one_process_step_by_step(runs, case):
    one, two = runs[0][case], runs[1][case]
    assert (one["tensor_parallel"], two["tensor_parallel"]) == (1, 2) and two["heads"] * 2 == one["heads"]
    assert two["steps"] == one["steps"] and two["counts"][:4] == one["counts"][:4] and two["tokens"] == one["tokens"]
    assert two["counts"][4] == one["counts"][4] and two["counts"][5] * 2 == one["counts"][5]  # KV bytes: per GPU
    assert len(two["logits"]) == len(one["logits"])
    for a, b in zip(one["logits"], two["logits"]):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    for m1, m2 in zip(one["memory"], two["memory"]):  # each rank: the same pages, half the heads, half the bytes
        assert {k: v * 2 if k.endswith("_bytes") else v for k, v in m2.items()} == m1


def test_the_cases_exercise_what_they_claim(runs):
    one = runs[0]
    preemptions, hits, _, forks, _, copied = zip(*(r["counts"] for r in one[:4]))
    assert preemptions[0] and preemptions[2] and hits[0] > 0  # paged: preempted (forks, beams), prefix hits
    assert copied[1] > 0 and forks[2] > 0  # contiguous forks copy their parent's region; beams forked
    assert any(s[0] == "mixed" for s in one[3]["steps"])


def test_poisson_arrivals_follow_rank_zero_clock(runs):
    """Admission depends on the wall clock, so the schedule may differ from the one-process run's; the ranks agreed
    with each other (else the run fails) and the tokens are the model's."""
    assert runs[1][-1]["tokens"] == runs[0][-1]["tokens"]
