"""`pabench compare`, `check` and `plot`: the commands that read exports back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pabench.cli.app import app, err_console, friendly, out_console


# ---------------------------------------------------------------------------------------------- compare / check
@app.command()
@friendly
def compare(
    a: Annotated[Path, typer.Argument(help="First export (CSV or JSON from `pabench run`).")],
    b: Annotated[Path, typer.Argument(help="Second export.")],
) -> None:
    """Side-by-side of two exports, with B/A ratios, run by run on the full configuration.

    Runs whose configurations differ (or a file with two rows of one configuration) are still shown: each such
    pairing is one warning line on stderr."""
    from pabench.report.compare import compare_table
    from pabench.report.export import read_results

    err = err_console()
    table = compare_table(read_results(a), read_results(b), names=(str(a), str(b)),
                          on_warning=lambda line: err.print(f"warning: {line}", markup=False, soft_wrap=True))
    out_console().print(table)


@app.command()
@friendly
def check(
    result: Annotated[Path, typer.Argument(help="The export to check (CSV or JSON).")],
    baseline: Annotated[Path, typer.Option(help="The export it must not be worse than.")],
    max_regression: Annotated[str, typer.Option(
        help="Timing tolerance, e.g. 10% or 0.1; a repeated run's spread or interval widens it (see --timing).")
    ] = "10%",
    metrics: Annotated[Optional[str], typer.Option(
        help="Comma-separated metrics to check, e.g. mean_waste_pct,num_preemptions. Default: every deterministic "
             "one the baseline has (memory, preemptions, schedule).")] = None,
    timing: Annotated[bool, typer.Option(
        "--timing", help="Also check throughput, TTFT/TPOT/ITL/E2E p50 and p99 and wall time: a change fails when "
                         "it exceeds max(--max-regression, either file's <metric>_spread_pct from `run --repeat N "
                         "--same-seed`, both files' <metric>_ci95 from `run --repeat N` combined, relative).")
    ] = False,
    allow_config_mismatch: Annotated[bool, typer.Option(
        "--allow-config-mismatch", help="Pair runs by backend (and sweep columns) even when their configurations "
                                        "differ, for a deliberate cross-config comparison.")] = False,
) -> None:
    """The CI guard: exit 2 when a run got worse than the baseline, 1 on an input problem, 0 otherwise.

    Deterministic metrics (memory, preemptions, schedule) must not get worse at all; timing only when asked.

    Exit 2 (regression): a metric got worse, or a run or metric column of the baseline is missing from RESULT.

    Exit 1 (input problem): an unreadable file, a --metrics name the baseline lacks, or a non-numeric cell.

    Also exit 1: two rows of one configuration in one file, or a baseline run matching no config in RESULT.
    """
    from pabench.report.compare import check_regressions, parse_tolerance
    from pabench.report.export import read_results

    chosen = tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None
    if metrics is not None and not chosen:
        from pabench.errors import ConfigError

        raise ConfigError(f"--metrics {metrics!r}: name at least one metric")
    regressions, table = check_regressions(read_results(result), read_results(baseline),
                                           parse_tolerance(max_regression), chosen, timing=timing,
                                           allow_config_mismatch=allow_config_mismatch,
                                           names=(str(result), str(baseline)))
    out = out_console()
    out.print(table)
    if regressions:
        out.print(f"{len(regressions)} regression(s):", markup=False)
        for r in regressions:
            out.print(f"  {r}", markup=False)
        raise typer.Exit(2)
    out.print("no regression")


# ---------------------------------------------------------------------------------------------- plot
@app.command()
@friendly
def plot(
    result: Annotated[list[Path], typer.Argument(
        help="CSVs from `pabench sweep` or `pabench run --csv` (several are concatenated, e.g. one sweep per GPU "
             "call).")],
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", help="Image to write: .png, .pdf or .svg (the extension picks the format). Default: the "
                               "first CSV's path with .png.")] = None,
    kernels: Annotated[Optional[Path], typer.Option(
        "--kernels", help="A `pabench kernels --csv` file: kernel µs vs page size.")] = None,
) -> None:
    """Plot the panels a result CSV supports: throughput vs budget, KV waste, latency vs rate, page-size trade-off."""
    from pabench.atomic import check_outputs
    from pabench.plot.figure import image_format, plot_results, require_matplotlib
    from pabench.report.export import read_results

    target = output if output is not None else str(result[0].with_suffix(".png"))
    check_outputs({"--output": target}, {f"input {i + 1}": path for i, path in enumerate(result)}
                  | ({"--kernels": kernels} if kernels is not None else {}))
    image_format(target)  # an extension matplotlib cannot write fails before anything is read
    require_matplotlib()  # before reading anything: one clear line when the extra is missing
    import pandas as pd

    frame = pd.concat([read_results(path) for path in result], ignore_index=True)
    kernel_frame = None
    if kernels is not None:
        try:
            kernel_frame = pd.read_csv(kernels)
        except (OSError, ValueError, pd.errors.ParserError) as error:
            from pabench.errors import ConfigError

            raise ConfigError(f"{kernels}: cannot read kernel results: {error}") from None
    path, panels = plot_results(frame, target, kernel_frame)
    out_console().print(f"wrote {path} ({len(panels)} panels: {', '.join(panels)})", markup=False)
