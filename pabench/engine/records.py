"""What one engine run produces: per-request timestamps, per-step samples, counters. Pure data, no torch.

The bench layer (`pabench.bench.metrics`) turns a `RunRecord` into a `Result` with nested `Stats`; `token_agreement`
compares two runs' output tokens.
All times are seconds since the run's start (host clock, taken after device synchronisation on GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pabench.core.memory import MemorySnapshot


@dataclass(frozen=True)
class RequestRecord:
    """Timestamps of one request. `token_times_s[i]` lists when sample i produced each output token."""

    request_id: int
    arrival_s: float
    first_token_s: float  # first output token of the request (any sample)
    finish_s: float  # last token of the last sample
    num_prompt_tokens: int
    num_output_tokens: int  # summed over samples
    num_samples: int
    token_times_s: tuple[tuple[float, ...], ...]  # [num_samples][output_len]
    num_preemptions: int = 0
    num_cached_prompt_tokens: int = 0  # prompt tokens served from the prefix cache (last admission)


@dataclass(frozen=True)
class StepSample:
    """One engine step: what ran, how long the host and the device took, and the memory afterwards."""

    time_s: float  # end of the step
    kind: str  # "prefill" | "decode" | "mixed" (chunked prefill: prompt chunks and decode tokens) | "idle"
    num_seqs: int  # sequences in this step's batch
    num_tokens: int  # tokens computed in this step (prefill: prompt tokens minus prefix-cache hits)
    num_running: int  # running sequences after the step
    num_waiting: int  # arrived requests still waiting after the step
    host_s: float  # host time spent scheduling + block manager + input preparation + bookkeeping
    step_s: float  # wall time of the whole step (device synchronised)
    memory: MemorySnapshot
    device_s: float = 0.0  # device time of the model step (CUDA events; 0 on CPU)
    host_split_s: tuple[float, float, float] = (0.0, 0.0, 0.0)  # host_s as (schedule, stage inputs, bookkeeping)
    num_decode_tokens: int = 0  # of num_tokens, those that are decode tokens (the rest: prompt tokens)


@dataclass
class RunRecord:
    """Everything one backend's run produced, ready for `pabench.bench.metrics.build_result`."""

    backend: str
    config: dict[str, Any]  # workload, model, device, dtype, page size, budget, limits, seed, ...
    requests: list[RequestRecord] = field(default_factory=list)
    steps: list[StepSample] = field(default_factory=list)
    wall_s: float = 0.0
    num_preemptions: int = 0
    prefix_hit_rate: float = 0.0  # prompt tokens served from cache / prompt tokens queried
    num_cow_copies: int = 0
    kv_copied_bytes: int = 0  # K/V bytes copied: copy-on-write pages (paged), forked regions (contiguous)
    num_forks: int = 0  # beams forked (beam search)
    num_pruned: int = 0  # beams pruned (beam search)
    recomputed_tokens: int = 0  # prefill tokens computed again (a preempted sequence's, a restarted beam search's)
    capacity: dict[str, Any] = field(default_factory=dict)  # what the budget holds: pages, tokens, max-length seqs
    output_token_ids: dict[int, tuple[tuple[int, ...], ...]] = field(default_factory=dict)  # request -> samples' tokens


def token_agreement(ref: RunRecord, other: RunRecord) -> dict:
    """How many output tokens `other` shares with `ref` position by position, and how many requests match whole.

    Paging must be transparent: on CPU in fp32 every backend produces the same tokens. In bf16 on GPU, backends
    that run different batch sizes round their matmuls differently (and a recompute after preemption runs the
    prefill path, not the decode path), which can flip a near-tie argmax, after which that sample's
    continuation differs; the rates say how often.
    """
    same_tokens = total_tokens = same_requests = 0
    for rid, samples in ref.output_token_ids.items():
        theirs = other.output_token_ids.get(rid, ())
        same_requests += samples == theirs
        for a, b in zip(samples, theirs):
            total_tokens += len(a)
            same_tokens += sum(x == y for x, y in zip(a, b))
    n = max(1, len(ref.output_token_ids))
    return {"token_match_vs": ref.backend, "token_match_pct": 100.0 * same_tokens / max(1, total_tokens),
            "request_match_pct": 100.0 * same_requests / n}
