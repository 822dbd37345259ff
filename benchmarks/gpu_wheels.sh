#!/usr/bin/env bash
# The wheels benchmarks/gpu_session.sh installs on the GPU machine, which lacks them (no index is reachable
# there): emolab's pins of av, soundfile (+ cffi, pycparser), transformers (its own 5.17 is older than the pin)
# and facenet-pytorch (MTCNN, the default face detector), and regex (transformers checks regex >= 2025.10.22 at
# import; the machine's version is not on record). Its numpy, torch*, opencv, huggingface_hub 1.33 (>= 1.31),
# tokenizers 0.23.2 (0.23.x), safetensors 0.8.0, typer, requests and pillow meet their needs (KINDS.md's list).
# Run here, in the repository root of the checkout the device tool sends: bash benchmarks/gpu_wheels.sh
# (DEST=.whl, PYVER=3.12: the machine's python3; a CPU dry run of the install path takes PYVER of the local python).
# ~54 MB: with the ~6 MB tree it stays under the 64 MiB a call may carry.
set -eu
DEST=${DEST:-.whl}
PYVER=${PYVER:-3.12}
PY=${PY:-python3}
grep -qx '/.whl/' .gitignore 2>/dev/null || echo "warning: .whl/ is not in .gitignore: it would travel untracked" >&2
mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" \
    av==18.1.0 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 transformers==5.24.0 facenet-pytorch==2.5.3 \
    regex==2026.11.19
ls -l "$DEST"
du -sh "$DEST"
