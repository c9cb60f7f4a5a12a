"""Micro-benchmark of the block manager's hot path: allocate + decode appends + free, 256 sequences.

Workload (seeded): prompts of 16..2048 tokens, half of them opening with one of 4 shared 512-token system
prompts; every 8th request samples twice (fork, so copy-on-write happens); 1..96 decode tokens each, appended
round-robin like continuous batching; a sequence is freed when done. Page size 16.
Reported: pages per second = (page-table entries acquired + released) / seconds of one round.
"""

import random
import time

import pytest

from pabench.core import BlockManager, Sequence

NUM_SEQS = 256
PAGE_SIZE = 16
MAX_PROMPT = 2048
NUM_POOL_PAGES = 48_000  # room for every sequence at once: the benchmark measures bookkeeping, not preemption


def make_workload(seed: int = 0) -> list[tuple[list[int], int, bool]]:
    """(prompt token ids, number of output tokens, forks?) per request."""
    rng = random.Random(seed)
    system_prompts = [[rng.randrange(32_000) for _ in range(512)] for _ in range(4)]
    requests = []
    for i in range(NUM_SEQS):
        length = rng.randint(16, MAX_PROMPT)
        prompt = [rng.randrange(32_000) for _ in range(length)]
        if i % 2 == 0 and length > 512:
            prompt[:512] = system_prompts[rng.randrange(4)]
        requests.append((prompt, rng.randint(1, 96), i % 8 == 0))
    return requests


def run_round(bm: BlockManager, seqs: list[Sequence], num_outputs: dict[int, int], forks: set[int]) -> int:
    """Admit every sequence, decode until all finish, free them. Returns page-table entries acquired + released."""
    num_page_ops = 0
    running = []
    next_id = len(seqs)
    for seq in seqs:
        assert bm.can_allocate(seq)
        bm.allocate(seq)
        num_page_ops += len(seq.page_table)
        running.append(seq)
        if seq.seq_id in forks:
            child = seq.fork(next_id)
            next_id += 1
            bm.fork(seq, child)
            num_outputs[child.seq_id] = num_outputs[seq.seq_id]
            num_page_ops += len(child.page_table)
            running.append(child)
    step = 0
    while running:
        still_running = []
        for seq in running:
            seq.append_token((seq.seq_id * 31 + step) % 32_000)
            num_pages = len(seq.page_table)
            if bm.append_slot(seq) is not None:
                num_page_ops += 2  # copy-on-write: one page released, one acquired
            num_page_ops += len(seq.page_table) - num_pages
            if seq.num_output_tokens >= num_outputs[seq.seq_id]:
                num_page_ops += len(seq.page_table)
                bm.free(seq)
            else:
                still_running.append(seq)
        running = still_running
        step += 1
    return num_page_ops


@pytest.mark.parametrize("prefix_caching", [False, True], ids=["no_prefix_cache", "prefix_cache"])
def test_block_manager_pages_per_second(benchmark, prefix_caching):
    requests = make_workload()
    timings: list[float] = []
    page_ops: list[int] = []
    state: dict = {}

    def setup():
        bm = BlockManager(NUM_POOL_PAGES, PAGE_SIZE, prefix_caching)
        seqs = [Sequence(i, prompt) for i, (prompt, _, _) in enumerate(requests)]
        num_outputs = {i: n for i, (_, n, _) in enumerate(requests)}
        forks = {i for i, (_, _, fork) in enumerate(requests) if fork}
        state["bm"] = bm
        return (bm, seqs, num_outputs, forks), {}

    def timed(bm, seqs, num_outputs, forks):
        start = time.perf_counter()
        page_ops.append(run_round(bm, seqs, num_outputs, forks))
        timings.append(time.perf_counter() - start)

    benchmark.pedantic(timed, setup=setup, rounds=5, iterations=1, warmup_rounds=1)

    bm = state["bm"]  # the last round's manager: everything must be back
    bm.check_invariants()
    assert bm.num_free_pages == bm.num_pages and bm.num_used_pages == 0
    assert len(set(page_ops)) == 1, "rounds must be identical (deterministic workload)"
    if prefix_caching:
        assert bm.prefix_hit_tokens > 0 and bm.num_cached_pages > 0
    else:
        assert bm.prefix_hit_tokens == 0 and bm.num_cached_pages == 0
    assert bm.num_cow_copies > 0
    seconds = sorted(timings)[len(timings) // 2]
    assert seconds < 1.0, f"one round took {seconds:.2f} s"
    pages_per_second = page_ops[0] / seconds
    benchmark.extra_info.update(pages_per_second=round(pages_per_second), page_ops=page_ops[0],
                                round_seconds=seconds, prefix_hit_rate=round(bm.prefix_hit_rate, 4),
                                num_cow_copies=bm.num_cow_copies)
    print(f"\nblock manager ({'prefix cache' if prefix_caching else 'no prefix cache'}): "
          f"{page_ops[0]} page ops in {seconds * 1e3:.1f} ms = {pages_per_second / 1e6:.2f} M pages/s, "
          f"prefix hit rate {bm.prefix_hit_rate:.1%}, {bm.num_cow_copies} CoW copies")


def _block_manager_bench():
    """benchmarks/block_manager_bench.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "block_manager_bench.py"
    spec = importlib.util.spec_from_file_location("block_manager_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decode_loop_stays_near_a_minimal_manager():
    """Issue 15's target 4 as a guard: the decode loop (256 sequences x 256 steps, page 16) against a minimal deque
    manager, all variants interleaved in this process. Targets: per-sequence API <= 2.5x, the engine's batched
    path <= 1.5x, prefix caching on <= 1.3x off; measured 1.61x / 1.32x / 1.22x (benchmarks/NOTES.md). The bounds
    leave room for a noisy CI machine but not for the old per-page path (2.75x / 1.65x)."""
    bench = _block_manager_bench()
    ratios = bench.ratios(bench.measure(num_seqs=256, steps=256, repeats=5))
    assert ratios["per_seq_over_minimal"] <= 2.5, ratios
    assert ratios["batched_over_minimal"] <= 1.6, ratios
    assert ratios["prefix_on_over_off"] <= 1.45, ratios
