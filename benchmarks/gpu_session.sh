#!/usr/bin/env bash
# Issue 18's GPU figures on a lent GPU machine (the `device` tool), in one prepared call.
#
# Before the call, once, in the repository root of the session's own checkout (the device tool sends that one):
#     bash benchmarks/gpu_wheels.sh            # the wheels the machine lacks (av, soundfile, cffi, pycparser,
#                                              # transformers, facenet-pytorch, regex; ~54 MB) into .whl/ (git-ignored)
# Then ONE call (a session has 15 min of device time, the machine's start included: no second full call fits):
#     run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=590)
# It runs the steps below in the order issue 18 needs them, each under its own time limit and all of them under
# BUDGET seconds (default 560, so the command ends before 590 s); a step that the budget no longer holds is
# skipped and says so. PART=1 runs steps 1-3 only, PART=2 steps 4-8 only (both fit the budget alone): when the
# first call reports skipped or timed-out steps, a LATER session runs
#     run(command="PART=2 bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=590)
# (or STEPS="compile wavlm" for a chosen few; names as in steps.txt).
#
#   1. b8       emolab bench, batch 8, audio/video/gated/xattn: end to end vs the trainer's bf16 step     150 s
#   2. b32      the same at batch 32                                                                      110 s
#   3. jobs     bench_jobs.py --jobs 1,2,4: fold x seed runs per hour on one GPU (gated, demo corpus)    170 s
#   4. compile  emolab bench --compile, audio and gated: compile s (empty inductor cache), speed-up      170 s
#   5. wavlm    bench_wavlm.py: WavLM feature cache at 1080 clips (break-even epochs)                      80 s
#   6. decode2  bench_data.py under taskset on 2 cores, 2 workers: cold decode vs the seed's loader        45 s
#   7. decodeN  the same on every core, one worker per core (16 on the H200 machine)                       45 s
#   8. cuda     the CUDA tests (log-Mel, featuriser, resident GPU path equal the CPU's)                45 s
# Before them (inside the budget): the wheels into /tmp/site (shadowing the machine's own copies: PYTHONPATH
# puts /tmp/site first), an import check (machine.txt: each package's version and path; stops if one the steps
# need is missing), and 48 RAVDESS-sized clips (1280x720, 3.5 s, H.264) made once on every core (step `clips`)
# for steps 1, 2, 4, 6, 7.
#
# What comes back under $OUT (at most 8 files come back: so two): steps.txt (how each step ended) and
# session.tgz (results/*.json, logs/*.log, machine.txt, steps.txt; refreshed after every step, so it holds
# whatever finished even if the call is cut short). In the next session, from the reply's files_at folder:
#     mkdir -p /tmp/g && tar -xzf FILES_AT/session.tgz -C /tmp/g && cp /tmp/g/results/*.json benchmarks/results/
#     python benchmarks/gpu_tables.py          # the markdown tables for benchmarks/README.md
#
# Dry run on a CPU (every step, small sizes; SCALE multiplies every limit and the budget):
#     QUICK=1 SCALE=8 OUT=/tmp/gdry PY=.venv/bin/python nice -n 19 bash benchmarks/gpu_session.sh
set -u
case "${PART:-all}" in
    1) STEPS=${STEPS:-"b8 b32 jobs"} ;;
    2) STEPS=${STEPS:-"compile wavlm decode2 decodeN cuda"} ;;
    all) STEPS=${STEPS:-"b8 b32 jobs compile wavlm decode2 decodeN cuda"} ;;
    *) echo "PART must be 1, 2 or all, got ${PART}" >&2; exit 2 ;;
esac
OUT=${OUT:-/tmp/emolab-gpu}
PY=${PY:-python3}
SCALE=${SCALE:-1}
BUDGET=${BUDGET:-560}
SITE=${SITE:-/tmp/site}
W=$(mktemp -d "${TMPDIR:-/tmp}/emolab-gpu-work.XXXXXX")  # results, logs, clips, caches: not under $OUT
NCORES=${NCORES:-$(nproc)}
T_END=$(( SECONDS + BUDGET * SCALE ))
R=$W/results
LOGS=$W/logs
mkdir -p "$OUT" "$R" "$LOGS"
: >"$W/steps.txt"; : >"$W/machine.txt"
trap 'rm -rf "$W"' EXIT  # the clips, caches and work files; what matters is in $OUT/session.tgz
mkdir -p "$W/tmp"; export TMPDIR=$W/tmp  # the steps' temporary folders too (a step cut short leaves its own)

pack() {  # refresh $OUT/session.tgz and $OUT/steps.txt (atomically: a cut-short call still returns the last one)
    tar -czf "$OUT/session.tgz.tmp" -C "$W" results logs steps.txt machine.txt 2>/dev/null \
        && mv -f "$OUT/session.tgz.tmp" "$OUT/session.tgz"
    cp "$W/steps.txt" "$OUT/steps.txt"
}
say() { echo "$*" | tee -a "$W/steps.txt"; }
wanted() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
step() {  # step NAME SECONDS COMMAND...: run under min(SECONDS x SCALE, what is left of the budget), log, pack
    local name=$1 want=$(( $2 * SCALE )); shift 2
    local left=$(( T_END - SECONDS - 10 ))  # 10 s: timeout's -k grace
    local limit=$(( want < left ? want : left ))
    if [ "$limit" -lt $(( 20 * SCALE )) ]; then
        say "$name: SKIPPED (budget: $(( T_END - SECONDS )) s left)"; pack; return 1
    fi
    local t0=$SECONDS rc
    timeout -k 10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    if [ $rc = 124 ] || [ $rc = 137 ]; then
        say "$name: TIMED OUT at $limit s (exit $rc; its JSON, written at the end, is missing)"
    else
        say "$name: exit $rc in $(( SECONDS - t0 )) s (limit $limit s)"
    fi
    pack
    return $rc
}

# 0. the wheels, then what each package is and where it comes from
if ls .whl/*.whl >/dev/null 2>&1; then
    if ! timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/*.whl >"$LOGS/pip.log" 2>&1; then
        say "pip install of .whl/*.whl into $SITE failed (logs/pip.log):"; tail -5 "$LOGS/pip.log"; pack; exit 1
    fi
    export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}
    say "installed $(ls .whl/*.whl | wc -l) wheels into $SITE in $SECONDS s"
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    say "no .whl/*.whl: using the machine's packages (bash benchmarks/gpu_wheels.sh makes them)"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export EMOLAB_CACHE_DIR=$W/cache  # the benches use their own temporary caches; this keeps strays out of ~
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  echo "nproc $(nproc); NCORES $NCORES; PYTHONPATH $PYTHONPATH; PY $PY"
  "$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
need = ["torch", "torchaudio", "torchvision", "numpy", "cv2", "av", "soundfile", "transformers", "emolab"]
missing = []
for name in need + ["cffi", "regex", "huggingface_hub", "tokenizers", "facenet_pytorch", "pytest"]:
    try:
        mod = importlib.import_module(name)
        print(f"{name:16} {getattr(mod, '__version__', '?'):14} {mod.__file__}")
    except Exception as err:  # noqa: BLE001 - report every failure, then decide
        print(f"{name:16} MISSING        {type(err).__name__}: {err}")
        missing += [name] if name in need else []
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
from emolab.data.faces import make_face_detector
print("mtcnn face detector:", make_face_detector("mtcnn").reason or "available")
sys.exit(f"missing: {', '.join(missing)}" if missing else 0)
EOF
} >"$W/machine.txt" 2>&1
check=$?
cat "$W/machine.txt"
if [ $check != 0 ]; then say "import check failed (machine.txt): nothing measured"; pack; exit 1; fi

if [ "${QUICK:-0}" = 1 ]; then  # a dry run of every step on a CPU: small sizes, the same code paths
    SIZE=320x180; NCLIPS=16; Q="--quick"; M8="audio,gated"; M32="audio"; C32=8; MC="audio"
    JOBS="--fusion audio --folds 0 --seeds 0,1 --jobs 1,2"; WAV="--clips 16 --wavlm small --epochs 1"; DC=8
else
    SIZE=1280x720; NCLIPS=48; Q=""; M8="audio,video,gated,xattn"; M32=$M8; C32=32; MC="audio,gated"
    JOBS="--jobs 1,2,4"; WAV="--clips 1080 --wavlm base --epochs 2"; DC=48
fi
CLIPS=$W/clips
if ! step clips 60 "$PY" benchmarks/bench_data.py --generate "$CLIPS" --clips $NCLIPS --size $SIZE \
        --processes "$NCORES"; then
    say "no clips: steps b8 b32 compile decode2 decodeN cannot run"
fi
B="$PY -m emolab bench $Q --data $CLIPS --size $SIZE --wavlm none"  # --size: what the JSON says the clips are
PIN2="taskset -c 0,1"  # 2 cores: the process and its workers (their `cores` in the JSON says 2)
command -v taskset >/dev/null || { PIN2=""; say "no taskset: decode2 runs 2 workers on every core"; }
for s in $STEPS; do
    case $s in
    b8) step b8 150 $B --modes $M8 --batch_size 8 --out "$R/bench_gpu.json" ;;
    b32) step b32 110 $B --modes $M32 --batch_size 32 --clips $C32 --growth_base 2 --out "$R/bench_gpu_b32.json" ;;
    jobs) step jobs 170 "$PY" benchmarks/bench_jobs.py $JOBS --face_detector haar --out "$R/jobs_gpu.json" ;;
    compile) step compile 170 $B --modes $MC --compile --clips 8 --growth_base 2 --split_clips 256 \
                 --out "$R/bench_gpu_compile.json" ;;
    wavlm) step wavlm 80 "$PY" benchmarks/bench_wavlm.py $WAV --processes "$NCORES" --out "$R/wavlm_gpu.json" ;;
    decode2) step decode2 45 $PIN2 "$PY" benchmarks/bench_data.py --data "$CLIPS" --size $SIZE \
                 --clips $DC --batch_size 2 --workers 2 --out "$R/data_gpu_2cores.json" ;;
    decodeN) step decodeN 45 "$PY" benchmarks/bench_data.py --data "$CLIPS" --size $SIZE --clips $DC --batch_size 2 \
                 --workers "$NCORES" --out "$R/data_gpu_${NCORES}cores.json" ;;
    cuda) step cuda 45 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" tests/test_audio.py \
              tests/test_features.py tests/test_resident.py -k cuda ;;
    *) say "unknown step $s (b8 b32 jobs compile wavlm decode2 decodeN cuda)" ;;
    esac
done
say "done in $SECONDS s (budget $(( BUDGET * SCALE )) s)"
pack
cat "$W/steps.txt"
