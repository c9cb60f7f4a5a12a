"""`pabench plot`: panels chosen from the data, a PNG of the expected size, atomic writes, friendly errors."""

import datetime
import shutil
import struct
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pabench.cli import app

pytest.importorskip("matplotlib")

from pabench.plot.figure import choose_panels, figure_size_px, figure_title, plot_results  # noqa: E402
from pabench.plot.panels import PANELS  # noqa: E402

runner = CliRunner()
FIXTURES = Path(__file__).parents[1] / "fixtures"
SWEEP_CSV = FIXTURES / "sweep_grid.csv"  # real `pabench sweep` output: 2 page sizes x 2 budgets x 2 rates
KERNELS_CSV = FIXTURES / "sweep_kernels.csv"  # `pabench kernels` columns: case, impl, page_size, median_us, ...
RUN_CSV = FIXTURES / "results_baseline.csv"  # a single `pabench run` export (no sweep columns)
SWEEP_PANELS = ["throughput_vs_budget", "waste", "ttft_vs_rate", "tpot_vs_rate", "waste_vs_page_size",
                "time_vs_page_size"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_sweep_csv_gets_every_panel_and_the_expected_pixel_size(tmp_path):
    path, panels = plot_results(pd.read_csv(SWEEP_CSV), tmp_path / "sweep.png")
    assert panels == SWEEP_PANELS
    assert path.stat().st_size > 10_000
    assert png_size(path) == figure_size_px(6) == (1280, 1310)
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.png"]  # atomic: no temporary file left behind


def test_single_run_csv_gets_bar_panels(tmp_path):
    path, panels = plot_results(pd.read_csv(RUN_CSV), tmp_path / "run.png")
    assert panels == ["throughput", "waste", "latency"]
    assert png_size(path) == figure_size_px(3)


def test_panels_follow_what_varies():
    frame = pd.read_csv(SWEEP_CSV)
    one_budget_one_rate = frame[(frame["sweep_kv_budget_bytes"] == frame["sweep_kv_budget_bytes"].min())
                                & (frame["sweep_rate"] == frame["sweep_rate"].min())]
    assert len(one_budget_one_rate) == 3
    assert choose_panels(one_budget_one_rate) == ["throughput", "waste", "latency", "waste_vs_page_size",
                                                  "time_vs_page_size"]
    one_page_size = frame[frame["sweep_page_size"].isna() | (frame["sweep_page_size"] == 16)]
    assert choose_panels(one_page_size) == ["throughput_vs_budget", "waste", "ttft_vs_rate", "tpot_vs_rate"]
    kernels = pd.read_csv(KERNELS_CSV)
    assert choose_panels(pd.read_csv(RUN_CSV), kernels)[-1] == "time_vs_page_size"
    batch_sweep = one_budget_one_rate.assign(sweep_max_num_seqs=[4, 8, 16])
    assert "throughput_vs_max_num_seqs" in choose_panels(batch_sweep)


def test_every_panel_choose_panels_names_has_a_drawing():
    frame, kernels = pd.read_csv(SWEEP_CSV), pd.read_csv(KERNELS_CSV)
    one_point = frame[(frame["sweep_kv_budget_bytes"] == frame["sweep_kv_budget_bytes"].min())
                      & (frame["sweep_rate"] == frame["sweep_rate"].min())]
    chosen = set(choose_panels(frame, kernels)) | set(choose_panels(pd.read_csv(RUN_CSV), kernels))
    chosen |= set(choose_panels(one_point.assign(sweep_max_num_seqs=[4, 8, 16])))
    chosen |= set(choose_panels(frame.assign(slo="ttft_p99_ms<=5", slo_met=frame["ttft_p99_ms"] <= 5)))  # sweep --slo
    assert chosen == set(PANELS)  # every panel reachable, none without a drawing function


def test_kernels_csv_adds_kernel_lines(tmp_path):
    frame, kernels = pd.read_csv(RUN_CSV), pd.read_csv(KERNELS_CSV)
    path, panels = plot_results(frame, tmp_path / "k.png", kernels)
    assert panels == ["throughput", "waste", "latency", "time_vs_page_size"]
    assert png_size(path) == figure_size_px(4)


def test_title_names_workload_model_device_and_date():
    frame = pd.read_csv(SWEEP_CSV)
    title = figure_title(frame, today=datetime.date(2024, 5, 17))
    assert "workload default" in title and "model tiny" in title and "cpu" in title and "2024-05-17" in title
    assert "1999-12-31" in figure_title(frame.assign(date="1999-12-31"))


def test_cli_plot_default_output_next_to_the_csv(tmp_path):
    csv = tmp_path / "my_sweep.csv"
    shutil.copy(SWEEP_CSV, csv)
    res = runner.invoke(app, ["plot", str(csv), "--kernels", str(KERNELS_CSV)])
    assert res.exit_code == 0, res.output
    png = tmp_path / "my_sweep.png"
    assert png.exists() and png_size(png) == figure_size_px(6)
    assert "wrote" in res.stdout and "time_vs_page_size" in res.stdout


def test_cli_plot_concatenates_several_csvs(tmp_path):
    """Two halves of a budget sweep (e.g. two GPU calls) plot as one: the budget panel sees every budget."""
    frame = pd.read_csv(SWEEP_CSV)
    budgets = sorted(frame["sweep_kv_budget_bytes"].dropna().unique())
    assert len(budgets) >= 2
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    frame[frame["sweep_kv_budget_bytes"] == budgets[0]].to_csv(first, index=False)
    frame[frame["sweep_kv_budget_bytes"] != budgets[0]].to_csv(second, index=False)
    res = runner.invoke(app, ["plot", str(first), str(second), "-o", str(tmp_path / "both.png")])
    assert res.exit_code == 0, res.output
    whole = runner.invoke(app, ["plot", str(SWEEP_CSV), "-o", str(tmp_path / "whole.png")])
    assert whole.exit_code == 0, whole.output
    assert res.stdout.split("(")[1] == whole.stdout.split("(")[1]  # the same panels
    assert png_size(tmp_path / "both.png") == png_size(tmp_path / "whole.png")


def test_cli_plot_errors_are_one_line_exit_1(tmp_path, monkeypatch):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    res = runner.invoke(app, ["plot", str(bad), "-o", str(tmp_path / "bad.png")])
    assert res.exit_code == 1 and "not a pabench export" in res.output
    res = runner.invoke(app, ["plot", str(tmp_path / "missing.csv")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    res = runner.invoke(app, ["plot", str(SWEEP_CSV), "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 1
    assert "matplotlib is not installed: pip install 'pabench[plot]'" in res.output
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "bad.png").exists()


def test_bar_panels_use_the_points_every_backend_ran_at():
    """Runs at several budgets where one backend ran at only some: bars compare like with like and say where."""
    from pabench.plot.series import series_labels, shared_points

    gib = 2**30
    frame = pd.DataFrame({"backend": ["paged", "contiguous-max", "paged", "paged", "contiguous-max"],
                          "kv_budget_bytes": [gib, gib, 2 * gib, 16 * gib, 16 * gib],
                          "output_tok_per_s": [10.0, 2.0, 20.0, 90.0, 40.0]})
    rows, label, note = shared_points(frame, series_labels(frame, True))
    assert sorted(rows["kv_budget_bytes"]) == [gib, gib, 16 * gib, 16 * gib] and note == "mean over 1 GiB, 16 GiB"
    assert rows[label == "paged"]["output_tok_per_s"].mean() == 50.0  # not 40.0, its mean over all three budgets
    at_one, _, note = shared_points(frame.iloc[[0, 1, 2]], series_labels(frame.iloc[[0, 1, 2]], True))
    assert len(at_one) == 2 and note == "at 1 GiB"
    apart = frame.iloc[[2, 4]]  # paged only at 2 GiB, max only at 16 GiB
    rows, _, note = shared_points(apart, series_labels(apart, True))
    assert len(rows) == 2 and note.startswith("mean over all runs")
    single = pd.read_csv(RUN_CSV)
    assert shared_points(single, series_labels(single, True))[2] == ""  # one run: nothing varies, no note
    grid = pd.read_csv(SWEEP_CSV)  # every backend at every point of a 2 x 2 grid: all rows, axes named
    rows, _, note = shared_points(grid, series_labels(grid, True))
    assert len(rows) == len(grid) and note == "mean over 2 KV budgets x 2 rates"


def test_a_kv_dtype_sweep_draws_each_dtype_as_its_own_series():
    from pabench.plot.series import series_labels

    frame = pd.DataFrame({"backend": ["paged", "paged", "contiguous-oracle", "contiguous-oracle"],
                          "sweep_kv_dtype": ["auto", "fp8", "auto", "fp8"], "page_size": [16, 16, None, None]})
    assert list(series_labels(frame, True)) == ["paged auto", "paged fp8", "contiguous-oracle auto",
                                                "contiguous-oracle fp8"]
    assert list(series_labels(frame[frame["sweep_kv_dtype"] == "fp8"], True)) == ["paged", "contiguous-oracle"]


def test_a_current_export_plots_without_pandas_warnings(tmp_path):
    """A real sweep export of today's schema (s15-5, ~150 columns) read back and plotted: the frame must not come out
    of read_results fragmented (pandas' PerformanceWarning on every panel that adds a column)."""
    import warnings

    from pabench.report.export import read_results

    export = Path(__file__).parents[2] / "results" / "gpu" / "e2e" / "s15-5-equal4-levers-h200" / "levers_32l.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        path, panels = plot_results(read_results(export), tmp_path / "levers.png")
    assert path.exists() and "throughput_vs_budget" in panels
