#!/usr/bin/env node
// Stream a WAV file to the caption server the way an IoT microphone would: 100 ms frames in real
// time, reconnecting if the network drops, printing partial and final captions.
//
//   node client_js/examples/stream-wav.js ws://127.0.0.1:10095 speech.wav [--mode 2pass|online|offline]
//
// The WAV may be 16-bit PCM at any sample rate, mono or stereo (channels are averaged).
// Exits 0 after the server's end reply, 1 if the stream failed.
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

import { CaptionClient, decodeWav } from "../livecaption.js";

const FRAME_MS = 100;

function usage(message) {
  if (message) console.error(`error: ${message}`);
  console.error("usage: node stream-wav.js ws://HOST:PORT file.wav [--mode 2pass|online|offline] [--token TOKEN]");
  process.exit(2);
}

function parseArgs(argv) {
  const positional = [];
  const options = { mode: "2pass", token: undefined };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--mode" || argv[i] === "--token") {
      if (i + 1 >= argv.length) usage(`${argv[i]} needs a value`);
      options[argv[i].slice(2)] = argv[++i];
    } else if (argv[i].startsWith("--")) {
      usage(`unknown option ${argv[i]}`);
    } else {
      positional.push(argv[i]);
    }
  }
  if (positional.length !== 2) usage();
  return { url: positional[0], file: positional[1], ...options };
}

const seconds = (ms) => (ms / 1000).toFixed(2);

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let wav;
  try {
    wav = decodeWav(readFileSync(args.file));
  } catch (error) {
    usage(`${args.file}: ${error.message}`);
  }
  const durationS = wav.samples.length / wav.sampleRate;
  console.log(`${args.file}: ${wav.sampleRate} Hz, ${wav.channels} channel(s), ${durationS.toFixed(1)} s`);

  const client = new CaptionClient(args.url, {
    mode: args.mode,
    token: args.token,
    inputSampleRate: wav.sampleRate,
    wavName: args.file.split(/[\\/]/).pop(),
  });
  const tty = process.stdout.isTTY;
  let partialShown = false;
  const clearPartial = () => {
    if (tty && partialShown) process.stdout.write("\r\x1b[K");
    partialShown = false;
  };
  client.listen("partial", (p) => {
    if (tty) {
      process.stdout.write(`\r\x1b[K… ${p.text}`);
      partialShown = true;
    } else {
      console.log(`partial #${p.segmentId}: ${p.text}`);
    }
  });
  client.listen("final", (f) => {
    clearPartial();
    const note = f.replayed ? " (replayed after reconnect)" : "";
    console.log(`final #${f.segmentId} [${seconds(f.startMs)}-${seconds(f.endMs)} s]${note}: ${f.text}`);
  });
  client.listen("error", (e) => {
    clearPartial();
    console.error(`error ${e.code}: ${e.message}`);
  });
  client.listen("reconnecting", (r) => console.error(`connection lost (${r.code} ${r.reason}); retrying in ${r.delayMs} ms (attempt ${r.attempt})`));
  client.listen("reconnected", (r) => console.error(`reconnected to session ${r.sessionId}`));

  const ready = await client.connect();
  console.log(`session ${ready.sessionId} (${ready.raw.engine ?? "?"} engine)`);

  // Ctrl-C stops the "microphone" and still collects the captions of what was sent; twice quits.
  let stopped = false;
  process.on("SIGINT", () => {
    if (stopped) process.exit(130);
    stopped = true;
    console.error("stopping: waiting for the last captions (Ctrl-C again to quit)");
  });

  // Real time like a microphone: frame k goes out at k * 100 ms, however long sending took.
  const step = Math.round((wav.sampleRate * FRAME_MS) / 1000);
  const began = performance.now();
  for (let offset = 0, k = 0; offset < wav.samples.length && !stopped; offset += step, k++) {
    const wait = began + k * FRAME_MS - performance.now();
    if (wait > 0) await sleep(wait);
    client.sendPcm(wav.samples.subarray(offset, offset + step));
  }
  const end = await client.end();
  clearPartial();
  console.log(`end: ${end.segments.length} segment(s)`);
  console.log(`transcript: ${end.text}`);
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`error: ${error.message}`);
    process.exit(1);
  },
);
