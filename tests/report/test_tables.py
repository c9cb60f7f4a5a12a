"""The terminal report: the closing summary names every baseline paged lost to, the prefix-caching line, and
tables that stay whole at 80 columns (no cell cut to `2,98…`, no backend to `contiguous-m…`)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from fixtures.runs import BACKENDS, BASELINE_CSV, make_run, make_runs
from pabench.bench.metrics import build_result
from pabench.report.kernels import kernel_table
from pabench.report.compare import check_regressions, compare_table
from pabench.report.export import read_results
from pabench.report.tables import prefix_line, run_table, summary_line, sweep_table

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ROOT = Path(__file__).resolve().parents[2]


def render(renderable, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def assert_whole(text: str, width: int, names=BACKENDS) -> None:
    assert "…" not in text, text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    for name in names:
        assert name in text, name


# ---- summary -------------------------------------------------------------------------------------------------

def test_summary_marks_every_baseline_paged_lost_to():
    walls = {"paged": 4.0, "contiguous-max": 8.0, "contiguous-pow2": 2.0, "contiguous-oracle": 3.0}
    results = [build_result(make_run(b, wall_s=walls[b])) for b in BACKENDS]
    line = summary_line(results)
    assert line.startswith("paged served 2.00× the output tokens/s of contiguous-max (and ")
    assert "0.50× contiguous-pow2: slower, 0.75× contiguous-oracle: slower)" in line
    first_lost = [build_result(make_run("paged", wall_s=8.0)), build_result(make_run("contiguous-max", wall_s=4.0)),
                  build_result(make_run("contiguous-oracle", wall_s=16.0))]
    assert "0.50× the output tokens/s of contiguous-max: slower (and 2.00× contiguous-oracle)" in \
        summary_line(first_lost)
    assert "slower" not in summary_line([build_result(r) for r in make_runs()])  # paged fastest: nothing lost


def test_prefix_line_when_both_prefix_backends_ran():
    on = build_result(make_run("paged+prefix", wall_s=2.0))
    off = build_result(make_run("paged-noprefix", wall_s=3.0))
    line = prefix_line([on, off, build_result(make_run("contiguous-max"))])
    assert line == ("prefix caching: paged+prefix served 1.50× the output tokens/s of paged-noprefix, with 25.0% of "
                    "prompt tokens from the cache and 100 B saved by sharing at peak (vs 100 B).")
    assert summary_line([on, off, build_result(make_run("contiguous-max"))]).endswith("\n" + line)
    assert "(slower)" in prefix_line([build_result(make_run("paged+prefix", wall_s=6.0)), off])
    assert prefix_line([on]) is None and "prefix caching" not in summary_line([on, off][:1])


# ---- width -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results():
    walls = {"paged": 0.001, "contiguous-max": 8.0, "contiguous-pow2": 6.0, "contiguous-oracle": 5.0}
    return [build_result(make_run(b, wall_s=walls[b])) for b in BACKENDS]  # paged: 11,000 tok/s, a wide number


@pytest.mark.parametrize("width", [80, 60, 40, 30])
def test_run_table_never_cuts_a_cell(results, width):
    text = render(run_table(results), width)
    assert_whole(text, width)
    assert "11,000.0" in text and "n/a" in text  # paged's throughput whole; contiguous has no prefix hit rate
    for header in ("out tok/s", "TTFT p99", "E2E p50", "wall", "waste %", "saved by sharing", "prefix hit %"):
        assert header in text, header  # nothing dropped: the columns move to a second table, or rows stack


def test_run_table_is_one_table_each_when_wide(results):
    wide = render(run_table(results), 140)
    assert "(1/2)" not in wide and wide.count("backend") == 2
    narrow = render(run_table(results, width=80), 140)  # a fixed width wins over the console's
    assert "serving (1/2)" in narrow and "serving (2/2)" in narrow


def test_sweep_table_at_80_columns():
    frame = read_results(FIXTURES / "sweep_grid.csv")
    text = render(sweep_table(frame), 80)
    assert_whole(text, 80, names=("paged", "contiguous-max"))
    assert "1,787.0" in text and "371.09" in text and "2 MiB" in text


def test_compare_table_at_80_columns():
    base = read_results(BASELINE_CSV)
    slower = base.assign(output_tok_per_s=base["output_tok_per_s"] * 0.9)
    assert_whole(render(compare_table(base, slower), 80), 80)


def test_check_table_at_80_columns():
    base = read_results(BASELINE_CSV)
    assert_whole(render(check_regressions(base, base, 0.10)[1], 80), 80)


def test_kernel_table_at_80_columns():
    frame = pd.read_csv(ROOT / "results" / "gpu" / "kernels" / "kernels.csv").head(8)
    rows = [{k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
            for row in frame.to_dict("records")]
    assert_whole(render(kernel_table(rows), 80), 80, names=("triton-paged",))
