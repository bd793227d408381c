"""Shared fixtures: the real FSMN scorer and Whisper engine (loaded once), servers on loopback."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server import config as config_module
from tests.speech import tools_available


def pytest_collection_modifyitems(config, items):
    if not tools_available():
        raise pytest.UsageError("tests need espeak-ng and sox on PATH (./install.sh installs them)")


@pytest.fixture(scope="session")
def scorer():
    from inference.vad_fsmn import FsmnScorer

    return FsmnScorer()


@pytest.fixture(scope="session")
def whisper_engine():
    from inference.engines.whisper import WhisperEngine

    return WhisperEngine(config_module.load().whisper, "cpu")


def make_config(**sections):
    """Default config.toml with {section: {key: value}} overrides; the port is always 0 (any free)."""
    overrides = {"server": {"port": 0}}
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return config_module.load(None, overrides)


class ServerThread:
    """A real CaptionServer on its own event loop in a thread, listening on a loopback port."""

    def __init__(self, config, engine, scorer) -> None:
        from server.app import CaptionServer

        self.server = CaptionServer(config, engine=engine, scorer=scorer)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()/stop()
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.startup()
        self._ready.set()
        try:
            await self.server.serve()
        finally:
            await self.server.shutdown()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(60)
        if self.error:
            raise self.error
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.server.stop)
        self._thread.join(60)


@pytest.fixture
def start_server(scorer, whisper_engine):
    """start_server(engine=None, **config_sections) -> running ServerThread; stopped after the test."""
    servers = []

    def start(engine=None, **sections):
        server = ServerThread(make_config(**sections), engine or whisper_engine, scorer).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(scorer, whisper_engine):
    """One server with default settings for tests that only need a well-behaved server."""
    server = ServerThread(make_config(), whisper_engine, scorer).start()
    yield server
    server.stop()
