"""Scheduling-only replay: the real scheduler, block manager and backends, a micro model, no GPU.

Preemptions, decode/prefill step counts, batch sizes and recomputed tokens depend only on the workload's
lengths, the KV budget in tokens and the scheduler, not on the model's speed. So they can be replayed on a
CPU in seconds, and a GPU lease spent only on the configurations worth timing. (It reproduced the first
H200 sharegpt run exactly: 1730 preemptions, 2659 decode steps, 609 prefill steps.)

    python benchmarks/schedule_replay.py --workload sharegpt-like --budget-tokens 65536 --watermarks 0.01,0.04
"""

from __future__ import annotations

import argparse
import time

import torch

from pabench.backends import KVLayout, make_backend
from pabench.engine.engine import Engine
from pabench.engine.model import DecoderModel, ModelConfig
from pabench.engine.scheduler import SchedulerConfig
from pabench.bench.presets import load_workload
from pabench.bench.workloads import generate

MICRO = ModelConfig("replay", vocab_size=128, hidden_size=16, num_layers=1, num_q_heads=1, num_kv_heads=1,
                    head_dim=16, intermediate_size=16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="sharegpt-like")
    ap.add_argument("--budget-tokens", default="65536", help="comma-separated KV budgets in token slots")
    ap.add_argument("--backends", default="paged,contiguous-max,contiguous-pow2,contiguous-oracle")
    ap.add_argument("--watermarks", default="0.04", help="paged only, comma-separated fractions")
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--min-prefill-seqs", default="1", help="comma-separated values to compare")
    ap.add_argument("--cost", default="5.5,0.028,12.5,0.02",
                    help="step-cost model in ms: decode a + b*batch, prefill c + d*tokens (default: fitted to the "
                         "H200 llama-3-8b runs of 2026-11-30); prints the predicted serving time")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = DecoderModel(MICRO, seed=0, max_position=args.max_model_len + 1)
    reqs = generate(load_workload(args.workload), vocab_size=MICRO.vocab_size, max_model_len=args.max_model_len)
    layout = KVLayout(1, 1, MICRO.head_dim, "fp32")
    a, b, c, d = (float(x) for x in args.cost.split(","))
    for tokens, mps in ((int(t), int(m)) for t in args.budget_tokens.split(",") for m in args.min_prefill_seqs.split(",")):
        sched = SchedulerConfig(args.max_num_seqs, 8192, args.max_model_len, min_prefill_seqs=mps)
        for name in args.backends.split(","):
            for wm in ([float(w) for w in args.watermarks.split(",")] if name.startswith("paged") else [0.0]):
                t0 = time.perf_counter()
                backend = make_backend(name, layout, kv_budget_bytes=tokens * layout.bytes_per_token,
                                       page_size=args.page_size, max_num_seqs=args.max_num_seqs,
                                       max_model_len=args.max_model_len, attn_impl="torch", watermark=wm)
                rec = Engine(model, backend, sched).run(reqs, realtime=False)
                dec = [s for s in rec.steps if s.kind == "decode"]
                pre = [s for s in rec.steps if s.kind == "prefill"]
                predicted = (sum(a + b * s.num_seqs for s in dec) + sum(c + d * s.num_tokens for s in pre)) / 1e3
                print(f"budget {tokens:>7} tokens  min_prefill_seqs {mps:<3} {name:<18} watermark {wm:<5}  "
                      f"preemptions {rec.num_preemptions:>5}  predicted {predicted:6.1f} s  "
                      f"decode steps {len(dec):>6}  mean batch {sum(s.num_seqs for s in dec) / len(dec):6.1f}  "
                      f"prefill steps {len(pre):>5}  computed prefill tokens {sum(s.num_tokens for s in pre):>7}  "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
