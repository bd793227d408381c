"""The real server process (run_server.py) under signals: graceful SIGTERM with 20 streams
mid-speech, SIGHUP announced as a restart (1012), and a second signal forcing exit."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import websockets

from server.config import DEFAULT_CONFIG_PATH
from tests.speech import compose
from tests.wsclient import START, recv, send_audio, words

ROOT = Path(__file__).resolve().parent.parent
MID_SPEECH = compose([0.3, "please open the door"])  # no trailing silence: the segment is still open


class ServerProcess:
    def __init__(self, tmp_path: Path, **server_settings) -> None:
        text = DEFAULT_CONFIG_PATH.read_text().replace("port = 10095", "port = 0")
        data = {"db_path": f'"{tmp_path}/captions.db"', "upload_dir": f'"{tmp_path}/uploads"'}
        server_settings = {**data, **server_settings}
        for key, value in server_settings.items():
            text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        config = tmp_path / "config.toml"
        config.write_text(text)
        self.proc = subprocess.Popen(
            [sys.executable, "run_server.py", "--config", str(config), "--device", "cpu"],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self.port: int | None = None
        ready = threading.Event()

        def read() -> None:
            for line in self.proc.stderr:
                self.log.append(line)
                found = re.search(r"serving on ws://[\d.]+:(\d+)", line)
                if found:
                    self.port = int(found.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120) or self.port is None:
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.log))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server_process(tmp_path):
    servers = []

    def start(**settings) -> ServerProcess:
        servers.append(ServerProcess(tmp_path, **settings))
        return servers[-1]

    yield start
    for server in servers:
        server.kill()


async def speak_and_listen(url: str, spoken: asyncio.Event) -> tuple[list[dict], int]:
    """Stream up to mid-speech, then read every reply until the server closes the socket."""
    async with websockets.connect(url, ping_interval=None) as ws:
        await ws.send(json.dumps(START))
        await recv(ws)
        await send_audio(ws, MID_SPEECH.audio)
        spoken.set()
        replies = []
        try:
            while True:
                replies.append(await recv(ws, 180))
        except websockets.ConnectionClosed as closed:
            return replies, closed.rcvd.code if closed.rcvd else 1006


async def test_sigterm_with_20_streams_mid_speech_delivers_every_final_then_1001(server_process):
    server = server_process(shutdown_grace_s="180.0")
    events = [asyncio.Event() for _ in range(20)]
    clients = [asyncio.create_task(speak_and_listen(server.url, e)) for e in events]
    await asyncio.gather(*(e.wait() for e in events))
    await asyncio.sleep(1.0)  # the audio is through VAD; every stream has an open segment
    server.signal(signal.SIGTERM)
    results = await asyncio.gather(*clients)
    for replies, code in results:
        finals = [r for r in replies if r.get("type") == "final"]
        assert code == 1001
        assert [words(f["final_text"]) for f in finals] == ["please open the door"]
        assert replies[-1]["type"] == "end"  # the end reply came before the close
    assert server.wait(60) == 0


async def test_sighup_is_a_restart_announced_with_1012(server_process):
    server = server_process()
    spoken = asyncio.Event()
    client = asyncio.create_task(speak_and_listen(server.url, spoken))
    await spoken.wait()
    await asyncio.sleep(0.5)
    server.signal(signal.SIGHUP)
    replies, code = await client
    assert code == 1012 and [words(r["final_text"]) for r in replies if r.get("type") == "final"]
    assert server.wait(60) == 0


async def test_a_second_signal_forces_exit_without_waiting(server_process):
    server = server_process(shutdown_grace_s="180.0")
    events = [asyncio.Event() for _ in range(6)]
    clients = [asyncio.create_task(speak_and_listen(server.url, e)) for e in events]
    await asyncio.gather(*(e.wait() for e in events))
    await asyncio.sleep(0.5)
    server.signal(signal.SIGTERM)
    time.sleep(0.3)
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 1
    assert any("exiting now" in line for line in server.log)
    await asyncio.gather(*clients, return_exceptions=True)
