"""Tensor-parallel evidence helpers for benchmarks/gpu_tp.sh (issue 20).

  agree:     serve one small run at TP=1 and at TP=N (each in its own ranks, via pabench.parallel.launch) and
             compare every model step's logits (max abs, relative norm), the schedule and the output tokens.
  summarize: read the script's run CSVs (`<tag>_tp<N>.csv`; `<tag>-samepages` against `<tag>`'s TP=1) and print, per model and backend, output tok/s at each
             TP, the speedup and scaling efficiency (speedup / N), the per-GPU KV budget and tokens it holds, and
             the host time per decode step (host_pct x mean decode step).

CPU smoke check (gloo): python benchmarks/tp_check.py agree --device cpu --model tiny --tp 2
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def serve(model: str, layers: int | None, device: str, dtype: str | None, num_requests: int, backend: str,
          tensor_parallel: int, num_pages: int) -> dict:
    """One rank's run of the check (rank 0's dict comes back): logits of every step on the host, the schedule, tokens."""
    import dataclasses

    from pabench.bench.runner import RunConfig, prepare, run_backend

    p = prepare(RunConfig(workload="sharegpt-like", backends=(backend,), model=model, layers=layers, device=device,
                          dtype=dtype, num_requests=num_requests, num_pages=num_pages, max_model_len=2048,
                          warmup=False, cuda_graphs=False, async_scheduling=False, tensor_parallel=tensor_parallel))
    logits, forward = [], p.model.forward

    def logged(*args, **kwargs):
        out = forward(*args, **kwargs)  # [n, vocab]
        logits.append(out.float().cpu())
        return out

    p.model.forward = logged
    record = run_backend(p, backend)
    return {"logits": logits, "steps": [dataclasses.astuple(s)[1:6] for s in record.steps],
            "tokens": record.output_token_ids, "preemptions": record.num_preemptions}


def agree(args: argparse.Namespace) -> int:
    import torch

    from pabench.bench.runner import token_agreement
    from pabench.engine.records import RunRecord
    from pabench.parallel import launch

    kwargs = dict(model=args.model, layers=args.layers, device=args.device, dtype=args.dtype,
                  num_requests=args.num_requests, backend=args.backend, num_pages=args.num_pages)
    one = launch(serve, {**kwargs, "tensor_parallel": 1}, 1)
    many = launch(serve, {**kwargs, "tensor_parallel": args.tp}, args.tp)
    same_schedule = one["steps"] == many["steps"]
    worst_abs = worst_rel = 0.0
    if same_schedule:
        for a, b in zip(one["logits"], many["logits"]):
            worst_abs = max(worst_abs, float((a - b).abs().max()))
            worst_rel = max(worst_rel, float((a - b).norm() / a.norm().clamp_min(1e-30)))
    match = token_agreement(RunRecord("tp1", {}, output_token_ids=one["tokens"]),
                            RunRecord(f"tp{args.tp}", {}, output_token_ids=many["tokens"]))
    print(f"{args.model} layers={args.layers} {args.backend} {args.device} dtype={args.dtype}: TP={args.tp} vs TP=1: "
          f"{len(one['steps'])} vs {len(many['steps'])} steps, same schedule {same_schedule}, preemptions "
          f"{one['preemptions']} vs {many['preemptions']}, logits max abs diff {worst_abs:.3g}, max relative "
          f"(norm) diff {worst_rel:.3g}, output tokens equal {match['token_match_pct']:.1f}%, whole requests "
          f"{match['request_match_pct']:.1f}% (torch {torch.__version__})")
    return 0 if same_schedule or args.device == "cuda" else 1


def summarize(args: argparse.Namespace) -> int:
    runs: dict[tuple[str, str], dict[int, dict]] = {}
    for path in sorted(Path(args.dir).glob("*_tp*.csv")):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                key = (path.stem.rsplit("_tp", 1)[0], row["backend"])
                runs.setdefault(key, {})[int(row["tensor_parallel"])] = row
    print("model | backend | TP | out tok/s | speedup | efficiency | KV budget per GPU | KV tokens | "
          "host ms per decode step | preemptions")
    from pabench.units import format_bytes

    for (model, backend), by_tp in runs.items():
        one = runs.get((model.removesuffix("-samepages"), backend), {}).get(1)  # TP=1 of the same model
        base = float(one["output_tok_per_s"]) if one else None
        for tp, row in sorted(by_tp.items()):
            tok = float(row["output_tok_per_s"])
            speedup = tok / base if base else float("nan")
            host = float(row["host_pct"] or "nan") * float(row["decode_step_mean_ms"] or "nan") / 100
            print(f"{model} | {backend} | {tp} | {tok:.0f} | {speedup:.2f} | {speedup / tp:.2f} | "
                  f"{format_bytes(int(row['kv_budget_bytes']))} | {row['capacity_num_tokens']} | {host:.2f} | "
                  f"{row['num_preemptions']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("agree")
    a.add_argument("--model", default="llama-3-8b")
    a.add_argument("--layers", type=int, default=None)
    a.add_argument("--device", default="cuda")
    a.add_argument("--dtype", default=None)
    a.add_argument("--tp", type=int, default=2)
    a.add_argument("--num-requests", type=int, default=16)
    a.add_argument("--num-pages", type=int, default=2048)
    a.add_argument("--backend", default="paged")
    s = sub.add_parser("summarize")
    s.add_argument("dir")
    args = parser.parse_args(argv)
    return agree(args) if args.what == "agree" else summarize(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
