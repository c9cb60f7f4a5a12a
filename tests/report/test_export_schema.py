"""docs/EXPORT.md lists exactly what a real `pabench run` export writes, each with a unit; and the export itself:
latencies in ms, empty (null) cells where a field does not apply to a backend, integers written as integers."""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pabench.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "EXPORT.md").read_text(encoding="utf-8")
STATS = ("mean", "std", "p50", "p90", "p99", "min", "max")


def expand(name: str) -> list[str]:
    """'ttft_{p50,p99}_ms' -> ['ttft_p50_ms', 'ttft_p99_ms'] (every brace group, in order)."""
    parts = re.split(r"\{([^}]*)\}", name)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(pick) for pick in itertools.product(*choices)]


def documented(section: str) -> dict[str, str]:
    """{name: unit} from the tables of the '## section' of the doc (up to the next '## ' heading)."""
    text = DOC.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    names: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        for raw in re.findall(r"`([^`]+)`", cells[0]):
            for name in expand(raw):
                names[name] = cells[1]
    return names


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[list[dict[str, str]], dict]:
    """A real small run of every standard backend: (CSV rows as text, JSON document)."""
    out = tmp_path_factory.mktemp("export")
    res = CliRunner().invoke(app, ["run", "--num-requests", "6", "--max-model-len", "512", "--no-progress",
                                   "--csv", str(out / "run.csv"), "--json", str(out / "run.json")])
    assert res.exit_code == 0, res.output
    with open(out / "run.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((out / "run.json").read_text(encoding="utf-8"))


def test_doc_lists_exactly_the_csv_columns_each_with_a_unit(export):
    rows, doc = export
    columns = set(rows[0])
    listed = documented("CSV columns")
    assert sorted(columns - set(listed)) == [], "columns the export writes but docs/EXPORT.md does not list"
    assert sorted(set(listed) - columns) == [], "columns docs/EXPORT.md lists but a run export never writes"
    assert all(listed.values()), [name for name, unit in listed.items() if not unit]
    assert {key for row in doc["rows"] for key in row} == columns  # the JSON rows: the same keys


def _json_paths(value, path: str) -> set[str]:
    """Every leaf key path of `value`: lists as `[]`, the step kinds of `by_kind` as `<kind>`."""
    if isinstance(value, dict) and value and not path.endswith((".config", ".capacity")):
        kinds = path.endswith(".by_kind")
        return set().union(*(_json_paths(v, f"{path}.{'<kind>' if kinds else k}") for k, v in value.items()))
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return set().union(*(_json_paths(v, f"{path}[]") for v in value))
    return {path}


def test_doc_lists_every_json_key(export):
    rows, doc = export
    listed = documented("JSON")
    paths = {p.removeprefix(".") for p in _json_paths({k: v for k, v in doc.items() if k != "rows"}, "")}
    assert sorted(paths - set(listed)) == [] and sorted(set(listed) - paths - {"rows", "backends"}) == []  # containers
    assert all(listed.values())
    for entry in doc["backends"]:  # config and capacity: the CSV's own columns, documented there
        assert set(entry["config"]) <= set(rows[0]) | {k.removeprefix("config_") for k in rows[0]}
        assert {f"capacity_{k}" for k in entry["capacity"]} <= set(rows[0])


def test_every_latency_is_in_ms(export):
    rows, _ = export
    assert {f"e2e_{s}_ms" for s in STATS} <= set(rows[0]) and not any(c.startswith("e2e_") and c.endswith("_s")
                                                                      for c in rows[0])
    paged = next(r for r in rows if r["backend"] == "paged")
    # E2E covers TTFT, in the same unit
    assert float(paged["e2e_p50_ms"]) >= float(paged["ttft_min_ms"]) and float(paged["e2e_max_ms"]) > 10


def test_fields_that_do_not_apply_are_empty_and_ints_stay_ints(export):
    rows, doc = export
    paged_only = ("page_size", "prefix_caching", "watermark", "prefix_hit_pct", "num_cow_copies",
                  "capacity_page_size")
    by_backend = {r["backend"]: r for r in rows}
    assert [by_backend["paged"][c] for c in ("page_size", "prefix_caching", "capacity_page_size")] == \
        ["16", "True", "16"]
    for name in ("contiguous-max", "contiguous-pow2", "contiguous-oracle"):
        assert [by_backend[name][c] for c in paged_only] == [""] * len(paged_only), name
    contiguous = next(b for b in doc["backends"] if b["backend"] == "contiguous-max")
    assert contiguous["config"]["page_size"] is None and contiguous["capacity"]["page_size"] is None
    assert next(r for r in doc["rows"] if r["backend"] == "contiguous-max")["prefix_caching"] is None
    # integer columns with empty cells (pandas would write 16.0 / 128.0 there)
    assert by_backend["paged"]["capacity_num_pages"].isdigit() and by_backend["paged"]["capacity_num_slots"] == ""
    assert by_backend["contiguous-max"]["capacity_num_slots"].isdigit()
    for row in rows:
        for column in ("num_requests", "kv_budget_bytes", "num_preemptions", "ttft_count", "peak_concurrency"):
            assert row[column].isdigit(), (column, row[column])


def test_old_exports_read_under_the_new_names(tmp_path):
    from pabench.report.export import read_results

    old = tmp_path / "old.csv"  # pabench 0.1.0: E2E in seconds, contiguous rows with page_size 1
    old.write_text("backend,page_size,prefix_caching,e2e_p50_s,e2e_p99_s,ttft_p50_ms\n"
                   "paged,16,True,1.5,2.25,100\ncontiguous-max,1,False,3.0,4.0,200\n")
    frame = read_results(old)
    assert "e2e_p50_s" not in frame.columns and list(frame["e2e_p50_ms"]) == [1500.0, 3000.0]
    assert list(frame["e2e_p99_ms"]) == [2250.0, 4000.0] and list(frame["ttft_p50_ms"]) == [100, 200]
    assert frame.loc[0, "page_size"] == 16 and pd.isna(frame.loc[1, "page_size"])
    assert pd.isna(frame.loc[1, "prefix_caching"])
    evidence = read_results(ROOT / "results" / "gpu" / "e2e" / "s2-3-headline" / "sharegpt.csv")  # committed, old
    raw = pd.read_csv(ROOT / "results" / "gpu" / "e2e" / "s2-3-headline" / "sharegpt.csv")
    assert list(evidence["e2e_p50_ms"]) == pytest.approx(list(raw["e2e_p50_s"] * 1e3))


def test_doc_lists_exactly_the_kernel_csv_columns(tmp_path):
    """`pabench kernels --csv` on the CPU (named cases, fp8, --models): every column it writes is documented, and
    the documented ones it never writes here are those that only CUDA rows (paged / contiguous) or failures have."""
    listed = documented("Kernel benchmark CSV (pabench kernels --csv)")
    assert all(listed.values()), [name for name, unit in listed.items() if not unit]
    written: set[str] = set()
    for i, extra in enumerate((["--case", "d"], ["--case", "d", "--kv-dtype", "fp8"], ["--models", "qwen2.5-1.5b"])):
        path = tmp_path / f"k{i}.csv"
        res = CliRunner().invoke(app, ["kernels", *extra, "--page-sizes", "8", "--csv", str(path)])
        assert res.exit_code == 0, res.output
        written |= set(pd.read_csv(path).columns)
    assert sorted(written - set(listed)) == [], "kernels columns docs/EXPORT.md does not list"
    assert sorted(set(listed) - written) == ["error", "paged_over_contiguous"]
