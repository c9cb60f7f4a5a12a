"""`ExtentAllocator`: first-fit allocation of contiguous token ranges in one slab.

This is how a contiguous KV cache really behaves: each sequence needs ONE unbroken region, so memory can be
free in total yet unusable because no single free run is long enough (external fragmentation). Pure Python.
"""

from __future__ import annotations

import bisect

from pabench.errors import ConfigError, SequenceStateError


class ExtentAllocator:
    """First-fit over a sorted list of free extents `(start, length)`, coalescing neighbours on free."""

    def __init__(self, num_slots: int) -> None:
        if num_slots <= 0:
            raise ConfigError(f"num_slots must be > 0, got {num_slots}")
        self.num_slots = num_slots
        self._free_starts: list[int] = [0]  # sorted starts of free extents
        self._free_lens: dict[int, int] = {0: num_slots}  # start -> length
        self._used: dict[int, int] = {}  # start -> length of handed-out extents
        self.num_free_slots = num_slots

    def can_allocate(self, length: int) -> bool:
        """True when one free extent can hold `length` slots."""
        return length <= self.largest_free_extent

    def allocate(self, length: int) -> int | None:
        """Reserve `length` contiguous slots at the lowest address that fits; None when no extent is long enough."""
        if length <= 0:
            raise ConfigError(f"extent length must be > 0, got {length}")
        for start in self._free_starts:  # first fit: O(number of free extents)
            free_len = self._free_lens[start]
            if free_len >= length:
                self._remove_free(start)
                if free_len > length:
                    self._insert_free(start + length, free_len - length)
                self._used[start] = length
                self.num_free_slots -= length
                return start
        return None

    def free(self, start: int) -> None:
        """Return the extent that begins at `start`, merging it with free neighbours."""
        length = self._used.pop(start, None)
        if length is None:
            raise SequenceStateError(f"no extent is allocated at slot {start} (double free?)")
        self.num_free_slots += length
        i = bisect.bisect_left(self._free_starts, start)
        if i < len(self._free_starts) and self._free_starts[i] == start + length:  # merge right neighbour
            nxt = self._free_starts[i]
            length += self._free_lens[nxt]
            self._remove_free(nxt)
        if i > 0:  # merge left neighbour
            prev = self._free_starts[i - 1]
            if prev + self._free_lens[prev] == start:
                self._free_lens[prev] += length
                return
        self._insert_free(start, length)

    @property
    def largest_free_extent(self) -> int:
        """Length of the longest free run (0 when full)."""
        return max(self._free_lens.values(), default=0)

    def extent_length(self, start: int) -> int:
        """Length of the allocated extent at `start`."""
        return self._used[start]

    def free_extents(self) -> list[tuple[int, int]]:
        """Free extents as (start, length), lowest address first (for rendering and tests)."""
        return [(s, self._free_lens[s]) for s in self._free_starts]

    def used_extents(self) -> list[tuple[int, int]]:
        """Allocated extents as (start, length), lowest address first."""
        return sorted(self._used.items())

    def _insert_free(self, start: int, length: int) -> None:
        bisect.insort(self._free_starts, start)
        self._free_lens[start] = length

    def _remove_free(self, start: int) -> None:
        self._free_starts.pop(bisect.bisect_left(self._free_starts, start))
        del self._free_lens[start]

    def check_invariants(self) -> None:
        """Debug check: extents tile the slab exactly, free ones never adjacent. O(extents)."""
        spans = sorted([(s, n, "free") for s, n in self._free_lens.items()]
                       + [(s, n, "used") for s, n in self._used.items()])
        pos = 0
        prev_kind = None
        for s, n, kind in spans:
            assert s == pos and n > 0, f"gap or overlap at {s}"
            assert not (kind == prev_kind == "free"), f"adjacent free extents at {s}"
            pos, prev_kind = s + n, kind
        assert pos == self.num_slots
        assert self.num_free_slots == sum(self._free_lens.values())
