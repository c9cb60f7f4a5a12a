"""`pabench sweep`: the grid plan, the tidy frame (one row per point and backend), the CSV and the CLI, on CPU."""

import math
from dataclasses import replace

import pandas as pd
import pytest
from typer.testing import CliRunner

from pabench.cli import app
from pabench.errors import ConfigError
from pabench.bench.runner import RunConfig
from pabench.bench.sweep import SWEEP_COLUMNS, SweepGrid, SweepPoint, run_sweep
from pabench.report.export import sweep_frame
from pabench.report.tables import sweep_summary

runner = CliRunner()
TINY = ["--model", "tiny", "--layers", "1", "--num-requests", "4", "--max-model-len", "64", "--seed", "0"]
WORKLOAD = """
name = "sweep-test"
description = "4 short requests at once, to keep the sweep tests fast"
num_requests = 4
arrival = "burst"
seed = 0

[prompt]
kind = "uniform"
mean = 12
range_ratio = 0.5

[output]
kind = "fixed"
mean = 6
"""


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    path = tmp_path_factory.mktemp("wl") / "sweep-test.toml"
    path.write_text(WORKLOAD)
    return str(path)


# ---- the plan (no run) ------------------------------------------------------------------------------------------

def test_plan_runs_contiguous_once_per_non_page_point():
    grid = SweepGrid(page_sizes=(8, 16, 32), kv_budgets=(2**20, 2**21))
    plan = grid.plan(("paged", "contiguous-max", "contiguous-oracle"))
    assert grid.num_points == 6
    assert sum(len(backends) for _, backends in plan) == 2 * (3 + 2)  # 3 paged page sizes + 2 contiguous, per budget
    contiguous = [p for p, b in plan if b == ("contiguous-max", "contiguous-oracle")]
    assert [p.page_size for p in contiguous] == [None, None]
    assert sorted(p.kv_budget_bytes for p in contiguous) == [2**20, 2**21]
    assert sorted(p.page_size for p, b in plan if b == ("paged",)) == [8, 8, 16, 16, 32, 32]


def test_plan_without_page_sizes_runs_every_backend_at_every_point():
    grid = SweepGrid(rates=(1.0, 2.0), max_num_seqs=(4, 8))
    plan = grid.plan(("paged", "contiguous-max"))
    assert len(plan) == 4 and all(b == ("paged", "contiguous-max") for _, b in plan)
    assert grid.swept == ("sweep_rate", "sweep_max_num_seqs")


def test_plan_crosses_kv_dtypes_with_the_other_values():
    grid = SweepGrid(page_sizes=(8, 16), kv_dtypes=("auto", "fp8"))
    plan = grid.plan(("paged", "contiguous-oracle"))
    assert grid.num_points == 4 and grid.swept == ("sweep_page_size", "sweep_kv_dtype")
    assert sorted((p.kv_dtype, p.page_size or 0, b) for p, b in plan) == [
        ("auto", 0, ("contiguous-oracle",)), ("auto", 8, ("paged",)), ("auto", 16, ("paged",)),
        ("fp8", 0, ("contiguous-oracle",)), ("fp8", 8, ("paged",)), ("fp8", 16, ("paged",))]
    assert SweepPoint(16, kv_dtype="fp8").label() == "page_size=16 kv_dtype=fp8"


def test_point_config_carries_the_swept_values_in_extra():
    base = RunConfig(num_pages=64)
    cfg = SweepPoint(16, 2**20, 4.0, 8, "fp8").config(base, SWEEP_COLUMNS, ("paged",))
    assert (cfg.page_size, cfg.kv_budget_bytes, cfg.num_pages, cfg.rate, cfg.max_num_seqs) == (16, 2**20, None, 4.0, 8)
    assert cfg.kv_dtype == "fp8" and base.kv_dtype == "auto"
    assert cfg.extra == {"sweep_page_size": 16, "sweep_kv_budget_bytes": 2**20, "sweep_kv_dtype": "fp8",
                         "sweep_rate": 4.0, "sweep_max_num_seqs": 8}
    contiguous = SweepPoint(None, 2**20).config(base, ("sweep_page_size", "sweep_kv_budget_bytes"), ("contiguous-max",))
    assert math.isnan(contiguous.extra["sweep_page_size"]) and contiguous.page_size == base.page_size


@pytest.mark.parametrize("kwargs,needle", [
    ({"page_sizes": (12,)}, "power of two"),
    ({"page_sizes": (8, 8)}, "twice"),
    ({"page_sizes": ()}, "no value"),
    ({"kv_budgets": (-1,)}, "positive"),
    ({"rates": (0.0,)}, "positive"),
    ({"max_num_seqs": (2.5,)}, "integer"),
    ({"kv_dtypes": ("auto", "auto")}, "distinct"),
    ({"kv_dtypes": ("auto", "int4")}, "kv dtype must be one of auto, fp8"),
])
def test_bad_grids_raise_config_error(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        SweepGrid(**kwargs)


# ---- real runs (tiny model, CPU) --------------------------------------------------------------------------------

def test_cli_sweep_writes_one_row_per_point_and_backend(tmp_path, workload):
    out = tmp_path / "sweep.csv"
    res = runner.invoke(app, ["sweep", "--page-sizes", "8,16", "--backend", "paged,contiguous-max", "--workload",
                              workload, *TINY, "--csv", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert len(df) == 3  # paged at 8 and 16; contiguous-max once (the page size does not change it)
    assert list(df.columns[:2]) == ["sweep_page_size", "backend"]
    for column in ("output_tok_per_s", "mean_waste_pct", "ttft_p50_ms", "decode_step_mean_ms", "page_size",
                   "kv_budget_bytes", "workload", "model", "git_commit"):
        assert column in df.columns, column
    paged = df[df["backend"] == "paged"]
    assert sorted(paged["sweep_page_size"]) == [8, 16] and list(paged["page_size"]) == list(paged["sweep_page_size"])
    contiguous = df[df["backend"] == "contiguous-max"]
    assert len(contiguous) == 1 and contiguous["sweep_page_size"].isna().all() and contiguous["page_size"].isna().all()
    assert (df["num_requests"] == 4).all() and (df["output_tok_per_s"] > 0).all()
    assert (df["num_output_tokens"] == 4 * 6).all()
    assert df["kv_budget_bytes"].nunique() == 1  # same memory for every backend
    assert "paged" in res.stdout and "the output tokens/s of contiguous-max" in res.stdout


def test_cli_sweep_over_kv_dtypes_holds_the_bytes_and_multiplies_the_tokens(tmp_path, workload):
    out = tmp_path / "sweep.csv"
    res = runner.invoke(app, ["sweep", "--kv-dtypes", "auto,fp8", "--page-sizes", "16", "--backend",
                              "paged,contiguous-oracle", "--workload", workload, *TINY, "--csv", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert list(df.columns[:3]) == ["sweep_page_size", "sweep_kv_dtype", "backend"]
    assert sorted(zip(df["sweep_kv_dtype"], df["backend"])) == [
        ("auto", "contiguous-oracle"), ("auto", "paged"), ("fp8", "contiguous-oracle"), ("fp8", "paged")]
    assert (df["kv_dtype"] == df["sweep_kv_dtype"]).all() and df["kv_budget_bytes"].nunique() == 1
    tokens = df[df["backend"] == "paged"].set_index("kv_dtype")["capacity_num_tokens"]
    elem = {"fp32": 4, "bf16": 2, "fp16": 2}[df["dtype"].iloc[0]]
    assert tokens["fp8"] == elem * tokens["auto"]  # the same bytes hold elem x the tokens at one byte each
    assert (df["num_output_tokens"] == 4 * 6).all() and "kv dtype" in res.stdout
    one = tmp_path / "one.csv"
    res = runner.invoke(app, ["sweep", "--kv-dtype", "fp8", "--page-sizes", "16", "--backend", "paged",
                              "--workload", workload, *TINY, "--csv", str(one)])
    assert res.exit_code == 0, res.output
    single = pd.read_csv(one)  # one value is run's --kv-dtype: no grid column
    assert "sweep_kv_dtype" not in single.columns and list(single["kv_dtype"]) == ["fp8"]


def test_cli_sweep_passes_run_options_through(tmp_path, workload):
    """The serving options `pabench run` has reach every sweep point (and its CSV row)."""
    out = tmp_path / "sweep.csv"
    res = runner.invoke(app, ["sweep", "--page-sizes", "16", "--backend", "paged", "--workload", workload, *TINY,
                              "--watermark", "0.1", "--max-batched-tokens", "4096", "--async-scheduling",
                              "--no-cuda-graphs", "--csv", str(out)])
    assert res.exit_code == 0, res.output
    row = pd.read_csv(out).iloc[0]
    assert row["watermark"] == 0.1 and row["max_batched_tokens"] == 4096
    assert bool(row["async_scheduling"]) and not bool(row["cuda_graphs"])
    res = runner.invoke(app, ["sweep", "--workload", workload, *TINY, "--watermark", "1.5", "--csv", str(out)])
    assert res.exit_code == 1 and "watermark" in res.output


def test_cli_sweep_json_keeps_every_run_with_its_requests(tmp_path, workload):
    import json

    out = tmp_path / "sweep.json"
    res = runner.invoke(app, ["sweep", "--kv-budgets", "64KiB,128KiB", "--page-sizes", "16", "--backend",
                              "paged,contiguous-oracle", "--workload", workload, *TINY, "--csv",
                              str(tmp_path / "s.csv"), "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert len(doc["rows"]) == len(doc["backends"]) == 4  # 2 budgets x 2 backends
    assert sorted(r["sweep_kv_budget_bytes"] for r in doc["rows"]) == [65536, 65536, 131072, 131072]
    assert all(len(b["requests"]) == 4 for b in doc["backends"])


def test_budget_text_names_gib():
    from pabench.units import format_bytes

    assert format_bytes(16 * 2**30, exact=True) == "16 GiB" and format_bytes(64 * 2**20, exact=True) == "64 MiB"


def test_run_sweep_other_parameters_and_progress(workload):
    calls = []
    grid = SweepGrid(rates=(50.0,), max_num_seqs=(2, 4))
    base = RunConfig(workload=workload, backends=("paged",), model="tiny", layers=1, num_requests=4,
                     max_model_len=64, seed=0)
    df = sweep_frame(run_sweep(grid, base, lambda label, done, total: calls.append((label, done, total))), grid.swept)
    assert list(df.columns[:3]) == ["sweep_rate", "sweep_max_num_seqs", "backend"]
    assert list(df["sweep_max_num_seqs"]) == [2, 4] and list(df["max_num_seqs"]) == [2, 4]
    assert (df["sweep_rate"] == 50.0).all() and (df["arrival"].str.contains("poisson")).all()
    assert df["peak_concurrency"].max() <= 4 and df.loc[0, "peak_concurrency"] <= 2
    done = [d for _, d, _ in calls]
    assert done == sorted(done) and done[-1] == calls[-1][2] == 2 * 4
    assert "max_num_seqs=4" in calls[-1][0]
    assert "nothing to compare" in sweep_summary(df)  # only paged ran


@pytest.mark.parametrize("args,needle", [
    (["--page-sizes", "8,x"], "comma-separated integers"),
    (["--kv-budgets", "lots"], "cannot read size"),
    (["--rates", "fast"], "comma-separated numbers"),
    (["--page-sizes", "12"], "power of two"),
    (["--backend", "pagd"], "unknown backend"),
    (["--kv-dtypes", "auto,fp4"], "kv dtype must be one of auto, fp8, got 'fp4'"),
    (["--kv-dtypes", ","], "--kv-dtypes: no value given"),
    (["--kv-budgets", "4KiB", "--backend", "paged"], "sweep point page_size=8 kv_budget=4KiB"),  # < one page
])
def test_cli_bad_input_is_one_line_exit_1_and_no_file(tmp_path, args, needle):
    out = tmp_path / "sweep.csv"
    res = runner.invoke(app, ["sweep", *TINY, *args, "--csv", str(out), "--no-progress"])
    assert res.exit_code == 1, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_a_bad_later_point_fails_before_the_first_point_runs(workload):
    base = RunConfig(workload=workload, backends=("paged", "contiguous-max"), model="tiny", layers=1, num_requests=4,
                     max_model_len=64, seed=0)
    progress = []
    with pytest.raises(ConfigError, match="sweep point kv_budget=1KiB"):
        run_sweep(SweepGrid(kv_budgets=(64 * 2**10, 2**10)), base, lambda *a: progress.append(a))
    assert progress == []  # the 64 KiB point never started


def _failing_run_backend(monkeypatch, should_fail, error=None):
    """Make `run_backend` fail (at run time, after every up-front check passed) where `should_fail(p, name)`."""
    import pabench.bench.runner as runner_module
    from pabench.errors import OutOfPagesError

    real = runner_module.run_backend

    def run_backend(p, name, on_progress=None):
        if should_fail(p, name):
            raise error or OutOfPagesError(1, 0, what="a page (injected)")
        return real(p, name, on_progress)

    monkeypatch.setattr(runner_module, "run_backend", run_backend)


def test_cli_sweep_keeps_going_past_a_failed_run_and_writes_the_rest(tmp_path, workload, monkeypatch):
    _failing_run_backend(monkeypatch, lambda p, name: name == "paged" and p.config.page_size == 16)
    out = tmp_path / "sweep.csv"
    res = runner.invoke(app, ["sweep", "--page-sizes", "8,16,32", "--backend", "paged,contiguous-max", "--workload",
                              workload, *TINY, "--csv", str(out), "--no-progress"])
    assert res.exit_code == 1, res.output
    df = pd.read_csv(out)  # the runs before and after the failure are kept
    assert sorted(df["sweep_page_size"].dropna()) == [8, 32] and (df["backend"] == "contiguous-max").sum() == 1
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("pabench: error: paged page_size=16 failed:"), res.stderr
    assert "Traceback" not in res.output


def test_run_sweep_without_a_failure_list_raises_after_the_other_runs(workload, monkeypatch):
    _failing_run_backend(monkeypatch, lambda p, name: p.config.max_num_seqs == 2)
    calls = []
    base = RunConfig(workload=workload, backends=("paged",), model="tiny", layers=1, num_requests=4,
                     max_model_len=64, seed=0)
    with pytest.raises(ConfigError, match="max_num_seqs=2 failed"):
        run_sweep(SweepGrid(max_num_seqs=(2, 4)), base, lambda label, done, total: calls.append(label))
    assert "max_num_seqs=4" in calls[-1]  # the point after the failure still ran


def test_a_bug_in_a_sweep_run_is_not_swallowed(workload, monkeypatch):
    _failing_run_backend(monkeypatch, lambda p, name: True, error=RuntimeError("a bug"))
    base = RunConfig(workload=workload, backends=("paged",), model="tiny", layers=1, num_requests=4,
                     max_model_len=64, seed=0)
    with pytest.raises(RuntimeError, match="a bug"):
        run_sweep(SweepGrid(max_num_seqs=(2,)), base, failures=[])


def test_cli_run_keeps_going_past_a_failed_backend(tmp_path, workload, monkeypatch):
    _failing_run_backend(monkeypatch, lambda p, name: name == "contiguous-max")
    out = tmp_path / "run.csv"
    res = runner.invoke(app, ["run", "--backend", "paged,contiguous-max,contiguous-oracle", "--workload", workload,
                              *TINY, "--csv", str(out), "--no-progress"])
    assert res.exit_code == 1, res.output
    assert list(pd.read_csv(out)["backend"]) == ["paged", "contiguous-oracle"]
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("pabench: error: contiguous-max failed:"), res.stderr


# ---- run and sweep take the same options (issue 18, section 4) --------------------------------------------------

def test_a_max_num_seqs_sweep_holds_the_default_budget_and_shows_it(workload):
    """Run's default budget is room for max_num_seqs / 8 sequences: swept alone, max_num_seqs would move it (2 and
    16 -> 1 and 2 sequences at max_model_len); held, every point gets the base config's (32 / 8 = 4 sequences)."""
    from pabench.bench.sweep import hold_budget

    base = RunConfig(workload=workload, backends=("paged",), model="tiny", layers=1, num_requests=4,
                     max_model_len=64, seed=0, device="cpu")
    grid, model = hold_budget(SweepGrid(max_num_seqs=(2, 16)), base)
    per_token = 1 * 2 * 64 * 2 * 4  # tiny, 1 layer: K and V x 2 KV heads x head_dim 64 x fp32
    assert grid.kv_budgets == (4 * 64 * per_token,) and model is not None
    assert grid.swept == ("sweep_kv_budget_bytes", "sweep_max_num_seqs")
    df = sweep_frame(run_sweep(grid, base, model=model), grid.swept)
    assert list(df["kv_budget_bytes"]) == [4 * 64 * per_token] * 2 and list(df["max_num_seqs"]) == [2, 16]
    for kept in (SweepGrid(max_num_seqs=(2, 16), kv_budgets=(2**20,)), SweepGrid(page_sizes=(16,))):
        assert hold_budget(kept, base) == (kept, None)  # budgets swept, or max_num_seqs not swept: nothing held
    assert hold_budget(SweepGrid(max_num_seqs=(2,)), replace(base, num_pages=8))[1] is None  # --num-pages holds it


def test_sweep_takes_run_s_singular_names_and_num_pages(tmp_path, workload):
    out = tmp_path / "s.csv"
    res = runner.invoke(app, ["sweep", "--workload", workload, *TINY, "--backend", "paged", "--page-size", "8,16",
                              "--num-pages", "40", "--request-rate", "100", "--metric-percentiles", "75",
                              "--csv", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert "ttft_p75_ms" in df.columns  # run's --metric-percentiles: the exports gain the column
    assert list(df["sweep_page_size"]) == [8, 16] and list(df["sweep_rate"]) == [100.0, 100.0]
    assert list(df["kv_budget_bytes"]) == [40 * p * 1 * 2 * 64 * 2 * 4 for p in (8, 16)]  # 40 pages at each size
    res = runner.invoke(app, ["sweep", *TINY, "--num-pages", "40", "--kv-budget", "1MiB,2MiB", "--csv", str(out),
                              "--no-progress"])
    assert res.exit_code == 1 and "--num-pages fixes the KV budget and --kv-budgets sweeps it" in res.stderr
    res = runner.invoke(app, ["sweep", *TINY, "--request-rate", "inf", "--csv", str(out), "--no-progress"])
    assert res.exit_code == 1 and "got inf (inf, every request at t=0, is run's --request-rate inf)" in res.stderr


def test_the_cli_sweep_over_max_num_seqs_has_a_budget_column(tmp_path, workload):
    out = tmp_path / "s.csv"
    res = runner.invoke(app, ["sweep", "--workload", workload, *TINY, "--backend", "paged", "--page-sizes", "16",
                              "--max-num-seqs", "2,16", "--csv", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "kv budget" in res.stdout and "256 KiB" in res.stdout  # 4 sequences x 64 tokens x 1 KiB
    assert pd.read_csv(out)["sweep_kv_budget_bytes"].tolist() == [262144, 262144]
