// The WAV example program against the real server: a stereo 44.1 kHz file streamed in real time.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { test } from "node:test";

import { fixture, occurrences, serverUrl } from "./helpers.js";

test("examples/stream-wav.js streams a stereo 44.1 kHz WAV in real time and prints the finals", async () => {
  const audio = fixture("stereo44k");
  const example = fileURLToPath(new URL("../examples/stream-wav.js", import.meta.url));
  const { stdout } = await promisify(execFile)(process.execPath, [example, serverUrl(), audio.path], { timeout: 60000 });
  const finals = stdout.split("\n").filter((line) => line.startsWith("final #"));
  assert.equal(finals.length, audio.texts.length, stdout);
  audio.texts.forEach((text, i) => assert.equal(occurrences(finals[i], text), 1, stdout));
  assert.match(stdout, /^end: 2 segment\(s\)$/m);
});
