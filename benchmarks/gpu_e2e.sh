#!/usr/bin/env bash
# End-to-end GPU evidence for pabench (issue 5). Run on a CUDA machine from the repo root:
#   OUT=results/gpu/e2e STAGES="tests smoke sharegpt prefix parallel graphs sweep" bash benchmarks/gpu_e2e.sh
# Extra stages: "guards" (issue 14's size checks and /dev/null write-through on CUDA), "equal4" (issue 15's equal-batch paged vs oracle, 4 layers at 4 GiB), "budget2" (sharegpt at 2 GiB; BUDGET2_BACKENDS, BUDGET2_TAG), "hostbench" (host_bench.py on CUDA),
# "async" / "async2" (paged and contiguous-oracle with --async-scheduling at BUDGET / 2 GiB; ASYNC2_BACKENDS, ASYNC2_TAG),
# "probe" (prefill attention cold/warm per SDPA backend), "order" / "order_torch" (paged first,
# oracle second, same 300 requests: with pabench's prefill defaults / with torch's own SDPA choice and a
# per-sequence loop, the code before 2026-11-30's second session), "budget4" (sharegpt at 4 GiB).
# BUDGET (default 16GiB) is the KV budget of every stage but budget4 and sweep; MIN_PREFILL (default 1) is every
# run's --min-prefill-seqs (the committed 2026-11-30 headline used 8). Through the `device` tool, write to a
# scratch OUT and tar it into the tool's $OUT (it returns at most 8 files), as results/gpu/e2e/*/COMMANDS.txt show.
# Writes CSV/JSON and log.txt under $OUT; every command is echoed into $OUT/COMMANDS.txt. Each stage runs
# even when an earlier one failed (the log says which).
set -uo pipefail
OUT=${OUT:-results/gpu/e2e}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
STAGES=${STAGES-"tests smoke sharegpt prefix parallel graphs sweep"}  # set but empty: no stage
BUDGET=${BUDGET:-16GiB}
MIN_PREFILL=${MIN_PREFILL:-1}  # --min-prefill-seqs of every run (1 = admit as soon as a seat frees)
COMMON=(--model llama-3-8b --dtype bf16 --kv-budget "$BUDGET" --max-num-seqs 256 --max-model-len 2048 --no-progress
        --min-prefill-seqs "$MIN_PREFILL")
source "$(dirname "$0")/gpu_lib.sh"
gpu_header

want tests && run $PY -m pytest -q -m gpu tests -p no:cacheprovider
want probe && run $PY benchmarks/prefill_probe.py --out "$OUT/prefill_probe.csv"
want smoke && run $PY -m pabench run --model llama-3-8b --layers 2 --num-requests 48 --no-progress --csv "$OUT/smoke.csv"
want sharegpt && run $PY -m pabench run --workload sharegpt-like "${COMMON[@]}" --backend "${SHAREGPT_BACKENDS:-all}" \
    --csv "$OUT/sharegpt.csv" --json "$OUT/sharegpt.json"
want parallel && run $PY -m pabench run --workload parallel-sampling "${COMMON[@]}" --num-requests 64 \
    --backend paged,contiguous-max,contiguous-oracle --csv "$OUT/parallel.csv" --json "$OUT/parallel.json"
want prefix && run $PY -m pabench run --workload shared-prefix "${COMMON[@]}" --backend paged+prefix,paged-noprefix,contiguous-oracle \
    --csv "$OUT/prefix.csv" --json "$OUT/prefix.json"
# Does the first backend of a run pay one-time prefill costs? Same requests, paged first, once with torch's own
# SDPA backend choice for prefill (before) and once with pabench's default (flash, then memory-efficient).
want order_torch && run env PABENCH_PREFILL_SDPA=torch $PY -m pabench run --workload sharegpt-like "${COMMON[@]}" \
    --num-requests 300 --backend paged,contiguous-oracle --json "$OUT/order_sdpa_torch.json"
want order && run $PY -m pabench run --workload sharegpt-like "${COMMON[@]}" --num-requests 300 \
    --backend paged,contiguous-oracle --json "$OUT/order_sdpa_default.json"
# The same comparison at half the budget (lower batches: decode steps closer to weight-bound).
want budget4 && run $PY -m pabench run --workload sharegpt-like --model llama-3-8b --dtype bf16 --kv-budget 4GiB \
    --max-num-seqs 256 --max-model-len 2048 --no-progress --min-prefill-seqs "$MIN_PREFILL" \
    --backend "${BUDGET4_BACKENDS:-all}" --csv "$OUT/sharegpt_4gib.csv" --json "$OUT/sharegpt_4gib.json"
# The smallest budget of the headline (2 GiB): where paging's larger batches pay most.
want budget2 && run $PY -m pabench run --workload sharegpt-like --model llama-3-8b --dtype bf16 --kv-budget 2GiB \
    --max-num-seqs 256 --max-model-len 2048 --no-progress --min-prefill-seqs "$MIN_PREFILL" \
    --backend "${BUDGET2_BACKENDS:-all}" --csv "$OUT/sharegpt_2gib${BUDGET2_TAG:-}.csv" --json "$OUT/sharegpt_2gib${BUDGET2_TAG:-}.json"
want hostbench && run $PY benchmarks/host_bench.py --device cuda
# --async-scheduling (engine/pipelined.py) against the synchronous engine, same runs as the sharegpt and budget2
# stages for paged and contiguous-oracle: what overlapping host work with device time buys each.
want async && run $PY -m pabench run --workload sharegpt-like "${COMMON[@]}" --backend paged,contiguous-oracle \
    --async-scheduling --csv "$OUT/sharegpt_async.csv" --json "$OUT/sharegpt_async.json"
want async2 && run $PY -m pabench run --workload sharegpt-like --model llama-3-8b --dtype bf16 --kv-budget 2GiB \
    --max-num-seqs 256 --max-model-len 2048 --no-progress --min-prefill-seqs "$MIN_PREFILL" \
    --backend "${ASYNC2_BACKENDS:-paged,contiguous-oracle}" --async-scheduling \
    --csv "$OUT/sharegpt_2gib_async${ASYNC2_TAG:-}.csv" --json "$OUT/sharegpt_2gib_async${ASYNC2_TAG:-}.json"
# Before/after for CUDA graphs: the same (shorter) sharegpt run with eager and with graphed decode steps.
want graphs && run $PY -m pabench run --workload sharegpt-like "${COMMON[@]}" --num-requests 150 --backend paged,contiguous-max \
    --no-cuda-graphs --csv "$OUT/graphs_off.csv"
want graphs && run $PY -m pabench run --workload sharegpt-like "${COMMON[@]}" --num-requests 150 --backend paged,contiguous-max \
    --cuda-graphs --csv "$OUT/graphs_on.csv"
# Page-size sweep for the plots (4 layers of llama-3-8b to fit the lease; same shapes per layer).
# Issue 15's equal-batch check: 4 layers of llama-3-8b at 4 GiB, where paged and contiguous-oracle run the same
# batches; the paged / oracle ratio is what paging's own implementation costs (target >= 0.98).
if want equal4; then  # both backend orders; the report fails the stage when paging costs more than 5% at equal batch
    run $PY -m pabench run --workload sharegpt-like --model llama-3-8b --layers 4 --dtype bf16 \
        --kv-budget 4GiB --max-num-seqs 256 --max-model-len 2048 --no-progress --backend paged,contiguous-oracle \
        --csv "$OUT/equal4.csv" --json "$OUT/equal4.json"
    run $PY -m pabench run --workload sharegpt-like --model llama-3-8b --layers 4 --dtype bf16 \
        --kv-budget 4GiB --max-num-seqs 256 --max-model-len 2048 --no-progress --backend contiguous-oracle,paged \
        --csv "$OUT/equal4_reversed.csv" --json "$OUT/equal4_reversed.json"
    run $PY benchmarks/equal_batch_report.py --min-ratio 0.95 "$OUT/equal4.json" "$OUT/equal4_reversed.json"
fi
# Issue 14's guards on a real CUDA box (a throwaway machine, as root): budgets past the GPU's memory are one line,
# and exports to /dev/null and /dev/stdout (a pipe here) are written through, leaving both what they were.
if want guards; then
    run $PY -m pabench run --kv-budget 1TiB --no-progress
    run $PY -m pabench run --kv-budget 100TiB --no-progress
    run $PY -m pabench run --num-pages 1000000000000 --no-progress
    run $PY -m pabench run --max-model-len 100000000 --no-progress
    log "before: /dev/null is a $(stat -c %F /dev/null), /dev/stdout -> $(readlink -f /dev/stdout)"
    run $PY -m pabench run --model llama-3-8b --layers 2 --num-requests 16 --no-progress --backend paged,contiguous-oracle \
        --csv /dev/null --json /dev/stdout
    log "after: /dev/null is a $(stat -c %F /dev/null) ($(stat -c %t,%T /dev/null)), /dev/stdout is a $(stat -L -c %F /dev/stdout)"
fi
want sweep && run $PY -m pabench sweep --workload sharegpt-like --model llama-3-8b --layers 4 --num-requests 200 \
    --page-sizes 8,16,32,64,128 --backend paged,contiguous-max,contiguous-oracle --max-model-len 2048 --no-progress \
    --dtype bf16 --kv-budgets 1GiB --min-prefill-seqs "$MIN_PREFILL" --csv "$OUT/sweep_page_size.csv" \
    --json "$OUT/sweep_page_size.json"
exit 0
