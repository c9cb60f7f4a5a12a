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
from pabench.errors import ConfigError, OutOfPagesError


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
    # vLLM v1's policy: one token budget per step (max_batched_tokens) for every running sequence's decode token
    # first, then chunks of prompts in what remains, in steps that mix both ("mixed"); at most
    # max_num_partial_prefills prompts are left partly prefilled at a time
    chunked_prefill: bool = False
    max_num_partial_prefills: int = 1

    def __post_init__(self) -> None:
        for f in ("max_num_seqs", "max_batched_tokens", "max_model_len", "min_prefill_seqs",
                  "max_num_partial_prefills"):
            if getattr(self, f) <= 0:
                raise ConfigError(f"{f} must be > 0, got {getattr(self, f)}")
        if self.chunked_prefill and self.max_batched_tokens < self.max_num_seqs:
            raise ConfigError(f"with chunked prefill the token budget max_batched_tokens ({self.max_batched_tokens}) "
                              f"must cover one decode token per sequence: at least max_num_seqs ({self.max_num_seqs})")
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
    prefill_done: bool = False  # its prompt (or recompute) is computed and it decodes; False while (chunk-)prefilling

    @property
    def max_total_tokens(self) -> int:
        return self.num_prompt_tokens + self.output_len

    @property
    def num_generated(self) -> int:
        return self.seq.num_tokens - self.num_prompt_tokens


@dataclass(frozen=True)
class ScheduledStep:
    kind: str  # "prefill" | "decode" | "mixed" (chunked prefill: decode tokens and prompt chunks together)
    states: list[SeqState]
    preempted: list[SeqState]
    ranges: list[tuple[int, int]] | None = None  # "mixed": positions [start, end) each state computes


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
        """Admit what fits (prefill step) or grow every running sequence (decode step); with chunked prefill, a
        step of decode tokens and prompt chunks under one token budget."""
        if self.config.chunked_prefill:
            return self._schedule_mixed()
        batch = self._admit()
        if batch:
            self.running.extend(batch)
            return ScheduledStep("prefill", batch, [])
        if not self.running:
            return self._nothing_fits()
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
        return self._requeue(preempted)

    def _schedule_mixed(self) -> ScheduledStep | None:
        """vLLM v1's chunked prefill: every decoding sequence's token first, then chunks of the partly prefilled
        prompts, then of newly admitted ones, FCFS, while the step's token budget lasts."""
        cfg, running = self.config, self.running
        preempted = self._grow_decoding()
        states = [st for st in running if st.prefill_done]
        ranges = [(st.seq.num_tokens - 1, st.seq.num_tokens) for st in states]
        budget = cfg.max_batched_tokens - len(states)
        partial = [st for st in running if not st.prefill_done]
        for st in partial:  # admission order: the oldest partial prefill goes first
            if budget <= 0:
                break
            start = st.seq.num_computed_tokens
            end = min(st.seq.num_tokens, start + budget)
            try:
                self.backend.grow_chunk(st.seq, end)
            except OutOfPagesError:
                break  # no page for the chunk now: it waits for pages, decode goes on
            states.append(st)
            ranges.append((start, end))
            budget -= end - start
        num_partial = sum(1 for st, (_, end) in zip(states, ranges) if end < st.seq.num_tokens) + sum(
            1 for st in partial if st not in states)
        while self.waiting and budget > 0 and len(running) + 1 + self.waiting[0].num_forks <= cfg.max_num_seqs:
            st = self.waiting[0]
            seq = st.seq
            if seq.num_tokens - seq.num_cached_tokens > budget and num_partial >= cfg.max_num_partial_prefills:
                break  # it would stay partly prefilled, and enough prompts already are
            if not self.backend.can_admit(seq, st.max_total_tokens, st.num_forks, max_new_tokens=budget):
                break  # strict FCFS
            self.backend.admit(seq, st.max_total_tokens, st.num_forks, max_new_tokens=budget)
            seq.status = SequenceStatus.RUNNING
            self.waiting.popleft()
            running.append(st)
            start = seq.num_cached_tokens
            end = min(seq.num_tokens, start + budget)
            states.append(st)
            ranges.append((start, end))
            budget -= end - start
            num_partial += end < seq.num_tokens
        if len(states) == sum(1 for st in states if st.prefill_done):  # no prompt work: a plain decode step
            if not states and running:  # only partial prefills, none of which can get a page: free the newest
                victim = running.pop()
                self._preempt(victim)
                self.waiting.appendleft(victim)
                return self._schedule_mixed()
            if not states:
                return self._nothing_fits()
            return ScheduledStep("decode", states, preempted)
        return ScheduledStep("mixed", states, preempted, ranges)

    def _grow_decoding(self) -> list[SeqState]:
        """`_grow_all` for the decoding sequences of a chunked schedule; the victims are the newest running
        sequences, partly prefilled or not."""
        preempted: list[SeqState] = []
        running = self.running
        seqs = [st.seq for st in running if st.prefill_done]
        i = self.backend.grow_many(seqs)
        while i < len(seqs):
            victim = running.pop()  # the most recently admitted: the last decoding one if it decodes
            if victim.prefill_done:
                seqs.pop()
            self._preempt(victim)
            preempted.append(victim)
            if i < len(seqs):
                i = self.backend.grow_many(seqs, i)
        return self._requeue(preempted)

    def _requeue(self, preempted: list[SeqState]) -> list[SeqState]:
        """Put a step's victims back at the head of the queue (popped newest first: appendleft restores admission
        order); a victim that could not run even alone is an impossible request."""
        if preempted and not self.running:
            raise ConfigError(f"the KV budget cannot hold request {preempted[-1].request_id} "
                              f"({preempted[-1].seq.num_tokens} tokens) even with nothing else running")
        for victim in preempted:
            self.waiting.appendleft(victim)
        return preempted

    def _nothing_fits(self) -> None:
        """Nothing runs and nothing can start: the head of the queue can never fit (or there is no work)."""
        if self.waiting:
            head = self.waiting[0]
            raise ConfigError(f"the KV budget cannot hold request {head.request_id} "
                              f"({head.seq.num_tokens} tokens now, up to {head.max_total_tokens}) "
                              f"even with nothing else running")
        return None

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
        st.prefill_done = False
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
