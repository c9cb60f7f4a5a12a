"""`run --goodput/--percentile-metrics/--metric-percentiles/--save-result` from the command line: bad specs are one
line and exit 1 with nothing written, and a real run's vLLM-format files agree with its CSV row."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from typer.testing import CliRunner

from pabench.cli import app

runner = CliRunner()
TINY = """name = "tiny-test"
description = "4 short requests"
num_requests = 4
arrival = "burst"
seed = 3

[prompt]
kind = "uniform"
mean = 8
range_ratio = 0.5

[output]
kind = "uniform"
mean = 4
range_ratio = 0.5
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    path = tmp_path_factory.mktemp("workload") / "tiny.toml"
    path.write_text(TINY)
    return ["--workload", path, "--no-progress", "--max-model-len", "64", "--layers", "1"]


@pytest.fixture(scope="module")
def saved(workload, tmp_path_factory):
    """One run of two backends with every new option; its CSV rows, its saved files and its output."""
    out = tmp_path_factory.mktemp("saved")
    res = invoke("run", *workload, "--backend", "paged,contiguous-oracle", "--goodput", "ttft:600000",
                 "--metric-percentiles", "50,95", "--percentile-metrics", "ttft,e2el", "--csv", out / "r.csv",
                 "--save-result", out / "vllm")
    assert res.exit_code == 0, res.output
    files = {p.name: json.loads(p.read_text()) for p in (out / "vllm").iterdir()}
    return pd.read_csv(out / "r.csv"), files, res


@pytest.mark.parametrize("args, message", [
    (["--goodput", "ttft:abc"], "--goodput: 'ttft:abc' is not METRIC:MS"),
    (["--goodput", "itl:5"], "--goodput: unknown metric 'itl'"),
    (["--goodput", "ttft:-5"], "--goodput: ttft:-5 must be a finite number of ms >= 0"),
    (["--goodput", "e2el:5,e2el:6"], "--goodput: e2el is given twice"),
    (["--metric-percentiles", "0"], "--metric-percentiles: 0 is not a percentile in (0, 100]"),
    (["--metric-percentiles", "50,x"], "--metric-percentiles: expected comma-separated numbers"),
    (["--percentile-metrics", "ttft,foo"], "--percentile-metrics: unknown metric 'foo'"),
    (["--save-result", "{tmp}/file"], "--save-result {tmp}/file: {tmp}/file is not a directory"),
    (["--save-result", "-"], "--save-result: - (stdout): give a directory"),
    (["--max-model-len", "8"], "a request can need"),  # fails in prepare, after the path checks
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, workload, args, message):
    (tmp_path / "file").write_text("x")
    res = invoke("run", *workload, "--csv", tmp_path / "r.csv", "--save-result", tmp_path / "vllm",
                 *[a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pabench: error: ") and message.format(tmp=tmp_path) in lines[0]
    assert "Traceback" not in res.output and res.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["file"]  # no CSV, no result directory


def test_sweep_takes_goodput_and_refuses_a_bad_one(tmp_path, workload):
    res = invoke("sweep", *workload, "--goodput", "tpot", "--csv", tmp_path / "s.csv")
    assert res.exit_code == 1 and res.stderr.startswith("pabench: error: --goodput: 'tpot' is not METRIC:MS")
    res = invoke("sweep", *workload, "--backend", "paged", "--page-sizes", "16", "--goodput", "e2el:0",
                 "--csv", tmp_path / "s.csv")
    assert res.exit_code == 0, res.output
    row = pd.read_csv(tmp_path / "s.csv").iloc[0]
    assert (row["goodput"], row["request_goodput"], row["slo_attainment_pct"]) == ("e2el:0", 0.0, 0.0)
    assert "goodput req/s" in res.stdout


def test_saved_files_agree_with_the_csv_row(saved):
    frame, files, _ = saved
    assert sorted(files) == ["contiguous-oracle-tiny-test-3.json", "paged-tiny-test-3.json"]
    for _, row in frame.iterrows():
        doc = files[f"{row['backend']}-tiny-test-3.json"]
        assert doc["backend"] == row["backend"] and doc["model_id"] == row["model"] == "tiny"
        assert doc["completed"] == doc["num_prompts"] == row["num_requests"] == 4
        assert doc["total_input_tokens"] == row["num_prompt_tokens"] == sum(doc["input_lens"])
        assert doc["total_output_tokens"] == row["num_output_tokens"] == sum(doc["output_lens"])
        assert doc["duration"] == pytest.approx(row["wall_s"])
        assert doc["request_throughput"] == pytest.approx(row["req_per_s"])
        assert doc["output_throughput"] == pytest.approx(row["output_tok_per_s"])
        assert doc["median_ttft_ms"] == pytest.approx(row["ttft_p50_ms"])
        assert doc["p95_ttft_ms"] == pytest.approx(row["ttft_p95_ms"])
        assert doc["p99_e2el_ms"] == pytest.approx(row["e2e_p99_ms"])
        assert doc["mean_itl_ms"] == pytest.approx(row["itl_mean_ms"])
        # a 10-minute TTFT bound: every request is good
        assert doc["request_goodput"] == pytest.approx(row["request_goodput"]) == pytest.approx(row["req_per_s"])
        assert row["slo_attainment_pct"] == doc["pabench"]["slo_attainment_pct"] == 100.0
        assert doc["pabench"]["mean_waste_pct"] == pytest.approx(row["mean_waste_pct"])
        assert doc["pabench"]["git_commit"] == str(row["git_commit"])
        assert len(doc["ttfts"]) == len(doc["itls"]) == len(doc["start_times"]) == 4
        assert [len(gaps) for gaps in doc["itls"]] == [n - 1 for n in doc["output_lens"]]
        contract = doc["comparability"]
        assert contract["ignore_eos"] is True and contract["seed"] == 3 and contract["request_rate"] == "inf"
        assert contract["input_len"]["kind"] == "uniform" and (contract["input_len"]["min"],
                                                               contract["input_len"]["max"]) == (4, 12)


def test_the_table_shows_what_the_options_ask_for(saved, workload, tmp_path):
    _, _, res = saved
    assert "goodput req/s" in res.stdout and "SLO met %" in res.stdout
    assert all(h in res.stdout for h in ("TTFT p50", "TTFT p95", "E2E p50", "E2E p95"))
    assert "TPOT p50" not in res.stdout
    plain = invoke("run", *workload, "--backend", "paged", "--csv", tmp_path / "plain.csv")
    assert plain.exit_code == 0, plain.output
    assert "goodput" not in plain.stdout and "TPOT p50" in plain.stdout  # today's table, unchanged
    columns = set(pd.read_csv(tmp_path / "plain.csv").columns)
    assert not columns & {"goodput", "request_goodput", "slo_attainment_pct", "ttft_p95_ms"}
