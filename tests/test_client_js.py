"""The JS client library (client_js/) under Node's test runner, against a real server on loopback.

Python writes the audio fixtures (espeak-ng phrases with known words, at several sample rates) and
runs the server; `node --test client_js/test/*.test.js` does the rest and must pass (here in three
rounds, see ON_THEIR_OWN). By hand, with a server running:
LIVECAPTION_URL=ws://127.0.0.1:10095 LIVECAPTION_FIXTURES=DIR npm test --prefix client_js (DIR
written by write_fixtures). The type check (livecaption.d.ts against the JS) needs no server:
npm run check --prefix client_js.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr

from tests.speech import RATE, compose, to_pcm16

ROOT = Path(__file__).resolve().parent.parent
CLIENT_JS = ROOT / "client_js"
NODE_TIMEOUT_S = 240
# One test that fails mid-stream can leave a socket open, and Node's runner then waits on it until
# NODE_TIMEOUT_S: --test-force-exit ends each file once its tests are done, --test-timeout fails a
# single stuck test after this long (the longest, reconnect, takes ~30 s; up to 50 s beside the
# other files on a loaded machine).
NODE_TEST_TIMEOUT_MS = 90_000
# Node's runner takes one test file at a time on a 2-core machine (os.availableParallelism() - 1),
# while most of these files wait on real-time pacing or on the server's decodes: they run side by
# side, after two files that time things and so run on their own: fake-server.test.js waits 200 ms
# against a 500 ms timeout (it failed beside the flow test), and flow.test.js wants a partial while
# a phrase is spoken, which other streams' finals (decoded first) could crowd out.
ON_THEIR_OWN = ("fake-server.test.js", "flow.test.js")

# Two phrases for the sample-rate tests; four with long pauses for the reconnect test,
# which drops the socket while phrase 2's segment is still open and again during a pause.
SHORT = [0.3, "we will answer them at the end", 0.8, "thank you all for coming", 0.6]
# The flow test wants partials while speaking; a partial is dropped when its segment closes before
# its decode ends, so its first phrase is long enough (3.5 s) for that decode to finish
# while the phrase is still spoken even with other Whisper processes on the same cores (pytest -n 3).
FLOW = [0.3, "good morning everyone and thank you all for coming", 0.8, "we will answer them at the end", 0.6]
LONG = [0.3, "good morning everyone", 1.0, "please open the door", 1.6, "we will answer them at the end"]
LONG += [1.6, "thank you very much", 0.6]


def _write_wav(path: Path, audio: np.ndarray, rate: int, channels: int) -> None:
    pcm = np.frombuffer(to_pcm16(audio), dtype="<i2")
    if channels == 2:  # right channel at half level: the library must average, not pick, a channel
        pcm = np.stack([pcm, (pcm // 2).astype("<i2")], axis=1).reshape(-1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def write_fixtures(directory: Path) -> Path:
    """WAVs with known text plus manifest.json: {name: {file, rate, channels, texts, spans_ms}}."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {}
    scripts = {"short": compose(SHORT), "flow": compose(FLOW), "long": compose(LONG)}

    def add(name: str, script_name: str, rate: int, channels: int = 1) -> None:
        script = scripts[script_name]
        audio = script.audio
        if rate != RATE:
            audio = soxr.resample(audio, RATE, rate).astype(np.float32)
        file = f"{name}.wav"
        _write_wav(directory / file, audio, rate, channels)
        manifest[name] = {
            "file": file,
            "rate": rate,
            "channels": channels,
            "texts": script.texts,
            "spans_ms": [[round(a * 1000 / RATE), round(b * 1000 / RATE)] for a, b in script.spans],
        }

    add("flow", "flow", 16000)
    add("reconnect", "long", 16000)
    add("rate48k", "short", 48000)
    add("rate8k", "short", 8000)
    add("rate24k", "short", 24000)  # not a rate the server accepts: the library resamples it
    add("stereo44k", "short", 44100, channels=2)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return directory


# Reruns once: the reconnect test checks exactly-once delivery by words (see reconnect.test.js),
# which tolerates a misheard word, but a phrase Whisper rewrites wholesale can still fail it.
@pytest.mark.flaky(reruns=1)
def test_js_client_library(shared_server, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (CI installs Node 20+; the JS client tests need it)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 20, f"the JS client needs Node 20 or newer; found {version}"
    if not (CLIENT_JS / "node_modules" / "ws").is_dir():
        pytest.fail("client_js/node_modules is missing: run ./install.sh (it runs npm ci --prefix client_js)")
    fixtures = write_fixtures(tmp_path / "fixtures")
    # The test files by name: a directory argument would also run test/helpers.js as a test file.
    tests = sorted(str(p.relative_to(ROOT)) for p in (CLIENT_JS / "test").glob("*.test.js"))
    alone = [t for t in tests if Path(t).name in ON_THEIR_OWN]
    assert len(alone) == len(ON_THEIR_OWN), f"client_js/test lacks one of {ON_THEIR_OWN}: {tests}"
    env = {**os.environ, "LIVECAPTION_URL": shared_server.url, "LIVECAPTION_FIXTURES": str(fixtures)}
    for files in [[t] for t in alone] + [[t for t in tests if t not in alone]]:
        output = _node_test(node, files, env)
        # A test that skipped itself would hide a missing feature: none may.
        assert "# skipped 0" in output and "# todo 0" in output, output
        print(output)


def _node_test(node: str, files: list[str], env: dict[str, str]) -> str:
    """`node --test` on `files`, all of them at once; its TAP output, once every test passed."""
    command = [node, "--test", "--test-force-exit", f"--test-timeout={NODE_TEST_TIMEOUT_MS}", "--test-reporter=tap"]
    try:
        result = subprocess.run(
            command + [f"--test-concurrency={len(files)}"] + files,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        output = "\n".join(_text(part) for part in (exc.stdout, exc.stderr))
        pytest.fail(f"node --test {' '.join(files)} ran past {NODE_TIMEOUT_S} s:\n{output}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node --test {' '.join(files)} failed (exit {result.returncode}):\n{output}"
    return output


def test_type_declarations_match_the_library():
    """`tsc -p client_js`: the library's JS passes a strict check, and test/types-check.ts finds
    livecaption.d.ts and livecaption.js in agreement (the same exports, members and event details)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (CI installs Node 20+; the type check needs it)")
    tsc = CLIENT_JS / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file():
        pytest.fail("client_js/node_modules has no typescript: run ./install.sh (it runs npm ci --prefix client_js)")
    result = subprocess.run(
        [node, str(tsc), "-p", str(CLIENT_JS), "--pretty", "false"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
    )
    assert result.returncode == 0, f"tsc -p client_js found errors:\n{result.stdout}{result.stderr}"


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""
