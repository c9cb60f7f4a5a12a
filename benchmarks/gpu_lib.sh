# Sourced by the GPU scripts in benchmarks/ after they set OUT (made here): the record every device call keeps,
# run from the repo root (PYTHONPATH=., unbuffered python; PY defaults to python3). log: a line into $OUT/COMMANDS.txt (and stdout); run: a command, its output into $OUT/log.txt, its exit
# code and seconds into COMMANDS.txt; want: is a stage in $STAGES; gpu_header: date, GPU, versions and commit
# (the device gets the working tree without .git: pass PABENCH_COMMIT=<hash> in the command to record it).
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
log() { echo "$*" | tee -a "$OUT/COMMANDS.txt"; }
run() {
    log "\$ $*"; local t0=$SECONDS
    "$@" 2>&1 | tee -a "$OUT/log.txt"; log "# exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"
}
want() { [[ " $STAGES " == *" $1 "* ]]; }
gpu_header() {
    log "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    command -v nvidia-smi > /dev/null &&
        log "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tr '\n' ';')"
    log "versions: $($PY -c 'import torch, triton, sys; print(f"python {sys.version.split()[0]}, torch '\
'{torch.__version__}, triton {triton.__version__}")')"
    export PABENCH_COMMIT=${PABENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
    log "commit: $PABENCH_COMMIT"
}
# pack DIR: $OUT/DIR as one $OUT/DIR.tar (the device returns at most 8 files per call)
pack() { tar -C "$OUT" -cf "$OUT/$1.tar" "$1" && rm -r "$OUT/$1"; }
