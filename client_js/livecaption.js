/**
 * livecaption.js — client for the live caption server (a superset of FunASR's WebSocket protocol).
 *
 * ES modules with no dependencies and no build step: load it in a page with
 * `<script type="module">import {CaptionClient} from "/client_js/livecaption.js"</script>`, or
 * import it in Node 20+ (there it uses `globalThis.WebSocket` when the platform has one, else the
 * `ws` package). docs/protocol.md describes the wire protocol; livecaption.d.ts the types.
 * This file is the public surface only; the parts live in lib/ (one job each):
 *   lib/connection.js  sockets, reconnects with resume, dedupe of finals, events (the base class)
 *   lib/client.js      CaptionClient: options, PCM queueing while disconnected, end(), stall watchdog
 *   lib/subscriber.js  CaptionSubscriber
 *   lib/protocol.js    pure: URLs, hotwords, server messages read into event details
 *   lib/audio.js       pure: PCM conversion, the resampler, WAV decoding
 *   lib/options.js, lib/socket.js  option checks; the WebSocket class and safe closing
 *
 * - CaptionClient streams PCM (Int16Array or Float32Array, any sample rate) and receives captions.
 * - CaptionSubscriber follows the captions of a session someone else streams (an overlay).
 *
 * Both are EventTargets: `client.addEventListener("final", (e) => e.detail.text)`, or the shorthand
 * `client.listen("final", (final) => ...)`, which returns a function that removes the listener.
 * (Deliberately not named `on`: Node's events.once()/on() would then mistake the client for an
 * EventEmitter; with an EventTarget, `await once(client, "final")` works.)
 * Events: ready, partial, final, end, error, reconnecting, reconnected, close (subscribers:
 * subscribed instead of ready). 'close' is sent exactly once, when the client is done for good;
 * a dropped connection that will be retried sends 'reconnecting' instead.
 *
 * Reconnecting never loses or repeats a final the server sent: finals are identified by
 * (session_id, segment_id); the client remembers every segment id it has emitted and, on
 * reconnect, asks the server to replay the session's finals after the highest one (resume_after).
 * Audio sent while disconnected is buffered (maxBufferedAudioS) and sent in order afterwards.
 *
 *   const client = new CaptionClient("ws://127.0.0.1:10095", { inputSampleRate: 48000, hotwords: ["FunASR"] });
 *   client.listen("partial", (p) => show(p.segmentId, p.text));
 *   client.listen("final", (f) => commit(f.segmentId, f.text));
 *   await client.connect();
 *   client.sendPcm(float32Samples);          // every 20..200 ms, as the microphone delivers
 *   const { segments } = await client.end(); // every final; the client then closes
 */

export { decodeWav, floatToInt16, int16ToBytesLE, int16ToFloat, Resampler } from "./lib/audio.js";
export { CaptionClient } from "./lib/client.js";
export { FATAL_CLOSE_CODES, formatHotwords, SERVER_SAMPLE_RATES } from "./lib/protocol.js";
export { CaptionSubscriber } from "./lib/subscriber.js";
