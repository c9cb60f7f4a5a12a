"""One device call: GPU correctness tests, a tuning sweep of the Triton decode kernel, the kernel benchmark.

Run from the repository root on a CUDA machine:
    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/gpu_kernels.py --out $OUT
Writes under --out: gpu_tests.log, sweep.csv, kernels.csv, kernels.json, summary.txt. Prints a short table last.
Stage "graphs" repeats the page-16 bench with each call captured in a CUDA graph (`pabench kernels --cuda-graphs`),
so the launch-bound case (d) reads device time and its paged/contiguous ratio compares kernels, not Python; it
also times (d) under 12 tilings that way (graphs_d_tilings.csv). Stage "small" times the engine's small decode
batches (1-32 sequences, lognormal lengths up to 2048) under the heuristic's tiling and five others, as graph
replays (graphs_small_tilings.csv).
Stages stop early (and say so) once --budget-s seconds have passed, so the call ends inside its limit.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from pabench.report.kernels import kernel_summary
from pabench.kernelbench.run import (NAMED_CASES, CaseSpec, KernelBenchConfig, case_lengths, copy_bandwidth_gbps,
                                 make_decode_data, paginate, run_kernel_bench, shrink_for_cpu, time_us)
from pabench.kernels import (DecodeConfig, contiguous_decode_attention, contiguous_decode_reference,
                             paged_decode_attention)
from pabench.kernels.checks import DecodeShape
from pabench.kernels.tiling import choose_decode_config

START = time.time()


def elapsed() -> float:
    return time.time() - START


def log(message: str) -> None:
    print(f"[{elapsed():6.1f}s] {message}", flush=True)


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def save_rows(out: Path, rows: list[dict]) -> None:
    """Rewrite kernels.csv/json after every stage, so a call cut short still returns what it measured."""
    write_csv(out / "kernels.csv", rows)
    (out / "kernels.json").write_text(json.dumps(rows, indent=1, default=str))


def run_tests(out: Path) -> str:
    """pytest -m gpu over tests/kernels, 4 workers (compiles dominate); returns pytest's last line."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/kernels", "-p", "no:cacheprovider", "-n", "4"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    (out / "gpu_tests.log").write_text(result.stdout + result.stderr)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return f"rc={result.returncode}: {lines[-1] if lines else 'no output'}"


def sweep(cases: list[str] | dict[str, CaseSpec], configs: list[DecodeConfig], copy_bw: float, budget_s: float,
          rows: list[dict], device: torch.device, page_size: int = 16, contiguous: bool = False,
          cuda_graph: bool = False, max_len: int | None = None) -> None:
    """Time triton-paged (and triton-contiguous) under each config on each case; one row each, with its error.
    cases: named cases, or {name: CaseSpec}; max_len clips lengths (an engine's max_model_len).
    cuda_graph: time CUDA-graph replays (device time; for the launch-bound case d)."""
    heads = (32, 8, 128) if device.type == "cuda" else (4, 2, 64)  # CPU: a dry run through the interpreter
    specs = cases if isinstance(cases, dict) else {case: NAMED_CASES[case] for case in cases}
    for case, spec in specs.items():
        lens = [min(n, max_len or n) for n in case_lengths(spec)]
        if device.type != "cuda":
            lens = shrink_for_cpu(spec, lens)[0][:2]
        data = make_decode_data(lens, *heads, torch.bfloat16, device, seed=0)
        k_cache, v_cache, table = paginate(data, page_size)
        ref = contiguous_decode_reference(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens).float()
        kv_bytes = 2 * sum(lens) * heads[1] * heads[2] * 2
        for cfg in configs:
            if elapsed() > budget_s:
                log(f"sweep: budget reached, skipping the rest of case {case}")
                break
            row = {"case": case, "batch": len(lens), "mean_len": sum(lens) / len(lens), "page_size": page_size,
                   "cuda_graph": cuda_graph, **cfg.__dict__}

            def paged(cfg=cfg):
                return paged_decode_attention(data.q, k_cache, v_cache, table, data.seq_lens, impl="triton",
                                              check_values=False, config=cfg)

            def contig(cfg=cfg):
                return contiguous_decode_attention(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens,
                                                   impl="triton", check_values=False, config=cfg)

            try:
                out = paged().float()
                row["rel_err"] = float((out - ref).norm() / ref.norm())
                median, p10, p90 = time_us(paged, device, 10, 40, cuda_graph=cuda_graph)
                row.update(median_us=median, p10_us=p10, p90_us=p90,
                           pct_of_copy_bw=100 * kv_bytes / (median * 1e-6) / 1e9 / copy_bw)
                if contiguous:
                    row["contig_rel_err"] = float((contig().float() - ref).norm() / ref.norm())
                    row["contig_us"] = time_us(contig, device, 10, 40, cuda_graph=cuda_graph)[0]
                    row["paged_over_contiguous"] = median / row["contig_us"]
            except Exception as err:  # noqa: BLE001 - a config that fails to compile is a row, not a crash
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:150] if str(err) else ''}"
            rows.append(row)
        data = k_cache = v_cache = table = ref = None  # free before the next case (closures above use them)
        if device.type == "cuda":
            torch.cuda.empty_cache()


SMALL_BATCHES = (1, 4, 8, 16, 32)
SMALL_CONTEXTS = (512, 2048)  # lognormal lengths around these, clipped to 2048 (the engine's max_model_len)


def small_stage(out: Path, copy_bw: float, budget_s: float, device: torch.device, summary: list[str],
                dry_run: bool) -> None:
    """Engine-like small decode batches under the heuristic's tiling and five others, paged and contiguous, as
    CUDA-graph replays (graphs_small_tilings.csv). The fifth session's (d) data says 2 stages + 4 items per SM
    beat the heuristic's 4 stages + 8 items by 7% (paged) / 13% (contiguous) there; this asks where else."""
    shapes = {f"B{b}-L{c}": CaseSpec(b, c, "lognormal") for b in SMALL_BATCHES for c in SMALL_CONTEXTS}
    heuristic = choose_decode_config(DecodeShape(8, 32, 8, 128, 16, 2048), torch.bfloat16)
    others = [DecodeConfig(block_n=64, num_stages=st, items_per_sm=it, prefetch_pages=pf)
              for st, it, pf in ((2, 4, True), (2, 4, False), (3, 4, False), (4, 4, False), (2, 8, True))]
    grid = [heuristic] + [c for c in others if c != heuristic]
    if dry_run:
        shapes, grid = dict(list(shapes.items())[:1]), grid[:2]
    log(f"small batches: {len(shapes)} shapes x {len(grid)} tilings, heuristic {heuristic}")
    rows: list[dict] = []
    sweep(shapes, grid, copy_bw, budget_s, rows, device, contiguous=True, cuda_graph=device.type == "cuda",
          max_len=2048)
    for r in rows:
        r["heuristic"] = all(r[k] == v for k, v in heuristic.__dict__.items())
    write_csv(out / "graphs_small_tilings.csv", rows)
    for case in shapes:
        timed = [r for r in rows if r["case"] == case and "median_us" in r and "contig_us" in r]
        mine = [r for r in timed if r["heuristic"]]
        if not timed or not mine:
            continue
        bp = min(timed, key=lambda r: r["median_us"])
        bc = min(timed, key=lambda r: r["contig_us"])
        summary.append(f"small {case}: paged heuristic {mine[0]['median_us']:.1f} us, best {bp['median_us']:.1f} "
                       f"(st {bp['num_stages']} items {bp['items_per_sm']} pf {bp['prefetch_pages']}); contiguous "
                       f"heuristic {mine[0]['contig_us']:.1f}, best {bc['contig_us']:.1f} (st {bc['num_stages']} "
                       f"items {bc['items_per_sm']})")


def best(rows: list[dict], case: str) -> DecodeConfig | None:
    timed = [r for r in rows if r["case"] == case and "median_us" in r and r["rel_err"] < 2e-2]
    if not timed:
        return None
    top = min(timed, key=lambda r: r["median_us"])
    fields = DecodeConfig.__dataclass_fields__
    return DecodeConfig(**{k: top[k] for k in fields})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stages", default="tests,bench,sweep,pages,flex")
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--sweep", default="full", choices=["full", "short"])
    parser.add_argument("--dry-run", action="store_true", help="CPU + TRITON_INTERPRET=1, tiny shapes: check the script")
    args = parser.parse_args()
    device = torch.device("cpu" if args.dry_run else "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    summary: list[str] = [f"device: {name}  torch {torch.__version__}  triton {__import__('triton').__version__}"]
    smi = subprocess.run(["nvidia-smi" if device.type == "cuda" else "true", "--query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu",
                          "--format=csv,noheader"], capture_output=True, text=True)
    summary.append(f"nvidia-smi: {smi.stdout.strip()}")
    if "tests" in stages:
        log("GPU tests")
        summary.append(f"gpu tests: {run_tests(args.out)}")
        log(summary[-1])
    copy_bw = copy_bandwidth_gbps(device, 25, 100)
    summary.append(f"copy bandwidth (read + write): {copy_bw:.0f} GB/s")
    log(summary[-1])

    rows: list[dict] = []
    if "bench" in stages:
        log("kernel bench: all cases, page 16, every impl but FlexAttention (last: a device assert there kills the context)")
        cfg = KernelBenchConfig(case="all", page_sizes=(16,), device=device.type,
                                impls=("triton-paged", "triton-contiguous", "torch-sdpa", "gather+sdpa", "flashinfer-paged"))
        if args.dry_run:
            cfg = KernelBenchConfig(case="custom", batch=2, context=40, page_sizes=(16,), num_q_heads=4, num_kv_heads=2,
                                    head_dim=64, device="cpu", warmup_ms=1, rep_ms=2,
                                    impls=("triton-paged", "triton-contiguous", "torch-sdpa", "gather+sdpa", "flex-paged"))
        rows += run_kernel_bench(cfg, progress=log)
        save_rows(args.out, rows)
    if "graphs" in stages:  # the same cases timed as CUDA-graph replays: device time, without Python and launches
        log("kernel bench with --cuda-graphs: all cases, page 16, Triton paged and contiguous, SDPA")
        cfg = KernelBenchConfig(case="all", page_sizes=(16,), device=device.type, cuda_graphs=True,
                                impls=("triton-paged", "triton-contiguous", "torch-sdpa"))
        if args.dry_run:
            cfg = KernelBenchConfig(case="custom", batch=2, context=40, page_sizes=(16,), num_q_heads=4, num_kv_heads=2,
                                    head_dim=64, device="cpu", warmup_ms=1, rep_ms=2, cuda_graphs=True,
                                    impls=("triton-paged", "triton-contiguous"))
        rows += run_kernel_bench(cfg, progress=log)
        save_rows(args.out, rows)
        # (d) as graph replays under a few tilings: does loading page ids a tile ahead close paged/contiguous there?
        d_grid = [DecodeConfig(block_n=64, num_stages=st, items_per_sm=it, prefetch_pages=pf)
                  for pf in (False, True) for st in (2, 3, 4) for it in (4, 8)]
        d_rows: list[dict] = []
        sweep(["d"], d_grid[:1] if args.dry_run else d_grid, copy_bw, args.budget_s, d_rows, device, contiguous=True,
              cuda_graph=True)
        write_csv(args.out / "graphs_d_tilings.csv", d_rows)
        for r in sorted((r for r in d_rows if "median_us" in r), key=lambda r: r["median_us"])[:4]:
            summary.append(f"graphs (d) {r['median_us']:.1f} us p/c {r.get('paged_over_contiguous', float('nan')):.3f} "
                           f"st {r['num_stages']} items {r['items_per_sm']} prefetch {r['prefetch_pages']}")
    if "small" in stages:  # the engine's small decode batches, as graph replays: is the heuristic's tiling right?
        small_stage(args.out, copy_bw, args.budget_s, device, summary, args.dry_run)
    sweep_rows: list[dict] = []
    if "sweep" in stages:
        grid = [DecodeConfig(block_n=bn, num_warps=w, num_stages=s)
                for bn, w, s in itertools.product((32, 64, 128), (4, 8), (2, 3, 4))]
        if args.sweep == "short" or args.dry_run:
            grid = grid[:2] if args.dry_run else []
        default = [choose_decode_config(DecodeShape(64, 32, 8, 128, 16, 4096), torch.bfloat16)]
        log(f"sweep stage 1: {len(grid)} tilings on (a), (b), (c); heuristic default {default[0]}")
        sweep(["a", "b", "c"], default + grid, copy_bw, args.budget_s * 0.75, sweep_rows, device)
        for case in ("a", "b", "c", "d"):
            base = best(sweep_rows, case) or default[0]
            splits = [DecodeConfig(**{**base.__dict__, "items_per_sm": n}) for n in (4, 8, 16, 32, 64, 128)]
            splits += [DecodeConfig(**{**base.__dict__, "merge_block": m, "merge_warps": mw})
                       for m, mw in ((8, 1), (32, 4))]
            splits = splits[:2] if args.dry_run else splits
            log(f"sweep stage 2 on ({case}) around {base}")
            sweep([case], splits, copy_bw, args.budget_s * 0.9, sweep_rows, device)
            write_csv(args.out / "sweep.csv", sweep_rows)
        for case in ("a", "b", "c", "d"):
            top = best(sweep_rows, case)
            timed = [r for r in sweep_rows if r["case"] == case and "median_us" in r]
            if top and timed:
                t = min(r["median_us"] for r in timed)
                summary.append(f"sweep ({case}) best {t:.1f} us  {min(timed, key=lambda r: r['median_us'])['pct_of_copy_bw']:.1f}% : {top}")

    if "tune" in stages:
        grid = [DecodeConfig(block_n=bn, num_stages=st, items_per_sm=it, prefetch_pages=pf)
                for pf, bn, st, it in itertools.product((True, False), (64, 128), (2, 3, 4), (8, 16))]
        grid = grid[:2] if args.dry_run else grid
        log(f"tune: {len(grid)} configs on (a), (b), (c), paged and contiguous")
        sweep(["a", "b", "c"], grid, copy_bw, args.budget_s, sweep_rows, device, contiguous=True)
        d_grid = [DecodeConfig(block_n=64, num_stages=st, items_per_sm=it) for st in (2, 3) for it in (4, 8, 16)]
        sweep(["d"], d_grid[:1] if args.dry_run else d_grid, copy_bw, args.budget_s, sweep_rows, device,
              contiguous=True)
        write_csv(args.out / "sweep.csv", sweep_rows)
        for case in ("a", "b", "c", "d"):
            timed = [r for r in sweep_rows if r["case"] == case and "median_us" in r]
            for r in sorted(timed, key=lambda r: r["median_us"])[:3]:
                summary.append(f"tune ({case}) {r['median_us']:.1f} us {r['pct_of_copy_bw']:.1f}% "
                               f"p/c {r.get('paged_over_contiguous', float('nan')):.3f} bn {r['block_n']} "
                               f"st {r['num_stages']} items {r['items_per_sm']} prefetch {r['prefetch_pages']}")

    if "tuneb" in stages:
        grid = [DecodeConfig(num_stages=st, items_per_sm=16, prefetch_pages=pf) for st in (3, 4) for pf in (True, False)]
        log("tuneb: large-batch candidates on (b), paged and contiguous")
        sweep(["b"], grid[:1] if args.dry_run else grid, copy_bw, args.budget_s, sweep_rows, device, contiguous=True)
        write_csv(args.out / "sweep.csv", sweep_rows)
        for r in sweep_rows:
            if "median_us" in r:
                summary.append(f"tuneb {r['median_us']:.1f} us {r['pct_of_copy_bw']:.1f}% p/c "
                               f"{r.get('paged_over_contiguous', float('nan')):.3f} st {r['num_stages']} "
                               f"prefetch {r['prefetch_pages']}")

    if "pages" in stages and elapsed() < args.budget_s:
        log("kernel bench: (a), (b) over page sizes")
        for case in ("a", "b"):
            if elapsed() > args.budget_s:
                break
            cfg = KernelBenchConfig(case=case, page_sizes=(1, 8, 32, 64, 128, 256), device=device.type,
                                    impls=("triton-paged", "triton-contiguous", "gather+sdpa"))
            if args.dry_run:
                cfg = KernelBenchConfig(case="custom", batch=2, context=30, page_sizes=(1, 256), num_q_heads=4,
                                        num_kv_heads=2, head_dim=64, device="cpu", warmup_ms=1, rep_ms=2,
                                        impls=("triton-paged", "triton-contiguous"))
            rows += run_kernel_bench(cfg, progress=log)
            save_rows(args.out, rows)
    if "flex" in stages and elapsed() < args.budget_s:
        log("kernel bench: FlexAttention paged, all cases, page 16")
        flex_cfg = KernelBenchConfig(case="all", page_sizes=(16,), device=device.type, impls=("flex-paged",))
        if not args.dry_run:
            try:
                rows += run_kernel_bench(flex_cfg, progress=log)
            except Exception as err:  # noqa: BLE001 - keep every row measured so far
                summary.append(f"flex stage failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
            save_rows(args.out, rows)
    if rows:
        for timing in dict.fromkeys(r.get("timing") for r in rows):  # cuda-events, then cuda-graph replays
            summary.append(f"[timing: {timing}]")
            summary += kernel_summary([r for r in rows if r.get("timing") == timing])
        summary.append("")
        summary.append(f"{'case':5} {'impl':24} {'page':>4} {'median_us':>10} {'%copy':>6} {'p/c':>6} {'check':>6} timing")
        for r in rows:
            summary.append(f"{r['case']:5} {r['impl'][:24]:24} {str(r.get('page_size') or '-'):>4} "
                           f"{r.get('median_us', float('nan')):10.1f} {r.get('pct_of_copy_bw', float('nan')):6.1f} "
                           f"{r.get('paged_over_contiguous', float('nan')):6.3f} {r.get('check', '?'):>6} "
                           f"{r.get('timing', '')} {r.get('error', '')[:60]}")
    summary.append(f"total {elapsed():.0f}s")
    (args.out / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n".join(summary), flush=True)


if __name__ == "__main__":
    main()
