"""Report: rich tables and summary lines for the terminal, the flat CSV export (`export_json.py` writes the JSON;
`compare.py` reads both back).

Everything here returns tables or strings; the CLI prints them (results on stdout). Exports are flat: one row per
backend (and swept setting), units in column names, the run's config and the pabench version/commit beside the
numbers, so a CSV read back with pandas can be compared or checked (`pabench.report.compare`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Group
from rich.table import Table

import pabench
from pabench.atomic import atomic_write_text
from pabench.errors import ConfigError
from pabench.engine.records import RunRecord
from pabench.bench.metrics import Result, Stats, build_result, is_missing, metric_row
from pabench.bench.workloads import WorkloadSpec

HIGHER_IS_BETTER = ("output_tok_per_s", "total_tok_per_s", "req_per_s")
LOWER_IS_BETTER = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "e2e_p50_s", "e2e_p99_s",
                   "mean_waste_pct", "num_preemptions")
CHECKED_METRICS = HIGHER_IS_BETTER + LOWER_IS_BETTER  # what `pabench.report.compare` looks at
META_COLUMNS = ("pabench_version", "git_commit")
# Export columns that hold text. `read_results` reads them as text: pandas would otherwise parse a commit such as
# "3e92438" as the float 3e92438 (= inf) and "1234567" as an int.
TEXT_COLUMNS = frozenset({"backend", "date", "workload", "model", "device", "dtype", "attn_impl", "arrival",
                          "token_match_vs", *META_COLUMNS})
_METRIC_COLUMNS = frozenset(metric_row(build_result(RunRecord(backend="", config={}))))
_MIB, _GIB = 2**20, 2**30


# ---- formatting -------------------------------------------------------------------------------------------

def format_bytes(num_bytes: float) -> str:
    """'0 B', '512.0 KiB', '64.0 MiB', '1.50 GiB'."""
    if is_missing(num_bytes):
        return "–"
    if abs(num_bytes) >= _GIB:
        return f"{num_bytes / _GIB:.2f} GiB"
    if abs(num_bytes) >= _MIB:
        return f"{num_bytes / _MIB:.1f} MiB"
    if abs(num_bytes) >= 1024:
        return f"{num_bytes / 1024:.1f} KiB"
    return f"{num_bytes:.0f} B"


def _num(value: Any, digits: int = 1) -> str:
    """A number with `digits` decimals and thousands separators; '–' for missing."""
    return "–" if is_missing(value) else f"{value:,.{digits}f}"


def _cell(value: Any) -> str:
    """A table cell for an exported value: whole numbers without decimals, others with two."""
    if is_missing(value):
        return "–"
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:,.2f}"


@lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit of the repo pabench runs from, or 'unknown' (never raises)."""
    if os.environ.get("PABENCH_COMMIT"):  # set by scripts that run a copy of the tree without .git (a GPU box)
        return os.environ["PABENCH_COMMIT"]
    root = Path(pabench.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return "unknown"
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


# ---- terminal ---------------------------------------------------------------------------------------------

def run_table(results: list[Result]) -> Group:
    """Two compact tables, one row per backend: serving (throughput, latency, concurrency) and KV memory."""
    serving = Table(box=box.SIMPLE_HEAD, header_style="bold", title="serving", title_justify="left")
    memory = Table(box=box.SIMPLE_HEAD, header_style="bold", title="KV memory (token-level, mean over steps)",
                   title_justify="left")
    for t in (serving, memory):
        t.add_column("backend", justify="left", style="bold", no_wrap=True)
    for header in ("out tok/s", "req/s", "TTFT p50", "TTFT p99", "TPOT p50", "E2E p50", "batch mean/max",
                   "preempt", "wall"):
        serving.add_column(header, justify="right", no_wrap=True)
    for header in ("waste %", "used %", "slack %", "idle %", "peak reserved", "saved by sharing", "prefix hit %"):
        memory.add_column(header, justify="right", no_wrap=True)
    for r in results:
        serving.add_row(r.backend, _num(r.output_tok_s), _num(r.req_s, 2), _ms(r.ttft_s.p50), _ms(r.ttft_s.p99),
                        _ms(r.tpot_s.p50), f"{_num(r.e2e_s.p50, 2)} s",
                        f"{_num(r.concurrency.mean)} / {r.peak_concurrency}", str(r.num_preemptions),
                        f"{_num(r.wall_s, 1)} s")
        memory.add_row(r.backend, _num(r.mean_waste_pct), _num(r.mean_used_pct), _num(r.mean_slack_pct),
                       _num(r.mean_idle_pct), format_bytes(r.peak_reserved_bytes), format_bytes(r.peak_saved_bytes),
                       _num(100 * r.prefix_hit_rate))
    return Group(serving, memory)


def _ms(seconds: float) -> str:
    return "–" if is_missing(seconds) else f"{seconds * 1e3:,.1f} ms"


def summary_line(results: list[Result]) -> str:
    """'paged served 3.12× the output tokens/s of contiguous-max (and 1.41× contiguous-oracle), with ...'."""
    paged = next((r for r in results if r.backend.startswith("paged")), None)
    others = [r for r in results if r.backend.startswith("contiguous")]
    if paged is None or not others:
        best = max(results, key=lambda r: -math.inf if is_missing(r.output_tok_s) else r.output_tok_s,
                   default=None)
        if best is None:
            return "no results"
        return (f"only {', '.join(r.backend for r in results)} ran: best {best.backend} "
                f"at {_num(best.output_tok_s)} output tok/s (nothing to compare paged against)")

    def ratio(other: Result) -> str:
        if is_missing(paged.output_tok_s) or is_missing(other.output_tok_s) or other.output_tok_s <= 0:
            return "n/a×"
        return f"{paged.output_tok_s / other.output_tok_s:.2f}×"

    first, rest = others[0], others[1:]
    line = f"{paged.backend} served {ratio(first)} the output tokens/s of {first.backend}"
    if rest:
        line += " (and " + ", ".join(f"{ratio(o)} {o.backend}" for o in rest) + ")"
    if not any(is_missing(v) for v in (paged.output_tok_s, first.output_tok_s)) \
            and paged.output_tok_s < first.output_tok_s:
        line += ", i.e. it was slower"
    return line + f", with {_num(paged.mean_waste_pct)}% KV waste vs {_num(first.mean_waste_pct)}% for {first.backend}."


def capacity_line(capacity: dict[str, Any]) -> str:
    """'KV budget 64.0 MiB = 1,024 pages × 16 tokens = 16,384 tokens = 8 sequences at max_model_len 2,048'.

    Reads `kv_budget_bytes`, `num_pages`, `page_size`, `num_tokens`, `max_model_len`, `max_len_seqs` and
    `bytes_per_token`; missing ones are derived when possible or left out, other keys are appended as `key value`.
    """
    known = ("kv_budget_bytes", "num_pages", "page_size", "num_tokens", "max_model_len", "max_len_seqs",
             "bytes_per_token")
    pages, page_size = capacity.get("num_pages"), capacity.get("page_size")
    tokens = capacity.get("num_tokens", pages * page_size if pages and page_size else None)
    max_len = capacity.get("max_model_len")
    seqs = capacity.get("max_len_seqs", tokens // max_len if tokens and max_len else None)
    parts = [f"KV budget {format_bytes(capacity['kv_budget_bytes'])}" if "kv_budget_bytes" in capacity
             else "KV budget"]
    if pages is not None and page_size is not None:
        parts.append(f"{pages:,} pages × {page_size} tokens")
    if tokens is not None:
        parts.append(f"{tokens:,} tokens")
    if seqs is not None and max_len is not None:
        parts.append(f"{seqs:,} sequence{'' if seqs == 1 else 's'} at max_model_len {max_len:,}")
    extra = [f"{format_bytes(capacity['bytes_per_token'])} per token"] if "bytes_per_token" in capacity else []
    extra += [f"{k} {v}" for k, v in capacity.items() if k not in known]
    return " = ".join(parts) + (f" ({', '.join(extra)})" if extra else "")


# ---- exports ----------------------------------------------------------------------------------------------

def _flat_value(value: Any) -> Any:
    """Scalars as they are, anything else as sorted JSON text (one CSV cell)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def result_row(result: Result) -> dict[str, Any]:
    """One flat export row: backend, config keys, metrics, `capacity_*`, version and commit.

    A config key that is also a metric name keeps the measured value; if the config differs it is kept as
    `config_<key>`.
    """
    metrics = metric_row(result)
    row: dict[str, Any] = {"backend": result.backend}
    for key, value in result.config.items():
        if key == "backend":
            continue
        if key in metrics:
            if value != metrics[key]:
                row[f"config_{key}"] = _flat_value(value)
            continue
        row[key] = _flat_value(value)
    row.update(metrics)
    row.update({f"capacity_{k}": _flat_value(v) for k, v in result.capacity.items()})
    row.update(pabench_version=pabench.__version__, git_commit=git_commit())
    return row


def results_frame(results: list[Result]) -> pd.DataFrame:
    """One row per result, flat columns with units in their names (see `result_row`)."""
    return pd.DataFrame([result_row(r) for r in results])


def write_csv(results: list[Result], path: str | Path) -> Path:
    """Write `results_frame(results)` as CSV, atomically (parent directories created)."""
    return atomic_write_text(path, results_frame(results).to_csv(index=False))


def read_results(path: str | Path) -> pd.DataFrame:
    """Read an export back (CSV, or JSON's `rows`) as a frame; ConfigError if it is not a pabench export."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            frame = pd.DataFrame(json.loads(path.read_text(encoding="utf-8"))["rows"])
        else:
            frame = pd.read_csv(path, dtype={column: str for column in TEXT_COLUMNS})
    except (OSError, ValueError, KeyError, TypeError, pd.errors.ParserError) as error:
        raise ConfigError(f"{path}: cannot read results: {error}") from None
    if "backend" not in frame.columns:
        raise ConfigError(f"{path}: not a pabench export (no 'backend' column)")
    return frame


# ---- workloads ----------------------------------------------------------------------------------------------

def workloads_table(specs: list[WorkloadSpec]) -> Table:
    """The presets: name, arrivals, count, samples, prompt/output lengths, shared prefix (`show` has the rest)."""
    table = Table(box=box.SIMPLE_HEAD, header_style="bold",
                  caption="lengths: kind ~mean, spread, \\[min-max] after clipping. More: pabench workloads show NAME")
    for header in ("name", "arrival", "requests", "n", "prompt", "output", "shared prefix", "max len"):
        table.add_column(header, justify="right" if header in ("requests", "n", "max len") else "left",
                         no_wrap=header not in ("prompt", "output"))
    for s in specs:
        prefix = f"{s.shared_prefix.num_prefixes} × {s.shared_prefix.length}" if s.shared_prefix else "–"
        table.add_row(s.name, s.arrival_text(), str(s.num_requests), str(s.num_samples), s.prompt.short(),
                      s.output.short(), prefix, str(s.max_request_len))
    return table


def workload_detail(spec: WorkloadSpec, num_draws: int = 4096) -> Table:
    """Every setting of one workload plus the sampled length statistics (`num_draws` draws with its seed)."""
    table = Table(box=box.SIMPLE_HEAD, show_header=False, title=f"{spec.name}: {spec.description}",
                  title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    prefix = (f"{spec.shared_prefix.num_prefixes} prompts × {spec.shared_prefix.length} tokens"
              if spec.shared_prefix else "none")
    rng = np.random.default_rng(spec.seed)
    for key, value in (("file", spec.source or "–"), ("requests", str(spec.num_requests)),
                       ("arrival", spec.arrival_text()), ("samples per request", str(spec.num_samples)),
                       ("seed", str(spec.seed)), ("shared prefix", prefix), ("prompt", spec.prompt.short()),
                       ("output", spec.output.short()), ("longest request", f"{spec.max_request_len} tokens")):
        table.add_row(key, value)
    for name, dist in (("prompt", spec.prompt), ("output", spec.output)):
        st = Stats.from_samples(dist.sample(rng, num_draws))
        table.add_row(f"{name} sampled", f"mean {st.mean:.1f}  p50 {st.p50:.0f}  p90 {st.p90:.0f}  "
                                         f"p99 {st.p99:.0f}  max {st.max:.0f}  ({num_draws} draws)")
    return table
