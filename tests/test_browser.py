"""The captions page and the overlay in a real headless Chromium against a real server on loopback.

Chromium's fake microphone plays an espeak-ng WAV with known words; the page captures it through
its AudioWorklet, streams it with client_js/livecaption.js, and the words must appear in the DOM;
an overlay subscribed to the page's session must show the same finals. Screenshots of both go to
test-artifacts/browser/. Smaller tests drive the page's modules (caption view, exports, settings)
in the same browser, and check the microphone error messages a person would see.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from inference.engines.instant import InstantEngine
from tests.browser_context import checked_context
from tests.server_thread import servers_on
from tests.speech import compose, write_wav

sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package (pip)")

CHROMIUM = os.environ.get("LIVECAPTION_CHROMIUM", "/usr/bin/chromium")
if not shutil.which(CHROMIUM):
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
# Required flags for CI, then the fake microphone (added per browser below).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSECURE_HOST = "captions.test"  # resolves to 127.0.0.1 inside the browser, yet is not a secure origin
SPEECH = [1.0, "good morning everyone", 1.0, "please open the door", 1.5]
EXPECTED = ["good morning", "open the door"]
WORDS_TIMEOUT_MS = 60_000

# innerText of an element, lower case, letters and single spaces only.
NORMALIZE_JS = "(t) => t.toLowerCase().replace(/[^a-z0-9' ]+/g, ' ').replace(/\\s+/g, ' ')"


def _launch(playwright, wav: Path, *extra: str):
    # The fake device plays the file in a loop from the moment the page opens the microphone, so
    # the words come round again even if the start of the first pass is missed.
    args = [
        *CHROMIUM_FLAGS,
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1",
        "--lang=en-US",  # the pages follow the browser's language; these tests read English
        *extra,
    ]
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


@pytest.fixture(scope="module")
def start_stand_in(scorer):
    """Servers on stand-ins with no model, by default the product's "instant" engine (fixed text):
    no test here reads words but the first, whose words show that the microphone's audio came
    through the page's path (fake microphone, AudioWorklet resampling to 16 kHz, PCM16 frames); that
    one runs on real Whisper (see it)."""
    with servers_on(InstantEngine(), scorer) as start:
        yield start


@pytest.fixture(scope="module")
def shared_server(start_stand_in):
    return start_stand_in()


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("browser") / "speech.wav", compose(SPEECH).audio)


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright, speech_wav):
    """Chromium whose microphone prompt is auto-accepted and whose microphone plays speech_wav."""
    browser = _launch(playwright, speech_wav, "--use-fake-ui-for-media-stream")
    yield browser
    browser.close()


@pytest.fixture
def context(browser):
    with checked_context(browser, viewport={"width": 1280, "height": 900}) as context:
        yield context


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _finals(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "items => items.map(i => i.innerText.trim())")


def _wait_for_words(page, selector: str, words: list[str], timeout_ms: int = WORDS_TIMEOUT_MS) -> None:
    try:
        page.wait_for_function(
            f"""([selector, words]) => {{
                const el = document.querySelector(selector);
                const text = el ? ({NORMALIZE_JS})(el.innerText) : "";
                return words.every((w) => text.includes(w));
            }}""",
            arg=[selector, words],
            timeout=timeout_ms,
        )
    except sync_api.TimeoutError:
        state = page.evaluate(
            """(selector) => {
                const text = (id) => document.getElementById(id)?.innerText;
                return { shown: document.querySelector(selector)?.innerText, conn: text('conn'),
                         message: text('message'), partial: text('partial'),
                         level: document.getElementById('level')?.value, state: document.body.dataset.state };
            }""",
            selector,
        )
        raise AssertionError(f"{words} not in {selector} within {timeout_ms} ms; page: {state}") from None


def _tab_to(page, element_id: str, limit: int = 15) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} is not reachable with Tab")


SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d{3})"
VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d{3})"


def _ms(h: str, m: str, s: str, ms: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def parse_cues(text: str, time_pattern: str) -> list[tuple[int, int, str]]:
    """SRT or WebVTT cues as (start_ms, end_ms, text); fails on anything malformed."""
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        assert len(lines) >= 3 and lines[0].isdigit(), f"malformed cue: {block!r}"
        match = re.fullmatch(f"{time_pattern} --> {time_pattern}", lines[1])
        assert match, f"malformed cue timing: {lines[1]!r}"
        start, end = _ms(*match.groups()[:4]), _ms(*match.groups()[4:])
        assert 0 <= start <= end, block
        cues.append((start, end, "\n".join(lines[2:])))
    assert [int(b.split("\n")[0]) for b in text.strip().split("\n\n")] == list(range(1, len(cues) + 1))
    assert [c[0] for c in cues] == sorted(c[0] for c in cues)
    return cues


# --- the whole path: microphone -> worklet -> socket -> captions, and an overlay following ------
def test_page_captions_the_microphone_and_the_overlay_follows(start_stand_in, whisper_engine, context, artifacts):
    # Real Whisper hears the fake microphone: a full CI run (9791814) failed twice in one process
    # with WholePhrasesEngine here, every phrase arriving at its length but below its 0.99
    # correlation (Chromium's capture under a loaded machine), where it passed alone and in 3 runs.
    shared_server = start_stand_in(engine=whisper_engine)
    session = f"browser-{secrets.token_hex(4)}"
    console_errors: list[str] = []
    context.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    page = context.new_page()
    page.goto(f"{shared_server.http}/")
    # A host picks a fixed session id, so displays can be opened before the speech starts.
    page.fill("#session-id", session)
    page.dispatch_event("#session-id", "change")
    overlay = context.new_page()
    overlay.goto(f"{shared_server.http}/overlay?session={session}&lines=4")
    overlay.wait_for_function("document.body.dataset.state === 'live'", timeout=10_000)

    # Keyboard only: Tab to Start, Enter starts; focus moves to Stop.
    page.bring_to_front()
    page.click("h1")  # Tab navigation starts after the heading
    _tab_to(page, "start")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('conn').dataset.state === 'live'", timeout=15_000)
    assert page.evaluate("document.activeElement.id") == "stop"

    _wait_for_words(page, "#finals", EXPECTED)
    assert page.inner_text("#session") == session
    href = page.get_attribute("#overlay-link", "href")
    assert href == f"{shared_server.http}/overlay?session={session}"
    assert re.fullmatch(r"latency \d+\.\d s \(median \d+\.\d s\)", page.inner_text("#latency"))
    times = page.eval_on_selector_all("#finals time", "items => items.map(i => i.textContent)")
    assert times and all(re.fullmatch(r"\[\d\d:\d\d\]", t) for t in times)
    assert page.is_hidden("#message"), page.inner_text("#message")
    page.screenshot(path=str(artifacts / "page.png"), full_page=True, animations="disabled")

    # Stop with the keyboard (focus is on Stop): the end reply arrives, the page goes idle. On a
    # loaded machine the server may still be deciding the microphone's last seconds: the page waits
    # for every final as long as they keep coming, so the displays below show no more than it.
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('conn').dataset.state === 'idle'", timeout=180_000)
    assert page.is_hidden("#message"), page.inner_text("#message")  # the end reply came: no 'stop failed'
    assert page.evaluate("document.activeElement.id") == "start"
    page_finals = [re.sub(r"^\[\d\d:\d\d\]\s*", "", t) for t in _finals(page, "#finals li")]

    # The overlay, subscribed before the speech, shows the same finals.
    _wait_for_words(overlay, "#lines", EXPECTED, timeout_ms=10_000)
    overlay.wait_for_function(f"document.querySelectorAll('#lines .final').length >= {len(page_finals)}")
    assert _finals(overlay, "#lines .final") == page_finals
    overlay.screenshot(path=str(artifacts / "overlay.png"), omit_background=True, animations="disabled")

    # A display opened afterwards gets the same finals replayed.
    late = context.new_page()
    late.goto(f"{shared_server.http}/overlay?session={session}&lines=4&position=top&bg=000000")
    late.wait_for_function(f"document.querySelectorAll('#lines .final').length >= {len(page_finals)}")
    assert _finals(late, "#lines .final") == page_finals
    late.screenshot(path=str(artifacts / "overlay-late-top.png"), omit_background=True, animations="disabled")

    # Downloads: TXT, SRT and WebVTT hold the finals with the page's times.
    captions = page.evaluate("window.livecaption.view.captions")
    assert [c["text"] for c in captions] == page_finals
    files = {}
    for fmt in ("txt", "srt", "vtt"):
        with page.expect_download() as info:
            page.click(f"#download-{fmt}")
        download = info.value
        assert download.suggested_filename.startswith(f"captions-{session}-")
        assert download.suggested_filename.endswith(f".{fmt}")
        path = artifacts / f"session.{fmt}"
        download.save_as(path)
        files[fmt] = path.read_text(encoding="utf-8")
    expected_cues = [(c["startMs"], c["endMs"], c["text"]) for c in captions]
    assert parse_cues(files["srt"], SRT_TIME) == expected_cues
    assert files["vtt"].startswith("WEBVTT\n\n")
    assert parse_cues(files["vtt"].removeprefix("WEBVTT\n\n"), VTT_TIME) == expected_cues
    txt_lines = files["txt"].splitlines()
    assert [re.sub(r"^\[\d\d:\d\d\] ", "", line) for line in txt_lines] == page_finals
    assert all(re.match(r"\[\d\d:\d\d\] ", line) for line in txt_lines)
    assert not console_errors, console_errors  # no failed request, no failed socket


def test_finals_are_an_aria_live_region_and_controls_are_labelled(shared_server, context):
    page = context.new_page()
    page.goto(f"{shared_server.http}/")
    log = page.get_by_role("log", name="Final captions")
    assert log.get_attribute("aria-live") == "polite"
    assert page.get_attribute("#partial", "aria-live") is None  # the partial changes too often to announce
    assert page.get_attribute("#message", "role") == "alert"
    assert page.get_attribute("#conn-text", "role") == "status"
    for label in ("Microphone", "Mode", "Hotwords", "Numbers as digits (ITN)", "Text size (px)", "Lines shown"):
        assert page.get_by_label(label, exact=True).count() == 1, label
    # Every control is reachable with Tab, in order, starting with the skip link.
    order = []
    for _ in range(20):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.className"))
    assert order[:2] == ["skip", "start"] or order[:2] == ["", "start"], order
    for control in ("device", "mode", "hotwords", "itn", "session-id", "font-size", "lines", "scrollback"):
        assert control in order, (control, order)
    overlay = context.new_page()
    overlay.goto(f"{shared_server.http}/overlay?session=aria-check")
    assert overlay.get_attribute("#lines", "role") == "log"
    assert overlay.get_attribute("#lines", "aria-live") == "polite"


# --- microphone problems a person must understand -------------------------------------------------
def test_denied_microphone_permission_is_explained(shared_server, playwright, speech_wav):
    browser = _launch(playwright, speech_wav, "--deny-permission-prompts")
    try:
        page = browser.new_page(locale="en-US")
        page.goto(f"{shared_server.http}/")
        page.click("#start")
        page.wait_for_selector("#message:not([hidden])")
        assert page.get_attribute("#message", "data-reason") == "denied"
        assert "permission was denied" in page.inner_text("#message")
        assert page.is_enabled("#start") and page.is_disabled("#stop")
        assert page.get_attribute("#conn", "data-state") == "idle"
    finally:
        browser.close()


def test_insecure_origin_is_explained(start_stand_in, context):
    # The name must be one the server answers to (auth.allowed_hosts, against DNS rebinding).
    shared_server = start_stand_in(auth={"allowed_hosts": [INSECURE_HOST]})
    page = context.new_page()
    port = shared_server.server.port
    page.goto(f"http://{INSECURE_HOST}:{port}/")
    assert page.evaluate("window.isSecureContext") is False
    page.wait_for_selector("#message:not([hidden])")  # said at once, before anyone presses Start
    assert page.get_attribute("#message", "data-reason") == "insecure"
    page.click("#start")
    message = page.inner_text("#message")
    assert "https://" in message and "localhost" in message
    assert page.get_attribute("#conn", "data-state") == "idle"
    # 127.0.0.1, like localhost, is a secure context: the page there needs no TLS.
    page.goto(f"{shared_server.http}/")
    assert page.evaluate("window.isSecureContext") is True
    assert page.is_hidden("#message")


def test_bad_hotword_weight_is_explained_before_capture(shared_server, context):
    page = context.new_page()
    page.goto(f"{shared_server.http}/")
    page.fill("#hotwords", "open the door 500")
    page.click("#start")
    page.wait_for_selector("#message:not([hidden])")
    assert page.get_attribute("#message", "data-reason") == "settings"
    assert "1 to 100" in page.inner_text("#message")
    assert page.get_attribute("#conn", "data-state") == "idle"


def test_missing_microphone_is_explained(shared_server, context):
    page = context.new_page()
    page.goto(f"{shared_server.http}/")
    # The page fills the list when it opens, after an await (enumerateDevices): an option added
    # before that is dropped again (the choice falls back to the default microphone, which works).
    page.wait_for_function("document.querySelectorAll('#device option').length > 1")  # the fake mics
    # The microphone chosen in the list has gone away (unplugged since the list was filled).
    page.evaluate(
        """() => { const s = document.getElementById('device');
                   s.append(new Option('Unplugged', 'no-such-device')); s.value = 'no-such-device'; }"""
    )
    page.click("#start")
    page.wait_for_selector("#message:not([hidden])")
    assert page.get_attribute("#message", "data-reason") == "no-device"
    assert "not available" in page.inner_text("#message")
    assert page.is_enabled("#start")


# --- the page's pieces, driven directly in the browser --------------------------------------------
VIEW_SETUP = """async () => {
    const { CaptionView } = await import('/client_js/page/captions-view.js');
    document.body.insertAdjacentHTML('beforeend', `
      <div id="t-scroller" style="height: 100px; overflow-y: auto; font-size: 16px">
        <ol id="t-list"></ol><p id="t-partial" class="partial"></p></div>
      <button id="t-jump" hidden>jump</button>`);
    const $ = (id) => document.getElementById(id);
    window.tview = new CaptionView({ scroller: $('t-scroller'), list: $('t-list'),
                                     partial: $('t-partial'), jump: $('t-jump') });
}"""


def test_partial_updates_only_the_unstable_words(shared_server, context):
    page = context.new_page()
    page.goto(f"{shared_server.http}/")
    page.evaluate(VIEW_SETUP)
    result = page.evaluate(
        """async () => {
            const view = window.tview;
            view.setPartial('good morning', 'every');
            const stable = document.querySelector('#t-partial .stable');
            const unstable = document.querySelector('#t-partial .unstable');
            const touched = [];
            new MutationObserver((records) => records.forEach((r) => touched.push(r.target === stable
                || stable.contains(r.target) ? 'stable' : 'other'))).observe(stable,
                { childList: true, characterData: true, subtree: true });
            view.setPartial('good morning', 'everyone');
            view.setPartial('good morning', 'everyone here');
            await new Promise((r) => setTimeout(r, 0));
            const styles = [getComputedStyle(stable), getComputedStyle(unstable)];
            return { touched, stable: stable.textContent, unstable: unstable.textContent,
                     fontStyles: styles.map((s) => s.fontStyle), colours: styles.map((s) => s.color) };
        }"""
    )
    assert result["touched"] == []  # stable words were not re-rendered while the tail changed
    assert result["stable"] == "good morning" and result["unstable"] == " everyone here"
    assert result["fontStyles"] == ["normal", "italic"]
    assert result["colours"][0] != result["colours"][1]
    # The final replaces the partial; a replayed final (same segment id) is not shown twice.
    shown = page.evaluate(
        """() => [window.tview.addFinal({segmentId: 4, startMs: 65000, endMs: 66000, text: 'Good morning.'}),
                  window.tview.addFinal({segmentId: 4, startMs: 65000, endMs: 66000, text: 'Good morning.'}),
                  document.getElementById('t-partial').textContent,
                  document.getElementById('t-list').innerText]"""
    )
    assert shown == [True, False, "", "[01:05] Good morning."]


def test_scrollback_follows_until_the_user_scrolls_up(shared_server, context):
    page = context.new_page()
    page.goto(f"{shared_server.http}/")
    page.evaluate(VIEW_SETUP)
    add = """(n) => { for (let i = 0; i < n; i++) {
                const id = window.tviewId = (window.tviewId || 0) + 1;
                window.tview.addFinal({ segmentId: id, startMs: 1000 * id, endMs: 0, text: 'line ' + id }); } }"""
    at_end = """() => { const s = document.getElementById('t-scroller');
                       return s.scrollHeight - s.scrollTop - s.clientHeight <= 8; }"""
    page.evaluate(add, 30)
    assert page.evaluate(at_end) is True
    assert page.is_hidden("#t-jump")
    # The user scrolls up to read: new lines no longer pull the view down.
    page.evaluate("document.getElementById('t-scroller').scrollTop = 40")
    page.wait_for_function("!window.tview.following")
    page.evaluate(add, 5)
    assert page.evaluate("document.getElementById('t-scroller').scrollTop") == 40
    assert page.is_visible("#t-jump")
    # "Jump to latest" (keyboard: focus + Enter) follows again.
    page.focus("#t-jump")
    page.keyboard.press("Enter")
    page.wait_for_function(at_end)
    page.evaluate(add, 3)
    assert page.evaluate(at_end) is True
    assert page.is_hidden("#t-jump")


def test_reduced_motion_turns_off_animation(shared_server, context):
    page = context.new_page()
    page.goto(f"{shared_server.http}/")
    page.evaluate(VIEW_SETUP)
    page.evaluate("window.tview.addFinal({segmentId: 1, startMs: 0, endMs: 1, text: 'hello'})")
    animation = "getComputedStyle(document.querySelector('#t-list .final')).animationName"
    assert page.evaluate(animation) != "none"
    page.emulate_media(reduced_motion="reduce")
    assert page.evaluate(animation) == "none"


def test_exports_are_valid_srt_vtt_and_txt(shared_server, context):
    page = context.new_page()
    page.goto(f"{shared_server.http}/")
    out = page.evaluate(
        """async () => {
            const m = await import('/client_js/page/captions-export.js');
            const captions = [
              { startMs: 3723456, endMs: 3725001, text: 'Tom & <Jerry> --> go' },
              { startMs: 0, endMs: 999.6, text: 'first' },
              { startMs: 5, endMs: 6, text: '   ' },
              { startMs: 61000, endMs: 60000, text: 'end before start' },
            ];
            return { srt: m.toSrt(captions), vtt: m.toVtt(captions), txt: m.toTxt(captions) };
        }"""
    )
    assert parse_cues(out["srt"], SRT_TIME) == [
        (0, 1000, "first"),
        (61000, 61000, "end before start"),
        (3723456, 3725001, "Tom & <Jerry> --> go"),
    ]
    vtt = out["vtt"]
    assert vtt.startswith("WEBVTT\n\n")
    cues = parse_cues(vtt.removeprefix("WEBVTT\n\n"), VTT_TIME)
    assert cues[2] == (3723456, 3725001, "Tom &amp; &lt;Jerry&gt; --&gt; go")  # no markup, no "-->" in a cue
    assert out["txt"] == "[00:00] first\n[01:01] end before start\n[1:02:03] Tom & <Jerry> --> go\n"


def test_text_size_and_lines_are_remembered(shared_server, context):
    page = context.new_page()
    page.goto(f"{shared_server.http}/")
    page.fill("#font-size", "36")
    page.press("#font-size", "Tab")
    page.fill("#lines", "500")  # out of range: clamped
    page.press("#lines", "Tab")
    assert page.input_value("#lines") == "40"
    page.fill("#lines", "5")
    page.press("#lines", "Tab")
    page.reload()
    assert page.input_value("#font-size") == "36"
    assert page.input_value("#lines") == "5"
    style = page.evaluate(
        """() => { const s = document.getElementById('scrollback');
                   return { size: getComputedStyle(s).fontSize, height: s.getBoundingClientRect().height }; }"""
    )
    assert style["size"] == "36px"
    assert 5 * 36 * 1.4 <= style["height"] <= 5 * 36 * 1.4 + 40  # five lines plus padding


def test_overlay_is_styled_by_its_query(shared_server, context):
    page = context.new_page()
    page.goto(
        f"{shared_server.http}/overlay?session=style-check&lines=3&size=60&color=ffff00&bg=%23000000"
        "&outline=red&position=top&align=left&font=serif"
    )
    page.wait_for_function("document.body.dataset.state === 'live'")
    style = page.evaluate(
        """() => {
            const line = getComputedStyle(document.getElementById('partial'));
            const area = getComputedStyle(document.querySelector('.text-area'));
            const box = document.getElementById('box');
            return { page: getComputedStyle(document.body).backgroundColor,
                     html: getComputedStyle(document.documentElement).backgroundColor,
                     size: line.fontSize, lineHeight: line.lineHeight, color: line.color, align: line.textAlign,
                     font: line.fontFamily, shadow: line.textShadow, maxHeight: area.maxHeight,
                     position: box.dataset.position, top: getComputedStyle(box).top,
                     bg: getComputedStyle(document.documentElement).getPropertyValue('--bg').trim() };
        }"""
    )
    assert style["page"] == style["html"] == "rgba(0, 0, 0, 0)"  # transparent for OBS
    assert style["size"] == "60px" and style["lineHeight"] == "75px"
    assert style["maxHeight"] == "225px"  # three lines
    assert style["color"] == "rgb(255, 255, 0)"
    assert "rgb(255, 0, 0)" in style["shadow"]  # the outline
    assert style["align"] == "left" and style["font"] == "serif"
    assert style["position"] == "top" and style["top"] == "24px"
    assert style["bg"] == "#000000"

    default = context.new_page()
    default.goto(f"{shared_server.http}/overlay?session=style-default&color=not-a-colour")
    style = default.evaluate(
        """() => ({ size: getComputedStyle(document.getElementById('partial')).fontSize,
                    color: getComputedStyle(document.getElementById('partial')).color,
                    maxHeight: getComputedStyle(document.querySelector('.text-area')).maxHeight,
                    position: document.getElementById('box').dataset.position })"""
    )
    assert style == {"size": "42px", "color": "rgb(255, 255, 255)", "maxHeight": "106px", "position": "bottom"}

    missing = context.new_page()
    missing.goto(f"{shared_server.http}/overlay")
    assert missing.is_visible("#notice") and "session=" in missing.inner_text("#notice")


# --- the AudioWorklet: downmix, band-limited resampling to 16 kHz, 80 ms PCM16 frames ------------
WORKLET_RUN = """async ([rate, channels]) => {
    // Renders 1 s through the worklet offline; each entry is one channel setup's frames.
    const run = async (make) => {
        const ctx = new OfflineAudioContext(2, rate, rate);
        await ctx.audioWorklet.addModule('/client_js/worklet.js');
        const node = new AudioWorkletNode(ctx, 'pcm16-capture',
            { processorOptions: { targetRate: 16000, frameMs: 80 } });
        const frames = [];
        node.port.onmessage = (e) => { if (e.data.type === 'frame') frames.push(new Int16Array(e.data.pcm)); };
        make(ctx).connect(node);
        node.connect(ctx.destination);
        await ctx.startRendering();
        await new Promise((r) => setTimeout(r, 300)); // the last messages are still on their way
        const lengths = frames.map((f) => f.length);
        const samples = frames.slice(2).flatMap((f) => Array.from(f)); // skip the filter's warm-up
        const rms = Math.sqrt(samples.reduce((a, s) => a + (s / 32768) ** 2, 0) / samples.length);
        return { lengths, rms };
    };
    const tone = (freq) => (ctx) => {
        const o = ctx.createOscillator();
        o.frequency.value = freq;
        o.start();
        return o;
    };
    const leftOnly = (ctx) => {  // a tone on the left channel, silence on the right
        const merger = ctx.createChannelMerger(2);
        tone(1000)(ctx).connect(merger, 0, 0);
        return merger;
    };
    return { speech: await run(tone(1000)), alias: await run(tone(12000)), stereo: await run(leftOnly) };
}"""


@pytest.mark.parametrize("rate", [48000, 44100])
def test_worklet_resamples_to_16k_frames_without_aliasing(shared_server, context, rate):
    page = context.new_page()
    page.goto(f"{shared_server.http}/")
    out = page.evaluate(WORKLET_RUN, [rate, 2])
    lengths = out["speech"]["lengths"]
    assert len(lengths) >= 11 and set(lengths) == {1280}  # 80 ms at 16 kHz; 1 s of input -> 12 full frames
    assert 0.68 < out["speech"]["rms"] < 0.72  # a full-scale 1 kHz sine (RMS 0.707) passes unchanged
    assert out["alias"]["rms"] < 0.01  # 12 kHz is above the new Nyquist: removed, not folded to 4 kHz
    assert 0.33 < out["stereo"]["rms"] < 0.37  # channels averaged: half amplitude


def test_page_over_tls_captures_on_a_non_local_name(start_stand_in, browser, tmp_path):
    """The documented setup for other hosts: a self-signed certificate, https:// and wss://."""
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-sha256", "-days", "2", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-subj", f"/CN={INSECURE_HOST}", "-addext", f"subjectAltName=DNS:{INSECURE_HOST}"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = start_stand_in(
        server={"tls_cert_file": str(cert), "tls_key_file": str(key)},
        auth={"allowed_hosts": [INSECURE_HOST]},  # a name the server answers to (against DNS rebinding)
    )
    context = browser.new_context(ignore_https_errors=True, locale="en-US")  # never told to trust it
    try:
        page = context.new_page()
        page.goto(f"https://{INSECURE_HOST}:{server.server.port}/")
        assert page.evaluate("window.isSecureContext") is True
        assert page.is_hidden("#message")
        page.click("#start")
        page.wait_for_function("document.getElementById('conn').dataset.state === 'live'", timeout=15_000)
        assert page.evaluate("window.livecaption.client.socket.url").startswith(f"wss://{INSECURE_HOST}:")
        assert page.inner_text("#session") not in ("", "–")
        page.click("#stop")
        page.wait_for_function("document.getElementById('conn').dataset.state === 'idle'", timeout=20_000)
        assert page.is_hidden("#message"), page.inner_text("#message")
    finally:
        context.close()


def test_access_token_from_the_link_reaches_page_and_overlay(start_stand_in, context):
    server = start_stand_in(auth={"tokens": ["browser-secret-4f1e"]})
    page = context.new_page()
    page.goto(f"{server.http}/")
    page.click("#start")  # no token: the server refuses, the page says what to do
    page.wait_for_selector("#message:not([hidden])", timeout=15_000)
    assert page.get_attribute("#message", "data-reason") == "token"
    assert "access token" in page.inner_text("#message")
    assert page.get_attribute("#conn", "data-state") == "error"

    page.goto(f"{server.http}/?token=browser-secret-4f1e")
    assert "token" not in page.url  # taken from the address bar into this tab's storage
    assert page.input_value("#token") == "browser-secret-4f1e"
    page.click("#start")
    page.wait_for_function("document.getElementById('conn').dataset.state === 'live'", timeout=15_000)
    overlay_href = page.get_attribute("#overlay-link", "href")
    assert "token=browser-secret-4f1e" in overlay_href
    page.click("#stop")
    page.wait_for_function("document.getElementById('conn').dataset.state === 'idle'", timeout=20_000)

    overlay = context.new_page()
    overlay.goto(overlay_href)
    overlay.wait_for_function("document.body.dataset.state === 'live'", timeout=10_000)
    refused = context.new_page()
    refused.goto(f"{server.http}/overlay?session=no-token")
    refused.wait_for_selector("#notice:not([hidden])", timeout=10_000)
    assert "token" in refused.inner_text("#notice")
