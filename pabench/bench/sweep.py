"""`run_sweep`: `pabench run`'s engine over a grid of page sizes, KV budgets, request rates and batch limits.

The result is one tidy frame, one row per (point, backend), hyperfine-style: a `sweep_*` column per swept
parameter, then every column of `pabench.report.tables.result_row`. The swept values travel in `RunConfig.extra`, so
they are part of each result's config. Contiguous backends reserve tokens, not pages: the page size cannot change
what they do, so they run once per point of the OTHER parameters, with `sweep_page_size` left empty (NaN in the
CSV) and `page_size` 1 (token granularity), instead of being re-run, identically, at every page size.
"""

from __future__ import annotations

import gc
import itertools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

from pabench.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table

    from pabench.bench.runner import RunConfig

SWEEP_COLUMNS = ("sweep_page_size", "sweep_kv_budget_bytes", "sweep_rate", "sweep_max_num_seqs")
SweepProgress = Callable[[str, int, int], None]  # (what runs now, requests finished, total requests)


def budget_text(num_bytes: float, sep: str = " ") -> str:
    """'64 MiB' or '512 KiB': a swept KV budget as it was most likely typed."""
    if num_bytes >= 2**30:
        return f"{num_bytes / 2**30:g}{sep}GiB"
    if num_bytes >= 2**20:
        return f"{num_bytes / 2**20:g}{sep}MiB"
    return f"{num_bytes / 2**10:g}{sep}KiB"


def _check_values(name: str, values: tuple | None, *, integral: bool) -> None:
    if values is None:
        return
    if not values:
        raise ConfigError(f"{name}: no value given")
    if len(set(values)) != len(values):
        raise ConfigError(f"{name}: a value is listed twice in {values}")
    for v in values:
        if (integral and not isinstance(v, int)) or not v > 0 or (isinstance(v, float) and not math.isfinite(v)):
            raise ConfigError(f"{name}: every value must be a positive {'integer' if integral else 'number'}, "
                              f"got {v!r}")


@dataclass(frozen=True)
class SweepPoint:
    """One combination of swept values; None = not swept (the base config's value) or, for the page size of a
    contiguous run, not applicable."""

    page_size: int | None = None
    kv_budget_bytes: int | None = None
    rate: float | None = None
    max_num_seqs: int | None = None

    def config(self, base: RunConfig, swept: tuple[str, ...], backends: tuple[str, ...]) -> RunConfig:
        """`base` with this point's values and `backends`; the swept columns go to `extra` (NaN = not applicable)."""
        extra = dict(base.extra)
        for column in swept:
            value = getattr(self, column.removeprefix("sweep_"))
            extra[column] = math.nan if value is None else value
        changes: dict[str, Any] = {"backends": backends, "extra": extra}
        if self.page_size is not None:
            changes["page_size"] = self.page_size
        if self.kv_budget_bytes is not None:
            changes.update(kv_budget_bytes=self.kv_budget_bytes, num_pages=None)
        if self.rate is not None:
            changes["rate"] = self.rate
        if self.max_num_seqs is not None:
            changes["max_num_seqs"] = self.max_num_seqs
        return replace(base, **changes)

    def label(self) -> str:
        """'page_size=8 kv_budget=64MiB' (swept values only), for the progress bar."""
        parts = []
        if self.page_size is not None:
            parts.append(f"page_size={self.page_size}")
        if self.kv_budget_bytes is not None:
            parts.append(f"kv_budget={budget_text(self.kv_budget_bytes, sep='')}")
        if self.rate is not None:
            parts.append(f"rate={self.rate:g}/s")
        if self.max_num_seqs is not None:
            parts.append(f"max_num_seqs={self.max_num_seqs}")
        return " ".join(parts) or "base config"


@dataclass(frozen=True)
class SweepGrid:
    """The values to sweep; a None field is not swept (every run uses the base config's value)."""

    page_sizes: tuple[int, ...] | None = None
    kv_budgets: tuple[int, ...] | None = None  # bytes
    rates: tuple[float, ...] | None = None  # requests/s (Poisson arrivals)
    max_num_seqs: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _check_values("page sizes", self.page_sizes, integral=True)
        _check_values("KV budgets", self.kv_budgets, integral=True)
        _check_values("rates", self.rates, integral=False)
        _check_values("max-num-seqs", self.max_num_seqs, integral=True)
        for p in self.page_sizes or ():
            if p & (p - 1) or p > 256:
                raise ConfigError(f"page size must be a power of two in [1, 256], got {p}")

    @property
    def swept(self) -> tuple[str, ...]:
        """The `sweep_*` columns this grid produces."""
        values = (self.page_sizes, self.kv_budgets, self.rates, self.max_num_seqs)
        return tuple(c for c, v in zip(SWEEP_COLUMNS, values) if v is not None)

    @property
    def num_points(self) -> int:
        """Combinations of swept values (1 when nothing is swept)."""
        return math.prod(len(v) for v in (self.page_sizes, self.kv_budgets, self.rates, self.max_num_seqs) if v)

    def plan(self, backends: tuple[str, ...]) -> list[tuple[SweepPoint, tuple[str, ...]]]:
        """(point, backends to run there), page size innermost; contiguous backends once per other point."""
        paged = tuple(b for b in backends if b.startswith("paged"))
        others = tuple(b for b in backends if not b.startswith("paged"))
        runs = []
        for budget, rate, seqs in itertools.product(self.kv_budgets or (None,), self.rates or (None,),
                                                    self.max_num_seqs or (None,)):
            if self.page_sizes is None:
                runs.append((SweepPoint(None, budget, rate, seqs), tuple(backends)))
                continue
            if others:
                runs.append((SweepPoint(None, budget, rate, seqs), others))
            if paged:
                runs += [(SweepPoint(p, budget, rate, seqs), paged) for p in self.page_sizes]
        return runs


def run_sweep(grid: SweepGrid, base: RunConfig, on_progress: SweepProgress | None = None,
              keep: list | None = None, failures: list | None = None) -> pd.DataFrame:
    """Run every (point, backend) of `grid` over `base`; one row per run, `sweep_*` columns first.

    `keep`, when given, receives every run's full `Result` (for the JSON export with per-request samples).
    Every point's input is checked before the first run. A run that fails at run time (a pabench error, the
    device out of memory) does not stop the sweep: it goes into `failures` (a `BackendFailure` per run), or,
    when no list is given, the first one is raised after every other run has finished."""
    import pandas as pd

    from pabench.bench.metrics import build_result
    from pabench.report.tables import result_row
    from pabench.bench.runner import as_failure, prepare, run_backend

    plan = [(point, point.config(base, grid.swept, backends)) for point, backends in grid.plan(base.backends)]
    num_runs = sum(len(cfg.backends) for _, cfg in plan)  # configs built (and validated) before anything runs
    rows: list[dict[str, Any]] = []
    done, total = 0, None
    model = None  # built once, reused by every point whose model config matches
    ready = []
    for point, cfg in plan:  # every point's input is checked before the first run: bad input fails fast
        try:
            prepared = prepare(cfg, model=model)  # checks that every request fits every backend
        except ConfigError as error:
            raise ConfigError(f"sweep point {point.label()}: {error}") from None
        model = prepared.model
        ready.append((point, cfg, prepared))
    failed = [] if failures is None else failures
    for point, cfg, prepared in ready:
        num_requests = len(prepared.requests)
        total = total or num_runs * num_requests
        for backend in cfg.backends:
            label = f"{backend} {point.label()}"

            def progress(_name: str, finished: int, _n: int, _label: str = label) -> None:
                on_progress(_label, done + finished, total)

            try:
                record = run_backend(prepared, backend, progress if on_progress else None)
            except Exception as error:  # noqa: BLE001 - as_failure re-raises what is not an expected failure
                failed.append(as_failure(label, error))
                gc.collect()
            else:
                result = build_result(record)
                rows.append(result_row(result))
                if keep is not None:
                    keep.append(result)
            done += num_requests
            if on_progress is not None:
                on_progress(label, done, total)
        del prepared
        gc.collect()
    if failures is None and failed:
        raise ConfigError(str(failed[0]))
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    first = [c for c in grid.swept if c in frame.columns] + ["backend"]
    return frame[first + [c for c in frame.columns if c not in first]]


# ---- terminal ---------------------------------------------------------------------------------------------

_TABLE_METRICS = (("output_tok_per_s", "out tok/s", 1), ("ttft_p50_ms", "TTFT p50 ms", 1),
                  ("ttft_p99_ms", "TTFT p99 ms", 1), ("tpot_p50_ms", "TPOT p50 ms", 2),
                  ("mean_waste_pct", "KV waste %", 1), ("num_preemptions", "preempt", 0), ("wall_s", "wall s", 2))


def _cell(column: str, value: Any, digits: int = 1) -> str:
    """A table cell: '–' for missing, budgets in MiB, counts as integers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column == "sweep_kv_budget_bytes":
        return budget_text(value)
    if column in ("sweep_page_size", "sweep_max_num_seqs") or digits == 0:
        return str(int(value))
    if column == "sweep_rate":
        return f"{value:g}"
    return f"{value:,.{digits}f}"


def sweep_table(frame: pd.DataFrame) -> Table:
    """Compact rich table: swept values, backend, throughput, latency, waste, preemptions, wall time."""
    from rich import box
    from rich.table import Table

    swept = [c for c in SWEEP_COLUMNS if c in frame.columns]
    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    for column in swept:
        table.add_column(column.removeprefix("sweep_").replace("_bytes", "").replace("_", " "), justify="right")
    table.add_column("backend", style="bold")
    metrics = [m for m in _TABLE_METRICS if m[0] in frame.columns]
    for _, header, _ in metrics:
        table.add_column(header, justify="right")
    for _, row in frame.iterrows():
        table.add_row(*[_cell(c, row[c]) for c in swept], str(row["backend"]),
                      *[_cell(c, row[c], digits) for c, _, digits in metrics])
    return table


def sweep_summary(frame: pd.DataFrame) -> str:
    """'paged served 2.31× the output tokens/s of contiguous-max (geometric mean over 6 matched runs), ...'.

    Each paged row is matched with the contiguous row of the same budget, rate and max_num_seqs (every page
    size of paged against the one contiguous run there).
    """
    keys = [c for c in SWEEP_COLUMNS if c in frame.columns and c != "sweep_page_size"]
    paged_names = [b for b in dict.fromkeys(frame["backend"]) if str(b).startswith("paged")]
    others = [b for b in dict.fromkeys(frame["backend"]) if not str(b).startswith("paged")]
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
