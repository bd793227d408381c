/** CaptionClient: stream audio to the server and receive its captions. */
import { floatToInt16, int16ToBytesLE, int16ToFloat, Resampler } from "./audio.js";
import { CaptionConnection } from "./connection.js";
import { optionalBoolean, optionalNumber, optionalString, positiveNumber } from "./options.js";
import { formatHotwords, isSessionId, MODES, SERVER_SAMPLE_RATES, socketUrl } from "./protocol.js";
import { OPEN } from "./socket.js";

/** @typedef {import("../livecaption.js").CaptionClientOptions} CaptionClientOptions */
/** @typedef {import("../livecaption.js").EndDetail} EndDetail */
/** @typedef {import("../livecaption.js").ReadyDetail} ReadyDetail */
/** @typedef {import("./connection.js").Socket} Socket */
/** @typedef {{promise: Promise<EndDetail>, resolve: (end: EndDetail) => void, reject: (error: Error) => void, timer: ReturnType<typeof setTimeout>, timeoutMs: number}} EndWaiter */

const MAX_FRAME_SAMPLES = 16000; // one binary frame holds at most this many samples (far below the server's limit)

export class CaptionClient extends CaptionConnection {
  /**
   * @param {string} url ws://host:port/ of the caption server (http(s):// is accepted and converted)
   * @param {CaptionClientOptions} [options] see livecaption.d.ts
   */
  constructor(url, options = {}) {
    super(options);
    this._url = socketUrl(url, options.token);
    const mode = options.mode ?? "2pass";
    if (!MODES.includes(mode)) throw new RangeError(`option mode must be one of ${MODES.join(", ")}; got ${JSON.stringify(mode)}`);
    this._inputRate = positiveNumber(options.inputSampleRate ?? 16000, "inputSampleRate");
    // The server resamples the rates it accepts; any other rate is resampled to 16 kHz here.
    this._audioFs = SERVER_SAMPLE_RATES.includes(this._inputRate) ? this._inputRate : 16000;
    if (options.sessionId !== undefined && options.sessionId !== null) {
      if (!isSessionId(options.sessionId)) {
        throw new RangeError(`option sessionId must be 1..64 characters of A-Z a-z 0-9 _ -; got ${JSON.stringify(options.sessionId)}`);
      }
      this._sessionId = options.sessionId;
    }
    /** @type {Record<string, unknown>} the start message, sent again on every reconnect */
    this._settings = {
      mode,
      wav_name: optionalString(options.wavName, "wavName") ?? "stream",
      wav_format: "pcm",
      audio_fs: this._audioFs,
      chunk_size: [5, 10, 5],
      chunk_interval: 10,
      hotwords: formatHotwords(options.hotwords),
      itn: optionalBoolean(options.itn, "itn") ?? true,
      is_speaking: true,
      extra_replies: true, // ready, warning: messages FunASR's protocol does not have
    };
    const extras = {
      language: optionalString(options.language, "language"),
      silence_ms: optionalNumber(options.silenceMs, "silenceMs"),
      max_segment_s: optionalNumber(options.maxSegmentS, "maxSegmentS"),
      partial_interval_ms: optionalNumber(options.partialIntervalMs, "partialIntervalMs"),
    };
    for (const [key, value] of Object.entries(extras)) if (value !== undefined) this._settings[key] = value;

    const stallMs = options.stallTimeoutMs ?? 20000;
    if (stallMs !== 0) positiveNumber(stallMs, "stallTimeoutMs");
    this._stallTimeoutMs = stallMs;
    /** @type {ReturnType<typeof setInterval> | undefined} notices a socket the server stopped draining */
    this._watchdog = undefined;
    this._sentBytes = 0; // bytes handed to the live socket (to tell drained from queued)
    const maxBufferedS = positiveNumber(options.maxBufferedAudioS ?? 30, "maxBufferedAudioS");
    this._maxPendingBytes = Math.round(maxBufferedS * this._audioFs) * 2;
    /** @type {Uint8Array<ArrayBuffer>[]} PCM frames waiting for a live socket */
    this._pending = [];
    this._pendingBytes = 0;
    this._droppedBytes = 0;
    /** @type {Map<number, Resampler>} by input rate */
    this._resamplers = new Map();
    this._ending = false;
    /** @type {EndWaiter | null} */
    this._endWaiter = null;
  }

  /** The `audio_fs` declared to the server: the input rate when the server accepts it, else 16000. */
  get sampleRate() {
    return this._audioFs;
  }

  /** Bytes of PCM waiting for a connection. */
  get bufferedBytes() {
    return this._pendingBytes;
  }

  /**
   * Connect and configure the stream; resolves on the server's 'ready' (rejects if that fails).
   * @returns {Promise<ReadyDetail>}
   */
  connect() {
    return this._start();
  }

  /**
   * Queue PCM for the server. Int16Array, or Float32Array in [-1, 1] (clipped); `sampleRate`
   * defaults to the inputSampleRate option. Sent at once while connected, otherwise buffered (up
   * to maxBufferedAudioS; the oldest audio is dropped beyond that) and sent in order on reconnect.
   * @param {Int16Array | Float32Array | Float64Array} samples
   * @param {number} [sampleRate]
   */
  sendPcm(samples, sampleRate = this._inputRate) {
    if (this._isClosed()) throw new Error("sendPcm(): the client is closed");
    if (this._ending) throw new Error("sendPcm(): end() was already called");
    if (!(samples instanceof Int16Array || samples instanceof Float32Array || samples instanceof Float64Array)) {
      throw new TypeError("sendPcm() takes an Int16Array or a Float32Array");
    }
    positiveNumber(sampleRate, "sampleRate");
    let pcm;
    if (sampleRate === this._audioFs) {
      pcm = samples instanceof Int16Array ? samples : floatToInt16(samples);
    } else {
      let resampler = this._resamplers.get(sampleRate);
      if (!resampler) {
        resampler = new Resampler(sampleRate, this._audioFs);
        this._resamplers.set(sampleRate, resampler);
      }
      const floats = samples instanceof Int16Array ? int16ToFloat(samples) : samples;
      pcm = floatToInt16(resampler.process(floats));
    }
    this._queuePcm(pcm);
  }

  /**
   * End the stream: sends {"is_speaking": false} and resolves with the end reply: every final of
   * the stream (`segments`, by segment id). If the connection drops meanwhile, the client
   * reconnects and ends again, so finals are still delivered. Closes the client afterwards.
   * `timeoutMs` is how long to wait without hearing from the server: a busy server still sending
   * the stream's last finals is waited for (its backlog can take longer than any fixed limit).
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<EndDetail>}
   */
  end({ timeoutMs = 120000 } = {}) {
    if (this._endWaiter) return this._endWaiter.promise;
    if (this.state === "idle") return Promise.reject(new Error("end(): connect() was not called"));
    if (this._isClosed()) return Promise.reject(new Error("end(): the client is closed"));
    /** @type {EndWaiter["resolve"]} */
    let resolve = () => {};
    /** @type {EndWaiter["reject"]} */
    let reject = () => {};
    /** @type {Promise<EndDetail>} */
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this._endWaiter = { promise, resolve, reject, timer: this._endTimer(timeoutMs), timeoutMs };
    for (const resampler of this._resamplers.values()) this._queuePcm(floatToInt16(resampler.flush()));
    this._resamplers.clear();
    this._ending = true;
    if (this.state === "open") this._state = "ending";
    if (this._isLive()) this._send(JSON.stringify({ is_speaking: false }));
    return promise;
  }

  /** @param {number} timeoutMs */
  _endTimer(timeoutMs) {
    return setTimeout(() => {
      const reason = `no reply for ${timeoutMs} ms while waiting for the end`;
      this._terminate({ code: 1000, reason, error: new Error(`end(): ${reason}`) });
    }, timeoutMs);
  }

  _onReply() {
    const waiter = this._endWaiter;
    if (!waiter) return;
    clearTimeout(waiter.timer); // the server is still sending: keep waiting
    waiter.timer = this._endTimer(waiter.timeoutMs);
  }

  // --- internals ---------------------------------------------------------------------------------
  _socketUrl() {
    return this._url;
  }

  /** @returns {"ready"} */
  _handshakeType() {
    return "ready";
  }

  _protocols() {
    return ["binary"]; // what FunASR's clients request; the server accepts it
  }

  _handshakeMessage() {
    const message = { ...this._settings };
    if (this._sessionId) {
      message.session_id = this._sessionId;
      message.resume_after = this._highest; // replay only the finals we have not emitted
      this._resumeAfterSent = this._highest;
    }
    return JSON.stringify(message);
  }

  _isLive() {
    return this._live && this._ws !== null && this._ws.readyState === OPEN;
  }

  /**
   * Send on the live socket (callers check _isLive() first), counting bytes for the watchdog.
   * @param {string | Uint8Array<ArrayBuffer>} data
   */
  _send(data) {
    this._sentBytes += typeof data === "string" ? new TextEncoder().encode(data).byteLength : data.byteLength;
    /** @type {Socket} */ (this._ws).send(data);
  }

  _onLive() {
    const ws = /** @type {Socket} */ (this._ws); // the socket that just went live
    this._sentBytes = ws.bufferedAmount || 0;
    this._startWatchdog(ws);
    if (this._droppedBytes > 0) {
      const ms = Math.round((this._droppedBytes / 2 / this._audioFs) * 1000);
      this._emitError("audio_dropped", `${ms} ms of audio were dropped while disconnected (the buffer holds ${this._maxPendingBytes / 2 / this._audioFs} s)`);
      this._droppedBytes = 0;
    }
    for (const frame of this._pending) this._send(frame);
    this._pending = [];
    this._pendingBytes = 0;
    if (this._ending) {
      this._state = "ending";
      this._send(JSON.stringify({ is_speaking: false }));
    }
  }

  /**
   * A connection whose peer vanished without a FIN or RST (a half-open TCP connection: a phone that
   * changed networks, a NAT that forgot us) raises no 'close' for many minutes; audio just piles
   * up in the socket. If the server drains nothing of what we queued for stallTimeoutMs, give the
   * socket up and reconnect.
   * @param {Socket} ws
   */
  _startWatchdog(ws) {
    clearInterval(this._watchdog);
    if (!this._stallTimeoutMs) return;
    let drained = 0;
    let progressAt = Date.now();
    this._watchdog = setInterval(() => {
      if (ws !== this._ws || !this._live) {
        clearInterval(this._watchdog);
        return;
      }
      const queued = ws.bufferedAmount;
      const now = Date.now();
      const nowDrained = this._sentBytes - queued;
      if (queued === 0 || nowDrained > drained) {
        drained = nowDrained;
        progressAt = now;
      } else if (now - progressAt >= this._stallTimeoutMs) {
        clearInterval(this._watchdog);
        const lostMs = Math.round((queued / 2 / this._audioFs) * 1000);
        this._emitError("connection_stalled", `the server took no data for ${this._stallTimeoutMs} ms; reconnecting (about ${lostMs} ms of audio queued on the dead connection are lost)`);
        this._abandon(ws, "connection stalled");
      }
    }, Math.min(1000, Math.max(10, this._stallTimeoutMs / 4)));
    const timer = /** @type {{unref?: () => void}} */ (/** @type {unknown} */ (this._watchdog)); // Node's Timeout; a number in browsers
    if (typeof timer.unref === "function") timer.unref(); // never keeps Node running by itself
  }

  /** @param {Int16Array} pcm */
  _queuePcm(pcm) {
    for (let offset = 0; offset < pcm.length; offset += MAX_FRAME_SAMPLES) {
      const frame = int16ToBytesLE(pcm.subarray(offset, offset + MAX_FRAME_SAMPLES));
      if (this._isLive() && this._pending.length === 0) {
        this._send(frame);
        continue;
      }
      this._pending.push(frame);
      this._pendingBytes += frame.byteLength;
      let dropped = 0;
      while (this._pendingBytes > this._maxPendingBytes && this._pending.length > 1) {
        const oldest = /** @type {Uint8Array<ArrayBuffer>} */ (this._pending.shift());
        this._pendingBytes -= oldest.byteLength;
        dropped += oldest.byteLength;
      }
      if (dropped > 0) {
        if (this._droppedBytes === 0) {
          this._emitError("audio_dropped", `not connected and ${this._maxPendingBytes / 2 / this._audioFs} s of audio are buffered: dropping the oldest audio`);
        }
        this._droppedBytes += dropped;
      }
    }
  }

  /** @param {EndDetail} end */
  _onEnd(end) {
    const waiter = this._endWaiter;
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(end);
    }
    this._terminate({ code: 1000, reason: "end of stream" });
  }

  /** @param {Error} error */
  _onTerminate(error) {
    clearInterval(this._watchdog);
    this._pending = [];
    this._pendingBytes = 0;
    const waiter = this._endWaiter;
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.reject(error); // no-op when it already resolved
    }
  }
}
