"""`run --repeat N` over seeds (bench/repeat.py): the t quantile, intervals against hand-computed ones, means of
hand-made runs, ratios paired per seed; and the real thing on the CPU: N seeds, each its own workload."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fixtures.runs import make_run
from pabench.bench.metrics import build_result, metric_row
from pabench.bench.repeat import Interval, Repeated, aggregate_seeds, ci_column, seeds_text, t_quantile
from pabench.report.export import result_row

# Student t 0.975 quantiles from a table (Abramowitz & Stegun 26.7): the series beyond 30 must land on them.
T_TABLE = {1: 12.706, 2: 4.303, 5: 2.571, 10: 2.228, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980, 10**6: 1.960}


@pytest.mark.parametrize("dof, expected", T_TABLE.items())
def test_t_quantile_matches_the_table(dof, expected):
    assert t_quantile(dof) == pytest.approx(expected, abs=6e-4)


def test_interval_is_student_t_on_the_sample_std():
    iv = Interval.of([10.0, 12.0, 14.0])  # mean 12, sample std 2, n 3: 4.303 * 2 / sqrt(3)
    assert (iv.mean, iv.n) == (12.0, 3) and iv.ci95 == pytest.approx(4.3027 * 2 / math.sqrt(3), rel=1e-4)
    assert iv.includes(15.0) and not iv.includes(17.0)
    one = Interval.of([5.0, math.nan])  # NaN (a statistic with no samples) is left out; one value: no interval
    assert (one.mean, one.n) == (5.0, 1) and math.isnan(one.ci95) and not one.includes(5.0)
    assert Interval.of([]).n == 0 and Interval.of([3, 3, 3]).ci95 == 0.0


def test_seeds_text():
    assert (seeds_text([0, 1, 2]), seeds_text([7]), seeds_text([0, 2]), seeds_text([-1, 0])) == \
        ("0..2", "7", "0,2", "-1..0")


def test_aggregate_seeds_means_every_number_and_gives_each_an_interval():
    walls, shifts = (4.0, 5.0, 8.0), (0, 30, 60)
    runs = [build_result(make_run(wall_s=w, shift=s, seed=i, token_match_pct=100.0 - i))
            for i, (w, s) in enumerate(zip(walls, shifts))]
    merged = aggregate_seeds(runs)
    rows = [metric_row(r) for r in runs]
    assert merged.wall_s == pytest.approx(np.mean(walls)) and merged.output_tok_s == pytest.approx(
        np.mean([r.output_tok_s for r in runs]))
    assert merged.mean_waste_pct == pytest.approx(np.mean([r["mean_waste_pct"] for r in rows]))
    assert merged.num_preemptions == 1 and isinstance(merged.num_preemptions, int)  # the same in every run
    assert merged.ttft_s == runs[0].ttft_s  # same requests: every statistic equal, counts stay ints
    for column in ("wall_s", "output_tok_per_s", "mean_waste_pct"):
        values = [r[column] for r in rows]
        expected = t_quantile(2) * np.std(values, ddof=1) / math.sqrt(3)
        assert merged.ci95[column] == pytest.approx(expected), column
    assert merged.ci95["num_preemptions"] == 0.0 and merged.ci95["ttft_p50_ms"] == 0.0
    assert merged.config["token_match_pct"] == pytest.approx(99.0) and merged.ci95["token_match_pct"] > 0
    assert (merged.config["repeat"], merged.config["seeds"], merged.config["seed"]) == (3, "0..2", 0)
    assert merged.requests == runs[0].requests
    row = result_row(merged)
    assert row[ci_column("wall_s")] == merged.ci95["wall_s"] and row["wall_s"] == merged.wall_s
    assert set(row) >= {ci_column(c) for c, v in rows[0].items() if not isinstance(v, str)}
    contiguous = result_row(aggregate_seeds([build_result(make_run("contiguous-max", seed=i)) for i in range(2)]))
    assert contiguous["prefix_hit_pct_ci95"] is None and contiguous["num_cow_copies_ci95"] is None  # paged only


def test_ratio_is_taken_per_seed_then_summarised():
    """Seed 1 is twice as slow for both backends: the per-seed ratio stays 2, the ratio of means does too here,
    but its interval is 0 where the two means' intervals are wide."""
    runs = [[build_result(make_run("paged", wall_s=w)), build_result(make_run("contiguous-max", wall_s=2 * w))]
            for w in (2.0, 4.0, 3.0)]
    done = Repeated([aggregate_seeds([run[i] for run in runs]) for i in range(2)], runs=runs, seeds=(0, 1, 2))
    paired = done.ratio("paged", "contiguous-max")
    assert (paired.mean, paired.ci95, paired.n) == (pytest.approx(2.0), pytest.approx(0.0), 3)
    assert done.results[0].ci95["output_tok_per_s"] > 0.1 * done.results[0].output_tok_s
    assert done.ratio("paged", "contiguous-oracle") is None


def test_run_table_and_summary_show_mean_and_interval():
    from rich.console import Console

    from pabench.report.tables import run_table, summary_line

    runs = [[build_result(make_run("paged", wall_s=w, shift=s)),
             build_result(make_run("contiguous-max", wall_s=w * f, shift=60))]
            for w, f, s in ((2.0, 2.0, 0), (4.0, 2.2, 10), (3.0, 1.8, 20))]
    done = Repeated([aggregate_seeds([run[i] for run in runs]) for i in range(2)], runs=runs, seeds=(5, 6, 7))
    console = Console(width=200, record=True)
    console.print(run_table(done.results))
    text = console.export_text()
    paged = done.results[0]
    assert f"{paged.output_tok_s:,.1f} ± {paged.ci95['output_tok_per_s']:,.1f}" in text
    assert f"{paged.mean_waste_pct:,.1f} ± {paged.ci95['mean_waste_pct']:,.1f}" in text
    paired = done.ratio("paged", "contiguous-max")
    line = summary_line(done.results, done)
    assert f"served {paired.mean:.2f}× ± {paired.ci95:.2f} the output tokens/s of contiguous-max" in line
    assert "over seeds 5..7; each ratio taken per seed" in line and "within noise" not in line
    even = [[build_result(make_run("paged", wall_s=w)), build_result(make_run("contiguous-max", wall_s=w * f))]
            for w, f in ((2.0, 0.9), (2.0, 1.1))]
    noisy = Repeated([aggregate_seeds([run[i] for run in even]) for i in range(2)], runs=even, seeds=(0, 1))
    assert "contiguous-max: within noise" in summary_line(noisy.results, noisy)
    assert "±" not in summary_line(runs[0])  # one run: no interval


def test_check_timing_allows_for_the_intervals(tmp_path):
    """A timing metric within the two seeds-means' combined interval is noise; beyond it a regression. A
    deterministic one over the same seeds is held exactly even though it has an interval."""
    import pandas as pd

    from pabench.report.compare import check_regressions
    from pabench.report.export import results_frame

    seeds = [build_result(make_run(wall_s=w, seed=i)) for i, w in enumerate((4.0, 5.0, 6.0))]
    base = results_frame([aggregate_seeds(seeds)])
    ci = float(base.loc[0, "output_tok_per_s_ci95"])
    rel = math.sqrt(2) * ci / float(base.loc[0, "output_tok_per_s"])  # both sides' interval, combined
    for factor, bad in ((1 - rel * 0.9, False), (1 - rel * 1.1, True)):
        now = base.copy()
        now["output_tok_per_s"] = base["output_tok_per_s"] * factor
        regressions, _ = check_regressions(now, base, 0.01, ("output_tok_per_s",))
        assert bool(regressions) == bad, factor
    worse = base.copy()
    worse["mean_waste_pct"] = base["mean_waste_pct"] + 1e-3
    assert check_regressions(worse, base, 0.5)[0]  # its ci95 does not widen a deterministic metric
    other = base.assign(seeds="3..5")  # a mean over other seeds is another run
    with pytest.raises(Exception, match="seeds"):
        check_regressions(other, base, 0.5)
    assert isinstance(base, pd.DataFrame)
