"""Attention kernels for decode and for mixed (chunked-prefill) steps over a paged or contiguous KV cache, the KV
write, and vendor/peer paths.

`impl="auto"` runs Triton on CUDA and the torch reference elsewhere; `impl="triton"` also runs on the CPU
under TRITON_INTERPRET=1 (slow, for tests).
"""

from pabench.kernels.decode import contiguous_decode_attention, paged_decode_attention
from pabench.kernels.tiling import DecodeConfig, choose_decode_config, variant_batches
from pabench.kernels.kv_write import write_kv
from pabench.kernels.mixed import (MixedConfig, MixedSchedule, contiguous_mixed_attention, mixed_schedule,
                                   paged_mixed_attention, unified_supported)
from pabench.kernels.reference import contiguous_decode_reference, paged_decode_reference, write_kv_reference
from pabench.kernels.peers import (decode_padding_mask, flashinfer_available, flex_available, flex_paged_decode,
                                   gather_sdpa_decode, sdpa_decode_attention)
from pabench.kernels.prefill import prefill_attention, varlen_path, varlen_prefill_attention

__all__ = [
    "DecodeConfig",
    "MixedConfig",
    "MixedSchedule",
    "choose_decode_config",
    "contiguous_decode_attention",
    "contiguous_decode_reference",
    "contiguous_mixed_attention",
    "decode_padding_mask",
    "flashinfer_available",
    "flex_available",
    "flex_paged_decode",
    "gather_sdpa_decode",
    "mixed_schedule",
    "paged_decode_attention",
    "paged_decode_reference",
    "paged_mixed_attention",
    "prefill_attention",
    "sdpa_decode_attention",
    "variant_batches",
    "varlen_path",
    "varlen_prefill_attention",
    "unified_supported",
    "write_kv",
    "write_kv_reference",
]
