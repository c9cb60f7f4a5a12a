"""The comparability contract of a run: what another tool's numbers must share before they compare with pabench's.

Stated in every `--save-result` file (`comparability`): the requests are exact token ids (no tokenizer, so lengths
are exact token counts), drawn from these length distributions with vLLM's range-ratio formula, each run to its
output length (vLLM's `--ignore-eos`), after this warm-up, with this seed and prefix-cache state. Torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pabench.bench.runner import WARMUP_REQUESTS

if TYPE_CHECKING:
    from pabench.bench.runner import Prepared
    from pabench.bench.workloads import LengthDist

RANGE_RATIO_FORMULA = ("uniform: integers in [round(mean * (1 - range_ratio)), round(mean * (1 + range_ratio))], "
                       "both ends included (vLLM's --random-range-ratio), then clipped to [min, max]")


def length_dist(dist: LengthDist) -> dict[str, Any]:
    """A length distribution as data: its kind, parameters and the range it can produce."""
    params = {k: getattr(dist, k) for k in ("range_ratio", "std", "sigma") if getattr(dist, k) is not None}
    return {"kind": dist.kind, "mean": dist.mean, **params, "min": dist.lower, "max": dist.upper,
            "text": dist.short()}


def comparability(p: Prepared) -> dict[str, Any]:
    """The contract of a prepared run (the same for every backend of it)."""
    c, spec = p.config, p.spec
    warm = WARMUP_REQUESTS.get(c.device, 0) if c.warmup else 0
    prefix = spec.shared_prefix
    return {
        "prompts": "exact token ids, drawn uniformly from the model's vocabulary; no tokenizer, so every length is "
                   "an exact token count",
        "input_len": length_dist(spec.prompt),
        "output_len": length_dist(spec.output),
        "range_ratio_formula": RANGE_RATIO_FORMULA,
        "shared_prefix": {"num_prefixes": prefix.num_prefixes, "length": prefix.length} if prefix else None,
        "num_samples": spec.num_samples,
        "beam_width": spec.beam_width,
        "ignore_eos": True,  # there is no EOS: every sample runs to its drawn output length
        "arrival": spec.arrival_text(),
        "request_rate": spec.rate if spec.arrival == "poisson" else "inf",  # vLLM's values: "inf" = all at t=0
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
