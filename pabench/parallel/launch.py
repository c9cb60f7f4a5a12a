"""`launch`: start the N ranks of a tensor-parallel run as processes on this host and wait for them, as torchrun
does, so `pabench run --tensor-parallel N` needs no wrapper (`start_ranks`: the same for a CLI command, which every
rank runs whole with the options already parsed; under torchrun each process is a rank already).

Each rank is a fresh `spawn`ed interpreter (CUDA cannot be forked) running the same function with the same
arguments; rank 0 keeps the terminal's stdout and stderr (tables, progress bar), the other ranks are silent and
write no file. Every error line a rank has goes through a queue to the launcher, which prints the group's one
line. A rank that raises or dies stops the whole group at once: the others are terminated (a survivor blocked in
an NCCL collective would otherwise wait for its timeout), and the run fails with the line of the rank that caused
it, not a survivor's "lost a peer". Torch-free: the launcher itself never touches a device.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from pabench.errors import PabenchError
from pabench.parallel.env import LAUNCHED_ENV, RankEnv

SETTLE_S = 1.0  # after the first failure, how long the other ranks may take to report (or exit) before the stop
STOP_S = 3.0  # a terminated rank is killed after this long
EXPECTED = ("PeerFailure", "InducedFailure", "Divergence")  # a rank's failures that are not bugs: no traceback


class RankFailed(PabenchError):
    """A rank of a tensor-parallel run raised, exited non-zero or died; the message is its one line."""


@dataclass(frozen=True)
class RankError:
    """One error line a rank reported; `peer` marks a consequence (the rank lost a peer), not a cause."""

    rank: int
    message: str
    peer: bool


# This process's side of the launcher (set in a rank pabench started): where its error lines go.
_channel: tuple[Any, int] | None = None
_peer_lost = False  # a collective of this process failed: its errors are consequences of a peer's


def mark_peer_lost() -> None:
    """Called when a collective fails or times out: from now on this rank's errors are a peer's consequence."""
    global _peer_lost
    _peer_lost = True


def send_error(message: str) -> bool:
    """In a rank, hand an error line to whoever prints the group's and say True (pabench's launcher: its queue;
    a torchrun rank > 0: its real stderr, naming the rank); outside a group False: print it yourself."""
    if _channel is not None:
        channel, rank = _channel
        channel.put(("error", rank, message, _peer_lost))
        return True
    env = RankEnv.from_environ()
    if env is not None and not env.is_main:
        print(f"pabench: error: rank {env.rank}: {message}", file=sys.__stderr__)
        return True
    return False


def silence() -> None:
    """A rank > 0 prints nothing (rank 0 shows the group's tables and progress); its errors still get out through
    `send_error`."""
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def free_port() -> int:
    """A TCP port free on this host now, for rank 0's rendezvous store."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(fn: Callable[..., Any], kwargs: dict, size: int, quiet: dict | None = None) -> Any:
    """Run `fn(**kwargs)` on `size` ranks of this host (ranks > 0 with `quiet` over `kwargs`: no files, no progress
    bar) and return rank 0's value. Raises `RankFailed` (one line) when a rank raised, exited non-zero or died;
    Ctrl-C stops every rank and propagates. `fn` must be importable by name (ranks are spawned, not forked)."""
    ctx = multiprocessing.get_context("spawn")
    channel = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, name=f"pabench-rank-{rank}",
                         args=(RankEnv(rank, rank, size, "127.0.0.1", port, launched=True), channel, fn,
                               {**kwargs, **(quiet or {})} if rank else kwargs))
             for rank in range(size)]
    for p in procs:
        p.start()
    errors: list[RankError] = []
    values: dict[int, Any] = {}
    try:
        codes = _wait(procs, channel, errors, values)
    finally:
        _stop(procs)
    _read(channel, errors, values, timeout=0.1)  # what the last ranks sent as they exited
    if errors or any(code != 0 for code in codes.values()):
        raise RankFailed(_failure_line(errors, codes, size))
    return values.get(0)


def start_ranks(command: Callable[..., Any], size: int, quiet: dict, check: Callable[[], None]) -> bool:
    """For a CLI command with `--tensor-parallel size`, called once its options are checked. In the user's process
    (size > 1): `check()` (the model splits, the devices exist), run `command` with the same parsed options on
    `size` ranks and say True (done: return; a failing rank raised `RankFailed`). Under torchrun, rank > 0 runs
    the command quietly (`quiet` over its options) and says True. Otherwise (size 1, rank 0, a rank pabench
    started) False: go on."""
    env = RankEnv.from_environ()
    if env is not None:
        env.expect(size)
    if (env is None and size == 1) or (env is not None and (env.launched or env.is_main)):
        return False
    params = _command_params()
    quiet = {k: v for k, v in quiet.items() if k in params}
    if env is None:
        check()
        launch(command, params, size, quiet)
        return True
    silence()  # torchrun's rank > 0: its error lines still reach its stderr (send_error)
    os.environ[LAUNCHED_ENV] = "1"  # the inner call goes on at once
    command(**{**params, **quiet})
    return True


def _command_params() -> dict:
    """The running CLI command's parsed options (click's context: what a rank calls the command with again)."""
    try:
        from click import get_current_context
    except ImportError:  # Typer >= 0.2x vendors click
        from typer._click.globals import get_current_context
    return dict(get_current_context().params)


def _wait(procs: list, channel, errors: list, values: dict) -> dict[int, int | None]:
    """Read the ranks' messages (a rank cannot exit before its queue is read) until every rank exited 0, or a rank
    failed and the others had SETTLE_S to report theirs: the exit codes then (None: still running)."""
    first_failure = None
    while True:
        _read(channel, errors, values, timeout=0.02)
        codes = {rank: p.exitcode for rank, p in enumerate(procs)}
        if all(code == 0 for code in codes.values()):
            return codes
        if first_failure is None and any(code not in (None, 0) for code in codes.values()):
            first_failure = time.monotonic()
        if first_failure is not None and (all(code is not None for code in codes.values())
                                          or time.monotonic() - first_failure > SETTLE_S):
            return codes


def _stop(procs: list) -> None:
    """Terminate the ranks still running, then kill what is left after STOP_S."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + STOP_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def _read(channel, errors: list[RankError], values: dict[int, Any], timeout: float) -> None:
    """Every message waiting in the queue (the first within `timeout`): error lines, and rank 0's value."""
    while True:
        try:
            kind, rank, *rest = channel.get(timeout=timeout)
        except queue.Empty:
            return
        if kind == "error":
            errors.append(RankError(rank, *rest))
        else:
            values[rank] = pickle.loads(rest[0])
        timeout = 0.0


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _failure_line(errors: list[RankError], codes: dict[int, int | None], size: int) -> str:
    """The group's one line: the first cause reported (without a rank when every rank said the same: the input,
    not a rank, was wrong), else a rank that died without a word, else the first consequence."""
    causes = [e for e in errors if not e.peer]
    if causes:
        if len(causes) == size and len({e.message for e in causes}) == 1:
            return causes[0].message
        return f"rank {causes[0].rank}: {causes[0].message}"
    reported = {e.rank for e in errors}
    silent = [rank for rank, code in codes.items() if code not in (None, 0) and rank not in reported]
    if silent:
        return (f"rank {silent[0]} died ({_exit_text(codes[silent[0]])}) without an error; the other ranks were "
                f"stopped")
    if errors:
        return f"rank {errors[0].rank}: {errors[0].message}"
    running = [rank for rank, code in codes.items() if code is None]
    return f"ranks {running} did not finish"  # unreachable in practice: a failure always has a code or a line


def _one_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    if isinstance(error, PabenchError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _rank_main(env: RankEnv, channel, fn: Callable[..., Any], kwargs: dict) -> None:
    """A spawned rank: become `env` (torchrun's variables), run `fn`, report its value (rank 0) or its error."""
    global _channel
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's: it stops every rank at once
    os.environ.update(env.to_environ())
    _channel = (channel, env.rank)
    if not env.is_main:
        silence()
    code = 0
    try:
        value = fn(**kwargs)
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    except BaseException as error:  # noqa: BLE001 - every failure of a rank becomes its one line
        code = getattr(error, "exit_code", None)  # click's Exit (typer.Exit): the command already said why
        if not isinstance(code, int):
            if not isinstance(error, PabenchError) and type(error).__name__ not in EXPECTED:
                traceback.print_exc(file=sys.__stderr__)  # a bug: its traceback, then the group's one line
            send_error(_one_line(error))
            code = 1
    else:
        if env.is_main:  # pickled here: the queue's own pickler would share tensors through this process's memory
            channel.put(("value", env.rank, pickle.dumps(value)))
    channel.close()
    channel.join_thread()  # the launcher reads the messages after this process exits
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown: a group with a lost peer can hang in its destructors
