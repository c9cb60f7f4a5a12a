"""Every export states its comparability contract: the CSV as one JSON-encoded `comparability` cell (the last
column), the JSON's rows as an object, the same object `--save-result` writes; a sweep's rows each state their own."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from pabench.cli import app
from pabench.report import read_results

TINY = """description = "4 short requests"
num_requests = 4
arrival = "burst"
seed = 3
[prompt]
kind = "uniform"
mean = 8
range_ratio = 0.5
[output]
kind = "fixed"
mean = 3
"""
KEYS = {"prompts", "input_len", "output_len", "range_ratio_formula", "shared_prefix", "num_samples", "beam_width",
        "ignore_eos", "arrival", "request_rate", "trace", "ramp", "burstiness", "warmup", "seed", "prefix_cache",
        "client", "model"}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    path = tmp_path_factory.mktemp("contract") / "tiny.toml"
    path.write_text(TINY)
    return ["--workload", path, "--no-progress", "--max-model-len", "64", "--layers", "1"]


def _csv_rows(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_run_exports_state_the_same_contract_as_save_result(workload, tmp_path):
    res = invoke("run", *workload, "--backend", "paged,contiguous-oracle", "--seed", "7", "--csv", tmp_path / "r.csv",
                 "--json", tmp_path / "r.json", "--save-result", tmp_path / "vllm")
    assert res.exit_code == 0, res.output
    rows = _csv_rows(tmp_path / "r.csv")
    assert list(rows[0])[-1] == "comparability"
    from_csv = [json.loads(row["comparability"]) for row in rows]
    doc = json.loads((tmp_path / "r.json").read_text())
    from_json = [row["comparability"] for row in doc["rows"]]
    saved = json.loads((tmp_path / "vllm" / "paged-tiny-7.json").read_text())["comparability"]
    assert from_csv[0] == from_csv[1] == from_json[0] == from_json[1] == saved  # one contract for every backend
    assert set(saved) == KEYS and saved["seed"] == 7 and saved["ignore_eos"] is True
    assert saved["input_len"]["kind"] == "uniform" and saved["output_len"]["min"] == 3 and saved["trace"] is None
    assert all("comparability" not in entry["config"] for entry in doc["backends"])  # stated once, in the row
    assert read_results(tmp_path / "r.csv")["comparability"].map(json.loads).tolist() == from_csv


def test_each_sweep_row_states_its_own_rate(workload, tmp_path):
    res = invoke("sweep", *workload, "--backend", "paged", "--page-sizes", "16", "--rates", "50,100",
                 "--csv", tmp_path / "s.csv")
    assert res.exit_code == 0, res.output
    rates = [json.loads(row["comparability"])["request_rate"] for row in _csv_rows(tmp_path / "s.csv")]
    assert sorted(rates) == [50.0, 100.0]


def test_check_still_pairs_exports_with_the_contract_column(workload, tmp_path):
    res = invoke("run", *workload, "--backend", "paged", "--csv", tmp_path / "a.csv")
    assert res.exit_code == 0, res.output
    res = invoke("check", tmp_path / "a.csv", "--baseline", tmp_path / "a.csv")
    assert res.exit_code == 0, res.output
