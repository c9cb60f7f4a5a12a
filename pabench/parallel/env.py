"""`RankEnv`: which rank of a tensor-parallel group this process is, read from torchrun's environment variables.

pabench's own launcher (`parallel/launch.py`) sets the same variables torchrun does (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), so `pabench run --tensor-parallel N` and `torchrun --nproc-per-node N -m pabench run
--tensor-parallel N` start identical ranks. Torch-free: the CLI reads it before anything heavy is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pabench.errors import ConfigError

LAUNCHED_ENV = "PABENCH_TP_LAUNCHED"  # set in ranks pabench started itself (their output is already arranged)
VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class RankEnv:
    """One rank's coordinates: its rank in the group, its device index on this host, the group's size and the
    address of rank 0's rendezvous store."""

    rank: int
    local_rank: int
    world_size: int
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launched: bool = False  # started by pabench's launcher (not torchrun)

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ConfigError(f"bad rank variables: RANK={self.rank}, LOCAL_RANK={self.local_rank}, "
                              f"WORLD_SIZE={self.world_size}")

    @classmethod
    def from_environ(cls, environ: dict | None = None) -> RankEnv | None:
        """The rank this process is, or None outside a group (no WORLD_SIZE: a plain `pabench` command)."""
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return None
        try:
            return cls(rank=int(env.get("RANK", 0)), local_rank=int(env.get("LOCAL_RANK", env.get("RANK", 0))),
                       world_size=int(env["WORLD_SIZE"]), master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                       master_port=int(env.get("MASTER_PORT", 29500)), launched=env.get(LAUNCHED_ENV) == "1")
        except ValueError:
            raise ConfigError("RANK, LOCAL_RANK, WORLD_SIZE and MASTER_PORT must be integers (torchrun sets "
                              "them)") from None

    def to_environ(self) -> dict[str, str]:
        """The variables that make a child process this rank (what torchrun would set, plus pabench's marker)."""
        return {"RANK": str(self.rank), "LOCAL_RANK": str(self.local_rank), "WORLD_SIZE": str(self.world_size),
                "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port),
                LAUNCHED_ENV: "1" if self.launched else "0"}

    @property
    def is_main(self) -> bool:
        """Rank 0 prints the tables and writes the result files; the other ranks compute and stay quiet."""
        return self.rank == 0

    def expect(self, size: int) -> None:
        """Refuse a group whose size is not the `--tensor-parallel` asked for (a torchrun started with another
        --nproc-per-node)."""
        if size != self.world_size:
            raise ConfigError(f"this process is rank {self.rank} of {self.world_size} (WORLD_SIZE) but "
                              f"--tensor-parallel is {size}: give --tensor-parallel {self.world_size}, or drop "
                              f"torchrun and let pabench start the ranks")
