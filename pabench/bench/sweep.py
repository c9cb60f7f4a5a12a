"""`run_sweep`: `pabench run`'s engine over a grid of page sizes, KV budgets, KV dtypes, request rates and batch
limits.

It measures and returns one `Result` per (point, backend); `pabench.report` lays them out (one tidy frame,
hyperfine-style: a `sweep_*` column per swept parameter, then every column of `result_row`). The swept values
travel in `RunConfig.extra`, so they are part of each result's config. Contiguous backends reserve tokens, not
pages: the page size cannot change what they do, so they run once per point of the OTHER parameters, with
`sweep_page_size` left empty (NaN in the CSV) and `page_size` 1 (token granularity), instead of being re-run,
identically, at every page size. `search_slo` (`sweep --slo`) then bisects between the swept rates for the highest
rate each backend sustains within latency targets.
"""

from __future__ import annotations

import gc
import itertools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

from pabench.backends import is_paged
from pabench.errors import ConfigError
from pabench.units import check_kv_dtype, check_page_size, format_bytes

if TYPE_CHECKING:
    from pabench.bench.metrics import Result
    from pabench.bench.runner import RunConfig

SWEEP_COLUMNS = ("sweep_page_size", "sweep_kv_budget_bytes", "sweep_kv_dtype", "sweep_rate", "sweep_max_num_seqs")
SweepProgress = Callable[[str, int, int], None]  # (what runs now, requests finished, total requests)


def _check_values(name: str, values: tuple | None, *, integral: bool) -> None:
    if values is None:
        return
    if not values:
        raise ConfigError(f"{name}: no value given")
    if len(set(values)) != len(values):
        raise ConfigError(f"{name}: a value is listed twice in {values}")
    for v in values:
        if (integral and not isinstance(v, int)) or not v > 0 or (isinstance(v, float) and not math.isfinite(v)):
            hint = " (inf, every request at t=0, is run's --request-rate inf)" if v == math.inf else ""
            raise ConfigError(f"{name}: every value must be a positive {'integer' if integral else 'number'}, "
                              f"got {v!r}{hint}")


@dataclass(frozen=True)
class SweepPoint:
    """One combination of swept values; None = not swept (the base config's value) or, for the page size of a
    contiguous run, not applicable."""

    page_size: int | None = None
    kv_budget_bytes: int | None = None
    rate: float | None = None
    max_num_seqs: int | None = None
    kv_dtype: str | None = None  # "auto" or "fp8": how pages and slabs store K/V

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
        if self.kv_dtype is not None:
            changes["kv_dtype"] = self.kv_dtype
        return replace(base, **changes)

    def label(self) -> str:
        """'page_size=8 kv_budget=64MiB' (swept values only), for the progress bar."""
        parts = []
        if self.page_size is not None:
            parts.append(f"page_size={self.page_size}")
        if self.kv_budget_bytes is not None:
            parts.append(f"kv_budget={format_bytes(self.kv_budget_bytes, exact=True, sep='')}")
        if self.kv_dtype is not None:
            parts.append(f"kv_dtype={self.kv_dtype}")
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
    kv_dtypes: tuple[str, ...] | None = None  # the KV storage dtypes: paging's lever beside fp8's, on one grid

    def __post_init__(self) -> None:
        if self.kv_dtypes is not None:
            if not self.kv_dtypes or len(set(self.kv_dtypes)) != len(self.kv_dtypes):
                raise ConfigError(f"kv dtypes: give distinct values, got {self.kv_dtypes}")
            for name in self.kv_dtypes:
                check_kv_dtype(name)
        _check_values("page sizes", self.page_sizes, integral=True)
        _check_values("KV budgets", self.kv_budgets, integral=True)
        _check_values("rates", self.rates, integral=False)
        _check_values("max-num-seqs", self.max_num_seqs, integral=True)
        for p in self.page_sizes or ():
            check_page_size(p)

    @property
    def _axes(self) -> tuple[tuple | None, ...]:
        """Every axis's values (None: not swept), in SWEEP_COLUMNS order."""
        return self.page_sizes, self.kv_budgets, self.kv_dtypes, self.rates, self.max_num_seqs

    @property
    def swept(self) -> tuple[str, ...]:
        """The `sweep_*` columns this grid produces."""
        return tuple(c for c, v in zip(SWEEP_COLUMNS, self._axes) if v is not None)

    @property
    def num_points(self) -> int:
        """Combinations of swept values (1 when nothing is swept)."""
        return math.prod(len(v) for v in self._axes if v)

    def plan(self, backends: tuple[str, ...]) -> list[tuple[SweepPoint, tuple[str, ...]]]:
        """(point, backends to run there), page size innermost; contiguous backends once per other point."""
        paged = tuple(b for b in backends if is_paged(b))
        others = tuple(b for b in backends if not is_paged(b))
        runs = []
        for budget, kv, rate, seqs in itertools.product(self.kv_budgets or (None,), self.kv_dtypes or (None,),
                                                        self.rates or (None,), self.max_num_seqs or (None,)):
            if self.page_sizes is None:
                runs.append((SweepPoint(None, budget, rate, seqs, kv), tuple(backends)))
                continue
            if others:
                runs.append((SweepPoint(None, budget, rate, seqs, kv), others))
            if paged:
                runs += [(SweepPoint(p, budget, rate, seqs, kv), paged) for p in self.page_sizes]
        return runs


def hold_budget(grid: SweepGrid, base: RunConfig) -> tuple[SweepGrid, Any]:
    """A sweep over max_num_seqs keeps one KV budget unless budgets are swept too: run's budget for `base` (its
    default, room for max_num_seqs / 8 sequences at the BASE max_num_seqs, would otherwise move with each point),
    as a one-value budget column, so the table says what every point ran with. Returns the grid and the model
    prepared to size it (None when nothing was held), for `run_sweep` to reuse."""
    from pabench.bench.runner import prepare

    if not grid.max_num_seqs or grid.kv_budgets or base.num_pages is not None:
        return grid, None
    try:
        anchor = prepare(base)
    except ConfigError as error:
        raise ConfigError(f"sweep: the KV budget held over --max-num-seqs: {error}") from None
    return replace(grid, kv_budgets=(anchor.kv_budget_bytes,)), anchor.model


def run_sweep(grid: SweepGrid, base: RunConfig, on_progress: SweepProgress | None = None,
              failures: list | None = None, model: Any = None) -> list[Result]:
    """Run every (point, backend) of `grid` over `base`; one `Result` per run, in plan order, whose config
    carries the point's `sweep_*` values (`pabench.report.export.sweep_frame` lays them out as the tidy CSV).

    Every point's input is checked before the first run. A run that fails at run time (a pabench error, the
    device out of memory) does not stop the sweep: it goes into `failures` (a `BackendFailure` per run), or,
    when no list is given, the first one is raised after every other run has finished. Ctrl-C stops the sweep
    and returns the finished runs (config marked `interrupted`), with an interrupted entry in `failures`.
    `model`: a built model to reuse where its config matches (`hold_budget`'s). Progress labels count the runs."""
    from pabench.bench.metrics import build_result
    from pabench.bench.runner import BackendFailure, as_failure, mark_interrupted, prepare, run_backend

    plan = [(point, point.config(base, grid.swept, backends)) for point, backends in grid.plan(base.backends)]
    num_runs = sum(len(cfg.backends) for _, cfg in plan)  # configs built (and validated) before anything runs
    results: list[Result] = []
    done, total, index = 0, None, 0
    ready = []  # the model is built once, reused by every point whose model config matches
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
            index += 1
            label, shown = f"{backend} {point.label()}", f"run {index}/{num_runs}: {backend} {point.label()}"

            def progress(_name: str, finished: int, _n: int, _label: str = shown) -> None:
                on_progress(_label, done + finished, total)

            try:
                record = run_backend(prepared, backend, progress if on_progress else None)
            except KeyboardInterrupt:  # keep the finished runs; the caller writes them marked and exits 130
                if failures is None:  # no list to report the cut into: the caller gets the interrupt
                    raise
                failed.append(BackendFailure(label, "not finished (Ctrl-C)", interrupted=True))
                mark_interrupted(results)
                return results
            except Exception as error:  # noqa: BLE001 - as_failure re-raises what is not an expected failure
                failed.append(as_failure(label, error))
                gc.collect()
            else:
                results.append(build_result(record, cfg.goodput, cfg.percentiles))
            done += num_requests
            if on_progress is not None:
                on_progress(shown, done, total)
        del prepared
        gc.collect()
    if failures is None and failed:
        raise ConfigError(str(failed[0]))
    return results


# ---- the SLO search: the highest rate that meets latency targets (vLLM's `bench sweep serve_sla`) ------------

_STATS = ("mean", "std", "p50", "p90", "p99", "min", "max")
SLO_COLUMNS = frozenset({f"{m}_{s}_ms" for m in ("ttft", "tpot", "itl", "e2e") for s in _STATS} | {
    "output_tok_per_s", "total_tok_per_s", "req_per_s", "request_goodput", "slo_attainment_pct", "num_preemptions",
    "mean_waste_pct"})
_VLLM_METRIC = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2el": "e2e"}
ProbeFn = Callable[[float], "bool | None"]  # run at this rate: did it meet the SLO (None: the run failed)


@dataclass(frozen=True)
class SloSpec:
    """Targets on export columns, each `(column, "<=" or ">=", bound)`: a run meets the SLO when every one holds
    (a missing or NaN value does not). vLLM's names are taken too: `p99_ttft_ms` is `ttft_p99_ms`."""

    criteria: tuple[tuple[str, str, float], ...]

    def __post_init__(self) -> None:
        if not self.criteria:
            raise ConfigError("--slo: no target given; expected e.g. ttft_p99_ms<=500,tpot_p99_ms<=50")
        for column, op, bound in self.criteria:
            if column not in SLO_COLUMNS:
                raise ConfigError(f"--slo: unknown column {column!r}; use an export column such as ttft_p99_ms, "
                                  "tpot_p50_ms, e2e_p90_ms, req_per_s or slo_attainment_pct (with --goodput)")
            if op not in ("<=", ">=") or not math.isfinite(bound):
                raise ConfigError(f"--slo: {column}{op}{bound}: expected COLUMN<=NUMBER or COLUMN>=NUMBER")

    @classmethod
    def from_text(cls, text: str) -> SloSpec:
        """Parse 'ttft_p99_ms<=500,tpot_p99_ms<=50' (or vLLM's 'p99_ttft_ms<=500')."""
        criteria = []
        for item in (part.strip() for part in text.split(",")):
            op = "<=" if "<=" in item else ">=" if ">=" in item else None
            column, _, value = item.partition(op) if op else (item, "", "")
            try:
                bound = float(value)
            except ValueError:
                raise ConfigError(f"--slo: {item!r} is not COLUMN<=NUMBER (e.g. ttft_p99_ms<=500)") from None
            criteria.append((_column_name(column.strip()), op, bound))
        return cls(tuple(criteria))

    def text(self) -> str:
        """The targets as the option takes them."""
        return ",".join(f"{column}{op}{bound:g}" for column, op, bound in self.criteria)

    def met(self, row: dict[str, Any]) -> bool:
        """Does an export row (`metric_row`) meet every target?"""
        def holds(value: Any, op: str, bound: float) -> bool:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return False
            return value <= bound if op == "<=" else value >= bound

        return all(holds(row.get(column), op, bound) for column, op, bound in self.criteria)


def _column_name(name: str) -> str:
    """vLLM's `p99_ttft_ms` / `mean_e2el_ms` as pabench's `ttft_p99_ms` / `e2e_mean_ms`; others unchanged."""
    parts = name.split("_")
    if len(parts) == 3 and parts[2] == "ms" and parts[1] in _VLLM_METRIC:
        stat = "p50" if parts[0] == "median" else parts[0]
        return f"{_VLLM_METRIC[parts[1]]}_{stat}_ms"
    return name


@dataclass(frozen=True)
class SloFinding:
    """One backend at one point of the other swept values: the highest rate that met the SLO in a run (None: not
    even the lowest swept rate), the lowest rate tested that missed it (None: every rate met it), the probes run."""

    backend: str
    point: SweepPoint  # the rate field unset
    max_rate: float | None
    min_failing_rate: float | None
    num_probes: int


def bisect_rate(measured: dict[float, bool], probe: ProbeFn, iterations: int) -> tuple[float | None, float | None,
                                                                                        int]:
    """(highest passing rate, lowest failing rate above it, probes run): start from the swept rates' bracket (the
    highest pass below the lowest failure) and halve it, geometrically, `iterations` times, one run per midpoint.
    The rate returned was always run and passed. Assumes latency grows with the rate, as vLLM's search does."""
    failing = [r for r, ok in measured.items() if not ok]
    hi = min(failing, default=None)
    passing = [r for r, ok in measured.items() if ok and (hi is None or r < hi)]
    lo = max(passing, default=None)
    probes = 0
    while lo is not None and hi is not None and probes < iterations:
        mid = float(f"{math.sqrt(lo * hi):.4g}")  # the geometric midpoint: rates are swept over ratios
        if mid in (lo, hi):
            break
        probes += 1
        ok = probe(mid)
        if ok is None:  # the run failed: keep what was measured
            break
        lo, hi = (mid, hi) if ok else (lo, mid)
    return lo, hi, probes


def search_slo(grid: SweepGrid, base: RunConfig, slo: SloSpec, results: list[Result], iterations: int = 3,
               failures: list | None = None, on_progress: SweepProgress | None = None,
               ) -> tuple[list[SloFinding], list[Result]]:
    """Per backend and point of the other swept values, the highest rate meeting `slo` (`bisect_rate` over the
    sweep's `results` at `grid.rates`); returns the findings and the probe runs' results (config `slo_probe`).
    Ctrl-C stops the search: what was measured is kept (marked `interrupted`), with an entry in `failures`.
    `on_progress` gets each probe's requests under its label ('slo probe paged rate=7.1/s')."""
    from pabench.bench.metrics import build_result, metric_row
    from pabench.bench.runner import BackendFailure, as_failure, mark_interrupted, prepare, run_backend

    if not grid.rates:
        raise ConfigError("--slo needs --rates: the search bisects between the swept rates")
    groups: dict[tuple, dict[float, bool]] = {}
    for r in results:
        key = (r.backend, *(_finite(r.config.get(c)) for c in SWEEP_COLUMNS if c != "sweep_rate"))
        met = slo.met(metric_row(r))
        r.config.update(slo=slo.text(), slo_met=met, slo_probe=False)
        groups.setdefault(key, {})[float(r.config["sweep_rate"])] = met
    findings, probes_done, model, stopped = [], [], None, False
    for (backend, page_size, budget, kv, seqs), measured in groups.items():
        point = SweepPoint(page_size, budget, None, seqs, kv)

        def probe(rate: float, point: SweepPoint = point, backend: str = backend) -> bool | None:
            nonlocal model, stopped
            if stopped:
                return None
            cfg = replace(point, rate=rate).config(base, grid.swept, (backend,))
            try:
                prepared = prepare(cfg, model=model)
                model = prepared.model
                label = f"slo probe {backend} {replace(point, rate=rate).label()}"
                shown = (lambda _name, done, total: on_progress(label, done, total)) if on_progress else None
                result = build_result(run_backend(prepared, backend, shown), cfg.goodput, cfg.percentiles)
            except KeyboardInterrupt:  # keep what was measured; the caller writes it marked and exits 130
                if failures is None:
                    raise
                stopped = True
                failures.append(BackendFailure(f"{backend} slo probe {rate:g}", "not finished (Ctrl-C)",
                                               interrupted=True))
                mark_interrupted(results + probes_done)
                return None
            except Exception as error:  # noqa: BLE001 - as_failure re-raises what is not an expected failure
                (failures if failures is not None else []).append(as_failure(f"{backend} slo probe {rate:g}", error))
                return None
            met = slo.met(metric_row(result))
            result.config.update(slo=slo.text(), slo_met=met, slo_probe=True)
            probes_done.append(result)
            return met

        lo, hi, n = bisect_rate(measured, probe, iterations)
        findings.append(SloFinding(backend, point, lo, hi, n))
    return findings, probes_done


def _finite(value: Any) -> Any:
    """A swept value, or None for an unswept / not-applicable one (NaN)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value
