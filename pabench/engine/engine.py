"""`Engine`: the serving loop. Arrivals -> scheduler -> model step through the backend -> tokens -> records.

The same engine, scheduler and model serve every backend; only the KV cache differs. Host clocks are read
after the sampled tokens reach the host, which synchronises the device, so timestamps are honest on GPU.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from pabench.backends.base import KVCacheBackend, PrefillBatch
from pabench.backends.staging import StagedBatch
from pabench.core import Sequence
from pabench.errors import ConfigError
from pabench.engine import beam as beam_search
from pabench.engine.beam_steps import BeamSteps, best_beam
from pabench.engine.attention import decode_attn, decode_token_fields, prefill_attn
from pabench.engine.model import DecoderModel
from pabench.engine.padding import ROW_BUCKET, TOKEN_BUCKET, bucket
from pabench.engine.records import RequestRecord, RunRecord, StepSample
from pabench.engine.scheduler import ScheduledStep, Scheduler, SchedulerConfig, SeqState, check_request_fits

ProgressFn = Callable[[int, int], None]  # (finished requests, total requests)


class Engine(BeamSteps):
    """Serves a list of requests through one backend with continuous batching."""

    def __init__(self, model: DecoderModel, backend: KVCacheBackend, config: SchedulerConfig,
                 cuda_graphs: bool = False) -> None:
        self.model = model
        self.backend = backend
        # a tensor-parallel rank (model.tp): every rank runs this same scheduler on the same inputs; rank 0's clock
        # decides arrivals (parallel/group.py)
        self.tp = model.tp if getattr(model, "tp", None) is not None and model.tp.size > 1 else None
        self.config = config
        self.scheduler = Scheduler(backend, config)
        self._seq_ids = itertools.count()
        self.device = model.device
        self.graphs = None
        self._beam_topk: tuple[list, list] | None = None  # this decode step's top log-probabilities, with beams
        self._beam_width = 1  # the run's widest beam search (set in _start)
        self._prefill_logprobs: list[list[float]] = []  # this prefill step's top-k log-probabilities, with beams
        self.reprefill_beams = getattr(backend, "reprefill_beams", False)  # vLLM v1's beams (paged-reprefill)
        self.pad_prefill = self.device.type == "cuda"  # prefill shape buckets (engine/padding.py)
        self._timer = DeviceTimer(self.device)  # one pair of CUDA events, re-recorded every step
        # Eager decode inputs (newest token id, position) per sequence, restaged incrementally from the tokens
        # sampled into `sampled` at the previous step's rows.
        self.inputs = StagedBatch(config.max_num_seqs, (0, 0), torch.int64, self.device)
        self.sampled = torch.zeros(config.max_num_seqs, dtype=torch.int64, device=self.device)  # [max_seqs]
        if cuda_graphs:
            if self.device.type != "cuda":
                raise ConfigError("CUDA graphs need --device cuda")
            from pabench.engine.cuda_graphs import GraphedDecode

            self.graphs = GraphedDecode(model, backend, config.max_num_seqs)
            self.graphs.capture_all()

    # ------------------------------------------------------------------ public
    def run(self, requests: Iterable, run_config: dict | None = None, on_progress: ProgressFn | None = None,
            realtime: bool = True) -> RunRecord:
        """Serve `requests` (objects with request_id, arrival_s, prompt_token_ids, output_len, num_samples)."""
        run = self._start(requests, run_config, on_progress, realtime)
        while run.pending or self.scheduler.has_work:
            if not self._admit_arrivals(run, idle=not self.scheduler.has_work):
                continue
            h0 = time.perf_counter()
            step = self.scheduler.schedule()
            sched_s = time.perf_counter() - h0
            self._retire(run, self._execute(step, run.groups, run.clock, h0, sched_s, run.record))
        return self._finish(run)

    # ------------------------------------------------------------------ the loop's pieces
    def _start(self, requests: Iterable, run_config: dict | None, on_progress: ProgressFn | None,
               realtime: bool) -> "RunState":
        """Sort and check the requests (a request that can never fit fails here, before anything runs)."""
        pending = deque(sorted(requests, key=lambda r: (r.arrival_s, r.request_id)))
        for r in pending:
            check_request_fits(self.backend, self.config, r)
        # the widest beam search: decode steps then also return 2 x width log-probabilities per row (0: no beams)
        self._beam_width = max((getattr(r, "beam_width", 1) for r in pending), default=1)
        if self._beam_width > 1 and self.graphs is not None:
            raise ConfigError("beam search runs eager decode steps for now: drop --cuda-graphs")
        record = RunRecord(backend=self.backend.name, config=dict(run_config or {}),
                           capacity=self.backend.capacity())
        return RunState(pending=pending, total=len(pending), record=record, on_progress=on_progress, realtime=realtime)

    def _admit_arrivals(self, run: "RunState", idle: bool) -> bool:
        """Queue the requests that have arrived; when `idle` and none has, sleep until one does and say False."""
        now = run.clock()
        if self.tp is not None and run.pending:  # the only input that differs between ranks: use rank 0's
            now = self.tp.broadcast_float(now)
        if not run.realtime and idle and run.pending:
            now = max(now, run.pending[0].arrival_s)
        while run.pending and run.pending[0].arrival_s <= now:
            r = run.pending.popleft()
            st = self._new_state(r)
            run.groups[r.request_id] = [st]
            run.arrivals[r.request_id] = r.arrival_s if run.realtime else now
            run.remaining[r.request_id] = max(r.num_samples, getattr(r, "beam_width", 1))
            self.scheduler.add(st)
        if idle and not self.scheduler.has_work:
            time.sleep(max(0.0, run.pending[0].arrival_s - run.clock()))
            return False
        return True

    def _retire(self, run: "RunState", finished: list[SeqState]) -> None:
        """Finished samples whose tokens are all known: a request is recorded when its last sample is."""
        for st in finished:
            run.remaining[st.request_id] -= 1
            if run.remaining[st.request_id] == 0:
                if st.beam is not None:  # the request's output is its best beam
                    run.groups[st.request_id] = [best_beam(run.groups[st.request_id])]
                run.record.requests.append(self._request_record(run.groups[st.request_id],
                                                                run.arrivals[st.request_id]))
                run.done += 1
                if run.on_progress:
                    run.on_progress(run.done, run.total)

    def _finish(self, run: "RunState") -> RunRecord:
        record = run.record
        record.wall_s = run.clock()
        record.num_preemptions = self.scheduler.num_preemptions
        facts = self.backend.describe()
        record.prefix_hit_rate = facts["prefix_hit_rate"]
        record.num_cow_copies = facts["num_cow_copies"]
        record.kv_copied_bytes = facts.get("kv_copied_bytes", 0)
        beams = {id(g): g for sts in run.groups.values() for g in (st.beam for st in sts) if g is not None}
        record.num_forks = sum(g.num_forks for g in beams.values())
        record.num_pruned = sum(g.num_pruned for g in beams.values())
        record.requests.sort(key=lambda r: r.request_id)
        record.output_token_ids = {
            rid: tuple(tuple(st.seq.token_ids[st.num_prompt_tokens:]) for st in sts) for rid, sts in run.groups.items()
        }
        if self.tp is not None:  # the ranks took the same decisions and sampled the same tokens, or the run fails
            self.tp.agree(schedule_digest(record), "the schedule and output tokens")
        return record

    # ------------------------------------------------------------------ one step
    def _execute(self, step: ScheduledStep, groups: dict, clock: Callable[[], float], h0: float, sched_s: float,
                 record: RunRecord) -> list[SeqState]:
        states = step.states
        for st in step.preempted:  # a beam search preempted as a whole restarts from this root
            if st.beam is not None:
                groups[st.request_id] = [st]
        num_decode = (len(states) if step.kind == "decode" else
                      sum(st.prefill_done for st in states) if step.kind == "mixed" else 0)
        if step.kind == "mixed":
            num_computed = sum(b - a for a, b in step.ranges)
        else:
            num_computed = (sum(s.seq.num_tokens - s.seq.num_cached_tokens for s in states) if step.kind == "prefill"
                            else len(states))
        if step.kind == "prefill":  # a sequence back from preemption computes its tokens again
            record.recomputed_tokens += sum(s.seq.num_tokens - s.seq.num_cached_tokens for s in states
                                            if s.num_preemptions)
        timer = self._timer
        if step.kind == "prefill":
            sampled, host_prep = self._prefill(states, timer)
        elif step.kind == "mixed":
            sampled, host_prep = self._prefill(states, timer, step.ranges)
        else:
            sampled, host_prep = self._decode(states, timer)
        t_tokens = clock()  # tokens are on the host: the device work of this step is done
        h1 = time.perf_counter()
        finished: list[SeqState] = []
        new_states: list[SeqState] = []
        append = self._append
        if step.kind == "decode" and self._beam_topk is not None:  # some sequences are beams
            self._decode_beams(states, sampled, groups, t_tokens, finished, new_states)
        elif step.kind == "decode":  # the per-token hot path: one token per sequence
            for st, token in zip(states, sampled):
                append(st, token, t_tokens, finished)
        reprefilled: list[tuple[int, SeqState]] = []
        prefilled = range(len(states)) if step.kind == "prefill" else []
        if step.kind == "mixed":  # chunks that end short of the prompt sample nothing; decode rows take a token
            self.inputs.invalidate()  # decode rows advanced outside a decode step: the next one restages them all
            self.backend.invalidate_decode_staging()
            if self.graphs is not None:
                self.graphs.inputs.invalidate()
            prefilled = []
            for row, (st, (_, end)) in enumerate(zip(states, step.ranges)):
                if end < st.seq.num_tokens:
                    st.seq.num_computed_tokens = end
                elif st.prefill_done:
                    append(st, sampled[row][0], t_tokens, finished)
                else:
                    prefilled.append(row)  # its last chunk: from here on like a prefilled sequence
        if prefilled:  # the top-k tokens of each sequence (k > 1 when it forks)
            for row in prefilled:
                st, toks = states[row], sampled[row]
                seq = st.seq
                st.prefill_done = True
                if st.beam is not None and self.reprefill_beams:  # vLLM v1's beams: every step is a new request
                    reprefilled.append((row, st))
                    continue
                if st.num_forks:  # parallel sampling: children share the prompt, each takes the next-best token
                    seq.num_computed_tokens = seq.num_tokens
                    for j in range(1, st.num_forks + 1):
                        child = SeqState(seq.fork(next(self._seq_ids)), st.request_id, j, st.num_prompt_tokens,
                                         st.output_len, token_times=list(st.token_times), beam=st.beam,
                                         prefill_done=True)
                        self.backend.fork(seq, child.seq)
                        if st.beam is not None:  # the first beam step: the prompt's top-k tokens, one per beam
                            st.beam.cum_logprobs[child.seq.seq_id] = self._prefill_logprobs[row][j]
                            st.beam.num_forks += 1
                        append(child, toks[j], t_tokens, finished)
                        new_states.append(child)
                        groups[st.request_id].append(child)
                    st.num_forks = 0
                if st.beam is not None:
                    st.beam.cum_logprobs[seq.seq_id] = self._prefill_logprobs[row][0]
                append(st, toks[0], t_tokens, finished)
        unheld: list[SeqState] = []  # finished without holding memory (a last reprefill round's beams)
        memory = None
        if reprefilled:  # beams hold memory only while prefilled: measure it then
            memory = self.backend.memory()
            self._reprefill_beams(reprefilled, sampled, groups, t_tokens, unheld, record)
        self.scheduler.running.extend(new_states)
        self.scheduler.finish(finished)
        finished.extend(unheld)
        post_s = time.perf_counter() - h1
        step_s = time.perf_counter() - h0
        record.steps.append(StepSample(
            time_s=clock(), kind=step.kind, num_seqs=len(states), num_tokens=num_computed,
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
            host_s=sched_s + host_prep + post_s, step_s=step_s, memory=memory or self.backend.memory(),
            device_s=timer.elapsed_s(), host_split_s=(sched_s, host_prep, post_s), num_decode_tokens=num_decode))
        return finished

    @staticmethod
    def _append(st: SeqState, token: int, t: float, finished: list[SeqState]) -> None:
        """`st` computed all its tokens and sampled `token` at time `t`; it finishes at its output length."""
        if st.seq.append_computed(token) - st.num_prompt_tokens >= st.output_len:
            finished.append(st)
        st.token_times.append(t)

    def _prefill(self, states: list[SeqState], timer: "DeviceTimer",
                 ranges: list[tuple[int, int]] | None = None) -> tuple[list[list[int]], float]:
        """One packed forward over positions [start, end) of each sequence (default: its uncached prompt); `ranges`
        is a mixed step's (prompt chunks, and decode tokens as ranges of one)."""
        h0 = time.perf_counter()
        mixed = ranges is not None
        if ranges is None:
            ranges = [(st.seq.num_cached_tokens, st.seq.num_tokens) for st in states]
        # mixed steps (ranges given) read every context in place with the unified kernel where the backend can;
        # prefill-only steps keep FlashAttention varlen over the gathered cache (faster on long prompts)
        unified = mixed and self.backend.unified_attention
        batch = PrefillBatch.build([self.backend.prepare_prefill(st.seq, a, b) for st, (a, b) in zip(states, ranges)],
                                   self.backend.kv_slots, self.device, unified=unified)
        ids: list[int] = []
        for st, (a, b) in zip(states, ranges):
            ids.extend(st.seq.token_ids[a:b])
        cu_q = np.asarray(batch.cu_q, dtype=np.int64)  # [n + 1]
        starts = np.asarray([a for a, _ in ranges], dtype=np.int64)  # [n] first new position
        # position of packed row r of sequence i: starts[i] + (r - cu_q[i])
        pos = np.arange(cu_q[-1], dtype=np.int64) + np.repeat(starts - cu_q[:-1], np.diff(cu_q))  # [T]
        rows = cu_q[1:] - 1  # [n] each sequence's last new token
        n = len(states)
        if self.pad_prefill:  # shape buckets (engine/padding.py): pad rows are token 0 at position 0
            pad = bucket(len(ids), TOKEN_BUCKET) - len(ids)
            ids.extend([0] * pad)
            pos = np.concatenate([pos, np.zeros(pad, dtype=np.int64)])  # [T_pad]
            rows = np.concatenate([rows, np.full(bucket(n, ROW_BUCKET) - n, rows[-1])])  # [n_pad]
        dev = self.device
        input_ids = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(dev, non_blocking=True)  # [T_pad]
        positions = torch.from_numpy(pos).to(dev, non_blocking=True)  # [T_pad]
        last_rows = torch.from_numpy(rows).to(dev, non_blocking=True)  # [n_pad]
        host = time.perf_counter() - h0

        with timer:
            logits = self.model.forward(input_ids, positions, prefill_attn(self.backend, batch),
                                        logits_rows=last_rows)[:n]  # [n, vocab]
        k = 1 + max(st.num_forks for st in states)
        if self.reprefill_beams:
            k = max([k] + [2 * st.beam.width for st in states if st.beam is not None])
        if any(st.beam is not None for st in states):  # beams start from the prompt's top-k log-probabilities
            values, indices = logits.float().log_softmax(-1).topk(k, dim=-1)  # [n, k] each
            self._prefill_logprobs = values.tolist()
            return indices.tolist(), host
        top = logits.topk(k, dim=-1).indices.tolist() if k > 1 else logits.argmax(-1)[:, None].tolist()
        return top, host

    def _decode(self, states: list[SeqState], timer: "DeviceTimer") -> tuple[list[int], float]:
        self._beam_topk = None  # per step, not per sequence: a run without beams pays nothing for them
        tokens, host = self._launch_decode([st.seq for st in states], timer,
                                           2 * self._beam_width if self._beam_width > 1 else 0)
        return tokens.tolist(), host  # waits for the device

    def _launch_decode(self, seqs: list[Sequence], timer: "DeviceTimer",
                       num_candidates: int = 0) -> tuple[torch.Tensor, float]:
        """Stage and queue one decode step; the sampled tokens `[n]` on the device, and the host staging time.
        `num_candidates` > 0 (beams in the batch): also each row's top log-probabilities, in `_beam_topk`."""
        if self.graphs is not None:  # staging inputs is host work; replay + token copy is the device's
            return self.graphs.launch(seqs, timer)
        h0 = time.perf_counter()
        slots = self.backend.prepare_decode(seqs)  # [B]
        n = len(seqs)
        self.inputs.stage(seqs, n, decode_token_fields)
        host = time.perf_counter() - h0

        with timer:
            self.inputs.apply(n, fresh_keys=self.sampled)
            logits = self.model.forward(self.inputs.keys[:n], self.inputs.counters[:n],
                                        decode_attn(self.backend, slots))  # [B, vocab]
            self.sampled[:n].copy_(logits.argmax(-1))
            if num_candidates:
                values, indices = logits.float().log_softmax(-1).topk(num_candidates, dim=-1)  # [B, 2W] each
                self._beam_topk = (values.tolist(), indices.tolist())
        return self.sampled[:n], host

    # ------------------------------------------------------------------ helpers
    def _new_state(self, r) -> SeqState:
        seq = Sequence(next(self._seq_ids), list(r.prompt_token_ids))
        width = getattr(r, "beam_width", 1)
        group = beam_search.BeamGroup(r.request_id, width, getattr(r, "length_penalty", 1.0)) if width > 1 else None
        forks = 0 if group is not None and self.reprefill_beams else max(r.num_samples, width) - 1
        return SeqState(seq, r.request_id, 0, len(r.prompt_token_ids), r.output_len, num_forks=forks, beam=group)

    def _request_record(self, sts: list[SeqState], arrival: float) -> RequestRecord:
        times = tuple(tuple(st.token_times) for st in sorted(sts, key=lambda s: s.sample_index))
        return RequestRecord(
            request_id=sts[0].request_id, arrival_s=arrival, first_token_s=min(t[0] for t in times),
            finish_s=max(t[-1] for t in times), num_prompt_tokens=sts[0].num_prompt_tokens,
            num_output_tokens=sum(len(t) for t in times), num_samples=len(sts), token_times_s=times,
            num_preemptions=sum(st.num_preemptions for st in sts),
            num_cached_prompt_tokens=sts[0].seq.num_cached_tokens)


def schedule_digest(record: RunRecord) -> str:
    """A stable digest of what a run decided (each step's kind and sizes, preemptions, every output token): equal
    on every rank of a tensor-parallel run, or the replicated scheduler diverged."""
    steps = [(s.kind, s.num_seqs, s.num_tokens, s.num_running, s.num_waiting) for s in record.steps]
    text = repr((steps, record.num_preemptions, sorted(record.output_token_ids.items())))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass
class RunState:
    """One run's state in the serving loop: requests still to arrive, each request's samples and counts."""

    pending: deque
    total: int
    record: RunRecord
    on_progress: ProgressFn | None
    realtime: bool
    groups: dict[int, list[SeqState]] = field(default_factory=dict)  # request -> its samples
    arrivals: dict[int, float] = field(default_factory=dict)
    remaining: dict[int, int] = field(default_factory=dict)  # request -> samples not finished yet
    done: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def clock(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.t0


class DeviceTimer:
    """CUDA events around the model's device work (read after the step's sync); a no-op on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.events = None
        if device.type == "cuda":
            self.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))

    def __enter__(self) -> "DeviceTimer":
        if self.events:
            self.events[0].record()
        return self

    def __exit__(self, *exc) -> bool:
        if self.events:
            self.events[1].record()
        return False

    def elapsed_s(self) -> float:
        if not self.events:
            return 0.0
        self.events[1].synchronize()
        return self.events[0].elapsed_time(self.events[1]) / 1e3
