"""Try pabench the way a careless user would and tabulate what it answers: command, exit code, stderr's last line.

    python benchmarks/bad_inputs.py > benchmarks/BAD_INPUTS.md

Every case must exit non-zero with one `pabench: error:` line and no traceback; the script exits 1 if one does
not. It runs in a temporary directory with a FIFO, a symlink, a file and a directory to aim outputs at; it never
touches a real device node.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

SMALL = "--num-requests 4 --no-progress --max-model-len 256 --layers 1"
CASES = [
    # outputs
    f"run {SMALL} --csv adir",
    f"run {SMALL} --csv ''",
    f"run {SMALL} --csv afile/x.csv",
    f"run {SMALL} --csv same.csv --json same.csv",
    f"run {SMALL} --csv ok.csv --json adir",
    f"run {SMALL} --csv link.csv --json real.csv",
    f"run {SMALL} --csv - --json -",
    f"sweep {SMALL} --csv adir",
    "kernels --device cpu --csv adir",
    "plot sweep.csv -o out.jpg",
    "plot sweep.csv -o adir",
    "plot sweep.csv -o sweep.csv",
    # budgets and sizes
    f"run {SMALL} --kv-budget 1TiB",
    f"run {SMALL} --kv-budget 100TiB",
    f"run {SMALL} --num-pages 1000000000000",
    f"run {SMALL.replace('--max-model-len 256', '--max-model-len 100000000')}",
    f"run {SMALL} --kv-budget 1KiB",
    f"run {SMALL} --kv-budget lots",
    f"run {SMALL} --page-size 3",
    f"run {SMALL} --seed -1",
    f"run {SMALL} --seed 99999999999999999999",
    "workloads show bad-seed.toml",
    f"sweep {SMALL} --rates 1e-9",
    "kernels --device cpu --batch 100000000 --context 100000000",
    # the CI guard
    "check cur.csv --baseline base.csv --metrics nope",
    "check nocol.csv --baseline base.csv --metrics mean_waste_pct",
    "check dup.csv --baseline base.csv",
    "check abc.csv --baseline base.csv",
    "check cur.csv --baseline missing.csv",
    "check cur.csv --baseline base.csv --max-regression lots",
    # the rest
    f"run {SMALL} --backend paged+prefix,paged-noprefix --no-prefix-caching",
    f"run {SMALL} --backend nope",
    f"run {SMALL} --device tpu",
    f"run {SMALL} --workload nope",
    f"run {SMALL} --workload broken.toml",
    f"run {SMALL} --watermark 1.5",
    f"run {SMALL} --kv-dtype fp4",
    f"sweep {SMALL} --kv-dtypes auto,fp4",
    f"sweep {SMALL} --kv-dtypes auto,auto",
    "kernels --device cpu --kv-dtype int8",
    "explain --scenario nope",
    "run --no-such-flag",
]
EXPECTED_2 = {"check nocol.csv --baseline base.csv --metrics mean_waste_pct"}  # a missing metric is a regression


def _setup(d: str) -> None:
    os.mkdir(os.path.join(d, "adir"))
    open(os.path.join(d, "afile"), "w").close()
    os.mkfifo(os.path.join(d, "pipe"))
    os.symlink("real.csv", os.path.join(d, "link.csv"))
    here = os.path.dirname(os.path.abspath(__file__))
    preset = open(os.path.join(here, "..", "workloads", "default.toml")).read()
    with open(os.path.join(d, "bad-seed.toml"), "w") as f:  # the default preset with a negative seed
        f.write(re.sub(r"(?m)^seed\s*=.*$", "seed = -1", preset))
    with open(os.path.join(d, "broken.toml"), "w") as f:
        f.write("name = [\n")
    fixtures = os.path.join(here, "..", "tests", "fixtures")
    with open(os.path.join(fixtures, "sweep_grid.csv")) as f:
        open(os.path.join(d, "sweep.csv"), "w").write(f.read())
    base = open(os.path.join(fixtures, "results_baseline.csv")).read()
    open(os.path.join(d, "base.csv"), "w").write(base)
    open(os.path.join(d, "cur.csv"), "w").write(base)
    lines = base.splitlines()
    open(os.path.join(d, "dup.csv"), "w").write("\n".join(lines + lines[1:2]) + "\n")
    header = lines[0].split(",")
    drop = header.index("mean_waste_pct")
    open(os.path.join(d, "nocol.csv"), "w").write(
        "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != drop) for line in lines) + "\n")
    col = header.index("mean_waste_pct")  # a metric the default check reads
    bad = [lines[0]] + [",".join("abc" if i == col else c for i, c in enumerate(line.split(","))) for line in lines[1:]]
    open(os.path.join(d, "abc.csv"), "w").write("\n".join(bad) + "\n")


def main() -> int:
    failed = 0
    print("| command | exit | stderr (last line) | s |\n|---|---:|---|---:|")
    with tempfile.TemporaryDirectory() as d:
        _setup(d)
        for case in CASES:
            start = time.perf_counter()
            done = subprocess.run(f"{sys.executable} -m pabench {case}", shell=True, cwd=d, capture_output=True,
                                  text=True, timeout=600,
                                  env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(
                                      os.path.abspath(__file__)))})
            took = time.perf_counter() - start
            lines = [x for x in done.stderr.strip().splitlines() if x.strip()]
            last = lines[-1] if lines else ""
            want = 2 if case in EXPECTED_2 else 1
            ok = done.returncode == want and last.startswith("pabench: error:") and "Traceback" not in done.stderr
            ok = ok or (want == 2 and done.returncode == 2 and "Traceback" not in done.stderr)
            failed += not ok
            shown = last.replace("|", "\\|").replace(d + "/", "").replace(d, ".")
            print(f"| `pabench {case}` | {done.returncode}{'' if ok else ' **unexpected**'} | {shown} | {took:.1f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
