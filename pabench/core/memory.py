"""`MemorySnapshot`: exact, token-level KV memory accounting at one instant.

Every backend reports the same fields so that paged and contiguous caches can be compared byte for byte.
Vocabulary (see DESIGN.md): *slack* is reserved memory beyond the tokens held (tail of a last page, unused
part of a reservation); *idle* is memory not reserved at all (free pages, free extents); *saved* is what
sharing pages avoided storing twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from pabench.errors import ConfigError


@dataclass(frozen=True)
class MemorySnapshot:
    """KV bytes at one instant. Invariant: reserved + idle == budget and used + slack == reserved."""

    budget_bytes: int  # the whole KV pool
    reserved_bytes: int  # pages in use / extents handed out
    used_bytes: int  # bytes holding a token's K/V (a shared page counted once)
    slack_bytes: int  # reserved but holding no token
    idle_bytes: int  # not reserved: free pages or free extents (cached prefix pages count here)
    saved_bytes: int = 0  # bytes sharing avoided: (references - 1) * page bytes, summed over shared pages
    largest_free_extent_bytes: int = 0  # biggest contiguous free run (contiguous backend; paged: all free pages)
    num_seqs: int = 0  # sequences holding memory

    def __post_init__(self) -> None:
        fields = (self.budget_bytes, self.reserved_bytes, self.used_bytes, self.slack_bytes, self.idle_bytes,
                  self.saved_bytes, self.largest_free_extent_bytes, self.num_seqs)
        if any(v < 0 for v in fields):
            raise ConfigError(f"memory snapshot has a negative field: {self}")
        if self.reserved_bytes + self.idle_bytes != self.budget_bytes:
            raise ConfigError(f"reserved + idle != budget in {self}")
        if self.used_bytes + self.slack_bytes != self.reserved_bytes:
            raise ConfigError(f"used + slack != reserved in {self}")

    @property
    def waste_pct(self) -> float:
        """Share of reserved KV memory that holds no token (token-level internal waste), in %."""
        return 100.0 * self.slack_bytes / self.reserved_bytes if self.reserved_bytes else 0.0

    @property
    def slack_pct(self) -> float:
        """Slack as a % of the whole budget."""
        return 100.0 * self.slack_bytes / self.budget_bytes

    @property
    def idle_pct(self) -> float:
        """Idle (unreserved) memory as a % of the whole budget."""
        return 100.0 * self.idle_bytes / self.budget_bytes

    @property
    def used_pct(self) -> float:
        """Bytes holding tokens as a % of the whole budget."""
        return 100.0 * self.used_bytes / self.budget_bytes
