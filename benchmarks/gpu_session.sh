#!/usr/bin/env bash
# Issue 18's GPU figures in one run on a lent GPU machine (the `device` tool), from the repository root:
#
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=590)
#
# It installs the wheels the machine lacks (av, soundfile, cffi, transformers: `pip download` them into .whl/,
# listed in .git/info/exclude, see the project notes), then runs each measure under its own time limit, so that
# whatever finished comes back in $OUT (results/*.json, logs/*.log) even if a later step runs out of time.
# QUICK=1 shrinks every step and SCALE=k multiplies every time limit (a dry run of the whole flow on a CPU:
# `QUICK=1 SCALE=8 OUT=/tmp/g PY=.venv/bin/python bash benchmarks/gpu_session.sh`).
set -u
OUT=${OUT:-/tmp/emolab-gpu}
mkdir -p "$OUT/results" "$OUT/logs"
PY=${PY:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >"$OUT/logs/pip.log" 2>&1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export EMOLAB_CACHE_DIR=${EMOLAB_CACHE_DIR:-/tmp/emolab-cache}
R=$OUT/results
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, say how it ended
    local name=$1 limit=$(( $2 * ${SCALE:-1} )); shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
    echo "$name: exit $? in $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  nproc; $PY -c "import torch; print(torch.__version__, torch.cuda.is_available())"; } >"$OUT/machine.txt" 2>&1

if [ "${QUICK:-0}" = 1 ]; then
    B="--quick"; J="--fusion audio --folds 0 --seeds 0,1 --jobs 1,2"; CLIPS=8; WCLIPS=8
else
    B=""; J="--jobs 1,2,4"; CLIPS=24; WCLIPS=1080
fi
# 1. the CUDA tests (log-Mel and featuriser on the device equal the CPU's)
step cuda_tests 60 $PY -m pytest -q -p no:cacheprovider -o addopts="" tests/test_audio.py tests/test_features.py -k cuda
# 2. batch 8: every mode against the trainer's bf16 step; the WavLM feature cache at RAVDESS size (1080 clips)
step bench_b8 170 $PY -m emolab bench $B --modes audio,video,gated,xattn --batch_size 8 --clips $CLIPS \
    --wavlm base --wavlm_clips $WCLIPS --out "$R/bench_gpu.json"
# 3. batch 32
step bench_b32 90 $PY -m emolab bench $B --modes audio,video,gated,xattn --batch_size 32 --clips $CLIPS \
    --wavlm none --out "$R/bench_gpu_b32.json"
# 4. --compile: compile seconds, speed-up over eager, graphs reused
step bench_compile 110 $PY -m emolab bench $B --modes audio,gated --compile --clips 8 --wavlm none \
    --out "$R/bench_gpu_compile.json"
# 5. several runs on one GPU: fold x seed runs per hour for --jobs 1, 2, 4 (demo corpus)
step bench_jobs 150 $PY benchmarks/bench_jobs.py $J --face_detector haar --out "$R/jobs_gpu.json"
cat "$OUT/steps.txt"
