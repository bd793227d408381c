"""funasr's class registry filled with what one model names, not with every model funasr has.

`import funasr` imports all of funasr's ~430 modules so that each registers its classes (~12 s on
2 cores: transformers, scikit-learn, torch.distributed, fastapi, hydra, ...), yet AutoModel looks
up only the classes a model's config.yaml names (model, encoder, decoder, frontend, tokenizer, ...).
Here funasr's package is imported without that walk, and then only the modules whose source
registers one of the names in the config. Where that cannot be told for sure (another funasr
release, a config that builds more models or runs the directory's code, a name two different
modules register, a name its modules did not register after all) funasr's own full import is done
instead: slower, never different.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import logging
import pkgutil
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.packages import package_dir

if TYPE_CHECKING:
    from _typeshed import StrOrBytesPath

log = logging.getLogger(__name__)

# The funasr release this was checked against: tests/test_funasr_registry.py compares what it
# registers for each model the server loads with what `import funasr` registers. Any other
# release gets funasr's full import (and that test fails until it is checked again).
VERIFIED_VERSION = "1.4.16"
# How funasr registers a class: `@tables.register("decoder_classes", "ParaformerSANMDecoder")`.
_REGISTER = re.compile(r'^[ \t]*@tables\.register\(\s*"(\w+)"\s*,\s*"([^"]+)"\s*\)', re.MULTILINE)
# Config keys that make AutoModel build more than the model named in it: other models (hub
# names, each with its own config) or code from the model's directory.
_FULL_IMPORT_KEYS = ("vad_model", "punc_model", "spk_model", "trust_remote_code")

_lock = threading.Lock()  # one thread at a time swaps pkgutil.walk_packages and imports
_walk_skipped = False  # funasr's package was imported here without its walk


def prepare(model_dir: Path, overrides: Mapping[str, Any]) -> None:
    """Import what funasr.AutoModel(model=model_dir, **overrides) needs registered: the modules
    that register the names in its config.yaml, or all of funasr where that cannot be told."""
    with _lock:
        registrants = _registrants(model_dir, overrides)
        if registrants is None:
            _import_everything()
            return
        _import_package()
        # AutoModel's module first, as in `import funasr`: it sets what the others' imports rely on
        # (funasr.utils.export_utils ignores every warning from then on, for one).
        importlib.import_module("funasr.auto.auto_model")
        for module in sorted({module for modules in registrants.values() for module in modules}):
            importlib.import_module(module)
        missing = _not_registered(registrants)
        if missing:  # the sources were read wrong: funasr's own import decides, as without this module
            log.warning("funasr registry: %s not registered where its source says; importing all of funasr", missing)
            _import_everything()


def import_package() -> None:
    """funasr's package without importing every module it has (only on the release checked here):
    `import funasr.<module>` then costs what that module imports."""
    with _lock:
        if _installed_version() == VERIFIED_VERSION:
            _import_package()


def _registrants(model_dir: Path, overrides: Mapping[str, Any]) -> dict[tuple[str, str], list[str]] | None:
    """{(table, name): modules that register it} for every name the config uses; None where
    funasr's full import is needed."""
    version = _installed_version()
    if version != VERIFIED_VERSION:
        log.warning("funasr %s is not %s, the release checked: importing all of it", version, VERIFIED_VERSION)
        return None
    config = _read_config(model_dir)
    if config is None or any(config.get(k) or overrides.get(k) for k in _FULL_IMPORT_KEYS):
        return None  # (a missing or broken config.yaml: AutoModel says what is wrong with it)
    if {"ms", "modelscope"} & set(_values("hub", [config, overrides])):
        return None  # a part built by AutoModel from a ModelScope name (FunASRNano's audio_encoder_conf can)
    registered = _registrations()
    used = {
        (table, name): modules
        for name in set(_strings([config, overrides]))
        for table, modules in registered.get(name, {}).items()
    }
    if ("model_classes", config.get("model")) not in used:
        return None  # a class funasr does not have: AutoModel's message lists the ones it has
    # A name two modules register keeps the class of the one imported last, which in `import
    # funasr` depends on what imported what before; only copies of one file may differ in that
    # (funasr 1.4.16: models/e_paraformer/decoder.py is models/paraformer/decoder.py).
    if any(len({_source(module) for module in modules}) > 1 for modules in used.values()):
        return None
    return used


def _installed_version() -> str:
    try:
        return importlib.metadata.version("funasr")
    except importlib.metadata.PackageNotFoundError:
        return ""  # the full import then fails the way it always did


def _read_config(model_dir: Path) -> dict[str, Any] | None:
    import yaml

    try:
        config = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        yield from _strings(list(value.values()))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _values(key: str, value: object) -> Iterator[object]:
    """What `key` holds in every mapping nested in `value`."""
    if isinstance(value, Mapping):
        if key in value:
            yield value[key]
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _values(key, item)


def _package_dir() -> Path:
    root = package_dir("funasr")
    if root is None:
        raise ModuleNotFoundError("No module named 'funasr'", name="funasr")
    return root


@functools.cache
def _registrations() -> dict[str, dict[str, list[str]]]:
    """{name: {table: [modules]}} read from funasr's sources (~50 ms), without importing them."""
    root = _package_dir()
    found: dict[str, dict[str, list[str]]] = {}
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "tables.register" not in text:
            continue
        module = ".".join(("funasr", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        for table, name in _REGISTER.findall(text):
            modules = found.setdefault(name, {}).setdefault(table, [])
            if module not in modules:
                modules.append(module)
    if not found:
        raise RuntimeError(f"found no @tables.register(...) in funasr's sources under {root}")
    return found


def _source(module: str) -> bytes:
    return (_package_dir().parent / (module.replace(".", "/") + ".py")).read_bytes()


def _import_package() -> None:
    global _walk_skipped
    if "funasr" in sys.modules:
        return
    with _funasr_walk_skipped():
        importlib.import_module("funasr")
    _walk_skipped = True


@contextlib.contextmanager
def _funasr_walk_skipped() -> Iterator[None]:
    # funasr/__init__.py fills its registry with import_submodules("funasr"), which imports what
    # pkgutil.walk_packages lists under it; for that one prefix it lists nothing while this runs.
    walk = pkgutil.walk_packages

    def walk_but_funasr(
        path: Iterable[StrOrBytesPath] | None = None, prefix: str = "", onerror: Callable[[str], object] | None = None
    ) -> Iterator[pkgutil.ModuleInfo]:
        return iter(()) if prefix == "funasr." else walk(path, prefix, onerror)

    pkgutil.walk_packages = walk_but_funasr
    try:
        yield
    finally:
        pkgutil.walk_packages = walk


def _import_everything() -> None:
    """What `import funasr` does, also where its package was imported here without it."""
    global _walk_skipped
    funasr = importlib.import_module("funasr")
    if _walk_skipped:
        funasr.import_submodules(funasr.__name__)
        _walk_skipped = False


def _not_registered(registrants: Mapping[tuple[str, str], list[str]]) -> list[str]:
    """The names that importing their modules did not register from one of them."""
    from funasr.register import tables

    return [
        f"{table}/{name}"
        for (table, name), modules in registrants.items()
        if getattr(getattr(tables, table, {}).get(name), "__module__", None) not in modules
    ]
