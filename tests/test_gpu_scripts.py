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


def test_gpu_tp_script_parses_and_its_summary_reads_run_csvs(tmp_path):
    """gpu_tp.sh waits for a 2-GPU lease: it must at least parse, and its summary must read the exports it writes."""
    assert subprocess.run(["bash", "-n", "benchmarks/gpu_tp.sh"], cwd=ROOT).returncode == 0
    header = "backend,tensor_parallel,output_tok_per_s,kv_budget_bytes,capacity_num_tokens,host_pct," \
             "decode_step_mean_ms,num_preemptions\n"
    (tmp_path / "8b_tp1.csv").write_text(header + "paged,1,100.0,1073741824,4096,10.0,20.0,0\n")
    (tmp_path / "8b_tp2.csv").write_text(header + "paged,2,180.0,1073741824,8192,12.5,10.0,0\n")
    done = subprocess.run([sys.executable, "benchmarks/tp_check.py", "summarize", str(tmp_path)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "8b | paged | 2 | 180 | 1.80 | 0.90 | 1.00 GiB | 8192 | 1.25 | 0" in done.stdout.splitlines()
