"""Trace replay (`arrival = "trace"`): the CSV's checks name the file and line, a trace defines its requests, the
shipped trace regenerates byte for byte, and its preset runs from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from pabench.bench.contract import comparability
from pabench.bench.presets import load_workload, parse_workload, presets_dir
from pabench.bench.runner import RunConfig, prepare
from pabench.bench.trace import read_trace
from pabench.bench.workloads import generate, with_rate
from pabench.cli import app
from pabench.errors import ConfigError

HEADER = "timestamp_s,prompt_len,output_len\n"
ROWS = "10.0,5,3\n10.5,7,2\n10.5,4,4\n12.0,6,1\n"
TOML = 'description = "t"\narrival = "trace"\ntrace = "t.csv"\n'


@pytest.fixture
def trace_toml(tmp_path):
    """A trace file of four rows and a workload TOML beside it; returns the TOML's path."""
    (tmp_path / "t.csv").write_text(HEADER + ROWS)
    path = tmp_path / "t.toml"
    path.write_text(TOML)
    return path


def test_trace_replays_times_and_lengths(trace_toml):
    spec = load_workload(str(trace_toml))
    assert spec.num_requests == 4 and spec.arrival == "trace"
    requests = generate(spec, vocab_size=100, max_model_len=64)
    assert [r.arrival_s for r in requests] == [0.0, 0.5, 0.5, 2.0]  # relative to the first row
    assert [r.num_prompt_tokens for r in requests] == [5, 7, 4, 6]
    assert [r.output_len for r in requests] == [3, 2, 4, 1]
    assert spec.prompt.lower == 4 and spec.prompt.upper == 7 and spec.max_request_len == 9
    assert "4 rows" in spec.arrival_text()


def test_num_requests_takes_the_first_rows_and_refuses_more(trace_toml):
    spec = load_workload(str(trace_toml))
    assert [r.output_len for r in generate(spec, vocab_size=100, max_model_len=64, num_requests=2)] == [3, 2]
    with pytest.raises(ConfigError, match="only 4 rows"):
        generate(spec, vocab_size=100, max_model_len=64, num_requests=5)
    with pytest.raises(ConfigError, match="num_requests: 9 > the 4 rows"):
        parse_workload(TOML + "num_requests = 9\n", source=str(trace_toml))


def test_a_row_longer_than_max_model_len_is_named(trace_toml):
    spec = load_workload(str(trace_toml))
    with pytest.raises(ConfigError, match=r"t\.csv:3: prompt_len \+ output_len = 9 > max_model_len 8"):
        generate(spec, vocab_size=100, max_model_len=8)
    assert len(generate(spec, vocab_size=100, max_model_len=8, num_requests=1)) == 1  # only the rows replayed


@pytest.mark.parametrize("text, message", [
    ("", r":1: the header must be exactly timestamp_s,prompt_len,output_len \(got an empty file\)"),
    ("time,prompt_len,output_len\n0,1,1\n", r":1: the header must be exactly .*\(got time,prompt_len,output_len\)"),
    (HEADER, "a header but no rows"),
    (HEADER + "0,5,3\n1.5,4,2\n1.0,4,2\n", r":4: timestamp_s goes backwards \(1 after 1.5\)"),
    (HEADER + "0,5,3\n1,0,2\n", r":3: prompt_len must be a positive integer \(got 0\)"),
    (HEADER + "0,5,3\n1,4,2.5\n", r":3: output_len must be a positive integer \(got '2.5'\)"),
    (HEADER + "0,5,-3\n", r":2: output_len must be a positive integer \(got -3\)"),
    (HEADER + "nan,5,3\n", r":2: timestamp_s must be a finite number \(got 'nan'\)"),
    (HEADER + "0,5\n", r":2: expected 3 values"),
    (HEADER + "0,5,3\n\n1,5,3\n", r":3: expected 3 values .* got 0"),
])
def test_bad_trace_files_are_one_line_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        read_trace(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


@pytest.mark.parametrize("extra, message", [
    ('[prompt]\nkind = "fixed"\nmean = 4\n', "prompt: not used with arrival = 'trace'"),
    ("rate = 4.0\n", "rate: only used with arrival = 'poisson'"),
    ("[shared_prefix]\nnum_prefixes = 1\nlength = 4\n", "shared_prefix: not used with arrival = 'trace'"),
])
def test_trace_workload_refuses_keys_it_does_not_use(trace_toml, extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_workload(TOML + extra, source=str(trace_toml))


def test_trace_key_needs_trace_arrival_and_the_reverse(trace_toml):
    with pytest.raises(ConfigError, match="trace: missing required key"):
        parse_workload(TOML.replace('trace = "t.csv"\n', ""), source=str(trace_toml))
    burst = TOML.replace('"trace"\n', '"burst"\n', 1) + 'num_requests = 1\n[prompt]\nkind = "fixed"\nmean = 1\n'
    with pytest.raises(ConfigError, match="trace: only used with arrival = 'trace'"):
        parse_workload(burst + '[output]\nkind = "fixed"\nmean = 1\n', source=str(trace_toml))
    with pytest.raises(ConfigError, match="missing.csv: cannot read trace file"):
        parse_workload(TOML.replace("t.csv", "missing.csv"), source=str(trace_toml))


def test_a_rate_rescales_the_trace_times(trace_toml):
    spec = with_rate(load_workload(str(trace_toml)), 3.0)  # 4 rows over 2 s (1.5 req/s) -> over 1 s
    assert [r.arrival_s for r in generate(spec, vocab_size=100, max_model_len=64)] == [0.0, 0.25, 0.25, 1.0]
    assert spec.trace.mean_rate == pytest.approx(3.0) and "scaled to 3 req/s" in spec.arrival_text()
    flat = replace(spec.trace, arrival_s=(0.0,) * 4)
    with pytest.raises(ConfigError, match="no rate to scale"):
        flat.scaled_to(2.0)


def test_the_contract_names_the_trace_and_the_rows_replayed(trace_toml):
    p = prepare(RunConfig(workload=str(trace_toml), backends=("paged",), layers=1, max_model_len=64, num_requests=3,
                          device="cpu"))
    contract = comparability(p)
    assert contract["trace"]["file"] == "t.csv" and contract["trace"]["rows_replayed"] == 3
    assert contract["trace"]["sha256"] == read_trace(trace_toml.with_name("t.csv")).sha256
    assert contract["input_len"]["max"] == 7 and contract["output_len"]["min"] == 2  # rows 1-3 only
    assert contract["request_rate"] == pytest.approx(2 / 0.5)


def test_shipped_trace_regenerates_byte_for_byte(tmp_path):
    script = presets_dir() / "traces" / "make_trace.py"
    out = tmp_path / "again.csv"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == (presets_dir() / "traces" / "bursty-small.csv").read_bytes()


def test_shipped_trace_is_bursty_and_fits_the_cpu_default():
    spec = load_workload("trace-bursty")
    trace = spec.trace
    assert 200 <= trace.num_rows <= 400 and spec.max_request_len <= 1024 and trace.span_s < 5
    gaps = [b - a for a, b in zip(trace.arrival_s, trace.arrival_s[1:])]
    busiest = max(sum(1 for t in trace.arrival_s if s <= t < s + 0.1) for s in trace.arrival_s)
    assert busiest >= 3 * trace.mean_rate * 0.1 and max(gaps) > 10 * min(g for g in gaps if g > 0)  # bursts


def test_trace_preset_runs_from_the_cli(tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["run", "--workload", "trace-bursty", "--backend", "paged", "--num-requests", "24",
                                   "--layers", "1", "--no-progress", "--json", str(out)])
    assert res.exit_code == 0, res.output
    row = json.loads(out.read_text())["rows"][0]
    assert row["num_requests"] == 24 and row["arrival"].startswith("trace bursty-small.csv")


def test_too_many_rows_from_the_cli_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "r.csv"
    res = CliRunner().invoke(app, ["run", "--workload", "trace-bursty", "--num-requests", "100000", "--no-progress",
                                   "--csv", str(out)])
    assert res.exit_code == 1 and "only 240 rows" in res.output and "Traceback" not in res.output
    assert not out.exists()
