"""`pabench check` and `compare` as CI runs them: two real small `run --repeat 2` exports, then edited copies.

The guard passes a rerun of unchanged code, fails (exit 2) on a worse or missing metric or run, and refuses
(exit 1, one line) inputs it cannot judge: a duplicate row, a mismatched configuration, a non-numeric cell.
"""

import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pabench.cli import app

ROOT = Path(__file__).resolve().parents[2]
# Small (as tests/cli's SMALL) and two backends: four engine runs per export on a shared 2-core machine.
SMALL = ["--num-requests", "6", "--max-model-len", "512", "--no-progress", "--backend", "paged,contiguous-max"]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(res) -> str:
    """The single stderr line of a refused input (and nothing on stdout)."""
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("pabench: error: "), res.output
    return lines[0]


def readme_recipe() -> list[list[str]]:
    """The `pabench` commands of the README's CI recipe block, as argument lists."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## CI recipe.*?```yaml\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line.split(".venv/bin/pabench", 1)[1]) for line in block.splitlines()
            if line.startswith("- run: .venv/bin/pabench")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two exports of the same code: the README recipe's run command (shrunk by SMALL, 2 repeats instead of 3)
    run twice, the first as the baseline, the second as the rerun under test."""
    d = tmp_path_factory.mktemp("check")
    run = readme_recipe()[0]
    assert run[0] == "run" and "--repeat" in run
    for name in ("base.csv", "rerun.csv"):
        res = invoke(*run, *SMALL, "--repeat", "2", "--csv", d / name)  # later options win
        assert res.exit_code == 0, res.output
        assert "median of 2 repeats" in res.stderr
    return d / "base.csv", d / "rerun.csv"


def edited(path: Path, out: Path, edit) -> Path:
    frame = pd.read_csv(path)
    changed = edit(frame)  # edits in place, or returns a new frame
    (frame if changed is None else changed).to_csv(out, index=False)
    return out


def test_repeat_exports_medians_and_spreads(runs):
    base = pd.read_csv(runs[0])
    assert list(base["backend"]) == ["paged", "contiguous-max"] and (base["repeat"] == 2).all()
    for metric in ("output_tok_per_s", "ttft_p99_ms", "e2e_p50_ms", "wall_s"):
        assert (base[f"{metric}_spread_pct"] >= 0).all(), metric
    assert not any(c.startswith("mean_waste_pct_spread") for c in base.columns)  # reproduced: no spread


def test_rerun_of_unchanged_code_passes(runs):
    base, rerun = runs
    res = invoke("check", rerun, "--baseline", base)
    assert res.exit_code == 0, res.output
    assert "no regression" in res.stdout and "mean_waste_pct" in res.stdout and "output_tok_per_s" not in res.stdout


@pytest.mark.parametrize("column, change", [("mean_waste_pct", lambda v: v * 1.05),
                                            ("num_preemptions", lambda v: v + 1),
                                            ("concurrency_mean", lambda v: v * 0.99),
                                            ("peak_reserved_bytes", lambda v: v + 4096)])
def test_a_worse_deterministic_metric_fails(runs, tmp_path, column, change):
    def worsen(frame):
        frame.loc[frame["backend"] == "paged", column] = change(frame.loc[frame["backend"] == "paged", column])

    worse = edited(runs[1], tmp_path / "worse.csv", worsen)
    res = invoke("check", worse, "--baseline", runs[0], "--max-regression", "50%")  # the tolerance is for timing
    assert res.exit_code == 2, res.output
    assert f"paged: {column}" in res.stdout and "1 regression(s)" in res.stdout


def test_a_better_deterministic_metric_passes(runs, tmp_path):
    better = edited(runs[1], tmp_path / "better.csv",
                    lambda f: f.__setitem__("mean_waste_pct", f["mean_waste_pct"] / 2))
    assert invoke("check", better, "--baseline", runs[0]).exit_code == 0


def test_a_missing_metric_or_run_fails(runs, tmp_path):
    base, rerun = runs
    no_waste = edited(rerun, tmp_path / "no_waste.csv", lambda f: f.drop(columns=["mean_waste_pct"]))
    for extra in ([], ["--metrics", "mean_waste_pct"]):
        res = invoke("check", no_waste, "--baseline", base, *extra)
        assert res.exit_code == 2, res.output
        assert "mean_waste_pct: the baseline has it, the current results have no such column" in res.stdout
    empty = edited(rerun, tmp_path / "empty.csv", lambda f: f.__setitem__("num_preemptions", float("nan")))
    res = invoke("check", empty, "--baseline", base)
    assert res.exit_code == 2 and "num_preemptions has no value" in res.stdout
    one = edited(rerun, tmp_path / "one.csv", lambda f: f.drop(index=1))
    res = invoke("check", one, "--baseline", base)
    assert res.exit_code == 2 and "contiguous-max: missing from the current results" in res.stdout


def test_a_metric_the_baseline_lacks_is_an_input_problem(runs, tmp_path):
    base, rerun = runs
    old = edited(base, tmp_path / "old.csv", lambda f: f.drop(columns=["num_steps"]))
    line = one_error_line(invoke("check", rerun, "--baseline", old, "--metrics", "num_steps,mean_waste_pct"))
    assert line == f"pabench: error: {old}: no num_steps column to check against (asked for by --metrics)"
    assert "unknown metric(s) nope" in one_error_line(invoke("check", rerun, "--baseline", base, "--metrics", "nope"))
    assert "name at least one metric" in one_error_line(invoke("check", rerun, "--baseline", base, "--metrics", ","))


def test_a_duplicate_row_is_ambiguous(runs, tmp_path):
    base, rerun = runs
    twice = edited(rerun, tmp_path / "twice.csv", lambda f: f.loc.__setitem__(len(f), f.iloc[0]))
    line = one_error_line(invoke("check", twice, "--baseline", base))
    assert line == (f"pabench: error: {twice}: rows 1 and 3 are the same run (paged, same configuration): "
                    "ambiguous pairing (one row per configuration per file)")
    assert one_error_line(invoke("check", rerun, "--baseline", twice)).startswith(f"pabench: error: {twice}: rows 1")


def test_a_mismatched_configuration_is_refused_unless_allowed(runs, tmp_path):
    base, rerun = runs
    other = edited(rerun, tmp_path / "other.csv", lambda f: f.__setitem__("seed", 1))
    line = one_error_line(invoke("check", other, "--baseline", base))
    assert line == ("pabench: error: paged: the current run's configuration differs from the baseline's in seed "
                    "(0 vs 1); compare like with like, or pass --allow-config-mismatch")
    res = invoke("check", other, "--baseline", base, "--allow-config-mismatch")
    assert res.exit_code == 0, res.output
    res = invoke("compare", base, other)
    assert res.exit_code == 0 and "paged" in res.stdout
    warnings = res.stderr.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("warning: ") and "seed (0 vs 1)" in w for w in warnings)


def test_sweep_rows_pair_on_their_sweep_columns(runs, tmp_path):
    """Many rows per backend (a sweep): each pairs with its own point, whatever the row order."""
    def sweep(frame, order):
        frames = [frame.copy().assign(sweep_page_size=p, page_size=p) for p in (8, 32)]
        frames[1]["mean_waste_pct"] *= 3  # the page-32 point wastes more: pairing 8 with 32 would fail
        return pd.concat(frames[::order], ignore_index=True)

    base = tmp_path / "sweep_base.csv"
    sweep(pd.read_csv(runs[0]), 1).to_csv(base, index=False)
    now = tmp_path / "sweep_now.csv"
    sweep(pd.read_csv(runs[1]), -1).to_csv(now, index=False)
    res = invoke("check", now, "--baseline", base)
    assert res.exit_code == 0, res.output
    assert "paged sweep_page_size=8" in res.stdout and "contiguous-max sweep_page_size=32" in res.stdout


def test_a_non_numeric_cell_is_one_line(runs, tmp_path):
    base, rerun = runs
    bad = edited(rerun, tmp_path / "bad.csv",
                 lambda f: f.__setitem__("mean_waste_pct", [f["mean_waste_pct"][0], "abc"]))
    assert one_error_line(invoke("check", bad, "--baseline", base)) == (
        f"pabench: error: {bad}: mean_waste_pct of contiguous-max is not a number: 'abc'")
    bad = edited(rerun, tmp_path / "bad_tok.csv", lambda f: f.__setitem__("output_tok_per_s", "abc"))
    assert "output_tok_per_s of paged is not a number: 'abc'" in one_error_line(
        invoke("check", bad, "--baseline", base, "--timing"))
    assert "not a number" in one_error_line(invoke("compare", base, bad))


def test_timing_is_checked_when_asked_beyond_the_spread(runs, tmp_path):
    base, rerun = runs
    slow = edited(rerun, tmp_path / "slow.csv", lambda f: f.__setitem__("ttft_p50_ms", f["ttft_p50_ms"] * 100))
    assert invoke("check", slow, "--baseline", base).exit_code == 0  # timing only when asked
    for asked in (["--timing"], ["--metrics", "ttft_p50_ms"]):
        res = invoke("check", slow, "--baseline", base, *asked)
        assert res.exit_code == 2 and "ttft_p50_ms" in res.stdout, res.output

    def noisy(frame, spread):
        frame["output_tok_per_s"] = pd.read_csv(base)["output_tok_per_s"] * 0.7  # 30% slower than the baseline
        frame["output_tok_per_s_spread_pct"] = spread

    both = ("--baseline", base, "--metrics", "output_tok_per_s", "--max-regression", "10%")
    within = edited(rerun, tmp_path / "within.csv", lambda f: noisy(f, 40.0))  # the repeats varied by 40%
    assert invoke("check", within, *both).exit_code == 0
    quiet_base = edited(base, tmp_path / "quiet.csv", lambda f: f.__setitem__("output_tok_per_s_spread_pct", 1.0))
    beyond = edited(rerun, tmp_path / "beyond.csv", lambda f: noisy(f, 1.0))
    res = invoke("check", beyond, "--baseline", quiet_base, *both[2:])
    assert res.exit_code == 2 and "output_tok_per_s" in res.stdout and "10.0%" in res.stdout, res.output


def test_the_readme_recipe_passes_twice_and_fails_on_a_regression(runs, tmp_path):
    """The recipe's checks as written, on the recipe's run done twice (`runs`): the rerun passes the check
    against the committed-style baseline, and a worse waste fails every check.

    The timing step is meant for a runner that records its own baseline with nothing else running; on this
    shared machine two runs' wall times differ by up to 4x between runs (more than the spread within one), so
    here it is held to the rerun's own timing, which it must pass, and to a worse waste, which it must fail."""
    _, *checks = readme_recipe()
    assert [c[0] for c in checks] == ["check", "check"] and "--timing" in checks[1] and "--timing" not in checks[0]
    base, rerun = runs

    def local(args: list[str], baseline: Path) -> list[str]:  # the recipe's files, in tmp_path
        names = {"current.csv": tmp_path / "current.csv", Path(args[args.index("--baseline") + 1]).name: baseline}
        return [str(names.get(Path(a).name, a)) if a.endswith(".csv") else a for a in args]

    shutil.copy(rerun, tmp_path / "current.csv")
    deterministic, timing = local(checks[0], base), local(checks[1], rerun)
    for check in (deterministic, timing):
        res = invoke(*check)
        assert res.exit_code == 0, (check, res.output)
    edited(rerun, tmp_path / "current.csv", lambda f: f.__setitem__("mean_waste_pct", f["mean_waste_pct"] * 1.05))
    for check in (deterministic, timing):
        res = invoke(*check)
        assert res.exit_code == 2 and "mean_waste_pct" in res.stdout, (check, res.output)
    edited(rerun, tmp_path / "current.csv", lambda f: f.__setitem__("ttft_p50_ms", f["ttft_p50_ms"] * 100))
    assert invoke(*deterministic).exit_code == 0
    res = invoke(*timing)
    assert res.exit_code == 2 and "ttft_p50_ms" in res.stdout, res.output


def test_repeat_aggregate_medians_spreads_and_what_did_not_reproduce():
    """bench.repeat.aggregate (what `run --repeat` exports): the median of each timing metric, its spread, and a
    deterministic column that differed between repeats named (and given a spread, so check allows for it)."""
    from fixtures.runs import make_run

    from pabench.bench.metrics import build_result
    from pabench.bench.repeat import aggregate, spread_pct
    from pabench.report.export import result_row

    runs = [build_result(make_run(wall_s=w)) for w in (4.0, 5.0, 8.0)]
    merged, varied = aggregate(runs)
    row = result_row(merged)
    assert row["wall_s"] == 5.0 and row["repeat"] == 3 and varied == []
    assert row["wall_s_spread_pct"] == pytest.approx(80.0) and spread_pct([2.0, 2.0]) == 0.0
    assert row["num_preemptions"] == 1 and isinstance(row["num_preemptions"], int)
    shifted = [build_result(make_run(shift=s)) for s in (0, 0, 30)]
    merged, varied = aggregate(shifted)
    assert "mean_waste_pct" in varied and "mean_waste_pct_spread_pct" in result_row(merged)
