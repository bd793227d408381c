// Pure parts of the library: PCM conversion, resampling, WAV decoding, hotwords, option checks.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CaptionClient,
  Resampler,
  decodeWav,
  floatToInt16,
  formatHotwords,
  int16ToBytesLE,
} from "../livecaption.js";

function sine(frequency, rate, seconds, amplitude = 0.8) {
  const out = new Float32Array(Math.round(rate * seconds));
  for (let i = 0; i < out.length; i++) out[i] = amplitude * Math.sin((2 * Math.PI * frequency * i) / rate);
  return out;
}

function rms(samples) {
  let sum = 0;
  for (const s of samples) sum += s * s;
  return Math.sqrt(sum / samples.length);
}

function resampleInChunks(resampler, input, chunk) {
  const parts = [];
  for (let i = 0; i < input.length; i += chunk) parts.push(resampler.process(input.subarray(i, i + chunk)));
  parts.push(resampler.flush());
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

test("floatToInt16 scales, clips and zeroes NaN", () => {
  assert.deepEqual([...floatToInt16(new Float32Array([-2, -1, 0, 0.5, 1, 2, NaN]))], [-32768, -32768, 0, 16384, 32767, 32767, 0]);
});

test("int16ToBytesLE writes little-endian bytes into a fresh copy", () => {
  const samples = new Int16Array([1, -2, 0x1234]);
  const bytes = int16ToBytesLE(samples.subarray(0, 3));
  samples[0] = 99;
  assert.deepEqual([...bytes], [1, 0, 0xfe, 0xff, 0x34, 0x12]);
});

for (const [from, to] of [
  [24000, 16000],
  [11025, 16000],
  [96000, 16000],
  [32000, 16000],
]) {
  test(`Resampler ${from} -> ${to} Hz keeps a 1 kHz tone, its length, and chunking does not matter`, () => {
    const input = sine(1000, from, 1);
    const whole = resampleInChunks(new Resampler(from, to), input, input.length);
    const chunked = resampleInChunks(new Resampler(from, to), input, 333);
    assert.ok(Math.abs(whole.length - to) <= 2, `length ${whole.length} ~ ${to}`);
    assert.equal(chunked.length, whole.length);
    let worst = 0;
    for (let i = 0; i < whole.length; i++) worst = Math.max(worst, Math.abs(whole[i] - chunked[i]));
    assert.ok(worst < 1e-5, `chunked output differs by ${worst}`);
    const middle = whole.subarray(Math.round(to * 0.1), Math.round(to * 0.9));
    const expected = sine(1000, to, 1).subarray(Math.round(to * 0.1), Math.round(to * 0.9));
    let error = 0;
    for (let i = 0; i < middle.length; i++) error = Math.max(error, Math.abs(middle[i] - expected[i]));
    assert.ok(error < 0.02, `tone reproduced within 0.02 (worst ${error})`);
  });
}

test("Resampler removes frequencies above the new Nyquist instead of folding them into speech", () => {
  const out = resampleInChunks(new Resampler(48000, 16000), sine(10000, 48000, 1), 4800);
  assert.ok(rms(out.subarray(1000, out.length - 1000)) < 0.01, `10 kHz tone attenuated (rms ${rms(out)})`);
});

function wavBytes({ rate, channels, frames, bits = 16, extraChunk = true, extensible = false }) {
  const data = new Uint8Array(frames.length * 2);
  frames.forEach((v, i) => new DataView(data.buffer).setInt16(i * 2, v, true));
  const fmtSize = extensible ? 40 : 16;
  const list = extraChunk ? 12 + 1 + 1 : 0; // LIST chunk with an odd size (padded)
  const total = 12 + 8 + fmtSize + list + 8 + data.length;
  const bytes = new Uint8Array(total);
  const view = new DataView(bytes.buffer);
  const tag = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  tag(0, "RIFF");
  view.setUint32(4, total - 8, true);
  tag(8, "WAVE");
  tag(12, "fmt ");
  view.setUint32(16, fmtSize, true);
  view.setUint16(20, extensible ? 0xfffe : 1, true);
  view.setUint16(22, channels, true);
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * channels * 2, true);
  view.setUint16(32, channels * 2, true);
  view.setUint16(34, bits, true);
  if (extensible) {
    view.setUint16(36, 22, true);
    view.setUint16(44, 1, true); // subformat GUID starts with the PCM format code
  }
  let at = 20 + fmtSize;
  if (extraChunk) {
    tag(at, "LIST");
    view.setUint32(at + 4, 5, true);
    at += 14;
  }
  tag(at, "data");
  view.setUint32(at + 4, data.length, true);
  bytes.set(data, at + 8);
  return bytes;
}

test("decodeWav reads mono and stereo PCM, skips other chunks, averages channels", () => {
  const mono = decodeWav(wavBytes({ rate: 22050, channels: 1, frames: [1, -2, 3] }));
  assert.equal(mono.sampleRate, 22050);
  assert.deepEqual([...mono.samples], [1, -2, 3]);
  const stereo = decodeWav(wavBytes({ rate: 44100, channels: 2, frames: [100, 200, -100, -300], extensible: true }));
  assert.equal(stereo.channels, 2);
  assert.deepEqual([...stereo.samples], [150, -200]);
  assert.throws(() => decodeWav(wavBytes({ rate: 8000, channels: 1, frames: [1], bits: 8 })), /16-bit PCM/);
  assert.throws(() => decodeWav(new Uint8Array(20)), /not a WAV/);
});

test("formatHotwords gives FunASR's JSON string", () => {
  assert.equal(formatHotwords(undefined), "");
  assert.equal(formatHotwords({ FunASR: 30 }), '{"FunASR":30}');
  assert.equal(formatHotwords(["caption", "live stream"]), '{"caption":20,"live stream":20}');
  assert.equal(formatHotwords("a b"), "a b");
  assert.throws(() => formatHotwords(42), TypeError);
});

test("bad options fail at construction, naming the option", () => {
  assert.throws(() => new CaptionClient("ws://127.0.0.1:1", { mode: "fast" }), /mode/);
  assert.throws(() => new CaptionClient("ws://127.0.0.1:1", { sessionId: "has space" }), /sessionId/);
  assert.throws(() => new CaptionClient("ws://127.0.0.1:1", { inputSampleRate: -1 }), /inputSampleRate/);
  assert.throws(() => new CaptionClient("ws://127.0.0.1:1", { silenceMs: "300" }), /silenceMs/);
  assert.throws(() => new CaptionClient("ws://127.0.0.1:1", { reconnect: { maxAttempts: -1 } }), /maxAttempts/);
  assert.throws(() => new CaptionClient("ftp://x"), /ws:\/\//);
});

test("audio sent before connecting is buffered up to maxBufferedAudioS, dropping the oldest with an error", () => {
  const client = new CaptionClient("ws://127.0.0.1:1", { maxBufferedAudioS: 1 });
  const errors = [];
  client.listen("error", (e) => errors.push(e));
  for (let i = 0; i < 15; i++) client.sendPcm(new Int16Array(1600)); // 1.5 s
  assert.equal(client.bufferedBytes, 32000);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "audio_dropped");
  assert.throws(() => client.sendPcm([1, 2, 3]), TypeError);
  client.close();
  assert.throws(() => client.sendPcm(new Int16Array(10)), /closed/);
});
