"""Generate `bursty-small.csv`, the trace `workloads/trace-bursty.toml` replays: calm traffic broken by bursts.

Arrivals alternate calm phases (Poisson, CALM_RATE req/s) and short bursts (Poisson, BURST_RATE req/s); lengths are
lognormal, drawn by pabench's own `LengthDist`. Seeded and deterministic: `tests/bench/test_trace.py` regenerates
the file and compares it byte for byte. Run: `.venv/bin/python workloads/traces/make_trace.py [--out PATH]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pabench.bench.trace import TRACE_HEADER
from pabench.bench.workloads import LengthDist

SEED = 18  # issue 18
NUM_ROWS = 240
CALM_RATE, CALM_S = 40.0, 0.5  # req/s, seconds per calm phase
BURST_RATE, BURST_S = 400.0, 0.08  # req/s, seconds per burst
PROMPT = LengthDist("lognormal", 24, sigma=0.6, min=4, max=128)
OUTPUT = LengthDist("lognormal", 12, sigma=0.5, min=2, max=48)


def arrivals(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` arrival times (s, from 0): exponential gaps at the rate of the phase each arrival falls in."""
    times = [0.0]
    t, phase_end, bursting = 0.0, CALM_S, False
    while len(times) < n:
        t += rng.exponential(1.0 / (BURST_RATE if bursting else CALM_RATE))
        if t >= phase_end:  # the phase is over: the next one starts at its boundary (memoryless gaps)
            t, bursting = phase_end, not bursting
            phase_end = t + (BURST_S if bursting else CALM_S)
            continue
        times.append(t)
    return np.asarray(times)  # [n]


def make_trace(seed: int = SEED, num_rows: int = NUM_ROWS) -> str:
    """The trace CSV's text: header, then `timestamp_s,prompt_len,output_len` rows (times to the millisecond)."""
    rng = np.random.default_rng(seed)
    times = arrivals(rng, num_rows)  # [num_rows]
    prompts, outputs = PROMPT.sample(rng, num_rows), OUTPUT.sample(rng, num_rows)  # [num_rows] each
    rows = [",".join(TRACE_HEADER)] + [f"{t:.3f},{p},{o}" for t, p, o in zip(times, prompts, outputs)]
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("bursty-small.csv")), help="where to write")
    args = parser.parse_args()
    Path(args.out).write_text(make_trace(), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
