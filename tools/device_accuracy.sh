#!/usr/bin/env bash
# Device side of tools/device_bundle.sh: unpack the carried parts, make CTranslate2's libcublas.so.12
# resolve to the image's cuBLAS 13 (that image has CUDA 13 only; users get cuBLAS 12 from
# ./install.sh --cuda), then bench/accuracy.py on CUDA and on 2 of the machine's cores.
#   bash tools/device_accuracy.sh [extra bench/accuracy.py arguments, e.g. --set whisper.long_segment_s=0]
set -u
G=/tmp/gpu; B=$G/b
mkdir -p "$B"
if [ ! -d "$B/site" ]; then cat $G/part_00 $G/part_01 .gpu/p2/part_02 | xz -T0 -d | tar -x -C "$B" || exit 1; fi
export PYTHONPATH=$B/site PYTHONUNBUFFERED=1
CUBLAS=$(find / -xdev -name 'libcublas.so.13*' 2>/dev/null | head -1)
mkdir -p $G/cu12 && ln -sf "$CUBLAS" $G/cu12/libcublas.so.12
export LD_LIBRARY_PATH=$G/cu12:$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 --version
M="whisper.model_dir=\"$B/whisper-base-ct2\""
OUT=${OUT:-/tmp}
python3 bench/accuracy.py --device cuda --only .wav --streams 1 4 --audio "$B/audio" --set "$M" "$@" 2>&1 | tee "$OUT/accuracy_cuda.txt"
taskset -c 0,1 env OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 \
    python3 bench/accuracy.py --device cpu --only .wav --streams 1 4 --audio "$B/audio" --set "$M" "$@" 2>&1 | tee "$OUT/accuracy_cpu2.txt"
