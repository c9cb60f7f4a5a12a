"""`GraphedDecode`: replay whole decode steps as CUDA graphs, one per batch-size bucket.

A decode step of a 32-layer model is ~700 small kernel launches; from Python that costs more host time than
the GPU needs at small batches. Serving engines capture the step once per batch-size bucket and replay it;
a batch is padded up to its bucket with rows that write and read a scratch page (length 1), so the padded
rows cost almost nothing. Inputs live in static buffers (token ids, positions here; table rows, lengths in
the backend), and the attention kernels compute their schedule on the device, so nothing syncs the host.
"""

from __future__ import annotations

import time
from typing import ContextManager

import torch

from pabench.backends.base import KVCacheBackend
from pabench.backends.staging import StagedBatch
from pabench.engine.attention import decode_attn, decode_token_fields
from pabench.engine.model import DecoderModel


def bucket_sizes(max_num_seqs: int) -> list[int]:
    """1, 2, 4, 8, then every multiple of 16 up to max_num_seqs (which is always included)."""
    sizes = [b for b in (1, 2, 4, 8) if b < max_num_seqs] + list(range(16, max_num_seqs, 16))
    return sorted(set(sizes + [max_num_seqs]))


class GraphedDecode:
    """Captured decode steps for one (model, backend) pair; `run(seqs)` returns the next token of each."""

    def __init__(self, model: DecoderModel, backend: KVCacheBackend, max_num_seqs: int) -> None:
        self.model, self.backend = model, backend
        self.buckets = bucket_sizes(max_num_seqs)
        dev = model.device
        # Newest token id and position per row, restaged incrementally from `out` (the previous replay's tokens).
        self.inputs = StagedBatch(max_num_seqs, (0, 0), torch.int64, dev)
        self.out = torch.zeros(max_num_seqs, dtype=torch.int64, device=dev)  # [max_seqs] greedy next tokens
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def _step(self, batch: int) -> None:
        """The device work of one decode step over static buffers (what gets captured)."""
        self.inputs.apply(batch, fresh_keys=self.out)  # token ids (sampled by the last replay) and positions
        slots = self.backend.decode_meta(batch)  # [batch]
        attn = decode_attn(self.backend, slots)
        logits = self.model.forward(self.inputs.keys[:batch], self.inputs.counters[:batch], attn)  # [batch, vocab]
        self.out[:batch].copy_(logits.argmax(-1))

    def capture_all(self) -> None:
        """Capture every bucket, largest first (so smaller ones reuse its memory pool)."""
        for b in sorted(self.buckets, reverse=True):
            self._capture(b)

    def _capture(self, batch: int) -> None:
        self.backend.stage_decode([], batch)  # all padding: scratch page, length 1
        self.inputs.stage([], batch, decode_token_fields)  # token 0 at position 0; the next run() rebuilds
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph: compiles kernels, settles allocations
            self._step(batch)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self._step(batch)
        torch.cuda.synchronize()
        self.graphs[batch] = graph

    def launch(self, seqs: list, timer: ContextManager) -> tuple[torch.Tensor, float]:
        """Stage inputs and queue the bucket's graph; the next token of each real row on the device `[n]` (valid
        once the replay ran) and the host staging time."""
        h0 = time.perf_counter()
        n = len(seqs)
        batch = next(b for b in self.buckets if b >= n)
        if batch not in self.graphs:
            self._capture(batch)
        self.backend.stage_decode(seqs, batch)
        self.inputs.stage(seqs, batch, decode_token_fields)
        host = time.perf_counter() - h0
        with timer:  # device time of the replay (CUDA events)
            self.graphs[batch].replay()
        return self.out[:n], host
