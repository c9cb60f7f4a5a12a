"""Report: rich tables for the terminal (serving runs, sweeps, kernel timings), the CSV/JSON exports and their
reading back, compare/check, vLLM-format result files (--save-result) and the per-request CSV (--requests-csv)."""

from pabench.report.compare import check_regressions, compare_table, parse_tolerance
from pabench.report.export import read_results, result_row, results_frame, sweep_frame, write_csv, write_json
from pabench.report.fit import Column, FitTable
from pabench.report.kernels import kernel_summary, kernel_table
from pabench.report.requests import requests_frame, write_requests_csv
from pabench.report.tables import capacity_line, prefix_line, run_table, summary_line, sweep_summary, sweep_table
from pabench.report.vllm_result import vllm_result, write_vllm_results

__all__ = ["Column", "FitTable", "capacity_line", "check_regressions", "compare_table", "kernel_summary",
           "kernel_table", "parse_tolerance", "prefix_line", "read_results", "requests_frame", "result_row",
           "results_frame", "run_table", "summary_line", "sweep_frame", "sweep_summary", "sweep_table", "vllm_result",
           "write_csv", "write_json", "write_requests_csv", "write_vllm_results"]
