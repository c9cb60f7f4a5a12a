"""`varlen_prefill_attention`: causal attention of a whole prefill step (sequences packed end to end) in one call.

A prefill step holds many sequences of different lengths. Calling SDPA once per sequence per layer costs a
handful of kernel launches each, thousands per step on a 32-layer model: prefill becomes launch-bound. On CUDA
(fp16/bf16) this runs FlashAttention-2's variable-length kernel through torch, once per layer, with native GQA
and a bottom-right causal mask (a cached prefix is visible to every new token); elsewhere it loops over
`prefill_attention`, which is also the reference the fast path is tested against.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch

from pabench.errors import ConfigError
from pabench.kernels.sdpa import _prefill_backends, prefill_attention

_FLASH_BROKEN: list[str] = []  # the first error of the fused path, if it ever failed here (then: loop)


def varlen_path(q: torch.Tensor) -> str:
    """'flash-varlen' when the fused kernel will run for `q`, else 'loop' (one SDPA call per sequence)."""
    if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16) or _FLASH_BROKEN:
        return "loop"
    if not hasattr(torch.ops.aten, "_flash_attention_forward") or q.shape[-1] % 8 or q.shape[-1] > 256:
        return "loop"
    backends = _prefill_backends()  # $PABENCH_PREFILL_SDPA: the fused path only when flash comes first
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
