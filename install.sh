#!/usr/bin/env bash
# One command installs everything into ./.venv: system tools for test speech, torch (CPU build
# pinned first so nothing pulls a multi-GB CUDA build), then this project with its test extras.
#   ./install.sh --cuda      torch's CUDA build instead (GPU machines: NVIDIA driver; README "GPU")
#   ./install.sh --dry-run   print the install commands, run none (with or without --cuda)
#   ./install.sh --keep-venv keep a copy of the finished .venv outside the clone and start the next
#                            clone's .venv from it (CI: a fresh clone every run; see "Kept .venv" below)
set -euo pipefail
cd "$(dirname "$0")"

CUDA=0 DRY=0 KEEP=0
for arg in "$@"; do
    case "$arg" in
        --cuda) CUDA=1 ;;
        --dry-run) DRY=1 ;;
        --keep-venv) KEEP=1 ;;
        *) echo "usage: ./install.sh [--cuda] [--dry-run] [--keep-venv] (unknown argument: $arg)" >&2; exit 2 ;;
    esac
done
run() { if ((DRY)); then echo "+ $*"; else "$@"; fi; }

# Debian packages: test speech (espeak-ng, sox), the browser tests (chromium, CJK fonts), Node for
# the JS client library and its tests, PostgreSQL. Only what is missing is installed.
# redis-server: the tests start a throwaway one for caption sessions shared by front ends ([cluster] redis_url).
declare -A package_of=([espeak-ng]="espeak-ng" [sox]="sox libsox-fmt-all" [chromium]="chromium fonts-noto-cjk"
                       [node]="nodejs" [npm]="npm" [redis-server]="redis-server")
pkgs=()
for tool in espeak-ng sox chromium node npm redis-server; do
    command -v "$tool" >/dev/null || pkgs+=(${package_of[$tool]})
done
# PostgreSQL's server (the tests start a throwaway cluster for the PostgreSQL store; Debian keeps
# initdb off PATH, under /usr/lib/postgresql/<version>/bin).
if ! command -v initdb >/dev/null && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    pkgs+=(postgresql)
fi
if ((${#pkgs[@]})); then
    if [[ $(id -u) == 0 ]]; then SUDO=(); else SUDO=(sudo); fi
    if command -v apt-get >/dev/null; then
        run "${SUDO[@]}" apt-get install -y -q "${pkgs[@]}" >/dev/null \
            || { run "${SUDO[@]}" apt-get update -q >/dev/null && run "${SUDO[@]}" apt-get install -y -q "${pkgs[@]}" >/dev/null; }
    else
        echo "note: install ${pkgs[*]} yourself (only the tests need them)" >&2
    fi
fi

install_python_packages() {
    run python3 -m venv .venv
    run .venv/bin/pip install -q --no-compile --upgrade pip
    if ((CUDA)); then
        # PyPI's default torch wheel for Linux x86_64 is the CUDA build (it brings the nvidia-* CUDA
        # libraries). A CPU build already in .venv also satisfies the pin, so it goes first; local
        # wheel folders (find-links) may hold only +cpu builds, so they are left out for torch.
        if ((DRY)) || [[ $(.venv/bin/python -c 'import torch; print(torch.version.cuda or "")' 2>/dev/null) == "" ]]; then
            run .venv/bin/pip uninstall -q -y torch || true
        fi
        run env PIP_FIND_LINKS= .venv/bin/pip install -q --no-compile --no-cache-dir "torch==2.13.0"
        # CTranslate2 (Whisper) brings its own CUDA kernels but loads cuBLAS 12 and cuDNN 9 at run time.
        run .venv/bin/pip install -q --no-compile "nvidia-cublas-cu12" "nvidia-cudnn-cu12==9.*"
    else
        run .venv/bin/pip install -q --no-compile torch==2.13.0
    fi
    # pyproject's dependencies include ray[serve] (the shared inference pool, [inference] backend = "ray";
    # a 79 MB wheel, about 240 MB installed): the tests start a local Ray cluster of their own on loopback.
    run .venv/bin/pip install -q --no-compile -e ".[test]"
    # FunASR's client packages from PyPI, run unchanged by the tests. Both install the import name
    # `funasr_client`, so each gets a folder of its own (their dependencies come with the test extras).
    for client in funasr-client==0.1.6 funasr-python==0.1.5; do
        run .venv/bin/pip install -q --no-compile --no-deps --upgrade --target ".venv/third-party/${client%%==*}" "$client"
    done
    # Bytecode for everything installed, on every core at once: pip compiles each package's files one by
    # one as it installs them (--no-compile above), which took 1m40 of a 3m20 install on 2 cores; this
    # takes about 45 s. A few files meant for newer Pythons (torch's tests) do not compile, as with pip.
    run .venv/bin/python -m compileall -q -q -j 0 .venv || true
}

# Kept .venv (--keep-venv). Installing the Python packages from pip's cache takes ~110 s on 2 cores,
# 45 s of it compiling bytecode (which PYTHONDONTWRITEBYTECODE=1, set on this project's machines,
# would otherwise leave every process to redo). So a finished .venv is kept in the cache under a
# key of everything that decides its contents: this script, pyproject.toml's [project] and
# [build-system] tables (not its tool settings: a change to pytest's or ruff's options once cost the
# next CI run a full install), the Python, --cuda and pip's local wheel folders. A clone with no .venv starts from it in ~2 s and gets an editable
# install of its own. The kept copy and every clone's .venv are hard links to the same files (new
# folders, shared files: a real copy of its 64,000 files took 15-46 s of each CI run). That is safe
# for what writes there: pip unlinks a file before it writes its replacement, Python replaces
# bytecode files whole, and this script's own edits (sed -i, .origin) make new files. A file written
# in place through a clone would reach the kept copy, so a kept file newer than the copy's
# .complete marker discards the copy, as does age: it is rebuilt when a week old, so releases
# within pyproject's version ranges still arrive.
KEPT_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/livecaption/venv"
pyproject_install_tables() {  # what pip reads from pyproject.toml; the whole file if tomllib is missing
    python3 -c 'import json, sys, tomllib
data = tomllib.load(open("pyproject.toml", "rb"))
json.dump({table: data.get(table) for table in ("build-system", "project")}, sys.stdout, sort_keys=True)' 2>/dev/null ||
        cat pyproject.toml
}
kept_venv_key() {
    { cat install.sh; pyproject_install_tables; python3 -VV; readlink -f "$(command -v python3)"; echo "cuda=$CUDA links=${PIP_FIND_LINKS:-}"; } \
        | sha256sum | cut -c1-16
}
kept_venv_is_intact() {  # made by a finished install, under a week old, no file written since
    local kept="$1"
    [[ -f "$kept/.complete" && -z $(find "$kept/.complete" -mtime +7) ]] || return 1
    [[ -z $(find "$kept" -type f -newer "$kept/.complete" -print -quit) ]]
}
restore_kept_venv() {  # -> 0 when .venv is now the kept copy, pointed at this clone
    local kept="$KEPT_ROOT/$1"
    kept_venv_is_intact "$kept" || return 1
    rm -rf .venv.partial
    cp -al "$kept" .venv.partial || { rm -rf .venv.partial; return 1; }
    rm .venv.partial/.complete
    # bin/'s console scripts and pyvenv.cfg name the .venv path they were installed at.
    local origin; origin=$(cat .venv.partial/.origin)
    grep -rlIZF "$origin" .venv.partial/bin .venv.partial/pyvenv.cfg | xargs -0 -r sed -i "s|$origin|$PWD/.venv|g"
    rm .venv.partial/.origin && echo "$PWD/.venv" >.venv.partial/.origin
    mv .venv.partial .venv
    # The project's own editable install names the folder of the clone that made the copy. (Its
    # build warns about folders named like the package; shown only if the install fails.)
    local log; log=$(.venv/bin/pip install -q --no-compile --no-deps --no-build-isolation -e . 2>&1) || { echo "$log" >&2; return 1; }
}
keep_venv() {
    local kept="$KEPT_ROOT/$1" staging="$KEPT_ROOT/.staging-$$"
    mkdir -p "$KEPT_ROOT"
    rm -f .venv/.origin && echo "$PWD/.venv" >.venv/.origin
    rm -rf "$staging"
    if cp -al .venv "$staging" && touch "$staging/.complete"; then
        rm -rf "$kept" && mv -T "$staging" "$kept"
    fi
    rm -rf "$staging"
    # Copies under other keys were made by other versions of this script or pyproject.toml's tables.
    find "$KEPT_ROOT" -mindepth 1 -maxdepth 1 -not -name "$1" -not -name ".staging-*" -exec rm -rf {} +
}

if ((KEEP && !DRY)) && [[ ! -e .venv ]]; then
    key=$(kept_venv_key)
    if restore_kept_venv "$key"; then
        echo "python packages: linked from $KEPT_ROOT/$key (./install.sh --keep-venv)"
    else
        install_python_packages
        keep_venv "$key"
    fi
else
    install_python_packages
fi
if command -v npm >/dev/null; then
    run npm ci --prefix client_js --no-audit --no-fund --silent  # the `ws` package, pinned by client_js/package-lock.json
else
    echo "note: install Node 20+ and npm, then run: npm ci --prefix client_js (the JS client tests need it)" >&2
fi
run .venv/bin/python -c "from inference.engines.whisper import assemble_embedded_model as a; print('embedded model at', a('~/.cache/livecaption'))"
if ((CUDA)); then  # what each engine's runtime sees (the server asks the same, per engine)
    run .venv/bin/python -c "import torch, ctranslate2; print('CUDA devices: torch (FunASR)', torch.cuda.device_count(), 'built for CUDA', torch.version.cuda, '| CTranslate2 (Whisper)', ctranslate2.get_cuda_device_count())"
fi
echo "installed. run the server with: .venv/bin/python run_server.py"
