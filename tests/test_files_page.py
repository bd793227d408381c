"""The files and history page (/files) in a real headless Chromium against a real server on loopback.

A WAV with known words is uploaded through the file input and transcribed by the embedded Whisper
model; the job list must follow it to 100 % and offer downloads that hold the words. A corrupt file
dropped on the drop zone (a synthetic drop event with a DataTransfer), sent to the other engine the
server offers for files, must fail with its reason on screen. A live session's words must be found
by the history search, with its downloads, and the session deleted from there. A second server with
an access token checks the token prompt and downloads that carry the token. Screenshots go to
test-artifacts/files/.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from inference.engines.instant import InstantEngine
from tests.browser_context import checked_context
from tests.engines import RecordingEngine
from tests.job_engines import WholePhrasesEngine
from tests.server_thread import servers_on
from tests.speech import compose, write_wav
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, sync_api  # same browser, same flags
from tests.wsclient import finals, transcribe, words

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "files"
SPEECH = [0.4, "good morning everyone", 0.8, "please open the door", 0.5]
JOB_TIMEOUT_MS = 90_000
CORRUPT = b"ID3\x03\x00\x00\x00" + bytes(range(256)) * 40  # an MP3 header, then no audio at all
TOKEN = "files-secret-8c2a07"  # 16+ characters: shorter tokens are refused at startup


@pytest.fixture(scope="module")
def start_stand_in(scorer):
    """Servers on WholePhrasesEngine (no model: hears only SPEECH's phrases, found whole in a segment's
    own audio): where a test reads words, they only show that the uploaded file's audio came through.
    The first test keeps real Whisper: it checks the page's engine menu and the job's engine by the
    product's name ("whisper", the default), and transcribes a live session and a file end to end."""
    with servers_on(WholePhrasesEngine.of(compose(SPEECH)), scorer) as start:
        yield start


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("files") / "speech.wav", compose(SPEECH).audio)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser):
    with checked_context(browser, viewport={"width": 1280, "height": 1000}, accept_downloads=True) as context:
        yield context


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _drop(page, name: str, data: bytes) -> None:
    """Drops a file on the drop zone the way a browser does: dragenter, dragover, drop with a DataTransfer."""
    page.evaluate(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: 'audio/mpeg' }));
            const zone = document.getElementById('drop');
            for (const type of ['dragenter', 'dragover', 'drop']) {
                zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
            }
        }""",
        [name, base64.b64encode(data).decode()],
    )


def _message(page) -> str:
    return page.inner_text("#message")


def _wait_for_file(page, name: str, statuses: str) -> str:
    """Waits until the newest row for `name` has one of `statuses`; returns that status."""
    try:
        page.wait_for_function(
            """([name, statuses]) => [...document.querySelectorAll('.file-row')].some((row) =>
                   row.querySelector('.file-name').textContent === name && statuses.includes(row.dataset.status))""",
            arg=[name, statuses.split()],
            timeout=JOB_TIMEOUT_MS,
        )
    except sync_api.TimeoutError:
        rows = page.eval_on_selector_all(".file-row", "rows => rows.map((r) => r.innerText)")
        message = _message(page)
        raise AssertionError(
            f"{name} not {statuses} in {JOB_TIMEOUT_MS} ms; rows {rows}, message {message!r}"
        ) from None
    return page.get_attribute(f'.file-row:has(.file-name:text-is("{name}"))', "data-status")


def test_upload_progress_downloads_failure_and_history(start_server, context, speech_wav, artifacts):
    server = start_server(jobs={"engines": ["instant"]})  # a second engine for files; it loads at once
    audio = compose(SPEECH).audio
    # Playwright's sync API runs an event loop in this thread: the live session gets its own thread.
    with ThreadPoolExecutor(1) as pool:
        replies = pool.submit(asyncio.run, transcribe(server.url, audio, session_id="page-hist")).result(120)
    live = finals(replies)
    live_text = words(" ".join(f["text"] for f in live))
    assert "morning" in live_text, live_text

    page = context.new_page()
    # Playwright turns on file-dialog interception without waiting for it; a listener from the
    # start makes sure it is on before the first key press (else the dialog is missed at times).
    page.on("filechooser", lambda chooser: None)
    page.goto(f"{server.http}/files")
    page.wait_for_selector("#jobs-empty:visible")
    assert page.get_attribute("#message", "role") == "status"
    assert page.get_attribute("#message", "aria-live") == "polite"
    assert page.is_hidden("#token-form")
    # The engine choice lists what the server loaded; the live engine is the default.
    page.wait_for_selector("#engine option[value='instant']", state="attached")
    engines = page.eval_on_selector_all("#engine option", "options => options.map((o) => [o.value, o.textContent])")
    assert [value for value, _ in engines] == ["whisper", "instant"]
    assert engines[0][1].startswith("whisper – ") and engines[0][1].endswith("(default)")
    assert page.input_value("#engine") == "whisper"

    # Keyboard: the drop zone is a button; Enter (and Space) open the file dialog.
    page.focus("#drop")
    assert page.get_attribute("#drop", "role") == "button"
    for key in ("Enter", " "):
        with page.expect_file_chooser() as chooser:
            page.keyboard.press(key)
        assert chooser.value.is_multiple()
        chooser.value.set_files([])  # closes the dialog (Chromium opens one at a time)
    assert page.eval_on_selector_all("#queue li", "items => items.length") == 0

    # A setting the server refuses: its 400 message is shown, and nothing is uploaded.
    page.set_input_files("#file-input", str(speech_wav))
    page.wait_for_selector("#queue li:has-text('speech.wav')")
    page.click("summary")
    page.fill("#max-segment", "99999")
    page.click("#upload")
    page.wait_for_function("document.getElementById('message').dataset.kind === 'error'")
    assert "max_segment_s must be a number" in _message(page), _message(page)
    assert page.is_visible("#jobs-empty")

    # Upload with good settings: the job appears and is followed to 100 %.
    page.fill("#max-segment", "")
    page.select_option("#language", "en")  # a menu of codes (client_js/page/languages.js)
    page.click("#upload")
    page.wait_for_selector(".job")
    assert "Uploaded: job" in _message(page) or "speech.wav is" in _message(page), _message(page)
    assert page.eval_on_selector_all("#queue li", "items => items.length") == 0
    assert _wait_for_file(page, "speech.wav", "done failed") == "done", page.inner_text(".job")
    job = page.locator(".job").first
    page.wait_for_function("document.querySelector('.job').dataset.status === 'done'", timeout=10_000)
    assert job.locator(".job-head .badge").inner_text() == "Done"
    assert job.locator(".progress-line progress").evaluate("p => p.value") == 100
    assert job.locator(".progress-line .progress-text").inner_text().startswith("100%")
    row = job.locator(".file-row").first
    assert row.locator(".badge").inner_text() == "Done"
    assert row.locator("progress").evaluate("p => [p.value, p.getAttribute('aria-valuetext')]") == [100, "100%, Done"]
    assert row.locator(".file-error").is_hidden()
    page.screenshot(path=str(artifacts / "job-done.png"), full_page=True, animations="disabled")

    # Per-file downloads: the SRT behind the link holds the words; the browser saves it by name.
    srt_href = row.locator("a[href$='/export.srt']").get_attribute("href")
    assert re.fullmatch(rf"{re.escape(server.http)}/api/files/\d+/export\.srt", srt_href), srt_href
    response = page.request.get(srt_href)
    assert response.ok and "good morning" in words(response.text()), response.text()
    assert "-->" in response.text()
    with page.expect_download() as download:
        row.locator("a[href$='/export.srt']").click()
    assert download.value.suggested_filename == "speech.wav.srt"
    download.value.save_as(artifacts / "speech.srt")
    assert [a.inner_text() for a in row.locator(".downloads a").all()] == ["TXT", "SRT", "WebVTT", "JSON"]
    # Per-job downloads.
    zip_href = job.locator("a[href$='/export.zip']").get_attribute("href")
    zipped = page.request.get(zip_href)
    assert zipped.ok and zipped.body()[:2] == b"PK"
    csv = page.request.get(job.locator("a[href$='/export.csv']").get_attribute("href"))
    assert csv.ok and "morning" in csv.text().lower()

    # A corrupt file dropped on the zone: the upload succeeds, the transcription fails with a reason.
    # (Hotwords go with this job: a hotword prompt makes Whisper's words less predictable.)
    _drop(page, "broken.mp3", CORRUPT)
    page.wait_for_selector("#queue li:has-text('broken.mp3')")
    page.fill("#hotwords", "open the door 30\nFunASR")
    page.uncheck("#itn")
    page.select_option("#engine", "instant")
    page.click("#upload")
    assert _wait_for_file(page, "broken.mp3", "done failed") == "failed"
    broken = page.locator(".file-row[data-status='failed']").first
    error_text = broken.locator(".file-error").inner_text()
    assert broken.locator(".file-error").is_visible()
    assert "broken.mp3" in error_text and "not an audio or video file" in error_text, error_text
    assert broken.locator(".badge").inner_text() == "Failed"
    assert page.locator(".job[data-status='failed'] .job-head .badge").inner_text() == "Failed"  # every file failed
    assert broken.locator(".downloads").is_hidden()  # nothing to download
    page.wait_for_function("document.getElementById('message').textContent.includes('broken.mp3 failed')")
    page.screenshot(path=str(artifacts / "job-failed.png"), full_page=True, animations="disabled")
    # The options reached the server as the form said.
    options = {
        job["files"][0]["name"]: job["options"] for job in page.request.get(f"{server.http}/api/jobs").json()["jobs"]
    }
    assert options["speech.wav"] == {"language": "en", "hotwords": [], "itn": True}
    assert options["broken.mp3"] == {
        "language": "en",
        "hotwords": [["open the door", 30], ["FunASR", 20]],
        "itn": False,
    }
    jobs = page.request.get(f"{server.http}/api/jobs").json()["jobs"]
    assert {job["files"][0]["name"]: job["engine"] for job in jobs} == {
        "speech.wav": "whisper",
        "broken.mp3": "instant",
    }
    assert page.locator(".job[data-status='failed'] .job-head .muted").inner_text().endswith("· instant")

    # History: the live session's words are found, with the session's downloads.
    page.fill("#q", "morning")
    page.press("#q", "Enter")
    hit = page.locator(".hit[data-kind='live'][data-source='page-hist']")
    hit.wait_for()
    assert hit.locator(".badge").inner_text() == "Live session"
    assert "morning" in hit.locator("mark").first.inner_text().lower()
    assert [a.inner_text() for a in hit.locator(".downloads a").all()] == ["TXT", "SRT", "WebVTT", "JSON"]
    txt = page.request.get(hit.locator("a[href$='/export.txt']").get_attribute("href"))
    assert txt.ok and "morning" in txt.text().lower()
    assert page.locator(".hit[data-kind='file'] .hit-title").first.inner_text() == "speech.wav"
    assert page.inner_text("#history-count") == "2 captions containing “morning” from 1 live session and 1 file"
    page.screenshot(path=str(artifacts / "history.png"), full_page=True, animations="disabled")

    # A date range: tomorrow onwards finds nothing; today finds the session again.
    today = datetime.date.today()
    page.fill("#since", (today + datetime.timedelta(days=1)).isoformat())
    page.click("#history-form button[type='submit']")
    page.wait_for_function("document.getElementById('history-count').textContent.startsWith('Nothing found')")
    assert page.locator(".hit").count() == 0
    page.fill("#since", today.isoformat())
    page.fill("#until", today.isoformat())
    page.click("#history-form button[type='submit']")
    hit.wait_for()

    # Deleting the live session from the history (after a confirmation).
    page.once("dialog", lambda dialog: dialog.accept())
    hit.locator("button.delete").click()
    page.wait_for_function("document.getElementById('message').textContent.includes('page-hist deleted')")
    assert hit.count() == 0
    assert page.request.get(f"{server.http}/api/sessions/page-hist/export.txt").status == 404

    # Deleting the failed job.
    page.once("dialog", lambda dialog: dialog.accept())
    failed_job = page.locator(".job:has(.file-row[data-status='failed'])")
    failed_id = failed_job.get_attribute("data-job-id")
    failed_job.locator("button.delete").click()
    page.wait_for_function(f"document.getElementById('message').textContent === 'Job {failed_id} deleted.'")
    assert page.locator(".job").count() == 1
    assert page.request.get(f"{server.http}/api/jobs/{failed_id}").status == 404
    assert page.evaluate("document.activeElement.id") == "jobs-title"


def test_token_prompt_and_downloads_with_a_token(start_stand_in, context, speech_wav, artifacts):
    server = start_stand_in(auth={"tokens": [TOKEN]}, jobs={"max_upload_mb": 1})
    page = context.new_page()
    page.goto(f"{server.http}/files")
    page.wait_for_selector("#token-form:visible")
    assert page.get_attribute("#message", "data-reason") == "token"
    assert "access token" in _message(page)
    assert page.evaluate("document.activeElement.id") == "token"
    page.screenshot(path=str(artifacts / "token-prompt.png"), full_page=True, animations="disabled")

    page.fill("#token", "wrong")
    page.press("#token", "Enter")
    page.wait_for_function("document.getElementById('message').textContent.includes('did not accept')")
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.wait_for_selector("#jobs-empty:visible")
    page.wait_for_function("document.getElementById('history-count').textContent.startsWith('Nothing found')")
    assert page.is_hidden("#token-form")
    assert page.evaluate("sessionStorage.getItem('livecaption.token')") == TOKEN  # shared with the captions page

    # A file over max_upload_mb: the server's 413 reason is shown, and the file stays queued.
    _drop(page, "big.mp3", CORRUPT * 200)  # 2 MB
    page.click("#upload")
    page.wait_for_function("document.getElementById('message').dataset.kind === 'error'")
    assert "Upload refused, too large: 'big.mp3' is larger than max_upload_mb (1 MB)" in _message(page), _message(page)
    assert page.locator("#queue li").count() == 1
    page.screenshot(path=str(artifacts / "too-large.png"), full_page=True, animations="disabled")
    page.click("#clear")

    # Uploads and downloads carry the token (Authorization: Bearer), not the links.
    page.set_input_files("#file-input", str(speech_wav))
    page.click("#upload")
    assert _wait_for_file(page, "speech.wav", "done failed") == "done"
    link = page.locator(".file-row a[href$='/export.srt']")
    assert "token" not in link.get_attribute("href")
    assert page.request.get(link.get_attribute("href")).status == 401  # the bare link needs the token
    with page.expect_download() as download:
        link.click()
    path = artifacts / "speech-token.srt"
    download.value.save_as(path)
    assert download.value.suggested_filename == "speech.wav.srt"
    assert "good morning" in path.read_text(encoding="utf-8").lower()

    # A link with ?token= works in a fresh tab and leaves the address bar without it.
    fresh = context.new_page()
    fresh.goto(f"{server.http}/files?token={TOKEN}")
    fresh.wait_for_selector(".job")
    assert "token" not in fresh.url
    assert fresh.is_hidden("#token-form")


def test_a_running_job_is_cancelled_from_the_page(start_stand_in, context, speech_wav, artifacts):
    engine = RecordingEngine(InstantEngine())  # no words are read: the product's fixed-text engine
    server = start_stand_in(engine=engine)
    engine.gate.clear()  # the model holds every decode: the job stays running until cancelled
    try:
        page = context.new_page()
        page.goto(f"{server.http}/files")
        page.wait_for_selector("#jobs-empty:visible")
        page.set_input_files("#file-input", str(speech_wav))
        page.click("#upload")
        job = page.locator(".job")
        page.wait_for_selector(".job .file-row[data-status='running']", timeout=JOB_TIMEOUT_MS)
        cancel = job.locator("button.cancel")
        assert cancel.is_visible() and cancel.get_attribute("aria-label").startswith("Cancel job ")
        page.once("dialog", lambda dialog: dialog.accept())
        cancel.click()
        page.wait_for_selector(".job[data-status='cancelled']", timeout=JOB_TIMEOUT_MS)
        assert _message(page).endswith(f"Job {job.get_attribute('data-job-id')} cancelled.")
        assert job.locator(".file-row .badge").inner_text() == "Cancelled"
        assert cancel.is_hidden() and job.locator("button.delete").is_visible()  # finished: only delete is left
        page.screenshot(path=str(artifacts / "cancelled.png"), full_page=True, animations="disabled")
        status = page.request.get(f"{server.http}/api/jobs/{job.get_attribute('data-job-id')}").json()
        assert status["status"] == "cancelled" and status["files"][0]["status"] == "cancelled"
    finally:
        engine.gate.set()


def test_pre_cut_clips_skip_speech_detection_and_the_choice_is_remembered(start_stand_in, context, speech_wav):
    """The "pre-cut clips" box sends `"vad": false`: the two phrases of speech.wav become one
    segment instead of two, and the box stays ticked on the next visit."""
    server = start_stand_in(jobs={"engines": ["instant"]})  # the instant engine: segments, not words, matter
    page = context.new_page()
    page.goto(f"{server.http}/files")
    page.wait_for_selector("#engine option[value='instant']", state="attached")
    page.click("summary")
    page.select_option("#engine", "instant")
    assert not page.is_checked("#skip-vad")
    page.check("#skip-vad")
    page.set_input_files("#file-input", str(speech_wav))
    page.click("#upload")
    assert _wait_for_file(page, "speech.wav", "done failed") == "done"
    page.uncheck("#skip-vad")  # the same file with speech detection, for comparison
    page.set_input_files("#file-input", str(speech_wav))
    page.click("#upload")
    page.wait_for_function("document.querySelectorAll('.job').length === 2", timeout=10_000)
    page.wait_for_function(
        "[...document.querySelectorAll('.job')].every((job) => job.dataset.status === 'done')", timeout=JOB_TIMEOUT_MS
    )
    with urllib.request.urlopen(f"{server.http}/api/jobs") as response:
        jobs = json.load(response)["jobs"]
    segments = {job["options"].get("vad", True): [f["segments"] for f in job["files"]] for job in jobs}
    assert segments == {False: [1], True: [2]}, jobs

    page.check("#skip-vad")
    page.reload()
    page.wait_for_selector("#engine option[value='instant']", state="attached")
    assert page.is_checked("#skip-vad")  # remembered with the other upload options
