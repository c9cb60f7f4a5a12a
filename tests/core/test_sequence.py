"""Sequence: validation, token growth, status rules, fork and preemption by recompute."""

import pytest

from pabench.core import ConfigError, PageTable, Sequence, SequenceStateError, SequenceStatus


def test_defaults():
    tokens = [5, 6, 7]
    seq = Sequence(3, tokens)
    tokens.append(8)  # the sequence owns a copy
    assert seq.token_ids == [5, 6, 7] and seq.num_tokens == 3 == len(seq)
    assert seq.num_prompt_tokens == 3 and seq.num_output_tokens == 0
    assert seq.status is SequenceStatus.WAITING
    assert seq.page_table is None and seq.num_pages == 0
    assert seq.num_computed_tokens == 0 and seq.num_cached_tokens == 0
    assert seq.last_token_id == 7


def test_append_token_counts_output():
    seq = Sequence(0, [1, 2], num_prompt_tokens=2)
    seq.append_token(9)
    seq.append_token(0)
    assert seq.token_ids == [1, 2, 9, 0]
    assert seq.num_output_tokens == 2 and seq.last_token_id == 0


def test_explicit_prompt_length():
    seq = Sequence(0, [1, 2, 3, 4], num_prompt_tokens=2)
    assert seq.num_prompt_tokens == 2 and seq.num_output_tokens == 2


@pytest.mark.parametrize("kwargs", [
    dict(seq_id=-1, token_ids=[1]),
    dict(seq_id=0, token_ids=[]),
    dict(seq_id=0, token_ids=[1, -2]),
    dict(seq_id=0, token_ids=[1, 2], num_prompt_tokens=3),
    dict(seq_id=0, token_ids=[1, 2], num_prompt_tokens=0),
])
def test_invalid_construction(kwargs):
    with pytest.raises(ConfigError):
        Sequence(**kwargs)


def test_append_after_finish_raises():
    seq = Sequence(0, [1])
    seq.status = SequenceStatus.FINISHED
    with pytest.raises(SequenceStateError):
        seq.append_token(2)
    assert seq.token_ids == [1]


def test_append_negative_token_raises():
    seq = Sequence(0, [1])
    with pytest.raises(ConfigError):
        seq.append_token(-1)


def test_status_and_counts_are_validated():
    seq = Sequence(0, [1, 2, 3])
    with pytest.raises(ConfigError):
        seq.status = "RUNNING"
    with pytest.raises(ConfigError):
        seq.num_computed_tokens = 4
    with pytest.raises(ConfigError):
        seq.num_computed_tokens = -1
    with pytest.raises(ConfigError):
        seq.num_cached_tokens = 4
    seq.num_computed_tokens = 3
    assert seq.num_computed_tokens == 3


def test_fork_copies_tokens_not_pages():
    parent = Sequence(1, [4, 5, 6], num_prompt_tokens=2)
    parent.status = SequenceStatus.RUNNING
    parent.num_computed_tokens = 2
    parent.page_table = PageTable(4)
    child = parent.fork(2)
    assert child.seq_id == 2 and child.token_ids == parent.token_ids
    assert child.num_prompt_tokens == 2 and child.status is SequenceStatus.RUNNING
    assert child.num_computed_tokens == 2
    assert child.page_table is None
    child.append_token(7)  # independent token lists
    assert parent.token_ids == [4, 5, 6]
    with pytest.raises(ConfigError):
        parent.fork(1)


def test_reset_for_recompute_keeps_tokens():
    seq = Sequence(0, [1, 2, 3], num_prompt_tokens=2)
    seq.status = SequenceStatus.RUNNING
    seq.num_computed_tokens = 3
    seq.num_cached_tokens = 2
    seq.reset_for_recompute()
    assert seq.status is SequenceStatus.WAITING and seq.page_table is None
    assert seq.num_computed_tokens == 0 and seq.num_cached_tokens == 0
    assert seq.token_ids == [1, 2, 3] and seq.num_prompt_tokens == 2


def test_reset_with_pages_still_held_raises():
    seq = Sequence(0, [1])
    seq.page_table = PageTable(4)
    with pytest.raises(SequenceStateError):
        seq.reset_for_recompute()


def test_reset_finished_raises():
    seq = Sequence(0, [1])
    seq.status = SequenceStatus.FINISHED
    with pytest.raises(SequenceStateError):
        seq.reset_for_recompute()
