"""Find a FunASR model directory: a local path, the hub cache, or a download - or one clear error.

FunASR's own loader prints a download failure and carries on with a non-existent path, which then
fails far away with a stack trace. Here every model is resolved to a local directory first, so
startup either has the files or stops with a message naming the model, the cache and the fix.
"""

from __future__ import annotations

import ast
import functools
import logging
import os
from pathlib import Path

from inference.packages import package_dir

log = logging.getLogger(__name__)

REQUIRED_FILES = ("config.yaml", "model.pt")


class ModelUnavailable(RuntimeError):
    """A configured model cannot be found or fetched; the message says what to do."""


# Names FunASR's own maps lack; the Fun-ASR-Nano models have the same repository id on both hubs.
_MORE_NAMES = {
    "Fun-ASR-Nano-2512": "FunAudioLLM/Fun-ASR-Nano-2512",
    "Fun-ASR-MLT-Nano-2512": "FunAudioLLM/Fun-ASR-MLT-Nano-2512",
}


def hub_id(name: str, hub: str) -> str:
    """FunASR's short names ("paraformer-zh", "Fun-ASR-Nano-2512") mapped to the hub's repository ids."""
    maps = _funasr_name_maps()
    return maps["name_maps_ms" if hub == "ms" else "name_maps_hf"].get(name) or _MORE_NAMES.get(name, name)


@functools.cache
def _funasr_name_maps() -> dict[str, dict[str, str]]:
    """FunASR's own table of short names (funasr/download/name_maps_from_hub.py, plain dicts), read
    without importing the funasr package: its __init__ imports every model it has (torch,
    transformers, sklearn: ~15 s on 2 cores), and a model missing from the cache should be said in
    a second, not after that."""
    funasr = package_dir("funasr")
    if funasr is None:
        raise ModelUnavailable("the funasr package is not installed: ./install.sh installs it")
    source = funasr / "download" / "name_maps_from_hub.py"
    maps = {}
    for statement in ast.parse(source.read_text(encoding="utf-8")).body:  # read as data, not run
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
            if isinstance(target, ast.Name) and target.id.startswith("name_maps_"):
                maps[target.id] = ast.literal_eval(statement.value)
    return maps


def default_cache_dir(hub: str) -> Path:
    if hub == "ms":
        return Path(os.environ.get("MODELSCOPE_CACHE", "~/.cache/modelscope")).expanduser()
    return Path(os.environ.get("HF_HUB_CACHE", "~/.cache/huggingface/hub")).expanduser()


def resolve_model_dir(spec: str, role: str, hub: str, cache_dir: str = "", allow_download: bool = True) -> Path:
    """`spec` is a local directory, a FunASR name or a hub id; `role` ("offline_model") names the
    setting in error messages. Returns a directory holding the model's files."""
    local = Path(spec).expanduser()
    if local.is_dir():
        _check_files(local, spec, role)
        return local
    if spec.startswith(("/", "./", "../", "~")):
        raise ModelUnavailable(f"funasr.{role} = {spec!r}: no such directory")
    repo = hub_id(spec, hub)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(hub)
    try:
        path = _snapshot(repo, hub, cache, local_only=True)
    except Exception:
        if not allow_download:
            raise ModelUnavailable(_missing_message(spec, repo, role, hub, cache, "downloads are off")) from None
        log.info("downloading %s (%s) from the %s hub into %s", spec, repo, hub, cache)
        try:
            path = _snapshot(repo, hub, cache, local_only=False)
        except Exception as exc:
            reason = f"download failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            raise ModelUnavailable(_missing_message(spec, repo, role, hub, cache, reason)) from None
    _check_files(path, spec, role)
    return path


def _snapshot(repo: str, hub: str, cache: Path, local_only: bool) -> Path:
    if hub == "ms":
        from modelscope import snapshot_download

        return Path(snapshot_download(repo, cache_dir=str(cache), local_files_only=local_only))
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo, cache_dir=str(cache), local_files_only=local_only))


def _check_files(path: Path, spec: str, role: str) -> None:
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ModelUnavailable(
            f"funasr.{role} = {spec!r}: {path} is not a FunASR model directory (missing {', '.join(missing)})"
        )


def _missing_message(spec: str, repo: str, role: str, hub: str, cache: Path, reason: str) -> str:
    site = "ModelScope" if hub == "ms" else "Hugging Face"
    return (
        f"model {spec!r} ({site} repo {repo}) for funasr.{role} is not in the cache {cache} and {reason}. "
        f"Either run once with network access so it is downloaded, or copy the model directory "
        f'(config.yaml, model.pt and all beside them) to this machine and set funasr.{role} = "/path/to/that/dir" '
        f"in config.toml (or funasr.model_cache_dir to a cache that holds it)."
    )
