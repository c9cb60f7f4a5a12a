"""Tensor parallelism: which rank a process is (env), starting the ranks (launch) and, in `parallel.group`, the
collectives over torch.distributed. The package's top level is torch-free (the CLI imports it for `--help`);
import `pabench.parallel.group` where the collectives are needed."""

from pabench.parallel.env import RankEnv
from pabench.parallel.launch import RankFailed, launch, send_error, silence, start_ranks

__all__ = ["RankEnv", "RankFailed", "launch", "send_error", "silence", "start_ranks"]
