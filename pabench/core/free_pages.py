"""The block manager's storage at O(1) memory per pool: pages materialise on first use, fresh ids from a counter.

A pool of 10**9 pages must not cost 10**9 Python objects before the first step. So:
  * `LivePages` holds a `Page` only for pages off their defaults (used, or cached with a prefix); any other page
    reads as a fresh `Page(page_id)` built on demand and dropped again when it returns to the fresh list;
  * `FreshPages` is the free list of pages holding nothing: the never-used ids, produced one at a time by a
    counter through a permutation, then the returned ids in the order they came back (a deque).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator

from pabench.core.page import Page


class LivePages(dict):
    """`page_id -> Page` for pages off their defaults; indexing a missing id materialises (and keeps) its Page."""

    def __missing__(self, page_id: int) -> Page:
        page = self[page_id] = Page.fresh(page_id)
        return page

    def peek(self, page_id: int) -> Page:
        """The page's state without materialising it (a fresh default `Page` when it is not live)."""
        page = self.get(page_id)
        return Page.fresh(page_id) if page is None else page


def affine_permutation(num_pages: int, seed: int | None) -> tuple[int, int]:
    """`(a, c)` of the permutation i -> (a * i + c) mod num_pages; identity for seed None.

    Not a uniform shuffle: consecutive never-used ids sit a fixed stride `a` apart. That suffices for what the
    shuffle is for, keeping a sequence's pages from being accidentally adjacent in the pool (a backend or kernel
    that silently assumes contiguous pages then fails its tests), and it costs O(1) memory where a real shuffle
    of 10**9 ids costs gigabytes. `a` avoids 1 and n - 1 (strides of one page, up or down) when it can.
    """
    if seed is None:
        return 1, 0
    rng = random.Random(seed)
    c = rng.randrange(num_pages)
    for _ in range(64):  # a random a in [2, n - 2] coprime to n: most draws succeed (density 6/pi^2 for primes)
        if num_pages < 5:
            break
        a = rng.randrange(2, num_pages - 1)
        if math.gcd(a, num_pages) == 1:
            return a, c
    return 1, c  # tiny pools (n < 5) have no other stride; a rotation still moves the start


class FreshPages:
    """Free pages holding nothing: never-used ids (counter `num_taken` through the permutation), then returned ones.

    Taking prefers never-used ids, so the order is the one a deque of all ids (returned ids appended on the right,
    taken from the left) would give, at O(returned) memory instead of O(num_pages).
    """

    def __init__(self, num_pages: int, shuffle_seed: int | None = None) -> None:
        self._num_pages = num_pages
        self._a, self._c = affine_permutation(num_pages, shuffle_seed)
        self._a_inv = pow(self._a, -1, num_pages)  # gcd(a, n) = 1, so the inverse exists (0 for n = 1)
        self.num_taken = 0  # never-used ids handed out so far: ids perm(0) .. perm(num_taken - 1)
        self._returned: deque[int] = deque()

    def __len__(self) -> int:
        return self._num_pages - self.num_taken + len(self._returned)

    def __bool__(self) -> bool:
        return self.num_taken < self._num_pages or bool(self._returned)

    def take(self) -> int | None:
        """The next fresh page id, or None when none is left (one call on the allocation path, no test first)."""
        taken = self.num_taken
        if taken < self._num_pages:
            self.num_taken = taken + 1
            return (self._a * taken + self._c) % self._num_pages
        return self._returned.popleft() if self._returned else None

    def put(self, page_id: int) -> None:
        """A page that holds nothing any more: it is taken again after every never-used one."""
        self._returned.append(page_id)

    def __iter__(self) -> Iterator[int]:
        """Every fresh id in the order `take` hands them out (O(fresh ids): tests and debugging only)."""
        for index in range(self.num_taken, self._num_pages):
            yield (self._a * index + self._c) % self._num_pages
        yield from self._returned

    def returned_ids(self) -> Iterator[int]:
        """Ids that were used and came back, oldest first."""
        return iter(self._returned)

    def was_taken(self, page_id: int) -> bool:
        """Whether `page_id` has left the never-used range (O(1): the permutation's inverse)."""
        return ((page_id - self._c) * self._a_inv) % self._num_pages < self.num_taken
