"""`TPGroup`: this process's rank in a tensor-parallel group over torch.distributed (NCCL on CUDA, gloo on CPU).

What the ranks exchange, and nothing else: the model's all-reduce after each row-parallel projection (o and down,
Megatron-style), and on the host, once per engine step while requests are still to arrive, rank 0's clock, so
every rank admits the same arrivals. Scheduling is otherwise deterministic, so every rank runs the same scheduler
and block manager on the same inputs and takes the same decisions (vLLM v1's workers likewise sample the same
tokens from the same gathered logits); a digest of the schedule and the tokens is compared at the end of each
run (`agree`) so a divergence fails loudly instead of silently pairing different pages.

A collective that fails or times out raises `PeerFailure`, which is deliberately not a `PabenchError`: a run that
lost a rank cannot go on to its next backend, so it ends the whole run (parallel/launch.py stops the others).
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from pabench.errors import ConfigError
from pabench.parallel.env import RankEnv
from pabench.parallel.launch import mark_peer_lost

TIMEOUT_ENV = "PABENCH_TP_TIMEOUT_S"  # how long a collective may wait for a peer (default 300 s)
FAIL_ENV = "PABENCH_TP_FAIL"  # test hook "RANK:N" or "RANK:N:exit": that rank raises (or dies) at its N-th all-reduce
DEFAULT_TIMEOUT_S = 300.0


class PeerFailure(RuntimeError):
    """A collective failed or timed out: another rank died, raised, or stopped answering."""


class InducedFailure(RuntimeError):
    """The failure asked for by $PABENCH_TP_FAIL (tests: a rank that fails mid-run)."""


class Divergence(RuntimeError):
    """The ranks' runs differ (a bug: the replicated scheduler must take the same decisions everywhere)."""


class TPGroup:
    """One rank of `size`: the all-reduce the row-parallel layers end with and the host exchanges that keep every
    rank's scheduler in step. Size 1 is a group of its own with no torch.distributed behind it (the same code
    path, every collective the identity)."""

    def __init__(self, rank: int = 0, size: int = 1, device: str = "cpu", *, group=None, host_group=None) -> None:
        if size < 1 or not 0 <= rank < size:
            raise ConfigError(f"rank {rank} of a group of {size}")
        self.rank, self.size, self.device = rank, size, device
        self.group = group  # the tensors' process group (NCCL on CUDA, gloo on CPU); None: the default group
        self.host_group = host_group  # gloo, for host values (the NCCL group only moves device tensors)
        self.num_all_reduces = 0
        self._fail_at = _fail_hook(rank) if size > 1 else None

    def __eq__(self, other: object) -> bool:  # the same place in the same kind of group (a sweep reuses its model)
        return isinstance(other, TPGroup) and (self.rank, self.size, self.device) == (other.rank, other.size,
                                                                                     other.device)

    def __hash__(self) -> int:
        return hash((self.rank, self.size, self.device))

    @property
    def is_main(self) -> bool:
        """Rank 0: its clock decides arrivals, its record is the run's."""
        return self.rank == 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the ranks, in place (a row-parallel projection's partial sums), and return it."""
        if self.size == 1:
            return x
        self.num_all_reduces += 1
        if self._fail_at is not None and self.num_all_reduces == self._fail_at[0]:
            if self._fail_at[1]:
                os._exit(3)  # die: no error, no goodbye
            raise InducedFailure(f"failed on purpose at its all-reduce {self._fail_at[0]} (${FAIL_ENV})")
        try:
            dist.all_reduce(x, group=self.group)  # [*] summed over ranks
        except Exception as error:  # noqa: BLE001 - gloo and NCCL raise several types for a lost peer
            raise self._lost(error) from None
        return x

    def broadcast_float(self, value: float) -> float:
        """Rank 0's `value` on every rank (host side: the clock that decides which requests have arrived)."""
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)  # [1]
        try:
            dist.broadcast(t, src=0, group=self.host_group)
        except Exception as error:  # noqa: BLE001
            raise self._lost(error) from None
        return float(t.item())

    def agree(self, value: str, what: str) -> None:
        """Every rank must hold the same `value` (a digest of `what`); raise `Divergence` on every rank if not."""
        if self.size == 1:
            return
        values: list = [None] * self.size
        try:
            dist.all_gather_object(values, value, group=self.host_group)
        except Exception as error:  # noqa: BLE001
            raise self._lost(error) from None
        if len(set(values)) > 1:
            differ = [r for r, v in enumerate(values) if v != values[0]]
            raise Divergence(f"ranks {differ} disagree with rank 0 on {what}: the replicated scheduler diverged")

    def _lost(self, error: Exception) -> PeerFailure:
        mark_peer_lost()
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return PeerFailure(f"lost a peer ({first[:160]})")


def _fail_hook(rank: int) -> tuple[int, bool] | None:
    """$PABENCH_TP_FAIL as (all-reduce number, die) when it names this rank."""
    text = os.environ.get(FAIL_ENV)
    if not text:
        return None
    parts = text.split(":")
    try:
        target, count = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise ConfigError(f"${FAIL_ENV} must be RANK:N or RANK:N:exit, got {text!r}") from None
    return (count, parts[2:] == ["exit"]) if target == rank else None


_joined: TPGroup | None = None  # the group this process joined (one per process, like torch.distributed's own)


def join(size: int, device: str) -> TPGroup:
    """This process's group of `size` for a run on `device` ('cpu' or 'cuda'): size 1 stands alone; a larger one
    is formed once per process from torchrun's variables (NCCL on CUDA, each rank on cuda:LOCAL_RANK; gloo on CPU)."""
    global _joined
    if size == 1:
        return TPGroup(0, 1, device)
    if _joined is not None:
        if (_joined.size, _joined.device) != (size, device):
            raise ConfigError(f"this process is already a rank of a {_joined.size}-rank group on {_joined.device}")
        return _joined
    env = RankEnv.from_environ()
    if env is None:
        raise ConfigError(f"--tensor-parallel {size} needs {size} processes: `pabench run` starts them itself, or "
                          f"run it under torchrun --nproc-per-node {size}")
    env.expect(size)
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    init = f"tcp://{env.master_addr}:{env.master_port}"
    try:
        if device == "cuda":
            if torch.cuda.device_count() <= env.local_rank:
                raise ConfigError(f"rank {env.rank} needs cuda:{env.local_rank}, but torch sees "
                                  f"{torch.cuda.device_count()} CUDA device(s)")
            torch.cuda.set_device(env.local_rank)
            dist.init_process_group("nccl", init_method=init, rank=env.rank, world_size=size, timeout=timeout,
                                    device_id=torch.device("cuda", env.local_rank))
            host = dist.new_group(backend="gloo", timeout=timeout)
        else:  # the ranks share the host's cores: oversubscribed OpenMP threads spin against each other (10x)
            torch.set_num_threads(min(torch.get_num_threads(), max(1, (os.cpu_count() or 1) // size)))
            dist.init_process_group("gloo", init_method=init, rank=env.rank, world_size=size, timeout=timeout)
            host = None  # gloo moves host tensors already
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - a rendezvous that fails (a peer gone, a port taken)
        mark_peer_lost()
        raise PeerFailure(f"could not form the group: {str(error).splitlines()[0][:160]}") from None
    _joined = TPGroup(env.rank, size, device, host_group=host)
    return _joined
