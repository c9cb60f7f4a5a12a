"""Goodput against the hand-computed fixture requests (fixtures/runs.py), bounds met with equality, one-token
outputs (TPOT 0, as vLLM), several samples judged by the worst; the option parsers; the extra percentile columns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fixtures.runs import make_run
from pabench.bench.goodput import GoodputSpec, count_good, request_latencies
from pabench.bench.metrics import LatencyView, build_result, metric_row, percentile_column, percentile_ms
from pabench.bench.repeat import aggregate
from pabench.engine.records import RequestRecord
from pabench.errors import ConfigError

# The fixture's requests, per request (s): TTFT 1.0 / 1.5 / 1.5, TPOT 2/3 / 0.5 (both samples) / 0 (one token),
# E2E 3.0 / 3.0 / 1.5; 3 requests in a 4 s run.


@pytest.mark.parametrize("spec, good", [
    ("ttft:1500", 3),  # requests 1 and 2 sit exactly on the bound: <= is good
    ("ttft:1499.9", 1),
    ("tpot:0", 1),  # only the one-token request (TPOT 0)
    ("tpot:500", 2),  # request 1's samples at exactly 0.5 s, and the one-token request
    ("tpot:666", 2),
    ("e2el:3000", 3),
    ("e2el:2999", 1),
    ("ttft:1000,e2el:3000", 1),  # every named metric must hold
    ("e2el:3000,ttft:1000,tpot:700", 1),
    ("ttft:0", 0),
])
def test_goodput_counts_hand_computed_requests(spec, good):
    result = build_result(make_run("paged"), GoodputSpec.from_text(spec))
    assert count_good(GoodputSpec.from_text(spec), make_run().requests) == good
    assert result.request_goodput == pytest.approx(good / 4.0)  # per second of wall_s, as req_s
    assert result.slo_attainment_pct == pytest.approx(100.0 * good / 3)
    row = metric_row(result)
    assert (row["request_goodput"], row["slo_attainment_pct"]) == (result.request_goodput, result.slo_attainment_pct)


def test_latencies_of_one_request_as_vllm_defines_them():
    r0, r1, r2 = make_run().requests
    assert request_latencies(r0) == pytest.approx({"ttft": 1.0, "tpot": 2 / 3, "e2el": 3.0})
    assert request_latencies(r1) == {"ttft": 1.5, "tpot": 0.5, "e2el": 3.0}
    assert request_latencies(r2) == {"ttft": 1.5, "tpot": 0.0, "e2el": 1.5}


def test_several_samples_are_judged_by_their_worst_tpot():
    request = RequestRecord(request_id=0, arrival_s=0.0, first_token_s=0.0, finish_s=1.0, num_prompt_tokens=4,
                            num_output_tokens=5, num_samples=2, token_times_s=((0.0, 1.0), (0.0, 0.25, 0.5)))
    assert request_latencies(request)["tpot"] == 1.0  # not the samples' mean (0.625)
    assert not GoodputSpec.from_text("tpot:999").is_good(request)
    assert GoodputSpec.from_text("tpot:1000").is_good(request)


def test_without_goodput_the_columns_are_absent():
    result = build_result(make_run())
    assert result.goodput is None and math.isnan(result.request_goodput)
    assert not {"request_goodput", "slo_attainment_pct"} & set(metric_row(result))


def test_spec_text_round_trips():
    spec = GoodputSpec.from_text(" TTFT:500 , tpot:50.5,e2el:0")
    assert spec.as_dict() == {"ttft": 500.0, "tpot": 50.5, "e2el": 0.0}
    assert spec.text() == "ttft:500,tpot:50.5,e2el:0" and GoodputSpec.from_text(spec.text()) == spec


@pytest.mark.parametrize("text, message", [
    ("ttft:abc", "'ttft:abc' is not METRIC:MS"),
    ("ttft", "'ttft' is not METRIC:MS"),
    ("ttft:5,", "'' is not METRIC:MS"),
    ("itl:5", "unknown metric 'itl'"),
    ("ttft:-1", "ttft:-1 must be a finite number of ms >= 0"),
    ("ttft:inf", "must be a finite number"),
    ("ttft:nan", "must be a finite number"),
    ("ttft:5,ttft:6", "ttft is given twice"),
])
def test_bad_specs_are_one_clear_error(text, message):
    with pytest.raises(ConfigError, match=f"^--goodput: .*{message}"):
        GoodputSpec.from_text(text)


def test_latency_view_defaults_follow_vllm():
    assert LatencyView.from_options(None, None) is None  # pabench's own table
    assert LatencyView.from_options("e2el,ttft", None) == LatencyView(("e2el", "ttft"), (99.0,))
    view = LatencyView.from_options(None, "50,90,99.9")
    assert view.metrics == ("ttft", "tpot", "itl") and view.extra_percentiles == (99.9,)


@pytest.mark.parametrize("metrics, percentiles, message", [
    ("ttft,foo", None, "--percentile-metrics: unknown metric 'foo'"),
    ("ttft,ttft", None, "--percentile-metrics: a value is listed twice"),
    (None, "0", "--metric-percentiles: 0 is not a percentile"),
    (None, "100.5", "--metric-percentiles: 100.5 is not a percentile"),
    (None, "50,x", "--metric-percentiles: expected comma-separated numbers"),
    (None, "99,99", "--metric-percentiles: a value is listed twice"),
])
def test_bad_percentile_options(metrics, percentiles, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        LatencyView.from_options(metrics, percentiles)


def test_extra_percentiles_are_columns_beside_the_fixed_ones():
    result = build_result(make_run(), percentiles=(50.0, 95.0, 99.9))
    row = metric_row(result)
    extra = {c for c in row if c.endswith("_ms") and ("_p95_" in c or "_p99.9_" in c)}
    assert extra == {f"{m}_p{p}_ms" for m in ("ttft", "tpot", "itl", "e2e") for p in ("95", "99.9")}
    assert "ttft_p50_ms" in row and percentile_column("e2el", 95) == "e2e_p95_ms"
    assert row["ttft_p95_ms"] == pytest.approx(np.percentile([1.0, 1.5, 1.5], 95) * 1e3)
    assert row["e2e_p99.9_ms"] == pytest.approx(np.percentile([3.0, 3.0, 1.5], 99.9) * 1e3)
    assert percentile_ms(result, "e2el", 50) == row["e2e_p50_ms"] and percentile_ms(result, "ttft", 95) == \
        row["ttft_p95_ms"]
    assert not any("_p95_" in c for c in metric_row(build_result(make_run())))


def test_repeats_take_the_median_goodput_and_do_not_flag_it_as_irreproducible():
    spec = GoodputSpec.from_text("ttft:1500")
    runs = [build_result(make_run(wall_s=w), spec, (95.0,)) for w in (2.0, 4.0, 8.0)]
    merged, varied = aggregate(runs)
    assert merged.request_goodput == pytest.approx(3 / 4.0) and merged.goodput == spec
    assert merged.extra_percentiles_ms == runs[0].extra_percentiles_ms  # same requests: same percentiles
    assert "request_goodput" not in varied and "request_goodput_spread_pct" not in merged.config
