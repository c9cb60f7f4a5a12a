"""Host cost of the decode hot path: append_token + PagedBackend.grow for 256 sequences x 300 steps (CPU).

    PYTHONPATH=. python3 benchmarks/grow_bench.py
"""
import time, statistics
from pabench.backends import KVLayout
from pabench.backends.paged import PagedBackend
from pabench.core import Sequence
L = KVLayout(1, 1, 8, "fp32")
def once():
    b = PagedBackend(L, page_size=16, num_pages=256 * 80, max_num_seqs=256, max_model_len=2048)
    seqs = [Sequence(i, [1 + i % 50] * (50 + i)) for i in range(256)]
    for s in seqs:
        b.admit(s, 2048); s.num_computed_tokens = s.num_tokens
    t0 = time.perf_counter()
    for _ in range(300):
        for s in seqs:
            s.append_token(3)
        for s in seqs:
            b.grow(s)
    return (time.perf_counter() - t0) / (300 * 256) * 1e6
print("us per append_token+grow:", round(statistics.median(once() for _ in range(5)), 3))
