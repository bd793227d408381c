"""funasr's registry filled with what a model names (inference/engines/funasr_registry.py): the
same classes as `import funasr`, in a fraction of its import time."""

import functools
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from inference.engines import funasr_registry

ROOT = Path(__file__).resolve().parent.parent

# Prints {"heavy": modules of all-of-funasr imported, "registry": {table: {name: [class, file digest]}}}.
# "product": loads the tiny offline, online and punc models through the server's engine first (then
# prepares the others it is given); "all": what `import funasr` registers.
PROBE = """
import hashlib, json, sys
from pathlib import Path

models = json.loads(sys.argv[2])
heavy = []
if sys.argv[1] == "product":
    from inference.engines import create_engine, funasr_registry
    from settings import config

    roles = {role: models[role] for role in ("offline", "online", "punc")}
    settings = {**{f"{role}_model": path for role, path in roles.items()}, "allow_download": False}
    overrides = {"server": {"port": 0}, "inference": {"engine": "funasr"}, "funasr": settings}
    create_engine(config.load(None, overrides), "cpu")
    heavy = [name for name in ("transformers", "torch.distributed.fsdp", "fastapi", "hydra") if name in sys.modules]
    for role in models.keys() - roles.keys():
        funasr_registry.prepare(Path(models[role]), {})
else:
    import funasr
from funasr.register import tables

def entry(cls):
    source = Path(sys.modules[cls.__module__].__file__).read_bytes()
    return [cls.__qualname__, hashlib.sha256(source).hexdigest()]

registry = {t: {n: entry(c) for n, c in getattr(tables, t).items()} for t in dir(tables) if t.endswith("_classes")}
print(json.dumps({"heavy": heavy, "registry": registry}))
"""


def probe(mode: str, models: dict[str, Path]) -> subprocess.Popen:
    paths = json.dumps({name: str(path) for name, path in models.items()})
    return subprocess.Popen(
        [sys.executable, "-c", PROBE, mode, paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )


def answer(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.splitlines()[-1])


@pytest.fixture(scope="module")
def every_tiny_model(tiny_funasr, tiny_models_root):
    from tests.tiny_funasr import build_tiny_model

    return {**tiny_funasr, "nano": build_tiny_model(tiny_models_root, "nano")}


@pytest.fixture(scope="module")
def product_probe(every_tiny_model) -> Callable[[], dict]:
    """One "product" process for both tests below (each started one of its own, 3-6 s): it loads
    the engine's models and records what that imported ("heavy") before it prepares the other
    models. Started at setup; its answer is read once."""
    return functools.cache(functools.partial(answer, probe("product", every_tiny_model)))


def test_loading_the_funasr_engine_imports_only_what_its_models_name(product_probe):
    # `import funasr` imports every model it has: transformers, torch.distributed, fastapi, hydra
    # (~12 s of every start of a server on FunASR models, on 2 cores).
    assert product_probe()["heavy"] == []


@pytest.mark.slow  # two processes, one of them all of funasr (~12 s)
def test_it_registers_the_classes_import_funasr_does_for_every_name_the_models_use(every_tiny_model, product_probe):
    everything = probe("all", every_tiny_model)
    product_tables, all_tables = product_probe()["registry"], answer(everything)["registry"]
    for name, directory in every_tiny_model.items():
        config = yaml.safe_load((directory / "config.yaml").read_text())
        used = {(t, s) for s in funasr_registry._strings(config) for t, names in all_tables.items() if s in names}
        assert ("model_classes", config["model"]) in used
        for table, registered in sorted(used):
            # the same class from the same file (a copy of it may be where it was imported from)
            assert product_tables[table].get(registered) == all_tables[table][registered], (name, table, registered)


def write_config(directory: Path, **changes) -> Path:
    config = {"model": "SeacoParaformer", "encoder": "SANMEncoder", "decoder": "ParaformerSANMDecoder"}
    config.update(changes)
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    return directory


def test_the_modules_it_imports_are_those_that_register_the_names_in_the_config(tmp_path):
    used = funasr_registry._registrants(write_config(tmp_path, frontend="WavFrontend", normalize=None), {})
    assert used == {
        ("model_classes", "SeacoParaformer"): ["funasr.models.seaco_paraformer.model"],
        ("encoder_classes", "SANMEncoder"): ["funasr.models.sanm.encoder"],
        # two identical files register it: either class is the same code
        ("decoder_classes", "ParaformerSANMDecoder"): [
            "funasr.models.e_paraformer.decoder",
            "funasr.models.paraformer.decoder",
        ],
        ("frontend_classes", "WavFrontend"): ["funasr.frontends.wav_frontend"],
    }


@pytest.mark.parametrize(
    "changes, overrides",
    [
        ({"vad_model": "fsmn-vad"}, {}),  # AutoModel builds another model, from that one's config
        ({}, {"punc_model": "ct-punc"}),
        ({"trust_remote_code": True}, {}),  # code from the model directory registers classes
        ({"audio_encoder_conf": {"hub": "ms"}}, {}),  # FunASRNano then builds its encoder by hub name
        ({"model": "NoSuchModel"}, {}),  # AutoModel's error then lists every model class funasr has
        ({"model": "Conformer"}, {}),  # two different files register it: the winner is import order's
    ],
)
def test_all_of_funasr_is_imported_where_what_is_needed_cannot_be_told(tmp_path, changes, overrides):
    assert funasr_registry._registrants(write_config(tmp_path, **changes), overrides) is None


def test_a_directory_without_a_readable_config_gets_all_of_funasr(tmp_path):
    assert funasr_registry._registrants(tmp_path, {}) is None
    (tmp_path / "config.yaml").write_text("model: [unclosed")
    assert funasr_registry._registrants(tmp_path, {}) is None


def test_the_pinned_funasr_is_the_release_it_was_checked_against():
    # On another release funasr_registry imports all of funasr (slower, never different): bumping
    # the pin means running this file's tests on the new release, then updating VERIFIED_VERSION.
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(re.fullmatch(r"funasr==(\S+)", d).group(1) for d in dependencies if d.startswith("funasr=="))
    assert pinned == importlib.metadata.version("funasr") == funasr_registry.VERIFIED_VERSION


def test_a_name_its_modules_do_not_register_falls_back_to_all_of_funasr(tmp_path):
    # Sources read wrong (a future layout the regex misses, say): the model must still load, as
    # with `import funasr`, not fail the start. The probe claims another module registers WavFrontend.
    model = write_config(tmp_path, frontend="WavFrontend", normalize=None)
    probe = f"""
import sys
from pathlib import Path
from inference.engines import funasr_registry
real = funasr_registry._registrations()
wrong = {{"frontend_classes": ["funasr.tokenizer.char_tokenizer"]}}
funasr_registry._registrations = lambda: {{**real, "WavFrontend": wrong}}
funasr_registry.prepare(Path({str(model)!r}), {{}})
from funasr.register import tables
print(tables.frontend_classes["WavFrontend"].__module__, "transformers" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["funasr.frontends.wav_frontend", "True"]  # all of funasr was imported
    assert "not registered where its source says; importing all of funasr" in done.stderr
