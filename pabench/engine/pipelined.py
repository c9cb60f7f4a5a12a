"""`PipelinedEngine`: the serving loop with the host one decode step ahead of the device (`--async-scheduling`).

Scheduling depends on lengths, never on token values (an output ends at its known length), and a decode step
reads its input tokens from the device's sampled-token buffer. So while the device runs decode step t, the host
already appends a placeholder token to each of its sequences, retires the ones that reach their length,
schedules and stages step t+1 and queues it; only then does it wait for step t's tokens (copied to pinned host
memory right behind step t) and fill the placeholders in. The host work of a step hides behind the device time
of the previous one instead of adding to it (vLLM v1's async scheduling).

Placeholders never reach a reader that needs the real token: a decoded page is hashed for prefix caching
when the next page opens, by which time its tokens are filled; a preempted sequence is prefilled again only
after the step in flight completes; a prefill step, and a decode step with a sequence that was not in the step
in flight, wait for that step first. On the CPU everything runs in order, and the tokens and the schedule
equal `Engine`'s (tests/engine/test_pipelined.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

import torch

from pabench.core.memory import MemorySnapshot
from pabench.errors import ConfigError
from pabench.engine.engine import DeviceTimer, Engine, ProgressFn, RunState
from pabench.engine.records import RunRecord, StepSample
from pabench.engine.scheduler import ScheduledStep, SeqState

PLACEHOLDER = 0  # the token a sequence holds at a position whose real token is still on the device


@dataclass
class _InFlight:
    """A queued decode step whose tokens the host has not read yet."""

    states: list[SeqState]
    positions: list[int]  # where each sequence's placeholder sits
    finished: list[SeqState]  # reached their length with this step (already released)
    tokens: torch.Tensor  # [n] host copy of the sampled tokens (pinned on CUDA; valid after `event`)
    event: torch.cuda.Event | None
    timer: DeviceTimer
    h0: float
    host_split_s: tuple[float, float, float]  # schedule, stage, bookkeeping at launch
    num_running: int
    num_waiting: int
    memory: MemorySnapshot


class PipelinedEngine(Engine):
    """`Engine` with decode step t+1 scheduled, staged and queued before step t's tokens are read."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        n, cuda = self.config.max_num_seqs, self.device.type == "cuda"
        # Two of each, alternating: one for the step in flight, one for the step being queued.
        self._holds = [torch.zeros(n, dtype=torch.int64, pin_memory=cuda) for _ in range(2)]  # [max_seqs] each
        self._timers = [DeviceTimer(self.device) for _ in range(2)]
        self._num_launched = 0

    def run(self, requests: Iterable, run_config: dict | None = None, on_progress: ProgressFn | None = None,
            realtime: bool = True) -> RunRecord:
        run = self._start(requests, run_config, on_progress, realtime)
        if any(getattr(r, "beam_width", 1) > 1 for r in run.pending):
            raise ConfigError("beam search chooses each step's sequences on the host: run it without "
                              "--async-scheduling")
        in_flight: _InFlight | None = None
        while run.pending or self.scheduler.has_work or in_flight is not None:
            if not self.scheduler.has_work and in_flight is not None:
                self._complete(run, in_flight)  # everything running finished with the step in flight
                in_flight = None
                continue
            if not self._admit_arrivals(run, idle=not self.scheduler.has_work):
                continue
            h0 = time.perf_counter()
            step = self.scheduler.schedule()
            sched_s = time.perf_counter() - h0
            if in_flight is not None and (step.kind != "decode" or not _follows(step, in_flight)):
                self._complete(run, in_flight)  # this step reads tokens from the host: they must be real first
                in_flight = None
            if step.kind == "decode":  # queue it, then read the step before it (if still in flight)
                queued = self._launch(step, h0, sched_s)
                if in_flight is not None:
                    self._complete(run, in_flight)
                in_flight = queued
            else:
                self._retire(run, self._execute(step, run.groups, run.clock, h0, sched_s, run.record))
        return self._finish(run)

    def _launch(self, step: ScheduledStep, h0: float, sched_s: float) -> _InFlight:
        """Queue a decode step, copy its tokens to the host behind it, then advance the host by placeholders."""
        states = step.states
        k = self._num_launched % 2
        self._num_launched += 1
        timer, hold = self._timers[k], self._holds[k]
        tokens, stage_s = self._launch_decode([st.seq for st in states], timer)
        n = len(states)
        hold[:n].copy_(tokens, non_blocking=True)  # queued behind the step: the next step rewrites `tokens`
        event = None
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        h1 = time.perf_counter()
        positions, finished = [], []
        for st in states:
            num_tokens = st.seq.append_computed(PLACEHOLDER)
            positions.append(num_tokens - 1)
            if num_tokens - st.num_prompt_tokens >= st.output_len:
                finished.append(st)
        self.scheduler.finish(finished)  # their memory is reused only by later steps, queued behind this one
        post_s = time.perf_counter() - h1
        return _InFlight(states=states, positions=positions, finished=finished, tokens=hold[:n], event=event,
                         timer=timer, h0=h0, host_split_s=(sched_s, stage_s, post_s),
                         num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
                         memory=self.backend.memory())

    def _complete(self, run: RunState, step: _InFlight) -> None:
        """Wait for the step's tokens, fill the placeholders, record the step and retire its finished requests."""
        if step.event is not None:
            step.event.synchronize()
        t_tokens = run.clock()
        h1 = time.perf_counter()
        for st, position, token in zip(step.states, step.positions, step.tokens.tolist()):
            st.seq.set_token(position, token)
            st.token_times.append(t_tokens)
        sched_s, stage_s, post_s = step.host_split_s
        post_s += time.perf_counter() - h1
        run.record.steps.append(StepSample(
            time_s=run.clock(), kind="decode", num_seqs=len(step.states), num_tokens=len(step.states),
            num_decode_tokens=len(step.states),
            num_running=step.num_running, num_waiting=step.num_waiting, host_s=sched_s + stage_s + post_s,
            step_s=time.perf_counter() - step.h0, memory=step.memory, device_s=step.timer.elapsed_s(),
            host_split_s=(sched_s, stage_s, post_s)))
        self._retire(run, step.finished)


def _follows(step: ScheduledStep, in_flight: _InFlight) -> bool:
    """Does every sequence of `step` run in the step in flight? Then its inputs come from the device alone."""
    if step.states == in_flight.states:  # the common case: the same batch (identity first: C speed)
        return True
    ids = {id(st) for st in in_flight.states}
    return all(id(st) in ids for st in step.states)
