"""Rich tables and summary lines for the terminal: a run's serving and memory tables, its summary and
capacity lines, the workload presets. Everything here returns tables or strings; the CLI prints them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Group
from rich.table import Table

from pabench.backends import is_paged
from pabench.bench.metrics import LatencyView, Result, Stats, is_missing, percentile_column, percentile_ms
from pabench.bench.repeat import Repeated, seeds_text
from pabench.bench.sweep import SWEEP_COLUMNS
from pabench.bench.workloads import WorkloadSpec
from pabench.report.fit import Column, FitTable
from pabench.units import format_bytes


# ---- formatting -------------------------------------------------------------------------------------------

def _num(value: Any, digits: int = 1) -> str:
    """A number with `digits` decimals and thousands separators; '–' for missing."""
    return "–" if is_missing(value) else f"{value:,.{digits}f}"


def cell(value: Any) -> str:
    """A table cell for an exported value: whole numbers without decimals, others with two."""
    if is_missing(value):
        return "–"
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:,.2f}"



# ---- terminal ---------------------------------------------------------------------------------------------

def run_table(results: list[Result], width: int | None = None, view: LatencyView | None = None) -> Group:
    """Two tables, one row per backend: serving (throughput, goodput with --goodput, latency, concurrency) and KV
    memory. `view` picks the latency columns (default: TTFT p50/p99, TPOT p50, E2E p50). A mean over seeds
    (`run --repeat`) shows `mean ± 95% CI` in the main columns. Each fits `width` (default: the console's) by
    splitting its columns over stacked tables, never by cutting a cell."""
    backend = [Column("backend", [r.backend for r in results], "left", "bold")]
    serving = [("out tok/s", lambda r: _pm(r, "output_tok_per_s", r.output_tok_s)),
               ("req/s", lambda r: _pm(r, "req_per_s", r.req_s, 2))]
    if any(r.goodput is not None for r in results):
        serving += [("goodput req/s", lambda r: _pm(r, "request_goodput", r.request_goodput, 2)),
                    ("SLO met %", lambda r: _pm(r, "slo_attainment_pct", r.slo_attainment_pct))]
    serving += [("batch mean/max", lambda r: f"{_pm(r, 'concurrency_mean', r.concurrency.mean)} / "
                                             f"{_count(r, 'peak_concurrency', r.peak_concurrency)}"),
                ("preempt", lambda r: _count(r, "num_preemptions", r.num_preemptions)),
                ("wall", lambda r: _pm(r, "wall_s", r.wall_s, 1, " s"))]
    serving += _latency_columns(view)
    memory = [("waste %", lambda r: _pm(r, "mean_waste_pct", r.mean_waste_pct)),
              ("used %", lambda r: _pm(r, "mean_used_pct", r.mean_used_pct)),
              ("slack %", lambda r: _pm(r, "mean_slack_pct", r.mean_slack_pct)),
              ("idle %", lambda r: _pm(r, "mean_idle_pct", r.mean_idle_pct)),
              ("peak reserved", lambda r: format_bytes(r.peak_reserved_bytes)),
              ("saved by sharing", lambda r: format_bytes(r.peak_saved_bytes)),
              # a contiguous cache has no prefix cache: n/a, not 0.0
              ("prefix hit %", lambda r: _num(100 * r.prefix_hit_rate) if is_paged(r.backend) else "n/a")]

    def columns(specs: list[tuple[str, Callable[[Result], str]]]) -> list[Column]:
        return [Column(header, [fn(r) for r in results]) for header, fn in specs]

    return Group(FitTable(backend, columns(serving), title="serving", width=width),
                 FitTable(backend, columns(memory), title="KV memory (token-level, mean over steps)", width=width))


def _pm(result: Result, column: str, value: float, digits: int = 1, unit: str = "", ci_scale: float = 1.0) -> str:
    """A cell: '1,234.5' with `digits` and `unit`; '1,234.5 ± 12.3' when `result` is a mean over seeds with an
    interval for export column `column` (its half-width times `ci_scale`, into the cell's unit); '–' if missing."""
    if is_missing(value):
        return "–"
    ci = result.ci95.get(column)
    spread = "" if ci is None or is_missing(ci) else f" ± {ci * ci_scale:,.{digits}f}"
    return f"{value:,.{digits}f}{spread}{unit}"


def _count(result: Result, column: str, value: float) -> str:
    """A count: an integer as it is, a mean over seeds with one decimal (and its interval)."""
    ci = result.ci95.get(column)
    if isinstance(value, (int, np.integer)) and (ci is None or is_missing(ci) or ci == 0):
        return f"{value:,}"
    return _pm(result, column, value)


_HEADERS = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2E"}


def _latency_columns(view: LatencyView | None) -> list[tuple[str, Callable[[Result], str]]]:
    """The serving table's latency columns: pabench's own four, or each (metric, percentile) of `view` in ms."""
    if view is None:
        return [("TTFT p50", lambda r: _pm(r, "ttft_p50_ms", r.ttft_s.p50 * 1e3, 1, " ms")),
                ("TTFT p99", lambda r: _pm(r, "ttft_p99_ms", r.ttft_s.p99 * 1e3, 1, " ms")),
                ("TPOT p50", lambda r: _pm(r, "tpot_p50_ms", r.tpot_s.p50 * 1e3, 1, " ms")),
                ("E2E p50", lambda r: _pm(r, "e2e_p50_ms", r.e2e_s.p50, 2, " s", ci_scale=1e-3))]
    return [(f"{_HEADERS[m]} p{p:g}", lambda r, m=m, p=p: _pm(r, percentile_column(m, p), percentile_ms(r, m, p), 1,
                                                               " ms"))
            for m in view.metrics for p in view.percentiles]


def summary_line(results: list[Result], repeated: Repeated | None = None) -> str:
    """'paged served 3.12× the output tokens/s of contiguous-max (and 0.92× contiguous-oracle: slower), with ...':
    every baseline paged lost to is marked slower. With `repeated` over seeds each ratio is taken per seed, then
    given as mean ± 95% CI (': within noise' when the interval holds 1). A `prefix_line` follows on a second
    line when that pair ran."""
    paged = next((r for r in results if is_paged(r.backend) and r.backend != "paged-reprefill"), None)
    others = [r for r in results if not is_paged(r.backend)]
    extra = [line for line in (prefix_line(results), reprefill_line(results)) if line]
    tail = "".join(f"\n{line}" for line in extra)
    if paged is None or not others:
        best = max(results, key=lambda r: -math.inf if is_missing(r.output_tok_s) else r.output_tok_s,
                   default=None)
        if best is None:
            return "no results"
        return (f"only {', '.join(r.backend for r in results)} ran: best {best.backend} "
                f"at {_pm(best, 'output_tok_per_s', best.output_tok_s)} output tok/s (nothing to compare paged "
                "against)" + tail)
    over_seeds = repeated is not None and not repeated.same_seed and len(repeated.runs) > 1

    def versus(other: Result) -> tuple[str, str]:
        """('2.10×', ''), ('0.72×', ': slower') when paged lost to `other`; over seeds ('1.02× ± 0.05', ...)."""
        paired = repeated.ratio(paged.backend, other.backend) if over_seeds else None
        if paired is not None and paired.n > 1:
            noise = paired.includes(1.0)
            verdict = ": within noise" if noise else ": slower" if round(paired.mean, 2) < 1 else ""
            return f"{paired.mean:.2f}× ± {paired.ci95:.2f}", verdict
        value = _ratio(paged.output_tok_s, other.output_tok_s)
        return ("n/a×", "") if value is None else (f"{value:.2f}×", ": slower" if round(value, 2) < 1 else "")

    first, rest = others[0], others[1:]
    ratio, slower = versus(first)
    line = f"{paged.backend} served {ratio} the output tokens/s of {first.backend}{slower}"
    if rest:
        phrases = []
        for other in rest:
            other_ratio, other_slower = versus(other)
            phrases.append(f"{other_ratio} {other.backend}{other_slower}")
        line += f" (and {', '.join(phrases)})"
    line += (f", with {_pm(paged, 'mean_waste_pct', paged.mean_waste_pct)}% KV waste vs "
             f"{_pm(first, 'mean_waste_pct', first.mean_waste_pct)}% for {first.backend}")
    if over_seeds:
        line += f" (mean and 95% CI over seeds {seeds_text(list(repeated.seeds))}; each ratio taken per seed)"
    return line + "." + tail


def _ratio(a: float, b: float) -> float | None:
    """a / b, or None when either is missing or b is not positive."""
    return None if is_missing(a) or is_missing(b) or b <= 0 else a / b


def reprefill_line(results: list[Result]) -> str | None:
    """When beams ran both in place (a paged backend) and re-admitted every step (`paged-reprefill`, vLLM v1):
    the throughput ratio and the tokens the re-admissions computed again; None otherwise."""
    by_name = {r.backend: r for r in results}
    again = by_name.get("paged-reprefill")
    held = next((r for r in results if is_paged(r.backend) and r.backend != "paged-reprefill"), None)
    if again is None or held is None or not held.num_forks:
        return None
    ratio = _ratio(held.output_tok_s, again.output_tok_s)
    shown = "n/a" if ratio is None else f"{ratio:.2f}"
    return (f"beams held in place ({held.backend}) served {shown}× the output tokens/s of re-admitting them every "
            f"step (paged-reprefill, vLLM v1's way), which computed {again.recomputed_tokens:,} tokens again.")


def prefix_line(results: list[Result]) -> str | None:
    """When both `paged+prefix` and `paged-noprefix` ran: what prefix caching bought (throughput ratio, prompt
    tokens served from the cache, bytes saved by sharing); None otherwise."""
    by_name = {r.backend: r for r in results}
    on, off = by_name.get("paged+prefix"), by_name.get("paged-noprefix")
    if on is None or off is None:
        return None
    value = _ratio(on.output_tok_s, off.output_tok_s)
    speed = "n/a×" if value is None else f"{value:.2f}×" + (" (slower)" if value < 1 else "")
    return (f"prefix caching: paged+prefix served {speed} the output tokens/s of paged-noprefix, with "
            f"{_num(100 * on.prefix_hit_rate)}% of prompt tokens from the cache and "
            f"{format_bytes(on.peak_saved_bytes)} saved by sharing at peak (vs {format_bytes(off.peak_saved_bytes)}).")


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
        n = f"{s.beam_width} beams" if s.beam_width > 1 else str(s.num_samples)
        table.add_row(s.name, s.arrival_text(), str(s.num_requests), n, s.prompt.short(),
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
                       ("beam search", f"width {spec.beam_width}, length_penalty {spec.length_penalty:g}"
                        if spec.beam_width > 1 else "no (greedy)"),
                       ("seed", str(spec.seed)), ("shared prefix", prefix), ("prompt", spec.prompt.short()),
                       ("output", spec.output.short()), ("longest request", f"{spec.max_request_len} tokens")):
        table.add_row(key, value)
    for name, dist in (("prompt", spec.prompt), ("output", spec.output)):
        if spec.trace is not None:  # a trace's lengths are its rows: described, not drawn
            lengths = spec.trace.prompt_lens if name == "prompt" else spec.trace.output_lens
            st, label, count = Stats.from_samples(np.asarray(lengths)), f"{name} in the trace", f"{len(lengths)} rows"
        else:
            st, label, count = Stats.from_samples(dist.sample(rng, num_draws)), f"{name} sampled", f"{num_draws} draws"
        table.add_row(label, f"mean {st.mean:.1f}  p50 {st.p50:.0f}  p90 {st.p90:.0f}  "
                             f"p99 {st.p99:.0f}  max {st.max:.0f}  ({count})")
    return table


# ---- sweeps ------------------------------------------------------------------------------------------------

_TABLE_METRICS = (("output_tok_per_s", "out tok/s", 1), ("request_goodput", "goodput req/s", 2),
                  ("slo_attainment_pct", "SLO met %", 1), ("ttft_p50_ms", "TTFT p50 ms", 1),
                  ("ttft_p99_ms", "TTFT p99 ms", 1), ("tpot_p50_ms", "TPOT p50 ms", 2),
                  ("mean_waste_pct", "KV waste %", 1), ("num_preemptions", "preempt", 0), ("wall_s", "wall s", 2))


def _sweep_cell(column: str, value: Any, digits: int = 1) -> str:
    """A table cell: '–' for missing (None, NaN or pandas' NA), budgets in MiB, counts as integers."""
    if value is None or pd.isna(value):
        return "–"
    if isinstance(value, str):  # sweep_kv_dtype
        return value
    if column == "sweep_kv_budget_bytes":
        return format_bytes(value, exact=True)
    if column in ("sweep_page_size", "sweep_max_num_seqs") or digits == 0:
        return str(int(value))
    if column == "sweep_rate":
        return f"{value:g}"
    return f"{value:,.{digits}f}"


def sweep_table(frame: pd.DataFrame, width: int | None = None) -> FitTable:
    """Swept values and backend, then throughput, latency, waste, preemptions, wall time; split over stacked
    tables (swept values and backend repeated) where `width` (default: the console's) is too narrow."""
    swept = [c for c in SWEEP_COLUMNS if c in frame.columns]
    rows = [row for _, row in frame.iterrows()]
    keys = [Column(c.removeprefix("sweep_").replace("_bytes", "").replace("_", " "),
                   [_sweep_cell(c, row[c]) for row in rows]) for c in swept]
    keys.append(Column("backend", [str(row["backend"]) for row in rows], "left", "bold"))
    values = [Column(header, [_sweep_cell(c, row[c], digits) for row in rows])
              for c, header, digits in _TABLE_METRICS if c in frame.columns]
    return FitTable(keys, values, width=width)


def sweep_summary(frame: pd.DataFrame) -> str:
    """'paged served 2.31× the output tokens/s of contiguous-max (geometric mean over 6 matched runs), ...'.

    Each paged row is matched with the contiguous row of the same budget, rate and max_num_seqs (every page
    size of paged against the one contiguous run there).
    """
    keys = [c for c in SWEEP_COLUMNS if c in frame.columns and c != "sweep_page_size"]
    paged_names = [b for b in dict.fromkeys(frame["backend"]) if is_paged(b)]
    others = [b for b in dict.fromkeys(frame["backend"]) if not is_paged(b)]
    if not paged_names or not others:
        return f"{len(frame)} runs; nothing to compare paged against"
    paged = frame[frame["backend"] == paged_names[0]]
    parts = []
    for other in others:
        merged = paged.merge(frame[frame["backend"] == other], on=keys, suffixes=("", "_o")) if keys else \
            paged.merge(frame[frame["backend"] == other], how="cross", suffixes=("", "_o"))
        ratios = (merged["output_tok_per_s"] / merged["output_tok_per_s_o"]).dropna()
        ratios = ratios[ratios > 0]
        if len(ratios):
            geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
            parts.append(f"{geomean:.2f}× the output tokens/s of {other}")
    if not parts:
        return "no comparable runs"
    return (f"{paged_names[0]} served " + ", ".join(parts)
            + f" (geometric mean over {len(paged)} {paged_names[0]} run(s), matched on the other swept values).")


def slo_table(findings: list, slo) -> Table:
    """`sweep --slo`: per backend and point, the highest rate a run met every target at, and the lowest that
    missed (the bracket the bisection left)."""
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", title=f"highest request rate meeting {slo.text()}",
                  title_justify="left", caption="each max rate was run and met every target; a rate between it and "
                                                "the first miss was not tested")
    kv = any(f.point.kv_dtype for f in findings)  # a kv dtype column only when kv dtypes were swept
    for header in ("backend", "KV budget", *(("kv dtype",) if kv else ()), "page size", "max_num_seqs",
                   "max rate req/s", "first miss req/s", "probes"):
        table.add_column(header, justify="left" if header == "backend" else "right")
    for f in findings:
        p = f.point
        table.add_row(f.backend, format_bytes(p.kv_budget_bytes, exact=True) if p.kv_budget_bytes else "–",
                      *((p.kv_dtype or "–",) if kv else ()), str(p.page_size or "–"), str(p.max_num_seqs or "–"),
                      "none" if f.max_rate is None else f"{f.max_rate:g}",
                      "none (all met)" if f.min_failing_rate is None else f"{f.min_failing_rate:g}", str(f.num_probes))
    return table
