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
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
