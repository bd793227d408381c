// The live captions page: microphone -> CaptionClient -> scrollback, downloads, overlay link.

import { LocalizedError, onLanguageChange, t, textOf } from "../i18n.js";
import { CaptionClient } from "../livecaption.js";
import { download } from "./captions-export.js";
import { CaptionView } from "./captions-view.js";
import { setupLanguageMenu } from "./languages.js";
import { listMicrophones, MicCapture, micUnavailable } from "./mic.js";
import { partialParts } from "./partial.js";
import {
  clampInt,
  LIMITS,
  loadSettings,
  loadToken,
  parseHotwords,
  SESSION_ID,
  saveSettings,
  saveToken,
} from "./settings.js";

const FRAME_MS = 80;
const END_TIMEOUT_MS = 120000; // Stop gives up on the last finals after this long without a reply (a busy server deciding the last seconds can be silent for a while)

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"),
  stop: $("stop"),
  level: $("level"),
  message: $("message"),
  device: $("device"),
  mode: $("mode"),
  language: $("language"),
  hotwords: $("hotwords"),
  itn: $("itn"),
  sessionInput: $("session-id"),
  token: $("token"),
  settingsPanel: $("settings-panel"),
  session: $("session"),
  overlayLink: $("overlay-link"),
  copyOverlay: $("copy-overlay"),
  conn: $("conn"),
  connText: $("conn-text"),
  latency: $("latency"),
  fontSize: $("font-size"),
  lines: $("lines"),
  scrollback: $("scrollback"),
  downloads: [$("download-txt"), $("download-srt"), $("download-vtt")],
};

// The server root, from this module's own address (…/client_js/page/page.js), so the page also
// works behind a proxy that mounts the server under a path.
const ROOT = new URL("../../", import.meta.url);

function socketUrl(path) {
  const url = new URL(path, ROOT);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

const settings = loadSettings();
const view = new CaptionView({ scroller: ui.scrollback, list: $("finals"), partial: $("partial"), jump: $("jump") });

let client = null;
let mic = null;
let running = false; // between Start and the end of Stop
let stopping = false;
let ready = false; // the server accepted the stream (frames sent before are buffered by the client)
let sessionId = settings.sessionId || ""; // kept across Start/Stop so overlays keep following
let partial = { stable: "", unstable: "" };
const latencies = [];

// --- status, messages ------------------------------------------------------------------------
// What is on screen is kept as keys and values, so a language switch can say it again.
let conn = { state: "idle", detail: "" };
let shownMessage = null; // a LocalizedError or {key, params}
let latency = null; // {finalMs, median}

function setConn(state, detail = "") {
  conn = { state, detail };
  ui.conn.dataset.state = state;
  const text = t(`conn.${state}`);
  ui.connText.textContent = detail ? t("conn.withDetail", { state: text, detail }) : text;
}

/** `item`: {key, params} or a LocalizedError (or plain text, shown as it is); "" hides the box. */
function showMessage(item, kind = "error", reason = "") {
  shownMessage = item || null;
  const text = item ? textOf(item) : "";
  ui.message.textContent = text;
  ui.message.dataset.kind = kind;
  ui.message.dataset.reason = reason;
  ui.message.hidden = !text;
}

function clearMessage() {
  showMessage("");
}

function showLatency(finalMs) {
  if (typeof finalMs !== "number") return;
  latencies.push(finalMs);
  if (latencies.length > 20) latencies.shift();
  const sorted = [...latencies].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  latency = { finalMs, median };
  renderLatency();
  ui.latency.dataset.ms = String(finalMs);
}

function renderLatency() {
  ui.latency.textContent = latency
    ? t("live.latency", { last: (latency.finalMs / 1000).toFixed(1), median: (latency.median / 1000).toFixed(1) })
    : t("live.latencyNone");
}

// --- view settings ---------------------------------------------------------------------------
function applyView() {
  document.documentElement.style.setProperty("--caption-size", `${settings.fontSize}px`);
  document.documentElement.style.setProperty("--caption-lines", String(settings.lines));
  if (view.following) view.scrollToEnd();
}

function bindNumber(input, key) {
  input.value = String(settings[key]);
  input.addEventListener("change", () => {
    settings[key] = clampInt(input.value, LIMITS[key], settings[key]);
    input.value = String(settings[key]);
    saveSettings(settings);
    applyView();
  });
}

function bindStreamSettings() {
  ui.mode.value = settings.mode;
  setupLanguageMenu(ui.language, settings.language);
  ui.itn.checked = settings.itn;
  ui.hotwords.value = settings.hotwords;
  ui.sessionInput.value = settings.sessionId;
  ui.mode.addEventListener("change", () => {
    settings.mode = ui.mode.value;
    saveSettings(settings);
  });
  ui.language.addEventListener("change", () => {
    settings.language = ui.language.value;
    saveSettings(settings);
  });
  ui.itn.addEventListener("change", () => {
    settings.itn = ui.itn.checked;
    saveSettings(settings);
  });
  ui.hotwords.addEventListener("change", () => {
    settings.hotwords = ui.hotwords.value;
    saveSettings(settings);
  });
  ui.sessionInput.addEventListener("change", () => {
    settings.sessionId = ui.sessionInput.value.trim();
    saveSettings(settings);
  });
  ui.device.addEventListener("change", () => {
    settings.deviceId = ui.device.value;
    saveSettings(settings);
  });
  // A shared link may carry ?token=: take it, then drop it from the address bar (and from
  // screenshots and history).
  const query = new URLSearchParams(location.search);
  if (query.has("token")) {
    saveToken(query.get("token").trim());
    query.delete("token");
    const rest = query.toString();
    history.replaceState(null, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
  }
  ui.token.value = loadToken();
  ui.token.addEventListener("change", () => {
    saveToken(ui.token.value.trim());
    if (sessionId) showSession(sessionId); // the overlay link carries the token
  });
}

async function refreshDevices() {
  let mics = [];
  try {
    mics = await listMicrophones();
  } catch {
    return;
  }
  const chosen = ui.device.value || settings.deviceId;
  ui.device.textContent = "";
  ui.device.append(new Option(t("live.defaultMicrophone"), ""));
  for (const m of mics) {
    if (m.deviceId === "default" || m.deviceId === "") continue; // the entry above
    ui.device.append(new Option(m.label, m.deviceId));
  }
  ui.device.value = [...ui.device.options].some((o) => o.value === chosen) ? chosen : "";
}

// --- session link ----------------------------------------------------------------------------
function overlayHref(id) {
  const url = new URL("overlay", ROOT);
  url.searchParams.set("session", id);
  const token = ui.token.value.trim();
  if (token) url.searchParams.set("token", token); // displays need it too when the server asks for one
  return url.href;
}

function showSession(id) {
  if (!id) return;
  if (sessionId && id !== sessionId) view.clear(); // another session: another transcript
  sessionId = id;
  ui.session.textContent = id;
  ui.overlayLink.href = overlayHref(id);
  ui.copyOverlay.disabled = false;
}

// --- captions --------------------------------------------------------------------------------
function onPartial(message) {
  partial = partialParts(message, partial);
  view.setPartial(partial.stable, partial.unstable);
}

function onFinal(message) {
  partial = { stable: "", unstable: "" };
  const text = typeof message.final_text === "string" ? message.final_text : message.text;
  const added = view.addFinal({
    segmentId: message.segment_id,
    startMs: message.start_ms || 0,
    endMs: message.end_ms || message.start_ms || 0,
    text,
  });
  if (!message.replayed) showLatency(message.final_ms);
  if (message.error) showMessage({ key: "live.decodeError", params: { error: message.error } }, "error", "decode");
  if (added) for (const b of ui.downloads) b.disabled = false;
}

function onEnd(message) {
  // offline mode: the end reply is the only one and carries every segment.
  for (const segment of (message && message.segments) || []) onFinal({ ...segment, replayed: true });
  view.clearPartial();
}

// --- start / stop ----------------------------------------------------------------------------
function setRunning(on) {
  running = on;
  ui.start.disabled = on;
  ui.stop.disabled = !on;
  for (const el of [ui.device, ui.mode, ui.language, ui.hotwords, ui.itn, ui.sessionInput, ui.token]) el.disabled = on;
}

function streamOptions() {
  const typed = ui.sessionInput.value.trim();
  if (typed && !SESSION_ID.test(typed)) {
    throw new LocalizedError("live.badSessionId");
  }
  const options = {
    mode: ui.mode.value,
    itn: ui.itn.checked,
    inputSampleRate: 16000,
    reconnect: { enabled: true },
  };
  if (ui.language.value) options.language = ui.language.value;
  const hotwords = parseHotwords(ui.hotwords.value);
  if (hotwords) options.hotwords = hotwords;
  const session = typed || sessionId;
  if (session) options.sessionId = session;
  const token = ui.token.value.trim();
  if (token) options.token = token;
  return options;
}

function onFrame(pcm, peak) {
  ui.level.value = peak;
  // Buffered by the client until the stream is ready. Stop flushes the worklet, stops the
  // microphone (no frames after that), and only then ends the stream.
  if (client) client.sendPcm(pcm);
}

// CaptionClient events carry {…, raw: the server message}; the page reads the server's fields.
const server = (detail) => (detail && detail.raw) || detail || {};
const sessionOf = (detail) => (detail && (detail.sessionId || server(detail).session_id)) || "";

function attach(c) {
  c.addEventListener("ready", (e) => showSession(sessionOf(e.detail)));
  c.addEventListener("partial", (e) => onPartial(server(e.detail)));
  c.addEventListener("final", (e) => onFinal(server(e.detail)));
  c.addEventListener("end", (e) => onEnd(server(e.detail)));
  c.addEventListener("error", (e) => {
    const d = e.detail || {};
    const key = d.fromServer === false ? "live.clientError" : "live.serverError";
    showMessage({ key, params: { message: d.message || d.code || "error" } }, "error", d.code || "server");
  });
  c.addEventListener("reconnecting", () => setConn("reconnecting"));
  c.addEventListener("reconnected", (e) => {
    setConn("live");
    showSession(sessionOf(e.detail));
  });
  c.addEventListener("close", (e) => {
    // Before ready, connect()'s rejection reports the failure; after Stop, closing is expected.
    if (c !== client || stopping || !ready) return;
    const d = e.detail || {};
    const why = d.reason || (d.code ? t("live.closeCode", { code: d.code }) : "");
    setConn("closed", why);
    showMessage(why ? { key: "live.closedWhy", params: { why } } : { key: "live.closed" });
    teardown();
  });
}

async function start() {
  if (running) return;
  clearMessage();
  let options;
  try {
    options = streamOptions();
  } catch (error) {
    showMessage(error, "error", "settings");
    return;
  }
  const unavailable = micUnavailable();
  if (unavailable) {
    showMessage(unavailable, "error", unavailable.reason);
    return;
  }
  setRunning(true);
  ready = false;
  setConn("connecting");
  ui.stop.focus();
  const m = (mic = new MicCapture({ deviceId: ui.device.value, frameMs: FRAME_MS, onFrame }));
  try {
    await m.start();
  } catch (error) {
    if (mic !== m) return; // Stop was pressed meanwhile
    showMessage(error, "error", error.reason || "mic");
    setConn("idle");
    await teardown();
    ui.start.focus();
    return;
  }
  if (mic !== m) {
    await m.stop();
    return;
  }
  refreshDevices(); // labels are visible now that permission is granted
  let c = null;
  try {
    c = client = new CaptionClient(socketUrl("ws"), options);
    attach(c);
    showSession(sessionOf(await c.connect()));
  } catch (error) {
    if (c !== null && client !== c) return; // Stop was pressed meanwhile
    const reason = (error && (error.message || error.code)) || String(error);
    if (error && error.code === "unauthorized") {
      showMessage({ key: ui.token.value ? "live.tokenRefused" : "live.tokenNeeded" }, "error", "token");
      ui.settingsPanel.open = true;
    } else {
      showMessage({ key: "live.connectFailed", params: { reason } }, "error", "connect");
    }
    setConn("error");
    await teardown();
    ui.start.focus();
    return;
  }
  ready = true;
  setConn("live");
}

async function stop() {
  if (!running || stopping) return;
  stopping = true;
  ui.stop.disabled = true;
  try {
    if (mic) await mic.flush();
    if (mic) await mic.stop();
    if (client && ready) {
      // The end reply also lists every segment: offline mode's only captions (shown ones are skipped).
      const end = await client.end({ timeoutMs: END_TIMEOUT_MS });
      onEnd(server(end));
    }
  } catch (error) {
    showMessage({ key: "live.stopFailed", params: { reason: error.message || error } }, "error", "stop");
  } finally {
    await teardown();
    stopping = false;
    setConn("idle");
    ui.start.focus();
  }
}

async function teardown() {
  const c = client;
  const m = mic;
  client = null;
  mic = null;
  ready = false;
  if (c) {
    try {
      c.close();
    } catch {
      /* already closed */
    }
  }
  if (m) await m.stop();
  ui.level.value = 0;
  view.clearPartial();
  setRunning(false);
}

// --- downloads, copy -------------------------------------------------------------------------
function basename() {
  const stamp = new Date().toISOString().slice(0, 16).replace(/[:T]/g, "-");
  return `captions-${sessionId || "session"}-${stamp}`;
}

for (const button of ui.downloads) {
  button.addEventListener("click", () => download(view.captions, button.dataset.format, basename()));
}

ui.copyOverlay.addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(ui.overlayLink.href);
    showMessage({ key: "live.copied" }, "info", "copied");
  } catch {
    showMessage({ key: "live.overlayLink", params: { href: ui.overlayLink.href } }, "info", "copied");
  }
});

// --- wiring ----------------------------------------------------------------------------------
ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", stop);
bindNumber(ui.fontSize, "fontSize");
bindNumber(ui.lines, "lines");
bindStreamSettings();
applyView();
refreshDevices();
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener("devicechange", refreshDevices);
}
setConn("idle");
renderLatency();
const unavailable = micUnavailable();
if (unavailable) showMessage(unavailable, "error", unavailable.reason);
onLanguageChange(() => {
  setConn(conn.state, conn.detail);
  renderLatency();
  if (shownMessage) ui.message.textContent = textOf(shownMessage);
  ui.device.options[0].textContent = t("live.defaultMicrophone");
});
window.addEventListener("pagehide", () => {
  if (client) client.close();
});

// For tests and the curious: the page's state, read-only in spirit.
window.livecaption = { view, get sessionId() { return sessionId; }, get client() { return client; } };
