"""`PageTable`: one sequence's map from logical page index to physical page id (vLLM: block table).

Token at position p lives in logical page p // page_size, at offset p % page_size; the table turns the
logical page into a physical one, which gives the token's *slot* in the page pool:
    slot(p) = page_ids[p // page_size] * page_size + p % page_size
Only the `BlockManager` mutates a table (`append`, `replace_last`, `clear`, and its token count); everyone
else reads. The table also counts the tokens it covers (vLLM v0's block table does too): the last page's fill
follows from it, so a decode step that only fills last pages touches no `Page` at all (core/block_manager.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from pabench.errors import ConfigError, SequenceStateError


class PageTable:
    """Logical page index -> physical page id, for one sequence."""

    __slots__ = ("_page_ids", "_page_size", "_num_tokens", "_shared_tail")

    def __init__(self, page_size: int) -> None:
        if not isinstance(page_size, int) or page_size <= 0:
            raise ConfigError(f"page_size must be a positive int, got {page_size!r}")
        self._page_size = page_size
        self._page_ids: list[int] = []
        self._num_tokens = 0  # tokens that have a slot: (len - 1) * page_size < _num_tokens <= len * page_size
        self._shared_tail = False  # the last page may be shared (a fork): the next token checks copy-on-write

    # ---- reading -------------------------------------------------------------------------------
    @property
    def page_size(self) -> int:
        """Tokens per page."""
        return self._page_size

    @property
    def page_ids(self) -> list[int]:
        """Physical page ids in logical order (a copy: mutating it does not touch the table)."""
        return list(self._page_ids)

    @property
    def num_slots(self) -> int:
        """Token slots the table covers: len(table) * page_size."""
        return len(self._page_ids) * self._page_size

    @property
    def num_tokens(self) -> int:
        """Tokens that have a slot (positions 0..num_tokens-1); the rest of the last page is free."""
        return self._num_tokens

    @property
    def last_page_tokens(self) -> int:
        """Tokens in the last page (0 for an empty table)."""
        return self._num_tokens - (len(self._page_ids) - 1) * self._page_size if self._page_ids else 0

    def __len__(self) -> int:
        return len(self._page_ids)

    def __iter__(self) -> Iterator[int]:
        return iter(tuple(self._page_ids))  # snapshot: safe even if the manager mutates the table meanwhile

    def __getitem__(self, index: int) -> int:
        return self._page_ids[index]

    def slot(self, position: int) -> int:
        """Slot (flat index into the page pool) where the token at `position` has its K/V."""
        if not 0 <= position < self.num_slots:
            raise IndexError(f"position {position} outside the page table (covers 0..{self.num_slots - 1})")
        page_index, offset = divmod(position, self._page_size)
        return self._page_ids[page_index] * self._page_size + offset

    def slots(self, start: int, stop: int) -> list[int]:
        """Slots of positions start..stop-1 (e.g. the new tokens of a prefill), in order."""
        if not 0 <= start <= stop <= self.num_slots:
            raise IndexError(f"positions {start}..{stop - 1} outside the page table (covers 0..{self.num_slots - 1})")
        return [self.slot(p) for p in range(start, stop)]

    # ---- mutation (BlockManager only) ------------------------------------------------------------
    def append(self, page_id: int) -> None:
        """Add a physical page at the end (the sequence grew into a new page)."""
        if page_id < 0:
            raise ConfigError(f"page_id must be >= 0, got {page_id}")
        self._page_ids.append(page_id)

    def replace_last(self, page_id: int) -> None:
        """Point the last logical page at another physical page (copy-on-write)."""
        if not self._page_ids:
            raise SequenceStateError("replace_last on an empty page table")
        if page_id < 0:
            raise ConfigError(f"page_id must be >= 0, got {page_id}")
        self._page_ids[-1] = page_id

    def clear(self) -> None:
        """Forget every page (the manager has already released them)."""
        self._page_ids.clear()
        self._num_tokens = 0
        self._shared_tail = False

    def copy(self) -> PageTable:
        """A new table with the same page ids and token count (fork: both then point at the same pages)."""
        twin = PageTable(self._page_size)
        twin._page_ids = list(self._page_ids)
        twin._num_tokens = self._num_tokens
        twin._shared_tail = self._shared_tail
        return twin

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PageTable):
            return NotImplemented
        return self._page_size == other._page_size and self._page_ids == other._page_ids

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"PageTable(page_size={self._page_size}, page_ids={self._page_ids}, num_tokens={self._num_tokens})"
