"""Shared fixtures: the real FSMN scorer and Whisper engine (loaded once), servers on loopback."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pytest

from inference.allocator import reuse_freed_memory
from inference.threads import one_blas_thread

# Process settings first, as run_server.py applies them first, and before the imports below (tests.speech
# loads numpy, whose BLAS reads its thread count once):
# - glibc keeps what a Whisper decode frees for the next (inference/allocator.py). Checked in a plain
#   run and in a pytest-xdist worker: a new thread's 72 MB block, freed and taken again, faulted no
#   page in. (Had another thread allocated first, decodes would be slower, not different.)
# - numpy gets one BLAS thread (inference/threads.py), for the servers these processes run and the
#   processes they start.
# - Whisper (CTranslate2, through OpenMP) and torch get one thread each, here and in the server
#   processes these start (config.toml's cpu_threads = 0 defers to OMP_NUM_THREADS): three test
#   processes share 2 cores, and each decode's threads waited for one another on them. Four
#   Whisper-heavy files on -n 3, alternating: 67.5 and 70.0 s (123 and 125 CPU-s) with one thread,
#   70.1 and 74.3 s (135 and 142 CPU-s) with CTranslate2's own choice. Only the speed differs; the
#   product's default stays CTranslate2's.
reuse_freed_memory()
one_blas_thread()
os.environ.setdefault("OMP_NUM_THREADS", "1")

from settings import config as config_module  # noqa: E402
from tests.server_thread import ServerThread, servers_on  # noqa: E402
from tests.speech import tools_available  # noqa: E402

# Fixtures that make a test end to end: the real model (and every server built on it), a real
# database, a server process, a browser. A test that uses one, directly or through another fixture,
# is marked `slow`; `pytest -m "not slow"` is then the quick loop over the policy tests (CI runs all).
END_TO_END_FIXTURES = {"whisper_engine", "postgres", "server_process", "playwright", "browser"}

# Measured seconds per test file (tools/suite_durations.py writes the table from a run's JUnit XML).
FILE_SECONDS: dict[str, float] = json.loads((Path(__file__).parent / "durations.json").read_text())


def pytest_configure(config):
    # One torch thread per test process (FunASR's models, tiny ones here, run in them). With torch's
    # default of one thread per core, small operations spin waiting for each other on a loaded 2-core
    # machine: when the FSMN scorer was torch, 45 s of speech scored in 100 ms chunks took 67 s that
    # way, 2 s on one thread. pytest-xdist's controller runs no test: it skips torch's import (~2 s,
    # before any worker starts).
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        import torch

        torch.set_num_threads(1)
    # pytest-xdist (--dist loadfile) hands whole files to whichever worker is free, in the order of
    # the collection; by default it first re-sorts the files by how many tests they hold, which puts
    # the files of a few long end-to-end tests (server processes, Node, a cluster) last, where one
    # worker can be left running them alone. pytest_collection_modifyitems orders the files longest
    # first instead (measured: tests/durations.json), and xdist keeps that order.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    if not tools_available():
        raise pytest.UsageError("tests need espeak-ng and sox on PATH (./install.sh installs them)")
    for item in items:
        if END_TO_END_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    average = sum(FILE_SECONDS.values()) / max(1, len(FILE_SECONDS))  # a file not measured yet
    items.sort(key=lambda item: -FILE_SECONDS.get(item.nodeid.split("::")[0], average))  # stable: files stay whole


def pytest_collection_finish(session):
    # What collection imported (torch, ray, funasr, playwright: ~250,000 objects) lives as long as the
    # process. Frozen, the collector's full passes stop rescanning it after every few tests' garbage.
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def scorer():
    from inference.vad_fsmn import FsmnScorer

    return FsmnScorer()


@pytest.fixture(scope="session")
def whisper_engine():
    from inference.engines.whisper import WhisperEngine

    return WhisperEngine(config_module.load().whisper, "cpu")


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory) -> Path:
    """Where tiny FunASR models are built: one folder for the whole run, shared by pytest-xdist's
    workers (the parent of their own temporary folders), so each model is built once (a few
    seconds of torch apiece), not once per worker. Tests read these models and never change them."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "funasr-models"


@pytest.fixture(scope="session")
def tiny_funasr(tiny_models_root):
    """Tiny random FunASR model directories (stand-ins for hub weights, which cannot be fetched here)."""
    from tests.tiny_funasr import build_tiny_models

    return build_tiny_models(tiny_models_root)


def funasr_settings(tiny_funasr, **overrides) -> dict:
    """A [funasr] section pointing at the tiny models; downloads off, so nothing leaves loopback."""
    settings = {
        "offline_model": str(tiny_funasr["offline"]),
        "online_model": str(tiny_funasr["online"]),
        "punc_model": str(tiny_funasr["punc"]),
        "allow_download": False,
    }
    settings.update(overrides)
    return settings


@pytest.fixture(scope="session")
def funasr_engine(tiny_funasr):
    """The production FunasrEngine (AutoModel loading path) over the tiny models."""
    from inference.engines import create_engine

    config = make_config(inference={"engine": "funasr"}, funasr=funasr_settings(tiny_funasr))
    return create_engine(config, "cpu")


def make_config(**sections):
    """Default config.toml with {section: {key: value}} overrides; the port is always 0 (any free)."""
    import tempfile

    # Every server gets its own history database and upload folder, never the user's.
    data = tempfile.mkdtemp(prefix="livecaption-test-")
    overrides = {"server": {"port": 0}, "jobs": {"db_path": f"{data}/captions.db", "upload_dir": f"{data}/uploads"}}
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return config_module.load(None, overrides)


@pytest.fixture
def start_server(scorer, whisper_engine):
    """start_server(engine=None, job_engines=(), **config_sections) -> running ServerThread on real
    Whisper unless `engine` is given; stopped after the test. `job_engines`: loaded engines for the
    names in jobs.engines (others are loaded)."""
    with servers_on(whisper_engine, scorer) as start:
        yield start


@pytest.fixture
def start_instant(scorer):
    """As start_server, without loading Whisper: on the product's "instant" engine (fixed text, no
    model) unless `engine` is given. For tests that read no words, or pass their own stand-in."""
    from inference.engines.instant import InstantEngine

    with servers_on(InstantEngine(), scorer) as start:
        yield start


@pytest.fixture
def start_stand_in(scorer, phrase_engine):
    """As start_server, on the module's own `phrase_engine` fixture (a stand-in that knows the
    module's phrases, e.g. tests.engines.KnownPhrasesEngine) unless a test names another engine."""
    with servers_on(phrase_engine, scorer) as start:
        yield start


@pytest.fixture
def no_temperature_fallback(monkeypatch):
    """Whisper decodes greedily only, in this process. A decode below the log-probability guard
    (speech under another language's token) is otherwise retried by sampling at rising
    temperatures, differently on every call (CTranslate2's generate takes no seed), so a test of
    which language reached the engine could fail at random. Only for tests whose point is not
    the fallback."""
    import inference.engines.whisper as whisper_module

    monkeypatch.setattr(whisper_module, "FALLBACK_TEMPERATURES", ())


@pytest.fixture(scope="module")
def shared_server(scorer, whisper_engine):
    """One server with default settings for tests that only need a well-behaved server."""
    server = ServerThread(make_config(), whisper_engine, scorer).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server (tests/pg_server.py) for the whole session."""
    from tests.pg_server import PostgresServer, find_bin_dir, has_user

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed: ./install.sh installs them")
    if os.geteuid() == 0 and not has_user("postgres"):  # PostgreSQL refuses to run as root
        pytest.skip("tests run as root and there is no 'postgres' user to run PostgreSQL (Debian's package makes it)")
    server = PostgresServer(bin_dir)
    yield server
    server.destroy()


@pytest.fixture
def postgres_url(postgres):
    """A fresh, empty database on the session's PostgreSQL server."""
    return postgres.new_database()
