#!/usr/bin/env bash
# GPU evidence for beam search (issue 16) and chunked prefill (issue 17). Run on a CUDA machine from the repo root:
#   OUT=/tmp/f1 STAGES="tests beam chunked" bash benchmarks/gpu_features.sh
# Stages:
#   tests    `pytest -m gpu` (every GPU test: the beam, chunked and padding paths included)
#   beam     `beam-search` (width 4) with paged, contiguous-max, contiguous-oracle and paged-reprefill at a tight
#            (BEAM_TIGHT, default 512MiB) and a loose (BEAM_LOOSE, default 16GiB) budget; max_model_len 512, which
#            holds the preset's longest prompt + output (128 + 256), so that contiguous-max reserves what it must
#   chunked  `long-prompts` with paged and contiguous-oracle, unchunked (8192-token prefill budget, the default)
#            and chunked at CHUNK_BUDGETS tokens per step (default "2048 512"), CHUNK_BUDGET KV (default 16GiB)
#   longctx  `long-context-poisson` (prompts to 7,680 tokens, max_model_len 8192), the same comparison at CTX_BUDGETS
#            (default "512") tokens per step; UNCHUNKED=0 skips the unchunked run of chunked/longctx
#   ctxgather  longctx's chunked runs with PABENCH_MIXED_ATTENTION=gather: mixed steps gather every context and run
#            FlashAttention varlen, the path before the unified kernel (files ctx_gather_chunked_N)
#   beamorder  `beam-search` at BEAM_LOOSE with each order in BEAM_ORDERS (default: oracle then max, max then
#            oracle): does the first backend of a beam run lose at equal batch? (files beam_order_N)
#   models   `pabench kernels --models all` (issue 19's shape list: every model's heads, uniform, lognormal and skewed
#            lengths, page 16), the Triton kernels and SDPA only (MODEL_IMPLS; FlexAttention compiles per shape)
#   mixed    `benchmarks/mixed_attention.py`: one layer's mixed-step attention, unified vs gather vs separate launches
# MODEL, LAYERS (empty: all) and NREQ (empty: the preset's) shrink the runs for a CPU smoke check of this script.
# Through the `device` tool, write to a scratch OUT and tar it into the tool's $OUT (it returns at most 8 files).
set -uo pipefail
OUT=${OUT:-results/gpu/e2e/features}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
STAGES=${STAGES-"tests beam chunked longctx mixed"}
MODEL=${MODEL:-llama-3-8b}
SHRINK=()
[[ -n "${LAYERS:-}" ]] && SHRINK+=(--layers "$LAYERS")
[[ -n "${NREQ:-}" ]] && SHRINK+=(--num-requests "$NREQ")
source "$(dirname "$0")/gpu_lib.sh"
gpu_header

want tests && run $PY -m pytest -q -m gpu tests -p no:cacheprovider
if want beam; then
    for budget in "${BEAM_TIGHT:-512MiB}" "${BEAM_LOOSE:-16GiB}"; do
        run $PY -m pabench run --workload beam-search --model "$MODEL" "${SHRINK[@]}" --dtype bf16 --kv-budget "$budget" \
            --max-num-seqs 256 --max-model-len 512 --no-progress \
            --backend "${BEAM_BACKENDS:-paged,contiguous-max,contiguous-oracle,paged-reprefill}" \
            --csv "$OUT/beam_$budget.csv" --json "$OUT/beam_$budget.json"
    done
fi
if want beamorder; then
    i=0
    for order in ${BEAM_ORDERS:-contiguous-oracle,contiguous-max contiguous-max,contiguous-oracle}; do
        i=$((i + 1))
        run $PY -m pabench run --workload beam-search --model "$MODEL" "${SHRINK[@]}" --dtype bf16 \
            --kv-budget "${BEAM_LOOSE:-16GiB}" --max-num-seqs 256 --max-model-len 512 --no-progress --backend "$order" \
            --csv "$OUT/beam_order_$i.csv" --json "$OUT/beam_order_$i.json"
    done
fi
# chunking PREFIX WORKLOAD MAX_MODEL_LEN "TOKENS..." -- paged and contiguous-oracle unchunked, then chunked at each budget
chunking() {
    local prefix=$1 workload=$2 max_len=$3 budgets=$4 tokens
    local args=(--workload "$workload" --model "$MODEL" "${SHRINK[@]}" --dtype bf16 --kv-budget "${CHUNK_BUDGET:-16GiB}"
                --max-num-seqs 256 --max-model-len "$max_len" --no-progress --backend paged,contiguous-oracle)
    [[ "${UNCHUNKED:-1}" == 1 && "$prefix" != *gather* ]] && \
        run $PY -m pabench run "${args[@]}" --csv "$OUT/${prefix}_unchunked.csv" --json "$OUT/${prefix}_unchunked.json"
    for tokens in $budgets; do
        run $PY -m pabench run "${args[@]}" --chunked-prefill --max-batched-tokens "$tokens" \
            --csv "$OUT/${prefix}_chunked_$tokens.csv" --json "$OUT/${prefix}_chunked_$tokens.json"
    done
}
want chunked && chunking long long-prompts 2048 "${CHUNK_BUDGETS:-2048 512}"
want longctx && chunking ctx long-context-poisson 8192 "${CTX_BUDGETS:-512}"
if want ctxgather; then
    log "# PABENCH_MIXED_ATTENTION=gather"
    export PABENCH_MIXED_ATTENTION=gather
    chunking ctx_gather long-context-poisson 8192 "${CTX_BUDGETS:-512}"
    unset PABENCH_MIXED_ATTENTION
fi
want mixed && run $PY benchmarks/mixed_attention.py --out "$OUT"
want models && run $PY -m pabench kernels --models all --impls "${MODEL_IMPLS:-triton-paged,triton-contiguous,torch-sdpa}" \
    --csv "$OUT/kernels_models.csv" --json "$OUT/kernels_models.json"
exit 0
