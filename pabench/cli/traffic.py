"""vLLM `bench serve`'s random-dataset flags over a workload preset, so a run needs no TOML file: `--input-len`,
`--output-len`, `--range-ratio`, `--request-rate` and `--burstiness` (`--num-prompts` is `--num-requests`).

vLLM's meanings: lengths are integers uniform in [len * (1 - r), len * (1 + r)] (`--range-ratio` r, default 0);
request rate inf puts every request at t=0, a finite one draws gaps from a gamma of shape `--burstiness` (1 = a
Poisson process). A flag overrides the preset; what no flag names keeps the preset's value. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from pabench.bench.workloads import LengthDist, WorkloadSpec, with_rate
from pabench.errors import ConfigError

_SHORT = {"input_len": "in", "output_len": "out", "range_ratio": "rr", "request_rate": "rate",
          "burstiness": "burstiness"}  # how each flag marks the workload's name: sharegpt-like+in512+rate8


@dataclass(frozen=True)
class TrafficFlags:
    """The random-dataset flags given on the command line; None = not given (the preset's value stands)."""

    input_len: int | None = None
    output_len: int | None = None
    range_ratio: float | None = None
    request_rate: float | None = None  # inf = every request at t=0 (vLLM's default)
    burstiness: float | None = None

    def __post_init__(self) -> None:
        for flag, value in (("--input-len", self.input_len), ("--output-len", self.output_len)):
            if value is not None and value < 1:
                raise ConfigError(f"{flag} must be >= 1 token, got {value}")
        if self.range_ratio is not None and not 0 <= self.range_ratio < 1:
            raise ConfigError(f"--range-ratio must be in [0, 1) (vLLM's --random-range-ratio), got {self.range_ratio}")
        if self.request_rate is not None and not self.request_rate > 0:  # NaN fails too
            raise ConfigError(f"--request-rate must be > 0 requests/s (inf: every request at t=0), got "
                              f"{self.request_rate}")
        if self.burstiness is not None and not (math.isfinite(self.burstiness) and self.burstiness > 0):
            raise ConfigError(f"--burstiness must be a number > 0 (the gamma shape; 1 = Poisson), got "
                              f"{self.burstiness}")

    @property
    def given(self) -> dict[str, float]:
        """The flags given, by field name, in declaration order."""
        return {k: v for k, v in vars(self).items() if v is not None}

    def apply(self, spec: WorkloadSpec, rates_swept: bool = False) -> WorkloadSpec:
        """`spec` with the flags given; its name gains one mark per flag (`default+in512+out128`), so an export
        never pairs it with the preset's own runs. `rates_swept`: `sweep --rates` sets the arrivals per point."""
        if not self.given:
            return spec
        if spec.trace is not None:
            self._check_trace()
        lengths = self.input_len is not None or self.output_len is not None or self.range_ratio is not None
        if lengths and spec.trace is None:
            spec = replace(spec, prompt=self._lengths(spec.prompt, self.input_len),
                           output=self._lengths(spec.output, self.output_len))
        if self.request_rate is not None:
            spec = with_rate(spec, self.request_rate)
        if self.burstiness is not None:
            if spec.arrival != "poisson" and not rates_swept:
                raise ConfigError(f"--burstiness shapes the gaps between Poisson arrivals, and {spec.name}'s requests "
                                  "all arrive at t=0: give a finite --request-rate too")
            spec = replace(spec, burstiness=self.burstiness)
        marks = "".join(f"+{_SHORT[k]}{v:g}" for k, v in self.given.items())
        return replace(spec, name=f"{spec.name}{marks}")

    def workload(self, name_or_path: str, rates_swept: bool = False) -> str | WorkloadSpec:
        """What `RunConfig.workload` gets: the preset's name when no flag is given, else the preset with the flags."""
        if not self.given:
            return name_or_path
        from pabench.bench.presets import load_workload

        return self.apply(load_workload(name_or_path), rates_swept)

    def _lengths(self, dist: LengthDist, length: int | None) -> LengthDist:
        """vLLM's random lengths around `length` (or the preset's mean when only --range-ratio is given)."""
        if length is None and self.range_ratio is None:
            return dist
        mean = float(dist.mean if length is None else length)
        return LengthDist("uniform", mean, range_ratio=self.range_ratio or 0.0)

    def _check_trace(self) -> None:
        """A trace gives every length and arrival time: only a finite rate (rescaling its times) applies to it."""
        for flag, value in (("--input-len", self.input_len), ("--output-len", self.output_len),
                            ("--range-ratio", self.range_ratio), ("--burstiness", self.burstiness)):
            if value is not None:
                raise ConfigError(f"{flag}: not used with a trace workload (its rows give every length and arrival)")
        if self.request_rate is not None and math.isinf(self.request_rate):
            raise ConfigError("--request-rate inf: a trace replays its own arrival times; a finite rate rescales "
                              "them to that mean")
