"""`DecoderModel`: a Llama-style decoder with dummy (random, seeded) weights at real model shapes.

Like vLLM's dummy-weight benchmarking: the arithmetic and memory traffic are those of the real model, so
throughput and KV pressure are realistic, while no checkpoint is needed. Attention goes through the KV
cache backend, which is the only thing that differs between the runs pabench compares. With tensor parallelism
each rank holds a column-parallel share of q/k/v and gate/up and the matching row-parallel share of o and down,
whose partial sums an all-reduce adds up (Megatron-LM's layout, as vLLM and nano-vllm shard Llama).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from pabench.errors import ConfigError
from pabench.units import check_seed

if TYPE_CHECKING:
    from pabench.parallel.group import TPGroup


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
        return self.params_per_rank(1)

    def params_per_rank(self, tensor_parallel: int) -> int:
        """Weights one rank holds: a 1/N share of every projection; the norms, embedding and LM head replicated."""
        h, q, kv, d, n = self.hidden_size, self.num_q_heads, self.num_kv_heads, self.head_dim, tensor_parallel
        per_layer = (h * (q + 2 * kv) * d + q * d * h + 3 * h * self.intermediate_size) // n + 2 * h
        return 2 * self.vocab_size * h + self.num_layers * per_layer + h

    def check_tensor_parallel(self, n: int) -> None:
        """Refuse, in one line, a group of `n` ranks that cannot split this model's heads and MLP evenly."""
        if n < 1:
            raise ConfigError(f"--tensor-parallel must be >= 1, got {n}")
        uneven = [f"{v} {what}" for v, what in ((self.num_kv_heads, "KV heads"), (self.num_q_heads, "query heads"),
                                               (self.intermediate_size, "MLP columns")) if v % n]
        if uneven:
            raise ConfigError(f"--tensor-parallel {n}: model {self.name}'s {', '.join(uneven)} do not split evenly "
                              f"over {n} ranks (each rank takes an equal share of each)")


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
                 seed: int = 0, max_position: int = 32768, tp: TPGroup | None = None) -> None:
        self.config, self.seed = config, check_seed(seed, "model seed")
        self.dtype, self.device = dtype, torch.device(device)
        # Tensor parallelism (Megatron-style): this rank holds its share of the query and KV heads and of the MLP
        # columns (shapes below: Hq, Hkv, I are this rank's); the embedding and the LM head are replicated, so every
        # rank computes the same full logits and samples the same tokens without gathering anything.
        self.tp = tp
        rank, n = (tp.rank, tp.size) if tp is not None else (0, 1)
        c = config
        c.check_tensor_parallel(n)
        gen = torch.Generator(device=self.device).manual_seed(seed)

        def w(*shape: int, fan_in: int, columns: tuple[int, ...] = (), rows: bool = False) -> torch.Tensor:
            """A weight; sharded, this rank's share of its `columns` parts (column-parallel) or of its rows."""
            t = torch.randn(*shape, generator=gen, device=self.device, dtype=torch.float32)
            t = t.mul_(1.0 / math.sqrt(fan_in))
            # every rank draws the FULL tensor from the same seed and keeps its shard: the shards of N ranks
            # concatenate to the one-rank weights, so a sharded model is the same model (and logits match)
            if n > 1 and columns:
                t = column_shard(t, columns, rank, n)
            elif n > 1 and rows:
                t = t.chunk(n, dim=0)[rank].clone()  # a copy: the full tensor's storage is freed
            return t.to(dtype)

        q, kv, d, h, inter = c.num_q_heads, c.num_kv_heads, c.head_dim, c.hidden_size, c.intermediate_size
        self.num_q_heads, self.num_kv_heads, self.intermediate_size = q // n, kv // n, inter // n  # this rank's
        self.embed = w(c.vocab_size, h, fan_in=1)  # [vocab, hidden] replicated
        self.layers = [
            {
                "attn_norm": torch.ones(h, dtype=dtype, device=self.device),  # [hidden]
                "wqkv": w(h, (q + 2 * kv) * d, fan_in=h, columns=(q * d, kv * d, kv * d)),  # [hidden, (Hq + 2 Hkv) D]
                "wo": w(q * d, h, fan_in=q * d, rows=True),  # [Hq D, hidden]
                "mlp_norm": torch.ones(h, dtype=dtype, device=self.device),  # [hidden]
                "w_gate_up": w(h, 2 * inter, fan_in=h, columns=(inter, inter)),  # [hidden, 2 I]
                "w_down": w(inter, h, fan_in=inter, rows=True),  # [I, hidden]
            }
            for _ in range(c.num_layers)
        ]
        self.final_norm = torch.ones(h, dtype=dtype, device=self.device)  # [hidden]
        self.lm_head = w(h, c.vocab_size, fan_in=h)  # [hidden, vocab] replicated
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
        hq, hkv = self.num_q_heads, self.num_kv_heads  # this rank's heads (all of them without tensor parallelism)
        q_size, kv_size = hq * c.head_dim, hkv * c.head_dim
        reduce = self.tp.all_reduce if self.tp is not None and self.tp.size > 1 else None
        x = self.embed[input_ids]  # [T, hidden]
        cos = self.cos[positions][:, None, :]  # [T, 1, D/2] gathered once per forward, not per layer
        sin = self.sin[positions][:, None, :]  # [T, 1, D/2]
        for i, lw in enumerate(self.layers):
            hs = F.rms_norm(x, (c.hidden_size,), lw["attn_norm"], c.rms_eps)  # [T, hidden]
            qkv = hs @ lw["wqkv"]  # [T, (Hq + 2 Hkv) D]
            # q and k rotate together (one set of elementwise kernels, not two): fewer launches per layer
            qk = self._rope(qkv[:, :q_size + kv_size].view(T, hq + hkv, c.head_dim), cos, sin)  # [T, Hq + Hkv, D]
            q = qk[:, :hq].contiguous()  # [T, Hq, D]
            k = qk[:, hq:].contiguous()  # [T, Hkv, D]
            v = qkv[:, q_size + kv_size:].reshape(T, hkv, c.head_dim)  # [T, Hkv, D]
            o = attn(i, q, k, v)  # [T, Hq, D]
            out = o.reshape(T, q_size) @ lw["wo"]  # [T, hidden]: with tensor parallelism, this rank's heads' share
            x = x + (out if reduce is None else reduce(out))  # [T, hidden]
            hs = F.rms_norm(x, (c.hidden_size,), lw["mlp_norm"], c.rms_eps)  # [T, hidden]
            gate, up = (hs @ lw["w_gate_up"]).chunk(2, dim=-1)  # [T, I] each
            out = (F.silu(gate) * up) @ lw["w_down"]  # [T, hidden] (a partial sum over this rank's MLP columns)
            x = x + (out if reduce is None else reduce(out))  # [T, hidden]
        if logits_rows is not None:
            x = x[logits_rows]  # [n, hidden]
        x = F.rms_norm(x, (c.hidden_size,), self.final_norm, c.rms_eps)  # [n, hidden]
        return (x @ self.lm_head).float()  # [n, vocab]


    def kv_scales(self, num_tokens: int = 512, headroom: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-layer fp8 scales for K and for V (fp32 [num_layers] each): amax over a seeded probe prompt of
        `num_tokens` tokens, times `headroom`, over e4m3's largest value. One-shot calibration, as vLLM's
        `calculate_kv_scales` does on its first forward; the probe depends only on the model, so every backend of a
        run stores the same bytes. Computed once per model (a sweep reuses it)."""
        if getattr(self, "_kv_scales", None) is None:
            from pabench.kernels.fp8 import FP8_MAX

            n = min(num_tokens, self.cos.shape[0])
            gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
            ids = torch.randint(self.config.vocab_size, (n,), generator=gen, device=self.device)  # [n]
            amax = torch.zeros(2, self.config.num_layers, dtype=torch.float32, device=self.device)  # [K | V, L]

            def probe(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                amax[0, layer], amax[1, layer] = k.abs().amax().float(), v.abs().amax().float()
                group = q.shape[1] // k.shape[1]
                qh, kh, vh = (t.transpose(0, 1)[None] for t in (q, k.repeat_interleave(group, 1),
                                                                  v.repeat_interleave(group, 1)))  # [1, Hq, n, D]
                return F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)[0].transpose(0, 1)  # [n, Hq, D]

            self.forward(ids, torch.arange(n, device=self.device), probe, logits_rows=ids[:0])
            scales = torch.where(amax > 0, amax * headroom / FP8_MAX, torch.ones_like(amax))  # [2, L]
            self._kv_scales = (scales[0].clone(), scales[1].clone())
        return self._kv_scales


def column_shard(t: torch.Tensor, parts: tuple[int, ...], rank: int, n: int) -> torch.Tensor:
    """Rank `rank`'s share of every part of a column-stacked weight `[rows, sum(parts)]` (q | k | v, gate | up),
    side by side: `[rows, sum(parts) / n]` (a copy, so the full tensor can be freed)."""
    return torch.cat([p.chunk(n, dim=1)[rank] for p in t.split(list(parts), dim=1)], dim=1)  # [rows, sum / n]
