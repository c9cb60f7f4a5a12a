"""`--requests-csv` (report/requests.py): one row per request and sample, worked out by hand on the fixture run,
and docs/EXPORT.md's table lists exactly its columns."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from fixtures.runs import make_run
from pabench.bench.metrics import build_result
from pabench.report.requests import REQUEST_COLUMNS, request_rows, requests_frame, write_requests_csv

ROOT = Path(__file__).resolve().parents[2]


def test_a_row_per_sample_with_its_own_latencies():
    """Request 1 has two samples (tokens 2.0 2.5 | 2.0 2.25 2.5 3.5, arrival 0.5); request 2 one token."""
    rows = request_rows(build_result(make_run("paged")), repeat=2)
    assert [(r["request_id"], r["sample"]) for r in rows] == [(0, 0), (1, 0), (1, 1), (2, 0)]
    first, second = rows[1], rows[2]
    assert (first["first_token_s"], first["finish_s"], first["output_len"]) == (2.0, 2.5, 2)
    assert (second["finish_s"], second["output_len"], second["prompt_len"]) == (3.5, 4, 20)
    assert second["ttft_ms"] == pytest.approx(1500) and second["e2e_ms"] == pytest.approx(3000)
    assert second["tpot_ms"] == pytest.approx(1500 / 3) and first["tpot_ms"] == pytest.approx(500)
    assert math.isnan(rows[3]["tpot_ms"]) and rows[3]["ttft_ms"] == pytest.approx(1500)  # one token: no TPOT
    assert {(r["backend"], r["seed"], r["repeat"], r["num_preemptions"]) for r in rows} == {("paged", 0, 2, 0)}


def test_every_run_and_backend_in_one_file(tmp_path):
    runs = [[build_result(make_run(b, seed=s)) for b in ("paged", "contiguous-max")] for s in (7, 8)]
    frame = requests_frame(runs)
    assert list(frame.columns) == list(REQUEST_COLUMNS) and len(frame) == 2 * 2 * 4
    assert frame[["seed", "repeat"]].drop_duplicates().values.tolist() == [[7, 1], [8, 2]]
    assert list(frame["backend"].iloc[::4]) == ["paged", "contiguous-max"] * 2  # run, then backend order
    path = write_requests_csv(runs, tmp_path / "q.csv")
    back = pd.read_csv(path)
    assert list(back.columns) == list(REQUEST_COLUMNS) and back["seed"].dtype.kind == "i"
    assert back["tpot_ms"].isna().sum() == 4 and back.loc[2, "finish_s"] == 3.5  # empty cell for no TPOT
    assert list(requests_frame([]).columns) == list(REQUEST_COLUMNS)


def test_doc_lists_exactly_the_request_columns_each_with_a_unit():
    doc = (ROOT / "docs" / "EXPORT.md").read_text(encoding="utf-8")
    section = doc.split("\n## Per-request CSV (--requests-csv)\n", 1)[1].split("\n## ", 1)[0]
    listed = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            listed[re.findall(r"`([^`]+)`", cells[0])[0]] = cells[1]
    assert list(listed) == list(REQUEST_COLUMNS) and all(listed.values())
