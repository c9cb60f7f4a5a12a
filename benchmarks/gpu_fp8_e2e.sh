#!/usr/bin/env bash
# GPU evidence for issue 19's fp8 KV cache end to end, issue 18's CUDA default run and issue 20's TP=1 path. Run on
# a CUDA machine (compute capability >= 8.9) from the repo root:   OUT=/tmp/fp8e2e bash benchmarks/gpu_fp8_e2e.sh
# Stages (STAGES, default all), most important first, each bounded by SIGINT after LIMIT seconds (a cut run still
# writes what finished):
#   tests    the fp8 GPU tests (engine, logits, mixed and decode kernels, KV write)
#   e2e      sharegpt-like on llama-3-8b's first 4 layers at 128 and 256 MiB (the tokens 1 and 2 GiB hold for the
#            32-layer model), paged vs contiguous-oracle, K/V in bf16 then fp8; then summary.txt: tok/s, mean batch,
#            each row over paged bf16 (one lever, the other, both)
#   default  a bare `pabench run` (its CUDA default: sharegpt-like, 500 requests, 4 layers)
#   torchrun `torchrun --nproc-per-node 1 -m pabench run --tensor-parallel 1` (the rank path, NCCL group of one)
set -uo pipefail
OUT=${OUT:-results/gpu/e2e/fp8}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
STAGES=${STAGES-"tests e2e default torchrun"}
LIMIT=${LIMIT:-150}
REQUESTS=${REQUESTS:-300}
MODEL=${MODEL:-llama-3-8b} LAYERS=${LAYERS:-4} DTYPE=${DTYPE:-bf16} BUDGETS=${BUDGETS:-"128MiB 256MiB"}
source "$(dirname "$0")/gpu_lib.sh"
run() {  # gpu_lib's, under a time limit per command
    log "\$ $*"; local t0=$SECONDS
    timeout -s INT -k 20 "$LIMIT" "$@" 2>&1 | tee -a "$OUT/log.txt"; log "# exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"
}
gpu_header

want tests && run $PY -m pytest -q -p no:cacheprovider -m gpu tests/engine/test_engine_gpu.py \
    tests/engine/test_logits_match.py tests/kernels/test_gpu.py -k "fp8 or write_kv"
if want e2e; then
    for budget in $BUDGETS; do
        for kv in auto fp8; do
            run $PY -m pabench run --workload sharegpt-like --model "$MODEL" --layers "$LAYERS" --dtype "$DTYPE" \
                --kv-budget $budget --num-requests "$REQUESTS" --max-num-seqs 256 --kv-dtype $kv \
                --backend paged,contiguous-oracle --no-progress --csv "$OUT/e2e_${budget}_${kv}.csv"
        done
    done
    $PY - "$OUT" <<'PYEOF' | tee "$OUT/summary.txt"
import sys, pathlib, pandas as pd
out = pathlib.Path(sys.argv[1])
rows = pd.concat([pd.read_csv(p) for p in sorted(out.glob("e2e_*.csv"))], ignore_index=True)
print("| KV budget | backend | kv_dtype | tokens held | output tok/s | mean batch | preemptions | "
      "tok/s over paged in the model dtype |")
print("|---|---|---|---|---|---|---|---|")
for budget, group in rows.groupby("kv_budget_bytes"):
    base = group[(group.backend == "paged") & (group.kv_dtype == "auto")].output_tok_per_s
    for _, r in group.sort_values(["kv_dtype", "backend"], ascending=[True, False]).iterrows():
        ratio = r.output_tok_per_s / base.iloc[0] if len(base) else float("nan")
        print(f"| {budget / 2**20:g} MiB | {r.backend} | {r.kv_dtype} | {int(r.capacity_num_tokens)} | "
              f"{r.output_tok_per_s:.0f} | {r.concurrency_mean:.1f} | {int(r.num_preemptions)} | {ratio:.2f} |")
PYEOF
fi
want default && run $PY -m pabench run --no-progress --csv "$OUT/default.csv"
if want torchrun; then
    run $PY -m torch.distributed.run --nproc-per-node 1 -m pabench run --tensor-parallel 1 --workload sharegpt-like \
        --layers 4 --num-requests 100 --backend paged,contiguous-oracle --no-progress --csv "$OUT/torchrun_tp1.csv"
fi
