"""Ramp-up arrivals (`ramp = "linear"|"exponential"`, vLLM's ramp-up strategies): request i's gap is drawn at the
rate reached at progress i / (n - 1); a ramp replaces `rate`, and every misuse is one line naming the key."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from pabench.bench.presets import parse_workload
from pabench.bench.workloads import LengthDist, WorkloadSpec, generate, with_rate
from pabench.cli import app
from pabench.errors import ConfigError

BASE = WorkloadSpec(name="r", description="r", num_requests=11, arrival="poisson", prompt=LengthDist("fixed", 4),
                    output=LengthDist("fixed", 2), ramp="linear", ramp_start_rate=10.0, ramp_end_rate=110.0,
                    burstiness=1e9)  # a huge gamma shape: every gap is its mean, 1 / rate


@pytest.mark.parametrize("ramp, expected", [
    ("linear", 10.0 + 100.0 * np.arange(11) / 10),
    ("exponential", 10.0 * 11.0 ** (np.arange(11) / 10)),
])
def test_each_gap_is_drawn_at_the_ramped_rate(ramp, expected):
    spec = replace(BASE, ramp=ramp)
    np.testing.assert_allclose(spec.rates(11), expected)
    gaps = np.diff([r.arrival_s for r in generate(spec, vocab_size=50, max_model_len=16)])
    np.testing.assert_allclose(gaps, 1.0 / expected[1:], rtol=1e-3)


def test_a_ramp_is_seeded_and_bursty_ramps_vary():
    spec = replace(BASE, burstiness=1.0)
    first, again = (generate(spec, vocab_size=50, max_model_len=16, seed=s) for s in (1, 1))
    assert first == again and first != generate(spec, vocab_size=50, max_model_len=16, seed=2)
    assert spec.arrival_text() == "poisson ramp linear 10->110 req/s"


@pytest.mark.parametrize("changes, message", [
    ({"ramp": "sideways"}, "ramp: unknown ramp 'sideways'"),
    ({"rate": 5.0}, "rate: a ramp sets the rate"),
    ({"ramp_end_rate": None}, "ramp_end_rate: must be > 0"),
    ({"ramp_start_rate": 0.0}, "ramp_start_rate: must be > 0"),
    ({"ramp": None}, "ramp_start_rate: only used with a ramp"),
    ({"arrival": "burst"}, "ramp: only used with arrival = 'poisson'"),
])
def test_bad_ramps_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        replace(BASE, **changes)


def test_a_slow_ramp_is_refused_before_it_sleeps():
    with pytest.raises(ConfigError, match=r"rate 0.001->0.002 req/s: .* are refused"):
        generate(replace(BASE, ramp_start_rate=0.001, ramp_end_rate=0.002), vocab_size=50, max_model_len=16)


def test_a_swept_rate_replaces_the_ramp():
    spec = with_rate(BASE, 7.0)
    assert spec.ramp is None and spec.rate == 7.0 and spec.arrival_text().startswith("poisson 7 req/s")


TOML = """description = "ramp"
num_requests = 6
arrival = "poisson"
ramp = "linear"
ramp_start_rate = 100.0
ramp_end_rate = 400
seed = 1
[prompt]
kind = "fixed"
mean = 4
[output]
kind = "fixed"
mean = 2
"""


def test_ramp_from_toml_and_the_cli(tmp_path):
    spec = parse_workload(TOML, source="ramp.toml")
    assert (spec.ramp, spec.ramp_start_rate, spec.ramp_end_rate) == ("linear", 100.0, 400.0)
    with pytest.raises(ConfigError, match="ramp.toml: ramp: must be a string"):
        parse_workload(TOML.replace('"linear"', "1"), source="ramp.toml")
    path = tmp_path / "ramp.toml"
    path.write_text(TOML)
    res = CliRunner().invoke(app, ["run", "--workload", str(path), "--backend", "paged", "--layers", "1",
                                   "--max-model-len", "16", "--no-progress", "--save-result", str(tmp_path / "v")])
    assert res.exit_code == 0, res.output
    doc = json.loads(next((tmp_path / "v").iterdir()).read_text())
    assert doc["comparability"]["ramp"] == {"strategy": "linear", "start_rate": 100.0, "end_rate": 400.0}
    assert doc["comparability"]["arrival"] == "poisson ramp linear 100->400 req/s"
