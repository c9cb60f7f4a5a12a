"""Host work of one decode step at batch 256, per backend (no model): the scheduler's grow of every sequence,
staging the batch's inputs exactly as a CUDA-graph decode step does (block-table flush, one descriptor copy per
staged buffer), and the engine's per-token bookkeeping: the Python that runs between two graph replays. The
device side of staging (`decode_meta`, `apply`) is captured in the graph on a GPU, so it runs untimed here.

    PYTHONPATH=. python3 benchmarks/host_bench.py [--batch 256] [--steps 200] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pabench.backends import KVLayout, make_backend
from pabench.core import Sequence
from pabench.backends.staging import StagedBatch
from pabench.engine.attention import decode_token_fields
from pabench.engine.engine import Engine
from pabench.engine.scheduler import Scheduler, SchedulerConfig, SeqState


def one_run(name: str, batch: int, steps: int, device: str, page_size: int = 16) -> dict[str, float]:
    layout = KVLayout(1, 1, 8, "fp32", device=device)
    backend = make_backend(name, layout, kv_budget_bytes=batch * 2048 * layout.bytes_per_token, page_size=page_size,
                           max_num_seqs=batch, max_model_len=2048, attn_impl="torch")
    sched = Scheduler(backend, SchedulerConfig(max_num_seqs=batch, max_batched_tokens=10**6, max_model_len=2048))
    states = [SeqState(Sequence(i, [1 + i % 97] * (40 + i % 300)), i, 0, 40 + i % 300, 1000) for i in range(batch)]
    for st in states:
        sched.add(st)
    step = sched.schedule()  # one prefill step admits everyone
    for st in step.states:
        st.seq.num_computed_tokens = st.seq.num_tokens
        st.seq.append_token(5)
    inputs = StagedBatch(batch, (0, 0), torch.int64, device)  # token ids and positions, as GraphedDecode stages them
    out = torch.full((batch,), 7, dtype=torch.int64, device=device)  # [batch] "sampled" tokens
    cuda = device.startswith("cuda")
    t_sched, t_stage, t_book = [], [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        step = sched.schedule()  # decode: grow every sequence
        t1 = time.perf_counter()
        seqs = [st.seq for st in step.states]
        backend.stage_decode(seqs, batch)
        inputs.stage(seqs, batch, decode_token_fields)
        t2 = time.perf_counter()
        backend.decode_meta(batch)  # the device side of staging: inside the captured graph on a GPU, so untimed
        inputs.apply(batch, fresh_keys=out)
        if cuda:
            torch.cuda.synchronize()  # the replay would run here
        t2b = time.perf_counter()
        now = time.perf_counter()
        finished = []
        for st in step.states:  # what Engine._execute does per token of a decode step
            Engine._append(st, 7, now, finished)
        t3 = time.perf_counter()
        t_sched.append(t1 - t0)
        t_stage.append(t2 - t1)
        t_book.append(t3 - t2b)
    med = lambda xs: statistics.median(xs) * 1e6  # noqa: E731
    return {"schedule_us": med(t_sched), "stage_us": med(t_stage), "bookkeeping_us": med(t_book),
            "total_us": med([a + b + c for a, b, c in zip(t_sched, t_stage, t_book)])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--backends", default="paged,contiguous-oracle")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--page-sizes", default="16", help="paged runs per page size: at 256 about one page opens per "
                    "step, so paged's schedule minus oracle's is the cost of the pages that open")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.backends.split(","):
        for page_size in [int(p) for p in args.page_sizes.split(",")] if name.startswith("paged") else [16]:
            one_run(name, args.batch, 20, args.device, page_size)  # warm-up: first CUDA copies, allocator
            r = one_run(name, args.batch, args.steps, args.device, page_size)
            label = f"{name} p{page_size}" if name.startswith("paged") else name
            print(f"{label:<18} {args.device} batch {args.batch}: " + "  ".join(f"{k} {v:7.1f}" for k, v in r.items()),
                  flush=True)


if __name__ == "__main__":
    main()
