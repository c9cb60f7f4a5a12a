#!/usr/bin/env bash
# GPU evidence for issue 19's fp8 KV cache at kernel level. Run on a CUDA machine (compute capability >= 8.9) from
# the repo root:   OUT=/tmp/fp8 bash benchmarks/gpu_fp8.sh
# Stages (STAGES, default all): tests (the fp8 and KV-write GPU tests), kernels (`pabench kernels --case all`, bf16
# then fp8 K/V, CUDA-graph timing: % of copy bandwidth with bytes at 1 per fp8 element, kv_quant_err), models
# (`--models all` with fp8 K/V), tiling (benchmarks/fp8_tiling.py: fp8 tilings on cases a and b).
set -uo pipefail
OUT=${OUT:-results/gpu/kernels/fp8}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
STAGES=${STAGES-"tests kernels models tiling"}
log() { echo "$*" | tee -a "$OUT/COMMANDS.txt"; }
run() { log "\$ $*"; local t0=$SECONDS; "$@" 2>&1 | tee -a "$OUT/log.txt"; log "# exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"; }
want() { [[ " $STAGES " == *" $1 "* ]]; }

log "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
command -v nvidia-smi > /dev/null && log "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
log "versions: $($PY -c 'import torch, triton, sys; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, triton {triton.__version__}")')"
export PABENCH_COMMIT=${PABENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
log "commit: $PABENCH_COMMIT"

want tests && run $PY -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "fp8 or write_kv"
IMPLS=triton-paged,triton-contiguous
if want kernels; then
    run $PY -m pabench kernels --case all --page-sizes 16 --cuda-graphs --impls $IMPLS,torch-sdpa \
        --csv "$OUT/kernels_bf16.csv"
    run $PY -m pabench kernels --case all --page-sizes 16 --cuda-graphs --impls $IMPLS --kv-dtype fp8 \
        --csv "$OUT/kernels_fp8.csv"
fi
want models && run $PY -m pabench kernels --models all --impls $IMPLS --kv-dtype fp8 --csv "$OUT/models_fp8.csv"
want tiling && run $PY benchmarks/fp8_tiling.py
