"""The launcher on its own, with torch-free ranks (quick): rank 0's value comes back, a rank that raises or dies
ends the group at once with that rank's one line, and a mistake every rank makes is named without a rank."""

from __future__ import annotations

import os
import time

import pytest

from pabench.errors import ConfigError
from pabench.parallel import RankEnv, RankFailed, launch


def whoami(tag: str) -> tuple:
    env = RankEnv.from_environ()
    return tag, env.rank, env.world_size, env.launched, os.environ["MASTER_PORT"]


def fail_on(rank: int, how: str) -> None:
    """`rank` raises or dies at once; the others wait as a rank blocked in a collective would."""
    if RankEnv.from_environ().rank == rank:
        if how == "exit":
            os._exit(7)
        raise ConfigError("rank-specific trouble") if how == "config" else RuntimeError("a bug")
    time.sleep(60)


def everyone_fails() -> None:
    raise ConfigError("the same bad input")


def test_rank_zero_value_and_torchrun_variables():
    tag, rank, size, launched, port = launch(whoami, {"tag": "a"}, 2, quiet={"tag": "b"})
    assert (tag, rank, size, launched) == ("a", 0, 2, True) and int(port) > 0


@pytest.mark.parametrize("how, line", [
    ("config", "rank 1: rank-specific trouble"),
    ("bug", "rank 1: RuntimeError: a bug"),
    ("exit", "rank 1 died (exit code 7) without an error; the other ranks were stopped"),
])
def test_a_failing_rank_stops_the_group_with_its_line(how, line):
    t0 = time.monotonic()
    with pytest.raises(RankFailed) as info:
        launch(fail_on, {"rank": 1, "how": how}, 2)
    assert str(info.value) == line
    assert time.monotonic() - t0 < 20  # rank 0 (sleeping 60 s) was stopped, not waited for


def test_the_same_error_on_every_rank_is_the_input_not_a_rank():
    with pytest.raises(RankFailed, match="^the same bad input$"):
        launch(everyone_fails, {}, 2)
