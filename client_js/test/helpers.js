// Shared by the node:test files: the server URL and audio fixtures from the environment (written by
// tests/test_client_js.py), a WebSocket class that keeps its instances, and streaming helpers.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { WebSocket } from "ws";

import { decodeWav } from "../livecaption.js";

/** The caption server under test. Fails (never skips) when the Python wrapper did not set it. */
export function serverUrl() {
  const url = process.env.LIVECAPTION_URL;
  if (!url) throw new Error("LIVECAPTION_URL is not set: run these tests with `.venv/bin/python -m pytest tests/test_client_js.py`");
  return url;
}

function fixturesDir() {
  const dir = process.env.LIVECAPTION_FIXTURES;
  if (!dir) throw new Error("LIVECAPTION_FIXTURES is not set: run these tests with `.venv/bin/python -m pytest tests/test_client_js.py`");
  return dir;
}

/** One fixture: {path, rate, channels, texts, spans_ms, wav: {sampleRate, channels, samples}}. */
export function fixture(name) {
  const manifest = JSON.parse(readFileSync(join(fixturesDir(), "manifest.json"), "utf8"));
  const entry = manifest[name];
  if (!entry) throw new Error(`fixture ${name} not in manifest`);
  const path = join(fixturesDir(), entry.file);
  return { ...entry, path, wav: decodeWav(readFileSync(path)) };
}

/** Lowercase words without punctuation: "Good morning, everyone!" -> "good morning everyone". */
export function words(text) {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9 ]/g, " ")
    .split(/\s+/)
    .filter(Boolean)
    .join(" ");
}

/** How many times `phrase` occurs (as whole words) in `text`. */
export function occurrences(text, phrase) {
  const haystack = ` ${words(text)} `;
  const needle = ` ${words(phrase)} `;
  let count = 0;
  for (let at = haystack.indexOf(needle); at !== -1; at = haystack.indexOf(needle, at + 1)) count++;
  return count;
}

/** Fraction of the expected words (counted with repeats) that occur in `text`. */
export function wordRecall(expectedTexts, text) {
  const have = new Map();
  for (const word of words(text).split(" ")) have.set(word, (have.get(word) ?? 0) + 1);
  const expected = words(expectedTexts.join(" ")).split(" ");
  let found = 0;
  for (const word of expected) {
    if (have.get(word) > 0) {
      have.set(word, have.get(word) - 1);
      found++;
    }
  }
  return found / expected.length;
}

/** A `ws` WebSocket that remembers every instance, so a test can cut the live one. */
export function trackingWebSocket() {
  const sockets = [];
  class Tracking extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }
  }
  return { WebSocket: Tracking, sockets };
}

/** Cut a `ws` socket like a network loss: no close frame, the TCP connection just dies. */
export function destroySocket(ws) {
  ws._socket.destroy();
}

/**
 * Feed `samples` to client.sendPcm in frames of `frameMs`, paced at `speed` x real time
 * (Infinity = as fast as possible, yielding between frames). `onFrame(ms)` runs before each frame;
 * if it returns a promise, the stream waits for it and keeps its pace from there.
 */
export async function stream(client, samples, rate, { frameMs = 100, speed = 1, onFrame = null } = {}) {
  const step = Math.round((rate * frameMs) / 1000);
  let began = performance.now();
  for (let offset = 0, index = 0; offset < samples.length; offset += step, index++) {
    const atMs = index * frameMs;
    if (onFrame) {
      const before = performance.now();
      const result = onFrame(atMs);
      if (result && typeof result.then === "function") {
        await result;
        began += performance.now() - before;
      }
    }
    if (Number.isFinite(speed)) {
      const wait = began + atMs / speed - performance.now();
      if (wait > 0) await sleep(wait);
    } else if (index % 10 === 0) {
      await sleep(1);
    }
    client.sendPcm(samples.subarray(offset, offset + step), rate);
  }
}

/** Resolves once `predicate()` holds (checked every 20 ms). */
export async function until(predicate) {
  while (!predicate()) await sleep(20);
}

/** Collect a client's events (in order) as [type, detail] pairs. */
export function record(client, types = ["ready", "partial", "final", "end", "error", "reconnecting", "reconnected", "close"]) {
  const events = [];
  for (const type of types) client.listen(type, (detail) => events.push([type, detail]));
  return events;
}

export function toFloat32(int16) {
  const out = new Float32Array(int16.length);
  for (let i = 0; i < int16.length; i++) out[i] = int16[i] / 32768;
  return out;
}
