"""The `KVCacheBackend` protocol the engine talks to, and `KVLayout`, what one token of KV costs.

A backend owns the KV memory of every layer and answers three kinds of question: admission (may this
sequence start?), growth (may it take one more token?), and attention (read the cache for a batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from pabench.errors import ConfigError
from pabench.units import check_kv_dtype

if TYPE_CHECKING:
    import torch

    from pabench.core import Sequence
    from pabench.core.memory import MemorySnapshot
    from pabench.kernels import MixedSchedule

DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2}


def parse_dtype(name: str) -> "torch.dtype":
    """'bf16' | 'fp16' | 'fp32' (or torch's long names) -> torch.dtype."""
    import torch

    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if name not in table:
        raise ConfigError(f"unknown dtype {name!r}; choose bf16, fp16 or fp32")
    return table[name]


@dataclass(frozen=True)
class KVLayout:
    """Shape of the KV cache of one model: layers x KV heads x head_dim, stored in `dtype` (the model's) or, with
    kv_dtype "fp8", as e4m3 bytes with a per-layer scale for K and for V, on `device`."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str = "fp32"  # the model's: "bf16" | "fp16" | "fp32"
    device: str = "cpu"
    kv_dtype: str = "auto"  # "auto": K/V stored in `dtype`; "fp8": float8_e4m3fn (kernels/fp8.py)

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.dtype not in DTYPE_BYTES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; choose bf16, fp16 or fp32")
        check_kv_dtype(self.kv_dtype)

    @property
    def is_fp8(self) -> bool:
        return self.kv_dtype == "fp8"

    @property
    def bytes_per_token(self) -> int:
        """K and V of one token across every layer and KV head, as stored (one byte per element in fp8)."""
        element = 1 if self.is_fp8 else DTYPE_BYTES[self.dtype]
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element

    @property
    def torch_dtype(self) -> "torch.dtype":
        """The model's dtype: q, k, v as the attention layers compute them."""
        return parse_dtype(self.dtype)

    @property
    def cache_dtype(self) -> "torch.dtype":
        """The dtype the pages or slabs store."""
        from pabench.kernels.fp8 import FP8_DTYPE

        return FP8_DTYPE if self.is_fp8 else self.torch_dtype

    def layer_scales(self, kv_scales: "tuple[torch.Tensor, torch.Tensor] | None" = None) -> list[dict]:
        """Per layer, the keyword arguments the kernels take for this storage: none for a float cache; for fp8,
        k_scale and v_scale, one-element views of `kv_scales` (fp32 [num_layers] each; None: all 1.0, what vLLM
        uses without calibrated scales). Built once per backend, so a step passes views, not new tensors."""
        if not self.is_fp8:
            return [{} for _ in range(self.num_layers)]
        import torch

        ones = torch.ones(self.num_layers, dtype=torch.float32, device=self.device)  # [L]
        k, v = (ones, ones.clone()) if kv_scales is None else (t.to(self.device, torch.float32) for t in kv_scales)
        if k.shape != (self.num_layers,) or v.shape != (self.num_layers,):
            raise ConfigError(f"fp8 KV scales must be [num_layers={self.num_layers}] each, got {tuple(k.shape)} and "
                              f"{tuple(v.shape)}")
        return [{"k_scale": k[i:i + 1], "v_scale": v[i:i + 1]} for i in range(self.num_layers)]  # [1] views


@dataclass(frozen=True)
class PrefillMeta:
    """What one sequence's prefill needs: the slots of its new tokens and where its whole KV lives."""

    slots: "torch.Tensor"  # [n_new] where the new tokens' K/V go (on the host: PrefillBatch.build moves them once)
    n_new: int  # tokens computed in this prefill (prompt minus prefix-cache hits)
    n_total: int  # tokens attended over (cached prefix + new)
    kv_index: object  # backend-specific: the page ids (paged) or the region start (contiguous)
    kv_ref: int = 0  # what the unified mixed-step kernel reads through: block-table row (paged) or region start


@dataclass(frozen=True)
class PrefillBatch:
    """One prefill step's sequences packed end to end, so each layer runs ONE attention call for all of them.

    Sequence i's new tokens are rows cu_q[i]:cu_q[i+1] of q; it attends over rows cu_k[i]:cu_k[i+1] of the packed
    K/V: the fresh k, v themselves when no sequence has a cached prefix (kv_slots None), else the cache gathered at
    kv_slots (the cached prefix, then the new tokens, per sequence)."""

    slots: "torch.Tensor"  # [T_new] where the new tokens' K/V go (sequences end to end)
    cu_q: tuple[int, ...]  # [n + 1] offsets of each sequence's new tokens
    cu_k: tuple[int, ...]  # [n + 1] offsets of each sequence's attended tokens
    kv_slots: "torch.Tensor | None"  # [T_total] slot of every attended token, or None: attend over the fresh k, v
    cu_q_dev: "torch.Tensor | None" = None  # [n + 1] int32 cu_q on the device, built once per step (not per layer)
    cu_k_dev: "torch.Tensor | None" = None  # [n + 1] int32 cu_k on the device
    mixed: "MixedSchedule | None" = None  # set: attend in place with the unified kernel (no kv_slots gather)

    def __post_init__(self) -> None:
        if len(self.cu_q) != len(self.cu_k) or len(self.cu_q) < 2 or self.cu_q[0] or self.cu_k[0]:
            raise ConfigError(f"prefill batch offsets must start at 0 and match in count, got {self.cu_q}, {self.cu_k}")
        if self.kv_slots is None and self.mixed is None and self.cu_q != self.cu_k:
            raise ConfigError("a prefill batch with cached prefixes needs kv_slots or a mixed schedule")

    @staticmethod
    def build(metas: "list[PrefillMeta]", kv_slots: "Callable[[PrefillMeta], torch.Tensor]",
              device: "torch.device | str | None" = None, unified: bool = False) -> "PrefillBatch":
        """Pack `metas` and move the packed slots to `device` in one copy each (None: leave them where they are).
        If some prefix is cached: `unified` builds the unified kernel's schedule (O(sequences), the cache is read
        in place), else `kv_slots(meta)` (all of a sequence's slots) is gathered, O(tokens)."""
        import itertools

        import torch

        cu_q = tuple(itertools.accumulate((m.n_new for m in metas), initial=0))
        cu_k = tuple(itertools.accumulate((m.n_total for m in metas), initial=0))
        slots = torch.cat([m.slots for m in metas]) if len(metas) > 1 else metas[0].slots  # [T_new]
        dev = slots.device if device is None else torch.device(device)
        slots = slots.to(dev, non_blocking=True)
        if cu_q != cu_k and unified:
            from pabench.kernels import mixed_schedule

            mixed = mixed_schedule(cu_q, [m.n_total for m in metas], [m.kv_ref for m in metas], dev)
            return PrefillBatch(slots=slots, cu_q=cu_q, cu_k=cu_k, kv_slots=None, mixed=mixed)
        gathered = None
        if cu_q != cu_k:
            gathered = torch.cat([kv_slots(m) for m in metas]).to(dev, non_blocking=True)  # [T_total]
        cu_q_dev = torch.tensor(cu_q, dtype=torch.int32).to(dev, non_blocking=True)  # [n + 1]
        cu_k_dev = cu_q_dev if cu_k == cu_q else torch.tensor(cu_k, dtype=torch.int32).to(dev, non_blocking=True)
        return PrefillBatch(slots=slots, cu_q=cu_q, cu_k=cu_k, kv_slots=gathered, cu_q_dev=cu_q_dev, cu_k_dev=cu_k_dev)


def attend_prefill(q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", batch: PrefillBatch,
                   k_slots: "torch.Tensor", v_slots: "torch.Tensor", scales: dict | None = None) -> "torch.Tensor":
    """A packed prefill batch's attention, shared by every backend: over the fresh k, v `[T_new, Hkv, D]`, or, when a
    prefix is cached, over the cache read at `batch.kv_slots` from `k_slots`, `v_slots` `[num_slots, Hkv, D]` (a
    layer's storage seen as one row per token slot: pages flattened, or the slab). An fp8 cache (`scales`, from
    `KVLayout.layer_scales`) is read dequantised, and fresh k, v are rounded to fp8 first: every path then attends over
    the same stored values (as vLLM's kernels read prefill K/V from the cache), so a prefix hit or a recompute changes
    no number. Returns `[T_new, Hq, D]`."""
    from pabench import kernels

    if batch.kv_slots is not None and scales:  # fp8: gather the bytes (torch indexes no fp8 tensor on the CPU)
        import torch

        k8 = k_slots.view(torch.uint8)[batch.kv_slots].view(k_slots.dtype)  # [T_total, Hkv, D] e4m3
        v8 = v_slots.view(torch.uint8)[batch.kv_slots].view(v_slots.dtype)  # [T_total, Hkv, D] e4m3
        k = (k8.float() * scales["k_scale"]).to(q.dtype)  # [T_total, Hkv, D]
        v = (v8.float() * scales["v_scale"]).to(q.dtype)  # [T_total, Hkv, D]
    elif batch.kv_slots is not None:
        k = k_slots[batch.kv_slots]  # [T_total, Hkv, D]
        v = v_slots[batch.kv_slots]  # [T_total, Hkv, D]
    elif scales:  # fp8, nothing cached: attend over what was stored, as a cached prefix or a decode step would read it
        from pabench.kernels.fp8 import dequantize, quantize

        k = dequantize(quantize(k, scales["k_scale"]), scales["k_scale"]).to(q.dtype)  # [T_new, Hkv, D]
        v = dequantize(quantize(v, scales["v_scale"]), scales["v_scale"]).to(q.dtype)  # [T_new, Hkv, D]
    return kernels.varlen_prefill_attention(q, k, v, batch.cu_q, batch.cu_k, cu_q_dev=batch.cu_q_dev,
                                            cu_k_dev=batch.cu_k_dev)


class KVCacheBackend(Protocol):
    """What the scheduler and the model need from a KV cache. Paged and contiguous caches both implement it."""

    name: str
    layout: KVLayout
    is_paged: bool  # pages (a block manager) or contiguous reservations
    unified_attention: bool  # mixed steps may run the unified Triton kernel (PrefillBatch.build(unified=True))
    scratch_ref: int  # a kv_ref that reads only scratch memory: the unified kernel's warm-up

    # --- admission and growth (host side, cheap) ---
    def can_admit(self, seq: "Sequence", max_total_tokens: int, num_forks: int = 0,
                  max_new_tokens: int | None = None) -> bool:
        """Could `seq` (whose final length is at most `max_total_tokens`, forking `num_forks` times) start now, with
        all its tokens or (chunked prefill) its cached prefix plus `max_new_tokens`?"""
        ...

    def admit(self, seq: "Sequence", max_total_tokens: int, num_forks: int = 0,
              max_new_tokens: int | None = None) -> None:
        """Give `seq` memory for its current tokens, or its first chunk (and what `num_forks` forks need up front)."""
        ...

    def grow_chunk(self, seq: "Sequence", end: int) -> None:
        """Cover positions up to `end` for a chunked prefill's next chunk (OutOfPagesError, untouched, if no room)."""
        ...

    def can_grow(self, seq: "Sequence") -> bool:
        """Is there room for `seq`'s newest token (appended but not yet in the cache)?"""
        ...

    def grow(self, seq: "Sequence") -> None:
        """Cover `seq`'s newest token; copy-on-write copies run on the device for every layer."""
        ...

    def grow_many(self, seqs: list["Sequence"], start: int = 0) -> int:
        """`grow` each of `seqs[start:]` in order (a decode step's hot path); returns the index of the first that
        could not grow, untouched with those after it, or len(seqs)."""
        ...

    def fork(self, parent: "Sequence", child: "Sequence") -> None:
        """Give `child` the parent's cached tokens (shared pages, or a copied region)."""
        ...

    def release(self, seq: "Sequence") -> None:
        """Return every byte `seq` holds."""
        ...

    # --- step preparation and per-layer device work ---
    def prepare_prefill(self, seq: "Sequence", start: int | None = None, end: int | None = None) -> PrefillMeta:
        """Get ready to compute positions [start, end) of `seq` (default [num_cached_tokens, num_tokens)): a prefill,
        a prefill chunk, or, in a mixed step, a decode token (end - start = 1)."""
        ...

    def invalidate_decode_staging(self) -> None:
        """The decode batch's staged rows are stale (sequences advanced in a mixed step): rebuild them next time."""
        ...

    def prepare_decode(self, seqs: list["Sequence"]) -> "torch.Tensor":
        """Get ready to decode the newest token of each of `seqs`; returns the slot of each `# [batch]`."""
        ...

    def write_kv(self, layer: int, slots: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor") -> None:
        """Scatter k, v `[num_tokens, num_kv_heads, head_dim]` into `slots` of `layer`."""
        ...

    def kv_slots(self, meta: PrefillMeta) -> "torch.Tensor":
        """Every slot of a prepared prefill sequence, cached prefix first: `[n_total]`."""
        ...

    def prefill_attention(self, layer: int, q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor",
                          batch: PrefillBatch) -> "torch.Tensor":
        """Causal attention of a packed prefill batch (q `[T_new, Hq, D]`; k, v the new tokens' `[T_new, Hkv, D]`,
        already written), cached prefixes included (read in place when `batch.mixed` is set): `[T_new, Hq, D]`."""
        ...

    def decode_attention(self, layer: int, q: "torch.Tensor") -> "torch.Tensor":
        """Attention of the prepared decode batch's newest tokens over their caches: `[batch, Hq, D]`."""
        ...

    def memory(self) -> "MemorySnapshot":
        """Exact, token-level byte accounting now."""
        ...

    def capacity(self) -> dict:
        """What the budget holds: bytes, pages/slots, tokens, sequences at max_model_len."""
        ...

    def fits_when_empty(self, total_tokens: int, num_forks: int = 0, together: bool = False) -> bool:
        """Could a sequence of `total_tokens` (with `num_forks` siblings, all resident at once when `together`: beams)
        run if this cache were empty?"""
        ...

    def describe(self) -> dict:
        """The cache's own settings and counters for the report: page_size, prefix_caching, watermark,
        prefix_hit_rate, num_cow_copies, kv_copied_bytes (contiguous caches: token granularity, no sharing)."""
        ...
