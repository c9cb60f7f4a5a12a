"""`BeamSteps`: the engine's beam-search steps, a mixin of `Engine` (it uses the engine's backend, scheduler and
decode buffers). Two ways to hold beams: in place (fork and prune every step: pages shared and copied on write, or
a contiguous region copied per fork), or as vLLM v1 does on `paged-reprefill` (every beam step is a new request
served by the prefix cache). The choice rule itself is `engine/beam.py`.
"""

from __future__ import annotations

import torch

from pabench.core import Sequence, SequenceStatus
from pabench.engine import beam as beam_search
from pabench.engine.records import RunRecord
from pabench.engine.scheduler import SeqState


class BeamSteps:
    """What a decode or prefill step does with the beams among its sequences."""

    def _decode_beams(self, states: list[SeqState], sampled: list[int], groups: dict, t: float,
                      finished: list[SeqState], new_states: list[SeqState]) -> None:
        """A decode step with beams: plain sequences take their token; each beam search keeps its best `width`
        extensions: a beam chosen k times forks k - 1 children (pages shared), a beam chosen 0 times is pruned."""
        values, indices = self._beam_topk
        by_group: dict[int, list[int]] = {}
        for row, st in enumerate(states):
            if st.beam is None:
                self._append(st, sampled[row], t, finished)
            else:
                by_group.setdefault(id(st.beam), []).append(row)
        pruned: set[int] = set()
        for rows in by_group.values():
            beams = [states[row] for row in rows]  # beam index = order in the batch (admission, then forks)
            group = beams[0].beam
            k = 2 * group.width
            choices = beam_search.select([group.cum_logprobs[st.seq.seq_id] for st in beams],
                                         [values[row][:k] for row in rows], [indices[row][:k] for row in rows],
                                         group.width)
            chosen = {c.beam for c in choices}
            for b, st in enumerate(beams):
                st.seq.num_computed_tokens = st.seq.num_tokens  # this step computed every beam's last token
                if b not in chosen:  # pruned first: its memory (pages, a region, a table row) serves the forks
                    self.backend.release(st.seq)
                    st.seq.status = SequenceStatus.FINISHED
                    del group.cum_logprobs[st.seq.seq_id]
                    groups[st.request_id].remove(st)
                    pruned.add(id(st))
                    group.num_pruned += 1
            continued: set[int] = set()
            extend = []
            for c in choices:
                parent = beams[c.beam]
                if c.beam in continued:  # chosen again: a child shares the parent's tokens and pages
                    child = SeqState(parent.seq.fork(next(self._seq_ids)), parent.request_id,
                                     max(x.sample_index for x in groups[parent.request_id]) + 1,
                                     parent.num_prompt_tokens, parent.output_len,
                                     token_times=list(parent.token_times), beam=group)  # before its token
                    self.backend.fork(parent.seq, child.seq)
                    group.num_forks += 1
                    groups[parent.request_id].append(child)
                    new_states.append(child)
                    extend.append((child, c))
                else:
                    continued.add(c.beam)
                    extend.append((parent, c))
            for st, c in extend:
                group.cum_logprobs[st.seq.seq_id] = c.cum_logprob
                self._append(st, c.token, t, finished)
        if pruned:
            self.scheduler.running = [st for st in self.scheduler.running if id(st) not in pruned]
        self._sync_sampled(states, pruned)

    def _reprefill_beams(self, rows: list[tuple[int, SeqState]], sampled: list[list[int]], groups: dict, t: float,
                         finished: list[SeqState], record: RunRecord) -> None:
        """vLLM v1's beam search on `paged-reprefill`: a beam's logits come from prefilling all its tokens as a
        new request (full pages from the prefix cache; its partial last page and newest token computed again).
        Once every beam of a round has its logits, the best `width` extensions become the next round's requests."""
        done = set()
        for row, st in rows:
            group = st.beam
            if st.num_preemptions == 0 and st.seq.num_tokens > st.num_prompt_tokens:
                record.recomputed_tokens += st.seq.num_tokens - st.seq.num_cached_tokens - 1  # all but the newest
            group.pending.append((st, self._prefill_logprobs[row], sampled[row]))
            self.backend.release(st.seq)  # its full pages stay in the prefix cache for the next round
            st.seq.status = SequenceStatus.FINISHED
            done.add(id(st))
        self.scheduler.running = [st for st in self.scheduler.running if id(st) not in done]
        for group in {id(st.beam): st.beam for _, st in rows}.values():
            if len(group.pending) < group.round_size:
                continue  # siblings not prefilled yet
            beams = sorted(group.pending, key=lambda p: p[0].sample_index)
            group.pending = []
            k = 2 * group.width
            choices = beam_search.select([group.cum_logprobs.get(st.seq.seq_id, 0.0) for st, _, _ in beams],
                                         [v[:k] for _, v, _ in beams], [i[:k] for _, _, i in beams], group.width)
            chosen = {c.beam for c in choices}
            group.num_pruned += sum(1 for b in range(len(beams)) if b not in chosen) if group.round_size > 1 else 0
            group.num_forks += len(choices) - len(chosen)
            group.cum_logprobs.clear()
            nxt = []
            for j, c in enumerate(choices):
                parent = beams[c.beam][0]
                seq = Sequence(next(self._seq_ids), parent.seq.token_ids + [c.token],
                               num_prompt_tokens=parent.num_prompt_tokens)
                st = SeqState(seq, parent.request_id, j, parent.num_prompt_tokens, parent.output_len,
                              token_times=parent.token_times + [t], beam=group)
                group.cum_logprobs[seq.seq_id] = c.cum_logprob
                nxt.append(st)
            groups[beams[0][0].request_id] = nxt
            group.round_size = len(nxt)
            if nxt[0].num_generated >= nxt[0].output_len:
                finished.extend(nxt)  # every beam has its output length: the request is done
            else:
                self.scheduler.waiting.extendleft(reversed(nxt))  # next round first: FCFS for the rest

    def _sync_sampled(self, states: list[SeqState], pruned: set[int]) -> None:
        """Kept rows of the next step read their input token from `sampled` (argmax): a beam's token differs."""
        tokens = [st.seq.last_token_id if id(st) not in pruned else 0 for st in states]
        self.sampled[:len(tokens)].copy_(torch.tensor(tokens, dtype=torch.int64))


def best_beam(beams: list[SeqState]) -> SeqState:
    """The beam a beam search returns: the best length-penalised score (vLLM's), ties to the lower sample index."""
    group = beams[0].beam
    return max(sorted(beams, key=lambda st: st.sample_index),
               key=lambda st: beam_search.score(group.cum_logprobs[st.seq.seq_id], st.seq.num_tokens,
                                                group.length_penalty))
