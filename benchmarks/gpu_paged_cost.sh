#!/usr/bin/env bash
# Issue 15 on the H200: where paging's cost goes at equal batch (benchmarks/paged_cost.py), one lease call.
#   OUT=dir STAGES="diag" bash benchmarks/gpu_paged_cost.sh
# diag: one-step prefill micro-benchmark, then default/async/noprefix variants twice each (paged, oracle
# alternating, so each backend runs both first and after the other), then a profiler window per backend.
# diag2: the decode kernel alone per tiling at the run's full-batch shape, then default and sync engines with the
# backend order reversed every other round.
set -uo pipefail
OUT=${OUT:?set OUT}
mkdir -p "$OUT"
export PYTHONPATH=.
for stage in ${STAGES:-diag}; do
  case $stage in
    diag) python3 benchmarks/paged_cost.py --micro 50,300,2000 --variants default,async,noprefix --rounds 2 \
            --profile --out "$OUT/diag" 2>&1 | tee "$OUT/diag.txt" ;;
    diag2) python3 benchmarks/paged_cost.py --decode-sweep --variants default,sync --rounds 2 --alternate \
            --out "$OUT/diag2" 2>&1 | tee "$OUT/diag2.txt" ;;
    equal4)  # targets 1 and 2: the command at 4 and 1 GiB, each order twice (4 GiB) / once (1 GiB)
      E="--workload sharegpt-like --model llama-3-8b --layers 4 --dtype bf16 --max-num-seqs 256 --max-model-len 2048"
      for run in a b c d; do
        case $run in a|c) B=paged,contiguous-oracle ;; *) B=contiguous-oracle,paged ;; esac
        python3 -m pabench run $E --kv-budget 4GiB --backend $B --no-progress \
          --csv "$OUT/equal4_$run.csv" --json "$OUT/equal4_$run.json" 2>&1 | tee "$OUT/equal4_$run.txt"
      done
      for run in a b; do
        case $run in a) B=paged,contiguous-oracle ;; *) B=contiguous-oracle,paged ;; esac
        python3 -m pabench run $E --kv-budget 1GiB --backend $B --no-progress \
          --csv "$OUT/budget1_$run.csv" --json "$OUT/budget1_$run.json" 2>&1 | tee "$OUT/budget1_$run.txt"
      done ;;
    full32)  # target 3: all 32 layers at 16 GiB (host over device at the peak batch) and 2 GiB
      E="--workload sharegpt-like --model llama-3-8b --dtype bf16 --max-num-seqs 256 --max-model-len 2048"
      python3 -m pabench run $E --kv-budget 16GiB --min-prefill-seqs 8 --backend paged,contiguous-oracle \
        --no-progress --csv "$OUT/full32_16gib.csv" --json "$OUT/full32_16gib.json" 2>&1 | tee "$OUT/full32_16gib.txt"
      python3 -m pabench run $E --kv-budget 2GiB --backend paged,contiguous-oracle \
        --no-progress --csv "$OUT/full32_2gib.csv" --json "$OUT/full32_2gib.json" 2>&1 | tee "$OUT/full32_2gib.txt" ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
