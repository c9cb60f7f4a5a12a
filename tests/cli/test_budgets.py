"""Budgets, sizes, seeds and rates the machine cannot serve: one line on stderr, exit 1, before the run header.

Each of these used to print the header then a torch traceback, be OOM-killed in silence, hit a numpy traceback,
or sleep for years. The sizes are far past any machine's memory, so the checks fail the same everywhere."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pabench.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _slow_and_negative_seed(tmp_path: Path) -> dict[str, Path]:
    base = (ROOT / "workloads" / "poisson.toml").read_text()
    files = {"slow": base.replace("rate = 8.0", "rate = 1e-9", 1),
             "negseed": base.replace("seed = 0", "seed = -1", 1),
             "bigseed": base.replace("seed = 0", f"seed = {2**64}", 1)}
    paths = {}
    for name, text in files.items():
        assert text != base, name
        paths[name] = tmp_path / f"{name}.toml"
        paths[name].write_text(text)
    return paths


BAD = {  # args -> what the one line must say
    "budget-100TiB": (["run", "--kv-budget", "100TiB"], "KV budget 100.00 TiB > "),
    "budget-1TiB": (["run", "--kv-budget", "1TiB"], "KV budget 1.00 TiB > "),
    "num-pages": (["run", "--num-pages", "1000000000000"], "(1000000000000 pages x 16 tokens"),
    "max-model-len": (["run", "--max-model-len", "100000000"], "the default: room for 4 sequences at --max-model-len"),
    "max-model-len-tables": (["run", "--max-model-len", str(10**10), "--kv-budget", "64MiB", "--backend", "paged"],
                             f"--max-model-len {10**10} needs"),
    "seed-negative": (["run", "--seed", "-1"], "seed must be an integer in [0, 2**63 - 1"),
    "seed-past-2**63": (["run", "--seed", str(2**63)], "seed must be an integer in [0, 2**63 - 1"),
    "sweep-seed": (["sweep", "--seed", str(2**64), "--page-sizes", "16"], "seed must be an integer in [0, 2**63 - 1"),
    "sweep-budget": (["sweep", "--kv-budgets", "64MiB,100TiB", "--page-sizes", "16"], "KV budget 100.00 TiB > "),
    "sweep-rate": (["sweep", "--rates", "1e-9", "--page-sizes", "16"], "requests would arrive over ~"),
    "toml-rate": (["run", "--workload", "{slow}", "--max-model-len", "2048"], "rate 1e-09 req/s: 500 requests"),
    "toml-seed": (["run", "--workload", "{negseed}"], "seed: must be an integer in [0, 2**63 - 1"),
    "toml-bigseed": (["run", "--workload", "{bigseed}"], "seed: must be an integer in [0, 2**63 - 1"),
    "show-seed": (["workloads", "show", "{negseed}"], "seed: must be an integer in [0, 2**63 - 1"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_size_seed_or_rate_is_one_line_before_the_header(case, tmp_path):
    args, expected = BAD[case]
    paths = _slow_and_negative_seed(tmp_path)
    args = [a.format(**paths) for a in args]
    if args[0] in ("run", "sweep"):
        args.append("--no-progress")
    start = time.perf_counter()
    res = runner.invoke(app, args)
    seconds = time.perf_counter() - start
    assert res.exit_code == 1, (res.stdout, res.stderr, res.exception)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pabench: error: "), res.stderr
    assert expected in lines[0], lines[0]
    assert res.stdout == ""  # no header: the check runs before anything is printed or allocated
    assert seconds < 30, seconds  # nothing allocated (the old code was OOM-killed or slept for years)


def test_a_huge_budget_in_a_real_process_is_one_line_and_no_traceback():
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pabench", "run", "--kv-budget", "100TiB", "--no-progress"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 1 and out.stdout == "", (out.stdout, out.stderr)
    assert out.stderr.startswith("pabench: error: KV budget 100.00 TiB > ") and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr and time.perf_counter() - start < 60


# ---- pabench kernels on a CPU: only defaults shrink -------------------------------------------------------------
SMALL_HEADS = ["--device", "cpu", "--page-sizes", "16", "--num-q-heads", "4", "--num-kv-heads", "2",
               "--head-dim", "32", "--dtype", "fp32"]


def _kernels(tmp_path, *args):
    out = tmp_path / "rows.json"
    res = runner.invoke(app, ["kernels", *SMALL_HEADS, *args, "--json", str(out)])
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    import json

    return json.loads(out.read_text()), res.stderr


def test_kernels_on_a_cpu_honours_an_explicit_batch_and_context(tmp_path):
    rows, err = _kernels(tmp_path, "--batch", "12", "--context", "300")
    assert rows and all(r["batch"] == 12 and r["mean_context"] == 300 for r in rows)  # was cut to 8 x 256
    assert "shrunk" not in err


def test_kernels_on_a_cpu_shrinks_only_the_defaults_and_says_which(tmp_path):
    rows, err = _kernels(tmp_path, "--batch", "12")
    assert all(r["batch"] == 12 and r["mean_context"] == 256 for r in rows)
    assert "shrunk the default max context 4096->256 (give --context to run them as set)" in " ".join(err.split())
    rows, err = _kernels(tmp_path)
    assert all(r["batch"] == 8 and r["mean_context"] == 256 for r in rows)
    assert "shrunk the default batch 64->8, max context 4096->256" in " ".join(err.split())


@pytest.mark.parametrize("args, expected", [
    (["--case", "a", "--batch", "4"], "--batch and --context shape the custom case; case 'a' has its own shape"),
    (["--batch", "100000", "--context", "1000000"], "batch 100000 x context 1000000 needs ~"),
])
def test_kernels_refuses_what_it_cannot_honour_in_one_line(args, expected):
    res = runner.invoke(app, ["kernels", "--device", "cpu", *args])
    assert res.exit_code == 1 and res.stdout == "", (res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pabench: error: ") and expected in lines[0], res.stderr
