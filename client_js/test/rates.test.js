// Input formats against the real server: Float32 at 48 kHz and Int16 at 8 kHz (declared as audio_fs,
// the server resamples), and Float32 at 24 kHz (resampled to 16 kHz here).
import assert from "node:assert/strict";
import { test } from "node:test";

import { CaptionClient } from "../livecaption.js";
import { fixture, record, serverUrl, stream, toFloat32, wordRecall } from "./helpers.js";

const MIN_RECALL = 0.8;

async function transcribe(name, { float, expectedRate, minRecall = MIN_RECALL }) {
  const audio = fixture(name);
  const client = new CaptionClient(serverUrl(), { inputSampleRate: audio.rate, wavName: name, partialIntervalMs: 0 });
  const events = record(client, ["error", "final"]);
  await client.connect();
  assert.equal(client.sampleRate, expectedRate, "audio_fs declared to the server");
  const samples = float ? toFloat32(audio.wav.samples) : audio.wav.samples;
  await stream(client, samples, audio.rate, { speed: Infinity });
  const end = await client.end();
  assert.deepEqual(events.filter(([type]) => type === "error"), []);
  assert.equal(end.segments.length, audio.texts.length, `${name}: one final per phrase: "${end.text}"`);
  // The model, not the library, may miss a word (espeak at 8 kHz is hard); audio sent at a wrong
  // rate, scale or byte order gets next to none right.
  const recall = wordRecall(audio.texts, end.text);
  assert.ok(recall >= minRecall, `${name}: ${Math.round(recall * 100)}% of the words of "${audio.texts.join(" / ")}" in "${end.text}"`);
  return end;
}

test("Float32Array at 48 kHz is declared as audio_fs 48000 and recognized", async () => {
  await transcribe("rate48k", { float: true, expectedRate: 48000 });
});

test("Int16Array at 8 kHz is declared as audio_fs 8000 and recognized", async () => {
  // Whisper base on telephone-band espeak: a full run heard "We will answer my mind again. Thank you
  // all for coming." (67%), twice in one process (its int8 decodes differ between processes). Audio
  // at a wrong rate, scale or byte order still gets next to none right.
  await transcribe("rate8k", { float: false, expectedRate: 8000, minRecall: 0.6 });
});

test("Float32Array at 24 kHz (not a server rate) is resampled to 16 kHz by the library and recognized", async () => {
  await transcribe("rate24k", { float: true, expectedRate: 16000 });
});
