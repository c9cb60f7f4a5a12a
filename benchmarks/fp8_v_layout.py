"""fp8 V layout probe (issue 19): where paged fp8 decode's time goes, by variants of one probe kernel that differ only
in how V reaches the P @ V dot. Issue 19's lead: with V stored [pages, page_size, Hkv, D] (D contiguous) the dot
needs pairs of consecutive *tokens* per register, which for 8-bit values Triton reads byte by byte from shared
memory (128 ld.shared.b8 per thread per 128-token tile); V stored token-contiguous ([pages, Hkv, D, page_size],
vLLM's original V layout) gives those pairs as wide loads.
Variants: `v-rows` (today's layout), `v-cols` (V pages transposed: token-contiguous), `v-from-k` (the P @ V dot
reads the K tile again: no V bytes, the floor for any V layout), `no-v` (no second dot: S only), `v-join` (today's
layout, even and odd tokens loaded as two row tiles, converted, then interleaved in registers: no byte gathers),
`v-join-asm` (v-join with K and V converted by packed inline PTX), `v-cols-at` (v-cols' pages as the A operand
of O^T = V^T @ P^T, whose contracted axis, tokens, is then the contiguous one), `v-cols-fp8` (v-cols' pages read
by an e4m3 x e4m3 dot with P x 256 rounded to e4m3, as Triton's fp8 attention tutorial stores V transposed).
The probe is a plain split-K kernel (fixed splits per sequence, partials merged by torch outside the timing), so it
is compared with itself; the production kernel's time is printed beside it. Every variant that computes attention
is checked against the float reference. Run on a CUDA machine from the repo root:
    PYTHONPATH=. python3 benchmarks/fp8_v_layout.py [--modes v-rows,v-join] [--tilings 128/2/128] > fp8_v_layout.txt
    PYTHONPATH=. python3 benchmarks/fp8_v_layout.py --compile-only   # no GPU: registers, spills, PTX op counts
"""

from __future__ import annotations

import argparse

import torch
import triton
import triton.language as tl

from pabench.kernelbench.data import make_decode_data, paginate, to_fp8
from pabench.kernelbench.run import NAMED_CASES, case_lengths
from pabench.kernelbench.timing import copy_bandwidth_gbps, time_us
from pabench.kernels import paged_decode_attention, paged_decode_reference
from pabench.kernels.decode import tile_pages
from pabench.kernels.fp8 import dequantize, dot_query

MODES = {"v-rows": 0, "v-cols": 1, "v-from-k": 2, "no-v": 3, "v-join": 4, "v-join-asm": 5, "v-cols-at": 6,
         "v-cols-fp8": 7}
LOG2E = 1.4426950408889634


@triton.jit
def e4m3_to_f16(x, ASM: tl.constexpr):
    """e4m3 values as fp16: ASM converts four bytes of a register per two packed instructions (no byte moves)."""
    if ASM:
        return tl.inline_asm_elementwise(
            "{ .reg .b16 lo, hi; mov.b32 {lo, hi}, $2; cvt.rn.f16x2.e4m3x2 $0, lo; cvt.rn.f16x2.e4m3x2 $1, hi; }",
            "=r,=r,r", [x.to(tl.uint8, bitcast=True)], dtype=tl.float16, is_pure=True, pack=4)
    return x.to(tl.float16)


@triton.jit
def _probe_kernel(q_ptr, k_ptr, v_ptr, table_ptr, lens_ptr, k_scale_ptr, v_scale_ptr, out_ptr, lse_ptr,
                  chunk, sm_scale_log2,
                  stride_qb, stride_qh, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh, stride_vd,
                  stride_tb, stride_ob, stride_os, stride_oh, stride_lb, stride_ls,
                  SPLITS: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE_SIZE: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, V_MODE: tl.constexpr):
    """One program = split `pid % SPLITS` of sequence `pid // SPLITS` for one KV head; fp32 partials out."""
    seq = tl.program_id(0) // SPLITS
    split = tl.program_id(0) % SPLITS
    kv_head = tl.program_id(1)
    seq_len = tl.load(lens_ptr + seq)
    start = split * chunk
    end = tl.minimum(start + chunk, seq_len)
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    q_heads = kv_head * GROUP + offs_h  # [BLOCK_H]
    h_mask = offs_h < GROUP
    q = tl.load(q_ptr + seq * stride_qb + q_heads[:, None] * stride_qh + offs_d[None, :], mask=h_mask[:, None],
                other=0.0)  # [BLOCK_H, D]
    q, qk_scale = dot_query(q, sm_scale_log2, k_scale_ptr, True, False)
    table_row = table_ptr + seq * stride_tb
    k_base = k_ptr + kv_head * stride_kh
    v_base = v_ptr + kv_head * stride_vh
    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, HEAD_DIM], tl.float32)
    acc_t = tl.zeros([HEAD_DIM, BLOCK_H], tl.float32)  # V_MODE 6 accumulates O transposed
    for tile in range(start, end, BLOCK_N):
        tok = tile + offs_n  # [BLOCK_N]
        tok_mask = tok < end
        cur = tile_pages(table_row, tile, end, PAGE_SIZE, BLOCK_N)  # [BLOCK_N] (or scalar)
        slot = tok % PAGE_SIZE
        k = e4m3_to_f16(tl.load(k_base + (cur * stride_kp + slot * stride_ks)[:, None] + offs_d[None, :],
                                mask=tok_mask[:, None], other=0.0), V_MODE == 5)  # [N, D]
        s = tl.dot(q, tl.trans(k)) * qk_scale  # [BLOCK_H, N]
        s = tl.where(tok_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])  # [BLOCK_H, N]
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if V_MODE == 0:  # V [pages, page_size, Hkv, D]: D contiguous
            v = tl.load(v_base + (cur * stride_vp + slot * stride_vs)[:, None] + offs_d[None, :],
                        mask=tok_mask[:, None], other=0.0).to(tl.float16)  # [N, D]
            acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), v)
        elif V_MODE == 1:  # V [pages, Hkv, D, page_size]: tokens contiguous within a page
            vt = tl.load(v_base + offs_d[:, None] * stride_vd + (cur * stride_vp + slot * stride_vs)[None, :],
                         mask=tok_mask[None, :], other=0.0).to(tl.float16)  # [D, N]
            acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), tl.trans(vt))
        elif V_MODE == 4 or V_MODE == 5:  # today's layout, even and odd tokens loaded apart, interleaved in registers
            # (5: K and V converted by packed inline asm)
            rows = cur * stride_vp + slot * stride_vs  # [N]
            rows_e, rows_o = tl.split(tl.reshape(rows, (BLOCK_N // 2, 2)))  # [N/2] each: tokens 2i, 2i + 1
            mask_e, mask_o = tl.split(tl.reshape(tok_mask, (BLOCK_N // 2, 2)))
            ve = tl.load(v_base + rows_e[:, None] + offs_d[None, :], mask=mask_e[:, None], other=0.0)  # [N/2, D]
            vo = tl.load(v_base + rows_o[:, None] + offs_d[None, :], mask=mask_o[:, None], other=0.0)
            v = tl.join(e4m3_to_f16(ve, V_MODE == 5), e4m3_to_f16(vo, V_MODE == 5))  # [N/2, D, 2]
            v = tl.reshape(tl.permute(v, (0, 2, 1)), (BLOCK_N, HEAD_DIM))  # [N, D], token order
            acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), v)
        elif V_MODE == 6:  # V pages token-contiguous, as the A operand of O^T = V^T @ P^T (tokens are its K axis)
            vt = tl.load(v_base + offs_d[:, None] * stride_vd + (cur * stride_vp + slot * stride_vs)[None, :],
                         mask=tok_mask[None, :], other=0.0).to(tl.float16)  # [D, N]
            acc_t = acc_t * alpha[None, :] + tl.dot(vt, tl.trans(p.to(tl.float16)))  # [D, BLOCK_H]
        elif V_MODE == 7:  # V pages token-contiguous, P rounded to e4m3: an fp8 x fp8 dot straight from the pages
            vt = tl.load(v_base + offs_d[:, None] * stride_vd + (cur * stride_vp + slot * stride_vs)[None, :],
                         mask=tok_mask[None, :], other=0.0)  # [D, N] e4m3
            p8 = (p * 256.0).to(tl.float8e4nv)  # [BLOCK_H, N]; p <= 1, so x256 keeps it in e4m3's normal range
            acc = acc * alpha[:, None] + tl.dot(p8, tl.trans(vt)) * (1.0 / 256.0)
        elif V_MODE == 2:
            acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), k)
        else:
            acc = acc * alpha[:, None] + tl.sum(p, axis=1)[:, None]
        m_i = m_new
    if V_MODE == 6:
        acc = tl.trans(acc_t)  # [BLOCK_H, D], once per chunk
    acc = acc * tl.load(v_scale_ptr)
    out = out_ptr + seq * stride_ob + split * stride_os + q_heads[:, None] * stride_oh + offs_d[None, :]
    tl.store(out, acc / l_i[:, None], mask=h_mask[:, None])
    tl.store(lse_ptr + seq * stride_lb + split * stride_ls + q_heads, m_i + tl.log2(l_i), mask=h_mask)


def probe(mode: str, q, k, v, table, lens, k_scale, v_scale, splits: int, block_n: int, stages: int,
          maxnreg: int, group: int, warps: int = 4):
    """A runner: the probe kernel, then (outside its timing) a torch merge of its partials into [B, Hq, D]."""
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[2]
    chunk = triton.cdiv(triton.cdiv(int(lens.max()), splits), block_n) * block_n
    part = torch.empty(batch, splits, num_q_heads, head_dim, device=q.device, dtype=torch.float32)
    lse = torch.empty(batch, splits, num_q_heads, device=q.device, dtype=torch.float32)
    if mode.startswith("v-cols"):  # v: [P, Hkv, D, S]
        svp, svs, svh, svd = v.stride(0), v.stride(3), v.stride(1), v.stride(2)
    else:  # v: [P, S, Hkv, D]
        svp, svs, svh, svd = v.stride(0), v.stride(1), v.stride(2), 1
    options = {"maxnreg": maxnreg} if maxnreg else {}

    def kernel():
        _probe_kernel[(batch * splits, num_kv_heads)](
            q, k, v, table, lens, k_scale, v_scale, part, lse, chunk, head_dim ** -0.5 * LOG2E,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), svp, svs, svh, svd, table.stride(0),
            part.stride(0), part.stride(1), part.stride(2), lse.stride(0), lse.stride(1),
            SPLITS=splits, GROUP=group, HEAD_DIM=head_dim, PAGE_SIZE=k.shape[1], BLOCK_H=max(16, group),
            BLOCK_N=block_n, V_MODE=MODES[mode], num_warps=warps, num_stages=stages, **options)

    def merged():
        kernel()
        weight = torch.softmax(lse * 0.6931471805599453, dim=1)  # [B, splits, Hq], log2 -> ln
        return (part.nan_to_num(0.0) * weight[..., None]).sum(1).to(q.dtype)  # [B, Hq, D]; empty splits weigh 0

    return kernel, merged


POINTERS = {"q_ptr": "*bf16", "k_ptr": "*fp8e4nv", "v_ptr": "*fp8e4nv", "table_ptr": "*i32", "lens_ptr": "*i32",
            "k_scale_ptr": "*fp32", "v_scale_ptr": "*fp32", "out_ptr": "*fp32", "lse_ptr": "*fp32"}
OPS = ("ld.shared.b8", "st.shared.b8", "ldmatrix", "cp.async.cg", "mma.sync", "wgmma.mma_async")


def compile_only(modes: list[str], tilings: list[tuple[int, int, int, int]]) -> None:
    """No GPU needed: each variant compiled for sm_90 as a launch specializes it (pointers and strides divisible by
    16, v-cols' token stride 1 a constant), then Triton's bundled `ptxas -v`: registers, spills, PTX op counts.
    With the device's Triton installed locally this reproduces its census (what the kernel compiles to there)."""
    import collections
    import os
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from decode_ptx_census import launch_alignment  # benchmarks/ is this script's folder, first on sys.path

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    print(f"triton {triton.__version__}, sm_90, case a's shape (32 / 8 heads, head_dim 128, page 16)")
    for block_n, stages, maxnreg, warps in tilings:
        for mode in modes:
            consts = dict(SPLITS=2, GROUP=4, HEAD_DIM=128, PAGE_SIZE=16, BLOCK_H=16, BLOCK_N=block_n,
                          V_MODE=MODES[mode], **({"stride_vs": 1} if mode.startswith("v-cols") else {}))
            scalars = {"sm_scale_log2": "fp32"}  # every other non-pointer argument is an i32
            sig = {name: "constexpr" if name in consts else POINTERS.get(name, scalars.get(name, "i32"))
                   for name in _probe_kernel.arg_names}
            attrs = launch_alignment(_probe_kernel.arg_names, consts)
            options = {"num_warps": warps, "num_stages": stages, **({"maxnreg": maxnreg} if maxnreg else {})}
            kernel = triton.compile(ASTSource(_probe_kernel, sig, constexprs=consts, attrs=attrs),
                                    target=GPUTarget("cuda", 90, 32), options=options)
            ptx = kernel.asm["ptx"]
            with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
                f.write(ptx)
                f.flush()
                cap = [f"--maxrregcount={maxnreg}"] if maxnreg else []
                info = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", *cap, f.name, "-o", os.devnull],
                                      capture_output=True, text=True).stderr
            regs = re.search(r"Used (\d+) registers", info)
            spills = re.search(r"(\d+) bytes spill stores", info)
            ops = collections.Counter(re.findall(r"^\s*([a-z][a-z0-9._]*)", ptx, re.M))
            counts = "  ".join(f"{op} {sum(n for o, n in ops.items() if o.startswith(op))}" for op in OPS)
            print(f"block_n {block_n} stages {stages} maxnreg {maxnreg} warps {warps} {mode}: registers "
                  f"{regs.group(1) if regs else '?'}, spill stores {spills.group(1) if spills else '?'} B, "
                  f"{sum(ops.values())} PTX instructions; {counts}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="a,b")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--tilings", default="128/2/128,64/2/128,64/3/0,128/3/0",
                        help="block_n/stages/maxnreg[/warps],...")
    parser.add_argument("--compile-only", action="store_true", help="no GPU: registers, spills and PTX op counts")
    args = parser.parse_args()
    modes = args.modes.split(",")
    # (block_n, stages, maxnreg, warps), warps 4 unless given
    tilings = [(*(int(x) for x in t.split("/")), 4)[:4] for t in args.tilings.split(",")]
    if args.compile_only:
        return compile_only(modes, tilings)
    device = torch.device("cuda")
    copy = copy_bandwidth_gbps(device, 25, 200)
    print(f"device {torch.cuda.get_device_name(device)}, copy bandwidth {copy:.0f} GB/s")
    for case in args.cases.split(","):
        lens_list = case_lengths(NAMED_CASES[case])
        data = to_fp8(make_decode_data(lens_list, 32, 8, 128, torch.bfloat16, device, seed=0))
        k, v, table = paginate(data, 16)  # [P, 16, 8, 128] each
        v_cols = v.permute(0, 2, 3, 1).contiguous()  # [P, Hkv, D, S]: the same values, tokens contiguous
        q, lens, (ks, vs) = data.q, data.seq_lens, (data.k_scale, data.v_scale)
        kv_bytes = 2 * sum(lens_list) * 8 * 128  # one byte per element
        ref = paged_decode_reference(q, dequantize(k, ks), dequantize(v, vs), table, lens).float()  # [B, Hq, D]
        prod = time_us(lambda: paged_decode_attention(q, k, v, table, lens, impl="triton", check_values=False,
                                                      k_scale=ks, v_scale=vs), device, 25, 200, cuda_graph=True)[0]
        print(f"case {case}: production paged fp8 {prod:.1f} us ({100 * kv_bytes / prod / 1e3 / copy:.1f}% copy)")
        splits = max(1, (132 * 8) // (len(lens_list) * 8))
        for block_n, stages, maxnreg, warps in tilings:
            for mode in modes:
                pages = v_cols if mode.startswith("v-cols") else v
                kernel, merged = probe(mode, q, k, pages, table, lens, ks, vs, splits, block_n, stages, maxnreg, 4,
                                       warps)
                check = ""
                if mode not in ("v-from-k", "no-v"):
                    out = merged().float()
                    err = ((out - ref).norm() / ref.norm()).item()
                    check = f", rel err {err:.4f}" + ("" if err < 0.06 and out.isfinite().all() else " FAIL")
                t = time_us(kernel, device, 25, 200, cuda_graph=True)[0]
                print(f"case {case} block_n {block_n} stages {stages} maxnreg {maxnreg} warps {warps} splits {splits} "
                      f"{mode}: {t:.1f} us ({100 * kv_bytes / t / 1e3 / copy:.1f}% copy){check}", flush=True)


if __name__ == "__main__":
    main()
