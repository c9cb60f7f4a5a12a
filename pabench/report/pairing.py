"""Pair the rows of two exports run by run, on the full configuration, for `compare` and `check`.

Two rows are the same run when backend, every setting that shapes the run (workload, model, sizes, budget, page
size, scheduler knobs, seed, ...) and every `sweep_*` column agree; a cell that does not apply (NaN) equals NaN.
A file with two rows of one configuration is ambiguous, and a baseline row whose configuration no current row
has, while a current row of that backend exists, is a mismatch: both are refused with a one-line reason, since
comparing across configurations silently is how a guard passes what it did not check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from pabench.errors import ConfigError

# The settings a run is identified by (columns a `pabench run` / `sweep` export carries; `seeds`: a mean over
# `run --repeat` seeds is another run than one seed's). Outcomes (token_match_*),
# the date, the commit and the derived `capacity_*` columns are not part of a run's identity.
CONFIG_COLUMNS = ("workload", "model", "layers", "dtype", "kv_dtype", "device", "seed", "num_requests",
                  "kv_budget_bytes", "num_pages", "page_size", "max_num_seqs", "max_model_len", "max_batched_tokens",
                  "min_prefill_seqs", "prefix_caching", "watermark", "attn_impl", "cuda_graphs", "async_scheduling",
                  "arrival", "rate", "seeds", "tensor_parallel")
Mismatch = Literal["error", "warn", "allow"]


def _is_sweep(column: str) -> bool:
    return column.startswith(("sweep_", "config_"))


def key_columns(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """Backend, the config columns both exports have (an older export may lack a newer setting), and every
    sweep/config_ column either has (a sweep point missing from one file is a different run)."""
    sweep = [c for c in dict.fromkeys([*a.columns, *b.columns]) if _is_sweep(c)]
    return ["backend", *[c for c in CONFIG_COLUMNS if c in a.columns and c in b.columns], *sweep]


def key_value(value: Any) -> Any:
    """A comparable, hashable cell: NaN/None/'' as None, numbers as float (16 == 16.0 == '16'), 'True' as True."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        text = value.strip()
        if text in ("True", "False"):
            return text == "True"
        try:
            value = float(text) if text else None
        except ValueError:
            return text
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return None if math.isnan(value) else float(value)
    return str(value)


def _text(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Pair:
    """One baseline run and the current run it is compared with (None: missing from the current export)."""

    run: str  # backend and the settings that tell runs apart, e.g. "paged sweep_page_size=16"
    baseline: pd.Series
    current: pd.Series | None


@dataclass
class Pairing:
    """Every baseline run paired, the current-only runs, and the mismatches that were allowed (one line each)."""

    pairs: list[Pair]
    extra: list[tuple[str, pd.Series]]  # current runs with no baseline run
    warnings: list[str] = field(default_factory=list)


class _Side:
    """One export's rows, keyed; duplicates refused (or, for `compare`, reported and the first kept)."""

    def __init__(self, frame: pd.DataFrame, name: str, keys: list[str], loose: list[str], mismatch: Mismatch,
                 warnings: list[str]) -> None:
        self.rows: list[tuple[int, tuple, tuple, pd.Series]] = []
        seen: dict[tuple, int] = {}
        for number, (_, row) in enumerate(frame.iterrows(), start=1):
            key = tuple(key_value(row.get(k)) for k in keys)
            if key in seen:
                message = (f"{name}: rows {seen[key]} and {number} are the same run ({row['backend']}, same "
                           f"configuration): ambiguous pairing (one row per configuration per file)")
                if mismatch != "warn":
                    raise ConfigError(message)
                warnings.append(f"{message}; showing row {seen[key]}")
                continue
            seen[key] = number
            self.rows.append((number, key, tuple(key_value(row.get(k)) for k in loose), row))


def pair_runs(baseline: pd.DataFrame, current: pd.DataFrame, *, names: tuple[str, str] = ("baseline", "current"),
              mismatch: Mismatch = "error") -> Pairing:
    """Pair each baseline row with the current row of the same configuration.

    mismatch: 'error' raises ConfigError on a mismatched pair; 'allow' pairs by backend and sweep columns;
    'warn' does that and records one warning line per mismatch (and per duplicate, keeping the first row)."""
    keys = key_columns(baseline, current)
    loose = ["backend", *[k for k in keys if _is_sweep(k)]]
    warnings: list[str] = []
    base = _Side(baseline, names[0], keys, loose, mismatch, warnings)
    now = _Side(current, names[1], keys, loose, mismatch, warnings)
    label_keys = _label_columns(baseline, current, keys)
    exact = {key: row for _, key, _, row in now.rows}
    used = {key for _, key, _, _ in base.rows if key in exact}
    pairs: list[Pair] = []
    for _, key, loose_key, row in base.rows:
        run = _label(row, label_keys)
        if key in exact:
            pairs.append(Pair(run, row, exact[key]))
            continue
        candidates = [(k, r) for _, k, lk, r in now.rows if lk == loose_key and k not in used]
        if not candidates:
            pairs.append(Pair(run, row, None))
            continue
        diff = min((_differences(row, r, keys) for _, r in candidates), key=len)
        reason = (f"{run}: the current run's configuration differs from the baseline's in "
                  f"{', '.join(f'{c} ({b} vs {n})' for c, b, n in diff)}")
        if mismatch == "error":
            raise ConfigError(f"{reason}; compare like with like, or pass --allow-config-mismatch")
        if len(candidates) > 1:
            message = (f"{reason}, and {names[1]} has {len(candidates)} unmatched {run} rows to pair it with: "
                       "ambiguous pairing")
            if mismatch == "allow":
                raise ConfigError(message)
            warnings.append(f"{message}; showing the first")
        elif mismatch == "warn":
            warnings.append(f"{reason}; compared anyway")
        used.add(candidates[0][0])
        pairs.append(Pair(run, row, candidates[0][1]))
    extra = [(_label(r, label_keys), r) for _, k, _, r in now.rows if k not in used]
    return Pairing(pairs, extra, warnings)


def _differences(a: pd.Series, b: pd.Series, keys: list[str]) -> list[tuple[str, str, str]]:
    """(column, a's value, b's value) for every key column where the two rows differ."""
    out = []
    for k in keys:
        va, vb = key_value(a.get(k)), key_value(b.get(k))
        if va != vb:
            out.append((k, _text(va), _text(vb)))
    return out


def _label_columns(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> list[str]:
    """Key columns worth naming in a run's label: sweep columns, and settings that vary between rows of one
    backend in either file (a paged row's page size beside a contiguous row's n/a tells no runs apart)."""
    def varies(frame: pd.DataFrame, column: str) -> bool:
        return column in frame.columns and any(len({key_value(v) for v in rows}) > 1
                                               for _, rows in frame.groupby("backend", dropna=False)[column])

    return [k for k in keys[1:] if _is_sweep(k)] + [k for k in keys[1:] if not _is_sweep(k) and (varies(a, k)
                                                                                                  or varies(b, k))]


def _label(row: pd.Series, columns: list[str]) -> str:
    return " ".join([str(row["backend"]), *(f"{c}={_text(key_value(row.get(c)))}" for c in columns)])
