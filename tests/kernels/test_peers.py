"""Public paged-decode peers (gather+SDPA, FlexAttention over the page pool) against the torch reference."""

import pytest
import torch
from kernel_checks import assert_close

from pabench.errors import ConfigError
from pabench.kernelbench.data import make_decode_data, paginate
from pabench.kernels import (contiguous_decode_reference, decode_padding_mask, flex_available, flex_paged_decode,
                             gather_sdpa_decode)
from pabench.kernels.peers import pages_in_use


def _data(lens, seed):
    return make_decode_data(lens, 8, 2, 64, torch.float32, torch.device("cpu"), seed)


def _reference(data):
    return contiguous_decode_reference(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens)


def test_pages_in_use_marks_each_sequences_own_columns():
    num_used, used = pages_in_use(torch.tensor([1, 8, 9, 24]), 8, 3)
    assert num_used.tolist() == [1, 1, 2, 3]
    assert used.tolist() == [[True, False, False], [True, False, False], [True, True, False], [True, True, True]]


def test_gather_sdpa_ignores_garbage_table_entries():
    data = _data([5, 33, 16], seed=1)
    k_cache, v_cache, table = paginate(data, 8)  # entries past each sequence's pages are huge garbage ids
    out, _ = gather_sdpa_decode(data.q, k_cache, v_cache, table, data.seq_lens)
    assert_close(out, _reference(data), torch.float32)
    mask = decode_padding_mask(data.seq_lens, table.shape[1] * 8, k_cache.device)  # built once by a caller
    out, _ = gather_sdpa_decode(data.q, k_cache, v_cache, table, data.seq_lens, mask=mask)
    assert_close(out, _reference(data), torch.float32)


def test_gather_sdpa_with_every_sequence_filling_its_table():
    data = _data([16, 16], seed=4)  # two full pages each: no padding, no mask, no table cleaning
    out, _ = gather_sdpa_decode(data.q, *paginate(data, 8), data.seq_lens)
    assert_close(out, _reference(data), torch.float32)


@pytest.mark.skipif(not flex_available(), reason="torch without FlexAttention")
def test_flex_paged_eager():
    data = _data([5, 40, 16], seed=2)
    k_cache, v_cache, table = paginate(data, 16)
    run = flex_paged_decode(data.q, k_cache, v_cache, table, data.seq_lens, compiled=False)
    assert_close(run(), _reference(data), torch.float32)
    with pytest.raises(ConfigError):
        flex_paged_decode(data.q, *paginate(data, 8), data.seq_lens, compiled=False)
