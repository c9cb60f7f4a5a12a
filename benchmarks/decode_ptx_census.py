"""What the decode chunk kernel compiles to (issue 19's fp8 lead): per variant (bf16 / fp8 K/V, paged / contiguous,
the heuristic's tiling), counts of the PTX instructions that say how tiles travel: cp.async (pipelined global ->
shared copies), ld.global, ldmatrix, st/ld.shared, cvt, mma. Compiles for the local GPU (or, without one, for sm_90
offline); writes each variant's PTX under --out. Pointers and strides carry the 16-divisibility that Triton's launcher
specializes a real call on (s15-6 compiled without it: unaligned addresses, so no cp.async and byte-wide loads, which
is not what the kernels run).
    PYTHONPATH=. python3 benchmarks/decode_ptx_census.py --out $OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from pabench.kernels.checks import DecodeShape
from pabench.kernels.decode import CHUNK_KERNEL
from pabench.kernels.tiling import choose_decode_config

STRIDES = ("stride_qb", "stride_qh", "stride_kp", "stride_ks", "stride_kh", "stride_vp", "stride_vs", "stride_vh",
           "stride_tb", "stride_oc", "stride_oh", "stride_lc")
OPS = ("cp.async.ca", "cp.async.cg", "cp.async.bulk", "ld.global", "ldmatrix", "st.shared", "ld.shared", "ld.shared.b8",
       "cvt.", "mma.sync", "wgmma")


def launch_alignment(arg_names: list[str], unaligned: set[str] | dict = frozenset()) -> dict:
    """The `tt.divisibility` 16 that Triton's launcher gives a real call's pointers (torch allocations) and its
    strides (multiples of 16 at these shapes), minus the `unaligned` names: an offline compile without it sees
    unaligned addresses (no cp.async, byte-wide loads) and describes code no launch runs."""
    return {(i,): [["tt.divisibility", 16]] for i, name in enumerate(arg_names)
            if name not in unaligned and (name.endswith("_ptr") or name.startswith("stride"))}


def compile_variant(kv_fp8: bool, paged: bool, target: GPUTarget):
    """The chunk kernel for Llama-3-8B's heads (32 / 8, head_dim 128), page 16, batch 64, under the heuristic."""
    config = choose_decode_config(DecodeShape(64, 32, 8, 128, 16, 4096), torch.bfloat16, kv_fp8=kv_fp8, paged=paged)
    kv = "fp8e4nv" if kv_fp8 else "bf16"
    sig = {"q_ptr": "*bf16", "k_ptr": f"*{kv}", "v_ptr": f"*{kv}", "table_ptr": "*i32", "lens_ptr": "*i32",
           "k_scale_ptr": "*fp32", "v_scale_ptr": "*fp32", "part_out_ptr": "*fp32", "part_lse_ptr": "*fp32",
           "batch": "i32", "target_chunks": "i32", "min_chunk": "i32", "sm_scale_log2": "fp32",
           **{name: "i32" for name in STRIDES}}
    consts = dict(NUM_KV_HEADS=8, GROUP=4, HEAD_DIM=128, PAGE_SIZE=16, PAGED=paged, BLOCK_B=64, BLOCK_H=16,
                  BLOCK_N=config.block_n, PREFETCH_PAGES=config.prefetch_pages, DOT_PRECISION="tf32",
                  DOT_UPCAST=False, KV_FP8=kv_fp8)
    aligned = launch_alignment(CHUNK_KERNEL.arg_names, {"stride_tb"})  # the table's stride: pages per sequence
    sig.update({name: "constexpr" for name in consts})
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages, **config.launch_options()}
    return config, triton.compile(ASTSource(CHUNK_KERNEL, sig, constexprs=consts, attrs=aligned), target=target,
                                  options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        target = GPUTarget("cuda", major * 10 + minor, 32)
    else:
        target = GPUTarget("cuda", 90, 32)
    print(f"triton {triton.__version__}, target {target}")
    for kv_fp8 in (False, True):
        for paged in (True, False):
            config, kernel = compile_variant(kv_fp8, paged, target)
            ptx = kernel.asm["ptx"]
            name = f"{'fp8' if kv_fp8 else 'bf16'}_{'paged' if paged else 'contiguous'}"
            (args.out / f"{name}.ptx").write_text(ptx)
            counts = "  ".join(f"{op.rstrip('.')} {ptx.count(op)}" for op in OPS)
            if torch.cuda.is_available():
                kernel._init_handles()  # loads the binary: registers and spills become known
            regs = (getattr(kernel, "n_regs", None), getattr(kernel, "n_spills", None))
            print(f"{name}: block_n {config.block_n} stages {config.num_stages} maxnreg {config.maxnreg} "
                  f"regs/spills {regs}: {counts}", flush=True)


if __name__ == "__main__":
    main()
