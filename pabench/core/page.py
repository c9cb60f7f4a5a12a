"""`Page`: one physical page of the KV cache, as the block manager sees it (metadata only, no tensors).

A page holds the K and V of `page_size` consecutive tokens of one or more sequences, for every layer and
KV head. The block manager is the only writer of a `Page`; everyone else gets a `FrozenPage` snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from pabench.errors import ConfigError


@dataclass(slots=True)
class Page:
    """Bookkeeping for one physical page. `ref_count` counts the page tables that point at it.

    `content_hash` is set only on FULL pages when prefix caching is on: it is the chained hash of the page's
    tokens and its predecessor's hash (`parent_hash`). `token_ids` keeps the page's tokens so a hash hit can be
    verified token by token (no false sharing on a hash collision).
    """

    page_id: int
    ref_count: int = 0
    num_tokens: int = 0  # tokens whose K/V the page holds (or is about to hold), 0..page_size
    content_hash: int | None = None
    parent_hash: int | None = None  # content_hash of the previous page in the chain; None for a first page
    token_ids: tuple[int, ...] | None = None  # the tokens of a hashed page, to verify hits

    def __post_init__(self) -> None:
        if self.page_id < 0:
            raise ConfigError(f"page_id must be >= 0, got {self.page_id}")
        if self.ref_count < 0:
            raise ConfigError(f"ref_count must be >= 0, got {self.ref_count}")
        if self.num_tokens < 0:
            raise ConfigError(f"num_tokens must be >= 0, got {self.num_tokens}")

    @classmethod
    def fresh(cls, page_id: int) -> Page:
        """`Page(page_id)` with every default, without `__post_init__`'s checks: pages materialise on first use
        (core/free_pages.py), on the allocation path, where the checked constructor costs ~1.6x as much."""
        page = object.__new__(cls)
        page.page_id, page.ref_count, page.num_tokens = page_id, 0, 0
        page.content_hash = page.parent_hash = page.token_ids = None
        return page

    def forget_content(self) -> None:
        """Drop hash and tokens: the page is about to be reused for other tokens."""
        self.num_tokens = 0
        self.content_hash = None
        self.parent_hash = None
        self.token_ids = None

    def frozen(self) -> FrozenPage:
        """A read-only snapshot of this page (what `BlockManager.page()` hands out)."""
        return FrozenPage._of(self)

    def __repr__(self) -> str:
        hashed = f", hash={self.content_hash:#x}" if self.content_hash is not None else ""
        return f"Page(id={self.page_id}, ref={self.ref_count}, tokens={self.num_tokens}{hashed})"


class FrozenPage(Page):
    """A `Page` snapshot that refuses mutation, so callers cannot corrupt the manager's state."""

    __slots__ = ()

    @classmethod
    def _of(cls, page: Page) -> FrozenPage:
        snapshot = object.__new__(cls)
        for f in fields(Page):
            object.__setattr__(snapshot, f.name, getattr(page, f.name))
        return snapshot

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"FrozenPage is a read-only snapshot; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"FrozenPage is a read-only snapshot; cannot delete {name!r}")

    def forget_content(self) -> None:
        """Refused: a snapshot cannot be wiped."""
        raise AttributeError("FrozenPage is a read-only snapshot")
