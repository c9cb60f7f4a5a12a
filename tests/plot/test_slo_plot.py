"""`pabench plot` of a `sweep --slo` export: the max-sustainable-rate-vs-budget panel, by `sweep --slo`'s rule."""

import math
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from pabench.plot.figure import choose_panels, plot_results  # noqa: E402
from pabench.plot.panels import max_met_rate  # noqa: E402

SWEEP_CSV = Path(__file__).parents[1] / "fixtures" / "sweep_grid.csv"


@pytest.mark.parametrize("rates_met, expected", [
    ({1.0: True, 4.0: True, 8.0: False, 2.5: True}, 4.0),
    ({1.0: True, 4.0: False, 8.0: True}, 1.0),  # a pass above the first miss is not trusted
    ({1.0: True, 4.0: True}, 4.0),
    ({1.0: False}, math.nan),
])
def test_max_met_rate_follows_the_search_rule(rates_met, expected):
    got = max_met_rate(rates_met)
    assert got == expected or (math.isnan(expected) and math.isnan(got))


def test_slo_export_gets_the_panel(tmp_path):
    frame = pd.read_csv(SWEEP_CSV)
    assert "slo_rate_vs_budget" not in choose_panels(frame)  # a sweep without --slo
    slo = frame.assign(slo="ttft_p99_ms<=1000", slo_met=frame["ttft_p99_ms"] <= 1000)
    path, panels = plot_results(slo, tmp_path / "slo.png")
    assert "slo_rate_vs_budget" in panels
    assert path.stat().st_size > 10_000
