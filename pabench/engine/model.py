"""`DecoderModel`: a Llama-style decoder with dummy (random, seeded) weights at real model shapes.

Like vLLM's dummy-weight benchmarking: the arithmetic and memory traffic are those of the real model, so
throughput and KV pressure are realistic, while no checkpoint is needed. Attention goes through the KV
cache backend, which is the only thing that differs between the runs pabench compares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from pabench.errors import ConfigError
from pabench.units import check_seed


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of a decoder-only transformer (grouped-query attention, gated MLP, RoPE, RMSNorm)."""

    name: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5

    def __post_init__(self) -> None:
        for f in ("vocab_size", "hidden_size", "num_layers", "num_q_heads", "num_kv_heads", "head_dim",
                  "intermediate_size"):
            if getattr(self, f) <= 0:
                raise ConfigError(f"model {self.name}: {f} must be > 0, got {getattr(self, f)}")
        if self.num_q_heads % self.num_kv_heads:
            raise ConfigError(f"model {self.name}: {self.num_q_heads} query heads is not a multiple of "
                              f"{self.num_kv_heads} KV heads")
        if self.head_dim % 2:
            raise ConfigError(f"model {self.name}: head_dim must be even for RoPE, got {self.head_dim}")

    @classmethod
    def from_name(cls, name: str, num_layers: int | None = None) -> "ModelConfig":
        """A named preset, optionally cut to its first `num_layers` layers (same shapes, fewer layers)."""
        if name not in MODEL_PRESETS:
            raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODEL_PRESETS)}")
        cfg = MODEL_PRESETS[name]
        if num_layers is not None:
            if not 0 < num_layers <= cfg.num_layers:
                raise ConfigError(f"--layers must be in [1, {cfg.num_layers}] for {name} (it keeps the model's first "
                                  f"layers), got {num_layers}")
            cfg = replace(cfg, num_layers=num_layers)
        return cfg

    @property
    def num_params(self) -> int:
        h, q, kv, d = self.hidden_size, self.num_q_heads, self.num_kv_heads, self.head_dim
        per_layer = h * (q + 2 * kv) * d + q * d * h + 3 * h * self.intermediate_size + 2 * h
        return 2 * self.vocab_size * h + self.num_layers * per_layer + h


MODEL_PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig("tiny", vocab_size=2048, hidden_size=256, num_layers=4, num_q_heads=4, num_kv_heads=2,
                        head_dim=64, intermediate_size=512),
    "llama-3-8b": ModelConfig("llama-3-8b", vocab_size=128256, hidden_size=4096, num_layers=32, num_q_heads=32,
                              num_kv_heads=8, head_dim=128, intermediate_size=14336, rope_theta=500000.0),
    "llama-3.1-70b": ModelConfig("llama-3.1-70b", vocab_size=128256, hidden_size=8192, num_layers=80,
                                 num_q_heads=64, num_kv_heads=8, head_dim=128, intermediate_size=28672,
                                 rope_theta=500000.0),
    "mistral-7b": ModelConfig("mistral-7b", vocab_size=32000, hidden_size=4096, num_layers=32, num_q_heads=32,
                              num_kv_heads=8, head_dim=128, intermediate_size=14336, rope_theta=1000000.0),
    "qwen2.5-7b": ModelConfig("qwen2.5-7b", vocab_size=152064, hidden_size=3584, num_layers=28, num_q_heads=28,
                              num_kv_heads=4, head_dim=128, intermediate_size=18944, rope_theta=1000000.0,
                              rms_eps=1e-6),
}

# attn(layer, q [T, Hq, D], k [T, Hkv, D], v [T, Hkv, D]) -> [T, Hq, D]: writes K/V to the cache and attends.
AttentionFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class DecoderModel:
    """Dummy-weight decoder. `forward` runs every layer; attention is delegated to an `AttentionFn`."""

    def __init__(self, config: ModelConfig, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
                 seed: int = 0, max_position: int = 32768) -> None:
        self.config, self.seed = config, check_seed(seed, "model seed")
        self.dtype, self.device = dtype, torch.device(device)
        c = config
        gen = torch.Generator(device=self.device).manual_seed(seed)

        def w(*shape: int, fan_in: int) -> torch.Tensor:
            t = torch.randn(*shape, generator=gen, device=self.device, dtype=torch.float32)
            return t.mul_(1.0 / math.sqrt(fan_in)).to(dtype)

        q, kv, d, h = c.num_q_heads, c.num_kv_heads, c.head_dim, c.hidden_size
        self.embed = w(c.vocab_size, h, fan_in=1)  # [vocab, hidden]
        self.layers = [
            {
                "attn_norm": torch.ones(h, dtype=dtype, device=self.device),  # [hidden]
                "wqkv": w(h, (q + 2 * kv) * d, fan_in=h),  # [hidden, (Hq + 2 Hkv) D]
                "wo": w(q * d, h, fan_in=q * d),  # [Hq D, hidden]
                "mlp_norm": torch.ones(h, dtype=dtype, device=self.device),  # [hidden]
                "w_gate_up": w(h, 2 * c.intermediate_size, fan_in=h),  # [hidden, 2 I]
                "w_down": w(c.intermediate_size, h, fan_in=c.intermediate_size),  # [I, hidden]
            }
            for _ in range(c.num_layers)
        ]
        self.final_norm = torch.ones(h, dtype=dtype, device=self.device)  # [hidden]
        self.lm_head = w(h, c.vocab_size, fan_in=h)  # [hidden, vocab]
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=self.device) / d))  # [D/2]
        angles = torch.outer(torch.arange(max_position, dtype=torch.float32, device=self.device), inv_freq)  # [P, D/2]
        self.cos, self.sin = angles.cos(), angles.sin()  # [P, D/2] each, fp32

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate pairs (x1, x2) of x `[T, H, D]` by the angles' cos, sin `[T, 1, D/2]` (half-split layout)."""
        x1, x2 = x.float().chunk(2, dim=-1)  # [T, H, D/2] each
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)  # [T, H, D]

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: AttentionFn,
                logits_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Run all layers over tokens `[T]` at `positions` `[T]`; fp32 logits `[n, vocab]` of `logits_rows`."""
        c = self.config
        T = input_ids.shape[0]
        q_size, kv_size = c.num_q_heads * c.head_dim, c.num_kv_heads * c.head_dim
        x = self.embed[input_ids]  # [T, hidden]
        cos = self.cos[positions][:, None, :]  # [T, 1, D/2] gathered once per forward, not per layer
        sin = self.sin[positions][:, None, :]  # [T, 1, D/2]
        heads = c.num_q_heads + c.num_kv_heads
        for i, lw in enumerate(self.layers):
            hs = F.rms_norm(x, (c.hidden_size,), lw["attn_norm"], c.rms_eps)  # [T, hidden]
            qkv = hs @ lw["wqkv"]  # [T, (Hq + 2 Hkv) D]
            # q and k rotate together (one set of elementwise kernels, not two): fewer launches per layer
            qk = self._rope(qkv[:, :q_size + kv_size].view(T, heads, c.head_dim), cos, sin)  # [T, Hq + Hkv, D]
            q = qk[:, :c.num_q_heads].contiguous()  # [T, Hq, D]
            k = qk[:, c.num_q_heads:].contiguous()  # [T, Hkv, D]
            v = qkv[:, q_size + kv_size:].reshape(T, c.num_kv_heads, c.head_dim)  # [T, Hkv, D]
            o = attn(i, q, k, v)  # [T, Hq, D]
            x = x + o.reshape(T, q_size) @ lw["wo"]  # [T, hidden]
            hs = F.rms_norm(x, (c.hidden_size,), lw["mlp_norm"], c.rms_eps)  # [T, hidden]
            gate, up = (hs @ lw["w_gate_up"]).chunk(2, dim=-1)  # [T, I] each
            x = x + (F.silu(gate) * up) @ lw["w_down"]  # [T, hidden]
        if logits_rows is not None:
            x = x[logits_rows]  # [n, hidden]
        x = F.rms_norm(x, (c.hidden_size,), self.final_norm, c.rms_eps)  # [n, hidden]
        return (x @ self.lm_head).float()  # [n, vocab]
