"""Bad inputs raise ConfigError with a message, before anything is launched."""

import pytest
import torch

from pabench.errors import ConfigError
from pabench.kernelbench.data import make_decode_data, paginate
from pabench.kernels import DecodeConfig, contiguous_decode_attention, paged_decode_attention


@pytest.fixture
def batch():
    data = make_decode_data([5, 12], 4, 2, 64, torch.float32, torch.device("cpu"), seed=0)
    return data, *paginate(data, 4)


def _call(data, k, v, table, lens=None, **kw):
    return paged_decode_attention(data.q, k, v, table, data.seq_lens if lens is None else lens, **kw)


def test_shape_and_dtype_mismatches(batch):
    data, k, v, table = batch
    with pytest.raises(ConfigError, match="q must be"):
        paged_decode_attention(data.q[0], k, v, table, data.seq_lens)
    with pytest.raises(ConfigError, match="must match"):
        _call(data, k, v[:-1], table)
    with pytest.raises(ConfigError, match="must be q's"):
        _call(data, k.half(), v.half(), table)
    with pytest.raises(ConfigError, match="dtypes differ"):
        _call(data, k, v.half(), table)
    with pytest.raises(ConfigError, match="int32"):
        _call(data, k, v, table.float())
    with pytest.raises(ConfigError, match="seq_lens must be"):
        _call(data, k, v, table, lens=data.seq_lens[:1])
    with pytest.raises(ConfigError, match="head_dim differs"):
        paged_decode_attention(torch.randn(2, 4, 32), k, v, table, data.seq_lens)
    with pytest.raises(ConfigError, match="multiple of num_kv_heads"):
        paged_decode_attention(torch.randn(2, 3, 64), k, v, table, data.seq_lens)


def test_length_and_page_values(batch):
    data, k, v, table = batch
    with pytest.raises(ConfigError, match=r"seq_lens must lie in \[1,"):
        _call(data, k, v, table, lens=torch.tensor([0, 12], dtype=torch.int32))
    with pytest.raises(ConfigError, match="seq_lens must lie"):
        _call(data, k, v, table, lens=torch.tensor([5, table.shape[1] * 4 + 1], dtype=torch.int32))
    bad = table.clone()
    bad[0, 0] = k.shape[0]  # a page id past the pool, in a page the sequence uses
    with pytest.raises(ConfigError, match="page ids outside"):
        _call(data, k, v, bad)
    out = _call(data, k, v, table)  # garbage past the used pages is fine
    assert torch.isfinite(out).all()


def test_triton_limits(batch, monkeypatch):
    data, k, v, table = batch
    q48 = torch.randn(2, 4, 48)
    k48, v48 = torch.randn(20, 4, 2, 48), torch.randn(20, 4, 2, 48)
    with pytest.raises(ConfigError, match="head_dim in"):
        paged_decode_attention(q48, k48, v48, table, data.seq_lens, impl="triton")
    assert paged_decode_attention(q48, k48, v48, table, data.seq_lens, impl="auto").shape == q48.shape
    k3, v3 = torch.randn(20, 3, 2, 64), torch.randn(20, 3, 2, 64)
    table3 = torch.arange(10, dtype=torch.int32).view(2, 5)  # page size 3: capacity 15
    with pytest.raises(ConfigError, match="power of two"):
        _call(data, k3, v3, table3, impl="triton")
    assert torch.isfinite(_call(data, k3, v3, table3, impl="auto")).all()  # the torch path takes any page size
    with pytest.raises(ConfigError, match="impl must be"):
        _call(data, k, v, table, impl="cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        _call(data, k, v, table, impl="triton")


def test_contiguous_regions_and_out(batch):
    data = batch[0]
    starts = torch.tensor([0, data.k_slab.shape[0] - 5], dtype=torch.int32)  # second region runs off the slab
    with pytest.raises(ConfigError, match="region"):
        contiguous_decode_attention(data.q, data.k_slab, data.v_slab, starts, data.seq_lens)
    with pytest.raises(ConfigError, match="seq_starts must be"):
        contiguous_decode_attention(data.q, data.k_slab, data.v_slab, starts[:1], data.seq_lens)
    with pytest.raises(ConfigError, match="out must match"):
        contiguous_decode_attention(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens,
                                    out=torch.empty(3, 4, 64))


@pytest.mark.parametrize("kwargs", [{"block_n": 48}, {"block_n": 8}, {"num_stages": 0}, {"items_per_sm": 0},
                                    {"merge_block": 1}, {"maxnreg": 16}, {"maxnreg": 256},
                                    {"min_tiles": -1}])
def test_bad_decode_config(kwargs):
    with pytest.raises(ConfigError):
        DecodeConfig(**kwargs)
