"""The comparability contract of a run: what another tool's numbers must share before they compare with pabench's.

Stated in every `--save-result` file (`comparability`): the requests are exact token ids (no tokenizer, so lengths
are exact token counts), drawn from these length distributions with vLLM's range-ratio formula, each run to its
output length (vLLM's `--ignore-eos`), after this warm-up, with this seed and prefix-cache state. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pabench.bench.runner import WARMUP_REQUESTS
from pabench.bench.workloads import LengthDist

if TYPE_CHECKING:
    from pabench.bench.runner import Prepared

RANGE_RATIO_FORMULA = ("uniform: integers in [round(mean * (1 - range_ratio)), round(mean * (1 + range_ratio))], "
                       "both ends included (vLLM's --random-range-ratio), then clipped to [min, max]")


def length_dist(dist: LengthDist) -> dict[str, Any]:
    """A length distribution as data: its kind, parameters and the range it can produce."""
    params = {k: getattr(dist, k) for k in ("range_ratio", "std", "sigma") if getattr(dist, k) is not None}
    return {"kind": dist.kind, "mean": dist.mean, **params, "min": dist.lower, "max": dist.upper,
            "text": dist.short()}


def _request_rate(p: Prepared) -> float | str:
    """Poisson: the rate asked for; a trace: the mean rate of the rows replayed; burst: "inf"."""
    if p.spec.arrival == "poisson":
        return p.spec.rate
    span = max(r.arrival_s for r in p.requests) - min(r.arrival_s for r in p.requests)
    return "inf" if p.spec.trace is None or span == 0 else (len(p.requests) - 1) / span


def _trace(p: Prepared) -> dict[str, Any] | None:
    """A replayed trace: which file (name and SHA-256), how many of its rows, rescaled to which rate."""
    trace = p.spec.trace
    if trace is None:
        return None
    return {"file": Path(trace.path).name, "sha256": trace.sha256, "rows": trace.num_rows,
            "rows_replayed": len(p.requests), "rescaled_to_rate": trace.rate,
            "lengths": "exact token counts from the file's prompt_len and output_len columns"}


def comparability(p: Prepared) -> dict[str, Any]:
    """The contract of a prepared run (the same for every backend of it)."""
    c, spec = p.config, p.spec
    warm = WARMUP_REQUESTS.get(c.device, 0) if c.warmup else 0
    prefix = spec.shared_prefix
    prompt, output = spec.prompt, spec.output
    if spec.trace is not None:  # the rows replayed (the first num_requests of the file)
        prompt = LengthDist.from_lengths([r.num_prompt_tokens for r in p.requests])
        output = LengthDist.from_lengths([r.output_len for r in p.requests])
    return {
        "prompts": "exact token ids, drawn uniformly from the model's vocabulary; no tokenizer, so every length is "
                   "an exact token count",
        "input_len": length_dist(prompt),
        "output_len": length_dist(output),
        "range_ratio_formula": RANGE_RATIO_FORMULA,
        "shared_prefix": {"num_prefixes": prefix.num_prefixes, "length": prefix.length} if prefix else None,
        "num_samples": spec.num_samples,
        "beam_width": spec.beam_width,
        "ignore_eos": True,  # there is no EOS: every sample runs to its drawn output length
        "arrival": spec.arrival_text(),
        "request_rate": _request_rate(p),  # vLLM's values: a number, or "inf" = all at t=0
        "trace": _trace(p),
        "ramp": ({"strategy": spec.ramp, "start_rate": spec.ramp_start_rate, "end_rate": spec.ramp_end_rate}
                 if spec.ramp else None),  # vLLM's --ramp-up-strategy/-start-rps/-end-rps; request_rate is null then
        "burstiness": spec.burstiness,
        "warmup": {"num_requests": warm, "output_len": 4 if warm else 0,
                   "what": "untimed, on a throwaway cache of the same backend, before each backend's timed run"
                           if warm else "none"},
        "seed": spec.seed if c.seed is None else c.seed,
        "prefix_cache": ("starts empty for every backend (a fresh cache after the warm-up); prefix caching "
                         f"{'off' if c.prefix_caching is False else 'on'} for paged backends, none for contiguous "
                         "ones (paged+prefix / paged-noprefix set it themselves)"),
        "client": "none: requests enter the engine's queue at their arrival time (no network, no HTTP, no client "
                  "queue); latencies include the engine's own queueing",
        "model": "dummy (random) weights of the named model's shapes, greedy decoding; the tokens are not text",
    }
