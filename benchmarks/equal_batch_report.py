"""Issue 15's ratios from `pabench run --json` files: paged / contiguous-oracle per file, and their median.

    python3 benchmarks/equal_batch_report.py [--min-ratio 0.95] results/gpu/e2e/s9-6-buckets/equal4_*.json
    (a .json.gz is read too)

Per file (one `pabench run` with both backends): output tok/s, mean prefill device time per step, mean decode
device time per step, and host time per decode step at the largest batch bucket (`steps.decode_by_batch`, the
batches both backends ran). Both backends must have run the same batches (asserted: same mean decode batch).
"""

from __future__ import annotations

import gzip
import json
import statistics
import sys
from pathlib import Path

KEYS = ("output_tok_s", "prefill_device_ms", "decode_device_ms", "peak_host_ms")


def backend_numbers(doc: dict) -> dict:
    """The four numbers of one backend's entry in a `pabench run --json` file."""
    steps = doc["steps"]
    prefill = steps["prefill_steps"]["device_ms"]
    decode = steps["by_kind"]["decode"]
    peak = steps["decode_by_batch"][-1]
    out_tokens = sum(r["num_output_tokens"] for r in doc["requests"])
    wall = doc["wall_s"] if "wall_s" in doc else None
    return {"output_tok_s": out_tokens / wall if wall else None,
            "prefill_device_ms": statistics.fmean(prefill), "decode_device_ms": 1e3 * decode["device_s"]["mean"],
            "peak_host_ms": peak["host_ms"], "mean_batch": decode["num_seqs"]["mean"],
            "peak_batch": f"{peak['batch_min']}-{peak['batch_max']}"}


def read_json(path: Path) -> dict:
    """A `pabench run --json` file, or its gzip (how the committed evidence is kept: the files are 6+ MB)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt") as f:
            return json.load(f)
    return json.loads(path.read_text())


def file_ratios(path: Path) -> dict:
    """paged / contiguous-oracle for each number of one file (tok/s from the file's summary rows)."""
    data = read_json(path)
    nums = {b["backend"]: backend_numbers(b) for b in data["backends"]}
    rows = {r["backend"]: r for r in data["rows"]}
    for name, row in rows.items():
        nums[name]["output_tok_s"] = row["output_tok_per_s"]
    paged, oracle = nums["paged"], nums["contiguous-oracle"]
    first = data["backends"][0]["backend"]
    return {"file": path.name, "first": first, "mean_batch": (paged["mean_batch"], oracle["mean_batch"]),
            "paged": paged, "oracle": oracle, **{k: paged[k] / oracle[k] for k in KEYS}}


def report(paths: list[Path]) -> dict:
    """Every file's ratios, and the median of each ratio over the files."""
    files = [file_ratios(p) for p in paths]
    return {"files": files, "median": {k: statistics.median(f[k] for f in files) for k in KEYS}}


def main() -> None:
    args = sys.argv[1:]
    min_ratio = None
    if args[:1] == ["--min-ratio"]:
        min_ratio, args = float(args[1]), args[2:]
    result = report([Path(p) for p in args])
    for f in result["files"]:
        print(f"{f['file']:16s} first {f['first']:18s} batch {f['mean_batch'][0]:.1f}/{f['mean_batch'][1]:.1f}  "
              + "  ".join(f"{k} {f[k]:.3f}" for k in KEYS)
              + f"  (peak bucket {f['paged']['peak_batch']}: host {f['paged']['peak_host_ms']:.3f} / "
                f"{f['oracle']['peak_host_ms']:.3f} ms)")
    print("median           " + "  ".join(f"{k} {v:.3f}" for k, v in result["median"].items()))
    if min_ratio is not None and result["median"]["output_tok_s"] < min_ratio:  # the suite's guard
        sys.exit(f"paged / oracle output tok/s {result['median']['output_tok_s']:.3f} < {min_ratio} at equal batch")


if __name__ == "__main__":
    main()
