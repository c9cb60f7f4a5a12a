"""Presentation of `pabench kernels` rows: the table and the closing summary lines.

The rows are plain dicts (`kernelbench` measures them); this module only shows them, with the serving tables'
`FitTable`, so a narrow terminal stacks the columns instead of cutting numbers.
"""

from __future__ import annotations

from rich.markup import escape

from pabench.report.fit import Column, FitTable

_KEYS = (("case", "case", "{}"), ("impl", "impl", "{}"), ("page", "page_size", "{}"))
_VALUES = (("batch", "batch", "{}"), ("ctx", "mean_context", "{:.0f}"), ("median µs", "median_us", "{:.1f}"),
           ("p10", "p10_us", "{:.1f}"), ("p90", "p90_us", "{:.1f}"), ("GB/s", "gbps", "{:.0f}"),
           ("% copy", "pct_of_copy_bw", "{:.1f}"), ("paged/contig", "paged_over_contiguous", "{:.3f}"),
           ("rel err", "rel_err", "{:.1e}"), ("fp8 err", "kv_quant_err", "{:.1e}"), ("check", "check", "{}"))


def _cells(rows: list[dict], key: str, fmt: str) -> list[str]:
    return ["-" if row.get(key) is None else escape(fmt.format(row[key])) for row in rows]


def _check_cell(row: dict) -> str:
    if row.get("error"):
        return f"[red]{escape(str(row.get('check', 'ERROR')))}: {escape(row['error'][:60])}[/red]"
    if row.get("check") == "FAIL":
        return "[red]FAIL[/red]"
    return "-" if row.get("check") is None else escape(str(row["check"]))


def kernel_table(rows: list[dict], width: int | None = None) -> FitTable:
    """One line per row, hyperfine-like timing columns; split over stacked tables when the console is narrow."""
    timings = sorted({str(r["timing"]) for r in rows if r.get("timing")})
    keys = [Column(title, _cells(rows, key, fmt), justify="left" if title != "page" else "right")
            for title, key, fmt in _KEYS]
    values = [Column(title, [_check_cell(r) for r in rows] if key == "check" else _cells(rows, key, fmt),
                     justify="left" if key == "check" else "right") for title, key, fmt in _VALUES
              if key != "kv_quant_err" or any(r.get(key) is not None for r in rows)]  # fp8 runs only
    return FitTable(keys, values, title="decode attention kernels" + (f" (timing: {', '.join(timings)})"
                                                                        if timings else ""), width=width)


def kernel_summary(rows: list[dict]) -> list[str]:
    """Closing lines: triton-paged's share of copy bandwidth per case, paged/contiguous, and peers' speed."""
    lines = []
    for case in dict.fromkeys(r["case"] for r in rows):
        case_rows = [r for r in rows if r["case"] == case and "median_us" in r]
        paged = [r for r in case_rows if r["impl"] == "triton-paged"]
        for row in paged:
            ratio = row.get("paged_over_contiguous")
            text = (f"({case}) page {row['page_size']}: triton-paged reaches {row['pct_of_copy_bw']:.1f}% "
                    "of copy bandwidth")
            lines.append(text + (f"; paged/contiguous = {ratio:.3f}" if ratio else ""))
        if paged:
            mine = min(r["median_us"] for r in paged)
            for peer in (r for r in case_rows if r["impl"] not in ("triton-paged", "triton-contiguous")):
                speed = peer["median_us"] / mine
                lines.append(f"({case}) triton-paged (best page size) is {max(speed, 1 / speed):.2f}x "
                             f"{'faster' if speed >= 1 else 'slower'} than {peer['impl']}"
                             + (f" at page {peer['page_size']}" if peer.get("page_size") else ""))
        if not paged and case_rows:
            best = min(case_rows, key=lambda r: r["median_us"])
            lines.append(f"({case}) fastest: {best['impl']} at {best['median_us']:.1f} µs")
    lines += [f"({r['case']}) {r['impl']} page {r.get('page_size')}: {r.get('check', 'ERROR')} "
              f"{r.get('error', '')}".rstrip() for r in rows if r.get("check") in ("FAIL", "ERROR") or r.get("error")]
    lines += sorted({r["note"] for r in rows if r.get("note")})
    return lines
