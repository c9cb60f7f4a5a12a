"""PageTable: slot arithmetic, bounds, read-only views, and the manager-only mutators."""

import pytest

from pabench.core import ConfigError, PageTable, SequenceStateError


def make_table(page_size: int, page_ids: list[int]) -> PageTable:
    table = PageTable(page_size)
    for page_id in page_ids:
        table.append(page_id)
    return table


@pytest.mark.parametrize("page_size", [1, 3, 16])
def test_slot_matches_formula_for_every_position(page_size):
    page_ids = [7, 2, 9, 0]  # deliberately not contiguous
    table = make_table(page_size, page_ids)
    assert table.num_slots == len(page_ids) * page_size
    for position in range(table.num_slots):
        expected = page_ids[position // page_size] * page_size + position % page_size
        assert table.slot(position) == expected
    assert table.slots(0, table.num_slots) == [table.slot(p) for p in range(table.num_slots)]


def test_slot_concrete_values():
    table = make_table(4, [5, 1])
    assert [table.slot(p) for p in range(8)] == [20, 21, 22, 23, 4, 5, 6, 7]


@pytest.mark.parametrize("position", [-1, 8, 100])
def test_slot_outside_table_raises(position):
    table = make_table(4, [5, 1])
    with pytest.raises(IndexError):
        table.slot(position)


def test_slots_range_checked():
    table = make_table(4, [5, 1])
    assert table.slots(3, 3) == []
    with pytest.raises(IndexError):
        table.slots(2, 9)


def test_empty_table_has_no_slots():
    table = PageTable(8)
    assert len(table) == 0 and table.num_slots == 0 and list(table) == []
    with pytest.raises(IndexError):
        table.slot(0)


def test_page_ids_is_a_copy():
    table = make_table(4, [3, 4])
    ids = table.page_ids
    ids.append(99)
    ids[0] = 42
    assert table.page_ids == [3, 4]
    assert list(table) == [3, 4] and table[0] == 3 and table[-1] == 4


def test_mutators():
    table = make_table(2, [3, 4])
    table.replace_last(8)
    assert table.page_ids == [3, 8]
    twin = table.copy()
    twin.append(1)
    assert table.page_ids == [3, 8] and twin.page_ids == [3, 8, 1]
    table.clear()
    assert len(table) == 0
    with pytest.raises(SequenceStateError):
        table.replace_last(1)


@pytest.mark.parametrize("page_size", [0, -4, 2.0])
def test_bad_page_size(page_size):
    with pytest.raises(ConfigError):
        PageTable(page_size)


def test_negative_page_id_rejected():
    with pytest.raises(ConfigError):
        PageTable(4).append(-1)
