#!/usr/bin/env bash
# GPU evidence for issue 20, tensor parallelism: llama-3-8b (all 32 layers) and llama-3.1-70b (its first LAYERS70
# layers: what fits one H200 at TP=1 beside the KV budget) at TP=1 and TP=2 on sharegpt-like, paged vs
# contiguous-oracle: output tok/s, scaling efficiency (TP=2 tok/s / (2 x TP=1's)), the per-GPU KV budget and the tokens
# it holds, host time per decode step; then logits and tokens of a small TP=2 run against TP=1 (tp_check.py agree).
# Run from the repo root on a machine with 2 GPUs (TPS="1" runs the TP=1 half on one GPU):
#   OUT=/tmp/tp bash benchmarks/gpu_tp.sh
# Knobs [defaults]: STAGES ["8b 70b agree summary"], TPS ["1 2"], BUDGET [16GiB per GPU: at TP=2 each GPU holds half
# of every page, so the same budget holds twice the tokens, as vLLM's gpu_memory_utilization does], LAYERS70 [48:
# 48 x 1.7 GB of bf16 weights + 4.2 GB of embedding and LM head at TP=1], NREQ [500], BACKENDS
# [paged,contiguous-oracle], SAMEPAGES [1: also a TP=2 run with TP=1's page count, the same schedule, so the two
# differ only by the sharding]. NCCL's NVLink multicast stays off (NCCL_NVLS_ENABLE=0). Every stage runs even when an
# earlier one failed (the log says which); every command is echoed into $OUT/COMMANDS.txt.
# CPU smoke check of the plumbing: DEVICE=cpu MODEL8=tiny LAYERS8= NREQ=4 BUDGET=8MiB STAGES="8b agree summary".
set -uo pipefail
OUT=${OUT:-results/gpu/tp}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
STAGES=${STAGES-"8b 70b agree summary"}  # set but empty: no stage
TPS=${TPS:-1 2}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-16GiB}
NREQ=${NREQ:-500}
BACKENDS=${BACKENDS:-paged,contiguous-oracle}
MODEL8=${MODEL8:-llama-3-8b}
LAYERS8=${LAYERS8-32}
LAYERS70=${LAYERS70:-48}
SAMEPAGES=${SAMEPAGES:-1}
source "$(dirname "$0")/gpu_lib.sh"  # log, run, want (its header is its own: GPUs, topology, NCCL)

log "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
command -v nvidia-smi > /dev/null && log "gpu: $(nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader | tr '\n' ';')"
command -v nvidia-smi > /dev/null && log "topology: $(nvidia-smi topo -m 2>/dev/null | head -3 | tr '\n' ';')"
log "versions: $($PY -c 'import torch, triton, sys; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, triton {triton.__version__}, nccl {torch.cuda.nccl.version() if torch.cuda.is_available() else None}")')"
export PABENCH_COMMIT=${PABENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
log "commit: $PABENCH_COMMIT"

# one model at each TP: `<tag>_tp<N>.csv` (summarize reads these names)
serve() {  # tag model layers
    local tag=$1 model=$2 layers=$3 shrink=() tp
    [[ -n "$layers" ]] && shrink=(--layers "$layers")
    for tp in $TPS; do
        run $PY -m pabench run --workload sharegpt-like --model "$model" "${shrink[@]}" --device "$DEVICE" \
            --num-requests "$NREQ" --backend "$BACKENDS" --kv-budget "$BUDGET" --tensor-parallel "$tp" --no-progress \
            --csv "$OUT/${tag}_tp${tp}.csv" --json "$OUT/${tag}_tp${tp}.json"
    done
    if [[ "$SAMEPAGES" == 1 && " $TPS " == *" 2 "* && -f "$OUT/${tag}_tp1.csv" ]]; then  # TP=1's pages at TP=2
        local pages
        pages=$($PY -c "import csv,sys; print(next(r['capacity_num_pages'] for r in csv.DictReader(open(sys.argv[1])) if r['backend'] == 'paged'))" "$OUT/${tag}_tp1.csv")
        run $PY -m pabench run --workload sharegpt-like --model "$model" "${shrink[@]}" --device "$DEVICE" \
            --num-requests "$NREQ" --backend "$BACKENDS" --num-pages "$pages" --tensor-parallel 2 --no-progress \
            --csv "$OUT/${tag}-samepages_tp2.csv" --json "$OUT/${tag}-samepages_tp2.json"
    fi
}

want 8b && serve 8b "$MODEL8" "$LAYERS8"
want 70b && serve 70b llama-3.1-70b "$LAYERS70"
if want agree; then  # small runs, eager (no CUDA graphs, synchronous): logits of every step against TP=1
    for tp in $TPS; do
        [[ "$tp" == 1 ]] && continue
        run $PY benchmarks/tp_check.py agree --device "$DEVICE" --model "$MODEL8" ${LAYERS8:+--layers 4} --tp "$tp" \
            --num-requests 16
    done
fi
want summary && run $PY benchmarks/tp_check.py summarize "$OUT"
