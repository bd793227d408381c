// Caption overlay: follows one session's captions (/subscribe?session=ID) and shows the last
// lines, styled from the URL query, for OBS browser sources and room displays.

import { onLanguageChange, textOf } from "../i18n.js";
import { partialLine, partialParts } from "../page/partial.js";

const query = new URLSearchParams(location.search);
const root = document.documentElement;
const box = document.getElementById("box");
const linesEl = document.getElementById("lines");
const notice = document.getElementById("notice");
const noticeText = document.getElementById("notice-text");
let shownNotice = null; // {key, params}: said again after a language switch
const partial = partialLine(document.getElementById("partial"));

function number(name, fallback, low, high) {
  const n = Number(query.get(name));
  return query.has(name) && Number.isFinite(n) ? Math.min(high, Math.max(low, n)) : fallback;
}

function colour(name, fallback) {
  let value = (query.get(name) || "").trim();
  if (!value) return fallback;
  if (/^[0-9a-f]{3,8}$/i.test(value)) value = `#${value}`; // "#" must be %23 in a URL; allow it bare
  return CSS.supports("color", value) ? value : fallback;
}

/** The overlay's settings: every query parameter, with defaults and limits. */
export function readOptions() {
  const size = number("size", 42, 8, 400);
  const font = (query.get("font") || "").trim();
  return {
    session: (query.get("session") || "").trim(),
    token: (query.get("token") || "").trim(), // when the server has auth.tokens
    lines: Math.round(number("lines", 2, 1, 20)),
    size,
    color: colour("color", "#ffffff"),
    bg: colour("bg", "transparent"),
    outline: colour("outline", "#000000"),
    outlineWidth: number("outline_width", Math.max(1, Math.round(size / 14)), 0, 40),
    position: query.get("position") === "top" ? "top" : "bottom",
    align: ["left", "right", "center"].includes(query.get("align")) ? query.get("align") : "center",
    font: font && CSS.supports("font-family", font) ? font : "",
    weight: Math.round(number("weight", 700, 100, 900)),
    showPartial: !["0", "false", "no", "off"].includes((query.get("partial") || "1").toLowerCase()),
    hideAfterS: number("hide_after", 0, 0, 3600),
  };
}

const options = readOptions();

function applyStyle() {
  const set = (k, v) => root.style.setProperty(k, v);
  set("--size", `${options.size}px`);
  set("--line-height", `${Math.round(options.size * 1.25)}px`);
  set("--lines", String(options.lines));
  set("--color", options.color);
  set("--bg", options.bg);
  set("--outline", options.outline);
  set("--outline-width", `${options.outlineWidth}px`);
  set("--weight", String(options.weight));
  set("--align", options.align);
  if (options.font) set("--font", options.font);
  box.dataset.position = options.position;
}

// --- captions --------------------------------------------------------------------------------
const seen = new Set(); // segment ids shown: a resubscription replays every stored final
let current = { stable: "", unstable: "" };
let hideTimer = null;

function touched() {
  box.classList.remove("faded");
  if (!options.hideAfterS) return;
  clearTimeout(hideTimer);
  hideTimer = setTimeout(() => box.classList.add("faded"), options.hideAfterS * 1000);
}

function addFinal(message) {
  const id = message.segment_id;
  if (id !== undefined && id !== null) {
    if (seen.has(id)) return;
    seen.add(id);
  }
  current = { stable: "", unstable: "" };
  partial.clear();
  const text = String(typeof message.final_text === "string" ? message.final_text : message.text || "").trim();
  if (!text) return;
  const line = document.createElement("p");
  line.className = "line final";
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text;
  line.appendChild(span);
  if (message.replayed) line.classList.add("replayed");
  linesEl.appendChild(line);
  // Only the last few can be visible; keep the DOM small over a long session.
  while (linesEl.children.length > options.lines * 2 + 4) linesEl.firstElementChild.remove();
  touched();
}

function onMessage(message) {
  switch (message.type) {
    case "partial":
      if (!options.showPartial || seen.has(message.segment_id)) break; // off, or its final is out
      current = partialParts(message, current);
      partial.set(current.stable, current.unstable);
      touched();
      break;
    case "final":
      addFinal(message);
      break;
    case "end":
      current = { stable: "", unstable: "" };
      partial.clear();
      break;
    case "error":
      showNotice(
        message.code === "unauthorized"
          ? { key: "overlay.unauthorized", params: { message: message.message } }
          : { key: "overlay.serverError", params: { message: message.message || message.code } },
      );
      break;
    default:
      break;
  }
}

// --- connection ------------------------------------------------------------------------------
// A plain WebSocket rather than livecaption.js's CaptionSubscriber: a display needs only this
// loop, and it must keep retrying even when the server is down when it starts (OBS starts
// browser sources with the scene, not with the server).
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10000;
let retryMs = RETRY_MIN_MS;
let socket = null;

function setState(state) {
  document.body.dataset.state = state;
  if (state === "live") showNotice("");
}

function showNotice(item) {
  shownNotice = item || null;
  noticeText.textContent = item ? textOf(item) : "";
  notice.hidden = !item;
}
onLanguageChange(() => showNotice(shownNotice));

function subscribeUrl(session) {
  // The server root from this module's address (…/client_js/overlay/overlay.js), so a proxy may
  // mount the server under a path.
  const url = new URL("../../subscribe", import.meta.url);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("session", session);
  if (options.token) url.searchParams.set("token", options.token);
  return url.href;
}

function connect(session) {
  const ws = (socket = new WebSocket(subscribeUrl(session)));
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return; // not JSON: not for us
    }
    if (message.type === "subscribed") {
      document.body.dataset.session = message.session_id || session;
      retryMs = RETRY_MIN_MS;
      setState("live");
    } else {
      onMessage(message);
    }
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    setState("reconnecting");
    current = { stable: "", unstable: "" };
    partial.clear(); // the segment may end while we are away; its final comes with the replay
    const delay = Math.round(retryMs * (0.5 + Math.random() * 0.5)); // jitter: displays do not stampede
    retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
    setTimeout(() => connect(session), delay);
  };
}

applyStyle();
if (!/^[A-Za-z0-9_-]{1,64}$/.test(options.session)) {
  showNotice({ key: "overlay.noSession" });
  document.body.dataset.state = "no-session";
} else {
  setState("connecting");
  connect(options.session);
  window.addEventListener("pagehide", () => {
    const ws = socket;
    socket = null;
    if (ws) ws.close();
  });
}
// For tests and the curious.
window.livecaptionOverlay = { options };
