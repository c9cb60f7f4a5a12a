"""The fp8 KV cache's number format: e4m3 values with one fp32 scale per tensor (per layer, K and V), as vLLM's
`--kv-cache-dtype fp8` stores them by default. A stored value x8 means x8 * scale; writing x stores
clamp(x / scale, -448, 448) rounded to e4m3, so an outlier saturates instead of turning into NaN.

These torch functions are the reference the Triton kernels' in-register conversions are tested against;
dot_query / fp16_query are the kernels' shared way into their dots (fp16 over e4m3 tiles).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pabench.errors import ConfigError

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # the largest finite e4m3fn value


def is_fp8(dtype: torch.dtype) -> bool:
    """Is this the fp8 KV storage dtype?"""
    return dtype == FP8_DTYPE


def check_fp8_device(device: torch.device | str) -> None:
    """fp8 storage needs e4m3 conversions: any CPU (torch does them), CUDA from compute capability 8.9 (Ada/Hopper),
    where Triton converts in registers."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            raise ConfigError(f"--kv-dtype fp8 needs a GPU of compute capability >= 8.9 (Ada, Hopper), this one is "
                              f"{major}.{minor}")


def amax_scale(x: torch.Tensor) -> torch.Tensor:
    """The per-tensor scale that maps x's largest magnitude to FP8_MAX (1.0 for an all-zero tensor). fp32 [1]."""
    amax = x.detach().abs().amax().float().reshape(1)  # [1]
    return torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))  # [1]


def quantize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (any float dtype) as fp8 with `scale` (fp32 [1]): clamp(x / scale) rounded to e4m3, same shape."""
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def dequantize(x8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Stored fp8 values back to fp32: x8 * scale, same shape."""
    return x8.float() * scale


def check_scales(cache: torch.Tensor, k_scale: torch.Tensor | None, v_scale: torch.Tensor | None) -> None:
    """An fp8 cache needs both scales, fp32 one-element tensors on its device; a float cache takes none."""
    if not is_fp8(cache.dtype):
        if k_scale is not None or v_scale is not None:
            raise ConfigError(f"k_scale/v_scale apply to an fp8 cache only, this one is {cache.dtype}")
        return
    for name, scale in (("k_scale", k_scale), ("v_scale", v_scale)):
        if scale is None or scale.numel() != 1 or scale.dtype != torch.float32 or scale.device != cache.device:
            raise ConfigError(f"an fp8 cache needs {name} as a one-element float32 tensor on {cache.device}")


@triton.jit
def fp16_query(q):
    """q [rows, D] (bf16 or fp16) as fp16 times 2^shift, with its largest magnitude put in [2^13, 2^14), and
    2^-shift (fp32 scalar) to fold into the score scale. An fp8 cache is read as fp16 because e4m3 -> fp16 is one
    packed instruction per two values on sm_89+, where -> bf16 costs a scalar conversion more per value; a power of
    two keeps bf16 q's precision in fp16 whatever its range."""
    amax = tl.max(tl.max(tl.abs(q.to(tl.float32)), axis=1), axis=0)  # scalar
    exponent = ((amax.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127  # floor(log2(amax)) for a normal amax
    shift = tl.where(amax > 0, tl.minimum(tl.maximum(13 - exponent, -100), 100), 0)
    up = ((127 + shift) << 23).to(tl.float32, bitcast=True)  # 2^shift, exact
    down = ((127 - shift) << 23).to(tl.float32, bitcast=True)  # 2^-shift
    return (q.to(tl.float32) * up).to(tl.float16), down


@triton.jit
def dot_query(q, sm_scale_log2, k_scale_ptr, KV_FP8: tl.constexpr, DOT_UPCAST: tl.constexpr):
    """The decode and mixed kernels' q as their dots take it, and the score scale (log2 domain) to go with it: over
    an fp8 cache fp16 q (fp16_query) with k_scale and 2^-shift folded in; else q as given, or fp32 in the CPU
    interpreter (DOT_UPCAST: its tl.dot mishandles bf16 operands)."""
    qk_scale = sm_scale_log2
    if KV_FP8:
        qk_scale = sm_scale_log2 * tl.load(k_scale_ptr)
        if q.dtype != tl.float32:
            q, q_down = fp16_query(q)
            qk_scale = qk_scale * q_down
    elif DOT_UPCAST:
        q = q.to(tl.float32)
    return q, qk_scale


__all__ = ["FP8_DTYPE", "FP8_MAX", "amax_scale", "check_fp8_device", "check_scales", "dequantize", "dot_query",
           "fp16_query", "is_fp8", "quantize"]
