"""The GPU scripts in benchmarks/ spend scarce device time: their dry runs on the CPU must work before a lease."""

import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_kernels_dry_run_writes_every_stage(tmp_path):
    """bench, graphs and small through the Triton interpreter on tiny shapes: each stage writes its file."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "benchmarks/gpu_kernels.py", "--out", str(tmp_path), "--stages",
                           "bench,graphs,small", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("kernels.csv", "graphs_d_tilings.csv", "graphs_small_tilings.csv"):
        rows = list(csv.DictReader((tmp_path / name).open()))
        assert rows and all(not r.get("error") for r in rows), (name, rows)
    small = list(csv.DictReader((tmp_path / "graphs_small_tilings.csv").open()))
    assert [r["heuristic"] for r in small].count("True") == 1  # the heuristic's own tiling is one of the rows
    assert any(line.startswith("small B1-L512: paged heuristic") for line in
               (tmp_path / "summary.txt").read_text().splitlines())


def test_gpu_e2e_with_no_stage_runs_nothing(tmp_path):
    """An empty STAGES runs nothing (it once ran every stage); the script parses."""
    env = {**os.environ, "STAGES": "", "OUT": str(tmp_path / "out"), "PY": sys.executable}
    done = subprocess.run(["bash", "benchmarks/gpu_e2e.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pabench run" not in done.stdout + done.stderr
