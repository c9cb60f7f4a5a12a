#!/usr/bin/env bash
# Where does the host time of a decode step go on the GPU machine? (issue 5: host <= 10% of device at batch 256)
#   OUT=/tmp/prof bash benchmarks/gpu_profile.sh     (then tar $OUT: the device tool returns at most 8 files)
# 1. host_bench.py on CUDA: schedule / staging / bookkeeping at batch 256 without a model;
# 2. a 400-request sharegpt-like run at 16 GiB (paged, contiguous-oracle): steps.decode_by_batch in the JSON;
# 3. the same paged run under cProfile: the top functions by own time (profiling inflates Python calls ~2x).
set -uo pipefail
OUT=${OUT:-/tmp/prof}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
export PABENCH_COMMIT=${PABENCH_COMMIT:-unknown}
log() { echo "$*" | tee -a "$OUT/COMMANDS.txt"; }
run() { log "\$ $*"; local t0=$SECONDS; "$@" 2>&1 | tee -a "$OUT/log.txt"; log "# exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"; }
log "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $PABENCH_COMMIT"
log "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
log "cpu: $(lscpu | grep 'Model name' | sed 's/ \+/ /g')"
log "versions: $($PY -c 'import torch, triton, sys; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, triton {triton.__version__}")')"
COMMON=(--workload sharegpt-like --model llama-3-8b --dtype bf16 --kv-budget "${BUDGET:-16GiB}" --max-num-seqs 256
        --max-model-len 2048 --no-progress --min-prefill-seqs 8 --num-requests "${NREQ:-400}")
run $PY benchmarks/host_bench.py --device cuda
run $PY benchmarks/host_bench.py --device cpu
run $PY -m pabench run "${COMMON[@]}" --backend paged,contiguous-oracle --json "$OUT/run.json"
run $PY -m cProfile -o "$OUT/paged.prof" -m pabench run "${COMMON[@]}" --backend paged
run $PY -c "import pstats; s = pstats.Stats('$OUT/paged.prof'); s.sort_stats('tottime').print_stats(45); s.sort_stats('cumulative').print_stats(45)"
exit 0
