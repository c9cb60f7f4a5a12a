"""`Sequence`: one generation stream: its tokens, status, page table, and how much of it is computed.

A request with n samples (parallel sampling / beam search) becomes n sequences: one prefilled, the others
`fork()`ed from it, sharing every page through the block manager. Preemption by recompute throws the pages
away (`BlockManager.free`, then `reset_for_recompute`) and re-prefills prompt + generated tokens later.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence as SequenceABC

from pabench.errors import ConfigError, SequenceStateError
from pabench.core.page_table import PageTable


class SequenceStatus(enum.Enum):
    """Where a sequence is in its life: WAITING -> RUNNING -> FINISHED, with RUNNING -> PREEMPTED -> ..."""

    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


class Sequence:
    """Token ids plus the bookkeeping the scheduler and the block manager need."""

    __slots__ = ("seq_id", "_token_ids", "_num_prompt_tokens", "_status", "page_table",
                 "_num_computed_tokens", "_num_cached_tokens")

    def __init__(self, seq_id: int, token_ids: SequenceABC[int], *, num_prompt_tokens: int | None = None) -> None:
        if not isinstance(seq_id, int) or seq_id < 0:
            raise ConfigError(f"seq_id must be an int >= 0, got {seq_id!r}")
        tokens = list(token_ids)  # owned copy: the caller's list can change without touching us
        if not tokens:
            raise ConfigError(f"sequence {seq_id} needs at least one token")
        if any(not isinstance(t, int) or t < 0 for t in tokens):
            raise ConfigError(f"sequence {seq_id} has a token id that is not an int >= 0")
        if num_prompt_tokens is None:
            num_prompt_tokens = len(tokens)
        if not 1 <= num_prompt_tokens <= len(tokens):
            raise ConfigError(f"num_prompt_tokens must be in 1..{len(tokens)}, got {num_prompt_tokens}")
        self.seq_id = seq_id
        self._token_ids = tokens
        self._num_prompt_tokens = num_prompt_tokens
        self._status = SequenceStatus.WAITING
        self.page_table: PageTable | None = None  # set by BlockManager.allocate / fork, cleared by free
        self._num_computed_tokens = 0
        self._num_cached_tokens = 0

    # ---- tokens ----------------------------------------------------------------------------------
    @property
    def token_ids(self) -> list[int]:
        """All tokens, prompt then output. The sequence's own list: read it, grow it only via append_token."""
        return self._token_ids

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return len(self._token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        """Tokens of the prompt (the first `num_prompt_tokens` of `token_ids`)."""
        return self._num_prompt_tokens

    @property
    def num_output_tokens(self) -> int:
        """Tokens generated so far."""
        return len(self._token_ids) - self._num_prompt_tokens

    @property
    def last_token_id(self) -> int:
        """The newest token: the input of the next decode step."""
        return self._token_ids[-1]

    def append_token(self, token_id: int) -> None:
        """Add one generated token. Then call `BlockManager.append_slot(seq)` to give it a slot."""
        if self._status is SequenceStatus.FINISHED:
            raise SequenceStateError(f"sequence {self.seq_id} is finished; cannot append a token")
        if not isinstance(token_id, int) or token_id < 0:
            raise ConfigError(f"token id must be an int >= 0, got {token_id!r}")
        self._token_ids.append(token_id)

    def append_computed(self, token_id: int) -> int:
        """A step computed every token so far (their K/V is now cached) and sampled `token_id`: record both, in
        one call on the engine's per-token hot path. Returns the new number of tokens."""
        if self._status is SequenceStatus.FINISHED:
            raise SequenceStateError(f"sequence {self.seq_id} is finished; cannot append a token")
        if token_id.__class__ is not int or token_id < 0:
            raise ConfigError(f"token id must be an int >= 0, got {token_id!r}")
        tokens = self._token_ids
        self._num_computed_tokens = len(tokens)
        tokens.append(token_id)
        return len(tokens)

    def set_token(self, position: int, token_id: int) -> None:
        """Replace the generated token at `position`: an engine that schedules ahead of the device appends a
        placeholder first (the length is what scheduling needs) and fills the real token in when it arrives."""
        if not self._num_prompt_tokens <= position < len(self._token_ids):
            raise ConfigError(f"position {position} is not a generated token of sequence {self.seq_id} "
                              f"(generated: {self._num_prompt_tokens}..{len(self._token_ids) - 1})")
        if token_id.__class__ is not int or token_id < 0:
            raise ConfigError(f"token id must be an int >= 0, got {token_id!r}")
        self._token_ids[position] = token_id

    # ---- state -------------------------------------------------------------------------------------
    @property
    def status(self) -> SequenceStatus:
        """Where the sequence is in its life; the scheduler sets it."""
        return self._status

    @status.setter
    def status(self, value: SequenceStatus) -> None:
        if not isinstance(value, SequenceStatus):
            raise ConfigError(f"status must be a SequenceStatus, got {value!r}")
        self._status = value

    @property
    def num_pages(self) -> int:
        """Pages in the sequence's page table (0 while it has none)."""
        return 0 if self.page_table is None else len(self.page_table)

    @property
    def num_computed_tokens(self) -> int:
        """Tokens whose K/V is already in the cache (set by the engine after each step)."""
        return self._num_computed_tokens

    @num_computed_tokens.setter
    def num_computed_tokens(self, value: int) -> None:
        self._num_computed_tokens = self._check_count("num_computed_tokens", value)

    @property
    def num_cached_tokens(self) -> int:
        """Leading tokens served from the prefix cache at the last allocate (no need to compute them)."""
        return self._num_cached_tokens

    @num_cached_tokens.setter
    def num_cached_tokens(self, value: int) -> None:
        self._num_cached_tokens = self._check_count("num_cached_tokens", value)

    def _check_count(self, name: str, value: int) -> int:
        """`value` if it is a token count this sequence can have (0..num_tokens); ConfigError otherwise."""
        if not isinstance(value, int) or not 0 <= value <= len(self._token_ids):
            raise ConfigError(f"{name} must be in 0..{len(self._token_ids)}, got {value!r}")
        return value

    # ---- lifecycle ---------------------------------------------------------------------------------
    def fork(self, new_seq_id: int) -> Sequence:
        """A child with the same tokens, prompt length, status and computed counts; its pages come from
        `BlockManager.fork(parent, child)`, which makes both point at the same physical pages."""
        if new_seq_id == self.seq_id:
            raise ConfigError(f"fork needs a new seq_id, got the parent's ({new_seq_id})")
        child = Sequence(new_seq_id, self._token_ids, num_prompt_tokens=self._num_prompt_tokens)
        child._status = self._status
        child._num_computed_tokens = self._num_computed_tokens
        child._num_cached_tokens = self._num_cached_tokens
        return child

    def reset_for_recompute(self) -> None:
        """Preemption by recompute: forget all KV; prompt + generated tokens will be prefilled again.

        Free the pages first (`BlockManager.free(seq)`): dropping a live page table here would leak them.
        """
        if self.page_table is not None:
            raise SequenceStateError(
                f"sequence {self.seq_id} still holds {len(self.page_table)} page(s); BlockManager.free it first")
        if self._status is SequenceStatus.FINISHED:
            raise SequenceStateError(f"sequence {self.seq_id} is finished; nothing to recompute")
        self._num_computed_tokens = 0
        self._num_cached_tokens = 0
        self._status = SequenceStatus.WAITING

    def __len__(self) -> int:
        return len(self._token_ids)

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id}, status={self._status.name}, tokens={self.num_tokens} "
                f"(prompt {self._num_prompt_tokens}), pages={self.num_pages}, computed={self._num_computed_tokens})")
