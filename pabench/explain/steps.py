"""What one `pabench explain` step records: events, and frozen views of the page pool and the contiguous slab.

Plain frozen dataclasses, torch-free: the walkthrough builds them, the tests assert on them, `explain_render.py`
draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pabench.core import SequenceStatus
from pabench.errors import ConfigError

EVENT_KINDS = ("allocate", "prefix_hit", "fork", "cow", "append_page", "evict", "preempt", "free", "finish",
               "admit_fail", "reserve_contiguous", "admit_fail_contiguous", "release_contiguous", "copy_contiguous")
PAGE_STATES = ("free", "cached", "used", "shared")  # cached: free, but still holding a reusable prefix page
SLAB_POLICIES = ("max", "exact")  # reserve max_model_len tokens, or exactly the request's final length


def seq_label(seq_id: int) -> str:
    """The letter a sequence is drawn with: 0 -> A, 1 -> B, ... (then its id)."""
    return chr(ord("A") + seq_id) if 0 <= seq_id < 26 else str(seq_id)


def seq_name(seq_id: int) -> str:
    """'seq 4 (E)': how sentences name a sequence."""
    return f"seq {seq_id} ({seq_label(seq_id)})"


def check_slab_policy(policy: str) -> None:
    """ConfigError unless `policy` is one of SLAB_POLICIES."""
    if policy not in SLAB_POLICIES:
        raise ConfigError(f"unknown slab policy {policy!r}; choose from {', '.join(SLAB_POLICIES)}")


@dataclass(frozen=True)
class Event:
    """One thing that happened. `page_ids` are the pages involved (`cow`: (source, copy)); `detail` says more."""

    kind: str
    seq_ids: tuple[int, ...]  # fork: (parent, child); contiguous admission: every sample of the request
    page_ids: tuple[int, ...] = ()
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ConfigError(f"unknown event kind {self.kind!r}; choose from {', '.join(EVENT_KINDS)}")


# ---- the paged side ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PageView:
    """One physical page at one instant."""

    page_id: int
    ref_count: int
    num_tokens: int
    owner_ids: tuple[int, ...]  # sequences whose page table points at this page
    state: str  # one of PAGE_STATES

    def __post_init__(self) -> None:
        if self.state not in PAGE_STATES:
            raise ConfigError(f"unknown page state {self.state!r}")
        if len(self.owner_ids) != self.ref_count:  # every reference is one page table
            raise ConfigError(f"page {self.page_id}: ref_count {self.ref_count} but owners {self.owner_ids}")


@dataclass(frozen=True)
class PoolView:
    """The whole page pool at one instant, page id order."""

    page_size: int
    pages: tuple[PageView, ...]

    def count(self, state: str) -> int:
        """Pages in `state` (free, cached, used, shared)."""
        return sum(1 for p in self.pages if p.state == state)

    @property
    def num_in_use(self) -> int:
        """Pages some page table points at."""
        return sum(1 for p in self.pages if p.ref_count > 0)

    @property
    def num_slack_tokens(self) -> int:
        """Token slots in pages in use that hold no token (the tail of each last page)."""
        return sum(self.page_size - p.num_tokens for p in self.pages if p.ref_count > 0)

    @property
    def num_saved_pages(self) -> int:
        """Pages sharing avoided storing twice: sum of (ref_count - 1)."""
        return sum(p.ref_count - 1 for p in self.pages if p.ref_count > 1)


@dataclass(frozen=True)
class TableView:
    """One sequence's page table (logical index = position in `page_ids`) and status."""

    seq_id: int
    status: str  # SequenceStatus name: WAITING, RUNNING, PREEMPTED, FINISHED
    page_ids: tuple[int, ...]
    num_tokens: int
    num_cached_tokens: int  # leading tokens served from the prefix cache at the last admission

    def __post_init__(self) -> None:
        if self.status not in SequenceStatus.__members__:
            raise ConfigError(f"seq {self.seq_id}: unknown status {self.status!r}")


# ---- the contiguous side ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reservation:
    """One sequence's region of the contiguous slab."""

    seq_id: int
    start: int
    length: int
    num_tokens: int  # tokens it holds now

    def __post_init__(self) -> None:
        if not 0 <= self.num_tokens <= self.length:
            raise ConfigError(f"seq {self.seq_id}: {self.num_tokens} tokens in a region of {self.length} slots")

    @property
    def num_slack(self) -> int:
        """Slots reserved but holding no token."""
        return self.length - self.num_tokens


@dataclass(frozen=True)
class SlabView:
    """The contiguous cache at one instant: reservations, holes, and who could not be placed."""

    num_slots: int
    policy: str  # one of SLAB_POLICIES
    reservations: tuple[Reservation, ...]
    free_extents: tuple[tuple[int, int], ...]  # (start, length), lowest address first
    waiting_ids: tuple[int, ...]  # sequences the paged cache runs but the slab could not place

    def __post_init__(self) -> None:
        check_slab_policy(self.policy)

    @property
    def num_reserved(self) -> int:
        """Slots handed out to regions."""
        return sum(r.length for r in self.reservations)

    @property
    def num_slack(self) -> int:
        """Reserved slots holding no token."""
        return sum(r.num_slack for r in self.reservations)

    @property
    def num_free(self) -> int:
        """Slots in no region (in any hole)."""
        return self.num_slots - self.num_reserved

    @property
    def largest_free_extent(self) -> int:
        """The longest hole: the largest region the slab could still place."""
        return max((n for _, n in self.free_extents), default=0)


# ---- one step ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One moment of a scenario: what happened (events, sentence) and both caches afterwards."""

    title: str
    sentence: str
    events: tuple[Event, ...]
    pool: PoolView
    tables: tuple[TableView, ...]
    contiguous: SlabView

    def kinds(self) -> list[str]:
        """Event kinds in order (what the tests assert on)."""
        return [e.kind for e in self.events]
