"""vLLM's random-dataset flags over a preset (`--input-len`, `--output-len`, `--range-ratio`, `--request-rate`,
`--burstiness`, `--num-prompts`): vLLM's meanings, what they override, and one-line errors."""

import json
import math

import pytest
from typer.testing import CliRunner

from pabench.bench.presets import load_workload
from pabench.bench.workloads import LengthDist, generate
from pabench.cli import app
from pabench.cli.traffic import TrafficFlags
from pabench.errors import ConfigError

runner = CliRunner()


def test_lengths_are_vllm_s_random_dataset_and_only_the_named_side_changes():
    spec = TrafficFlags(input_len=100, range_ratio=0.25).apply(load_workload("sharegpt-like"))
    assert spec.prompt == LengthDist("uniform", 100.0, range_ratio=0.25)  # [75, 125], both ends included
    assert spec.output == LengthDist("uniform", 340.0, range_ratio=0.25)  # the ratio alone: uniform around its mean
    lens = [r.num_prompt_tokens for r in generate(spec, vocab_size=50, max_model_len=4096, num_requests=400)]
    assert min(lens) == 75 and max(lens) == 125
    exact = TrafficFlags(output_len=7).apply(load_workload("default"))
    assert exact.output.lower == exact.output.upper == 7 and exact.prompt == load_workload("default").prompt
    assert exact.name == "default+out7" and exact.max_request_len == 96 + 7


def test_request_rate_inf_is_all_at_once_and_a_number_is_gamma_gaps_with_the_burstiness():
    burst = TrafficFlags(request_rate=math.inf).apply(load_workload("poisson"))
    assert burst.arrival == "burst" and burst.rate is None and burst.name == "poisson+rateinf"
    spec = TrafficFlags(request_rate=50, burstiness=0.5).apply(load_workload("default"))
    assert (spec.arrival, spec.rate, spec.burstiness) == ("poisson", 50, 0.5)
    arrivals = [r.arrival_s for r in generate(spec, vocab_size=50, max_model_len=1024, num_requests=2000)]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    mean = sum(gaps) / len(gaps)
    cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
    assert mean == pytest.approx(1 / 50, rel=0.1) and cv == pytest.approx(math.sqrt(2), rel=0.1)  # gamma shape 0.5
    assert TrafficFlags(burstiness=2).apply(load_workload("poisson")).rate == 8.0  # the preset's own Poisson rate
    trace = TrafficFlags(request_rate=10).apply(load_workload("trace-bursty"))
    assert trace.trace.rate == 10  # a trace's times, rescaled


@pytest.mark.parametrize("flags, workload, message", [
    (dict(input_len=0), "default", "--input-len must be >= 1 token, got 0"),
    (dict(range_ratio=1.0), "default", "--range-ratio must be in [0, 1)"),
    (dict(request_rate=0.0), "default", "--request-rate must be > 0 requests/s (inf: every request at t=0)"),
    (dict(request_rate=math.nan), "default", "--request-rate must be > 0"),
    (dict(burstiness=-1.0), "default", "--burstiness must be a number > 0"),
    (dict(burstiness=0.5), "default", "--burstiness shapes the gaps between Poisson arrivals"),
    (dict(burstiness=0.5, request_rate=math.inf), "poisson", "--burstiness shapes the gaps"),
    (dict(input_len=8), "trace-bursty", "--input-len: not used with a trace workload"),
    (dict(request_rate=math.inf), "trace-bursty", "--request-rate inf: a trace replays its own arrival times"),
])
def test_bad_flags_are_one_config_error(flags, workload, message):
    with pytest.raises(ConfigError) as caught:
        TrafficFlags(**flags).apply(load_workload(workload))
    assert message in str(caught.value)


def test_burstiness_on_a_burst_preset_is_fine_when_the_sweep_sets_rates():
    assert TrafficFlags(burstiness=0.5).apply(load_workload("default"), rates_swept=True).burstiness == 0.5


def test_run_with_the_flags_and_no_toml_file(tmp_path):
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["run", "--num-prompts", "5", "--input-len", "16", "--output-len", "4",
                              "--range-ratio", "0.5", "--request-rate", "inf", "--backend", "paged",
                              "--json", str(out), "--no-progress"])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert "workload default+in16+out4+rr0.5+rateinf: 5 requests" in res.stdout
    row = json.loads(out.read_text())["rows"][0]
    contract = row["comparability"]
    assert contract["input_len"]["min"] == 8 and contract["input_len"]["max"] == 24
    assert contract["output_len"]["min"] == 2 and contract["output_len"]["max"] == 6
    assert contract["request_rate"] == "inf" and row["num_requests"] == 5

def test_run_refuses_a_bad_flag_in_one_line():
    res = runner.invoke(app, ["run", "--burstiness", "0.5", "--no-progress"])
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr.startswith("pabench: error: --burstiness shapes the gaps") and res.stderr.count("\n") == 1
