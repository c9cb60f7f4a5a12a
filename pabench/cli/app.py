"""The Typer app and what every command shares: one-line errors, the two consoles, list parsers, progress.

Exit codes: 0 ok, 1 user error (one line on stderr, no traceback, no partial files), 2 regression found.
Nothing heavy is imported at module level: `pabench --help` must not import torch.
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Callable

import typer

from pabench.errors import ConfigError, PabenchError
from pabench.parallel import send_error

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
                  help="Measure what a paged KV cache buys over a contiguous one, on your own GPU or CPU.")
workloads_app = typer.Typer(help="List the workload presets, or show one.", invoke_without_command=True)
app.add_typer(workloads_app, name="workloads")


def _print_version(value: bool) -> None:
    if value:
        import pabench

        print(f"pabench {pabench.__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version, help="Print the version and exit.")] = False) -> None:
    """Measure what a paged KV cache buys over a contiguous one, on your own GPU or CPU."""


def _hide_bool_metavars() -> None:
    """Typer >= 0.2x prints `<bool>` beside every on/off flag (`--progress/--no-progress <bool>`), which reads
    as if the flag took a value: show nothing for flags, as click does."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "pabench_flags_hidden", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.pabench_flags_hidden = True
    TyperOption.display_type_rich = display_type_rich


_hide_bool_metavars()


def print_error(message: str) -> None:
    if not send_error(message):  # a --tensor-parallel rank: the launcher prints the group's one line
        print(f"pabench: error: {message}", file=sys.stderr)


def fail_runs(failures: list, finished: bool) -> None:
    """Runs that failed at run time, one line each, then exit 1. With nothing `finished` there is nothing to
    show or write: the first failure is raised (one line, exit 1), the others printed before it. A Ctrl-C
    (interrupted entries) exits 130 with one line saying what did not finish."""
    if not failures:
        return
    cut = [f.backend for f in failures if getattr(f, "interrupted", False)]
    for f in failures:
        if not getattr(f, "interrupted", False):
            print_error(str(f))
    if cut:
        kept = "the finished runs were written, marked interrupted" if finished else "no result file was written"
        print_error(f"interrupted before {', '.join(cut)} finished; {kept}")
        raise typer.Exit(130)
    raise typer.Exit(1)


def friendly(fn: Callable) -> Callable:
    """Turn expected failures into one line on stderr and exit 1 (130 on Ctrl-C)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PabenchError as e:
            print_error(str(e))
            raise typer.Exit(1)
        except KeyboardInterrupt:
            print_error("interrupted; no result file was written")
            raise typer.Exit(130)
        except FileNotFoundError as e:
            print_error(f"no such file: {e.filename}")
            raise typer.Exit(1)
        except Exception as e:  # noqa: BLE001 - torch OOM and friends deserve one line too
            if type(e).__name__ == "OutOfMemoryError":
                print_error(f"the device ran out of memory: {str(e).splitlines()[0]} (try --kv-budget, --layers or "
                     f"--max-num-seqs)")
                raise typer.Exit(1)
            raise
        finally:
            begin_command()  # the next command in this process (tests) starts afresh

    return wrapper


def out_console(outputs: tuple = ()):
    """Results console. Not a terminal (pipe, file, tests): 140 columns so tables are never truncated. When
    one of `outputs` is `-` (an export to stdout), the tables go to stderr so stdout holds only the export."""
    from rich.console import Console

    stream = sys.stderr if any(str(o) == "-" for o in outputs if o is not None) else sys.stdout
    return Console(highlight=False, file=stream, width=None if stream.isatty() else 140)


_COMMAND: dict = {"quiet": False, "watch": None}  # the run or sweep in progress (reset by `friendly` at its end)


def begin_command(quiet: bool = False, watch=None) -> None:
    """For the command in progress: `--quiet` silences `err_console()` (progress, notes, 'wrote' lines; errors and
    `print_warning` still print), and `watch` (a `cpuload.LoadWatch`) sees every `with_progress` callback."""
    _COMMAND.update(quiet=quiet, watch=watch)


def err_console():
    """The console for progress and notes on stderr (silent under --quiet)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, quiet=_COMMAND["quiet"])


def print_warning(message: str) -> None:
    """A warning that the numbers may not hold (stderr, even under --quiet)."""
    print(f"pabench: {message}", file=sys.stderr)


def number_list(text: str, what: str, kind: type = int) -> tuple:
    """'8,16,32' -> (8, 16, 32) of `kind`; a clear ConfigError naming the option otherwise."""
    try:
        values = tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        noun = "integers" if kind is int else "numbers"
        raise ConfigError(f"{what}: expected comma-separated {noun}, got {text!r}") from None
    if not values:
        raise ConfigError(f"{what}: no value given")
    return values


def int_list(text: str, what: str) -> tuple[int, ...]:
    return number_list(text, what, int)


def float_list(text: str, what: str) -> tuple[float, ...]:
    return number_list(text, what, float)


def with_progress(work: Callable, total: int, enabled: bool, watch=None):
    """Run `work(callback)` under one rich progress bar on stderr (one task per backend); `watch` (default: the
    command's, `begin_command`) sees every callback, bar or not, and is finished when `work` returns."""
    watch = watch or _COMMAND["watch"]
    if not enabled:
        return watched(work, None, watch)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:>18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console(), transient=True) as bar:
        tasks: dict[str, int] = {}

        def cb(name: str, done: int, n: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=n)
            bar.update(tasks[name], completed=done)

        return watched(work, cb, watch)


def watched(work: Callable, cb: Callable | None, watch=None):
    """`work(cb)`; with a `watch`, it is told each callback's label (a bar or not), then that the work ended."""
    if watch is None:
        return work(cb)

    def seen(name: str, done: int, n: int) -> None:
        watch.seen(name)
        if cb is not None:
            cb(name, done, n)

    result = work(seen)
    watch.finish()
    return result
