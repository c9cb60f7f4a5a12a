"""`StagedBatch`: a decode batch's per-sequence integers in a static device buffer, restaged incrementally.

A decode step needs two numbers per sequence on the device: a key that stays put while the sequence lives (its
block-table row, its region start, its newest token id) and a counter that grows by one per step (its length,
its position). Consecutive decode steps mostly run the same sequences (64% of the steps of sharegpt-like at
16 GiB, 85% at 2 GiB) or the same minus the ones that just finished (32% / 10%).

So the host only writes a small descriptor per row (where the row comes from in the last step's buffer, or its
new values) into one host array and copies it in ONE transfer (`stage`); the device turns it into the new
buffer (`apply`: gather the old rows, count one more, take new rows as given). `apply` is a few fixed-shape
tensor ops, so a CUDA graph captures it: on a GPU a decode step's staging is one copy plus the replay (what
each small torch call from Python costs there: benchmarks/NOTES.md, "Numbers that were code comments").
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

FieldsFn = Callable[[list], "tuple[list[int], list[int]]"]  # seqs -> (keys, counters), one each per sequence


class PinnedUpload:
    """An int64 device tensor written from host memory in one async copy per step (`host()`, fill it, `send()`).

    Two page-locked host buffers are used in turn: with a step in flight (engine/pipelined.py), the copy queued
    behind it may not have run when the next step's values are written; a third write comes only after a step
    that has completed. `init` gives every row of both host buffers and of the device tensor its first value."""

    def __init__(self, shape: tuple[int, int], init: tuple[int, ...], device: torch.device) -> None:
        pinned = device.type == "cuda"  # page-locked host memory: the copy is a true async DMA
        start = torch.tensor(init, dtype=torch.int64)[:, None].expand(shape)  # [rows, cols]
        self._hosts = [start.clone().pin_memory() if pinned else start.clone() for _ in range(2)]  # [rows, cols] each
        self.views = [h.numpy() for h in self._hosts]  # numpy views of the two buffers, made once (not per step)
        self._num_written = 0
        self.tensor = start.to(device, copy=True)  # [rows, cols] on the device

    def host(self) -> np.ndarray:
        """The next host buffer, as a numpy view (writes land in the page-locked tensor)."""
        self._num_written += 1
        return self.views[self._num_written % 2]

    def send(self) -> None:
        """Queue the copy of the buffer `host()` returned: the whole buffer, contiguous on both sides, so one DMA
        (a [:, :batch] slice would be strided and go through a pageable temporary)."""
        self.tensor.copy_(self._hosts[self._num_written % 2], non_blocking=True)


def keep_indices(prev: list, seqs: list) -> list[int] | None:
    """Where each of `seqs` sat in `prev` (by identity), or None if one of them is new."""
    index = {id(s): i for i, s in enumerate(prev)}
    keep = [index.get(id(s), -1) for s in seqs]
    return None if -1 in keep else keep


class StagedBatch:
    """`buf[0, i]` = key and `buf[1, i]` = counter of the batch's i-th sequence; rows `n:batch` hold `pad`.

    `stage(seqs, batch, fields)` (host) then `apply(batch)` (device, graph-capturable) make `buf` current."""

    DESC_ROWS = 3  # rows of the descriptor, for a caller that ships it inside its own upload (`shared`)

    def __init__(self, max_num_seqs: int, pad: tuple[int, int], dtype: torch.dtype, device,
                 shared: PinnedUpload | None = None) -> None:
        device = torch.device(device)
        self.buf = torch.zeros(2, max_num_seqs, dtype=dtype, device=device)  # [2, max_seqs] (key, counter) per row
        # Descriptor per row: source row in the last buffer (-1: new row), then the new row's key and counter.
        # `shared`: the descriptor is its first DESC_ROWS rows, filled through `stage(..., desc=)` and sent by the
        # caller with the rest of that upload (one copy per step for everything the step stages).
        self._desc = shared or PinnedUpload((3, max_num_seqs), (0, 0, 0), device)  # [>= 3, max_seqs]
        self._rows = np.arange(max_num_seqs, dtype=np.int64)  # [max_seqs] "row i comes from row i"
        self.pad = pad
        self._seqs: list = []  # the sequences the buffer holds (once applied), in row order
        self._written: dict[int, tuple[int, int] | None] = {}  # per host buffer: (n, batch) of an identity plan
        self.num_rebuilds = 0
        self.num_updates = 0

    def invalidate(self) -> None:
        """The sequences moved on outside decode steps (a mixed step of chunked prefill decodes through the prefill
        path): the next `stage` rebuilds every row from the host instead of counting one more."""
        self._seqs = []

    @property
    def keys(self) -> torch.Tensor:
        return self.buf[0]  # [max_seqs]

    @property
    def counters(self) -> torch.Tensor:
        return self.buf[1]  # [max_seqs]

    def stage(self, seqs: list, batch: int, fields: FieldsFn, desc: np.ndarray | None = None) -> None:
        """Host side: describe how rows 0..batch-1 follow from the last step's (kept rows count one more; new
        rows take `fields`; rows n..batch are padding), and copy the descriptor to the device in one transfer;
        with `desc` (this step's host buffer of a shared upload: one of its `views`, never a fresh array, as a
        buffer is known by identity), only fill it: the caller sends it."""
        own = desc is None
        n, desc = len(seqs), self._desc.host() if own else desc  # [>= 3, max_seqs]
        keep = self._plan(seqs)
        same = isinstance(keep, range)
        # the steady state: this buffer, written two steps ago, already says "every row from its own row, padding
        # after n": nothing to write
        steady = same and self._written.get(id(desc)) == (n, batch)
        if keep is None:  # rebuild every row from the host
            desc[0, :n] = -1
            if n:
                desc[1, :n], desc[2, :n] = fields(seqs)
            self.num_rebuilds += 1
        else:
            if not steady:
                desc[0, :n] = self._rows[:n] if same else keep
            self.num_updates += 1
        if not steady:
            desc[0, n:batch] = -1
            desc[1, n:batch] = self.pad[0]
            desc[2, n:batch] = self.pad[1]
        self._written[id(desc)] = (n, batch) if same else None
        if own:
            self._desc.send()
        if not same:
            self._seqs = list(seqs)

    def apply(self, batch: int, fresh_keys: torch.Tensor | None = None) -> None:
        """Device side (fixed shapes, no host sync: graph-capturable): rows 0..batch-1 of `buf` from the descriptor.
        A kept row counts one more and keeps its key, or takes `fresh_keys` at its old row (the token sampled there)."""
        desc = self._desc.tensor[:, :batch]  # [3, batch]
        src = desc[0]  # [batch] old row, or -1
        kept = src >= 0  # [batch]
        old = self.buf.index_select(1, src.clamp(min=0))  # [2, batch] gathered before anything is overwritten
        old_keys = old[0] if fresh_keys is None else fresh_keys.index_select(0, src.clamp(min=0))  # [batch]
        self.buf[0, :batch] = torch.where(kept, old_keys.to(desc.dtype), desc[1])
        self.buf[1, :batch] = torch.where(kept, old[1].to(desc.dtype) + 1, desc[2])

    def _plan(self, seqs: list) -> range | list[int] | None:
        """Rows of the last staging that `seqs` come from (a range when nothing moved), or None to rebuild."""
        if not seqs:
            return None
        if seqs == self._seqs:  # element identity, compared at C speed
            return range(len(seqs))
        return keep_indices(self._seqs, seqs)
