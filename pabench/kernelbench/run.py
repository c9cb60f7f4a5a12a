"""Kernel benchmark behind `pabench kernels`: decode attention, paged vs contiguous vs vendor/peer paths.

Every row times one implementation on one case and page size, checks its output once against the torch
reference, and reports bandwidth as a share of a device-to-device copy measured in the same run.
torch is imported inside functions so that importing this module (from the CLI) stays cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from pabench.errors import ConfigError
from pabench.units import check_kv_dtype, check_page_size, format_bytes, host_available_bytes
from pabench.kernelbench.data import DecodeData, make_decode_data, paginate, pad_slab, to_fp8
from pabench.kernelbench.timing import copy_bandwidth_gbps, time_us

CASES = ("a", "b", "c", "d")
CASE_CHOICES = (*CASES, "custom", "all")
IMPLS = ("triton-paged", "triton-contiguous", "torch-sdpa", "gather+sdpa", "flex-paged", "flashinfer-paged",
         "flashinfer-paged-cc", "torch-reference")
FLASHINFER_IMPLS = ("flashinfer-paged", "flashinfer-paged-cc")  # its tensor-core and CUDA-core decode paths
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
TOLERANCE = {"bf16": 2e-2, "fp16": 5e-3, "fp32": 1e-3}  # max ||out - ref|| / ||ref|| for a passing check
CPU_MAX_BATCH, CPU_MAX_CONTEXT = 8, 256  # on a CPU, defaults shrink to this: only the torch paths, a smoke test
DEFAULT_BATCH, DEFAULT_CONTEXT = 64, 4096  # the custom case's shape when --batch / --context are not given
LENGTHS = ("fixed", "lognormal", "skewed")
FP8_IMPLS = ("triton-paged", "triton-contiguous", "torch-reference")  # the paths that read an fp8 cache


@dataclass(frozen=True)
class CaseSpec:
    """A decode batch shape: `batch` sequences of `context` tokens, lognormal lengths around `context`, or skewed."""

    batch: int
    context: int
    lengths: str = "fixed"  # one of LENGTHS
    description: str = ""

    def __post_init__(self) -> None:
        if self.lengths not in LENGTHS:
            raise ConfigError(f"lengths must be one of {LENGTHS}, got {self.lengths!r}")
        if self.batch < 1 or self.context < 1:
            raise ConfigError(f"batch and context must be >= 1, got {self.batch}, {self.context}")


NAMED_CASES = {
    "a": CaseSpec(64, 4096, "fixed", "batch 64, every context 4096"),
    "b": CaseSpec(256, 1024, "lognormal", "batch 256, lognormal lengths, mean ~1008"),
    "c": CaseSpec(8, 32768, "fixed", "batch 8, context 32768"),
    "d": CaseSpec(32, 512, "fixed", "batch 32, context 512 (launch-bound)"),
}


@dataclass(frozen=True)
class KernelBenchConfig:
    """What `pabench kernels` measures. Options of the CLI map 1:1 onto these fields."""

    case: str = "all"
    batch: int | None = None  # custom case only; None = DEFAULT_BATCH (shrunk on a CPU, an explicit value is not)
    context: int | None = None  # custom case only; None = DEFAULT_CONTEXT (likewise)
    lengths: str = "fixed"  # custom case only: one of LENGTHS
    page_sizes: tuple[int, ...] | None = None  # None: 16 for named cases, (8, 16, 32, 64, 128) for custom
    num_q_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    dtype: str = "bf16"
    impls: tuple[str, ...] = ()  # () = every implementation available on the device
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    seed: int = 0
    cuda_graphs: bool = False  # CUDA: time CUDA-graph replays (device time without Python/launch overhead)
    kv_dtype: str = "auto"  # "auto": K/V in `dtype`; "fp8": e4m3 with per-tensor scales (FP8_IMPLS only)

    def __post_init__(self) -> None:
        check_kv_dtype(self.kv_dtype)
        if self.kv_dtype == "fp8" and set(self.impls) - set(FP8_IMPLS):
            raise ConfigError(f"--kv-dtype fp8 times {', '.join(FP8_IMPLS)} only; drop "
                              f"{', '.join(sorted(set(self.impls) - set(FP8_IMPLS)))}")
        if self.case not in CASE_CHOICES:
            raise ConfigError(f"case must be one of {CASE_CHOICES}, got {self.case!r}")
        if self.case != "custom" and (self.batch is not None or self.context is not None):
            raise ConfigError(f"--batch and --context shape the custom case; case {self.case!r} has its own shape "
                              "(drop them, or pass --case custom)")
        self.custom_case()  # checks batch, context, lengths
        for ps in self.page_sizes or ():
            check_page_size(ps, "every page size")
        if self.num_kv_heads < 1 or self.num_q_heads % self.num_kv_heads:
            raise ConfigError(f"num_q_heads ({self.num_q_heads}) must be a multiple of "
                              f"num_kv_heads ({self.num_kv_heads})")
        if self.head_dim < 1 or self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {tuple(DTYPES)} and head_dim >= 1")
        unknown = set(self.impls) - set(IMPLS)
        if unknown:
            raise ConfigError(f"impls: unknown {', '.join(sorted(unknown))}; choose from {', '.join(IMPLS)}")
        if self.warmup_ms < 0 or self.rep_ms <= 0:
            raise ConfigError("warmup_ms must be >= 0 and rep_ms > 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    def cases(self) -> dict[str, CaseSpec]:
        """The cases this config runs, by name."""
        if self.case == "custom":
            return {"custom": self.custom_case()}
        names = CASES if self.case == "all" else (self.case,)
        return {name: NAMED_CASES[name] for name in names}

    def custom_case(self) -> CaseSpec:
        """The custom case, defaults filled in."""
        return CaseSpec(DEFAULT_BATCH if self.batch is None else self.batch,
                        DEFAULT_CONTEXT if self.context is None else self.context, self.lengths, "custom")

    def explicit(self) -> tuple[bool, bool]:
        """(batch given, context given): on a CPU only what was not given shrinks."""
        return self.case == "custom" and self.batch is not None, self.case == "custom" and self.context is not None

    def resolved_page_sizes(self) -> tuple[int, ...]:
        """Page sizes to sweep: the given ones, else 16 for named cases and (8, ..., 128) for custom."""
        if self.page_sizes:
            return tuple(self.page_sizes)
        return (8, 16, 32, 64, 128) if self.case == "custom" else (16,)


def case_lengths(spec: CaseSpec, seed: int = 0) -> list[int]:
    """Sequence lengths of a case: all equal; lognormal(ln(context) - 0.5, 1) clipped to [16, 8 * context]; or
    skewed: one sequence of batch * context / 2 tokens beside batch - 1 of context / 2 (half the KV in one)."""
    if spec.lengths == "fixed":
        return [spec.context] * spec.batch
    if spec.lengths == "skewed":
        short = max(1, spec.context // 2)
        return [max(short, spec.batch * spec.context // 2)] + [short] * (spec.batch - 1)
    import numpy as np

    raw = np.random.default_rng(seed).lognormal(mean=math.log(spec.context) - 0.5, sigma=1.0, size=spec.batch)
    return [int(n) for n in np.clip(np.rint(raw), 16, 8 * spec.context)]


def shrink_for_cpu(spec: CaseSpec, lens: list[int], keep_batch: bool = False,
                   keep_context: bool = False) -> tuple[list[int], str]:
    """Scale a case's default shape down for a CPU run, keeping what the user set (`keep_*`); returns the lengths
    and a note saying which defaults changed ('' if nothing)."""
    scale = 1.0 if keep_context else min(1.0, CPU_MAX_CONTEXT / max(lens))
    small = [max(1, round(n * scale)) for n in (lens if keep_batch else lens[:CPU_MAX_BATCH])]
    if small == lens:
        return lens, ""
    changed = [f"batch {len(lens)}->{len(small)}"] * (len(small) != len(lens))
    changed += [f"max context {max(lens)}->{max(small)}"] * (max(small) != max(lens))
    flags = "/".join(f for f, keep in (("--batch", keep_batch), ("--context", keep_context)) if not keep)
    return small, f"CPU run shrunk the default {', '.join(changed)} (give {flags} to run them as set)"


def check_case_memory(lens: list[int], num_kv_heads: int, head_dim: int, elem: int, available: int,
                      where: str, batch: int | None = None) -> None:
    """Refuse a case whose K/V copies cannot fit: the slab and a page pool (drawn in fp32, then cast) plus the
    padded copy SDPA reads. `batch` given: `lens` is one length standing for `batch` sequences of it."""
    row = num_kv_heads * head_dim
    num_seqs = len(lens) if batch is None else batch
    total = sum(lens) if batch is None else batch * lens[0]
    need = 2 * total * row * (4 + elem) * 2 + 2 * num_seqs * max(lens) * row * elem
    if need > available:
        raise ConfigError(f"batch {num_seqs} x context {max(lens)} needs ~{format_bytes(need)} of K/V copies > "
                          f"{format_bytes(available)} {where}; lower --batch or --context")


def _runners(impls: tuple[str, ...], data: DecodeData, page_size: int, device: Any) -> dict[str, Any]:
    """Per impl, a zero-argument callable for one page size (setup such as FlexAttention's mask done here),
    or the exception its setup raised."""
    from pabench.kernels import (contiguous_decode_attention, decode_padding_mask, flashinfer_available,
                                 flex_available, flex_paged_decode, gather_sdpa_decode, paged_decode_attention,
                                 paged_decode_reference)
    from pabench.kernels.peers import flashinfer_paged_decode

    from pabench.kernels.fp8 import dequantize

    k_cache, v_cache, table = paginate(data, page_size)
    q, lens, scales = data.q, data.seq_lens, data.scales()
    if scales:  # the float reference reads the dequantised pages
        ref_k, ref_v = dequantize(k_cache, data.k_scale), dequantize(v_cache, data.v_scale)
    else:
        ref_k, ref_v = k_cache, v_cache
    lens_cpu = lens.cpu()
    # [batch, 1, 1, pages_per_seq * page_size] or None: built once, as the page tables are
    gather_mask = decode_padding_mask(lens_cpu, table.shape[1] * page_size, device)
    makers: dict[str, Callable[[], Callable[[], Any]]] = {
        "triton-paged": lambda: lambda: paged_decode_attention(q, k_cache, v_cache, table, lens, impl="triton",
                                                               check_values=False, **scales),
        "triton-contiguous": lambda: lambda: contiguous_decode_attention(
            q, data.k_slab, data.v_slab, data.seq_starts, lens, impl="triton", check_values=False, **scales),
        "gather+sdpa": lambda: lambda: gather_sdpa_decode(q, k_cache, v_cache, table, lens_cpu, mask=gather_mask)[0],
        "flex-paged": lambda: flex_paged_decode(q, k_cache, v_cache, table, lens),
        "flashinfer-paged": lambda: flashinfer_paged_decode(q, k_cache, v_cache, table, lens),
        "flashinfer-paged-cc": lambda: flashinfer_paged_decode(q, k_cache, v_cache, table, lens, tensor_cores=False),
        "torch-reference": lambda: lambda: paged_decode_reference(q, ref_k, ref_v, table, lens),
    }
    available = {"flex-paged": flex_available(), **{name: flashinfer_available() for name in FLASHINFER_IMPLS}}
    runners: dict[str, Any] = {}
    for impl in impls:
        if impl not in makers or not available.get(impl, True):
            continue
        try:
            runners[impl] = makers[impl]()
        except Exception as err:  # noqa: BLE001 - a peer that cannot set up is a visible row, not a crash
            runners[impl] = err
    return runners


def default_impls(device: Any) -> tuple[str, ...]:
    """Every implementation that runs on the device (on a CPU: the torch paths only)."""
    if device.type != "cuda":
        return ("torch-reference", "torch-sdpa", "gather+sdpa")
    from pabench.kernels import flashinfer_available

    return tuple(i for i in IMPLS if i != "torch-reference" and (i not in FLASHINFER_IMPLS or flashinfer_available()))


def _environment(device: Any) -> dict[str, str]:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # pragma: no cover - triton ships with CUDA torch on Linux
        triton_version = "none"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device_name": name, "torch": torch.__version__, "triton": triton_version}


def run_kernel_bench(cfg: KernelBenchConfig, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Time every (case, impl, page size); one dict per row. A failed check or a crashed impl is a visible row."""
    import torch

    from pabench.kernels import contiguous_decode_reference, sdpa_decode_attention

    say = progress or (lambda message: None)
    device = resolve_device(cfg.device)
    dtype = getattr(torch, DTYPES[cfg.dtype])
    fp8 = cfg.kv_dtype == "fp8"
    if fp8:
        from pabench.kernels.fp8 import check_fp8_device

        check_fp8_device(device)
    impls = cfg.impls or tuple(i for i in default_impls(device) if not fp8 or i in FP8_IMPLS)
    shapes = {}  # case -> (lengths, note), every case sized and checked against memory before anything runs
    for case, spec in cfg.cases().items():
        # first from the shape alone (batch x context tokens at least), so a huge one is refused before a
        # list of `batch` lengths is even drawn; then exactly, from the lengths
        cpu = device.type != "cuda"
        keep_batch, keep_context = cfg.explicit()
        batch = spec.batch if not cpu or keep_batch else min(spec.batch, CPU_MAX_BATCH)
        context = spec.context if not cpu or keep_context else min(spec.context, CPU_MAX_CONTEXT)
        check_case_memory([context], cfg.num_kv_heads, cfg.head_dim, torch.finfo(dtype).bits // 8,
                          *_free_memory(device), batch=batch)
        lens, note = case_lengths(spec, cfg.seed), ""
        if device.type != "cuda":
            lens, note = shrink_for_cpu(spec, lens, *cfg.explicit())
            if note:
                say(f"case {case}: {note}")
        check_case_memory(lens, cfg.num_kv_heads, cfg.head_dim, torch.finfo(dtype).bits // 8, *_free_memory(device))
        shapes[case] = lens, note
    env = _environment(device)
    say(f"measuring copy bandwidth on {env['device_name']}")
    copy_bw = copy_bandwidth_gbps(device, cfg.warmup_ms, cfg.rep_ms)
    timing = ("cuda-graph" if cfg.cuda_graphs else "cuda-events") if device.type == "cuda" else "wall-clock"
    if cfg.cuda_graphs and device.type != "cuda":
        say("--cuda-graphs needs CUDA: timing by wall clock")
    rows: list[dict] = []
    for case, (lens, note) in shapes.items():
        data = make_decode_data(lens, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim, dtype, device, cfg.seed)
        ref = contiguous_decode_reference(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens).float()
        exact = None
        if fp8:  # rows are checked against the dequantised cache; kv_quant_err compares with the float cache
            from pabench.kernels.fp8 import dequantize

            data, exact = to_fp8(data), ref
            ref = contiguous_decode_reference(data.q, dequantize(data.k_slab, data.k_scale),
                                              dequantize(data.v_slab, data.v_scale), data.seq_starts,
                                              data.seq_lens).float()
        elem = 1 if fp8 else torch.finfo(dtype).bits // 8  # bytes per stored K/V element
        base = {"case": case, "batch": len(lens), "mean_context": sum(lens) / len(lens), "dtype": cfg.dtype,
                "kv_dtype": "fp8" if fp8 else cfg.dtype,
                "kv_bytes": 2 * sum(lens) * cfg.num_kv_heads * cfg.head_dim * elem, "copy_bw_gbps": copy_bw,
                "timing": timing, "note": note, **env}
        jobs: list[tuple[str, int | None, Callable[[], Callable[[], Any]]]] = []
        if "torch-sdpa" in impls:
            jobs.append(("torch-sdpa", None, lambda: _sdpa_runner(sdpa_decode_attention, data)))
        for ps in cfg.resolved_page_sizes():
            paged = tuple(i for i in impls if i != "torch-sdpa")
            jobs.append(("", ps, lambda ps=ps, paged=paged: _runners(paged, data, ps, device)))
        for label, ps, setup in jobs:
            say(f"case {case}: {label or 'page size'} {ps or ''}")
            try:
                runners = setup()
                runners = runners if isinstance(runners, dict) else {label: runners}
            except Exception as err:  # noqa: BLE001 - a peer that cannot even set up is reported, not fatal
                rows.append({**base, "impl": label or "setup", "page_size": ps, "check": "ERROR", "error": _short(err)})
                continue
            for impl, fn in runners.items():
                if isinstance(fn, BaseException):
                    rows.append({**base, "impl": impl, "page_size": ps, "check": "ERROR", "error": _short(fn)})
                    continue
                rows.append({**base, "page_size": ps, **_measure(impl, fn, ref, cfg, device, copy_bw, base, exact)})
        _add_ratios([r for r in rows if r["case"] == case])
        # free the case's tensors before the next (rebinding, not del: closures above use them)
        data = ref = exact = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def resolve_device(name: str) -> Any:
    """'auto' | 'cpu' | 'cuda' -> torch.device ('auto': CUDA when torch sees one)."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA device")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def _free_memory(device: Any) -> tuple[int, str]:
    """(free bytes, 'available on cpu' / 'free on cuda') for the memory check."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0], "free on cuda"
    return host_available_bytes(), "available on cpu"


def _sdpa_runner(sdpa: Callable, data: DecodeData) -> dict[str, Callable[[], Any]]:
    """Padded SDPA with its padding mask built once, as the paged rows get their tables once (and graphs capture)."""
    from pabench.kernels import decode_padding_mask

    k_pad, v_pad = pad_slab(data)  # [batch, max_len, Hkv, D] each
    lens_cpu = data.seq_lens.cpu()  # [batch]
    mask = decode_padding_mask(lens_cpu, k_pad.shape[1], k_pad.device)  # [batch, 1, 1, max_len] or None
    _, backend = sdpa(data.q, k_pad, v_pad, lens_cpu, mask=mask)
    return {f"torch-sdpa[{backend}]": lambda: sdpa(data.q, k_pad, v_pad, lens_cpu, mask=mask)[0]}


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:200]


def _measure(impl: str, fn: Callable[[], Any], ref: Any, cfg: KernelBenchConfig, device: Any, copy_bw: float,
             base: dict, exact: Any = None) -> dict:
    """Check fn's output once against the reference, then time it. With an fp8 cache `exact` is the output over
    the float cache: kv_quant_err is what storing K/V in 8 bits costs (not a check, a measurement)."""
    import torch

    row: dict[str, Any] = {"impl": impl}
    try:
        out = fn().float()
        if device.type == "cuda":
            torch.cuda.synchronize()
        err = float((out - ref).norm() / ref.norm())
        row["rel_err"] = err
        row["check"] = "ok" if err <= TOLERANCE[cfg.dtype] else "FAIL"  # NaN fails too
        if exact is not None:
            row["kv_quant_err"] = float((out - exact).norm() / exact.norm())
        median, p10, p90 = time_us(fn, device, cfg.warmup_ms, cfg.rep_ms, cuda_graph=cfg.cuda_graphs)
    except Exception as exc:  # noqa: BLE001 - keep the other rows; this one says what broke
        row["check"] = "ERROR"
        row["error"] = _short(exc)
        return row
    gbps = base["kv_bytes"] / (median * 1e-6) / 1e9
    row.update(median_us=median, p10_us=p10, p90_us=p90, gbps=gbps, pct_of_copy_bw=100 * gbps / copy_bw)
    return row


def _add_ratios(rows: list[dict]) -> None:
    """paged_over_contiguous on triton-paged rows: its time over triton-contiguous's, same case and page size
    (the contiguous kernel ignores the page size; measuring it beside each paged row keeps the pair adjacent)."""
    contiguous = {r["page_size"]: r["median_us"] for r in rows if r["impl"] == "triton-contiguous" and "median_us" in r}
    for row in rows:
        if row["impl"] == "triton-paged" and "median_us" in row and row["page_size"] in contiguous:
            row["paged_over_contiguous"] = row["median_us"] / contiguous[row["page_size"]]
