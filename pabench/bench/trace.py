"""Trace replay: a CSV of `timestamp_s,prompt_len,output_len` (BurstGPT-style) as a workload's arrivals and lengths.

`read_trace` checks the file row by row (header exact, timestamps finite and non-decreasing, lengths positive
integers) and names the file and line of the first bad row; times are made relative to the first row. The engine
replays them on the wall clock like any other arrival time. Torch-free.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path

from pabench.errors import ConfigError

TRACE_HEADER = ("timestamp_s", "prompt_len", "output_len")


@dataclass(frozen=True)
class Trace:
    """The rows of a trace file: arrival times (s, from 0) and exact token counts, one entry per request.

    `rate` is set when the times were rescaled to a mean request rate (`scaled_to`), None as recorded.
    """

    path: str
    arrival_s: tuple[float, ...]
    prompt_lens: tuple[int, ...]
    output_lens: tuple[int, ...]
    sha256: str = ""
    rate: float | None = None

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if n < 1:
            raise ConfigError(f"{self.path}: the trace has no rows")
        assert len(self.prompt_lens) == n == len(self.output_lens), "one prompt and output length per row"
        assert all(b >= a for a, b in zip(self.arrival_s, self.arrival_s[1:])), "times are non-decreasing"

    @property
    def num_rows(self) -> int:
        """Requests in the trace."""
        return len(self.arrival_s)

    @property
    def span_s(self) -> float:
        """Time from the first arrival to the last."""
        return self.arrival_s[-1] - self.arrival_s[0]

    @property
    def mean_rate(self) -> float:
        """Requests per second over the trace's span ((rows - 1) / span; inf when every row arrives at once)."""
        return math.inf if self.span_s == 0 else (self.num_rows - 1) / self.span_s

    def scaled_to(self, rate: float) -> Trace:
        """The same trace with its times stretched or squeezed to a mean of `rate` requests/s (bursts keep their
        shape): how `sweep --rates` moves a trace's load."""
        if not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"rate must be > 0 requests/s, got {rate}")
        if self.span_s == 0:
            raise ConfigError(f"{self.path}: every row arrives at t=0, so the trace has no rate to scale to {rate:g}")
        factor = self.mean_rate / rate
        return replace(self, arrival_s=tuple(t * factor for t in self.arrival_s), rate=rate)

    def text(self) -> str:
        """'trace bursty-small.csv (300 rows, 12.4 s)', with the rescaled rate when there is one."""
        scaled = f", scaled to {self.rate:g} req/s" if self.rate is not None else ""
        return f"trace {Path(self.path).name} ({self.num_rows} rows, {self.span_s:.3g} s{scaled})"


def _length(cell: str, column: str, where: str) -> int:
    """A positive whole token count from one CSV cell, or a ConfigError naming the file, line and column."""
    try:
        value = int(cell)
    except ValueError:
        raise ConfigError(f"{where}: {column} must be a positive integer (got {cell!r})") from None
    if value < 1:
        raise ConfigError(f"{where}: {column} must be a positive integer (got {value})")
    return value


def read_trace(path: str | Path) -> Trace:
    """Read and check a trace CSV; every problem is one ConfigError line naming the file and the line."""
    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read trace file: {error}") from None
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header) != TRACE_HEADER:
        got = ",".join(header) if header else "an empty file"
        raise ConfigError(f"{path}:1: the header must be exactly {','.join(TRACE_HEADER)} (got {got})")
    times: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        if len(row) != len(TRACE_HEADER):
            raise ConfigError(f"{where}: expected 3 values (timestamp_s,prompt_len,output_len), got {len(row)}")
        try:
            t = float(row[0])
        except ValueError:
            t = math.nan
        if not math.isfinite(t):
            raise ConfigError(f"{where}: timestamp_s must be a finite number (got {row[0]!r})")
        if times and t < times[-1]:
            raise ConfigError(f"{where}: timestamp_s goes backwards ({t:g} after {times[-1]:g}); the rows must be in "
                              "arrival order")
        times.append(t)
        prompts.append(_length(row[1].strip(), "prompt_len", where))
        outputs.append(_length(row[2].strip(), "output_len", where))
    if not times:
        raise ConfigError(f"{path}: the trace has a header but no rows")
    start = times[0]
    return Trace(str(path), tuple(t - start for t in times), tuple(prompts), tuple(outputs),
                 sha256=hashlib.sha256(data).hexdigest())


def check_trace_fits(trace: Trace, num_requests: int, max_model_len: int) -> None:
    """The first `num_requests` rows must exist and each must fit max_model_len (one line naming the bad row)."""
    if num_requests > trace.num_rows:
        raise ConfigError(f"num_requests {num_requests}: the trace {trace.path} has only {trace.num_rows} rows "
                          "(a trace defines its requests; ask for at most that many)")
    for i in range(num_requests):
        need = trace.prompt_lens[i] + trace.output_lens[i]
        if need > max_model_len:
            raise ConfigError(f"{trace.path}:{i + 2}: prompt_len + output_len = {need} > max_model_len "
                              f"{max_model_len} (raise --max-model-len or drop the row)")
