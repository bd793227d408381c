/** The wire protocol, pure: URLs, hotword strings, and server messages read into typed details. */

/** @typedef {import("../livecaption.js").PartialDetail} PartialDetail */
/** @typedef {import("../livecaption.js").FinalDetail} FinalDetail */
/** @typedef {Record<string, any>} Message a server message: a JSON object, fields not yet checked */

/** Sample rates the server accepts as `audio_fs` (it resamples them itself); others are resampled here. */
export const SERVER_SAMPLE_RATES = Object.freeze([8000, 16000, 22050, 44100, 48000]);

/**
 * Close codes after which retrying cannot help: protocol or policy violations (1002, 1003, 1007,
 * 1008: e.g. too many bad messages, or a client too slow to read), a frame the server refuses
 * (1009), and 4001 (the server handed this session to another connection).
 */
export const FATAL_CLOSE_CODES = Object.freeze([1002, 1003, 1007, 1008, 1009, 1010, 4001]);

export const MODES = Object.freeze(["2pass", "online", "offline"]);

const SESSION_ID = /^[A-Za-z0-9_-]{1,64}$/;
const DEFAULT_HOTWORD_WEIGHT = 20; // FunASR's weight for a hotword given without one
const CJK = /[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]/;

/**
 * Whether the server would take this as a session id.
 * @param {unknown} value
 * @returns {value is string}
 */
export function isSessionId(value) {
  return typeof value === "string" && SESSION_ID.test(value);
}

/**
 * The server's WebSocket URL (http(s):// becomes ws(s)://) with the token as a query parameter.
 * @param {unknown} url
 * @param {unknown} token
 * @returns {string}
 */
export function socketUrl(url, token) {
  let target;
  try {
    target = new URL(String(url));
  } catch {
    throw new TypeError(`not a URL: ${JSON.stringify(url)}`);
  }
  if (target.protocol === "http:") target.protocol = "ws:";
  else if (target.protocol === "https:") target.protocol = "wss:";
  if (target.protocol !== "ws:" && target.protocol !== "wss:") throw new TypeError(`url must be ws:// or wss://; got ${target.protocol}`);
  if (token !== undefined && token !== null && token !== "") {
    if (typeof token !== "string") throw new TypeError("option token must be a string");
    target.searchParams.set("token", token);
  }
  return target.toString();
}

/**
 * Hotwords as the server's start message wants them: FunASR's JSON string '{"word": weight}'.
 * @param {Record<string, number> | string[] | string | null | undefined} hotwords
 * @returns {string}
 */
export function formatHotwords(hotwords) {
  if (hotwords === undefined || hotwords === null || hotwords === "") return "";
  if (typeof hotwords === "string") return hotwords;
  if (Array.isArray(hotwords)) {
    if (!hotwords.every((w) => typeof w === "string")) throw new TypeError("option hotwords: a list must hold only strings");
    return hotwords.length ? JSON.stringify(Object.fromEntries(hotwords.map((w) => [w, DEFAULT_HOTWORD_WEIGHT]))) : "";
  }
  if (typeof hotwords === "object") return Object.keys(hotwords).length ? JSON.stringify(hotwords) : "";
  throw new TypeError("option hotwords must be an object {word: weight}, a list of words, or a string");
}

/**
 * One WebSocket message from the server as a JSON object, or why it is not one.
 * @param {unknown} data
 * @returns {{message: Message, problem?: undefined} | {problem: string, message?: undefined}}
 */
export function parseServerMessage(data) {
  if (typeof data !== "string") return { problem: "server sent a binary message; expected JSON text" };
  let message;
  try {
    message = JSON.parse(data);
  } catch {
    return { problem: `server sent text that is not JSON: ${preview(data)}` };
  }
  if (message === null || typeof message !== "object" || Array.isArray(message)) {
    return { problem: `server message is not a JSON object: ${preview(data)}` };
  }
  return { message };
}

/**
 * A 'partial' message as the client's detail, or why it is malformed.
 * @param {Message} message
 * @param {string | null} sessionId
 * @returns {{partial: PartialDetail, problem?: undefined} | {problem: string, partial?: undefined}}
 */
export function readPartial(message, sessionId) {
  const problem = checkFields(message, { segment_id: "segment id", text: "string" });
  if (problem) return { problem: `partial ${problem}` };
  const stable = typeof message.stable === "string" ? message.stable : "";
  const unstable = typeof message.unstable === "string" ? message.unstable : "";
  const partial = {
    sessionId,
    segmentId: message.segment_id,
    text: joinText(stable, unstable) || message.text.trim(),
    stable,
    unstable,
    delta: message.text,
    startMs: numberOrNull(message.start_ms),
    endMs: numberOrNull(message.end_ms),
    mode: typeof message.mode === "string" ? message.mode : null,
    raw: message,
  };
  return { partial };
}

/**
 * A 'final' message (or one segment of an end reply) as the client's detail, or why it is malformed.
 * @param {Message} message
 * @param {string | null} sessionId the session's id, for a message that does not name one
 * @param {boolean} fromEnd whether it came in an end reply
 * @returns {{final: FinalDetail, problem?: undefined} | {problem: string, final?: undefined}}
 */
export function readFinal(message, sessionId, fromEnd) {
  const hasText = typeof message.final_text === "string" || typeof message.text === "string";
  const problem = checkFields(message, { segment_id: "segment id" }) || (hasText ? null : "has no final_text");
  if (problem) return { problem: `final ${problem}` };
  const final = {
    sessionId: typeof message.session_id === "string" ? message.session_id : sessionId,
    segmentId: message.segment_id,
    text: typeof message.final_text === "string" ? message.final_text : message.text.trim(),
    startMs: numberOrNull(message.start_ms),
    endMs: numberOrNull(message.end_ms),
    endReason: typeof message.end_reason === "string" ? message.end_reason : null,
    replayed: message.replayed === true,
    fromEnd,
    error: typeof message.error === "string" ? message.error : null,
    raw: message,
  };
  return { final };
}

/**
 * An 'error' message's code and text, with fallbacks for servers that omit them.
 * @param {Message} message
 * @returns {{code: string, text: string}}
 */
export function readServerError(message) {
  const code = typeof message.code === "string" ? message.code : "server_error";
  const text = typeof message.message === "string" ? message.message : typeof message.error === "string" ? message.error : "(no message)";
  return { code, text };
}

/**
 * Short and on one line, for error messages that quote what the server sent.
 * @param {unknown} text
 * @returns {string}
 */
export function preview(text) {
  const flat = String(text).replace(/\s+/g, " ");
  return flat.length > 80 ? `${JSON.stringify(flat.slice(0, 80))}…` : JSON.stringify(flat);
}

/**
 * @param {Message} message
 * @param {Record<string, "segment id" | "string">} fields
 * @returns {string | null}
 */
function checkFields(message, fields) {
  for (const [key, kind] of Object.entries(fields)) {
    const value = message[key];
    if (kind === "segment id" && !(Number.isInteger(value) && value >= 0)) return `has no valid ${key} (got ${JSON.stringify(value)})`;
    if (kind === "string" && typeof value !== "string") return `has no ${key} string (got ${JSON.stringify(value)})`;
  }
  return null;
}

/**
 * @param {unknown} value
 * @returns {number | null}
 */
function numberOrNull(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/**
 * Two pieces of caption text: CJK text joins without a space, other scripts with one.
 * @param {string} a
 * @param {string} b
 * @returns {string}
 */
function joinText(a, b) {
  if (!a) return b;
  if (!b) return a;
  return CJK.test(a[a.length - 1]) || CJK.test(b[0]) ? a + b : `${a} ${b}`;
}
