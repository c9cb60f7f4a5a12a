"""Beam search's choice at one step, with vLLM's `BeamSearchParams` semantics (beam_width, length_penalty).

Each live beam offers its `2 x beam_width` most likely next tokens (vLLM asks for that many logprobs); every
candidate scores the beam's cumulative log-probability plus the token's. The best `beam_width` candidates
survive: a beam chosen k times continues once and forks k - 1 children (sharing its pages), a beam chosen
0 times is pruned (its pages return). Ties go to the lower beam index, then to the likelier token (rank).
With dummy weights there is no EOS, so every beam runs to the request's output length (vLLM's ignore_eos).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pabench.errors import ConfigError


@dataclass(frozen=True)
class Choice:
    """One surviving candidate: which beam it extends, with which token, at what cumulative log-probability."""

    beam: int  # index into the step's beams
    token: int
    cum_logprob: float


def select(cum_logprobs: list[float], top_logprobs: list[list[float]], top_tokens: list[list[int]],
           width: int) -> list[Choice]:
    """The `width` best (beam, token) extensions, best first. `top_logprobs[b]` / `top_tokens[b]`: beam b's
    candidates, most likely first (log-probabilities of the next token under beam b)."""
    if not 1 <= width <= sum(len(t) for t in top_tokens):
        raise ConfigError(f"beam search needs 1 <= width <= candidates, got width {width}")
    candidates = [(-(cum + lp), b, rank, tok) for b, (cum, lps, toks) in enumerate(zip(cum_logprobs, top_logprobs,
                                                                                       top_tokens))
                  for rank, (lp, tok) in enumerate(zip(lps, toks))]
    candidates.sort()  # best score first; ties: lower beam index, then higher-ranked token
    return [Choice(b, tok, -neg) for neg, b, _, tok in candidates[:width]]


def score(cum_logprob: float, num_tokens: int, length_penalty: float = 1.0) -> float:
    """vLLM's `get_beam_search_score` without EOS: cumulative log-probability / (tokens incl. prompt) ** penalty."""
    return cum_logprob / (num_tokens ** length_penalty)


@dataclass
class BeamGroup:
    """One request's beam search: its width, penalty, the live beams' cumulative log-probabilities, counters."""

    request_id: int
    width: int
    length_penalty: float = 1.0
    cum_logprobs: dict[int, float] = field(default_factory=dict)  # seq_id -> cumulative log-probability
    num_forks: int = 0
    num_pruned: int = 0
    restarts: int = 0  # preempted as a whole and started over from the prompt
    # paged-reprefill (vLLM v1): each round's beams are separate requests; their (state, logprobs, tokens) wait here
    # until all `round_size` of them are prefilled
    pending: list = field(default_factory=list)
    round_size: int = 1

    def __post_init__(self) -> None:
        if self.width < 2:
            raise ConfigError(f"request {self.request_id}: beam_width must be >= 2 for beam search, got {self.width}")
