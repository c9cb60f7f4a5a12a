"""`run_benchmark`: serve one workload through each backend with the same scheduler and model.

The library behind `pabench run` and `pabench sweep`. It resolves device-dependent defaults (CPU: the `tiny`
model in fp32; CUDA: `llama-3-8b` in bf16), sizes the KV budget so that memory, not compute, limits
concurrency, warms up on CUDA (Triton compilation stays out of the numbers), and returns one `Result` each.
"""

from __future__ import annotations

import datetime
import gc
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

from pabench.engine.records import token_agreement
from pabench.errors import ConfigError, PabenchError
from pabench.units import check_kv_dtype, check_page_size

if TYPE_CHECKING:
    from pabench.backends.base import KVCacheBackend
    from pabench.bench.goodput import GoodputSpec

BUDGET_SEQS_DIVISOR = 8  # default KV budget: room for max_num_seqs / 8 sequences at max_model_len
WARMUP_REQUESTS = {"cuda": 64, "cpu": 4}  # the workload's first requests the untimed warm-up serves, per device

ProgressFn = Callable[[str, int, int], None]  # (backend, finished requests, total)


@dataclass(frozen=True)
class RunConfig:
    """Everything one `pabench run` needs. `None` fields take a device-dependent default in `resolve()`."""

    workload: str = "default"
    backends: tuple[str, ...] = ("paged", "contiguous-max", "contiguous-pow2", "contiguous-oracle")
    model: str | None = None  # tiny on CPU, llama-3-8b on CUDA
    layers: int | None = None
    device: str = "auto"
    dtype: str | None = None  # fp32 on CPU, bf16 on CUDA
    kv_dtype: str = "auto"  # "auto": K/V stored in dtype; "fp8": e4m3 with per-layer scales (kernels/fp8.py)
    page_size: int = 16
    kv_budget_bytes: int | None = None
    num_pages: int | None = None
    prefix_caching: bool | None = None  # None = on; an explicit value must agree with paged+prefix/paged-noprefix
    watermark: float = 0.04  # paged: fraction of pages admission leaves free for running sequences to grow
    max_num_seqs: int | None = None  # 32 on CPU, 256 on CUDA
    max_batched_tokens: int = 8192
    min_prefill_seqs: int = 1  # hold prefill back until this many batch seats are free (1 = vLLM's behaviour)
    max_model_len: int | None = None  # the workload's longest request, at least 1024 on CPU / 2048 on CUDA
    num_requests: int | None = None
    seed: int | None = None
    rate: float | None = None  # override: Poisson arrivals at this many requests/s
    attn_impl: str = "auto"
    cuda_graphs: bool | None = None  # replay decode steps as CUDA graphs (default on CUDA)
    # schedule decode step t+1 while the device runs step t (engine/pipelined.py); None = on with CUDA (as vLLM
    # since v0.11.1, PR #27614), off on the CPU, where host and "device" are the same cores and nothing overlaps
    async_scheduling: bool | None = None
    beam_width: int | None = None  # override the workload's beam_width (1 = greedy)
    chunked_prefill: bool = False  # one token budget per step, prompt chunks beside decode tokens (vLLM v1)
    max_num_partial_prefills: int = 1
    warmup: bool | None = None  # default on: one-time costs (Triton compiles, lazy inits) stay out of the numbers
    realtime: bool = True  # honour Poisson arrival times on the wall clock
    extra: dict = field(default_factory=dict)  # swept parameters etc., copied into every result's config
    goodput: GoodputSpec | None = None  # --goodput: latency targets; adds request_goodput, slo_attainment_pct
    percentiles: tuple[float, ...] = ()  # --metric-percentiles, each in (0, 100]: `{metric}_p{P}_ms` columns
    tensor_parallel: int = 1  # ranks sharing the model (parallel/): the KV budget is then per GPU, as in vLLM

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; choose auto, cpu or cuda")
        if self.kv_budget_bytes is not None and self.num_pages is not None:
            raise ConfigError("give --kv-budget or --num-pages, not both")
        for f in ("page_size", "max_batched_tokens", "min_prefill_seqs"):
            if getattr(self, f) <= 0:
                raise ConfigError(f"{f.replace('_', '-')} must be > 0, got {getattr(self, f)}")
        for f in ("layers", "num_pages", "max_num_seqs", "max_model_len", "num_requests", "kv_budget_bytes",
                  "tensor_parallel"):
            v = getattr(self, f)
            if v is not None and v <= 0:
                raise ConfigError(f"{f.replace('_', '-')} must be > 0, got {v}")
        check_page_size(self.page_size)
        check_kv_dtype(self.kv_dtype)
        if not 0.0 <= self.watermark < 1.0:
            raise ConfigError(f"--watermark must be a fraction in [0, 1), got {self.watermark}")
        if self.beam_width is not None and self.beam_width < 1:
            raise ConfigError(f"--beam-width must be >= 1, got {self.beam_width}")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError(f"rate must be > 0 requests/s, got {self.rate}")
        if not self.backends:
            raise ConfigError("no backend given")
        forced = {"paged+prefix": True, "paged-noprefix": False}
        clash = [b for b in self.backends if b in forced and self.prefix_caching is not None
                 and forced[b] != self.prefix_caching]
        if clash:
            flag = "--prefix-caching" if self.prefix_caching else "--no-prefix-caching"
            raise ConfigError(f"{flag} contradicts backend {clash[0]}, which sets prefix caching "
                              f"{'on' if forced[clash[0]] else 'off'} itself; drop the flag or the backend")

    def resolve(self, need: int = 0) -> "RunConfig":
        """Fill the device-dependent defaults; an unset max_model_len fits `need` tokens (the longest request)."""
        import torch

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
        cuda = device == "cuda"
        from pabench.kernels.checks import resolve_impl

        try:
            resolve_impl(self.attn_impl, torch.device(device))
        except ConfigError as error:
            raise ConfigError(f"--attn-impl {self.attn_impl}: {error}") from None
        if self.cuda_graphs and not cuda:
            raise ConfigError(f"--cuda-graphs needs a CUDA device (this run is on the {device}); "
                              "drop it or pass --no-cuda-graphs")
        return replace(
            self, device=device,
            model=self.model or ("llama-3-8b" if cuda else "tiny"),
            dtype=self.dtype or ("bf16" if cuda else "fp32"),
            max_num_seqs=self.max_num_seqs or (256 if cuda else 32),
            max_model_len=self.max_model_len or max(need, 2048 if cuda else 1024),
            warmup=True if self.warmup is None else self.warmup,
            cuda_graphs=cuda if self.cuda_graphs is None else self.cuda_graphs,
            async_scheduling=cuda if self.async_scheduling is None else self.async_scheduling,
        )


def default_budget_tokens(max_num_seqs: int, max_model_len: int) -> int:
    """Room for max_num_seqs / 8 sequences at max_model_len: memory, not batch limits, binds concurrency."""
    return max(1, max_num_seqs // BUDGET_SEQS_DIVISOR) * max_model_len


@dataclass
class Prepared:
    """A resolved config plus the model, the requests and the budget, shared by every backend of a run."""

    config: RunConfig
    spec: object
    requests: list
    model: object
    layout: object
    kv_budget_bytes: int


def prepare(cfg: RunConfig, model=None) -> Prepared:
    """Resolve defaults, load the workload, size the budget, check that every request fits every backend, build
    the model. Raises ConfigError early: bad input fails before the model is built or anything runs.

    `model` reuses an already built `DecoderModel` when its config matches (sweeps build it once).
    """
    from pabench.backends import KVLayout, parse_backends
    from pabench.bench.budget import check_fits_memory
    from pabench.engine.model import DecoderModel, ModelConfig
    from pabench.bench.presets import load_workload
    from pabench.bench.workloads import generate, with_rate

    spec = load_workload(cfg.workload)
    if cfg.beam_width is not None:
        try:
            spec = replace(spec, beam_width=cfg.beam_width)
        except ConfigError as error:
            raise ConfigError(f"--beam-width: {str(error).split(': ', 2)[-1]}") from None
    if spec.beam_width > 1 and cfg.chunked_prefill:
        raise ConfigError("beam search with --chunked-prefill is not supported yet: drop one of them")
    if spec.beam_width > 1:  # beams change each step's sequences on the host: the eager, synchronous loop
        for flag, value in (("--cuda-graphs", cfg.cuda_graphs), ("--async-scheduling", cfg.async_scheduling)):
            if value:
                raise ConfigError(f"beam search runs the synchronous engine with eager decode steps for now; "
                                  f"drop {flag}")
        cfg = replace(cfg, cuda_graphs=False, async_scheduling=False)
        from pabench.backends import BACKENDS, BEAM_BACKENDS

        if tuple(cfg.backends) == BACKENDS:  # --backend all: and vLLM v1's way of holding beams
            cfg = replace(cfg, backends=BACKENDS + BEAM_BACKENDS)
    cfg = cfg.resolve(spec.max_request_len)  # an unset max_model_len follows the workload
    parse_backends(",".join(cfg.backends))
    mcfg = ModelConfig.from_name(cfg.model, cfg.layers)
    mcfg.check_tensor_parallel(cfg.tensor_parallel)
    from pabench.parallel.group import join  # this process's rank (alone when tensor_parallel is 1)

    tp = join(cfg.tensor_parallel, cfg.device)
    if cfg.rate is not None:  # Poisson at that rate, or a trace's times rescaled to it
        spec = with_rate(spec, cfg.rate)
    requests = generate(spec, vocab_size=mcfg.vocab_size, max_model_len=cfg.max_model_len,
                        num_requests=cfg.num_requests, seed=cfg.seed)
    # one rank's pool: the same pages on every rank, each holding this rank's share of the KV heads
    layout = KVLayout(mcfg.num_layers, mcfg.num_kv_heads // tp.size, mcfg.head_dim, dtype=cfg.dtype, device=cfg.device,
                      kv_dtype=cfg.kv_dtype)
    budget, source = _kv_budget(cfg, layout)
    if budget < cfg.page_size * layout.bytes_per_token:
        raise ConfigError(f"KV budget of {budget} bytes is smaller than one page "
                          f"({cfg.page_size} tokens x {layout.bytes_per_token} bytes)")
    seed = 0 if cfg.seed is None else cfg.seed
    reuse = (model is not None and model.config == mcfg and model.dtype == layout.torch_dtype and model.seed == seed
             and model.device.type == cfg.device and model.cos.shape[0] > cfg.max_model_len and model.tp == tp)
    # Before anything is allocated (a reused model is already in memory, so its weights are not counted again); fp8
    # needs a device with e4m3 conversions.
    check_fits_memory(cfg, mcfg, layout.bytes_per_token, budget, source, count_weights=not reuse)
    check_all_fit(Prepared(cfg, spec, requests, None, layout, budget))  # the model is not needed to check
    if not reuse:
        model = DecoderModel(mcfg, dtype=layout.torch_dtype, device=cfg.device,
                             seed=seed, max_position=cfg.max_model_len + 1, tp=tp)
    return Prepared(cfg, spec, requests, model, layout, budget)


def _kv_budget(cfg: RunConfig, layout) -> tuple[int, str]:
    """The run's KV budget in bytes, and where it came from (for messages): --num-pages, --kv-budget or the default
    (sized in the model dtype's bytes, so an fp8 cache holds 2x the tokens of the same default budget)."""
    bytes_per_token = layout.bytes_per_token
    if cfg.num_pages is not None:
        return (cfg.num_pages * cfg.page_size * bytes_per_token,
                f" ({cfg.num_pages} pages x {cfg.page_size} tokens x {bytes_per_token} B)")
    if cfg.kv_budget_bytes is not None:
        return cfg.kv_budget_bytes, ""
    tokens = default_budget_tokens(cfg.max_num_seqs, cfg.max_model_len)
    return (tokens * replace(layout, kv_dtype="auto").bytes_per_token,
            f" (the default: room for {tokens // cfg.max_model_len} sequences at --max-model-len {cfg.max_model_len}"
            f"{' in ' + cfg.dtype + ', 2x that in fp8' if layout.is_fp8 else ''})")


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def run_config_dict(p: Prepared, backend: KVCacheBackend) -> dict:
    """The parameters a result is reported with (CSV columns); the cache's own settings come from `describe()`."""
    c = p.config
    mc = p.model.config
    facts = backend.describe()
    out = {"date": datetime.date.today().isoformat(), "workload": p.spec.name, "model": mc.name,
           "layers": mc.num_layers, "device": _device_name(c.device), "dtype": c.dtype, "kv_dtype": c.kv_dtype,
           "tensor_parallel": c.tensor_parallel, "page_size": facts["page_size"],
           "kv_budget_bytes": p.kv_budget_bytes, "max_num_seqs": c.max_num_seqs, "max_model_len": c.max_model_len,
           "max_batched_tokens": c.max_batched_tokens, "min_prefill_seqs": c.min_prefill_seqs,
           "num_requests": len(p.requests), "seed": p.spec.seed if c.seed is None else c.seed,
           "prefix_caching": facts["prefix_caching"], "watermark": facts["watermark"],
           "attn_impl": c.attn_impl, "cuda_graphs": bool(c.cuda_graphs),
           "async_scheduling": bool(c.async_scheduling), "arrival": p.spec.arrival_text(),
           "beam_width": p.spec.beam_width, "chunked_prefill": bool(c.chunked_prefill),
           "interrupted": False}  # set on every finished run when Ctrl-C cut the benchmark short
    from pabench.bench.contract import comparability  # lazily: contract imports this module
    return {**out, **c.extra, "comparability": comparability(p)}  # every export states what it compares with


def run_backend(p: Prepared, backend_name: str, on_progress: ProgressFn | None = None):
    """Serve the prepared requests through one backend; returns its `RunRecord`."""
    c = p.config
    sched = scheduler_config(p)
    if c.warmup:
        _warmup(p, build_backend(p, backend_name), sched)
    backend = build_backend(p, backend_name)
    engine = _engine_class(c)(p.model, backend, sched, cuda_graphs=c.cuda_graphs)
    progress = (lambda done, total: on_progress(backend_name, done, total)) if on_progress else None
    record = engine.run(p.requests, run_config_dict(p, backend), on_progress=progress, realtime=c.realtime)
    del engine, backend
    gc.collect()  # the freed pools stay in torch's allocator cache for the next backend (same budget, same sizes)
    return record


def _engine_class(c: RunConfig) -> type:
    """The serving loop a run asks for: `PipelinedEngine` with --async-scheduling, else `Engine`."""
    from pabench.engine.engine import Engine
    from pabench.engine.pipelined import PipelinedEngine

    return PipelinedEngine if c.async_scheduling else Engine


def scheduler_config(p: Prepared):
    """The scheduler limits of a prepared run (what every backend's engine gets)."""
    from pabench.engine.scheduler import SchedulerConfig

    c = p.config
    return SchedulerConfig(max_num_seqs=c.max_num_seqs, max_batched_tokens=c.max_batched_tokens,
                           max_model_len=c.max_model_len, min_prefill_seqs=c.min_prefill_seqs,
                           chunked_prefill=c.chunked_prefill, max_num_partial_prefills=c.max_num_partial_prefills)


def build_backend(p: Prepared, backend_name: str, layout=None):
    """A fresh KV cache `backend_name` for a prepared run (its budget, page size and limits)."""
    from pabench.backends import make_backend

    c, layout = p.config, layout or p.layout
    scales = p.model.kv_scales() if layout.is_fp8 and p.model is not None else None  # one calibration per model
    return make_backend(backend_name, layout, kv_budget_bytes=p.kv_budget_bytes, page_size=c.page_size,
                        enable_prefix_caching=c.prefix_caching is not False, max_num_seqs=c.max_num_seqs,
                        max_model_len=c.max_model_len, attn_impl=c.attn_impl, watermark=c.watermark,
                        kv_scales=scales)


def check_all_fit(p: Prepared) -> None:
    """Before anything runs: every request must fit every backend when empty. Bad input (a budget too small for
    one request under some backend) then fails in seconds, before any backend has spent minutes on a GPU."""
    from pabench.engine.scheduler import check_request_fits

    sched = scheduler_config(p)
    shapes_only = replace(p.layout, device="meta")  # same capacity, no KV pool allocated for a check
    for name in p.config.backends:
        backend = build_backend(p, name, shapes_only)
        for r in p.requests:
            check_request_fits(backend, sched, r)


def _warmup(p: Prepared, backend, sched) -> None:
    """Run the workload's first requests (outputs cut to 4 tokens) on a throwaway backend, so that one-time
    costs (Triton compiles, cuBLAS heuristics, allocator growth for these prefill and decode shapes) stay
    out of the timed run. The allocator cache is kept: the timed backend's pools reuse the same blocks."""
    n = WARMUP_REQUESTS[p.config.device]
    if p.config.device == "cuda":  # every prefill GEMM shape bucket once (engine/padding.py), for any run order
        from pabench.engine.padding import warm_prefill_gemms

        c = p.config
        warm_prefill_gemms(p.model, max(c.max_batched_tokens, c.max_model_len), c.max_num_seqs)
    reqs = [replace(r, arrival_s=0.0, output_len=min(r.output_len, 4)) for r in p.requests[:n]]
    _engine_class(p.config)(p.model, backend, sched).run(reqs, realtime=False)
    if p.config.device == "cuda" and not p.config.cuda_graphs:  # eager decode meets batch sizes as they come
        from pabench.engine.padding import warm_eager_decode

        warm_eager_decode(p.model, backend, p.config.max_num_seqs)
    if p.config.device == "cuda" and p.config.chunked_prefill:  # each unified mixed-step kernel variant
        from pabench.engine.padding import warm_mixed_attention

        warm_mixed_attention(p.model, backend)
    del backend
    gc.collect()
    if p.config.device == "cuda":
        import torch

        torch.cuda.synchronize()


@dataclass(frozen=True)
class BackendFailure:
    """A backend that failed while running (after the up-front checks passed): its name and a one-line reason.
    `interrupted` marks the run cut short by Ctrl-C: `backend` names what was running or not yet run."""

    backend: str
    message: str
    interrupted: bool = False

    def __str__(self) -> str:
        return f"{self.backend} {'interrupted' if self.interrupted else 'failed'}: {self.message}"


def interrupted_runs(failures: list) -> list[str]:
    """The runs a Ctrl-C cut short or kept from starting (empty when the run was not interrupted)."""
    return [f.backend for f in failures if getattr(f, "interrupted", False)]


def mark_interrupted(records: list) -> None:
    """Flag the finished runs (records or results: anything with a `config`) of an interrupted benchmark: each
    is whole, but the comparison is not."""
    for record in records:
        record.config["interrupted"] = True


def as_failure(name: str, error: Exception) -> BackendFailure:
    """A run-time failure worth surviving (a pabench error, the device out of memory) as a one-line record;
    anything else is a bug and is re-raised. Callers catch broadly, then hand the error here. A rank of a tensor-
    parallel run re-raises everything: the other ranks are blocked mid-step, no backend can run after it."""
    from pabench.parallel import RankEnv

    if (not isinstance(error, PabenchError) and type(error).__name__ != "OutOfMemoryError") or RankEnv.from_environ():
        raise error
    return BackendFailure(name, str(error).splitlines()[0] if str(error) else type(error).__name__)


def run_benchmark(cfg: RunConfig, on_progress: ProgressFn | None = None, prepared: Prepared | None = None):
    """Run every backend of `cfg`; returns (results, records, prepared, failures).

    Ctrl-C stops the run: the backends that finished are returned (their config marked `interrupted`), the one
    running and those not started are `BackendFailure(..., interrupted=True)` entries in `failures`.

    Input errors surface before anything runs (`prepare` checks them). A backend that fails at run time (a pabench
    error, or the device running out of memory) lands in `failures` and the other backends still run, so a
    long GPU run keeps what finished. Any other exception is a bug and propagates.
    """
    from pabench.bench.metrics import build_result

    p = prepared or prepare(cfg)
    records, failures = [], []
    for i, name in enumerate(p.config.backends):
        try:
            records.append(run_backend(p, name, on_progress))
        except KeyboardInterrupt:  # keep what finished; the caller writes it marked and exits 130
            failures += [BackendFailure(n, "not finished (Ctrl-C)", interrupted=True) for n in p.config.backends[i:]]
            mark_interrupted(records)
            gc.collect()
            break
        except Exception as error:  # noqa: BLE001 - as_failure re-raises what is not an expected failure
            failures.append(as_failure(name, error))
            gc.collect()
    for r in records:
        r.config.update(token_agreement(records[0], r))
    return [build_result(r, p.config.goodput, p.config.percentiles) for r in records], records, p, failures

