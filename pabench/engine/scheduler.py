"""`Scheduler`: continuous batching with FCFS admission and preemption by recompute.

Each step is either a prefill (admit waiting sequences while the backend and the limits allow) or a decode of
every running sequence (vLLM v0's prefill-first policy). When a running sequence cannot grow, the most
recently admitted one is preempted: its memory is released and it goes back to the head of the queue, to be
prefilled again later with everything it has generated so far.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pabench.backends.base import KVCacheBackend
from pabench.core import Sequence, SequenceStatus
from pabench.engine.beam import BeamGroup
from pabench.errors import ConfigError


@dataclass(frozen=True)
class SchedulerConfig:
    """Batch limits: sequences per step, tokens per prefill step, longest sequence."""

    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    max_model_len: int = 2048
    # Hold a prefill step back until this many batch seats are free (or the queue is shorter, or nothing runs).
    # 1 = admit as soon as one seat frees (vLLM's behaviour). Every prefill step pays a fixed cost (an eager
    # forward; measured in benchmarks/NOTES.md, "Numbers that were code comments"), so refilling seats one at a
    # time is expensive.
    min_prefill_seqs: int = 1

    def __post_init__(self) -> None:
        for f in ("max_num_seqs", "max_batched_tokens", "max_model_len", "min_prefill_seqs"):
            if getattr(self, f) <= 0:
                raise ConfigError(f"{f} must be > 0, got {getattr(self, f)}")
        if self.min_prefill_seqs > self.max_num_seqs:
            raise ConfigError(f"min_prefill_seqs ({self.min_prefill_seqs}) cannot exceed max_num_seqs "
                              f"({self.max_num_seqs})")


@dataclass
class SeqState:
    """Engine-side bookkeeping for one sample of one request."""

    seq: Sequence
    request_id: int
    sample_index: int
    num_prompt_tokens: int  # the request's original prompt
    output_len: int  # tokens this sample must generate
    num_forks: int = 0  # children to fork right after this sequence's first prefill (parallel sampling)
    token_times: list[float] = field(default_factory=list)
    num_preemptions: int = 0
    beam: BeamGroup | None = None  # the request's beam search, when it is one of its beams (engine/beam.py)

    @property
    def max_total_tokens(self) -> int:
        return self.num_prompt_tokens + self.output_len

    @property
    def num_generated(self) -> int:
        return self.seq.num_tokens - self.num_prompt_tokens


@dataclass(frozen=True)
class ScheduledStep:
    kind: str  # "prefill" | "decode"
    states: list[SeqState]
    preempted: list[SeqState]


class Scheduler:
    """Decides, each step, which sequences run and which wait; asks the backend about memory."""

    def __init__(self, backend: KVCacheBackend, config: SchedulerConfig) -> None:
        self.backend = backend
        self.config = config
        self.waiting: deque[SeqState] = deque()
        self.running: list[SeqState] = []  # admission order: the tail is preempted first
        self.num_preemptions = 0

    def add(self, state: SeqState) -> None:
        self.waiting.append(state)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledStep | None:
        """Admit what fits (prefill step) or grow every running sequence (decode step)."""
        batch = self._admit()
        if batch:
            self.running.extend(batch)
            return ScheduledStep("prefill", batch, [])
        if not self.running:
            if self.waiting:
                head = self.waiting[0]
                raise ConfigError(f"the KV budget cannot hold request {head.request_id} "
                                  f"({head.seq.num_tokens} tokens now, up to {head.max_total_tokens}) "
                                  f"even with nothing else running")
            return None
        preempted = self._grow_all()
        return ScheduledStep("decode", list(self.running), preempted)

    def _admit(self) -> list[SeqState]:
        cfg, batch, num_tokens = self.config, [], 0
        num_seats = len(self.running)  # sequences running after this step, forks to come included
        if self.running and cfg.max_num_seqs - num_seats < min(cfg.min_prefill_seqs, len(self.waiting)):
            return batch  # too few free seats for a worthwhile prefill step: decode on, seats accumulate
        while self.waiting:
            st = self.waiting[0]
            if num_seats + 1 + st.num_forks > cfg.max_num_seqs:
                break
            if batch and num_tokens + st.seq.num_tokens > cfg.max_batched_tokens:
                break
            if not self.backend.can_admit(st.seq, st.max_total_tokens, st.num_forks):
                break  # strict FCFS: nobody overtakes the head of the queue
            self.backend.admit(st.seq, st.max_total_tokens, st.num_forks)
            st.seq.status = SequenceStatus.RUNNING
            self.waiting.popleft()
            batch.append(st)
            num_tokens += st.seq.num_tokens
            num_seats += 1 + st.num_forks
        return batch

    def _grow_all(self) -> list[SeqState]:
        """Give every running sequence its next slot, preempting the newest while the pool is short.

        The hot path: one `grow_many` over the batch, which stops at the first sequence it cannot grow; then the
        most recently admitted sequence is preempted and growth resumes there. Nothing is checked twice.
        """
        preempted: list[SeqState] = []
        running = self.running
        seqs = [st.seq for st in running]
        i = self.backend.grow_many(seqs)
        while i < len(running):
            victim = running[-1]  # the most recently admitted
            if victim.beam is None:
                running.pop()
                seqs.pop()
                self._preempt(victim)
                preempted.append(victim)
            else:  # beams step together: the whole beam search goes, and restarts from its prompt later
                beams = [k for k, st in enumerate(running) if st.beam is victim.beam]
                i -= sum(1 for k in beams if k < i)  # grown already, now gone: the rest shift down
                gone = set(beams)
                members = [running[k] for k in beams]
                running[:] = [st for k, st in enumerate(running) if k not in gone]
                seqs = [st.seq for st in running]
                preempted.append(self._restart_beams(members))
            i = self.backend.grow_many(seqs, i)
        if preempted and not self.running:
            raise ConfigError(f"the KV budget cannot hold request {preempted[-1].request_id} "
                              f"({preempted[-1].seq.num_tokens} tokens) even with nothing else running")
        for victim in preempted:  # victims popped newest first: appendleft restores admission order
            self.waiting.appendleft(victim)
        return preempted

    def _restart_beams(self, members: list[SeqState]) -> SeqState:
        """Release every beam of a request and make a fresh root from its prompt (beam search is deterministic, so
        it finds the same beams again; cumulative log-probabilities start over)."""
        for st in members:
            self.backend.release(st.seq)
            st.seq.status = SequenceStatus.FINISHED
        first = min(members, key=lambda st: st.sample_index)
        group = first.beam
        group.cum_logprobs.clear()
        root = SeqState(Sequence(first.seq.seq_id, first.seq.token_ids[:first.num_prompt_tokens]), first.request_id,
                        0, first.num_prompt_tokens, first.output_len, num_forks=group.width - 1,
                        num_preemptions=first.num_preemptions + 1, beam=group)
        group.restarts += 1
        self.num_preemptions += len(members)
        return root

    def _preempt(self, st: SeqState) -> None:
        self.backend.release(st.seq)
        st.seq.reset_for_recompute()
        st.num_preemptions += 1
        self.num_preemptions += 1

    def finish(self, finished: list[SeqState]) -> None:
        """Retire finished sequences and release their memory at once (one pass over `running`)."""
        if not finished:
            return
        done = {id(st) for st in finished}
        self.running = [st for st in self.running if id(st) not in done]
        for st in finished:
            self.backend.release(st.seq)
            st.seq.status = SequenceStatus.FINISHED


def check_request_fits(backend: KVCacheBackend, config: SchedulerConfig, r) -> None:
    """ConfigError unless request `r` could run on `backend` when it is empty (length, samples, KV budget)."""
    total = len(r.prompt_token_ids) + r.output_len
    if total > config.max_model_len:
        raise ConfigError(f"request {r.request_id} needs {total} tokens > max_model_len {config.max_model_len}")
    width = getattr(r, "beam_width", 1)
    what = f"{width} beams" if width > 1 else f"{r.num_samples} samples"
    n = max(r.num_samples, width)
    if n > config.max_num_seqs:
        raise ConfigError(f"request {r.request_id} asks for {what} > max_num_seqs {config.max_num_seqs} "
                          "(they run side by side)")
    if not backend.fits_when_empty(total, n - 1, together=width > 1):
        raise ConfigError(f"the KV budget of {backend.name} cannot hold request {r.request_id} "
                          f"({total} tokens x {what}) even when empty")
