// lib/protocol.js, the pure part of reading server messages: plain function calls, no sockets.
import assert from "node:assert/strict";
import { test } from "node:test";

import { isSessionId, parseServerMessage, readFinal, readPartial, readServerError, socketUrl } from "../lib/protocol.js";

test("parseServerMessage takes JSON objects and says why anything else is not one", () => {
  assert.deepEqual(parseServerMessage('{"type": "final"}'), { message: { type: "final" } });
  assert.match(parseServerMessage(new ArrayBuffer(2)).problem, /binary message/);
  assert.match(parseServerMessage("not json").problem, /not JSON: "not json"/);
  assert.match(parseServerMessage("[1, 2]").problem, /not a JSON object/);
  assert.match(parseServerMessage("null").problem, /not a JSON object/);
  assert.match(parseServerMessage(`"${"x".repeat(200)}"`).problem, /…$/); // quoted, cut at 80 characters
});

test("readPartial joins stable and unstable words (CJK without a space) and keeps the raw delta", () => {
  const { partial } = readPartial({ type: "partial", segment_id: 3, text: " open", stable: "please", unstable: "open the", start_ms: 100, end_ms: "late", mode: "2pass-online" }, "s1");
  assert.deepEqual({ ...partial, raw: null }, {
    sessionId: "s1", segmentId: 3, text: "please open the", stable: "please", unstable: "open the", delta: " open",
    startMs: 100, endMs: null, mode: "2pass-online", raw: null,
  });
  assert.equal(readPartial({ segment_id: 0, text: "", stable: "早上", unstable: "好" }, null).partial.text, "早上好");
  assert.equal(readPartial({ segment_id: 0, text: "  only text " }, null).partial.text, "only text"); // FunASR's form
  assert.equal(readPartial({ segment_id: -1, text: "x" }, null).problem, "partial has no valid segment_id (got -1)");
  assert.equal(readPartial({ segment_id: 1 }, null).problem, "partial has no text string (got undefined)");
});

test("readFinal prefers final_text, names the session, and flags replays and end-reply finals", () => {
  const message = { type: "final", segment_id: 2, text: " raw words ", final_text: "Raw words.", end_reason: "silence", replayed: true };
  const { final } = readFinal(message, "s1", false);
  assert.deepEqual({ ...final, raw: null }, {
    sessionId: "s1", segmentId: 2, text: "Raw words.", startMs: null, endMs: null, endReason: "silence",
    replayed: true, fromEnd: false, error: null, raw: null,
  });
  assert.equal(final.raw, message);
  const fromEnd = readFinal({ segment_id: 0, text: " words ", session_id: "other", error: "decode failed" }, "s1", true).final;
  assert.deepEqual([fromEnd.text, fromEnd.sessionId, fromEnd.fromEnd, fromEnd.error], ["words", "other", true, "decode failed"]);
  assert.equal(readFinal({ segment_id: 1 }, null, false).problem, "final has no final_text");
  assert.equal(readFinal({ segment_id: 1.5, text: "x" }, null, false).problem, "final has no valid segment_id (got 1.5)");
});

test("readServerError falls back to the error field and to placeholders", () => {
  assert.deepEqual(readServerError({ code: "bad_config", message: "silence_ms too small" }), { code: "bad_config", text: "silence_ms too small" });
  assert.deepEqual(readServerError({ error: "old server" }), { code: "server_error", text: "old server" });
  assert.deepEqual(readServerError({}), { code: "server_error", text: "(no message)" });
});

test("session ids and URLs are checked as the server checks them", () => {
  assert.ok(isSessionId("talk_2-B"));
  for (const bad of ["", "x".repeat(65), "a b", "ü", 7, null]) assert.equal(isSessionId(bad), false, JSON.stringify(bad));
  assert.equal(socketUrl("https://host:8443/ws", "t k"), "wss://host:8443/ws?token=t+k");
  assert.throws(() => socketUrl("ftp://host", undefined), /ws:\/\/ or wss:\/\//);
});
