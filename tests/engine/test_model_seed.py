"""The model's weight seed follows the one seed rule (pabench.units.check_seed) that workloads and --seed use."""

import pytest

from pabench.engine.model import DecoderModel, ModelConfig
from pabench.errors import ConfigError

TINY = ModelConfig("t", vocab_size=8, hidden_size=8, num_layers=1, num_q_heads=2, num_kv_heads=1, head_dim=4,
                   intermediate_size=8)


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64])
def test_model_seed_out_of_range_is_one_line(seed):
    with pytest.raises(ConfigError, match=r"model seed must be an integer in \[0, 2\*\*63 - 1"):
        DecoderModel(TINY, seed=seed, max_position=4)


def test_largest_model_seed_builds():
    assert DecoderModel(TINY, seed=2**63 - 1, max_position=4).seed == 2**63 - 1
