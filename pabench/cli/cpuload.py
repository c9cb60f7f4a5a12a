"""Is the CPU shared while a run is timed? Other processes' busy cores, read from /proc/stat around each backend's
run, against the cores torch's threads need; and `--threads N` (torch.set_num_threads).

Under contention a CPU run's TPOT moved ~100x with no notice (issue 18): the warning says what load was seen. The
check is two cheap readings per run (one line of /proc/stat, `os.times()`); `contention` takes readings, so it is
tested without a loaded machine. Where /proc/stat cannot be read (not Linux) there is no check. Torch-free.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from pabench.cli.app import print_warning
from pabench.errors import ConfigError

SLACK_CORES = 0.5  # other processes may use this much more than the cores torch leaves free before a warning
MIN_WINDOW_S = 0.2  # shorter windows are a few clock ticks of /proc/stat: too coarse to judge


@dataclass(frozen=True)
class CpuReading:
    """One sample: wall clock, every CPU's busy time (/proc/stat), this process's CPU time (all its threads), s."""

    wall_s: float
    busy_s: float
    own_s: float


def read_cpu(stat_path: str = "/proc/stat") -> CpuReading | None:
    """Now, or None where /proc/stat cannot be read. Busy = user + nice + system + irq + softirq + steal."""
    try:
        with open(stat_path, encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 8:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    steal = int(fields[8]) if len(fields) > 8 else 0
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    own = os.times()
    return CpuReading(time.monotonic(), (user + nice + system + irq + softirq + steal) / ticks, own.user + own.system)


def other_busy_cores(before: CpuReading, after: CpuReading) -> float:
    """Cores other processes kept busy between two readings, on average (all busy time minus this process's)."""
    wall = after.wall_s - before.wall_s
    if wall <= 0:
        return 0.0
    return max(0.0, (after.busy_s - before.busy_s) - (after.own_s - before.own_s)) / wall


def contention(before: CpuReading | None, after: CpuReading | None, num_cores: int, threads: int,
               what: str) -> str | None:
    """A one-line warning when other processes used more cores than the `threads` torch runs leave free of
    `num_cores` (beyond SLACK_CORES), between `before` and `after`; None when the CPU was not contended."""
    if before is None or after is None or after.wall_s - before.wall_s < MIN_WINDOW_S:
        return None
    other = other_busy_cores(before, after)
    free = max(0, num_cores - threads)
    if other <= free + SLACK_CORES:
        return None
    return (f"warning: other processes kept {other:.1f} of {num_cores} CPU cores busy during {what} ({threads} "
            f"torch thread{'' if threads == 1 else 's'}): its timings are not reliable (rerun on an idle machine, "
            f"or give --threads {max(1, num_cores - round(other))})")


class LoadWatch:
    """Samples the CPU between runs: `seen(label)` on every progress callback, `finish()` after the last; a run's
    window ends when the next label appears. Each contended run's warning goes to `warn`."""

    def __init__(self, threads: int, warn: Callable[[str], None] = print_warning,
                 read: Callable[[], CpuReading | None] = read_cpu, num_cores: int | None = None) -> None:
        self.threads, self.warn, self.read = threads, warn, read
        self.num_cores = num_cores or os.cpu_count() or 1
        self.label: str | None = None
        self.start = read()

    def seen(self, label: str) -> None:
        """A progress callback for `label` (a backend, a sweep run): the previous run, if another, has ended."""
        if label != self.label:
            self._close()
            self.label = label

    def finish(self) -> None:
        """The last run ended."""
        self._close()
        self.label = None

    def _close(self) -> None:
        now = self.read()
        if self.label is not None:
            message = contention(self.start, now, self.num_cores, self.threads, self.label)
            if message:
                self.warn(message)
        self.start = now


def apply_threads(device: str, threads: int | None) -> int:
    """Apply `--threads` (for CPU runs; None keeps torch's default) and return the cores a run's compute needs:
    torch's threads on the CPU, the one host thread that drives a GPU."""
    import torch

    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return 1 if cuda else torch.get_num_threads()
