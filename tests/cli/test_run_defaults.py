"""What a run serves when options are left out: max_model_len follows the workload, and the CLI's error when an
explicit one is too small names the value that would do."""

from typer.testing import CliRunner

from pabench.cli import app

runner = CliRunner()


def test_a_preset_longer_than_the_cpu_default_runs_without_max_model_len():
    """poisson draws up to 1024 + 1024 tokens: it used to fail on the CPU against the old fixed 1024."""
    res = runner.invoke(app, ["run", "--workload", "poisson", "--num-requests", "2", "--backend", "paged",
                              "--no-progress"])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert "max_model_len 2048" in res.stdout
    assert "KV budget 32.0 MiB = 512 pages × 16 tokens = 8,192 tokens = 4 sequences at max_model_len 2,048" in res.stdout


def test_an_explicit_max_model_len_too_small_is_one_line_naming_the_value_that_would_do():
    res = runner.invoke(app, ["run", "--workload", "sharegpt-like", "--max-model-len", "1024", "--no-progress"])
    assert res.exit_code == 1 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pabench: error: "), res.stderr
    assert "a request can need 2048 tokens > max_model_len 1024; --max-model-len 2048 would do" in lines[0]


# ---- a bare `pabench run` on CUDA shows what paging buys ----------------------------------------------------------

def test_the_device_picks_the_default_workload_and_on_cuda_a_fast_model():
    from pabench.cli.defaults import RunDefaults, run_defaults

    assert run_defaults("cpu", None, None, None, None) == RunDefaults("default", None, None)
    assert run_defaults("cuda", None, None, None, None) == RunDefaults("sharegpt-like", 4, 500)
    assert run_defaults("cuda", None, None, 32, 100) == RunDefaults("sharegpt-like", 32, 100)  # as given
    assert run_defaults("cuda", None, "llama-3-8b", None, None) == RunDefaults("sharegpt-like", None, 500)
    assert run_defaults("cuda", "poisson", None, None, None) == RunDefaults("poisson", None, None)  # unchanged


def test_the_cuda_default_budget_binds_contiguous_max_and_not_the_batch_cap():
    """llama-3-8b's shapes at 4 layers in bf16: 16 KiB per token; the default budget (256 / 8 = 32 sequences at
    max_model_len 2048) lets contiguous-max run at most 32 sequences, while it holds ~130 of sharegpt-like's
    average requests: paged's batch is bounded by the budget, several times contiguous-max's, under the cap of 256."""
    from pabench.backends import KVLayout
    from pabench.bench.runner import default_budget_tokens
    from pabench.bench.workloads import generate
    from pabench.bench.presets import load_workload
    from pabench.cli.defaults import CUDA_LAYERS, CUDA_NUM_REQUESTS, CUDA_WORKLOAD
    from pabench.engine.model import ModelConfig

    spec = load_workload(CUDA_WORKLOAD)
    mcfg = ModelConfig.from_name("llama-3-8b", CUDA_LAYERS)
    max_model_len = max(2048, spec.max_request_len)
    tokens = default_budget_tokens(256, max_model_len)
    per_token = KVLayout(mcfg.num_layers, mcfg.num_kv_heads, mcfg.head_dim, dtype="bf16", device="meta").bytes_per_token
    assert (max_model_len, per_token, tokens * per_token) == (2048, 16 * 1024, 2**30)  # 1 GiB
    requests = generate(spec, vocab_size=mcfg.vocab_size, max_model_len=max_model_len,
                        num_requests=CUDA_NUM_REQUESTS)
    mean_len = sum(r.num_prompt_tokens + r.output_len for r in requests) / len(requests)
    contiguous_max = tokens // max_model_len
    paged = tokens / mean_len
    assert contiguous_max == 32 and 3 * contiguous_max < paged < 256, (contiguous_max, paged)
    assert len(requests) > 2 * paged  # enough requests that the budget stays full for most of the run


# ---- --quiet --------------------------------------------------------------------------------------------------

def test_quiet_prints_the_results_and_errors_only(tmp_path):
    out = tmp_path / "r.csv"
    args = ["run", "--num-requests", "6", "--backend", "paged,contiguous-max", "--max-model-len", "240",
            "--num-pages", "16", "--csv", str(out)]
    res = runner.invoke(app, [*args, "--quiet"])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert "paged served" in res.stdout and out.exists()
    assert all(line.startswith("pabench: warning: other processes") for line in res.stderr.splitlines()), res.stderr
    loud = runner.invoke(app, [*args, "--no-progress"])
    assert "wrote" in loud.stderr and "note:" in loud.stderr  # what --quiet left out (16 pages preempt a lot)
    res = runner.invoke(app, ["run", "--quiet", "--kv-budget", "lots"])
    assert res.exit_code == 1 and res.stderr.startswith("pabench: error: cannot read size")
