// Partial/final flow against the real server: real-time 2pass stream of known speech.
import assert from "node:assert/strict";
import { test } from "node:test";

import { once } from "node:events";

import { CaptionClient, CaptionSubscriber } from "../livecaption.js";
import { fixture, occurrences, record, serverUrl, stream, words } from "./helpers.js";

test("2pass stream: partials before their final, finals hold the spoken words, end reply last; a subscriber sees the same finals", async (t) => {
  const audio = fixture("flow");
  const sessionId = `flow-${process.pid}-${Date.now()}`;
  // A display subscribed before the session exists gets its captions once it does.
  const subscriber = new CaptionSubscriber(serverUrl(), sessionId);
  const seenBySubscriber = record(subscriber, ["final", "end", "error"]);
  // Closed even when an assertion fails first: an open socket would keep this file's process alive.
  t.after(() => subscriber.close());
  await subscriber.connect();

  const client = new CaptionClient(serverUrl(), { mode: "2pass", inputSampleRate: audio.rate, wavName: "flow", sessionId });
  const events = record(client);
  t.after(() => client.close());
  const ready = await client.connect();
  assert.equal(ready.sessionId, sessionId, "ready names the session");
  assert.equal(client.sessionId, sessionId);
  assert.equal(client.sampleRate, 16000);

  await stream(client, audio.wav.samples, audio.rate);
  const end = await client.end();

  const types = events.map(([type]) => type);
  assert.equal(types[0], "ready");
  assert.deepEqual(types.slice(-2), ["end", "close"], `events: ${types.join(" ")}`);
  assert.ok(!types.includes("error"), `no error events: ${JSON.stringify(events.filter(([t]) => t === "error"))}`);

  const finals = events.filter(([type]) => type === "final").map(([, d]) => d);
  const partials = events.filter(([type]) => type === "partial").map(([, d]) => d);
  assert.equal(finals.length, audio.texts.length, `one final per phrase: ${JSON.stringify(finals.map((f) => f.text))}`);
  audio.texts.forEach((text, i) => {
    assert.equal(occurrences(finals[i].text, text), 1, `final ${i} "${finals[i].text}" says "${text}"`);
    assert.ok(Math.abs(finals[i].startMs - audio.spans_ms[i][0]) < 400, `final ${i} starts near ${audio.spans_ms[i][0]} ms`);
    assert.equal(finals[i].sessionId, ready.sessionId);
  });
  assert.ok(partials.length > 0, "partials arrive while speaking");
  for (const partial of partials) {
    const finalIndex = types.findIndex((type, i) => type === "final" && events[i][1].segmentId === partial.segmentId);
    const partialIndex = events.findIndex(([, d]) => d === partial);
    assert.ok(finalIndex > partialIndex, `partial of segment ${partial.segmentId} comes before its final`);
    assert.equal(typeof partial.text, "string");
  }
  const ids = finals.map((f) => f.segmentId);
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b));

  assert.deepEqual(end.segments.map((s) => s.segmentId), ids, "end lists every final");
  assert.equal(words(end.text), words(finals.map((f) => f.text).join(" ")));
  assert.equal(client.state, "closed");

  if (!seenBySubscriber.some(([type]) => type === "end")) await once(subscriber, "end");
  subscriber.close();
  const subscriberFinals = seenBySubscriber.filter(([type]) => type === "final").map(([, d]) => [d.segmentId, d.text]);
  assert.deepEqual(subscriberFinals, finals.map((f) => [f.segmentId, f.text]), "the subscriber saw the same finals");
  assert.deepEqual(seenBySubscriber.filter(([type]) => type === "error"), []);
});
