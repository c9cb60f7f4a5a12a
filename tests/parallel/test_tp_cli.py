"""`pabench run --tensor-parallel 2` end to end on the CPU (two gloo ranks started by pabench): rank 0's tables and
CSV, whose memory columns are per GPU (half a one-process run's bytes, the same shares); a rank that fails mid-run
ends the run with exit 1, its one line and no file; a model that cannot split is refused before any rank starts.

The ranks write to the process's real stdout (file descriptor 1), so their tables are read with `capfd`."""

from __future__ import annotations

import csv

import pytest
import torch
from typer.testing import CliRunner

from pabench.cli import app
from pabench.parallel.group import FAIL_ENV

ARGS = ["run", "--num-requests", "3", "--backend", "paged", "--max-model-len", "256", "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread():
    """The one-process run with one torch thread, as each of two ranks has on a CI box of 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rows(path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["backend"]: row for row in csv.DictReader(f)}


def test_two_ranks_run_and_export_per_gpu_memory(tmp_path, capfd):
    res = CliRunner().invoke(app, [*ARGS, "--tensor-parallel", "2", "--csv", str(tmp_path / "tp2.csv")])
    out = " ".join(capfd.readouterr().out.split())  # rank 0's tables (the header wraps at 140 columns)
    assert res.exit_code == 0, res.output
    assert "tensor parallel 2: KV budget and memory per GPU" in out and "paged served" not in out  # one backend
    one = CliRunner().invoke(app, [*ARGS, "--csv", str(tmp_path / "tp1.csv")])
    assert one.exit_code == 0, one.output
    tp2, tp1 = rows(tmp_path / "tp2.csv"), rows(tmp_path / "tp1.csv")
    a, b = tp1["paged"], tp2["paged"]
    assert (a["tensor_parallel"], b["tensor_parallel"]) == ("1", "2")
    assert int(b["kv_budget_bytes"]) * 2 == int(a["kv_budget_bytes"])  # the same pages, half the heads each
    for column in ("mean_waste_pct", "mean_used_pct", "num_preemptions", "capacity_num_tokens", "num_output_tokens"):
        assert b[column] == a[column], column


def test_a_rank_that_fails_mid_run_ends_it_with_its_line(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv(FAIL_ENV, "1:12")  # rank 1 raises at its 12th all-reduce (the 2nd step: 8 per step)
    res = CliRunner().invoke(app, [*ARGS, "--tensor-parallel", "2", "--csv", str(tmp_path / "out.csv")])
    capfd.readouterr()
    assert res.exit_code == 1
    assert res.stderr.splitlines() == ["pabench: error: rank 1: InducedFailure: failed on purpose at its all-reduce "
                                       "12 ($PABENCH_TP_FAIL)"]
    assert not (tmp_path / "out.csv").exists()


def test_a_model_that_cannot_split_is_refused_before_any_rank_starts():
    res = CliRunner().invoke(app, [*ARGS, "--tensor-parallel", "3"])
    assert res.exit_code == 1
    assert res.stderr.startswith("pabench: error: --tensor-parallel 3: model tiny's 2 KV heads, 4 query heads")
