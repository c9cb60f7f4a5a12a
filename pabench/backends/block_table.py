"""`DeviceBlockTable`: the paged cache's persistent block table on the device, kept in sync incrementally.

One `int32 [max_seqs + 1, max_pages]` tensor lives on the device for the whole run; each sequence owns a row
while it runs. The host records only the entries that change (a new page, a copy-on-write copy, a fork's or
an admission's pages) and ships them in one copy per step: per-step host work is O(changed pages), never
O(batch x pages). The extra last row holds only the scratch page: padding rows of a CUDA-graph batch read it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np
import torch

from pabench.backends.staging import PinnedUpload
from pabench.errors import OutOfPagesError


class DeviceBlockTable:
    """Rows of page ids on the device, one per running sequence, plus the pending writes not yet there."""

    WRITE_ROWS = 4  # rows of max_num_seqs the write descriptor ([2, 2 * max_num_seqs]) takes in the step's upload

    def __init__(self, max_num_seqs: int, max_pages_per_seq: int, scratch_page: int,
                 device: torch.device | str, upload: PinnedUpload, row: int) -> None:
        self.max_pages_per_seq = max_pages_per_seq
        self.padding_row = max_num_seqs  # all scratch page
        self.tensor = torch.zeros(max_num_seqs + 1, max_pages_per_seq, dtype=torch.int32,
                                  device=device)  # [max_seqs + 1, max_pages]
        self.tensor[self.padding_row].fill_(scratch_page)
        self._free_rows: deque[int] = deque(range(max_num_seqs))
        self.rows: dict[int, int] = {}  # seq_id -> row
        # Writes not yet on the device: flat index (row * max_pages + index) -> page id. A dict, so a position
        # written twice before a flush (a fork's shared last page, then its copy-on-write) keeps the last.
        self._pending: dict[int, int] = {}
        # A decode step carries up to `writes_cap` of them in a descriptor that `apply_writes` applies on the device
        # (in the CUDA graph). It is WRITE_ROWS rows, from `row`, of the caller's `upload` (whose rows start as
        # `noop_rows`), filled by `stage_writes` and sent with the rest of the step: one copy for everything the
        # step stages. Unused entries rewrite the padding row's first entry with the scratch page it already holds;
        # more than the cap (after big admissions) is flushed eagerly first.
        self.writes_cap = 2 * max_num_seqs
        self._noop_write = (self.padding_row * max_pages_per_seq, scratch_page)
        self._writes_tensor = upload.tensor[row:row + self.WRITE_ROWS].view(2, self.writes_cap)  # [2, cap]
        # per host buffer (by identity): its write rows as [2, cap], and how many real writes it holds
        self._host_writes = {id(v): v[row:row + self.WRITE_ROWS].reshape(2, self.writes_cap) for v in upload.views}
        self._host_filled = dict.fromkeys(self._host_writes, 0)

    @property
    def num_free_rows(self) -> int:
        return len(self._free_rows)

    @property
    def num_pending(self) -> int:
        return len(self._pending)

    @staticmethod
    def noop_rows(max_num_seqs: int, max_pages_per_seq: int, scratch_page: int) -> tuple[int, ...]:
        """The first values of a shared upload's WRITE_ROWS rows: every write a no-op (see `__init__`)."""
        noop_index = max_num_seqs * max_pages_per_seq  # the padding row's first entry
        return (noop_index, noop_index, scratch_page, scratch_page)

    def attach(self, seq_id: int, page_ids: Iterable[int], what: str) -> None:
        """Give `seq_id` a row and record its pages (an admission or a fork)."""
        if not self._free_rows:
            raise OutOfPagesError(1, 0, what=f"a block-table row for {what}")
        row = self._free_rows.popleft()
        self.rows[seq_id] = row
        base = row * self.max_pages_per_seq
        self._pending.update((base + i, pid) for i, pid in enumerate(page_ids))

    def detach(self, seq_id: int) -> None:
        """The sequence's row is free again (its stale entries are never read: lengths bound every read)."""
        self._free_rows.append(self.rows.pop(seq_id))

    def set_entry(self, seq_id: int, index: int, page_id: int) -> None:
        """Entry `index` of the sequence's row now names `page_id` (a new last page, or its copy)."""
        self._pending[self.rows[seq_id] * self.max_pages_per_seq + index] = page_id

    def stage_writes(self, host: np.ndarray) -> None:
        """Host side: put the pending writes into this step's host buffer of the upload (`host`, one of its
        `views`); the caller sends it (see `apply_writes`)."""
        k = len(self._pending)
        if k > self.writes_cap:
            self.flush()
            k = 0
        key = id(host)  # this buffer last held the step before last's writes: overwrite them all
        desc, before = self._host_writes[key], self._host_filled[key]  # [2, cap] view, its old writes
        self._drain_pending(desc)
        if before > k:
            desc[0, k:before], desc[1, k:before] = self._noop_write
        self._host_filled[key] = k

    def apply_writes(self) -> None:
        """Device side (graph-capturable): apply this step's descriptor (idempotent: applying twice is harmless)."""
        writes = self._writes_tensor  # [2, cap] (flat index, page id)
        self.tensor.view(-1).index_put_((writes[0],), writes[1].to(torch.int32))

    def flush(self) -> None:
        """Write the pending entries to the device now, in one indexed store."""
        if not self._pending:
            return
        host = np.empty((2, len(self._pending)), dtype=np.int64)  # [2, num_changes] (flat index, page id)
        self._drain_pending(host)
        upd = torch.from_numpy(host).to(self.tensor.device, non_blocking=True)  # [2, num_changes]
        self.tensor.view(-1)[upd[0]] = upd[1].to(torch.int32)

    def _drain_pending(self, out: np.ndarray) -> None:
        """Move the pending writes into `out[:, :k]` (flat indices, then page ids) and forget them."""
        k = len(self._pending)
        if k:
            out[:, :k] = (list(self._pending.keys()), list(self._pending.values()))
        self._pending.clear()
