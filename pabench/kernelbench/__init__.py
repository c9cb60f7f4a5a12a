"""`pabench kernels`: decode-attention cases (data), their timing and the run (`report.kernels` shows the rows)."""

from pabench.kernelbench.run import NAMED_CASES, CaseSpec, KernelBenchConfig, case_lengths, run_kernel_bench
from pabench.kernelbench.timing import capture_graph, copy_bandwidth_gbps, time_us

__all__ = ["NAMED_CASES", "CaseSpec", "KernelBenchConfig", "capture_graph", "case_lengths", "copy_bandwidth_gbps",
           "run_kernel_bench", "time_us"]
