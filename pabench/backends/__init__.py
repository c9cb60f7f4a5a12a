"""Backends layer: the KV memory the core manages. `make_backend` builds one by name."""

from __future__ import annotations

from pabench.backends.base import KVCacheBackend, KVLayout
from pabench.errors import ConfigError

BACKENDS = ("paged", "contiguous-max", "contiguous-pow2", "contiguous-oracle")
EXTRA_BACKENDS = ("paged+prefix", "paged-noprefix", "paged-reprefill")  # prefix caching forced on/off; vLLM v1 beams
BEAM_BACKENDS = ("paged-reprefill",)  # join `all` when the workload runs beam search


def is_paged(name: str) -> bool:
    """Is the backend called `name` (as run, or as an export's `backend` cell) a paged cache?"""
    return str(name).startswith("paged")


def parse_backends(spec: str) -> list[str]:
    """'paged,contiguous-max' -> ['paged', 'contiguous-max'] ('all' = every standard backend)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["all"]:
        return list(BACKENDS)
    if not names:
        raise ConfigError("no backend given")
    for n in names:
        if n not in BACKENDS + EXTRA_BACKENDS:
            raise ConfigError(f"unknown backend {n!r}; choose from {', '.join(BACKENDS + EXTRA_BACKENDS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"backend listed twice in {spec!r}")
    return names


def make_backend(name: str, layout: KVLayout, *, kv_budget_bytes: int, page_size: int = 16,
                 enable_prefix_caching: bool = True, max_num_seqs: int = 256, max_model_len: int = 2048,
                 attn_impl: str = "auto", watermark: float = 0.04, kv_scales=None) -> KVCacheBackend:
    """Build the backend called `name` over the same KV byte budget as every other backend (`kv_scales`: an fp8
    layout's per-layer K and V scales, fp32 [num_layers] each, the same for every backend of a run)."""
    if is_paged(name):
        from pabench.backends.paged import PagedBackend

        prefix = {"paged": enable_prefix_caching, "paged+prefix": True, "paged-noprefix": False,
                  "paged-reprefill": True}[name]
        backend = PagedBackend(layout, page_size=page_size, kv_budget_bytes=kv_budget_bytes,
                               enable_prefix_caching=prefix, max_num_seqs=max_num_seqs,
                               max_model_len=max_model_len, attn_impl=attn_impl, watermark=watermark,
                               kv_scales=kv_scales)
        backend.name = name
        # beams as vLLM v1 runs them: every beam step re-admits each beam, served by the prefix cache
        backend.reprefill_beams = name == "paged-reprefill"
        return backend
    if name.startswith("contiguous-"):
        from pabench.backends.contiguous import ContiguousBackend

        return ContiguousBackend(layout, policy=name.removeprefix("contiguous-"), kv_budget_bytes=kv_budget_bytes,
                                 max_num_seqs=max_num_seqs, max_model_len=max_model_len, attn_impl=attn_impl,
                                 kv_scales=kv_scales)
    raise ConfigError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS + EXTRA_BACKENDS)}")


__all__ = ["BACKENDS", "BEAM_BACKENDS", "KVCacheBackend", "KVLayout", "is_paged", "make_backend", "parse_backends"]
