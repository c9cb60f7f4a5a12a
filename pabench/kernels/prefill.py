"""Prefill attention: `prefill_attention` (one sequence, torch SDPA with the backend pinned) and
`varlen_prefill_attention`, a whole prefill step (sequences packed end to end) in one call.

A prefill step holds many sequences of different lengths. Calling SDPA once per sequence per layer costs a
handful of kernel launches each, thousands per step on a 32-layer model: prefill becomes launch-bound. On CUDA
(fp16/bf16) this runs FlashAttention-2's variable-length kernel through torch, once per layer, with native GQA
and a bottom-right causal mask (a cached prefix is visible to every new token); elsewhere it loops over
`prefill_attention`, which is also the reference the fast path is tested against.
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
def has_enable_gqa() -> bool:
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 5)  # SDPA grew enable_gqa in torch 2.5


def sdpa_gqa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool,
          scale: float | None) -> torch.Tensor:
    """SDPA on [batch, heads, len, D] tensors with GQA: enable_gqa where torch has it, else repeated KV heads."""
    group = q.shape[1] // k.shape[1]
    if group > 1 and has_enable_gqa():
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
    pinned = prefill_backends() if q.is_cuda else None
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
        out = sdpa_gqa(qt, kt, vt, mask, mask is None, scale)  # [1, Hq, n_new, D]
    else:
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(pinned):
            out = sdpa_gqa(qt, kt, vt, mask, mask is None, scale)  # [1, Hq, n_new, D]
    return out[0].transpose(0, 1).to(q.dtype)  # [n_new, Hq, D]


PREFILL_SDPA_ENV = "PABENCH_PREFILL_SDPA"
PREFILL_SDPA_DEFAULT = "flash,efficient"


def prefill_backends() -> list | None:
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
    return [backend_enum(n) for n in names]


def backend_enum(name: str):
    from torch.nn.attention import SDPBackend

    return {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]


_FLASH_BROKEN: list[str] = []  # the first error of the fused path, if it ever failed here (then: loop)


def varlen_path(q: torch.Tensor) -> str:
    """'flash-varlen' when the fused kernel will run for `q`, else 'loop' (one SDPA call per sequence)."""
    if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16) or _FLASH_BROKEN:
        return "loop"
    if not hasattr(torch.ops.aten, "_flash_attention_forward") or q.shape[-1] % 8 or q.shape[-1] > 256:
        return "loop"
    backends = prefill_backends()  # $PABENCH_PREFILL_SDPA: the fused path only when flash comes first
    return "flash-varlen" if backends and backends[0].name == "FLASH_ATTENTION" else "loop"


def varlen_prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: Sequence[int],
                             cu_k: Sequence[int], *, scale: float | None = None, cu_q_dev: torch.Tensor | None = None,
                             cu_k_dev: torch.Tensor | None = None) -> torch.Tensor:
    """Sequence i's new tokens q[cu_q[i]:cu_q[i+1]] attend causally over k, v[cu_k[i]:cu_k[i+1]], whose last
    rows are those same tokens (bottom-right causal: new token j sees all but the last n_new - 1 - j keys).

    q [T_new, Hq, D]; k, v [T_total, Hkv, D]; cu_q, cu_k host offsets [n + 1]; cu_q_dev, cu_k_dev optional int32
    copies on q's device (a prefill step builds them once for all layers). Returns [T_new, Hq, D].
    """
    n = len(cu_q) - 1
    if n < 1 or len(cu_k) != n + 1 or cu_q[0] or cu_k[0] or cu_q[-1] != q.shape[0] or cu_k[-1] != k.shape[0]:
        raise ConfigError(f"varlen prefill: offsets {list(cu_q)} / {list(cu_k)} do not match q {tuple(q.shape)} "
                          f"and k {tuple(k.shape)}")
    lens_q = [cu_q[i + 1] - cu_q[i] for i in range(n)]
    lens_k = [cu_k[i + 1] - cu_k[i] for i in range(n)]
    if any(a < 1 or a > b for a, b in zip(lens_q, lens_k)):
        raise ConfigError(f"varlen prefill: every sequence needs 1 <= n_new <= n_total, got {lens_q} / {lens_k}")
    if k.shape != v.shape or q.shape[1] % k.shape[1] or q.shape[2] != k.shape[2]:
        raise ConfigError(f"varlen prefill: q {tuple(q.shape)} and k, v {tuple(k.shape)}, {tuple(v.shape)} "
                          "do not fit (heads must divide, head dims match)")
    if varlen_path(q) == "flash-varlen":
        try:
            return _flash_varlen(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), scale, cu_q_dev, cu_k_dev)
        except RuntimeError as error:  # an unsupported shape or torch build: say so once, then loop
            _FLASH_BROKEN.append(str(error).splitlines()[0])
            warnings.warn(f"fused varlen prefill failed ({_FLASH_BROKEN[0]}); looping over sequences instead",
                          RuntimeWarning, stacklevel=2)
    if n == 1:
        return prefill_attention(q, k, v, scale=scale)
    return torch.cat([prefill_attention(q[cu_q[i]:cu_q[i + 1]], k[cu_k[i]:cu_k[i + 1]], v[cu_k[i]:cu_k[i + 1]],
                                        scale=scale) for i in range(n)])  # [T_new, Hq, D]


def _flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: Sequence[int], cu_k: Sequence[int],
                  max_q: int, max_k: int, scale: float | None, cu_q_dev: torch.Tensor | None,
                  cu_k_dev: torch.Tensor | None) -> torch.Tensor:
    dev = q.device
    cu_q_t = cu_q_dev if cu_q_dev is not None else torch.tensor(cu_q, dtype=torch.int32).to(dev)  # [n + 1]
    cu_k_t = cu_k_dev if cu_k_dev is not None else torch.tensor(cu_k, dtype=torch.int32).to(dev)  # [n + 1]
    out = torch.ops.aten._flash_attention_forward(
        q.contiguous(), k.contiguous(), v.contiguous(), cu_q_t, cu_k_t, max_q, max_k, 0.0, True, False,
        scale=scale)[0]  # [T_new, Hq, D]
    return out
