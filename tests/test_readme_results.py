"""The README's GPU tables quote the committed result files: every number in them is checked against its file.

Issue 5 asks that "numbers in the README must be the ones in those files"; this keeps a later edit of either side
honest. Rows are found by their first cell; each names the files (and backends) it was read from.
"""

import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "results" / "gpu" / "e2e"
KERNELS = ROOT / "results" / "gpu" / "kernels"
README = (ROOT / "README.md").read_text()


def table(header_start: str) -> list[list[str]]:
    """Cells of the markdown table whose header row starts with `header_start` (bold markers stripped)."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")])
    return rows


def number(text: str) -> float:
    """The first number in a cell: '11,780' -> 11780, '17.8 ms' -> 17.8, '2.20×' -> 2.2."""
    match = re.search(r"-?[\d,]*\.?\d+", text)
    assert match, f"no number in {text!r}"
    return float(match.group().replace(",", ""))


def decimals(text: str) -> int:
    match = re.search(r"\.(\d+)", text.split()[0] if text.split() else text)
    return len(match.group(1)) if match else 0


def same(cell: str, value: float) -> None:
    """`cell` shows `value` rounded to the cell's own precision."""
    assert number(cell) == pytest.approx(round(value, decimals(cell)), abs=1e-9), (cell, value)


def row_of(path: Path, backend: str) -> pd.Series:
    frame = pd.read_csv(path)
    match = frame[frame["backend"] == backend]
    assert len(match) == 1, f"{path}: no single row for {backend}"
    return match.iloc[0]


HEADLINE = {"16 GiB": "sharegpt.csv", "4 GiB": "sharegpt_4gib.csv", "2 GiB": "sharegpt_2gib.csv"}


def test_headline_table_matches_s2_3():
    rows = table("| KV budget | backend | output tok/s |")
    assert len(rows) == 10
    budget = ""
    for cells in rows:
        budget = cells[0].split(" (")[0] or budget
        run = row_of(E2E / "s2-3-headline" / HEADLINE[budget], cells[1])
        same(cells[2], run["output_tok_per_s"])
        same(cells[3], run["concurrency_mean"])
        same(cells[4], run["num_preemptions"])
        same(cells[5], run["mean_waste_pct"])
        same(cells[6], run["tpot_p50_ms"])
        same(cells[7], run["wall_s"])


# row label -> the runs it quotes, each {backend: csv}; "a / b" cells list one value per run
REPEATS = {
    "16 GiB (0dba6d8)": [dict.fromkeys(("paged", "contiguous-max", "contiguous-pow2", "contiguous-oracle"),
                                       "s3-2-headline/sharegpt.csv")],
    "16 GiB (0d8dd69)": [dict.fromkeys(("paged", "contiguous-oracle"), "s3-4-split/sharegpt.csv")],
    "16 GiB (d0b4d20)": [dict.fromkeys(("paged", "contiguous-oracle"), "s4-1-16gib-sync-async/sharegpt.csv")],
    "16 GiB (d0b4d20, `--async-scheduling`)": [dict.fromkeys(("paged", "contiguous-oracle"),
                                                             "s4-1-16gib-sync-async/sharegpt_async.csv")],
    "2 GiB (0dba6d8)": [dict.fromkeys(("paged", "contiguous-oracle"), "s3-2-headline/sharegpt_2gib.csv")],
    "2 GiB (f8742da)": [dict.fromkeys(("paged", "contiguous-oracle"), "s3-3-budget2/sharegpt_2gib.csv")],
    "2 GiB (d0b4d20; max from a separate run)": [{"paged": "s4-2-2gib-sync-async/sharegpt_2gib.csv",
                                                  "contiguous-oracle": "s4-2-2gib-sync-async/sharegpt_2gib.csv",
                                                  "contiguous-max": "s4-3-2gib-max/sharegpt_2gib_max.csv"}],
    "2 GiB (d0b4d20, one run, all three)": [dict.fromkeys(("paged", "contiguous-max", "contiguous-oracle"),
                                                          "s4-4-2gib-all/sharegpt_2gib_all.csv")],
    "2 GiB (d0b4d20, `--async-scheduling`, two runs)": [
        dict.fromkeys(("paged", "contiguous-oracle"), "s4-2-2gib-sync-async/sharegpt_2gib_async.csv"),
        dict.fromkeys(("paged", "contiguous-oracle"), "s4-5-2gib-async-repeat/sharegpt_2gib_async.csv")],
    "2 GiB (6f1448c, `--async-scheduling`, one run, all three)": [
        dict.fromkeys(("paged", "contiguous-max", "contiguous-oracle"),
                      "s5-3-2gib-async-all/sharegpt_2gib_async_all.csv")],
    "1 GiB (6f1448c; max from a separate run)": [{"paged": "s5-1-1gib-paged-oracle/sharegpt.csv",
                                                  "contiguous-oracle": "s5-1-1gib-paged-oracle/sharegpt.csv",
                                                  "contiguous-max": "s5-2-1gib-max/sharegpt.csv"}],
}
COLUMNS = ("paged", "contiguous-max", "contiguous-pow2", "contiguous-oracle")


def test_repeat_table_matches_s3_to_s5():
    rows = table("| KV budget | paged tok/s | contiguous-max |")
    assert [cells[0] for cells in rows] == list(REPEATS)
    for cells in rows:
        runs = REPEATS[cells[0]]
        tok = [{b: row_of(E2E / f, b)["output_tok_per_s"] for b, f in run.items()} for run in runs]
        for col, backend in enumerate(COLUMNS, start=1):
            shown = cells[col].split(" / ")
            if cells[col] == "—":
                assert all(backend not in t for t in tok), (cells[0], backend)
                continue
            assert len(shown) == len(runs), cells
            for text, t in zip(shown, tok):
                same(text, t[backend])
        for col, other in ((5, "contiguous-max"), (6, "contiguous-oracle")):
            if cells[col] == "—":
                continue
            for text, t in zip(cells[col].split(" / "), tok):
                same(text, t["paged"] / t[other])
        waste = re.findall(r"[\d.]+(?=%)", cells[7])
        same(waste[0], row_of(E2E / runs[0]["paged"], "paged")["mean_waste_pct"])
        if len(waste) > 1:  # "(max 80.5%)"
            same(waste[1], row_of(E2E / runs[0]["contiguous-max"], "contiguous-max")["mean_waste_pct"])


KERNEL_CASES = {"(a)": "a", "(b)": "b", "(c)": "c", "(d)": "d"}


def test_kernel_table_matches_kernels_csv():
    frame = pd.read_csv(ROOT / "results" / "gpu" / "kernels" / "kernels.csv")
    rows = table("| case | triton-paged | % of copy |")
    assert len(rows) == 4
    for cells in rows:
        case = frame[frame["case"] == KERNEL_CASES[cells[0][:3]]]

        def value(impl: str, column: str) -> float:
            match = case[(case["impl"] == impl) & (case["page_size"].isna() | (case["page_size"] == 16))]
            assert len(match) == 1, (cells[0], impl)
            return float(match.iloc[0][column])

        same(cells[1], value("triton-paged", "median_us"))
        same(cells[2], value("triton-paged", "pct_of_copy_bw"))
        same(cells[3], value("triton-paged", "paged_over_contiguous"))
        same(cells[4], value("torch-sdpa[cudnn]", "median_us"))
        same(cells[5], value("flex-paged", "median_us"))
        same(cells[6], value("gather+sdpa", "median_us"))


def test_graph_kernel_table_matches_s5_2():
    """The fifth session's table: each triton-paged cell from the row of its timing (CUDA events or graph)."""
    frame = pd.read_csv(ROOT / "results" / "gpu" / "kernels" / "s5-2-sdpa-fix" / "kernels.csv")
    rows = table("| case | triton-paged (events) |")
    assert [cells[0] for cells in rows] == list(KERNEL_CASES)
    for cells in rows:
        case = frame[frame["case"] == KERNEL_CASES[cells[0]]]

        def value(impl: str, timing: str, column: str) -> float:
            match = case[(case["impl"] == impl) & (case["timing"] == timing)]
            assert len(match) == 1, (cells[0], impl, timing)
            return float(match.iloc[0][column])

        same(cells[1], value("triton-paged", "cuda-events", "median_us"))
        same(cells[2], value("triton-paged", "cuda-events", "paged_over_contiguous"))
        same(cells[3], value("triton-paged", "cuda-graph", "median_us"))
        same(cells[4], value("triton-paged", "cuda-graph", "pct_of_copy_bw"))
        same(cells[5], value("triton-paged", "cuda-graph", "paged_over_contiguous"))
        same(cells[6], value("torch-sdpa[cudnn]", "cuda-graph", "median_us"))


def test_host_row_matches_s4_1_decode_by_batch():
    import json

    line = next(line for line in README.splitlines() if line.startswith("| host vs device per decode step"))
    doc = json.loads((E2E / "s4-1-16gib-sync-async" / "sharegpt.json").read_text())
    full = {b["backend"]: next(r for r in b["steps"]["decode_by_batch"] if r["batch_min"] == 241) for b in doc["backends"]}
    paged = re.search(r"paged: ([\d.]+)% \(([\d.]+) ms vs ([\d.]+) ms; schedule ([\d.]+), stage ([\d.]+), "
                      r"bookkeeping ([\d.]+) ms\), contiguous-oracle ([\d.]+)%", line.replace("**", ""))
    assert paged, line
    shown = paged.groups()
    for text, value in zip(shown, (full["paged"]["host_over_device_pct"], full["paged"]["host_ms"],
                                   full["paged"]["device_ms"], full["paged"]["schedule_ms"], full["paged"]["stage_ms"],
                                   full["paged"]["bookkeeping_ms"], full["contiguous-oracle"]["host_over_device_pct"])):
        same(text, value)


def _equal_batch_report():
    import importlib.util

    spec = importlib.util.spec_from_file_location("equal_batch_report", ROOT / "benchmarks" / "equal_batch_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def near(cell: str, value: float) -> None:
    """`cell` is `value` to the cell's precision (half a unit of its last digit: format and round() may differ)."""
    assert abs(number(cell) - value) <= 0.5 * 10 ** -decimals(cell) + 1e-9, (cell, value)


def test_equal_batch_table_matches_s9_6():
    report = _equal_batch_report()
    rows = table("| file | budget | ran first | paged tok/s |")
    assert len(rows) == 6
    for cells in rows:
        f = report.file_ratios(E2E / "s9-6-buckets" / f"{cells[0].strip('`')}.json")
        assert cells[2] == f["first"]
        near(cells[3], f["paged"]["output_tok_s"])
        near(cells[4], f["oracle"]["output_tok_s"])
        near(cells[5], f["output_tok_s"])
        paged_batch, oracle_batch = (number(x) for x in cells[6].split("/"))
        near(f"{paged_batch}", f["mean_batch"][0])
        near(cells[7], f["prefill_device_ms"])
        near(cells[8], f["decode_device_ms"])
        if cells[9] != "—":
            near(cells[9], f["peak_host_ms"])


def test_equal_batch_reruns_follow_s15_3_and_s15_5():
    """The two 2026-12-04 reruns' medians and ranges, as the paragraph under the equal-batch table gives them."""
    report = _equal_batch_report()
    text = " ".join(README.split())
    runs = [report.report(sorted(folder.glob("equal4_*.json.gz"))) for folder in
            (KERNELS / "s15-3-decode-check-h200" / "equal4", E2E / "s15-5-equal4-levers-h200" / "equal4")]
    assert (f"tok/s medians {runs[0]['median']['output_tok_s']:.3f} and {runs[1]['median']['output_tok_s']:.3f}"
            in text)
    files = [f for r in runs for f in r["files"]]
    decode = [f["decode_device_ms"] for f in files]
    host = [f["peak_host_ms"] for f in files]
    assert f"decode device {min(decode):.3f}–{max(decode):.3f} in every run" in text
    assert (f"{min(host):.2f}–{max(host):.2f}× (medians {runs[0]['median']['peak_host_ms']:.2f} and "
            f"{runs[1]['median']['peak_host_ms']:.2f})") in text


def test_equal_batch_sets_follow_s16():
    """The three session-16 sets: s16-1's decode device range and median, s16-3's and s16-5's medians and ranges."""
    report = _equal_batch_report()
    text = " ".join(README.split())
    first = report.report(sorted((KERNELS / "s16-1-decode-check-h200" / "equal4").glob("equal4_*.json.gz")))
    decode = [f["decode_device_ms"] for f in first["files"]]
    assert (f"decode device {min(decode):.3f}–{max(decode):.3f} over the run, tok/s median "
            f"{first['median']['output_tok_s']:.3f}") in text
    small = report.read_json(KERNELS / "s16-1-decode-check-h200" / "equal4" / "equal4_a.json.gz")
    buckets = {b["backend"]: b["steps"]["decode_by_batch"][0] for b in small["backends"]}
    assert buckets["paged"]["batch_max"] == 32
    assert f"{buckets['paged']['device_ms'] / buckets['contiguous-oracle']['device_ms']:.3f}× oracle's" in text
    runs = [report.report(sorted(folder.glob("equal4_*.json.gz"))) for folder in
            (KERNELS / "s16-3-vprobe-floor-h200" / "equal4", E2E / "s16-5-equal4-full32-h200" / "equal4")]
    files = [f for r in runs for f in r["files"]]
    med = [r["median"] for r in runs]
    assert f"tok/s medians {med[0]['output_tok_s']:.3f} and {med[1]['output_tok_s']:.3f}" in text
    decode = [f["decode_device_ms"] for f in files]
    host = [f["peak_host_ms"] for f in files]
    assert f"decode device {min(decode):.3f}–{max(decode):.3f}, prefill device medians" in text
    assert f"medians {med[0]['prefill_device_ms']:.3f} and {med[1]['prefill_device_ms']:.3f}" in text
    assert (f"{min(host):.2f}–{max(host):.2f}× (medians {med[0]['peak_host_ms']:.2f} and "
            f"{med[1]['peak_host_ms']:.2f})") in text


def test_full32_rerun_follows_s16_5():
    text = " ".join(README.split())
    for gib, phrase in ((16, "at 16 GiB paged {} vs oracle {} tok/s ({}), host / device at the peak batch {} / {}"),
                        (2, "at 2 GiB {} vs {} ({}), {} / {}")):
        path = E2E / "s16-5-equal4-full32-h200" / "f32" / f"full32_{gib}gib.csv"
        paged, oracle = row_of(path, "paged"), row_of(path, "contiguous-oracle")
        assert bool(paged["async_scheduling"]) and bool(oracle["async_scheduling"])
        assert phrase.format(f"{paged['output_tok_per_s']:,.0f}", f"{oracle['output_tok_per_s']:,.0f}",
                             f"{paged['output_tok_per_s'] / oracle['output_tok_per_s']:.3f}",
                             f"{paged['host_over_device_peak_batch_pct']:.1f}%",
                             f"{oracle['host_over_device_peak_batch_pct']:.1f}%") in text, gib


def test_full32_table_matches_s9_7():
    rows = table("| 32 layers, default engine |")
    assert len(rows) == 2
    for cells in rows:
        path = E2E / "s9-7-full32-buckets" / f"full32_{cells[0].replace(' ', '').lower()}.csv"
        paged, oracle = row_of(path, "paged"), row_of(path, "contiguous-oracle")
        assert bool(paged["async_scheduling"]) and bool(oracle["async_scheduling"])
        near(cells[1], paged["output_tok_per_s"])
        near(cells[2], oracle["output_tok_per_s"])
        near(cells[3], paged["output_tok_per_s"] / oracle["output_tok_per_s"])
        host = cells[4].split("/")
        near(host[0], paged["host_over_device_peak_batch_pct"])
        near(host[1], oracle["host_over_device_peak_batch_pct"])
        waste = cells[5].split("/")
        near(waste[0], paged["mean_waste_pct"])
        near(waste[1], oracle["mean_waste_pct"])


S10 = E2E / "s10-2-features-h200"


def test_beam_search_table_matches_s10_2():
    rows = table("| beam-search, budget |")
    assert len(rows) == 8
    for cells in rows:
        r = row_of(S10 / f"beam_{cells[0]}.csv", cells[1])
        near(cells[2], r["output_tok_per_s"])
        if cells[3] != "—":
            near(cells[3], r["concurrency_mean"])
        assert int(number(cells[4])) == r["num_preemptions"]
        near(cells[5], r["saved_pct"])
        near(cells[6], r["kv_copied_bytes"] / 1e9)
        assert int(number(cells[7])) == r["recomputed_tokens"]


def check_chunking_table(header: str, folder: Path, num_rows: int, keys: tuple[str, ...]) -> None:
    """A chunked-prefill table: each row's file (first cell, `name` -> folder/name.csv) and backend, chunked exactly
    when the file name says so, then one cell per key in `keys`."""
    rows = table(header)
    assert len(rows) == num_rows
    for cells in rows:
        r = row_of(folder / f"{cells[0].strip('`')}.csv", cells[1])
        assert bool(r["chunked_prefill"]) == ("_chunked_" in cells[0])
        for cell, key in zip(cells[2:], keys, strict=True):
            near(cell, r[key])


def test_chunked_prefill_table_matches_s10_2():
    check_chunking_table("| chunked prefill, file |", S10, 8, ("output_tok_per_s", "itl_p50_ms", "itl_p99_ms",
                                                                "itl_max_ms", "ttft_p50_ms", "ttft_p99_ms"))


S11 = E2E / "s11-3-mixed-h200"


def test_unified_mixed_step_table_matches_s11_3():
    check_chunking_table("| unified mixed step, file |", S11, 6, ("output_tok_per_s", "itl_p50_ms", "itl_p99_ms",
                                                                   "itl_max_ms", "tpot_p50_ms", "ttft_p99_ms"))


def test_mixed_attention_table_matches_s11_3():
    rows = table("| mixed attention, case |")
    frame = pd.read_csv(S11 / "mixed_attention.csv").set_index("case")
    assert len(rows) == len(frame) == 5
    for cells in rows:
        r = frame.loc[cells[0]]
        assert int(number(cells[1])) == r["q_tokens"] and int(number(cells[2])) == r["kv_tokens"]
        for cell, key in zip(cells[3:], ("unified_paged_ms", "unified_contiguous_ms", "gather_varlen_ms",
                                         "separate_ms", "gather_over_unified", "separate_over_unified")):
            near(cell, r[key])


def test_chunking_ratios_in_the_text_follow_s11_3():
    """The prose's 5.3x / 5.6x (and the gather path's 2.9x / 3.0x) are ITL p99 unchunked / chunked in one call."""
    def p99(name, backend):
        return row_of(S11 / f"{name}.csv", backend)["itl_p99_ms"]
    for backend, unified, gather in (("paged", 5.3, 2.9), ("contiguous-oracle", 5.6, 3.0)):
        assert round(p99("ctx_unchunked", backend) / p99("ctx_chunked_512", backend), 1) == unified
        assert round(p99("ctx_unchunked", backend) / p99("ctx_gather_chunked_512", backend), 1) == gather
    assert "5.3× (paged) and 5.6× (oracle)" in README and "2.9× and 3.0×" in README


def test_mixed_kernel_page_table_cost_range_follows_the_files():
    s3 = pd.read_csv(S11 / "mixed_attention.csv")
    s4 = pd.read_csv(E2E / "s11-4-mixed-tilings-h200" / "mixed_attention.csv")
    default = s3["unified_paged_ms"] / s3["unified_contiguous_ms"]
    two_stages = s4["cfg_n64_w4_s2_ms"] / s4["cfg_n64_w4_s2_contiguous_ms"]
    assert f"**{default.min():.2f}–{default.max():.2f}×**" in README
    assert f"({two_stages.min():.2f}–{two_stages.max():.2f}× at 2 stages" in README


def test_slo_search_table_matches_s12_1():
    """The max-rate-within-SLO table: per backend and budget, the highest rate met below the first miss in the
    file the row names ('none' when the lowest swept rate missed, 'all met' when no rate missed)."""
    folder = E2E / "s12-1-slo-h200"
    rows = table("| KV budget (4 layers), file")
    assert len(rows) == 5
    backends = ("paged", "contiguous-oracle", "contiguous-max")
    for first, _, *cells in rows:
        budget_text, name = (part.strip() for part in first.split(","))
        frame = pd.read_csv(folder / name)
        mib = number(budget_text) * (1024 if "GiB" in budget_text else 1)
        at_budget = frame[frame["sweep_kv_budget_bytes"] == mib * 2**20]
        for backend, cell in zip(backends, cells):
            runs = at_budget[at_budget["backend"] == backend]
            met = dict(zip(runs["sweep_rate"].astype(float), runs["slo_met"].astype(str) == "True"))
            first_miss = min((r for r, ok in met.items() if not ok), default=None)
            best = max((r for r, ok in met.items() if ok and (first_miss is None or r < first_miss)), default=None)
            if best is None:
                assert cell.startswith("none") and number(cell) == first_miss, (first, backend, cell)
            else:
                same(cell, best)
                assert ("all met" in cell) == (first_miss is None), (first, backend, cell)
    both = pd.concat(pd.read_csv(p) for p in folder.glob("slo_*.csv"))
    assert both["tpot_p99_ms"].max() < 5  # the text: TTFT binds, TPOT p99 stayed under 5 ms


def _check_fp8_table(folder, header: str) -> None:
    """An fp8 KV table: tokens held, tok/s, mean batch and the ratio over paged bf16, from the run's CSVs."""
    rows = table(header)
    assert len(rows) == 8
    for budget, backend, kv, tokens, tok_s, batch, ratio in rows:
        r = row_of(folder / f"e2e_{budget.replace(' ', '')}_{kv}.csv", backend)
        base = row_of(folder / f"e2e_{budget.replace(' ', '')}_auto.csv", "paged")
        assert r["kv_dtype"] == kv and int(number(tokens)) == r["capacity_num_tokens"]
        same(tok_s, round(r["output_tok_per_s"]))
        same(batch, r["concurrency_mean"])
        same(ratio, r["output_tok_per_s"] / base["output_tok_per_s"])


def _check_levers(folder, levers) -> None:
    """Each lever's tok/s over contiguous-oracle bf16 (paging, fp8, both) as the text under a table states it."""
    for budget, values in levers:
        oracle = row_of(folder / f"e2e_{budget}_auto.csv", "contiguous-oracle")["output_tok_per_s"]
        for value, (kv, backend) in zip(values, (("auto", "paged"), ("fp8", "contiguous-oracle"), ("fp8", "paged"))):
            got = row_of(folder / f"e2e_{budget}_{kv}.csv", backend)["output_tok_per_s"] / oracle
            assert round(got, 2) == value, (budget, kv, backend, got)
            assert f"{value:.2f}x" in README


def test_fp8_table_matches_s13_1():
    """The 4-layer fp8 KV table and the levers' ratios in the text under it."""
    folder = E2E / "s13-1-fp8-e2e-h200"
    _check_fp8_table(folder, "| KV budget (4 layers) | backend | kv_dtype")
    _check_levers(folder, (("128MiB", (1.66, 1.90, 2.75)), ("256MiB", (1.55, 1.79, 2.33))))


def test_fp8_32_layer_table_matches_s14_4():
    """The 32-layer fp8 KV table (issue 19's 1 and 2 GiB) and its levers' ratios."""
    folder = E2E / "s14-4-fp8-e2e-32l-h200"
    _check_fp8_table(folder, "| KV budget (32 layers) | backend | kv_dtype")
    _check_levers(folder, (("1GiB", (1.67, 1.83, 2.56)), ("2GiB", (1.49, 1.71, 2.18))))


def test_fp8_32_layer_sweep_table_matches_s15_5():
    """The 32-layer fp8 table from one `sweep --kv-dtypes auto,fp8`, its levers and its before/after gains."""
    frame = pd.read_csv(E2E / "s15-5-equal4-levers-h200" / "levers_32l.csv")
    rows = table("| KV budget (32 layers, sweep) | backend | kv_dtype")
    assert len(rows) == 8

    def run(budget: str, kv: str, backend: str) -> pd.Series:
        at = frame[(frame["sweep_kv_budget_bytes"] == number(budget) * 2**30) & (frame["sweep_kv_dtype"] == kv)]
        return at[at["backend"] == backend].iloc[0]

    for budget, backend, kv, tok_s, batch, ratio in rows:
        r = run(budget, kv, backend)
        same(tok_s, round(r["output_tok_per_s"]))
        same(batch, r["concurrency_mean"])
        same(ratio, r["output_tok_per_s"] / run(budget, "auto", "paged")["output_tok_per_s"])
    text = " ".join(README.split())
    for budget, phrase in (("1 GiB", "at 1 GiB paging {}x, fp8 {}x, both {}x"), ("2 GiB", "at 2 GiB {}x, {}x, {}x")):
        oracle = run(budget, "auto", "contiguous-oracle")["output_tok_per_s"]
        got = [run(budget, kv, b)["output_tok_per_s"] / oracle
               for kv, b in (("auto", "paged"), ("fp8", "contiguous-oracle"), ("fp8", "paged"))]
        assert phrase.format(*(f"{g:.2f}" for g in got)) in text, (budget, got)
    old = E2E / "s14-4-fp8-e2e-32l-h200"
    gains = [run(f"{g} GiB", "fp8", "paged")["output_tok_per_s"]
             / row_of(old / f"e2e_{g}GiB_fp8.csv", "paged")["output_tok_per_s"] - 1 for g in (1, 2)]
    assert f"gained {gains[0]:.0%} at 1 GiB" in text and f"and {gains[1]:.0%} at 2 GiB" in text
    drift = [abs(run(f"{g} GiB", "auto", b)["output_tok_per_s"] / row_of(old / f"e2e_{g}GiB_auto.csv", b)[
        "output_tok_per_s"] - 1) for g in (1, 2) for b in ("paged", "contiguous-oracle")]
    assert max(drift) < 0.04 and "bf16 rows are within 4%" in text


def test_model_shapes_paragraph_follows_s16_4():
    """Ranges of % of copy per shape group, with and without the chunk floor, from the same run's CSV."""
    frame = pd.read_csv(KERNELS / "s16-4-models-peers-h200" / "shape_floor.csv")
    text = " ".join(README.split())
    heur = frame[frame["heuristic"]].set_index("case")["pct_of_copy_bw"]
    unfloored = frame[~frame["heuristic"] & (frame["min_tiles"] == 0)].set_index("case")["pct_of_copy_bw"]

    def span(values) -> str:
        return f"{min(values):.1f}–{max(values):.1f}%"

    eight = ("llama-3-8b", "llama-3-70b", "llama-3.2-3b", "qwen2.5-72b", "mistral-7b")
    for lengths, phrase in (("uniform", "{} of the copy bandwidth with uniform lengths"),
                            ("lognormal", "{} with lognormal ones"), ("skewed", "{} skewed")):
        assert phrase.format(span([heur[f"{m}/{lengths}"] for m in eight])) in text, lengths
    assert f"the skewed ones read {span([unfloored[f'{m}/skewed'] for m in eight])}" in text
    assert (f"128k-token sequence: {heur['llama-3-8b/one-128k']:.1f}% "
            f"({unfloored['llama-3-8b/one-128k']:.1f}% without)") in text
    for model, name in (("qwen2.5-7b", "Qwen2.5 7B"), ("qwen2.5-1.5b", "Qwen2.5 1.5B"),
                        ("llama-3.2-1b", "Llama-3.2 1B")):
        assert f"{name} {span([heur[f'{model}/{x}'] for x in ('uniform', 'lognormal', 'skewed')])}" in text
    d = frame[frame["case"] == "llama-3-8b/case-d"]
    new, old = d[d["heuristic"]].iloc[0]["median_us"], d[d["min_tiles"] == 0].iloc[0]["median_us"]
    assert f"takes {new:.1f} µs with the floor and {old:.1f} µs without it" in text


def _peers(folder: str) -> pd.DataFrame:
    """Every row of a run's `peers/*.csv` (one `pabench kernels --models` export per model)."""
    return pd.concat([pd.read_csv(p) for p in sorted((KERNELS / folder / "peers").glob("*.csv"))])


def _flashinfer_over_triton(frame: pd.DataFrame) -> pd.Series:
    """Per case: the faster FlashInfer path's median time over Triton paged's (checks passed only)."""
    times = frame[frame["check"] == "ok"].pivot_table(index="case", columns="impl", values="median_us")
    return times[["flashinfer-paged", "flashinfer-paged-cc"]].min(axis=1) / times["triton-paged"]


def test_flashinfer_table_follows_s16_4_and_s16_2():
    peers = _peers("s16-4-models-peers-h200")
    ratio, before = _flashinfer_over_triton(peers), _flashinfer_over_triton(_peers("s16-2-peers-h200"))
    rows = {cells[0]: cells[1:] for cells in table("| lengths | 8 and 32 KV heads")}
    wide = ("llama-3-8b", "llama-3-70b", "llama-3.2-3b", "llama-2-7b")
    for lengths in ("uniform", "lognormal", "skewed"):
        group = [ratio[f"{m}/{lengths}"] for m in wide]
        assert rows[lengths][0] == f"{min(group):.3f}–{max(group):.3f}", lengths
        for cell, model in zip(rows[lengths][1:], ("llama-3.2-1b", "qwen2.5-7b", "qwen2.5-1.5b")):
            assert cell == f"{ratio[f'{model}/{lengths}']:.3f}", (model, lengths)
    text = " ".join(README.split())
    assert (f"those two read {before['qwen2.5-7b/uniform']:.3f} and {before['qwen2.5-1.5b/skewed']:.3f}, and "
            f"Qwen2.5 1.5B uniform {before['qwen2.5-1.5b/uniform']:.3f}") in text
    wide_uniform = [1 / ratio[f"{m}/uniform"] for m in wide]  # Triton's time over FlashInfer's
    assert f"takes {min(wide_uniform):.2f}–{max(wide_uniform):.2f}× its time on uniform lengths" in text
    lognormal = [v for c, v in ratio.items() if c.endswith("/lognormal")]
    skewed = [v for c, v in ratio.items() if c.endswith("/skewed") and v > 1]
    assert f"{min(lognormal):.2f}–{max(lognormal):.2f}× faster on lognormal lengths" in text
    assert f"{min(skewed):.2f}–{max(skewed):.2f}× on skewed ones" in text
    behind = sorted((v, c) for c, v in ratio.items() if v < 1 and not c.split("/")[0] in wide)
    assert [c for _, c in behind] == ["qwen2.5-1.5b/skewed", "qwen2.5-7b/uniform"], behind
    assert (f"trails by {1 - ratio['qwen2.5-7b/uniform']:.1%} (Qwen2.5 7B, uniform) and "
            f"{1 - ratio['qwen2.5-1.5b/skewed']:.1%} (Qwen2.5 1.5B, skewed)") in text
    failed = peers[peers["check"] != "ok"]
    assert set(failed["impl"]) == {"flashinfer-paged-cc"} and set(failed["model"]) == {"qwen2.5-7b", "qwen2.5-1.5b"}


def test_fp8_kernel_sentence_follows_s14_1():
    """The README's fp8 decode bandwidth sentence: paged and contiguous % of copy and case a's times."""
    frame = pd.read_csv(KERNELS / "s14-1-fp8-h200" / "kernels_fp8.csv")
    bf16 = pd.read_csv(KERNELS / "s14-1-fp8-h200" / "kernels_bf16.csv")
    a = frame[frame["case"] == "a"].set_index("impl")
    a16 = bf16[bf16["case"] == "a"].set_index("impl")
    assert f"reached {a.loc['triton-paged', 'pct_of_copy_bw']:.0f}% of the copy bandwidth" in README
    assert f"against {a16.loc['triton-paged', 'pct_of_copy_bw']:.0f}% for" in README
    assert (f"({a.loc['triton-paged', 'median_us']:.0f} vs {a16.loc['triton-paged', 'median_us']:.0f} µs"
            in README)
    assert f"the contiguous slab reached {a.loc['triton-contiguous', 'pct_of_copy_bw']:.0f}%" in README


def test_fp8_kernel_tiling_sentence_follows_s15_3_and_s15_4():
    """The README's numbers for the fp8 tiling (s15-3's cases) and for the e4m3-dot experiment (s15-4's log)."""
    frame = pd.read_csv(KERNELS / "s15-3-decode-check-h200" / "cases_fp8.csv")
    rows = {case: frame[frame["case"] == case].set_index("impl") for case in ("a", "b")}
    a, b = rows["a"], rows["b"]
    paged, contiguous = a.loc["triton-paged"], a.loc["triton-contiguous"]
    assert (f"case a now reads {paged['pct_of_copy_bw']:.0f}% of the copy bandwidth ({paged['median_us']:.0f} µs; "
            f"contiguous {contiguous['pct_of_copy_bw']:.0f}%, paged / contiguous "
            f"{paged['paged_over_contiguous']:.2f})") in " ".join(README.split())
    assert (f"case b {b.loc['triton-paged', 'pct_of_copy_bw']:.0f}% (paged / contiguous "
            f"{b.loc['triton-paged', 'paged_over_contiguous']:.2f})") in " ".join(README.split())
    log = (KERNELS / "s15-4-fp8-dot-h200" / "log.txt").read_text()
    times = {}
    for line in log.splitlines():
        if " heuristic " in line:  # "case a fp8_dot 1 heuristic ...: paged 202.8 us (62.5% copy), ..."
            case, dot = line.split()[1], int(line.split()[3])
            times[case, dot] = float(line.split(": paged ")[1].split(" us")[0])
    for case in ("a", "b"):  # "the same time": every way into the dots within 2% of the fp16 path
        assert all(abs(times[case, dot] / times[case, 0] - 1) < 0.02 for dot in (1, 2)), times
