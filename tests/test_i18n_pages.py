"""The pages in Simplified Chinese and English (client_js/i18n.js), in a real headless Chromium.

Each page (/, /files, /overlay, /status, /vad) shown to a zh-CN and to an en-US browser: its texts, its
<html lang>, CJK fonts; the language switch changes the page in place and is remembered across a
reload and on the other pages; a microphone error in Chinese; the live page's speech-language menu
reaches the server in the stream's first message, and /files' menu in the job's options.
Screenshots of the Chinese pages go to test-artifacts/browser/ (look at them: no tofu boxes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.engines.instant import InstantEngine
from tests.browser_context import checked_context
from tests.server_thread import servers_on
from tests.speech import compose, write_wav
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, INSECURE_HOST, sync_api  # same browser, same flags

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
SPEECH = [0.5, "good morning", 0.5]
CJK_FONTS = ("Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei")

# What each page says first, per interface language: (selector, text).
PAGES = {
    "/": [
        ("h1", "Live captions", "实时字幕"),
        ("#start", "Start", "开始"),
        ("#conn-text", "Not connected", "未连接"),
        ("label[for=language]", "Speech language", "识别语言"),
        ("footer a[href=files]", "Files and history", "文件与历史"),
    ],
    "/files": [
        ("h1", "Files and history", "文件与历史"),
        ("#upload", "Upload and transcribe", "上传并转写"),
        ("#jobs-empty", "No jobs yet.", "还没有任务。"),
        ("#history-title", "History", "历史记录"),
    ],
    "/overlay": [("#notice-text", "Caption overlay: add ?session=", "字幕叠加层：请在地址后加上 ?session=")],
    "/status": [("h1", "Live caption server", "实时字幕服务器"), ("#status tr[data-key=status] td", "status", "状态")],
    "/vad": [("h1", "Speech detection (VAD)", "语音端点检测（VAD）"), ("#detect", "Detect speech", "检测语音")],
}
TITLES = {"/": ("Live captions", "实时字幕"), "/files": ("Files and history – Live captions", "文件与历史 – 实时字幕")}


@pytest.fixture(scope="module")
def start_instant(scorer):
    """Servers on the product's "instant" engine (fixed text, no model): no test here reads words (texts,
    menus, messages, a job's options and status). The speech-language test keeps real Whisper: the
    refusal of a language the model lacks is the embedded model's own (Cantonese, on Whisper base)."""
    with servers_on(InstantEngine(), scorer) as start:
        yield start


@pytest.fixture(scope="module")
def shared_server(start_instant):
    return start_instant()


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("i18n") / "speech.wav", compose(SPEECH).audio)


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as p:
        yield p


def _launch(playwright, wav: Path, lang: str):
    args = [
        *CHROMIUM_FLAGS,
        f"--lang={lang}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1",
    ]
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


@pytest.fixture(scope="module")
def zh_browser(playwright, speech_wav):
    browser = _launch(playwright, speech_wav, "zh-CN")
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def en_browser(playwright, speech_wav):
    browser = _launch(playwright, speech_wav, "en-US")
    yield browser
    browser.close()


@pytest.fixture
def zh(zh_browser):
    # Headless Chromium ignores --lang for navigator.languages; the context's locale sets them.
    with checked_context(zh_browser, locale="zh-CN", viewport={"width": 1280, "height": 900}) as context:
        yield context


@pytest.fixture
def en(en_browser):
    with checked_context(en_browser, locale="en-US", viewport={"width": 1280, "height": 900}) as context:
        yield context


def _open(context, url: str):
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("document.documentElement.lang !== '' && document.querySelector('select.ui-language')")
    return page


def _texts_are(page, path: str, index: int) -> None:
    for selector, *texts in PAGES[path]:
        expected = texts[index]
        page.wait_for_function(
            "([s, text]) => (document.querySelector(s)?.textContent || '').trim().startsWith(text)",
            arg=[selector, expected],
            timeout=10_000,
        )
    if path in TITLES:
        assert page.title() == TITLES[path][index]


@pytest.mark.parametrize("path", list(PAGES))
def test_each_page_follows_the_browser_language(shared_server, zh, en, path):
    for index, (context, lang) in enumerate([(en, "en"), (zh, "zh-CN")]):
        page = _open(context, f"{shared_server.http}{path}")
        assert page.evaluate("document.documentElement.lang") == lang
        _texts_are(page, path, index)
        assert page.input_value("select.ui-language") == ("en" if index == 0 else "zh")
        font = page.evaluate("getComputedStyle(document.body).fontFamily")
        assert any(name in font for name in CJK_FONTS), font
        if index == 1 and path != "/overlay":  # a Chinese interface puts a CJK font first
            assert font.lstrip('"').startswith("PingFang SC"), font
    # Traditional-Chinese browsers get the Simplified interface too.
    with checked_context(zh.browser, locale="zh-TW") as taiwan:
        page = _open(taiwan, f"{shared_server.http}{path}")
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        _texts_are(page, path, 1)


def test_the_switch_changes_the_page_and_is_remembered(shared_server, en):
    page = _open(en, f"{shared_server.http}/")
    assert page.get_by_label("Page language").count() == 1  # visible and labelled
    page.select_option("#ui-language", "zh")
    # In place, without a reload: static text, attributes, what the page wrote itself, menus.
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert page.inner_text("#start") == "开始"
    assert page.inner_text("#conn-text") == "未连接"
    assert page.inner_text("#latency") == "延迟 –"
    assert page.get_attribute("#finals", "aria-label") == "最终字幕"
    assert page.get_attribute("#session-id", "placeholder") == "每次打开页面新建"
    assert page.title() == "实时字幕"
    assert page.eval_on_selector("#language option[value=yue]", "o => o.textContent") == "粤语 (yue)"
    assert page.get_by_label("界面语言").count() == 1
    page.reload()
    page.wait_for_function("document.documentElement.lang === 'zh-CN'")
    assert page.inner_text("#start") == "开始"
    assert page.input_value("#ui-language") == "zh"
    # The other pages of the server follow the stored choice, though the browser says English.
    for path in ("/files", "/status", "/overlay", "/vad"):
        other = _open(en, f"{shared_server.http}{path}")
        assert other.evaluate("document.documentElement.lang") == "zh-CN", path
        _texts_are(other, path, 1)
    # And back.
    files = _open(en, f"{shared_server.http}/files")
    files.select_option("#ui-language", "en")
    assert files.inner_text("h1") == "Files and history"
    files.wait_for_function(  # rebuilt in English
        "/^(Nothing found|\\d+ captions? )/.test(document.getElementById('history-count').textContent)"
    )
    page.reload()
    page.wait_for_function("document.documentElement.lang === 'en'")
    assert page.inner_text("#start") == "Start"
    # ?lang= in a link decides for that load only (an OBS overlay URL, say); the stored choice stays.
    once = _open(en, f"{shared_server.http}/overlay?lang=zh")
    assert once.evaluate("document.documentElement.lang") == "zh-CN"
    assert once.evaluate("localStorage.getItem('livecaption.uiLanguage')") == "en"


def test_a_microphone_error_is_explained_in_chinese(start_instant, zh):
    shared_server = start_instant(auth={"allowed_hosts": [INSECURE_HOST]})  # a name it answers to
    page = zh.new_page()
    page.goto(f"http://{INSECURE_HOST}:{shared_server.server.port}/")
    page.wait_for_selector("#message:not([hidden])")
    assert page.get_attribute("#message", "data-reason") == "insecure"
    message = page.inner_text("#message")
    assert "浏览器只允许安全页面使用麦克风" in message and "https://" in message, message
    # Switched while it is shown, the message is said again in English.
    page.select_option("#ui-language", "en")
    assert page.inner_text("#message").startswith("Browsers only allow the microphone on secure pages")
    page.select_option("#ui-language", "zh")
    # A hotword the page refuses, in Chinese.
    page.goto(f"{shared_server.http}/")
    page.fill("#hotwords", "开门 500")
    page.click("#start")
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message") == "热词“开门”：权重须为 1 到 100，而不是 500。"


def test_the_speech_language_reaches_the_server_and_is_remembered(start_server, zh, artifacts):
    shared_server = start_server()  # real Whisper (see start_instant)
    page = _open(zh, f"{shared_server.http}/")
    choices = page.eval_on_selector_all("#language option", "os => os.map((o) => o.value)")
    assert choices[:2] == ["", "auto"]
    assert {"zh", "en", "yue", "ja", "ko", "fr", "de", "es"} <= set(choices)
    first_messages: list[dict] = []

    def on_socket(ws):
        def sent(payload):
            if isinstance(payload, str) and not first_messages:
                first_messages.append(json.loads(payload))

        ws.on("framesent", sent)

    page.on("websocket", on_socket)
    page.select_option("#language", "ja")
    page.click("#start")
    page.wait_for_function("document.getElementById('conn').dataset.state === 'live'", timeout=15_000)
    assert page.inner_text("#conn-text") == "识别中"
    assert first_messages and first_messages[0]["language"] == "ja", first_messages
    assert page.is_disabled("#language")  # fixed while streaming
    page.screenshot(path=str(artifacts / "page-zh.png"), full_page=True, animations="disabled")
    page.click("#stop")
    page.wait_for_function("document.getElementById('conn').dataset.state === 'idle'", timeout=20_000)
    page.reload()
    assert page.input_value("#language") == "ja"

    # A language the server's model lacks (Cantonese on the embedded Whisper base): the server's
    # refusal is shown, naming the language, and nothing is captioned as if it were another one.
    page.select_option("#language", "yue")
    page.click("#start")
    page.wait_for_selector("#message:not([hidden])", timeout=15_000)
    assert "yue" in page.inner_text("#message"), page.inner_text("#message")

    # "Server default" sends no language at all; "auto" asks for detection.
    for choice, expected in (("", None), ("auto", "auto")):
        first_messages.clear()
        page.select_option("#language", choice)
        page.click("#start")
        page.wait_for_function("document.getElementById('conn').dataset.state === 'live'", timeout=15_000)
        assert first_messages and first_messages[0].get("language") == expected, first_messages
        page.click("#stop")
        page.wait_for_function("document.getElementById('conn').dataset.state === 'idle'", timeout=20_000)


def test_files_page_language_menu_in_chinese(shared_server, zh, speech_wav, artifacts):
    page = _open(zh, f"{shared_server.http}/files")
    page.wait_for_selector("#jobs-empty:visible")
    page.click("summary")
    assert page.eval_on_selector("#language option[value=zh]", "o => o.textContent") == "中文（普通话） (zh)"
    page.select_option("#language", "ja")
    page.set_input_files("#file-input", str(speech_wav))
    page.wait_for_selector("#queue li:has-text('speech.wav')")
    assert page.inner_text("#message") == "1 个文件待上传。"
    page.click("#upload")
    page.wait_for_selector(".job")
    page.wait_for_function("document.querySelector('.job')?.dataset.status === 'done'", timeout=90_000)
    job = page.locator(".job").first
    assert job.locator(".job-head .badge").inner_text() == "完成"
    assert job.locator(".job-title").inner_text().startswith("任务 ")
    assert "1 个文件" in job.locator(".job-head .muted").inner_text()
    jobs = page.request.get(f"{shared_server.http}/api/jobs").json()["jobs"]
    assert jobs[0]["options"]["language"] == "ja"
    page.screenshot(path=str(artifacts / "files-zh.png"), full_page=True, animations="disabled")
    page.reload()
    page.wait_for_function("document.documentElement.lang === 'zh-CN'")
    assert page.input_value("#language") == "ja"  # remembered with the other upload options
    page.request.delete(f"{shared_server.http}/api/jobs/{jobs[0]['id']}")


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
