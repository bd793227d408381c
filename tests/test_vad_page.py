"""The /vad page in Chromium: a file in, its speech intervals out as a table and a timeline (the
same numbers /api/vad answers), behind a token, in English and Chinese from the browser's language."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.engines.instant import InstantEngine
from tests.browser_context import checked_context
from tests.server_thread import servers_on
from tests.speech import compose, write_wav
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, sync_api  # same browser, same flags

TALK = compose([0.5, "good morning everyone", 1.0, "please open the door", 0.6])
TOKEN = "vad-page-secret-5d1e0b"


@pytest.fixture(scope="module")
def start_instant(scorer):
    """Servers on the product's "instant" engine (fixed text, no model): the VAD page decodes nothing."""
    with servers_on(InstantEngine(), scorer) as start:
        yield start


@pytest.fixture(scope="module")
def talk_wav(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("vad-page") / "会议.wav", TALK.audio)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.mark.parametrize(
    "locale, lang, heading, summary",
    [("en-US", "en", "Speech intervals", "2 interval(s)"), ("zh-CN", "zh-CN", "语音区间", "2 个区间")],
)
def test_the_page_shows_the_intervals_as_a_table_and_a_timeline(
    start_instant, browser, talk_wav, locale, lang, heading, summary
):
    server = start_instant(auth={"tokens": [TOKEN]})
    with checked_context(browser, locale=locale) as context:
        page = context.new_page()
        page.goto(f"{server.http}/vad")
        assert page.get_attribute("html", "lang") == lang
        page.set_input_files("#file", str(talk_wav))
        page.click("#detect")
        page.wait_for_selector("#token-form:not([hidden])")  # no token yet: the page asks for one
        page.fill("#token", TOKEN)
        page.click("#token-form button[type=submit]")
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        assert page.inner_text("#result-title") == heading
        assert "会议.wav" in page.inner_text("#summary") and summary in page.inner_text("#summary")
        rows = page.eval_on_selector_all("#rows tr", "rows => rows.map((r) => [...r.cells].map((c) => c.textContent))")
        assert len(rows) == 2
        for (start, end), row in zip(TALK.spans, rows):
            assert abs(float(row[1]) - start / 16000) < 0.15 and abs(float(row[2]) - end / 16000) < 0.15
        bars = page.eval_on_selector_all("#timeline span", "spans => spans.map((s) => parseFloat(s.style.left))")
        assert len(bars) == 2 and 0 < bars[0] < bars[1] < 100
        assert page.get_attribute("#csv", "download") == "会议.vad.csv"
