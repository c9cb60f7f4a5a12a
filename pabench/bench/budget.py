"""Before anything is allocated: does the run fit the memory of its device (the GPU, or the host on CPU)?

`prepare` sizes the KV budget; this module adds up what a run allocates at once (the model's weights, its rotary
tables of max_model_len rows, one backend's KV pool, the paged block table of max_num_seqs x max_model_len /
page_size entries) and refuses, in one line, what cannot fit, instead of a traceback from torch or a silent
visit from the OOM killer. Also the int32 limit of the page ids and slots the kernels index with, and (before the
ranks of `--tensor-parallel` start) that the model splits over them.
"""

from __future__ import annotations

from pabench.errors import ConfigError
from pabench.units import format_bytes, host_available_bytes

INT32_MAX = 2**31 - 1  # page ids (block table) and slot offsets are int32 on the device
CUDA_BUDGET_FACTOR = 2  # on CUDA the allocator may still cache the warm-up backend's pool when the timed one is built


def device_available_bytes(device: str) -> int:
    """Free memory on `device`: CUDA's free bytes, or the host's available memory on the CPU."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free
    return host_available_bytes()


def rope_table_bytes(max_model_len: int, head_dim: int) -> int:
    """The model's rotary tables: angles, cos and sin, fp32 `[max_model_len + 1, head_dim / 2]` each."""
    return 3 * (max_model_len + 1) * (head_dim // 2) * 4


def block_table_bytes(max_num_seqs: int, max_model_len: int, page_size: int) -> int:
    """The paged backend's device block table: int32 `[max_num_seqs + 1, ceil(max_model_len / page_size)]`."""
    return (max_num_seqs + 1) * -(-max_model_len // page_size) * 4


def check_fits_memory(cfg, mcfg, bytes_per_token: int, budget: int, budget_source: str, *,
                      count_weights: bool = True, available: int | None = None) -> None:
    """Raise a one-line ConfigError unless weights + rotary tables + block table + KV pool fit `cfg.device`.

    `cfg` is a resolved `RunConfig`, `mcfg` its `ModelConfig`; `budget_source` says where the budget came from (for
    the message); `count_weights=False` when the model is already built; `available` overrides the query (tests)."""
    device = cfg.device
    if getattr(cfg, "kv_dtype", "auto") == "fp8":  # e4m3 storage: the CPU, or a GPU of compute capability >= 8.9
        from pabench.kernels.fp8 import check_fp8_device

        check_fp8_device(device)
    avail = device_available_bytes(device) if available is None else available
    where = f"available on {device}" if device == "cpu" else f"free on {device}"
    factor = CUDA_BUDGET_FACTOR if device == "cuda" else 1
    if budget * factor > avail:
        note = " (half the free memory: one pool may stay cached while the next is built)" if factor > 1 else ""
        raise ConfigError(f"KV budget {format_bytes(budget)}{budget_source} > {format_bytes(avail / factor)} "
                          f"{where}{note}; give a smaller --kv-budget or --num-pages")
    paged = any(b.startswith("paged") for b in cfg.backends)
    tables = rope_table_bytes(cfg.max_model_len, mcfg.head_dim)
    if paged:
        tables += block_table_bytes(cfg.max_num_seqs, cfg.max_model_len, cfg.page_size)
    if tables > avail:
        raise ConfigError(f"--max-model-len {cfg.max_model_len} needs {format_bytes(tables)} of rotary and block "
                          f"tables (rows of max_model_len per sequence) > {format_bytes(avail)} {where}; "
                          f"lower --max-model-len")
    # a tensor-parallel rank holds its share of the weights and its own pool of `budget` (the budget is per GPU)
    weights = mcfg.params_per_rank(cfg.tensor_parallel) * (4 if cfg.dtype == "fp32" else 2) if count_weights else 0
    total = weights + tables + factor * budget
    if total > avail:
        times = f"{factor}x " if factor > 1 else ""
        raise ConfigError(f"model {mcfg.name} ({mcfg.num_layers} layers, {format_bytes(weights)} of weights) + "
                          f"{times}the KV budget ({format_bytes(budget)}) + tables ({format_bytes(tables)}) = "
                          f"{format_bytes(total)} > {format_bytes(avail)} {where}; try --layers, a smaller "
                          f"--kv-budget or --max-model-len")
    num_pages = budget // (cfg.page_size * bytes_per_token)
    if paged and num_pages + 1 > INT32_MAX:
        raise ConfigError(f"KV budget {format_bytes(budget)} holds {num_pages} pages; page ids are int32 on the "
                          f"device (at most {INT32_MAX - 1} pages): raise --page-size or lower the budget")
    if any(not b.startswith("paged") for b in cfg.backends) and budget // bytes_per_token + 1 > INT32_MAX:
        raise ConfigError(f"KV budget {format_bytes(budget)} holds {budget // bytes_per_token} token slots; "
                          f"contiguous slots are int32 on the device (at most {INT32_MAX - 1})")


def check_tensor_parallel(cfg) -> None:
    """Before any rank starts (`--tensor-parallel`): the model's heads and MLP split evenly, and on CUDA there is
    one device per rank."""
    from pabench.engine.model import ModelConfig

    c = cfg.resolve()
    ModelConfig.from_name(c.model, c.layers).check_tensor_parallel(c.tensor_parallel)
    if c.device == "cuda":
        import torch

        if torch.cuda.device_count() < c.tensor_parallel:
            raise ConfigError(f"--tensor-parallel {c.tensor_parallel} needs one CUDA device per rank; torch sees "
                              f"{torch.cuda.device_count()}")
