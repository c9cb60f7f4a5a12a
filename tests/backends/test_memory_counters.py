"""O(1) memory accounting: after every step of a serving run (forks, prefix hits, preemption), each backend's
`memory()` equals a brute-force count over the live sequences. Between steps every live sequence holds exactly
one just-sampled token that has no slot yet; paged counts each shared slot once."""

import pytest

from pabench.backends.paged import PagedBackend
from tests.engine.test_engine import model, requests, serve  # noqa: F401  (model is a fixture)


def brute_force_used_tokens(backend) -> int:
    live = backend._live.values()
    if isinstance(backend, PagedBackend):
        ps = backend.page_size
        return len({seq.page_table[p // ps] * ps + p % ps for seq in live for p in range(seq.num_tokens - 1)})
    return sum(seq.num_tokens - 1 for seq in live)


@pytest.mark.parametrize("name,prefix,samples", [("paged", False, 1), ("paged", True, 1), ("paged", False, 3),
                                                 ("contiguous-oracle", False, 1), ("contiguous-max", False, 2)])
def test_memory_matches_a_brute_force_count_after_every_step(model, name, prefix, samples, monkeypatch):  # noqa: F811
    checked = []

    def checking_memory(self):
        snap = memory(self)
        assert snap.used_bytes == brute_force_used_tokens(self) * self.layout.bytes_per_token
        checked.append(snap.num_seqs)
        return snap

    from pabench.backends import contiguous, paged

    cls = paged.PagedBackend if name == "paged" else contiguous.ContiguousBackend
    memory = cls.memory
    monkeypatch.setattr(cls, "memory", checking_memory)
    reqs = requests(n=10, prompt=(5, 30), out=(3, 30), samples=samples, prefix=[1, 2, 3, 4, 5, 6, 7, 8] if prefix else None)
    rec, backend = serve(model, name, reqs, budget_tokens=200 if samples == 1 else 400, prefix=prefix)
    assert len(checked) == len(rec.steps) and max(checked) > 1
    if name == "paged" and samples == 1 and not prefix:
        assert rec.num_preemptions > 0
    assert backend.memory().used_bytes == 0
