// Page settings remembered across reloads (localStorage; silently per-load when storage is blocked).

import { LocalizedError } from "../i18n.js";
import { knownLanguage } from "./languages.js";

const KEY = "livecaption.page.v1";

export const DEFAULTS = Object.freeze({
  fontSize: 24, // px
  lines: 8, // caption lines visible in the scrollback
  mode: "2pass",
  language: "", // speech language: "" = the server's setting, "auto", or a code
  itn: true,
  hotwords: "",
  deviceId: "",
  sessionId: "",
});

export const LIMITS = Object.freeze({ fontSize: [12, 96], lines: [2, 40] });

export function clampInt(value, [low, high], fallback) {
  const n = Math.round(Number(value));
  return Number.isFinite(n) ? Math.min(high, Math.max(low, n)) : fallback;
}

export function loadSettings() {
  let stored = {};
  try {
    stored = JSON.parse(localStorage.getItem(KEY) || "{}") || {};
  } catch {
    stored = {};
  }
  const s = { ...DEFAULTS, ...stored };
  s.fontSize = clampInt(s.fontSize, LIMITS.fontSize, DEFAULTS.fontSize);
  s.lines = clampInt(s.lines, LIMITS.lines, DEFAULTS.lines);
  if (!["2pass", "online", "offline"].includes(s.mode)) s.mode = DEFAULTS.mode;
  s.itn = s.itn !== false;
  s.language = knownLanguage(s.language);
  return s;
}

export function saveSettings(settings) {
  try {
    localStorage.setItem(KEY, JSON.stringify(settings));
  } catch {
    /* private mode or storage full: settings last for this page load only */
  }
}

/**
 * Hotwords box -> {phrase: weight}: one phrase per line, optionally ending in a weight 1..100.
 * Throws Error with a message naming the line for anything the server would reject.
 */
export function parseHotwords(text) {
  const words = {};
  const lines = String(text || "").split(/\r?\n|,/);
  for (const raw of lines) {
    const line = raw.trim();
    if (!line) continue;
    const match = /^(.*?)\s+(\d+)$/.exec(line);
    const phrase = (match ? match[1] : line).trim();
    const weight = match ? Number(match[2]) : 20; // FunASR's weight for an unweighted hotword
    if (weight < 1 || weight > 100) throw new LocalizedError("hotwords.badWeight", { phrase, weight });
    if (phrase.length > 64) throw new LocalizedError("hotwords.tooLong", { phrase: phrase.slice(0, 20) });
    words[phrase] = weight;
  }
  if (Object.keys(words).length > 200) throw new LocalizedError("hotwords.tooMany");
  return Object.keys(words).length ? words : null;
}

export const SESSION_ID = /^[A-Za-z0-9_-]{1,64}$/;

// The access token (auth.tokens on the server) lives in sessionStorage: this tab only, never
// written to disk with the other settings.
const TOKEN_KEY = "livecaption.token";

export function loadToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function saveToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage blocked: the field still holds it for this page load */
  }
}
