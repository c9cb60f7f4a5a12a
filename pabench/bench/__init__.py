"""The library API behind `pabench run` and `sweep`: workloads and their presets, the runner, the sweep, metrics,
goodput, and the comparability contract a result states."""

from pabench.bench.contract import comparability
from pabench.bench.goodput import GoodputSpec
from pabench.bench.metrics import PERCENTILES, LatencyView, Result, Stats, build_result
from pabench.bench.presets import list_presets, load_workload
from pabench.bench.repeat import Repeated, run_repeated
from pabench.bench.runner import RunConfig, prepare, run_benchmark
from pabench.bench.sweep import SweepGrid, run_sweep
from pabench.bench.workloads import LengthDist, Request, SharedPrefix, WorkloadSpec, generate

__all__ = ["PERCENTILES", "GoodputSpec", "LatencyView", "LengthDist", "Repeated", "Request", "Result", "RunConfig",
           "SharedPrefix", "Stats", "SweepGrid", "WorkloadSpec", "build_result", "comparability", "generate",
           "list_presets", "load_workload", "prepare", "run_benchmark", "run_repeated", "run_sweep"]
