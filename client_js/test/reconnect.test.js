// Reconnect against the real server: the socket dies twice mid-stream; no final is lost or repeated.
import assert from "node:assert/strict";
import { test } from "node:test";

import { CaptionClient } from "../livecaption.js";
import { destroySocket, fixture, record, serverUrl, stream, trackingWebSocket, until, wordRecall } from "./helpers.js";

test("network loss mid-segment and mid-pause: every phrase in exactly one final, ids unique and increasing", async () => {
  const audio = fixture("reconnect");
  const { WebSocket, sockets } = trackingWebSocket();
  const client = new CaptionClient(serverUrl(), {
    mode: "2pass",
    inputSampleRate: audio.rate,
    wavName: "reconnect",
    partialIntervalMs: 0, // partials are not under test here; without them the CPU-bound server keeps up
    WebSocket,
    reconnect: { initialDelayMs: 200, maxDelayMs: 1000 },
  });
  const events = record(client);
  const { sessionId } = await client.connect();

  // Cut 1: 100 ms after phrase 2 ends, while its segment is still open on the server (the server
  // finalizes it after the socket died; only a replay can deliver it). Cut 2: in the pause after
  // phrase 3, around when its final is sent. The "microphone" waits for the first reconnect to
  // finish before cut 2 (on a slow machine the server takes a while to finalize the old stream),
  // so that cut 2 always hits a resumed, live connection.
  const cuts = [audio.spans_ms[1][1] + 100, audio.spans_ms[2][1] + 700];
  const finalsAtCut = [];
  await stream(client, audio.wav.samples, audio.rate, {
    async onFrame(atMs) {
      if (cuts.length && atMs >= cuts[0]) {
        cuts.shift();
        await until(() => client.state === "open");
        finalsAtCut.push(client.finals.length);
        destroySocket(client.socket);
      }
    },
  });
  assert.equal(cuts.length, 0, "both cuts happened");
  const end = await client.end();

  const of = (type) => events.filter(([t]) => t === type).map(([, d]) => d);
  const finals = of("final");
  const summary = JSON.stringify(finals.map((f) => [f.segmentId, f.text, f.replayed]));
  assert.equal(sockets.length, 3, "two reconnects");
  assert.equal(of("reconnecting").length, 2);
  assert.equal(of("reconnected").length, 2);
  for (const reconnected of of("reconnected")) assert.equal(reconnected.sessionId, sessionId, "the same session resumed");
  assert.deepEqual(
    of("error").filter((e) => e.code !== "audio_dropped"),
    [],
    "no errors besides possibly dropped audio",
  );

  // Exactly once, read by words rather than verbatim: Whisper may mishear a word or two of a phrase
  // (seen: "we will answer them at the end" -> "We will answer the math again."), which is not a
  // delivery fault. A lost final leaves a phrase without one, a repeated or split one adds a final;
  // both change the one-to-one, in-order pairing checked here.
  assert.equal(finals.length, audio.texts.length, `one final per phrase: ${summary}`);
  audio.texts.forEach((text, i) => {
    const recalls = audio.texts.map((phrase) => wordRecall([phrase], finals[i].text));
    const best = recalls.indexOf(Math.max(...recalls));
    assert.ok(best === i && recalls[i] >= 0.5, `final ${i} says "${text}" (word recalls ${recalls}): ${summary}`);
    assert.ok(wordRecall([finals[i].text], text) >= 0.5, `final ${i} says little else than "${text}": ${summary}`);
  });
  const ids = finals.map((f) => f.segmentId);
  assert.equal(new Set(ids).size, ids.length, `no segment id twice: ${summary}`);
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b), `segment ids increase: ${summary}`);
  assert.ok(finals.some((f) => f.replayed), `the segment open at the first cut was replayed: ${summary}`);
  for (let i = 1; i < finals.length; i++) {
    assert.ok(finals[i].startMs >= finals[i - 1].endMs, `times continue on the session's timeline: ${summary}`);
  }
  assert.ok(finalsAtCut[0] <= 1, "cut 1 came before phrase 2's final");
  assert.deepEqual(end.segments.map((s) => s.segmentId), ids);
});
