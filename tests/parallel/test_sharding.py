"""The sharded model is the same model: in one process, two ranks' shards of every projection put back together are
the one-rank weights bit for bit (column-parallel q|k|v and gate|up, row-parallel o and down; embedding and LM
head replicated), a group of one is the plain model, and a model that cannot split evenly is refused in one line."""

from __future__ import annotations

import pytest
import torch

from pabench.engine.model import DecoderModel, ModelConfig
from pabench.errors import ConfigError
from pabench.parallel.group import TPGroup

CFG = ModelConfig("t", vocab_size=97, hidden_size=64, num_layers=2, num_q_heads=4, num_kv_heads=2, head_dim=16,
                  intermediate_size=96)


def unshard(shards: list[torch.Tensor], parts: tuple[int, ...]) -> torch.Tensor:
    """Column shards `[rows, sum(parts) / n]` each back to `[rows, sum(parts)]`: every part's pieces in rank order."""
    n = len(shards)
    pieces = [s.split([p // n for p in parts], dim=1) for s in shards]  # [rank][part]
    return torch.cat([pieces[r][i] for i in range(len(parts)) for r in range(n)], dim=1)


def test_two_shards_are_the_one_rank_weights():
    full = DecoderModel(CFG, seed=7, max_position=32)
    ranks = [DecoderModel(CFG, seed=7, max_position=32, tp=TPGroup(r, 2)) for r in range(2)]
    q, kv, d, inter = CFG.num_q_heads * CFG.head_dim, CFG.num_kv_heads * CFG.head_dim, CFG.head_dim, 96
    assert [m.num_kv_heads for m in ranks] == [1, 1] and d == 16
    for i, layer in enumerate(full.layers):
        shards = [m.layers[i] for m in ranks]
        assert torch.equal(unshard([s["wqkv"] for s in shards], (q, kv, kv)), layer["wqkv"])
        assert torch.equal(unshard([s["w_gate_up"] for s in shards], (inter, inter)), layer["w_gate_up"])
        assert torch.equal(torch.cat([s["wo"] for s in shards]), layer["wo"])
        assert torch.equal(torch.cat([s["w_down"] for s in shards]), layer["w_down"])
        assert shards[0]["wo"].untyped_storage().nbytes() == shards[0]["wo"].numel() * 4  # the full tensor is freed
    for m in ranks:
        assert torch.equal(m.embed, full.embed) and torch.equal(m.lm_head, full.lm_head)
    assert CFG.params_per_rank(2) < CFG.num_params == sum(t.numel() for t in _weights(full))
    assert CFG.params_per_rank(2) == sum(t.numel() for t in _weights(ranks[0]))


def _weights(model: DecoderModel) -> list[torch.Tensor]:
    return [model.embed, model.lm_head, model.final_norm, *(t for layer in model.layers for t in layer.values())]


def test_a_group_of_one_is_the_plain_model():
    plain = DecoderModel(CFG, seed=7, max_position=32)
    alone = DecoderModel(CFG, seed=7, max_position=32, tp=TPGroup(0, 1))
    ids, pos = torch.tensor([3, 5, 8]), torch.arange(3)

    def attn(layer, q, k, v):  # no cache: each token attends to itself only
        return v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)

    assert torch.equal(plain.forward(ids, pos, attn), alone.forward(ids, pos, attn))


def test_an_uneven_split_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^--tensor-parallel 4: model t's 2 KV heads do not split evenly over 4"):
        DecoderModel(CFG, tp=TPGroup(0, 4))
    with pytest.raises(ConfigError, match="3 ranks"):
        ModelConfig.from_name("llama-3-8b").check_tensor_parallel(3)
    ModelConfig.from_name("llama-3.1-70b").check_tensor_parallel(8)


def test_a_one_rank_model_is_reused_across_prepares():
    """Every run joins a group (of one without --tensor-parallel); a sweep still builds its model once."""
    from pabench.bench.runner import RunConfig, prepare

    cfg = RunConfig(backends=("paged",), num_requests=2, warmup=False)
    first = prepare(cfg)
    assert first.model.tp == TPGroup(0, 1, "cpu") and prepare(cfg, model=first.model).model is first.model
