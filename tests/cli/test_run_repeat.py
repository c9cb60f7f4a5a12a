"""`pabench run --repeat N` over seeds on the CPU, every export of it at once: each seed its own workload, means
and `_ci95` columns, the summary's paired ratio, one vLLM file per backend and seed, every request of every seed
in `--requests-csv`, per-token times in the JSON; and the inputs it refuses before running."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from pabench.cli import app

runner = CliRunner()
SMALL = ["--num-requests", "4", "--no-progress", "--max-model-len", "256", "--layers", "1",
         "--backend", "paged,contiguous-max"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    d = tmp_path_factory.mktemp("repeat")
    res = invoke("run", *SMALL, "--seed", "3", "--repeat", "2", "--csv", d / "r.csv", "--json", d / "r.json",
                 "--requests-csv", d / "q.csv", "--save-result", d / "vllm")
    assert res.exit_code == 0, res.output
    return d, res


def test_means_over_seeds_with_intervals(repeated):
    d, res = repeated
    frame = pd.read_csv(d / "r.csv")
    assert list(frame["backend"]) == ["paged", "contiguous-max"]
    assert (frame["repeat"] == 2).all() and (frame["seeds"] == "3..4").all() and (frame["seed"] == 3).all()
    assert (frame["output_tok_per_s_ci95"] >= 0).all() and "mean_waste_pct_ci95" in frame.columns
    assert not any(c.endswith("_spread_pct") for c in frame.columns)  # that is --same-seed's
    assert "mean of 2 runs on seeds 3..4" in res.stderr
    assert "±" in res.stdout and "over seeds 3..4; each ratio taken per seed" in res.stdout
    rows = json.loads((d / "r.json").read_text())["rows"]
    assert rows[0]["comparability"]["seed"] == [3, 4] and "wall_s_ci95" in rows[0]


def test_each_seed_is_its_own_workload_in_the_requests_csv(repeated):
    d, _ = repeated
    q = pd.read_csv(d / "q.csv")
    assert sorted(set(zip(q["seed"], q["repeat"]))) == [(3, 1), (4, 2)]
    assert set(q["backend"]) == {"paged", "contiguous-max"} and (q["sample"] == 0).all()  # one sample each
    lengths = {seed: list(part[part["backend"] == "paged"]["prompt_len"]) for seed, part in q.groupby("seed")}
    assert lengths[3] != lengths[4] and len(lengths[3]) == 4  # another draw, the same request count
    # both backends served the same requests in each seed
    for _, part in q.groupby("seed"):
        by = {b: list(p["prompt_len"]) + list(p["output_len"]) for b, p in part.groupby("backend")}
        assert by["paged"] == by["contiguous-max"]
    assert (q["ttft_ms"] > 0).all() and (q["e2e_ms"] >= q["ttft_ms"]).all()
    # the CSV's means are over the seeds these rows are from
    frame = pd.read_csv(d / "r.csv").set_index("backend")
    prompts = q[q["backend"] == "paged"].groupby("seed")["prompt_len"].sum()
    assert frame.loc["paged", "num_prompt_tokens"] == pytest.approx(prompts.mean())


def test_one_vllm_file_per_backend_and_seed_and_token_times_in_the_json(repeated):
    d, _ = repeated
    names = sorted(p.name for p in (d / "vllm").iterdir())
    assert names == [f"{b}-default-{s}.json" for b in ("contiguous-max", "paged") for s in (3, 4)]
    one = json.loads((d / "vllm" / "paged-default-4.json").read_text())
    assert one["pabench"]["seed"] == 4 and one["comparability"]["seed"] == 4  # a single run, as vLLM's
    q = pd.read_csv(d / "q.csv")
    assert one["input_lens"] == list(q[(q["backend"] == "paged") & (q["seed"] == 4)]["prompt_len"])
    request = json.loads((d / "r.json").read_text())["backends"][0]["requests"][0]
    times = request["token_times_s"]
    assert [len(t) for t in times] == request["sample_num_tokens"] and times[0][0] == request["sample_first_token_s"][0]
    assert times[0] == sorted(times[0])


@pytest.mark.parametrize("args, message", [
    (["--same-seed"], "--same-seed: give --repeat N (N > 1) too"),
    (["--requests-csv", "{tmp}"], "--requests-csv {tmp}: is a directory"),
    (["--csv", "{tmp}/a.csv", "--requests-csv", "{tmp}/a.csv"], "--csv and --requests-csv name the same file"),
])
def test_refused_before_running(tmp_path, args, message):
    res = invoke("run", *SMALL, *[a.format(tmp=tmp_path) for a in args])
    lines = res.stderr.strip().splitlines()
    expected = f"pabench: error: {message.format(tmp=tmp_path)}"
    assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith(expected)
    assert "workload" not in res.stdout and not list(tmp_path.iterdir())


def test_save_result_files_of_every_seed_are_checked_before_the_run(tmp_path):
    (tmp_path / "paged-default-1.json").mkdir()  # the second seed's file cannot be written
    res = invoke("run", *SMALL, "--seed", "0", "--repeat", "2", "--save-result", tmp_path)
    assert res.exit_code == 1 and "paged-default-1.json" in res.stderr and "wrote" not in res.stderr
