"""SDPA decode over a padded contiguous cache (the vendor row of `pabench kernels`) against the reference."""

import pytest
import torch
from kernel_checks import assert_close

from pabench.core.errors import ConfigError
from pabench.kernel_data import make_decode_data, pad_slab
from pabench.kernels import contiguous_decode_reference, sdpa_decode_attention


def _data(lens, seed):
    return make_decode_data(lens, 8, 2, 64, torch.float32, torch.device("cpu"), seed)


def _reference(data):
    return contiguous_decode_reference(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens)


@pytest.mark.parametrize("lens", [[24, 24, 24], [1, 30, 17]])  # uniform (no mask) and variable (masked)
def test_sdpa_decode(lens):
    data = _data(lens, seed=sum(lens))
    k_pad, v_pad = pad_slab(data)
    out, backend = sdpa_decode_attention(data.q, k_pad, v_pad, data.seq_lens)
    assert backend in ("cudnn", "flash", "efficient", "math")
    assert_close(out, _reference(data), torch.float32)


def test_sdpa_bad_lengths():
    data = _data([4, 4], seed=3)
    k_pad, v_pad = pad_slab(data)
    with pytest.raises(ConfigError):
        sdpa_decode_attention(data.q, k_pad, v_pad, [4, 5])  # longer than the padded cache
