// The library against a scripted fake server (ws on a loopback port in this process): malformed
// replies, replayed duplicates, buffering across a reconnect, close codes, refusals.
import assert from "node:assert/strict";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { WebSocketServer } from "ws";

import { CaptionClient, CaptionSubscriber } from "../livecaption.js";
import { record } from "./helpers.js";

const FAST = { initialDelayMs: 10, maxDelayMs: 50 };

/**
 * A WebSocket server on 127.0.0.1:0. `script(conn, index)` runs for each connection; conn has the
 * socket, the HTTP request, and next(): the next message from the client (text parsed as JSON,
 * binary as an Int16Array).
 */
async function fakeServer(script) {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: (protocols) => protocols.values().next().value ?? false });
  await once(server, "listening");
  let index = 0;
  const failures = [];
  server.on("connection", (ws, request) => {
    const inbox = [];
    const waiters = [];
    ws.on("message", (data, isBinary) => {
      const message = isBinary ? new Int16Array(new Uint8Array(data).buffer) : JSON.parse(data.toString());
      const waiter = waiters.shift();
      if (waiter) waiter(message);
      else inbox.push(message);
    });
    const conn = {
      ws,
      request,
      next: () => (inbox.length ? Promise.resolve(inbox.shift()) : new Promise((resolve) => waiters.push(resolve))),
      send: (message) => ws.send(typeof message === "string" ? message : JSON.stringify(message)),
    };
    Promise.resolve(script(conn, index++)).catch((error) => failures.push(error));
  });
  const { port } = server.address();
  return {
    url: `ws://127.0.0.1:${port}`,
    failures,
    async close() {
      for (const client of server.clients) client.terminate();
      await new Promise((resolve) => server.close(resolve));
      if (failures.length) throw failures[0];
    },
  };
}

const ready = (sessionId = "fake-session") => ({ type: "ready", text: "", is_final: false, session_id: sessionId });
const final = (id, text, extra = {}) => ({ type: "final", mode: "2pass-offline", text: `${text} `, final_text: text, segment_id: id, start_ms: id * 1000, end_ms: id * 1000 + 500, end_reason: "silence", is_final: false, ...extra });
const partial = (id, text) => ({ type: "partial", mode: "2pass-online", text, stable: text, unstable: "", segment_id: id, start_ms: id * 1000, end_ms: id * 1000 + 300, is_final: false });
const endReply = (segments) => ({ type: "end", text: "", is_final: true, is_end: true, segments });

test("bad server messages become 'error' events; good ones before and after are still delivered", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.next(); // start message
    conn.send(ready());
    conn.send(partial(0, "hello"));
    for (const garbage of [
      "not json {",
      "[1, 2, 3]",
      '"just a string"',
      "null",
      '{"type": "mystery"}',
      '{"no_type": 1}',
      '{"type": "final"}',
      '{"type": "final", "segment_id": "7", "final_text": "x"}',
      '{"type": "final", "segment_id": -1, "final_text": "x"}',
      '{"type": "partial", "segment_id": 0}',
      '{"type": "end"}',
      '{"type": "ready", "session_id": "late"}',
    ]) {
      conn.send(garbage);
    }
    conn.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    conn.send({ type: "error", code: "bad_audio", message: "odd byte count; frame dropped", is_final: false, text: "" });
    conn.send(final(0, "hello world"));
    assert.deepEqual(await conn.next(), { is_speaking: false });
    conn.send(endReply([{ segment_id: 0, start_ms: 0, end_ms: 500, final_text: "hello world", end_reason: "silence" }]));
  });
  const client = new CaptionClient(server.url, { reconnect: FAST });
  const events = record(client);
  await client.connect();
  const end = await client.end({ timeoutMs: 5000 });

  const errors = events.filter(([type]) => type === "error").map(([, d]) => d);
  const bad = errors.filter((e) => e.code === "bad_message");
  assert.equal(bad.length, 13, JSON.stringify(errors, null, 1));
  for (const e of bad) assert.ok(e.message.length > 10 && !e.fromServer, e.message);
  assert.match(bad[0].message, /not JSON/);
  assert.match(bad.find((e) => /mystery/.test(e.message)).message, /unknown server message type/);
  const serverError = errors.find((e) => e.code === "bad_audio");
  assert.ok(serverError.fromServer);
  assert.equal(serverError.message, "odd byte count; frame dropped");

  const types = events.map(([type]) => type).filter((t) => t !== "error");
  assert.deepEqual(types, ["ready", "partial", "final", "end", "close"]);
  assert.equal(events.find(([t]) => t === "final")[1].text, "hello world");
  assert.deepEqual(end.segments.map((s) => s.text), ["hello world"]);
  await server.close();
});

test("reconnect: resume_after = highest final seen, replayed duplicates and stale partials dropped, buffered audio flushed in order", async () => {
  const received = [[], []]; // first sample of each audio frame, per connection
  let cut;
  const cutDone = new Promise((resolve) => (cut = resolve));
  const server = await fakeServer(async (conn, index) => {
    const start = await conn.next();
    if (index === 0) {
      assert.equal(start.session_id, undefined, "no session id before the server names one");
      conn.send(ready("s-1"));
      conn.send(final(0, "zero"));
      conn.send(final(1, "one"));
      for (let i = 0; i < 3; i++) received[0].push((await conn.next())[0]);
      conn.ws.terminate(); // network loss: no close frame
      cut();
      return;
    }
    assert.equal(start.session_id, "s-1");
    assert.equal(start.resume_after, 1);
    conn.send(ready("s-1"));
    conn.send(final(0, "zero", { replayed: true }));
    conn.send(final(1, "one", { replayed: true }));
    conn.send(final(2, "two", { replayed: true }));
    conn.send(partial(2, "two stale"));
    conn.send(partial(3, "three so far"));
    for (;;) {
      const message = await conn.next();
      if (!(message instanceof Int16Array)) {
        assert.deepEqual(message, { is_speaking: false });
        break;
      }
      received[1].push(message[0]);
    }
    conn.send(final(3, "three"));
    conn.send(endReply([2, 3].map((id) => ({ segment_id: id, start_ms: 0, end_ms: 1, final_text: ["two", "three"][id - 2], end_reason: "silence" }))));
  });
  const client = new CaptionClient(server.url, { reconnect: FAST });
  const events = record(client);
  await client.connect();
  const frame = (n) => new Int16Array(160).fill(n);
  for (let n = 1; n <= 3; n++) client.sendPcm(frame(n));
  await cutDone;
  await once(client, "reconnecting");
  for (let n = 4; n <= 8; n++) client.sendPcm(frame(n)); // buffered: no live socket
  assert.equal(client.bufferedBytes, 5 * 320);
  await once(client, "reconnected");
  for (let n = 9; n <= 10; n++) client.sendPcm(frame(n));
  const end = await client.end({ timeoutMs: 5000 });

  assert.deepEqual(received[0], [1, 2, 3]);
  assert.deepEqual(received[1], [4, 5, 6, 7, 8, 9, 10], "buffered audio first, in order, then live audio");
  const finals = events.filter(([t]) => t === "final").map(([, d]) => [d.segmentId, d.text, d.replayed]);
  assert.deepEqual(finals, [
    [0, "zero", false],
    [1, "one", false],
    [2, "two", true],
    [3, "three", false],
  ]);
  const partials = events.filter(([t]) => t === "partial").map(([, d]) => d.segmentId);
  assert.deepEqual(partials, [3], "a partial of a segment whose final is out is stale");
  const reconnected = events.find(([t]) => t === "reconnected")[1];
  assert.equal(reconnected.resumeAfter, 1);
  assert.equal(reconnected.sessionId, "s-1");
  assert.deepEqual(end.segments.map((s) => s.segmentId), [0, 1, 2, 3]);
  assert.deepEqual(events.filter(([t]) => t === "error"), []);
  await server.close();
});

test("end() during an outage: the client reconnects, flushes its audio, ends, and gets the finals", async () => {
  const server = await fakeServer(async (conn, index) => {
    const start = await conn.next();
    conn.send(ready("s-2"));
    if (index === 0) {
      await conn.next(); // some audio
      conn.ws.terminate();
      return;
    }
    assert.equal(start.resume_after, -1);
    conn.send(final(0, "finalized while you were away", { replayed: true }));
    assert.ok((await conn.next()) instanceof Int16Array, "buffered audio comes before the end message");
    assert.deepEqual(await conn.next(), { is_speaking: false });
    conn.send(endReply([]));
  });
  const client = new CaptionClient(server.url, { reconnect: FAST });
  await client.connect();
  client.sendPcm(new Float32Array(1600).fill(0.1));
  await once(client, "reconnecting");
  client.sendPcm(new Float32Array(1600).fill(0.1));
  const end = await client.end({ timeoutMs: 5000 });
  assert.deepEqual(end.segments.map((s) => s.text), ["finalized while you were away"]);
  await server.close();
});

test("a connection the server stops draining (half-open TCP) is given up after stallTimeoutMs and resumed", async () => {
  const server = await fakeServer(async (conn, index) => {
    const start = await conn.next();
    conn.send(ready("s-stall"));
    if (index === 0) {
      conn.send(final(0, "zero"));
      conn.ws._socket.pause(); // read nothing more: the client's queue can only grow
      return;
    }
    assert.equal(start.resume_after, 0);
  });
  const client = new CaptionClient(server.url, { reconnect: FAST, stallTimeoutMs: 300 });
  const events = record(client);
  const gotFinal = once(client, "final");
  await client.connect();
  await gotFinal;
  client.sendPcm(new Int16Array(16000 * 600)); // 19 MB: more than the kernel's socket buffers hold
  await once(client, "reconnected");
  const stalled = events.filter(([t, d]) => t === "error" && d.code === "connection_stalled");
  assert.equal(stalled.length, 1);
  assert.match(stalled[0][1].message, /took no data for 300 ms/);
  const reconnecting = events.find(([t]) => t === "reconnecting")[1];
  assert.equal(reconnecting.reason, "connection stalled");
  client.close();
  await server.close();
});

for (const code of [1008, 4001]) {
  test(`close ${code} from the server is final: no reconnect, one 'close' event`, async () => {
    const server = await fakeServer(async (conn) => {
      await conn.next();
      conn.send(ready());
      await sleep(20);
      conn.ws.close(code, "go away");
    });
    const client = new CaptionClient(server.url, { reconnect: FAST });
    const events = record(client);
    await client.connect();
    const [close] = await once(client, "close");
    assert.equal(close.detail.code, code);
    assert.equal(close.detail.reason, "go away");
    await sleep(100);
    assert.deepEqual(events.map(([t]) => t), ["ready", "close"]);
    assert.equal(client.state, "closed");
    await assert.rejects(client.end(), /closed/);
    await server.close();
  });
}

test("busy (error + close 1013) is retried with backoff until the server has room", async () => {
  const server = await fakeServer(async (conn, index) => {
    await conn.next();
    if (index === 1 || index === 2) {
      conn.send({ type: "error", code: "busy", message: "server busy", is_final: false, text: "" });
      conn.ws.close(1013, "try again later");
      return;
    }
    conn.send(ready("s-3"));
    if (index === 0) conn.ws.terminate();
  });
  const client = new CaptionClient(server.url, { reconnect: FAST });
  const events = record(client);
  await client.connect();
  await once(client, "reconnected");
  const attempts = events.filter(([t]) => t === "reconnecting").map(([, d]) => d);
  assert.deepEqual(attempts.map((a) => a.attempt), [1, 2, 3]);
  assert.deepEqual(attempts.map((a) => a.code), [1006, 1013, 1013]);
  assert.equal(events.filter(([t, d]) => t === "error" && d.code === "busy" && d.fromServer).length, 2);
  client.close();
  await server.close();
});

test("after maxAttempts failed reconnects the client gives up with an error and closes", async () => {
  const server = await fakeServer(async (conn, index) => {
    await conn.next();
    if (index === 0) {
      conn.send(ready());
      conn.ws.terminate();
    } else {
      conn.ws.close(1011, "internal error");
    }
  });
  const client = new CaptionClient(server.url, { reconnect: { ...FAST, maxAttempts: 2 } });
  const events = record(client);
  await client.connect();
  await once(client, "close");
  assert.deepEqual(events.map(([t]) => t), ["ready", "reconnecting", "reconnecting", "error", "close"]);
  assert.equal(events[3][1].code, "reconnect_failed");
  await server.close();
});

test("connect() rejects when the server refuses the settings or never answers", async () => {
  const server = await fakeServer(async (conn, index) => {
    await conn.next();
    if (index === 0) conn.send({ type: "error", code: "bad_setting", message: "silence_ms must be an integer 50..5000; got 10", is_final: false, text: "" });
    // index 1: silence
  });
  const refused = new CaptionClient(server.url, { silenceMs: 10, reconnect: FAST });
  const events = record(refused);
  await assert.rejects(refused.connect(), /bad_setting: silence_ms must be/);
  assert.deepEqual(events.map(([t]) => t), ["error", "close"]);
  const silent = new CaptionClient(server.url, { readyTimeoutMs: 150 });
  await assert.rejects(silent.connect(), /no ready reply within 150 ms/);
  await server.close();
});

test("start message carries the options; token goes in the URL; subprotocol binary", async () => {
  let seen;
  const server = await fakeServer(async (conn) => {
    seen = { start: await conn.next(), url: conn.request.url, protocol: conn.ws.protocol };
    conn.send(ready("my-session"));
  });
  const client = new CaptionClient(`${(await server).url}/`, {
    mode: "online",
    token: "s3cret&x",
    sessionId: "my-session",
    hotwords: { caption: 30 },
    itn: false,
    language: "en",
    silenceMs: 500,
    maxSegmentS: 12.5,
    partialIntervalMs: 400,
    inputSampleRate: 44100,
    wavName: "mic-7",
  });
  await client.connect();
  assert.equal(new URL(seen.url, "ws://x").searchParams.get("token"), "s3cret&x");
  assert.equal(seen.protocol, "binary");
  assert.deepEqual(seen.start, {
    mode: "online",
    wav_name: "mic-7",
    wav_format: "pcm",
    audio_fs: 44100,
    chunk_size: [5, 10, 5],
    chunk_interval: 10,
    hotwords: '{"caption":30}',
    itn: false,
    is_speaking: true,
    extra_replies: true,
    language: "en",
    silence_ms: 500,
    max_segment_s: 12.5,
    partial_interval_ms: 400,
    session_id: "my-session",
    resume_after: -1,
  });
  client.close();
  await server.close();
});

test("CaptionSubscriber: /subscribe?session=, stored finals once, live ones after a reconnect (even after 1008)", async () => {
  const server = await fakeServer(async (conn, index) => {
    const url = new URL(conn.request.url, "ws://x");
    assert.equal(url.pathname, "/subscribe");
    assert.equal(url.searchParams.get("session"), "room-1");
    conn.send({ type: "subscribed", session_id: "room-1", text: "", is_final: false });
    conn.send(final(0, "zero", { replayed: true }));
    if (index === 0) {
      conn.send(partial(1, "one so"));
      await sleep(20);
      conn.ws.close(1008, "display too slow"); // a display may come back; a streaming client would not
      return;
    }
    conn.send(final(1, "one"));
    conn.send(endReply([{ segment_id: 0, final_text: "zero" }, { segment_id: 1, final_text: "one" }]));
  });
  const subscriber = new CaptionSubscriber(server.url, "room-1", { reconnect: FAST });
  const events = record(subscriber, ["subscribed", "partial", "final", "end", "error", "reconnected"]);
  await subscriber.connect();
  await once(subscriber, "end");
  assert.deepEqual(
    events.map(([t, d]) => (t === "final" ? `final ${d.segmentId}` : t)),
    ["subscribed", "final 0", "partial", "subscribed", "reconnected", "final 1", "end"],
  );
  assert.equal(subscriber.state, "open", "an end reply does not stop a subscriber");
  subscriber.close();
  await server.close();
});

test("end() waits for a server still sending finals, and gives up only after timeoutMs of silence", async () => {
  const server = await fakeServer(async (conn, index) => {
    await conn.next(); // start message
    conn.send(ready());
    assert.deepEqual(await conn.next(), { is_speaking: false });
    if (index === 1) return; // the second client's server never answers the end
    // A busy server: the last finals take 4 x 200 ms, longer than the client's 500 ms timeout.
    for (let id = 0; id < 4; id++) {
      await sleep(200);
      conn.send(final(id, `phrase ${id}`));
    }
    await sleep(200);
    conn.send(endReply([0, 1, 2, 3].map((id) => ({ segment_id: id, start_ms: id * 1000, end_ms: id * 1000 + 500, final_text: `phrase ${id}`, end_reason: "silence" }))));
  });
  const busy = new CaptionClient(server.url, { reconnect: FAST });
  const finals = [];
  busy.addEventListener("final", (e) => finals.push(e.detail.text));
  await busy.connect();
  const end = await busy.end({ timeoutMs: 500 });
  assert.equal(end.segments.length, 4);
  assert.deepEqual(finals, ["phrase 0", "phrase 1", "phrase 2", "phrase 3"]);

  const silent = new CaptionClient(server.url, { reconnect: FAST });
  await silent.connect();
  await assert.rejects(silent.end({ timeoutMs: 300 }), /no reply for 300 ms/);
  await server.close();
});
