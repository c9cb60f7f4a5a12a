#!/usr/bin/env bash
# One device call after a change to the decode tiling (issue 19) or the block manager's hot path (issue 15):
#   OUT=/tmp/d1 bash benchmarks/gpu_decode_check.sh
# Stages (STAGES, default all): tests (the decode, fp8 and graph GPU tests), models (`pabench kernels --models all`
# in bf16 and fp8, CUDA-graph replays), cases (`pabench kernels --case all` in fp8, CUDA-graph timing), equal4
# (issue 15's equal-batch command at 4 GiB, each backend order twice; the ratios via equal_batch_report.py),
# levers (issue 19's 32-layer fp8 evidence as one `pabench sweep` over KV budgets 1 and 2 GiB x kv dtypes auto and
# fp8, paged and contiguous-oracle; not in the default), peers (`--models` per model against FlashInfer's
# tensor-core and CUDA-core paged decode, installed from the wheels in .whl/, which the call must carry; FlashInfer
# JIT-compiles its kernels with the device's nvcc on first use; not in the default), vprobe (fp8_v_layout.py: where
# paged fp8 decode's time goes by V layout, and decode_ptx_census.py's instruction counts, registers and spills;
# not in the default), floor (shape_tiling.py --stage floor: the heuristic's chunk floor against none, per shape;
# not in the default), fp8shapes (shape_tiling.py --stage fp8: fp8 pages on every shape under the fp8 heuristic and
# its neighbours, for a per-shape fp8 tiling; not in the default). The device returns at most 8 files, so the equal-batch
# runs come back as one tarball.
set -uo pipefail
OUT=${OUT:?set OUT}
STAGES=${STAGES-"tests models cases equal4"}
source "$(dirname "$0")/gpu_lib.sh"
gpu_header

want tests && run $PY -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "fp8 or config or graph"
IMPLS=triton-paged,triton-contiguous
want models && run $PY -m pabench kernels --models all --cuda-graphs --impls $IMPLS --csv "$OUT/models_bf16.csv"
want models && run $PY -m pabench kernels --models all --cuda-graphs --impls $IMPLS --kv-dtype fp8 \
    --csv "$OUT/models_fp8.csv"
want cases && run $PY -m pabench kernels --case all --page-sizes 16 --cuda-graphs --impls $IMPLS --kv-dtype fp8 \
    --csv "$OUT/cases_fp8.csv"
if want equal4; then
    E="--workload sharegpt-like --model llama-3-8b --layers 4 --dtype bf16 --max-num-seqs 256 --max-model-len 2048"
    mkdir -p "$OUT/equal4"
    for r in a b c d; do
        case $r in a|c) B=paged,contiguous-oracle ;; *) B=contiguous-oracle,paged ;; esac
        run $PY -m pabench run $E --kv-budget 4GiB --backend $B --no-progress --csv "$OUT/equal4/equal4_$r.csv" \
            --json "$OUT/equal4/equal4_$r.json"
    done
    run $PY benchmarks/equal_batch_report.py "$OUT"/equal4/equal4_*.json
    gzip -9 "$OUT"/equal4/*.json && pack equal4
fi
if want levers; then
    run $PY -m pabench sweep --workload sharegpt-like --model llama-3-8b --layers 32 --dtype bf16 \
        --kv-budgets 1GiB,2GiB --kv-dtypes auto,fp8 --page-sizes 16 --num-requests 300 --max-num-seqs 256 \
        --backend paged,contiguous-oracle --no-progress --csv "$OUT/levers_32l.csv"
fi
if want peers; then
    if ls .whl/*.whl > /dev/null 2>&1; then
        run $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
        export PYTHONPATH=$PYTHONPATH:/tmp/site
    fi
    export FLASHINFER_CUDA_ARCH_LIST=${FLASHINFER_CUDA_ARCH_LIST:-9.0} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
    run $PY -c "import flashinfer; print('flashinfer', flashinfer.__version__)"
    PEERS=triton-paged,triton-contiguous,flashinfer-paged,flashinfer-paged-cc
    mkdir -p "$OUT/peers"
    for m in ${PEER_MODELS:-llama-3-8b llama-3.2-1b llama-3-70b llama-3.2-3b qwen2.5-1.5b qwen2.5-7b llama-2-7b}; do
        run timeout ${PEER_TIMEOUT:-300} $PY -m pabench kernels --models $m --cuda-graphs --impls $PEERS \
            --csv "$OUT/peers/$m.csv"
    done
    pack peers
fi
if want vprobe; then
    run $PY benchmarks/fp8_v_layout.py ${VPROBE_ARGS:-}
    run $PY benchmarks/decode_ptx_census.py --out "$OUT/census"
    pack census
fi
want floor && run $PY benchmarks/shape_tiling.py --stage floor --out "$OUT" --budget-s ${FLOOR_BUDGET_S:-130}
want fp8shapes && run $PY benchmarks/shape_tiling.py --stage fp8 --out "$OUT" --budget-s ${FP8_BUDGET_S:-300}
