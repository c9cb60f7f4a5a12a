"""Workload specs, TOML loading (one clear error line per bad file) and the seeded request generator."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from pabench.errors import ConfigError
from pabench.bench.presets import list_presets, load_workload, presets_dir
from pabench.bench.workloads import LengthDist, Request, SharedPrefix, WorkloadSpec, generate

GOOD = """
description = "test"
num_requests = 4
arrival = "burst"
[prompt]
kind = "uniform"
mean = 10
range_ratio = 0.5
[output]
kind = "fixed"
mean = 5
"""

MAX_MODEL_LEN = {"long-context": 8192, "long-context-poisson": 8192}  # every other preset fits 2048


def _spec(**changes) -> WorkloadSpec:
    base = WorkloadSpec(name="t", description="t", num_requests=4, arrival="burst",
                        prompt=LengthDist("fixed", 8), output=LengthDist("fixed", 4))
    return replace(base, **changes)


def _digest(requests: list[Request]) -> str:
    text = "\n".join(f"{r.request_id}|{r.arrival_s:.9f}|{r.prompt_token_ids}|{r.output_len}|{r.num_samples}|"
                     f"{r.prefix_id}" for r in requests)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- loading and validation ---------------------------------------------------------------------------------

def test_good_file_loads(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(GOOD)
    spec = load_workload(str(path))
    assert spec.name == "mine" and spec.source == str(path)
    assert spec.prompt == LengthDist("uniform", 10.0, range_ratio=0.5)
    assert spec.output.upper == 5 and spec.max_request_len == 15 + 5
    assert spec.num_samples == 1 and spec.shared_prefix is None and spec.rate is None


BAD_CASES = [
    # (text appended / substituted, key in message, problem in message)
    ("colour = 1\n" + GOOD, "colour", "unknown key"),
    (GOOD.replace('mean = 5', 'mean = 5\nfoo = 1'), "output.foo", "unknown key"),
    (GOOD + "[shared_prefix]\nnum_prefixes = 2\nlength = 4\nextra = 1\n", "shared_prefix.extra", "unknown key"),
    (GOOD.replace("num_requests = 4\n", ""), "num_requests", "missing required key"),
    (GOOD.replace('kind = "fixed"\n', ""), "output.kind", "missing required key"),
    (GOOD.replace('description = "test"\n', ""), "description", "missing required key"),
    (GOOD.replace("[output]\nkind = \"fixed\"\nmean = 5\n", ""), "output", "missing required key"),
    (GOOD.replace("num_requests = 4", 'num_requests = "four"'), "num_requests", "must be an integer"),
    (GOOD.replace("num_requests = 4", "num_requests = 4.5"), "num_requests", "must be an integer"),
    (GOOD.replace("num_requests = 4", "num_requests = true"), "num_requests", "must be an integer"),
    (GOOD.replace("mean = 10", 'mean = "ten"'), "prompt.mean", "must be a number"),
    (GOOD.replace('arrival = "burst"', "arrival = 3"), "arrival", "must be a string"),
    (GOOD.replace("range_ratio = 0.5", "range_ratio = 0.5\nmin = 2.5"), "prompt.min", "must be an integer"),
    ("output = 3\n" + GOOD.replace('[output]\nkind = "fixed"\nmean = 5\n', ""), "output", "must be a table"),
    (GOOD.replace("num_requests = 4", "num_requests = 0"), "num_requests", "must be >= 1"),
    (GOOD.replace("mean = 10", "mean = -10"), "prompt.mean", "must be > 0"),
    (GOOD.replace("mean = 5", "mean = 0"), "output.mean", "must be > 0"),
    (GOOD.replace("range_ratio = 0.5", "range_ratio = 0.5\nmin = 0"), "prompt.min", "must be >= 1"),
    (GOOD.replace("mean = 5", "mean = 5\nmax = -5"), "output.max", "min > max"),
    (GOOD.replace("range_ratio = 0.5", "range_ratio = 0.5\nmin = 10\nmax = 5"), "prompt.max", "min > max"),
    (GOOD + "[shared_prefix]\nnum_prefixes = 2\nlength = 0\n", "shared_prefix.length", "must be >= 1"),
    (GOOD + "[shared_prefix]\nnum_prefixes = 0\nlength = 8\n", "shared_prefix.num_prefixes", "must be >= 1"),
    (GOOD.replace('kind = "uniform"', 'kind = "zipf"'), "prompt.kind", "unknown kind 'zipf'"),
    (GOOD.replace('kind = "uniform"\nmean = 10\nrange_ratio = 0.5', 'kind = "lognormal"\nmean = 10\nsigma = 1.0'),
     "prompt.max", "required for kind 'lognormal'"),
    (GOOD.replace("range_ratio = 0.5", ""), "prompt.range_ratio", "required for kind 'uniform'"),
    (GOOD.replace("range_ratio = 0.5", "range_ratio = 1.5"), "prompt.range_ratio", "must be in [0, 1)"),
    (GOOD.replace("range_ratio = 0.5", "range_ratio = 0.5\nstd = 2.0"), "prompt.std", "not used by kind"),
    (GOOD.replace('kind = "uniform"\nmean = 10\nrange_ratio = 0.5', 'kind = "normal"\nmean = 10\nstd = 0\nmax = 20'),
     "prompt.std", "must be > 0"),
    (GOOD.replace("mean = 5", "mean = 5.5"), "output.mean", "whole number"),
    (GOOD.replace("num_requests = 4", "num_requests = "), "", "malformed TOML"),
    (GOOD.replace('arrival = "burst"', 'arrival = "poisson"\nrate = 0'), "rate", "must be > 0"),
    (GOOD.replace('arrival = "burst"', 'arrival = "poisson"'), "rate", "must be > 0"),
    (GOOD.replace('arrival = "burst"', 'arrival = "burst"\nrate = 3.0'), "rate", "only used with"),
    (GOOD.replace('arrival = "burst"', 'arrival = "poisson"\nrate = 2\nburstiness = 0'), "burstiness", "must be > 0"),
    (GOOD.replace('arrival = "burst"', 'arrival = "sometimes"'), "arrival", "unknown arrival"),
    ("num_samples = 0\n" + GOOD, "num_samples", "must be >= 1"),
]


@pytest.mark.parametrize("text, key, problem", BAD_CASES)
def test_bad_file_gives_one_line_naming_file_and_key(tmp_path, text, key, problem):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_workload(str(path))
    message = str(caught.value)
    assert "\n" not in message.strip() or problem == "malformed TOML"
    assert message.startswith(f"{path}: "), message
    assert f": {key}: " in message or not key, message
    assert problem in message, message


def test_misspelt_key_is_reported_before_the_missing_one(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('name = "x"\nnum_requests = 3\nbogus_key = 1\n')
    with pytest.raises(ConfigError, match=r"typo.toml: bogus_key: unknown key \(expected one of name, "):
        load_workload(str(path))
    path.write_text(GOOD.replace("kind = \"fixed\"", "knd = \"fixed\""))
    with pytest.raises(ConfigError, match="output.knd: unknown key"):
        load_workload(str(path))


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown workload 'nope'.*default"):
        load_workload("nope")
    with pytest.raises(ConfigError, match="not found"):
        load_workload(str(tmp_path / "absent.toml"))


def test_direct_construction_is_validated():
    with pytest.raises(ConfigError, match="range_ratio: required"):
        LengthDist("uniform", 10)
    with pytest.raises(ConfigError, match="length: must be >= 1"):
        SharedPrefix(2, 0)
    with pytest.raises(ConfigError, match="workload 't': num_samples"):
        _spec(num_samples=0)


def test_every_preset_loads_documents_itself_and_generates():
    specs = list_presets()
    names = {s.name for s in specs}
    assert {"default", "sharegpt-like", "alpaca-like", "long-context", "shared-prefix", "parallel-sampling",
            "poisson"} <= names
    for spec in specs:
        text = (presets_dir() / f"{spec.name}.toml").read_text()
        assert text.startswith("#") and spec.description
        max_len = MAX_MODEL_LEN.get(spec.name, 2048)
        requests = generate(spec, vocab_size=32000, max_model_len=max_len, num_requests=50)
        assert len(requests) == 50
        assert all(r.num_prompt_tokens + r.output_len <= max_len for r in requests)
    assert load_workload("parallel-sampling").num_samples == 4
    assert load_workload("long-context").max_request_len <= 8192


# ---- generator ----------------------------------------------------------------------------------------------

# sha256 prefixes of 6 requests of (burst uniform, poisson lognormal seed 7, shared prefix), vocab 1000.
# Inline specs, not presets, so retuning a preset does not move the digests.
GOLDEN = ["cb586d7feee4788d", "ac424d84d81351f0", "939f4253bff4b5c3"]
UNIFORM = dict(prompt=LengthDist("uniform", 64, range_ratio=0.5), output=LengthDist("uniform", 96, range_ratio=0.5))


def test_golden_determinism():
    """Same spec + seed -> identical requests on any machine (update the digests only on purpose)."""
    burst_spec = _spec(num_requests=6, **UNIFORM)
    poisson_spec = _spec(num_requests=6, arrival="poisson", rate=8.0, burstiness=0.5,
                         prompt=LengthDist("lognormal", 160, sigma=1.0, min=4, max=1024),
                         output=LengthDist("normal", 100, std=30, max=400))
    shared_spec = _spec(num_requests=6, shared_prefix=SharedPrefix(4, 32), num_samples=2, **UNIFORM)
    burst = generate(burst_spec, vocab_size=1000, max_model_len=2048)
    poisson = generate(poisson_spec, vocab_size=1000, max_model_len=2048, seed=7)
    shared = generate(shared_spec, vocab_size=1000, max_model_len=2048)
    assert [_digest(burst), _digest(poisson), _digest(shared)] == GOLDEN
    assert generate(burst_spec, vocab_size=1000, max_model_len=2048) == burst
    assert generate(burst_spec, vocab_size=1000, max_model_len=2048, seed=1) != burst
    assert generate(replace(burst_spec, seed=1), vocab_size=1000, max_model_len=2048) != burst


def test_too_long_for_max_model_len_names_file_and_keys():
    spec = load_workload("sharegpt-like")
    with pytest.raises(ConfigError) as caught:
        generate(spec, vocab_size=100, max_model_len=2047)
    message = str(caught.value)
    assert message.startswith(spec.source) and "prompt.max + output.max" in message and "2048" in message
    assert message.endswith("; --max-model-len 2048 would do (left out, it follows the workload)"), message
    with pytest.raises(ConfigError, match="shared_prefix.length"):
        generate(load_workload("shared-prefix"), vocab_size=100, max_model_len=512)


def test_a_trace_row_too_long_names_the_value_that_fits_every_row_replayed():
    spec = load_workload("trace-bursty")
    need = max(p + o for p, o in zip(spec.trace.prompt_lens[:10], spec.trace.output_lens[:10]))
    with pytest.raises(ConfigError, match=rf"> max_model_len 20 .*; --max-model-len {need} would do"):
        generate(spec, vocab_size=100, max_model_len=20, num_requests=10)


@pytest.mark.parametrize("name", [p.stem for p in sorted(presets_dir().glob("*.toml"))])
def test_every_preset_prepares_with_the_cpu_defaults(name):
    """No --max-model-len: it follows the workload (the longest request it can draw, at least the device's 1024), so
    every preset passes every up-front check; the default budget (4 sequences at max_model_len) follows it too."""
    from pabench.bench.runner import RunConfig, prepare

    p = prepare(RunConfig(workload=name, device="cpu", num_requests=2, warmup=False))
    spec = load_workload(name)
    assert p.config.max_model_len == max(1024, spec.max_request_len)
    assert p.kv_budget_bytes == 4 * p.config.max_model_len * p.layout.bytes_per_token
    assert all(r.num_prompt_tokens + r.output_len <= p.config.max_model_len for r in p.requests)


def test_generate_arguments_are_checked():
    with pytest.raises(ConfigError, match="vocab_size"):
        generate(_spec(), vocab_size=0, max_model_len=64)
    with pytest.raises(ConfigError, match="num_requests"):
        generate(_spec(), vocab_size=10, max_model_len=64, num_requests=0)


def test_tokens_lengths_and_overrides():
    spec = _spec(prompt=LengthDist("uniform", 20, range_ratio=0.5), output=LengthDist("uniform", 10, range_ratio=0.2),
                 num_requests=30)
    requests = generate(spec, vocab_size=7, max_model_len=64, seed=3)
    assert len(requests) == 30 and [r.request_id for r in requests] == list(range(30))
    tokens = np.concatenate([r.prompt_token_ids for r in requests])
    assert tokens.min() >= 0 and tokens.max() < 7 and len(set(tokens.tolist())) == 7
    assert all(10 <= r.num_prompt_tokens <= 30 and 8 <= r.output_len <= 12 for r in requests)
    assert all(r.arrival_s == 0.0 and r.prefix_id is None and r.num_samples == 1 for r in requests)


def test_sharegpt_and_alpaca_means_match_the_spec():
    rng = np.random.default_rng(0)
    for name, prompt_mean, output_mean in (("sharegpt-like", 160, 340), ("alpaca-like", 19, 58)):
        spec = load_workload(name)
        assert abs(spec.prompt.sample(rng, 5000).mean() / prompt_mean - 1) < 0.10
        assert abs(spec.output.sample(rng, 5000).mean() / output_mean - 1) < 0.10


def test_lognormal_mean_is_the_distribution_mean():
    values = LengthDist("lognormal", 100, sigma=0.5, max=10**6).sample(np.random.default_rng(1), 50_000)
    assert abs(values.mean() / 100 - 1) < 0.02
    assert np.median(values) < 100  # heavy right tail: median below mean


def test_clipping():
    dist = LengthDist("lognormal", 30, sigma=1.5, min=10, max=50)
    values = dist.sample(np.random.default_rng(2), 5000)
    assert values.min() == 10 and values.max() == 50 and values.dtype == np.int64
    assert dist.lower == 10 and dist.upper == 50
    normal = LengthDist("normal", 20, std=30, max=40).sample(np.random.default_rng(3), 5000)
    assert normal.min() == 1 and normal.max() == 40


def test_uniform_semantics_both_ends_included():
    dist = LengthDist("uniform", 10, range_ratio=0.33)  # [round(6.7), round(13.3)] = [7, 13]
    values = dist.sample(np.random.default_rng(4), 20_000)
    assert set(values.tolist()) == set(range(7, 14))
    assert (dist.lower, dist.upper) == (7, 13)
    assert abs(values.mean() - 10) < 0.1
    assert set(LengthDist("uniform", 10, range_ratio=0.0).sample(np.random.default_rng(5), 100).tolist()) == {10}
    assert set(LengthDist("uniform", 100, range_ratio=0.5, max=120).sample(np.random.default_rng(6), 5000)) \
        <= set(range(50, 121))
    assert set(LengthDist("fixed", 9).sample(np.random.default_rng(7), 10).tolist()) == {9}


@pytest.mark.parametrize("burstiness, cv", [(1.0, 1.0), (4.0, 0.5), (0.25, 2.0)])
def test_poisson_and_burstiness_arrivals(burstiness, cv):
    spec = _spec(arrival="poisson", rate=10.0, burstiness=burstiness, num_requests=20_001,
                 prompt=LengthDist("fixed", 1), output=LengthDist("fixed", 1))
    arrivals = np.array([r.arrival_s for r in generate(spec, vocab_size=5, max_model_len=8)])
    gaps = np.diff(arrivals)
    assert arrivals[0] == 0.0 and (gaps >= 0).all()
    assert abs(gaps.mean() / 0.1 - 1) < 0.05  # mean gap 1/rate
    assert abs(gaps.std() / gaps.mean() / cv - 1) < 0.1  # Gamma(shape k): CV = 1/sqrt(k)


def test_shared_prefix_is_really_shared():
    spec = _spec(shared_prefix=SharedPrefix(num_prefixes=3, length=16), num_requests=60,
                 prompt=LengthDist("uniform", 8, range_ratio=0.5))
    requests = generate(spec, vocab_size=50_000, max_model_len=64)
    by_prefix: dict[int, set[tuple[int, ...]]] = {}
    for r in requests:
        assert r.prefix_id in (0, 1, 2) and 16 + 4 <= r.num_prompt_tokens <= 16 + 12
        by_prefix.setdefault(r.prefix_id, set()).add(r.prompt_token_ids[:16])
    assert sorted(by_prefix) == [0, 1, 2]
    assert all(len(prefixes) == 1 for prefixes in by_prefix.values())  # one system prompt per prefix id
    assert len({next(iter(p)) for p in by_prefix.values()}) == 3  # and they differ
    suffixes = {r.prompt_token_ids[16:] for r in requests}
    assert len(suffixes) == 60  # each request's own part is its own


def test_num_samples_carried():
    requests = generate(_spec(num_samples=4), vocab_size=10, max_model_len=64)
    assert {r.num_samples for r in requests} == {4}


def test_import_is_torch_free():
    code = "import sys, pabench.bench.workloads, pabench.bench.metrics, pabench.report.tables; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- seeds and arrival spans ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [-1, 2**63, 2**64, True, 1.5])
def test_seed_outside_the_range_numpy_and_torch_share_is_one_line(seed):
    with pytest.raises(ConfigError, match=r"seed: must be an integer in \[0, 2\*\*63 - 1"):
        _spec(seed=seed)
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\*\*63 - 1"):
        generate(_spec(), vocab_size=16, max_model_len=64, seed=seed)


def test_largest_seed_is_accepted():
    assert generate(_spec(seed=2**63 - 1), vocab_size=16, max_model_len=64, seed=2**63 - 1)


def test_a_rate_that_would_sleep_for_years_is_refused_with_the_expected_span():
    slow = _spec(arrival="poisson", rate=1e-9, num_requests=11)
    with pytest.raises(ConfigError, match=r"rate 1e-09 req/s: 11 requests would arrive over ~317 years"):
        generate(slow, vocab_size=16, max_model_len=64)
    hour = _spec(arrival="poisson", rate=1.0, num_requests=3602)  # 3601 s expected: just past the bound
    with pytest.raises(ConfigError, match=r"~1 h \(expected\)"):
        generate(hour, vocab_size=16, max_model_len=64)
    assert len(generate(hour, vocab_size=16, max_model_len=64, num_requests=3601)) == 3601  # 3600 s: allowed
