"""A page of FunASR's HTML5 client's shape, in a real Chromium, from another origin, default config.

FunASR's runtime/html5 client is a page served by its own small web server (or opened as a file)
that talks to the ASR server's WebSocket. This page (ours, minimal, written from that client's
behaviour) sends exactly its messages: the configuration on open, audio in 960-sample frames
(microphone) or the file's bytes in 960-byte pieces (file upload, offline, wav_format "PCM" with
the WAV's rate), the stop message that repeats the configuration with is_speaking false, and it
shows replies as that page does. It runs from a second origin (another port on loopback) and from a
file:// URL (Origin "null"), against a server on its default settings.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

from tests.browser_context import checked_context
from tests.speech import compose, write_wav
from tests.wsclient import words

sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package (pip)")

CHROMIUM = os.environ.get("LIVECAPTION_CHROMIUM", "/usr/bin/chromium")
if not shutil.which(CHROMIUM):
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
EXPECTED = "hello world good morning everyone"

PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>FunASR HTML5 shape</title></head>
<body><textarea id="varArea" rows="6" cols="80"></textarea><div id="state">idle</div>
<script>
const WAV = Uint8Array.from(atob("__WAV__"), (c) => c.charCodeAt(0));
function start(wsUrl, fileMode, asrMode) {
  let recText = "", offlineText = "";
  const area = document.getElementById("varArea"), state = document.getElementById("state");
  const ws = new WebSocket(wsUrl);
  ws.onopen = () => {
    const request = {chunk_size: [5, 10, 5], wav_name: "h5", is_speaking: true, chunk_interval: 10,
                     itn: false, mode: fileMode ? "offline" : asrMode};
    if (fileMode) { request.wav_format = "PCM"; request.audio_fs = 16000; }
    ws.send(JSON.stringify(request));
    if (fileMode) {  // the file's bytes, header included, in 960-byte pieces
      for (let i = 0; i + 960 <= WAV.length; i += 960) ws.send(WAV.slice(i, i + 960));
      const rest = WAV.length % 960; if (rest) ws.send(WAV.slice(WAV.length - rest));
    } else {  // a microphone's 16 kHz samples, 960 at a time
      const pcm = new Int16Array(WAV.buffer.slice(44));
      for (let i = 0; i < pcm.length; i += 960) ws.send(pcm.slice(i, i + 960));
    }
    ws.send(JSON.stringify({chunk_size: [5, 10, 5], wav_name: "h5", is_speaking: false, chunk_interval: 10,
                            mode: fileMode ? "offline" : asrMode}));
    state.textContent = "sent";
  };
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    const text = "" + msg["text"];
    if (msg["mode"] === "2pass-offline" || msg["mode"] === "offline") { offlineText += text; recText = offlineText; }
    else { recText += text; }
    area.value = recText;
    if (msg["is_final"] === true) { state.textContent = "final"; if (fileMode) ws.close(); }
  };
  ws.onerror = () => { state.textContent = "error"; };
  ws.onclose = (e) => { if (state.textContent !== "final") state.textContent = "closed " + e.code; };
}
</script></body></html>
"""


@pytest.fixture(scope="module")
def page_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("funasr-html5")
    wav = write_wav(folder / "speech.wav", compose([0.3, "hello world", 0.8, "good morning everyone", 0.6]).audio)
    (folder / "index.html").write_text(PAGE.replace("__WAV__", base64.b64encode(wav.read_bytes()).decode()))
    return folder


@pytest.fixture(scope="module")
def other_origin(page_dir):
    """The page's own web server: another origin than the caption server's."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


def _run(browser, url: str, ws_url: str, file_mode: bool, mode: str) -> str:
    with checked_context(browser) as context:
        page = context.new_page()
        page.goto(url)
        page.evaluate("([u, f, m]) => start(u, f, m)", [ws_url, file_mode, mode])
        page.wait_for_function("document.getElementById('state').textContent === 'final'", timeout=120_000)
        return page.eval_on_selector("#varArea", "e => e.value")


@pytest.mark.parametrize("file_mode, mode", [(False, "2pass"), (False, "online"), (True, "offline")])
def test_funasr_html5_page_from_another_origin(shared_server, browser, other_origin, file_mode, mode):
    shown = _run(browser, f"{other_origin}/index.html", shared_server.url + "/", file_mode, mode)
    assert words(shown) == EXPECTED


def test_funasr_html5_page_opened_as_a_file(shared_server, browser, page_dir):
    shown = _run(browser, (page_dir / "index.html").as_uri(), shared_server.url + "/", True, "offline")
    assert words(shown) == EXPECTED


def test_a_foreign_page_cannot_follow_captions_or_read_history(shared_server, browser, other_origin):
    """The same foreign page may stream its own audio, but not read other people's captions."""
    with checked_context(browser) as context:
        page = context.new_page()
        page.goto(f"{other_origin}/index.html")
        subscribe = page.evaluate(
            """(url) => new Promise((resolve) => {
                 const ws = new WebSocket(url);
                 ws.onmessage = (e) => resolve("message " + e.data);
                 ws.onclose = (e) => resolve("closed " + e.code);
               })""",
            shared_server.url + "/subscribe?session=somebody-else",
        )
        history = page.evaluate(
            "(url) => fetch(url).then((r) => 'status ' + r.status, (e) => 'blocked ' + e)",
            shared_server.http + "/api/history",
        )
    assert not subscribe.startswith("message") or '"subscribed"' not in subscribe, subscribe
    assert history != "status 200", history
