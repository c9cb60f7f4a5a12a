"""What a `pabench run` (or `sweep`) serves when no `--workload` is given, per device.

CPU: `default` on the `tiny` model, where the default budget (room for 32 / 8 = 4 sequences at max_model_len 1024)
lets paged run ~5x contiguous-max's batch in under a minute. CUDA: the same 48 requests would take a second per
backend with nothing memory-bound, so the default there is `sharegpt-like` (500 of its heavy-tailed requests at
once) on llama-3-8b's shapes cut to its first 4 layers (a fast model, so the cache's effect shows): the default
budget, room for 256 / 8 = 32 sequences at max_model_len 2048 (1 GiB at 16 KiB per token), holds ~130 average
requests, so contiguous-max runs at most 32 while paged runs several times that. Torch-free until asked which
device `auto` is.
"""

from __future__ import annotations

from dataclasses import dataclass

CPU_WORKLOAD = "default"
CUDA_WORKLOAD = "sharegpt-like"
CUDA_NUM_REQUESTS = 500  # of the preset's 1000: four backends in under a minute on an H200
CUDA_LAYERS = 4  # of llama-3-8b's 32 (same head shapes); only when neither --model nor --layers is given


@dataclass(frozen=True)
class RunDefaults:
    """The workload, layer count and request count a run takes, after the device's defaults."""

    workload: str
    layers: int | None
    num_requests: int | None


def on_cuda(device: str) -> bool:
    """Will a run with `--device device` be on CUDA? (`auto` asks torch.)"""
    if device != "auto":
        return device == "cuda"
    import torch

    return torch.cuda.is_available()


def run_defaults(device: str, workload: str | None, model: str | None, layers: int | None,
                 num_requests: int | None) -> RunDefaults:
    """The options as given, with the device's default workload when none is given (on CUDA also 4 layers when
    no model or layer count is given, and 500 requests when no count is)."""
    if workload is not None:
        return RunDefaults(workload, layers, num_requests)
    if not on_cuda(device):
        return RunDefaults(CPU_WORKLOAD, layers, num_requests)
    return RunDefaults(CUDA_WORKLOAD, CUDA_LAYERS if model is None and layers is None else layers,
                       CUDA_NUM_REQUESTS if num_requests is None else num_requests)
