"""Issue 15, target 4: the block manager's decode loop against a minimal deque-based manager (CPU, pure Python).

    PYTHONPATH=. python3 benchmarks/block_manager_bench.py [--seqs 256] [--steps 256] [--repeats 7]

256 sequences (prompts 16..527 tokens, no shared prefix) decode 256 steps each, page size 16. Timed per variant
(median of `--repeats`, the variants interleaved so that a noisy machine slows them alike):
  minimal     `MinimalManager`: a deque of free page ids and a list per sequence, no ref counts, no hashing;
  per-seq     `append_token` + `BlockManager.append_slot` per sequence (the teaching API), prefix caching off;
  batched     `append_token` per sequence + one `BlockManager.append_slots` per step (the engine's path);
  batched+pc  the same with prefix caching on (filled pages are hashed as the next page opens).
Every variant appends the same tokens to the same `Sequence` objects, so the ratios isolate the manager.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pabench.core import BlockManager, Sequence  # noqa: E402

PAGE_SIZE = 16


class MinimalManager:
    """The least a paged allocator must do: free ids in a deque, a page list per sequence, a page per 16 tokens."""

    def __init__(self, num_pages: int, page_size: int) -> None:
        self.free = deque(range(num_pages))
        self.page_size = page_size
        self.tables: dict[int, list[int]] = {}

    def allocate(self, seq: Sequence) -> None:
        self.tables[seq.seq_id] = [self.free.popleft() for _ in range(-(-seq.num_tokens // self.page_size))]

    def append_slot(self, seq: Sequence) -> None:
        if seq.num_tokens % self.page_size == 1:  # the newest token opens a page
            self.tables[seq.seq_id].append(self.free.popleft())


def make_seqs(num_seqs: int) -> list[Sequence]:
    return [Sequence(i, [1 + (7 * i + j) % 31_999 for j in range(16 + (97 * i) % 512)]) for i in range(num_seqs)]


def num_pool_pages(num_seqs: int, steps: int) -> int:
    return num_seqs * (-(-(528 + steps) // PAGE_SIZE) + 1)


def _per_seq_loop(seqs: list[Sequence], append_slot, steps: int) -> float:
    """Seconds for `steps` rounds of `append_token` + `append_slot` per sequence."""
    t0 = time.perf_counter()
    for step in range(steps):
        for s in seqs:
            s.append_token(step + 1)
            append_slot(s)
    return time.perf_counter() - t0


def time_variant(variant: str, num_seqs: int, steps: int) -> float:
    """Seconds for `steps` decode steps of `num_seqs` sequences (allocation untimed)."""
    seqs = make_seqs(num_seqs)
    if variant == "minimal":
        mm = MinimalManager(num_pool_pages(num_seqs, steps), PAGE_SIZE)
        for s in seqs:
            mm.allocate(s)
        return _per_seq_loop(seqs, mm.append_slot, steps)
    bm = BlockManager(num_pool_pages(num_seqs, steps), PAGE_SIZE, enable_prefix_caching=variant == "batched+pc")
    for s in seqs:
        bm.allocate(s)
    if variant == "per-seq":
        return _per_seq_loop(seqs, bm.append_slot, steps)
    append_slots = bm.append_slots
    t0 = time.perf_counter()
    for step in range(steps):
        for s in seqs:
            s.append_token(step + 1)
        append_slots(seqs)
    elapsed = time.perf_counter() - t0
    bm.check_invariants()
    return elapsed


VARIANTS = ("minimal", "per-seq", "batched", "batched+pc")


def measure(num_seqs: int = 256, steps: int = 256, repeats: int = 7) -> dict[str, float]:
    """Median seconds per variant, variants interleaved."""
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for v in VARIANTS:
            times[v].append(time_variant(v, num_seqs, steps))
    return {v: statistics.median(t) for v, t in times.items()}


def ratios(medians: dict[str, float]) -> dict[str, float]:
    """Issue 15's three ratios: per-seq / minimal, batched / minimal, prefix caching on / off (batched)."""
    return {"per_seq_over_minimal": medians["per-seq"] / medians["minimal"],
            "batched_over_minimal": medians["batched"] / medians["minimal"],
            "prefix_on_over_off": medians["batched+pc"] / medians["batched"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", type=int, default=256)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    medians = measure(args.seqs, args.steps, args.repeats)
    per_token = 1e9 / (args.seqs * args.steps)
    for v, t in medians.items():
        print(f"{v:11s} {t * 1e3:8.1f} ms  {t * per_token:6.0f} ns per sequence-step")
    for k, r in ratios(medians).items():
        print(f"{k:22s} {r:.2f}")


if __name__ == "__main__":
    main()
