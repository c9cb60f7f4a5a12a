"""Report: tables render, summary/capacity lines, flat CSV/JSON exports (atomic), compare and regression check."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

import pabench.atomic
import pabench.report.export as report
from fixtures.runs import BACKENDS, BASELINE_CSV, make_run, make_runs
from pabench.atomic import atomic_write_text
from pabench.errors import ConfigError
from pabench.bench.metrics import build_result
from pabench.report.compare import check_regressions, compare_table, parse_tolerance
from pabench.report.export import git_commit, read_results, results_frame, write_csv, write_json
from pabench.report.tables import capacity_line, run_table, summary_line, workload_detail, workloads_table
from pabench.units import format_bytes
from pabench.bench.presets import list_presets, load_workload


def _render(renderable) -> str:
    console = Console(record=True, width=250, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.fixture(scope="module")
def results():
    return [build_result(run) for run in make_runs()]


# ---- terminal ------------------------------------------------------------------------------------------------

def test_run_table_has_a_row_per_backend(results):
    text = _render(run_table(results))
    for backend in BACKENDS:
        assert backend in text
    assert "2.8" in text and "1.4" in text  # paged 2.75 and contiguous-max 1.375 output tok/s
    assert "waste %" in text and "28.3" in text  # paged's mean waste
    assert "3.0 / 3" not in text and "2.0 / 3" in text  # mean / peak concurrency


def test_summary_line(results):
    line = summary_line(results)
    assert line.startswith("paged served 2.00× the output tokens/s of contiguous-max")
    assert "(and 1.50× contiguous-pow2, 1.25× contiguous-oracle)" in line
    assert "with 28.3% KV waste vs 56.8% for contiguous-max." in line
    slower = [build_result(make_run("paged", wall_s=8.0)), build_result(make_run("contiguous-max", wall_s=4.0))]
    assert "served 0.50×" in summary_line(slower) and "slower" in summary_line(slower)
    only = summary_line(results[:1])
    assert "only paged ran" in only and "2.8" in only
    assert summary_line([]) == "no results"
    even = [build_result(make_run("paged", wall_s=4.01)), build_result(make_run("contiguous-max", wall_s=4.0))]
    assert "served 1.00×" in summary_line(even) and "slower" not in summary_line(even)  # 0.9975 shows as 1.00


def test_summary_line_compares_beams_held_in_place_with_reprefill():
    from dataclasses import replace

    held = replace(build_result(make_run("paged", wall_s=4.0)), num_forks=10)
    again = replace(build_result(make_run("paged-reprefill", wall_s=8.0)), recomputed_tokens=1234)
    line = summary_line([held, again, build_result(make_run("contiguous-max", wall_s=4.0))])
    assert line.startswith("paged served 1.00× the output tokens/s of contiguous-max")  # reprefill is not "paged"
    assert "beams held in place (paged) served 2.00× the output tokens/s of re-admitting" in line
    assert "computed 1,234 tokens again" in line


def test_capacity_line():
    capacity = dict(kv_budget_bytes=64 * 2**20, num_pages=1024, page_size=16, max_model_len=2048)
    assert capacity_line(capacity) == ("KV budget 64.0 MiB = 1,024 pages × 16 tokens = 16,384 tokens = 8 sequences "
                                       "at max_model_len 2,048")
    assert capacity_line({"kv_budget_bytes": 3 * 2**30, "policy": "max"}) == "KV budget 3.00 GiB (policy max)"
    lead = dict(kv_budget_bytes=2**20, num_pages=16, page_size=16, num_tokens=256, max_len_seqs=2, max_model_len=128,
                bytes_per_token=4096)  # what the CLI passes
    assert capacity_line(lead) == ("KV budget 1.0 MiB = 16 pages × 16 tokens = 256 tokens = 2 sequences at "
                                   "max_model_len 128 (4.0 KiB per token)")
    assert (format_bytes(512 * 1024), format_bytes(0), format_bytes(100)) == ("512.0 KiB", "0 B", "100 B")


def test_workload_tables():
    text = _render(workloads_table(list_presets()))
    assert "sharegpt-like" in text and "poisson 8 req/s" in text and "4 × 512" in text
    detail = _render(workload_detail(load_workload("sharegpt-like")))
    assert "lognormal ~160 σ 1 [4-1024]" in detail and "prompt sampled" in detail and "sharegpt-like.toml" in detail


# ---- exports -------------------------------------------------------------------------------------------------

def test_results_frame_columns(results):
    frame = results_frame(results)
    assert list(frame["backend"]) == list(BACKENDS)
    for column in ("workload", "model", "device", "dtype", "page_size", "max_num_seqs", "max_model_len", "seed",
                   "prefix_caching", "kv_budget_bytes", "num_requests", "output_tok_per_s", "total_tok_per_s",
                   "req_per_s", "peak_reserved_bytes", "mean_waste_pct", "mean_idle_pct", "peak_saved_bytes",
                   "capacity_num_pages", "pabench_version", "git_commit"):
        assert column in frame.columns, column
    for metric, unit in (("ttft", "ms"), ("tpot", "ms"), ("itl", "ms"), ("e2e", "ms")):
        for stat in ("mean", "std", "p50", "p90", "p99", "min", "max"):
            assert f"{metric}_{stat}_{unit}" in frame.columns
        assert f"{metric}_count" in frame.columns
    assert frame["git_commit"].iloc[0] == git_commit() and isinstance(git_commit(), str)
    assert frame.loc[0, "output_tok_per_s"] == 2.75 and frame.loc[1, "output_tok_per_s"] == 1.375


def test_config_key_colliding_with_a_metric():
    same = results_frame([build_result(make_run(num_requests=3))])
    assert "config_num_requests" not in same.columns and same.loc[0, "num_requests"] == 3
    differs = results_frame([build_result(make_run(num_requests=100, extra={"a": [1, 2]}))])
    assert differs.loc[0, "config_num_requests"] == 100 and differs.loc[0, "num_requests"] == 3
    assert differs.loc[0, "extra"] == '{"a": [1, 2]}'


@pytest.mark.parametrize("commit", ["3e92438", "1234567", "abc1234"])  # a float's text, an int's text, plain text
def test_csv_round_trip_and_committed_fixture(results, tmp_path, monkeypatch, commit):
    monkeypatch.setattr(report, "git_commit", lambda: commit)  # the hash of whatever HEAD is must not matter
    path = write_csv(results, tmp_path / "deep" / "dir" / "run.csv")
    back = read_results(path)
    pd.testing.assert_frame_equal(back, results_frame(results), check_dtype=False)
    stored = read_results(BASELINE_CSV)  # regenerate with fixtures.runs.write_baseline_csv() if columns change
    assert list(stored.columns) == list(back.columns)
    numeric = [c for c in back.columns if c not in ("pabench_version", "git_commit")]
    pd.testing.assert_frame_equal(stored[numeric], back[numeric], check_dtype=False)
    assert list(back["git_commit"]) == [commit] * len(results)


def test_every_text_column_is_read_as_text():
    """A new text column in the export must join TEXT_COLUMNS, or a numeric-looking value would be misread."""
    real_run = Path(__file__).resolve().parents[2] / "benchmarks" / "baseline.csv"  # a default `pabench run` export
    for path in (real_run, BASELINE_CSV):
        frame = pd.read_csv(path)  # pandas' own guess: every column it leaves as text is text
        text = {c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])
                and not set(frame[c].dropna()) <= {True, False}}  # bool, maybe with empty (n/a) cells
        assert {"backend", "git_commit"} <= text <= report.TEXT_COLUMNS, (path, text - report.TEXT_COLUMNS)


def test_json_export(results, tmp_path):
    path = write_json(results, tmp_path / "run.json")
    doc = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert [row["backend"] for row in doc["rows"]] == list(BACKENDS)
    paged = doc["backends"][0]
    assert paged["backend"] == "paged" and len(paged["requests"]) == 3
    req = paged["requests"][1]
    assert req["sample_first_token_s"] == [2.0, 2.0] and req["sample_finish_s"] == [2.5, 3.5]
    assert req["sample_num_tokens"] == [2, 4]
    assert paged["steps"]["by_kind"]["decode"]["num_steps"] == 3
    buckets = paged["steps"]["decode_by_batch"]
    assert sum(b["num_steps"] for b in buckets) == 3
    assert all(b["batch_min"] <= b["batch_max"] and b["host_ms"] >= 0 for b in buckets)
    assert paged["steps"]["timeline"]["reserved_bytes"] == [400, 500, 200, 0, 0]
    assert doc["rows"][0]["ttft_p50_ms"] == 1500.0 and doc["pabench_version"]
    lean = json.loads(write_json(results, tmp_path / "lean.json", include_samples=False).read_text())
    assert "requests" not in lean["backends"][0] and lean["rows"] == doc["rows"]
    empty = json.loads(write_json([build_result(make_run().__class__("paged", {}))], tmp_path / "e.json").read_text())
    assert empty["rows"][0]["output_tok_per_s"] is None  # NaN written as null


def test_read_results_errors(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="no 'backend' column"):
        read_results(tmp_path / "x.csv")
    with pytest.raises(ConfigError, match="cannot read results"):
        read_results(tmp_path / "missing.csv")


# ---- compare and check ---------------------------------------------------------------------------------------

def _frame() -> pd.DataFrame:
    return read_results(BASELINE_CSV)


def test_compare_table_ratios():
    a = _frame()
    b = a.copy()
    b.loc[b["backend"] == "paged", "output_tok_per_s"] *= 0.8
    b = b[b["backend"] != "contiguous-pow2"]
    text = _render(compare_table(a, b))
    assert "0.80×" in text and "1.00×" in text
    assert "missing" in text  # contiguous-pow2 only in A
    assert text.count("paged") == 1


def test_compare_joins_on_swept_columns():
    a = pd.concat([_frame().assign(page_size=16), _frame().assign(page_size=32, output_tok_per_s=1.0)])
    b = pd.concat([_frame().assign(page_size=32, output_tok_per_s=2.0), _frame().assign(page_size=16)])
    text = _render(compare_table(a, b))
    assert "paged page_size=16" in text and "paged page_size=32" in text
    assert "2.00×" in text  # 32 matched with 32, not with 16


def test_check_regressions():
    base = _frame()
    regressions, _ = check_regressions(base.copy(), base, 0.10)
    assert regressions == []

    slower = base.copy()
    slower.loc[slower["backend"] == "paged", "output_tok_per_s"] *= 0.8  # -20% throughput
    assert check_regressions(slower, base, 0.10)[0] == []  # timing only when asked
    regressions, table = check_regressions(slower, base, 0.10, timing=True)
    assert [(r.run, r.metric) for r in regressions] == [("paged", "output_tok_per_s")]
    assert regressions[0].change == pytest.approx(0.2) and "20.0% worse" in str(regressions[0])
    assert "REGRESSION" in _render(table) and "1 regression(s)" in _render(table)

    latency = base.copy()
    latency["ttft_p50_ms"] *= 1.05  # +5% latency, within 10%
    latency["output_tok_per_s"] *= 1.5  # faster is never a regression
    assert check_regressions(latency, base, 0.10, timing=True)[0] == []
    latency["tpot_p99_ms"] *= 1.2
    assert {r.metric for r in check_regressions(latency, base, 0.10, timing=True)[0]} == {"tpot_p99_ms"}
    assert len(check_regressions(latency, base, 0.10, timing=True)[0]) == 4  # every backend


def test_check_missing_backend_and_zero_baseline():
    base = _frame()
    missing, table = check_regressions(base[base["backend"] != "contiguous-max"], base, 0.10)
    assert [(r.run, r.metric) for r in missing] == [("contiguous-max", "(run)")] and math.isinf(missing[0].change)
    assert "missing" in str(missing[0])
    preempt = base.copy()
    base_zero = base.assign(num_preemptions=0)
    preempt["num_preemptions"] = 1
    assert {r.metric for r in check_regressions(preempt, base_zero, 0.5)[0]} == {"num_preemptions"}
    with pytest.raises(ConfigError):
        check_regressions(base, base, -0.1)


@pytest.mark.parametrize("text, value", [("10%", 0.10), ("0.1", 0.1), (" 2.5 % ", 0.025), ("0", 0.0), ("150%", 1.5)])
def test_parse_tolerance(text, value):
    assert parse_tolerance(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "-5%", "10", "", "nan%"])
def test_parse_tolerance_rejects(text):
    with pytest.raises(ConfigError, match="tolerance"):
        parse_tolerance(text)


def test_decode_by_batch_buckets_host_over_device():
    from pabench.core.memory import MemorySnapshot
    from pabench.engine.records import StepSample
    from pabench.report.export import decode_by_batch

    mem = MemorySnapshot(budget_bytes=1, reserved_bytes=0, used_bytes=0, slack_bytes=0, idle_bytes=1, saved_bytes=0,
                         largest_free_extent_bytes=1, num_seqs=0)

    def step(kind, n, host, dev):
        return StepSample(time_s=0.0, kind=kind, num_seqs=n, num_tokens=n, num_running=n, num_waiting=0,
                          host_s=host, step_s=host + dev + 0.0002, memory=mem, device_s=dev,
                          host_split_s=(host / 2, host / 4, host / 4))

    rows = decode_by_batch([step("decode", 250, 0.001, 0.010), step("decode", 256, 0.002, 0.010),
                            step("decode", 10, 0.0005, 0.005), step("prefill", 250, 1.0, 1.0)])
    assert [(r["batch_min"], r["batch_max"], r["num_steps"]) for r in rows] == [(1, 10, 1), (241, 256, 2)]
    assert rows[1]["host_over_device_pct"] == 15.0 and rows[0]["host_ms"] == 0.5
    assert (rows[1]["schedule_ms"], rows[1]["stage_ms"], rows[1]["bookkeeping_ms"]) == (0.75, 0.375, 0.375)
    assert rows[1]["other_ms"] == 0.2
