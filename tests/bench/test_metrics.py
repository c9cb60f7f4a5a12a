"""Stats against numpy, and build_result on a hand-made run whose answers are worked out in fixtures/runs.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fixtures.runs import make_run
from pabench.engine.records import RunRecord
from pabench.bench.metrics import PERCENTILES, Stats, build_result, is_missing, metric_row


def test_stats_known_samples():
    st = Stats.from_samples([1, 2, 3, 4])
    assert (st.mean, st.p50, st.min, st.max, st.count) == (2.5, 2.5, 1.0, 4.0, 4)
    assert st.std == pytest.approx(math.sqrt(1.25))
    assert st.p90 == pytest.approx(3.7) and st.p99 == pytest.approx(3.97)


@pytest.mark.parametrize("seed, size", [(0, 1), (1, 7), (2, 1000)])
def test_stats_match_numpy(seed, size):
    samples = np.random.default_rng(seed).lognormal(0, 1, size)  # [size]
    st = Stats.from_samples(samples.tolist())
    assert PERCENTILES == (50, 90, 99)
    assert [st.p50, st.p90, st.p99] == pytest.approx(np.percentile(samples, PERCENTILES).tolist())
    assert st.mean == pytest.approx(samples.mean()) and st.std == pytest.approx(samples.std())
    assert (st.min, st.max, st.count) == (samples.min(), samples.max(), size)


def test_stats_empty_is_nan_not_an_error():
    st = Stats.from_samples([])
    assert st.count == 0 and all(math.isnan(v) for v in (st.mean, st.std, st.p50, st.p90, st.p99, st.min, st.max))
    assert is_missing(st.mean) and not is_missing(0.0)


def test_stats_as_dict_names_and_scale():
    flat = Stats.from_samples([0.001, 0.003]).as_dict("ttft", "ms", 1e3)
    assert list(flat) == ["ttft_mean_ms", "ttft_std_ms", "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "ttft_min_ms",
                          "ttft_max_ms", "ttft_count"]
    assert flat["ttft_mean_ms"] == pytest.approx(2.0) and flat["ttft_count"] == 2
    assert "concurrency_mean" in Stats.from_samples([1]).as_dict("concurrency")


def test_build_result_known_answers():
    r = build_result(make_run("paged"))
    # throughput: 11 output tokens, 35 prompt tokens, 3 requests in 4 s
    assert (r.output_tok_s, r.total_tok_s, r.req_s) == (2.75, 11.5, 0.75)
    assert (r.num_output_tokens, r.num_prompt_tokens, r.num_requests, r.num_steps) == (11, 35, 3, 5)
    # latency
    assert r.ttft_s == Stats.from_samples([1.0, 1.5, 1.5])
    assert r.e2e_s == Stats.from_samples([3.0, 3.0, 1.5])
    assert r.tpot_s.count == 3 and r.tpot_s.mean == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)
    assert r.itl_s.count == 7 and sorted([r.itl_s.min, r.itl_s.max]) == [0.25, 1.0]
    assert r.itl_s.mean == pytest.approx((0.5 + 0.5 + 1.0 + 0.5 + 0.25 + 0.25 + 1.0) / 7)
    # scheduling: running after the three decode steps
    assert r.concurrency == Stats.from_samples([3, 2, 1]) and r.peak_concurrency == 3
    assert (r.num_preemptions, r.prefix_hit_rate, r.num_cow_copies) == (1, 0.25, 3)
    # memory: working steps only; waste skips the step with nothing reserved
    assert (r.kv_budget_bytes, r.peak_reserved_bytes, r.peak_saved_bytes) == (1000, 500, 100)
    assert r.mean_waste_pct == pytest.approx((25 + 10 + 50) / 3)
    assert r.mean_slack_pct == pytest.approx((10 + 5 + 10 + 0) / 4)
    assert r.mean_idle_pct == pytest.approx((60 + 50 + 80 + 100) / 4)
    assert r.mean_used_pct == pytest.approx((30 + 45 + 10 + 0) / 4)
    assert r.mean_saved_bytes == pytest.approx(37.5)
    # host overhead over decode steps
    assert r.host_frac == pytest.approx(0.4 / 1.2)
    assert r.decode_step_s == Stats.from_samples([0.5, 0.5, 0.2])
    assert r.wall_s == 4.0 and r.capacity["num_pages"] == 4 and len(r.requests) == 3 and len(r.steps) == 5


def test_more_slack_means_more_waste_and_slower_means_less_throughput():
    fast, slow = build_result(make_run("a")), build_result(make_run("b", wall_s=8.0, shift=50))
    assert slow.output_tok_s == fast.output_tok_s / 2
    assert slow.mean_waste_pct == pytest.approx((150 / 400 + 100 / 500 + 150 / 200) * 100 / 3)
    assert slow.mean_used_pct + slow.mean_slack_pct == pytest.approx(fast.mean_used_pct + fast.mean_slack_pct)


def test_empty_run_gives_nan_not_an_error():
    r = build_result(RunRecord(backend="paged", config={"kv_budget_bytes": 64}))
    assert math.isnan(r.output_tok_s) and math.isnan(r.host_frac) and math.isnan(r.mean_waste_pct)
    assert r.ttft_s.count == 0 and r.peak_concurrency == 0 and r.kv_budget_bytes == 64


def test_metric_row_units_in_names():
    row = metric_row(build_result(make_run()))
    for name in ("output_tok_per_s", "ttft_p99_ms", "tpot_p50_ms", "itl_mean_ms", "e2e_p50_ms", "mean_waste_pct",
                 "peak_reserved_bytes", "host_pct", "decode_step_p50_ms", "prefix_hit_pct", "wall_s"):
        assert name in row
    assert row["ttft_p50_ms"] == pytest.approx(1500.0) and row["prefix_hit_pct"] == 25.0
    assert row["host_pct"] == pytest.approx(100 / 3)


def test_host_over_device_overall_and_at_the_largest_batches():
    """The issue's question is host overhead at a full batch; the peak-batch ratio answers it from one run."""
    from pabench.core.memory import MemorySnapshot
    from pabench.engine.records import StepSample

    mem = MemorySnapshot(budget_bytes=1, reserved_bytes=0, used_bytes=0, slack_bytes=0, idle_bytes=1, saved_bytes=0,
                         largest_free_extent_bytes=1, num_seqs=0)
    steps = [StepSample(time_s=float(i), kind="decode", num_seqs=n, num_tokens=n, num_running=n, num_waiting=0,
                        host_s=h, step_s=h + d, memory=mem, device_s=d)
             for i, (n, h, d) in enumerate([(10, 0.001, 0.004), (256, 0.002, 0.010), (240, 0.002, 0.010)])]
    r = build_result(RunRecord(backend="paged", config={}, steps=steps))
    assert r.host_over_device == pytest.approx(0.005 / 0.024)
    assert r.host_over_device_peak == pytest.approx(0.004 / 0.020)  # batches >= 0.9 * 256 only
    row = metric_row(r)
    assert row["host_over_device_peak_batch_pct"] == pytest.approx(20.0)
    cpu = build_result(RunRecord(backend="paged", config={}, steps=[
        StepSample(0.0, "decode", 4, 4, 4, 0, 0.001, 0.002, mem)]))
    assert math.isnan(cpu.host_over_device_peak)  # no device timings on the CPU
