"""torch SDPA paths: prefill attention (the backend pinned per call shape) and decode over a padded contiguous
cache, the vendor row the Triton decode kernel is measured against (`pabench kernels`).

The paged peers (gather+SDPA, FlexAttention, FlashInfer) are in `paged_peers.py`. None shares code with Triton.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F

from pabench.errors import ConfigError

SDPA_BACKENDS = ("cudnn", "flash", "efficient", "math")  # tried in this order; the first that runs is pinned


@functools.lru_cache(maxsize=1)
def _has_enable_gqa() -> bool:
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 5)  # SDPA grew enable_gqa in torch 2.5


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool,
          scale: float | None) -> torch.Tensor:
    """SDPA on [batch, heads, len, D] tensors with GQA: enable_gqa where torch has it, else repeated KV heads."""
    group = q.shape[1] // k.shape[1]
    if group > 1 and _has_enable_gqa():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale,
                                              enable_gqa=True)
    if group > 1:
        k = k.repeat_interleave(group, dim=1)  # [batch, Hq, len, D]
        v = v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """Causal attention of the last n_new positions of ONE sequence over all n_total (a cached prefix first).

    q [n_new, Hq, D]; k, v [n_total, Hkv, D]; new token i sees positions <= n_total - n_new + i. fp32 softmax
    (SDPA's fused GPU kernels accumulate in fp32; on the CPU the inputs are upcast). Returns [n_new, Hq, D].
    """
    if q.dim() != 3 or k.dim() != 3 or k.shape != v.shape or q.shape[2] != k.shape[2]:
        raise ConfigError(f"prefill needs q [n_new, Hq, D] and k, v [n_total, Hkv, D], "
                          f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    n_new, num_q_heads, _ = q.shape
    n_total, num_kv_heads, _ = k.shape
    if n_new < 1 or n_total < n_new:
        raise ConfigError(f"prefill needs 1 <= n_new <= n_total, got n_new={n_new}, n_total={n_total}")
    if num_q_heads % num_kv_heads:
        raise ConfigError(f"num_q_heads ({num_q_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
    if len({q.device, k.device, v.device}) > 1 or len({q.dtype, k.dtype, v.dtype}) > 1:
        raise ConfigError("q, k, v must share one device and dtype")
    compute = torch.float32 if q.device.type == "cpu" else q.dtype
    pinned = _prefill_backends() if q.is_cuda else None
    masked = n_new != n_total  # a cached prefix: causal over the last n_new rows needs an explicit mask
    # On CUDA, pinned kernels and masked calls get equal heads: the memory-efficient kernel takes masks but not
    # GQA, so enable_gqa + mask falls back to the math path (many launches, an fp32 score matrix). That is the
    # prefill of every prefix-cache hit. Decode (below) keeps enable_gqa: cuDNN takes a mask with GQA there, and
    # repeating a padded batch's KV would copy it 4x per call.
    if q.is_cuda and (pinned is not None or masked) and num_q_heads != num_kv_heads:
        k = k.repeat_interleave(num_q_heads // num_kv_heads, dim=1)  # [n_total, Hq, D]
        v = v.repeat_interleave(num_q_heads // num_kv_heads, dim=1)  # [n_total, Hq, D]
    qt = q.to(compute).transpose(0, 1).unsqueeze(0)  # [1, Hq, n_new, D]
    kt = k.to(compute).transpose(0, 1).unsqueeze(0)  # [1, Hkv or Hq, n_total, D]
    vt = v.to(compute).transpose(0, 1).unsqueeze(0)  # [1, Hkv or Hq, n_total, D]
    mask = None
    if masked:
        rows = torch.arange(n_new, device=q.device)[:, None] + (n_total - n_new)  # [n_new, 1]
        mask = torch.arange(n_total, device=q.device)[None, :] <= rows  # [n_new, n_total]
    if pinned is None:
        out = _sdpa(qt, kt, vt, mask, mask is None, scale)  # [1, Hq, n_new, D]
    else:
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(pinned):
            out = _sdpa(qt, kt, vt, mask, mask is None, scale)  # [1, Hq, n_new, D]
    return out[0].transpose(0, 1).to(q.dtype)  # [n_new, Hq, D]


PREFILL_SDPA_ENV = "PABENCH_PREFILL_SDPA"
PREFILL_SDPA_DEFAULT = "flash,efficient"


def _prefill_backends() -> list | None:
    """The SDPA backends CUDA prefill may use: $PABENCH_PREFILL_SDPA ('torch' = torch's own choice), else
    flash then memory-efficient. cuDNN is left out by default: it builds a plan per new sequence length, and a
    serving run sees hundreds of lengths (measured on the H200: `benchmarks/prefill_probe.py`)."""
    return _parse_prefill_backends(os.environ.get(PREFILL_SDPA_ENV, PREFILL_SDPA_DEFAULT))


@functools.lru_cache(maxsize=8)
def _parse_prefill_backends(text: str) -> list | None:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["torch"]:
        return None
    unknown = [n for n in names if n not in SDPA_BACKENDS]
    if unknown or not names:
        raise ConfigError(f"{PREFILL_SDPA_ENV}={text!r}: expected 'torch' or a comma list of "
                          f"{', '.join(SDPA_BACKENDS)}")
    return [_backend_enum(n) for n in names]


def _backend_enum(name: str):
    from torch.nn.attention import SDPBackend

    return {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]


_PINNED: dict[tuple, str] = {}  # (device type, dtype, masked, shapes) -> the SDPA backend that ran


def _lengths_list(seq_lens: torch.Tensor | Sequence[int]) -> list[int]:
    return seq_lens.tolist() if isinstance(seq_lens, torch.Tensor) else [int(n) for n in seq_lens]


def decode_padding_mask(seq_lens: torch.Tensor | Sequence[int], max_len: int,
                        device: torch.device) -> torch.Tensor | None:
    """Boolean mask [batch, 1, 1, max_len] hiding a padded cache's padding; None when every length is max_len."""
    lens = _lengths_list(seq_lens)
    if all(n == max_len for n in lens):
        return None
    lens_t = torch.tensor(lens, device=device)  # [batch]
    return (torch.arange(max_len, device=device)[None, :] < lens_t[:, None])[:, None, None, :]  # [b, 1, 1, L]


def sdpa_decode_attention(q: torch.Tensor, k_padded: torch.Tensor, v_padded: torch.Tensor,
                          seq_lens: torch.Tensor | Sequence[int], *,
                          mask: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
    """Vendor decode over a padded contiguous cache [batch, max_len, Hkv, D]; returns (out [batch, Hq, D], backend).

    Uniform lengths equal to max_len run unmasked; otherwise a boolean mask hides the padding (pass `mask` from
    `decode_padding_mask` to build it once: a call that builds none copies nothing host-to-device, so a CUDA
    graph can capture it). The first SDPA backend that accepts the call (cudnn, flash, efficient, math) is
    pinned with `sdpa_kernel` and named. seq_lens may be a CPU tensor or list (a CUDA tensor costs one sync).
    """
    from torch.nn.attention import sdpa_kernel

    if q.dim() != 3 or k_padded.dim() != 4 or k_padded.shape != v_padded.shape:
        raise ConfigError(f"need q [batch, Hq, D] and k/v_padded [batch, max_len, Hkv, D], "
                          f"got {tuple(q.shape)}, {tuple(k_padded.shape)}, {tuple(v_padded.shape)}")
    batch, max_len = k_padded.shape[:2]
    lens = _lengths_list(seq_lens)
    if len(lens) != batch or min(lens) < 1 or max(lens) > max_len:
        raise ConfigError(f"seq_lens must hold {batch} lengths in [1, {max_len}]")
    qt = q.unsqueeze(2)  # [batch, Hq, 1, D]
    kt = k_padded.transpose(1, 2)  # [batch, Hkv, max_len, D]
    vt = v_padded.transpose(1, 2)  # [batch, Hkv, max_len, D]
    if mask is None:
        mask = decode_padding_mask(lens, max_len, q.device)  # [batch, 1, 1, max_len] or None
    elif tuple(mask.shape) != (batch, 1, 1, max_len) or mask.dtype != torch.bool:
        raise ConfigError(f"mask must be bool [{batch}, 1, 1, {max_len}], got {mask.dtype} {tuple(mask.shape)}")
    key = (q.device.type, q.dtype, mask is not None, tuple(q.shape), tuple(k_padded.shape))
    names = [_PINNED[key]] if key in _PINNED else list(SDPA_BACKENDS)
    errors = []
    for name in names:
        try:
            with warnings.catch_warnings(), sdpa_kernel([_backend_enum(name)]):
                warnings.simplefilter("ignore")
                out = _sdpa(qt, kt, vt, mask, False, None)  # [batch, Hq, 1, D]
        except RuntimeError as err:
            errors.append(f"{name}: {str(err).splitlines()[0]}")
            continue
        _PINNED[key] = name
        return out[:, :, 0], name
    raise ConfigError("no SDPA backend accepted the decode call: " + "; ".join(errors))
