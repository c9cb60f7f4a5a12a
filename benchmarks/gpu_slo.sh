#!/usr/bin/env bash
# GPU evidence for issue 18's SLO search: per backend and KV budget, the highest Poisson request rate whose run meets
# the latency targets (`pabench sweep --slo`), then the plot "max sustainable rate vs KV budget". Run from the repo
# root on a CUDA machine, e.g. one call per budget group (the plot concatenates the CSVs):
#   OUT=/tmp/slo1 BUDGETS=128MiB,512MiB bash benchmarks/gpu_slo.sh
# Knobs (defaults in brackets): MODEL [llama-3-8b], LAYERS [4], WORKLOAD [sharegpt-like], NREQ [200], BUDGETS
# [128MiB,256MiB,512MiB,1GiB,2GiB], RATES [8,24,72,216], SLO ["ttft_p99_ms<=1000,tpot_p99_ms<=20"], ITER [2],
# MAXLEN [2048], BACKENDS [paged,contiguous-oracle,contiguous-max], LIMIT_S [540: the sweep gets SIGINT then and writes what it has].
# With 4 of llama-3-8b's 32 layers a token's KV is 1/8 of the full model's, so 128MiB-2GiB holds the tokens that
# 1-16 GiB holds for the 32-layer model. MODEL=tiny LAYERS= NREQ=20 RATES=2,8 BUDGETS=8MiB is a CPU smoke check.
set -uo pipefail
OUT=${OUT:-results/gpu/e2e/slo}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
MODEL=${MODEL:-llama-3-8b}
LAYERS=${LAYERS-4}
WORKLOAD=${WORKLOAD:-sharegpt-like}
NREQ=${NREQ:-200}
BUDGETS=${BUDGETS:-128MiB,256MiB,512MiB,1GiB,2GiB}
RATES=${RATES:-8,24,72,216}
SLO=${SLO:-ttft_p99_ms<=1000,tpot_p99_ms<=20}
ITER=${ITER:-2}
BACKENDS=${BACKENDS:-paged,contiguous-oracle,contiguous-max}
MAXLEN=${MAXLEN:-2048}
LIMIT_S=${LIMIT_S:-540}
TAG=${TAG:-$(echo "$BUDGETS" | tr ',' '_')}
SHRINK=()
[[ -n "$LAYERS" ]] && SHRINK+=(--layers "$LAYERS")
source "$(dirname "$0")/gpu_lib.sh"
gpu_header

run timeout -s INT "$LIMIT_S" $PY -m pabench sweep --workload "$WORKLOAD" --model "$MODEL" "${SHRINK[@]}" \
    --num-requests "$NREQ" --max-model-len "$MAXLEN" --backend "$BACKENDS" --page-sizes 16 --kv-budgets "$BUDGETS" --rates "$RATES" \
    --slo "$SLO" --slo-iterations "$ITER" --no-progress --csv "$OUT/slo_$TAG.csv" --json "$OUT/slo_$TAG.json"
run $PY -m pabench plot "$OUT"/slo_*.csv --output "$OUT/slo.png"
