"""pabench command line: thin Typer commands over the library. Parse, call, print, exit code.

`app` holds the Typer app and the shared helpers; importing the command modules registers their commands.
"""

from __future__ import annotations

import sys

from pabench.cli import run, sweep, kernels, results, learn  # noqa: F401,I001  registers the commands, in help order
from pabench.cli.app import app, print_error

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """The `pabench` entry point: Typer's usage errors (unknown option, bad value) become one line and exit 1,
    like every other input error, so exit 2 keeps meaning "`check` found a regression"."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = app(args or ["--help"], prog_name="pabench", standalone_mode=False)
    except Exception as error:  # noqa: BLE001 - matched by class name: Typer vendors click, older Typers import it
        names = {cls.__name__ for cls in type(error).__mro__}
        if "UsageError" in names:
            ctx = getattr(error, "ctx", None)
            where = ctx.command_path if ctx is not None else "pabench"
            print_error(f"{' '.join(error.format_message().split())} (see '{where} --help')")
            sys.exit(1)
        if "Abort" in names:
            print_error("aborted; no result file was written")
            sys.exit(130)
        raise
    sys.exit(code if isinstance(code, int) else 0)
