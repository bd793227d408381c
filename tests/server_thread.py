"""A real CaptionServer on its own event loop in a thread (tests and bench/ use it)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


class ServerThread:
    """A real CaptionServer on its own event loop in a thread, listening on a loopback port."""

    def __init__(self, config, engine, scorer, job_engines=()) -> None:
        from server.app import CaptionServer

        self.server = CaptionServer(config, engine=engine, scorer=scorer, job_engines=job_engines)
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


@contextlib.contextmanager
def servers_on(engine, scorer) -> Iterator:
    """start(engine=None, job_engines=(), **config_sections) -> a running ServerThread with its own
    history database (conftest.make_config), on `engine` unless the call names another; every server
    started is stopped when the block ends. conftest's start_server / start_instant are this."""
    from tests.conftest import make_config

    servers: list[ServerThread] = []
    default = engine

    def start(engine=None, job_engines=(), **sections) -> ServerThread:
        server = ServerThread(make_config(**sections), engine or default, scorer, job_engines).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
