#!/usr/bin/env bash
# GPU evidence for issue 19's fp8 KV cache at kernel level. Run on a CUDA machine (compute capability >= 8.9) from
# the repo root:   OUT=/tmp/fp8 bash benchmarks/gpu_fp8.sh
# Stages (STAGES, default all): tests (the fp8 and KV-write GPU tests), kernels (`pabench kernels --case all`, bf16
# then fp8 K/V, CUDA-graph timing: % of copy bandwidth with bytes at 1 per fp8 element, kv_quant_err), models
# (`--models all` with fp8 K/V), tiling (benchmarks/fp8_tiling.py: fp8 tilings on cases a and b).
set -uo pipefail
OUT=${OUT:-results/gpu/kernels/fp8}
STAGES=${STAGES-"tests kernels models tiling"}
source "$(dirname "$0")/gpu_lib.sh"
gpu_header

want tests && run $PY -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "fp8 or write_kv"
IMPLS=triton-paged,triton-contiguous
if want kernels; then
    run $PY -m pabench kernels --case all --page-sizes 16 --cuda-graphs --impls $IMPLS,torch-sdpa \
        --csv "$OUT/kernels_bf16.csv"
    run $PY -m pabench kernels --case all --page-sizes 16 --cuda-graphs --impls $IMPLS --kv-dtype fp8 \
        --csv "$OUT/kernels_fp8.csv"
fi
want models && run $PY -m pabench kernels --models all --impls $IMPLS --kv-dtype fp8 --csv "$OUT/models_fp8.csv"
if want tiling; then
    run $PY benchmarks/fp8_tiling.py
fi
