"""The CLI end to end on CPU through typer's CliRunner: exit codes, tables, files written (or not)."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from pabench.cli import app

runner = CliRunner()
SMALL = ["--num-requests", "6", "--no-progress", "--max-model-len", "512"]


def invoke(*args):
    return runner.invoke(app, list(args))


def test_help_does_not_import_torch():
    code = "import sys; from pabench.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "pabench", "--help"], capture_output=True, text=True, check=True)
    assert "run" in out.stdout


def test_run_and_sweep_share_their_common_options():
    """Options both commands take are declared once (cli_options): same flags, default and help in each."""
    import typer.main

    commands = typer.main.get_command(app).commands
    params = [{p.name: p for p in commands[name].params} for name in ("run", "sweep")]
    shared = sorted(set(params[0]) & set(params[1]) - {"max_num_seqs", "csv", "json", "help"})
    assert len(shared) >= 17, shared
    for name in shared:
        a, b = params[0][name], params[1][name]
        assert (a.opts, a.secondary_opts, a.default, a.help) == (b.opts, b.secondary_opts, b.default, b.help), name


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    res = invoke("run", *SMALL, "--csv", str(d / "r.csv"), "--json", str(d / "r.json"))
    assert res.exit_code == 0, res.output
    return d, res.output


def test_run_prints_a_comparison_table(exported):
    _, output = exported
    for name in ("paged", "contiguous-max", "contiguous-pow2", "contiguous-oracle"):
        assert name in output
    assert "KV budget" in output
    assert "× the output tokens/s of contiguous-max" in output or "x the output tokens/s" in output


def test_run_exports_csv_and_json(exported):
    d, _ = exported
    df = pd.read_csv(d / "r.csv")
    assert list(df["backend"]) == ["paged", "contiguous-max", "contiguous-pow2", "contiguous-oracle"]
    for col in ("output_tok_per_s", "workload", "model", "page_size", "kv_budget_bytes", "pabench_version",
                "git_commit", "seed", "max_num_seqs"):
        assert col in df.columns, col
    assert (df["output_tok_per_s"] > 0).all()
    assert (df["num_requests"] == 6).all()
    data = json.loads((d / "r.json").read_text())
    assert "results" in data or isinstance(data, dict)
    assert "request" in json.dumps(data)  # raw per-request samples are there


def test_check_passes_unchanged_and_catches_regression(exported, tmp_path):
    d, _ = exported
    res = invoke("check", str(d / "r.csv"), "--baseline", str(d / "r.csv"), "--max-regression", "10%")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(d / "r.csv")
    df.loc[df["backend"] == "paged", "output_tok_per_s"] *= 0.5
    worse = tmp_path / "worse.csv"
    df.to_csv(worse, index=False)
    res = invoke("check", str(worse), "--baseline", str(d / "r.csv"), "--max-regression", "10%", "--timing")
    assert res.exit_code == 2, res.output
    assert "output_tok_per_s" in res.output


def test_compare(exported):
    d, _ = exported
    res = invoke("compare", str(d / "r.csv"), str(d / "r.csv"))
    assert res.exit_code == 0, res.output
    assert "paged" in res.output


@pytest.mark.parametrize("args,needle", [
    (["--backend", "pagd"], "unknown backend"),
    (["--model", "gpt-9"], "unknown model"),
    (["--workload", "no-such-preset"], "no-such-preset"),
    (["--kv-budget", "1KiB"], "smaller than one page"),
    (["--kv-budget", "lots"], "cannot read size"),
    (["--page-size", "12"], "power of two"),
    (["--num-pages", "2"], "cannot hold request"),
    (["--workload", "parallel-sampling", "--max-num-seqs", "2", "--max-model-len", "2048"], "samples > max_num_seqs"),
    (["--watermark", "1.5"], "--watermark"),
    (["--device", "cpu", "--cuda-graphs"], "--cuda-graphs needs a CUDA device"),  # once, not once per backend
    (["--layers", "999"], "--layers must be in [1, 4] for tiny"),  # not a 999-layer model that runs for hours
])
def test_bad_input_is_one_line_exit_1_and_no_file(tmp_path, args, needle):
    out = tmp_path / "r.csv"
    res = invoke("run", *SMALL, *args, "--csv", str(out))
    assert res.exit_code == 1, res.output
    assert needle in res.output
    assert res.output.count("error:") == 1, res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_bad_workload_file(tmp_path):
    bad = tmp_path / "bad.toml"
    from pabench.bench.presets import presets_dir

    bad.write_text((presets_dir() / "default.toml").read_text() + "\nbogus_key = 1\n")
    res = invoke("run", *SMALL, "--workload", str(bad))
    assert res.exit_code == 1
    assert "bad.toml" in res.output and "bogus_key" in res.output


def test_workloads_list_and_show():
    res = invoke("workloads")
    assert res.exit_code == 0, res.output
    for name in ("default", "sharegpt-like", "alpaca-like", "long-context", "shared-prefix", "parallel-sampling"):
        assert name in res.output
    res = invoke("workloads", "show", "sharegpt-like")
    assert res.exit_code == 0 and "lognormal" in res.output
    assert invoke("workloads", "show", "nope").exit_code == 1


@pytest.mark.parametrize("args,needle", [
    (["run", "--bogus"], "No such option: --bogus (see 'pabench run --help')"),
    (["run", "--num-requests", "abc"], "Invalid value for '--num-requests'"),
    (["bogus"], "No such command 'bogus'"),
])
def test_usage_errors_are_one_line_exit_1(args, needle):
    """Typer's usage errors go through the entry point like every input error: exit 1 (2 means regression)."""
    out = subprocess.run([sys.executable, "-m", "pabench", *args], capture_output=True, text=True)
    assert out.returncode == 1, out
    assert out.stderr.strip().count("\n") == 0 and needle in out.stderr and "Traceback" not in out.stderr


def test_budget_too_small_is_one_stderr_line_and_nothing_on_stdout(tmp_path):
    """The fit check runs before the run's header is printed: a budget that cannot hold a request prints
    nothing but the one error line (and writes no file)."""
    out = subprocess.run([sys.executable, "-m", "pabench", "run", *SMALL, "--num-pages", "1", "--csv",
                          str(tmp_path / "r.csv")], capture_output=True, text=True)
    assert out.returncode == 1, out
    assert out.stdout == "" and out.stderr.count("\n") == 1 and "cannot hold request" in out.stderr, out
    assert not (tmp_path / "r.csv").exists()


def test_entry_point_exit_codes(exported, tmp_path):
    """No arguments prints help (exit 0); `check` keeps exit 2 for a regression through `main`."""
    from pabench.cli import main

    with pytest.raises(SystemExit) as ok:
        main([])
    assert ok.value.code == 0
    d, _ = exported
    worse = pd.read_csv(d / "r.csv")
    worse["output_tok_per_s"] *= 0.5
    worse.to_csv(tmp_path / "worse.csv", index=False)
    with pytest.raises(SystemExit) as regressed:
        main(["check", str(tmp_path / "worse.csv"), "--baseline", str(d / "r.csv"), "--timing"])
    assert regressed.value.code == 2


def test_readme_ci_recipe_holds_against_the_committed_baseline(tmp_path):
    """The README's guard recipe: a fresh default CPU run matches benchmarks/baseline.csv exactly on the memory
    and schedule metrics (deterministic for a seed). Regenerate the baseline when a default changes on purpose."""
    from pathlib import Path

    baseline = Path(__file__).resolve().parents[2] / "benchmarks" / "baseline.csv"
    current = tmp_path / "current.csv"
    res = invoke("run", "--device", "cpu", "--seed", "0", "--no-progress", "--csv", str(current))
    assert res.exit_code == 0, res.output
    res = invoke("check", str(current), "--baseline", str(baseline))  # every deterministic metric, exactly
    assert res.exit_code == 0, res.output
    assert invoke("check", str(current), "--baseline", str(baseline), "--metrics", "nope").exit_code == 1
    worse = pd.read_csv(current)
    worse["mean_waste_pct"] += 1.0
    worse.to_csv(tmp_path / "worse.csv", index=False)
    res = invoke("check", str(tmp_path / "worse.csv"), "--baseline", str(baseline), "--metrics", "mean_waste_pct",
                 "--max-regression", "0%")
    assert res.exit_code == 2 and "mean_waste_pct" in res.output


def test_a_budget_one_backend_cannot_hold_fails_before_anything_runs(tmp_path):
    """Paged could serve this budget, contiguous-max (a max_model_len region per sequence) cannot: the error comes
    from the up-front check, before paged has run, and no file is written."""
    from pabench.errors import ConfigError
    from pabench.bench.runner import RunConfig, prepare, run_benchmark

    cfg = RunConfig(backends=("paged", "contiguous-max"), num_requests=6, max_model_len=512, num_pages=16)
    progress = []
    with pytest.raises(ConfigError, match="contiguous-max cannot hold request"):
        run_benchmark(cfg, lambda *a: progress.append(a), prepared=prepare(cfg))
    assert progress == []  # nothing ran
    out = tmp_path / "r.csv"
    res = invoke("run", *SMALL, "--backend", "paged,contiguous-max", "--num-pages", "16", "--csv", str(out))
    assert res.exit_code == 1 and "contiguous-max cannot hold request" in res.output and not out.exists()


def test_a_backend_failing_at_run_time_keeps_the_others(tmp_path, monkeypatch):
    """Nothing finished is lost: the other backends run and are written; the failure is one line; exit 1."""
    import pabench.bench.runner as runner_mod
    from pabench.errors import ConfigError

    real = runner_mod.run_backend

    def flaky(p, name, on_progress=None):
        if name == "contiguous-pow2":
            raise ConfigError("simulated failure\nsecond line")
        return real(p, name, on_progress)

    monkeypatch.setattr(runner_mod, "run_backend", flaky)
    out = tmp_path / "r.csv"
    res = invoke("run", *SMALL, "--csv", str(out))
    assert res.exit_code == 1
    assert "pabench: error: contiguous-pow2 failed: simulated failure" in res.output and "second line" not in res.output
    assert list(pd.read_csv(out)["backend"]) == ["paged", "contiguous-max", "contiguous-oracle"]
    monkeypatch.setattr(runner_mod, "run_backend", lambda *a, **k: (_ for _ in ()).throw(ConfigError("all down")))
    res = invoke("run", *SMALL, "--csv", str(tmp_path / "none.csv"))
    assert res.exit_code == 1 and "failed: all down" in res.output and not (tmp_path / "none.csv").exists()
