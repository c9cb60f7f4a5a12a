"""`pabench explain` (a guided tour of paging on the real block manager) and `pabench workloads`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pabench.cli.app import app, err_console, friendly, out_console, workloads_app

SCENARIO_NAMES = ("tour", "prefix-sharing", "parallel-sampling", "beam-search", "preemption", "fragmentation")


# ---------------------------------------------------------------------------------------------- explain
@app.command()
@friendly
def explain(
    scenario: Annotated[str, typer.Option("--scenario", "-s", help=f"One of: {', '.join(SCENARIO_NAMES)}.")] = "tour",
    step: Annotated[bool, typer.Option(
        "--step", help="Wait for Enter between steps; q quits. Needs a terminal on stdin (else every step is "
                       "shown).")] = False,
) -> None:
    """Walk through what vLLM's memory manager does, step by step, on the real block manager (no GPU needed)."""
    from pabench.explain import run_scenario
    from pabench.explain.render import LEGEND, render_plain, render_rich

    steps = run_scenario(scenario)
    out = out_console()
    coloured = out.is_terminal
    if coloured:
        out.print(LEGEND, style="dim", markup=False)
    else:
        typer.echo(LEGEND + "\n")
    for index, one in enumerate(steps):
        if coloured:
            out.print(render_rich(one, index, len(steps), out.width))
        else:
            typer.echo(render_plain(one, index, len(steps)))
        if step and index + 1 < len(steps) and not _wait_for_enter(index + 1, len(steps)):
            return


def stdin_is_terminal() -> bool:
    """Whether a person can answer the --step prompt (a pipe or file on stdin cannot)."""
    return sys.stdin is not None and sys.stdin.isatty()


def _wait_for_enter(done: int, total: int) -> bool:
    """The --step prompt after step `done` of `total`: True to go on; False on q or end of input (both said).
    Without a terminal on stdin there is no one to answer, so nobody is prompted and every step is shown."""
    if not stdin_is_terminal():
        return True
    err = err_console()
    err.print(f"[dim]Enter: step {done + 1}/{total}, q: quit[/] ", end="")
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):  # end of input (Ctrl-D): the terminal echoed no newline
        err.print()
    if not answer:
        err.print(f"(end of input: stopped after step {done} of {total})")
        return False
    if answer.strip().lower() in ("q", "quit"):
        err.print(f"(stopped after step {done} of {total})")
        return False
    return True


# ---------------------------------------------------------------------------------------------- workloads
@workloads_app.callback()
@friendly
def workloads(ctx: typer.Context) -> None:
    """List the workload presets with their key parameters."""
    if ctx.invoked_subcommand is not None:
        return
    from pabench.report.tables import workloads_table
    from pabench.bench.presets import list_presets

    out_console().print(workloads_table(list_presets()))


@workloads_app.command("show")
@friendly
def workloads_show(name: Annotated[str, typer.Argument(help="Preset name or TOML file.")]) -> None:
    """Print one workload: its parameters and the length distributions it draws."""
    from pabench.report.tables import workload_detail
    from pabench.bench.presets import load_workload

    out_console().print(workload_detail(load_workload(name)))
