"""SDPA decode over a padded contiguous cache (the vendor row of `pabench kernels`) against the reference."""

import pytest
import torch
from kernel_checks import assert_close

from pabench.errors import ConfigError
from pabench.kernelbench.data import make_decode_data, pad_slab
from pabench.kernels import contiguous_decode_reference, decode_padding_mask, sdpa_decode_attention
from pabench.kernels import prefill as prefill_module  # sdpa_gqa, which decode SDPA calls, lives there
from pabench.kernels.prefill import has_enable_gqa


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


def test_sdpa_decode_with_a_mask_built_once():
    data = _data([3, 30, 17, 9], seed=5)
    k_pad, v_pad = pad_slab(data)
    mask = decode_padding_mask(data.seq_lens, k_pad.shape[1], k_pad.device)  # [4, 1, 1, 30]
    assert mask.shape == (4, 1, 1, 30) and mask.sum().item() == 3 + 30 + 17 + 9
    out, _ = sdpa_decode_attention(data.q, k_pad, v_pad, data.seq_lens, mask=mask)
    assert_close(out, _reference(data), torch.float32)
    assert decode_padding_mask([30, 30], 30, k_pad.device) is None  # uniform at max_len: unmasked
    with pytest.raises(ConfigError, match="mask must be bool"):
        sdpa_decode_attention(data.q, k_pad, v_pad, data.seq_lens, mask=mask[:2])


_CUDA = pytest.param("cuda", marks=[pytest.mark.gpu,
                                    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])


@pytest.mark.parametrize("device", ["cpu", _CUDA])
def test_masked_decode_keeps_grouped_kv_heads(monkeypatch, device):
    """Padded decode hands SDPA the Hkv heads (enable_gqa), not KV repeated per query head: repeating a padded
    batch copied its whole cache 4x per call (27x slower on case (b) of `pabench kernels` on the H200)."""
    if not has_enable_gqa():
        pytest.skip("torch without enable_gqa repeats KV heads by design")
    seen = []
    real = prefill_module.F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.shape[1], k.shape[1], kwargs.get("attn_mask") is not None))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(prefill_module.F, "scaled_dot_product_attention", spy)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    data = make_decode_data([1, 30, 17], 8, 2, 64, dtype, torch.device(device), 6)  # 8 q heads / 2 KV, masked
    k_pad, v_pad = pad_slab(data)
    out, _ = sdpa_decode_attention(data.q, k_pad, v_pad, data.seq_lens)
    assert seen and all(hkv == 2 and masked for _, hkv, masked in seen)
    assert_close(out, _reference(data), dtype)
