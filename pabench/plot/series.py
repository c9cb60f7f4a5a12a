"""What a result frame holds for `pabench plot`: which columns vary, and the series the panels draw.

pandas only, no matplotlib: `plot.py` chooses panels with it, `plot_panels.py` draws them from it. A series is
one backend (paged rows split by page size when asked); rows that differ in other swept values are averaged,
over the operating points every series shares (`shared_points`) where a panel has no axis for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pabench import backends

if TYPE_CHECKING:
    import pandas as pd


# ---- what the data supports ---------------------------------------------------------------------------------

def first_column(frame: pd.DataFrame, *names: str) -> str | None:
    """The first of `names` that the frame has with at least one value."""
    return next((n for n in names if n in frame.columns and frame[n].notna().any()), None)


def is_paged(frame: pd.DataFrame) -> pd.Series:
    """Per row: True for a paged backend (the rows that have a page size)."""
    return frame["backend"].map(backends.is_paged).astype(bool)


def page_size_column(frame: pd.DataFrame) -> str | None:
    """The column holding paged rows' page size, if those rows have two or more distinct ones."""
    column = first_column(frame, "sweep_page_size", "page_size")
    if column is None or frame.loc[is_paged(frame), column].nunique() < 2:
        return None
    return column


def varies(frame: pd.DataFrame, *names: str) -> str | None:
    """The first of `names` the frame has (see `first_column`), if it holds two or more distinct values."""
    column = first_column(frame, *names)
    return column if column is not None and frame[column].nunique() > 1 else None


# ---- series -------------------------------------------------------------------------------------------------

def series_labels(frame: pd.DataFrame, by_page_size: bool) -> pd.Series:
    """Series name per row: the backend, plus ' p<page size>' for paged rows when asked and page sizes vary, plus
    ' <kv dtype>' when a sweep's KV dtypes vary (fp8 and bf16 runs are different series, not one mean)."""
    labels = frame["backend"].astype(str)
    if varies(frame, "sweep_kv_dtype"):
        labels = labels + " " + frame["sweep_kv_dtype"].astype(str)
    column = page_size_column(frame) if by_page_size else None
    if column is not None:
        paged = is_paged(frame)
        labels = labels.where(~paged, labels + " p" + frame[column].fillna(0).astype(int).astype(str))
    return labels


POINT_COLUMNS = ("sweep_kv_budget_bytes", "kv_budget_bytes", "sweep_rate", "sweep_max_num_seqs")
_POINT_NAMES = {"sweep_kv_budget_bytes": "KV budgets", "kv_budget_bytes": "KV budgets", "sweep_rate": "rates",
                "sweep_max_num_seqs": "batch limits"}


def _point_text(column: str, value: Any) -> str:
    if column.endswith("kv_budget_bytes"):
        from pabench.units import format_bytes

        return format_bytes(float(value), exact=True)
    return f"{column.removeprefix('sweep_').replace('_', ' ')} {value:g}"


def shared_points(frame: pd.DataFrame, label: pd.Series) -> tuple[pd.DataFrame, pd.Series, str]:
    """The rows (and labels) at the operating points every series ran at, and a note naming them.

    Bar panels average a series over its rows; when the frame spans several KV budgets, rates or batch limits
    and the series ran at different ones, a plain mean would set one backend's 16 GiB run against another's
    mean over 1, 2 and 16 GiB. The note is '' when nothing varies, and says when no point is shared."""
    columns = [c for c in POINT_COLUMNS if c in frame.columns and frame[c].nunique() > 1]
    if "sweep_kv_budget_bytes" in columns and "kv_budget_bytes" in columns:
        columns.remove("kv_budget_bytes")  # a sweep's budget column and the run's own: one point column
    if not columns:
        return frame, label, ""
    keys = frame[columns].fillna(-1).apply(tuple, axis=1)  # [rows] of point tuples
    common = set.intersection(*(set(keys[label == name]) for name in dict.fromkeys(label)))
    if not common:
        return frame, label, "mean over all runs: the series share no operating point"
    keep = keys.isin(common)
    shown = [" / ".join(_point_text(c, v) for c, v in zip(columns, key) if v != -1) for key in sorted(common)]
    if len(common) == 1:
        note = f"at {shown[0]}"
    elif common == set(keys) and len(common) > 3:  # a full grid: name its axes, not every point
        note = "mean over " + " x ".join(f"{frame[c].nunique()} {_POINT_NAMES[c]}" for c in columns)
    else:
        note = "mean over " + (", ".join(shown) if len(shown) <= 3 else f"the {len(shown)} points all ran at")
    return frame[keep], label[keep], note


def mean_by(frame: pd.DataFrame, label: pd.Series, x: str | None, y: str) -> dict[str, Any]:
    """{label: mean of y} (x None) or {label: Series of mean y indexed by sorted x}; rows keep first-seen order."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(label):
        rows = frame[label == name]
        out[name] = rows[y].mean() if x is None else rows.groupby(x)[y].mean().sort_index()
    return out


def kernel_lines(kernels: pd.DataFrame | None) -> dict[str, Any]:
    """{'<impl> (case x)': median µs by page size} for kernel rows swept over >= 2 page sizes.

    When Triton rows are present only they are kept: the trade-off is the paged kernel's cost per page size
    (and its contiguous twin), and peers that are 4-20x slower would flatten the scale."""
    if kernels is None or "page_size" not in kernels.columns:
        return {}
    time = first_column(kernels, "median_us", "mean_us", "time_us") or next(
        (c for c in kernels.columns if str(c).endswith("_us") and kernels[c].notna().any()), None)
    if time is None:
        return {}
    rows = kernels[kernels["page_size"].notna() & kernels[time].notna()]
    if "check" in rows.columns:
        rows = rows[rows["check"].astype(str) != "ERROR"]
    keys = [c for c in ("impl", "case") if c in rows.columns]
    lines: dict[str, Any] = {}
    for key, group in (rows.groupby(keys, sort=False) if keys else [((), rows)]):
        key = key if isinstance(key, tuple) else (key,)
        name = str(key[0]) if key else "kernel"
        if len(key) > 1 and rows["case"].nunique() > 1:
            name += f" (case {key[1]})"
        series = group.groupby("page_size")[time].mean().sort_index()
        if len(series) >= 2:
            lines[name] = series
    if any(name.startswith("triton") for name in lines):
        lines = {name: s for name, s in lines.items() if name.startswith("triton")}
    return lines
