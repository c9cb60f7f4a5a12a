"""`sweep --slo`: targets parse (pabench's and vLLM's column names), the bisection narrows the swept rates' bracket
and reports only a rate that was run and passed, and the command writes the probes beside the swept rows."""

from __future__ import annotations

import csv
import math

import pytest
from typer.testing import CliRunner

from pabench.bench.sweep import SloSpec, bisect_rate
from pabench.cli import app
from pabench.errors import ConfigError


def test_targets_parse_in_both_spellings():
    spec = SloSpec.from_text("ttft_p99_ms<=500, p99_tpot_ms<=50,median_e2el_ms<=9,req_per_s>=2")
    assert spec.criteria == (("ttft_p99_ms", "<=", 500.0), ("tpot_p99_ms", "<=", 50.0), ("e2e_p50_ms", "<=", 9.0),
                             ("req_per_s", ">=", 2.0))
    assert spec.met({"ttft_p99_ms": 500, "tpot_p99_ms": 1, "e2e_p50_ms": 9, "req_per_s": 2})  # bounds included
    assert not spec.met({"ttft_p99_ms": 1, "tpot_p99_ms": math.nan, "e2e_p50_ms": 1, "req_per_s": 3})  # NaN misses
    assert not spec.met({"ttft_p99_ms": 1})  # a missing column misses


@pytest.mark.parametrize("text, message", [
    ("ttft_p99_ms<500", "is not COLUMN<=NUMBER"),
    ("ttft_p99_ms<=abc", "is not COLUMN<=NUMBER"),
    ("wall_s<=5", "unknown column 'wall_s'"),
    ("ttft_p99_ms<=inf", "expected COLUMN<=NUMBER"),
])
def test_bad_targets_are_one_clear_error(text, message):
    with pytest.raises(ConfigError, match=message):
        SloSpec.from_text(text)


def test_bisection_narrows_the_bracket_and_returns_a_passing_run():
    probed = []

    def probe(rate):
        probed.append(rate)
        return rate <= 7.3  # the true limit

    lo, hi, n = bisect_rate({2.0: True, 4.0: True, 16.0: False, 32.0: False}, probe, iterations=3)
    assert n == 3 and probed == [8.0, 5.657, 6.727]
    assert (lo, hi) == (6.727, 8.0) and lo in probed and probe(lo)


@pytest.mark.parametrize("measured, expected", [
    ({2.0: True, 8.0: True}, (8.0, None, 0)),  # every swept rate met it: no bracket to search
    ({2.0: False, 8.0: False}, (None, 2.0, 0)),  # not even the lowest
    ({2.0: True, 4.0: False, 8.0: True}, (2.0, 2.828, 1)),  # a pass above the first miss is not trusted
])
def test_bisection_edges(measured, expected):
    assert bisect_rate(measured, lambda rate: False, iterations=1) == expected


def test_a_failed_probe_keeps_what_was_measured():
    assert bisect_rate({1.0: True, 4.0: False}, lambda rate: None, iterations=3) == (1.0, 4.0, 1)


TINY = """description = "4 short requests"
num_requests = 4
arrival = "burst"
seed = 3
[prompt]
kind = "fixed"
mean = 8
[output]
kind = "fixed"
mean = 3
"""


def _slo_sweep(tmp_path, *extra: str) -> tuple:
    """`sweep --slo req_per_s<=30` over rates 5 and 1000 on TINY (one bisection step): the result and its CSV rows.
    At 5 req/s four requests take ~0.6 s of arrivals (<= 30 req/s); at 1000 req/s they are served at once."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    out = tmp_path / "s.csv"
    res = CliRunner().invoke(app, ["sweep", "--workload", str(path), "--layers", "1", "--max-model-len", "64",
                                   "--backend", "paged", "--page-sizes", "16", *extra, "--rates", "5,1000", "--slo",
                                   "req_per_s<=30", "--slo-iterations", "1", "--csv", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    with open(out, newline="") as f:
        return res, list(csv.DictReader(f))


def test_sweep_slo_from_the_cli(tmp_path):
    res, rows = _slo_sweep(tmp_path)
    assert "highest request rate meeting req_per_s<=30" in res.output
    assert [(r["sweep_rate"], r["slo_probe"], r["slo_met"]) for r in rows] == [
        ("5.0", "False", "True"), ("1000.0", "False", "False"), ("70.71", "True", "False")]
    assert {r["slo"] for r in rows} == {"req_per_s<=30"}


def test_sweep_slo_searches_each_kv_dtype_on_its_own(tmp_path):
    res, rows = _slo_sweep(tmp_path, "--kv-dtypes", "auto,fp8")
    assert "kv dtype" in res.output
    probes = [(r["sweep_kv_dtype"], r["sweep_rate"]) for r in rows if r["slo_probe"] == "True"]
    assert sorted(probes) == [("auto", "70.71"), ("fp8", "70.71")]  # one bisection per kv dtype
    assert {r["kv_dtype"] for r in rows} == {"auto", "fp8"} and len(rows) == 6


def test_slo_without_rates_is_refused_before_any_run(tmp_path):
    res = CliRunner().invoke(app, ["sweep", "--slo", "ttft_p99_ms<=5", "--csv", str(tmp_path / "s.csv"),
                                   "--no-progress"])
    assert res.exit_code == 1 and "--slo needs --rates" in res.output and not (tmp_path / "s.csv").exists()


def test_ctrl_c_in_a_probe_keeps_what_was_measured(tmp_path, monkeypatch):
    import pabench.bench.runner as runner_module
    from pabench.bench.runner import RunConfig
    from pabench.bench.sweep import SweepGrid, run_sweep, search_slo

    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    base = RunConfig(workload=str(path), backends=("paged", "contiguous-max"), layers=1, max_model_len=64,
                     device="cpu")
    grid = SweepGrid(rates=(5.0, 1000.0))
    results = run_sweep(grid, base)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_module, "run_backend", interrupted)
    failures: list = []
    findings, probes = search_slo(grid, base, SloSpec.from_text("req_per_s<=30"), results, 2, failures)
    assert probes == [] and [f.max_rate for f in findings] == [5.0, 5.0]  # the swept rates' answer stands
    assert len(failures) == 1 and failures[0].interrupted  # one Ctrl-C, and no further probe was started
    assert all(r.config["interrupted"] for r in results)
