"""The admin page (/admin) and its data: devices, engines with memory, batch sizes, and the "clear
GPU cache" button covering every loaded engine. Behind the admin token like every /admin route.

No GPU was there: CUDA memory and device counts are named stand-ins (patched torch.cuda and
ctranslate2.get_cuda_device_count, as tests/test_devices.py does); the real server runs on the CPU.
The page is shown in a headless Chromium in English and Simplified Chinese."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import ctranslate2
import pytest
import torch

from inference.devices import clear_engine_cache, engine_memory, inventory

USER, ADMIN = "user-secret-admin-page-01", "admin-secret-admin-page-02"
GiB = 1 << 30


def simulated_gpu(monkeypatch, torch_count: int, ct2_count: int):
    """Stand-in GPUs: torch's caching allocator holds 3 GiB (1 GiB in use); empty_cache frees 2 GiB."""
    reserved = {"bytes": 3 * GiB}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: torch_count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: torch_count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Stand-in GPU (no GPU here)")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (70 * GiB, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: GiB)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: reserved["bytes"])
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: reserved.update(bytes=GiB))
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: ct2_count)


def test_inventory_lists_the_cpu_and_each_gpu_with_who_sees_it(monkeypatch):
    simulated_gpu(monkeypatch, torch_count=0, ct2_count=1)  # the CPU torch install on a GPU machine
    devices = inventory()
    assert [d["id"] for d in devices] == ["cpu", "cuda:0"]
    assert devices[1]["seen_by"] == ["CTranslate2"] and devices[1]["memory"] is None
    simulated_gpu(monkeypatch, torch_count=1, ct2_count=1)
    gpu = inventory()[1]
    assert gpu["seen_by"] == ["torch", "CTranslate2"] and gpu["name"].startswith("Stand-in")
    assert gpu["memory"] == {
        "total_bytes": 80 * GiB,
        "free_bytes": 70 * GiB,
        "torch_allocated_bytes": GiB,
        "torch_reserved_bytes": 3 * GiB,
    }


def test_memory_per_engine(monkeypatch):
    simulated_gpu(monkeypatch, torch_count=1, ct2_count=1)
    assert engine_memory("funasr", "cuda:0")["reserved_bytes"] == 3 * GiB
    assert "does not report" in engine_memory("whisper", "cuda:0")["note"]
    assert engine_memory("whisper", "cpu")["where"] == "CPU" and engine_memory("funasr", "cpu")["where"] == "CPU"


def test_clearing_covers_every_engine_and_says_what_was_freed(monkeypatch):
    simulated_gpu(monkeypatch, torch_count=1, ct2_count=1)
    funasr = clear_engine_cache("funasr", "cuda:0")
    assert funasr["cleared"] is True and funasr["runtime"] == "torch" and funasr["released_bytes"] == 2 * GiB
    whisper = clear_engine_cache("whisper", "cuda:0")
    assert whisper["cleared"] is False and "CTranslate2" in whisper["message"] and "nothing freed" in whisper["message"]
    on_cpu = clear_engine_cache("whisper", "cpu")
    assert on_cpu["cleared"] is False and "no CUDA cache" in on_cpu["message"]


async def test_the_executor_clears_the_live_engine_and_the_file_engines(monkeypatch):
    from inference.executor import InferenceExecutor

    simulated_gpu(monkeypatch, torch_count=1, ct2_count=1)

    class Loaded:  # two named stand-ins for loaded engines on the stand-in GPU
        def __init__(self, name):
            self.name, self.model, self.device = name, f"{name}-stand-in", "cuda:0"

    executor = InferenceExecutor(Loaded("whisper"), None, 4, 10, 4, job_engines=[Loaded("funasr")])
    report = await executor.clear_device_cache()
    assert [(e["engine"], e["cleared"]) for e in report["engines"]] == [("whisper", False), ("funasr", True)]
    devices = await executor.device_report()
    assert [(e["name"], e["live"]) for e in devices["engines"]] == [("whisper", True), ("funasr", False)]


def _get(url: str, token: str | None, method: str = "GET") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def admin_server(scorer, whisper_engine):
    from tests.conftest import make_config
    from tests.server_thread import ServerThread

    server = ServerThread(make_config(auth={"tokens": [USER], "admin_tokens": [ADMIN]}), whisper_engine, scorer).start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "path, method", [("/admin", "GET"), ("/admin/devices", "GET"), ("/admin/gpu/clear-cache", "POST")]
)
def test_only_an_admin_token_opens_the_page_and_its_data(admin_server, path, method):
    url = admin_server.http + path
    assert _get(url, None, method)[0] == 401
    assert _get(url, USER, method)[0] == 403
    assert _get(url, ADMIN, method)[0] == 200
    assert _get(url + "?token=" + USER, None, method)[0] == 403


def test_the_data_on_the_cpu(admin_server):
    status, body = _get(admin_server.http + "/admin/devices", ADMIN)
    report = json.loads(body)
    assert report["devices"][0]["id"] == "cpu"
    assert [(e["name"], e["device"], e["live"], e["memory"]["where"]) for e in report["engines"]] == [
        ("whisper", "cpu", True, "CPU")
    ]
    assert report["batch"]["max_batch_size"] >= 1 and report["requested_device"]
    status, body = _get(admin_server.http + "/admin/gpu/clear-cache", ADMIN, "POST")
    assert json.loads(body)["engines"] == [
        {
            "engine": "whisper",
            "runtime": "CTranslate2",
            "device": "cpu",
            "cleared": False,
            "message": "device is cpu: no CUDA cache to clear",
        }
    ]


# --- the page, in a real Chromium --------------------------------------------------------------
TEXTS = {  # (selector, English, Chinese)
    "h1": ("Devices and models", "设备与模型"),
    "#clear": ("Clear GPU cache", "清理 GPU 缓存"),
    "#engines-title": ("Loaded engines and models", "已加载的引擎与模型"),
    "#engines tr td:nth-child(5)": ("CPU", "CPU"),
    "#engines tr td:nth-child(6)": ("live captions and files", "实时字幕与文件"),
}
CLEARED = ("on the CPU: no GPU cache to clear", "在 CPU 上：没有 GPU 缓存可清理")


@pytest.mark.parametrize("index, locale, lang", [(0, "en-US", "en"), (1, "zh-CN", "zh-CN")])
def test_the_page_in_both_languages(admin_server, index, locale, lang):
    from tests.browser_context import checked_context
    from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_FLAGS, f"--lang={locale}"])
        with checked_context(browser, locale=locale) as context:
            page = context.new_page()
            page.goto(f"{admin_server.http}/admin?token={ADMIN}")
            page.wait_for_function("document.querySelectorAll('#engines tr').length === 1", timeout=10_000)
            assert page.evaluate("document.documentElement.lang") == lang
            for selector, texts in TEXTS.items():
                assert page.text_content(selector).strip() == texts[index], selector
            assert page.text_content("#devices tr td:nth-child(1)") == "cpu"
            assert page.text_content("#engines tr td:nth-child(1)") == "whisper"
            page.click("#clear")
            page.wait_for_function("document.querySelectorAll('#cleared tr').length === 1", timeout=10_000)
            assert page.text_content("#cleared tr td:nth-child(2)") == CLEARED[index]
            assert (
                page.text_content("#message")
                == ("GPU cache cleared for 1 engine.", "已为 1 个引擎清理 GPU 缓存。")[index]
            )
            # The other language in place, what the page wrote itself included.
            page.select_option("#ui-language", "zh" if index == 0 else "en")
            assert page.text_content("#cleared tr td:nth-child(2)") == CLEARED[1 - index]
            assert page.text_content("#clear") == TEXTS["#clear"][1 - index]
        browser.close()
