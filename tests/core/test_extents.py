"""ExtentAllocator: first fit, coalescing, and real external fragmentation."""

import random

import pytest

from pabench.errors import ConfigError, SequenceStateError
from pabench.core.extents import ExtentAllocator


def test_first_fit_and_coalesce():
    a = ExtentAllocator(100)
    x, y, z = a.allocate(30), a.allocate(30), a.allocate(30)
    assert (x, y, z) == (0, 30, 60)
    assert a.allocate(20) is None  # 10 free slots, not 20
    a.free(y)
    assert a.free_extents() == [(30, 30), (90, 10)]
    assert a.allocate(10) == 30  # first fit: lowest address that fits
    a.free(x)
    a.free(z)
    a.free(30)
    assert a.free_extents() == [(0, 100)]
    a.check_invariants()


def test_external_fragmentation_blocks_a_fitting_total():
    a = ExtentAllocator(100)
    starts = [a.allocate(10) for _ in range(10)]
    for s in starts[::2]:
        a.free(s)
    assert a.num_free_slots == 50
    assert a.largest_free_extent == 10
    assert not a.can_allocate(11)  # 50 slots free in total, none 11 long


def test_errors():
    with pytest.raises(ConfigError):
        ExtentAllocator(0)
    a = ExtentAllocator(8)
    with pytest.raises(ConfigError):
        a.allocate(0)
    s = a.allocate(4)
    a.free(s)
    with pytest.raises(SequenceStateError):
        a.free(s)


def test_random_churn_keeps_invariants():
    rng = random.Random(0)
    a = ExtentAllocator(1000)
    live = []
    for _ in range(2000):
        if live and rng.random() < 0.45:
            a.free(live.pop(rng.randrange(len(live))))
        else:
            s = a.allocate(rng.randint(1, 80))
            if s is not None:
                live.append(s)
        a.check_invariants()
    for s in live:
        a.free(s)
    assert a.free_extents() == [(0, 1000)]
