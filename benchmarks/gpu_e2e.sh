#!/usr/bin/env bash
# End-to-end GPU evidence for pabench (issue 5). Run on the lent H200 from the repo root:
#   OUT=/some/dir bash benchmarks/gpu_e2e.sh
# Writes CSV/JSON and a log under $OUT; every command is echoed into $OUT/COMMANDS.txt.
set -uo pipefail
OUT=${OUT:-results/gpu/e2e}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
log() { echo "$*" | tee -a "$OUT/COMMANDS.txt"; }
run() { log "\$ $*"; "$@" 2>&1 | tee -a "$OUT/log.txt"; }

log "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
log "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
log "versions: $($PY -c 'import torch, triton, sys; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, triton {triton.__version__}")')"
log "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

STAGE=${STAGE:-all}
if [[ $STAGE == all || $STAGE == tests ]]; then
  run $PY -m pytest -q -m gpu tests -p no:cacheprovider
fi
BUDGET=${BUDGET:-8GiB}
if [[ $STAGE == all || $STAGE == sharegpt ]]; then
  run $PY -m pabench run --workload sharegpt-like --model llama-3-8b --dtype bf16 --kv-budget "$BUDGET" \
      --max-num-seqs 256 --max-model-len 2048 --no-progress --csv "$OUT/sharegpt.csv" --json "$OUT/sharegpt.json"
fi
if [[ $STAGE == all || $STAGE == parallel ]]; then
  run $PY -m pabench run --workload parallel-sampling --model llama-3-8b --dtype bf16 --kv-budget "$BUDGET" \
      --max-num-seqs 256 --max-model-len 2048 --no-progress --csv "$OUT/parallel.csv" --json "$OUT/parallel.json"
fi
if [[ $STAGE == all || $STAGE == prefix ]]; then
  run $PY -m pabench run --workload shared-prefix --model llama-3-8b --dtype bf16 --kv-budget "$BUDGET" \
      --backend paged+prefix,paged-noprefix,contiguous-oracle --max-num-seqs 256 --max-model-len 2048 \
      --no-progress --csv "$OUT/prefix.csv" --json "$OUT/prefix.json"
fi
