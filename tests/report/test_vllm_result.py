"""`--save-result`'s vLLM-format file on the hand-made run (fixtures/runs.py): vLLM's keys and units, values equal
to the CSV row's, the keys the README documents; and the serving table's goodput and percentile columns."""

from __future__ import annotations

import io
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from fixtures.runs import make_run
from pabench.bench.goodput import GoodputSpec
from pabench.bench.metrics import LatencyView, build_result
from pabench.report.export import result_row
from pabench.report.tables import run_table
from pabench.report.vllm_result import max_concurrent_requests, result_file_name, vllm_result, write_vllm_results

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
CONTRACT = {"request_rate": "inf", "burstiness": 1.0, "seed": 0}


def _result(backend="paged", goodput="ttft:1500", percentiles=(95.0,)):
    spec = GoodputSpec.from_text(goodput) if goodput else None
    return build_result(make_run(backend), spec, percentiles)


def test_values_follow_vllm_and_match_the_csv_row():
    result = _result()
    doc, row = vllm_result(result, CONTRACT, (95.0,)), result_row(result)
    assert (doc["completed"], doc["failed"], doc["num_prompts"]) == (3, 0, 3)
    assert (doc["total_input_tokens"], doc["total_output_tokens"]) == (row["num_prompt_tokens"],
                                                                       row["num_output_tokens"]) == (35, 11)
    assert doc["duration"] == row["wall_s"] == 4.0
    assert (doc["request_throughput"], doc["output_throughput"], doc["total_token_throughput"]) == (
        row["req_per_s"], row["output_tok_per_s"], row["total_tok_per_s"]) == (0.75, 2.75, 11.5)
    assert doc["request_goodput"] == row["request_goodput"] == 0.75  # ttft <= 1.5 s: all three
    for name, prefix in (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2el", "e2e")):
        assert doc[f"median_{name}_ms"] == row[f"{prefix}_p50_ms"]
        assert doc[f"mean_{name}_ms"] == row[f"{prefix}_mean_ms"] and doc[f"std_{name}_ms"] == row[f"{prefix}_std_ms"]
        assert doc[f"p99_{name}_ms"] == row[f"{prefix}_p99_ms"] and doc[f"p95_{name}_ms"] == row[f"{prefix}_p95_ms"]
    assert doc["median_ttft_ms"] == 1500.0 and doc["p95_ttft_ms"] == pytest.approx(np.percentile([1, 1.5, 1.5], 95) * 1e3)
    # raw samples in seconds, in request order; itls per request (sample after sample), as vLLM's lists
    assert doc["input_lens"] == [10, 20, 5] and doc["output_lens"] == [4, 6, 1]
    assert doc["ttfts"] == [1.0, 1.5, 1.5] and doc["latencies"] == [3.0, 3.0, 1.5]
    assert doc["start_times"] == [0.0, 0.5, 1.0]
    assert doc["itls"] == [[0.5, 0.5, 1.0], [0.5, 0.25, 0.25, 1.0], []]
    assert doc["max_concurrent_requests"] == 3
    assert (doc["request_rate"], doc["burstiness"], doc["max_concurrency"], doc["model_id"]) == ("inf", 1.0, None,
                                                                                                 "tiny")
    assert re.fullmatch(r"\d{8}-\d{6}", doc["date"])  # vLLM's %Y%m%d-%H%M%S
    kv = doc["pabench"]
    for key in ("mean_waste_pct", "mean_slack_pct", "mean_idle_pct", "peak_saved_bytes", "num_preemptions",
                "page_size", "kv_budget_bytes", "seed", "workload", "git_commit", "slo_attainment_pct"):
        assert kv[key] == row[key], key
    assert kv["goodput"] == "ttft:1500" and kv["goodput_ms"] == {"ttft": 1500.0}
    assert doc["comparability"] == CONTRACT
    json.dumps(doc, allow_nan=False)  # standard JSON


def test_without_goodput_request_goodput_is_null_as_in_vllm():
    doc = vllm_result(_result("contiguous-oracle", goodput=None, percentiles=()), CONTRACT)
    assert doc["request_goodput"] is None and doc["pabench"]["goodput_ms"] is None
    assert "slo_attainment_pct" not in doc["pabench"] and doc["pabench"]["page_size"] is None  # contiguous
    assert not any(k.startswith("p95_") for k in doc) and "p99_tpot_ms" in doc


@pytest.mark.parametrize("intervals, peak", [([], 0), ([(0, 1), (1, 2)], 1), ([(0, 2), (1, 3)], 2),
                                             ([(0, 5), (1, 2), (1, 3), (2.5, 4)], 3)])
def test_max_concurrent_requests_over_half_open_intervals(intervals, peak):
    assert max_concurrent_requests(intervals) == peak


def test_files_are_named_per_backend_and_written_whole(tmp_path):
    results = [_result("paged"), _result("contiguous-oracle")]
    paths = write_vllm_results(results, tmp_path / "new" / "dir", CONTRACT, (95.0,))
    assert [p.name for p in paths] == ["paged-fixture-0.json", "contiguous-oracle-fixture-0.json"]
    assert [json.loads(p.read_text())["backend"] for p in paths] == ["paged", "contiguous-oracle"]
    assert sorted(p.name for p in paths[0].parent.iterdir()) == sorted(p.name for p in paths)  # no temp files
    assert result_file_name("paged+prefix", "my workload/x", 7) == "paged+prefix-my_workload_x-7.json"


def _documented_keys() -> set[str]:
    """The keys README's "vLLM-format results" table lists, `{a,b}` expanded."""
    section = README.split("### vLLM-format results (--save-result)")[1].split("\n#")[0]
    keys = set()
    first_cells = re.findall(r"^\| (`[^|]+`) \|", section, re.M)
    for cell in (key for first in first_cells for key in re.findall(r"`([^`]+)`", first)):
        parts = re.split(r"\{([^}]*)\}", cell)
        options = [p.split(",") if i % 2 else [p] for i, p in enumerate(parts)]
        keys |= {"".join(choice) for choice in itertools.product(*options)}
    return keys


def test_readme_documents_every_key():
    doc = vllm_result(_result(), CONTRACT, ())
    keys = set(doc) | {f"pabench.{k}" for k in doc["pabench"]}
    documented = _documented_keys()
    assert sorted(keys - documented) == [], "keys a file has that the README does not list"
    missing = {k for k in documented - keys if "<" not in k and not k.startswith(("pabench.", "comparability"))}
    assert sorted(missing) == [], "keys the README lists that a file does not have"


def _render(results, view=None) -> str:
    console = Console(width=400, file=io.StringIO(), color_system=None)
    console.print(run_table(results, view=view))
    return console.file.getvalue()


def test_the_table_shows_goodput_only_when_asked_and_the_chosen_percentiles():
    plain = _render([_result(goodput=None)])
    assert "goodput" not in plain and "TTFT p99" in plain and "E2E p50" in plain  # today's table
    text = _render([_result()], LatencyView(("e2el", "ttft"), (50.0, 95.0)))
    assert "goodput req/s" in text and "SLO met %" in text and "100.0" in text
    assert all(h in text for h in ("E2E p50", "E2E p95", "TTFT p50", "TTFT p95"))
    assert "TPOT" not in text and "TTFT p99" not in text
    assert "1,500.0 ms" in text  # TTFT p50 in ms


def test_export_doc_lists_the_columns_only_some_runs_have():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "EXPORT.md").read_text(encoding="utf-8")
    section = doc.split("## Columns only some exports have")[1].split("\n## ")[0]
    row = result_row(_result(percentiles=(95.0,)))
    for column in ("goodput", "request_goodput", "slo_attainment_pct", "{ttft,tpot,itl,e2e}_p<P>_ms"):
        assert f"| `{column}` |" in section, column
    assert {c for c in row if "_p95_" in c} == {f"{m}_p95_ms" for m in ("ttft", "tpot", "itl", "e2e")}
