"""`StagedBatch`: incremental restaging of a decode batch's per-sequence (key, counter) (a host descriptor, one
copy, a device-side apply) gives exactly what a rebuild from the host gives, through repeats, shrinks, reorders,
new sequences and padding; and a whole serving run with incremental staging produces the same tokens as one
that rebuilds every step."""

import random

import pytest
import torch

from pabench.backends.staging import StagedBatch, keep_indices
from tests.engine.test_engine import model, requests, serve  # noqa: F401  (model is a fixture)


class Seq:
    def __init__(self, key: int, count: int) -> None:
        self.key, self.count = key, count


def fields(seqs):
    return [s.key for s in seqs], [s.count for s in seqs]


def expected(seqs, batch, pad):
    keys, counts = fields(seqs)
    pad_n = batch - len(seqs)
    return [keys + [pad[0]] * pad_n, counts + [pad[1]] * pad_n]


def test_keep_indices():
    a, b, c = Seq(0, 0), Seq(1, 0), Seq(2, 0)
    assert keep_indices([a, b, c], [a, c]) == [0, 2]
    assert keep_indices([a, b, c], [c, a]) == [2, 0]
    assert keep_indices([a, b], [a, c]) is None


@pytest.mark.parametrize("seed", range(5))
def test_random_batches_match_a_rebuild(seed):
    """Random decode histories: each step keeps, drops, reorders or adds sequences; survivors count one more."""
    rng = random.Random(seed)
    pad = (99, 1)
    staged = StagedBatch(16, pad, torch.int32, "cpu")
    fresh = torch.zeros(16, dtype=torch.int32)  # [16] e.g. the tokens sampled at the previous rows
    seqs, next_key = [], 0
    for _ in range(200):
        for s in seqs:
            s.count += 1
        op = rng.random()
        if op < 0.4 and seqs:
            pass  # the same batch
        elif op < 0.6 and seqs:
            seqs = [s for s in seqs if rng.random() < 0.7]
        elif op < 0.7:
            rng.shuffle(seqs)
        else:
            while not seqs or (len(seqs) < 12 and rng.random() < 0.6):
                seqs.append(Seq(next_key, rng.randint(1, 50)))
                next_key += 1
        if not seqs:
            continue
        batch = rng.choice([len(seqs), 16])
        use_fresh = rng.random() < 0.5
        if use_fresh:  # fresh keys come from the previous rows: rewrite each survivor's key the same way
            fresh.copy_(torch.randint(0, 1000, (16,), dtype=torch.int32))
            prev = staged._seqs
            for i, s in enumerate(prev):
                s.key = int(fresh[i])
        staged.stage(seqs, batch, fields)
        staged.apply(batch, fresh_keys=fresh if use_fresh else None)
        assert staged.buf[:, :batch].tolist() == expected(seqs, batch, pad)
    assert staged.num_updates > staged.num_rebuilds > 0


def test_empty_batch_is_all_padding():
    staged = StagedBatch(8, (7, 1), torch.int64, "cpu")
    staged.stage([], 4, fields)
    staged.apply(4)
    assert staged.buf[:, :4].tolist() == [[7] * 4, [1] * 4]


@pytest.mark.parametrize("name", ["paged", "contiguous-oracle"])
def test_serving_with_incremental_staging_matches_rebuilding(model, name, monkeypatch):  # noqa: F811
    """Forks, preemption and finishes: the same tokens as the rebuild-every-step reference, and most steps update."""
    reqs = requests(n=12, prompt=(5, 30), out=(5, 40), samples=2)
    incremental, backend = serve(model, name, reqs, budget_tokens=160)
    assert backend._staged.num_updates > backend._staged.num_rebuilds
    monkeypatch.setattr(StagedBatch, "_plan", lambda self, seqs: None)
    rebuilt, backend = serve(model, name, reqs, budget_tokens=160)
    assert backend._staged.num_updates == 0
    assert incremental.output_token_ids == rebuilt.output_token_ids
    if name == "paged":
        assert incremental.num_preemptions > 0
