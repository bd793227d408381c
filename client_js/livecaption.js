/**
 * livecaption.js — client for the live caption server (a superset of FunASR's WebSocket protocol).
 *
 * One ES module with no dependencies and no build step: load it in a page with
 * `<script type="module">import {CaptionClient} from "/client_js/livecaption.js"</script>`, or
 * import it in Node 20+ (there it uses `globalThis.WebSocket` when the platform has one, else the
 * `ws` package). docs/protocol.md describes the wire protocol; livecaption.d.ts the types.
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

/** Sample rates the server accepts as `audio_fs` (it resamples them itself); others are resampled here. */
export const SERVER_SAMPLE_RATES = Object.freeze([8000, 16000, 22050, 44100, 48000]);

/**
 * Close codes after which retrying cannot help: protocol or policy violations (1002, 1003, 1007,
 * 1008: e.g. too many bad messages, or a client too slow to read), a frame the server refuses
 * (1009), and 4001 (the server handed this session to another connection).
 */
export const FATAL_CLOSE_CODES = Object.freeze([1002, 1003, 1007, 1008, 1009, 1010, 4001]);

const SESSION_ID = /^[A-Za-z0-9_-]{1,64}$/;
const MODES = ["2pass", "online", "offline"];
const DEFAULT_HOTWORD_WEIGHT = 20; // FunASR's weight for a hotword given without one
const MAX_FRAME_SAMPLES = 16000; // one binary frame holds at most this many samples (far below the server's limit)
const OPEN = 1; // WebSocket.OPEN, the same for every implementation

const DEFAULT_RECONNECT = Object.freeze({ enabled: true, initialDelayMs: 250, maxDelayMs: 8000, maxAttempts: Infinity });

// ------------------------------------------------------------------------------------------------
// Base: one logical connection that survives dropped sockets.
// ------------------------------------------------------------------------------------------------

/** Shared by CaptionClient and CaptionSubscriber: sockets, reconnects, parsing, dedupe, events. */
class CaptionConnection extends EventTarget {
  constructor(options) {
    super();
    this._reconnect = reconnectPolicy(options.reconnect);
    // Generous: on a resume the server first finalizes the old connection's open segment.
    this._readyTimeoutMs = positiveNumber(options.readyTimeoutMs ?? 30000, "readyTimeoutMs");
    if (options.WebSocket !== undefined && typeof options.WebSocket !== "function") {
      throw new TypeError("option WebSocket must be a WebSocket constructor");
    }
    this._WebSocket = options.WebSocket ?? null;
    this._state = "idle";
    this._ws = null;
    this._live = false; // the current socket got its handshake reply
    this._handshake = null; // {ws, resolve, reject, timer} while a socket waits for its handshake reply
    this._attempt = 0;
    this._sleep = null; // {timer, wake} while waiting to retry
    this._sessionId = null;
    this._seen = new Set(); // segment ids of every final emitted
    this._highest = -1;
    this._finals = []; // every final emitted, in order
    this._connectCount = 0;
    this._resumeAfterSent = null; // resume_after of the latest handshake (CaptionClient)
  }

  /** 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' ('ending' for a CaptionClient after end()). */
  get state() {
    return this._state;
  }

  /** The captions session; set by the server's first reply unless given as an option. */
  get sessionId() {
    return this._sessionId;
  }

  /** The highest segment id of any final emitted; -1 before the first. Sent as resume_after. */
  get lastSegmentId() {
    return this._highest;
  }

  /** Every final emitted so far, in the order emitted. */
  get finals() {
    return this._finals.slice();
  }

  /** The current underlying WebSocket (null between connections). For diagnostics and tests. */
  get socket() {
    return this._ws;
  }

  /** Add a listener that receives the event's detail; returns a function that removes it. */
  listen(type, listener) {
    const wrapped = (event) => listener(event.detail, event);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  /** Close for good: no reconnect; a pending connect() or end() rejects. Sends 'close' once. */
  close(code = 1000, reason = "closed by client") {
    this._terminate({ code, reason, byClient: true });
  }

  // --- subclass hooks ----------------------------------------------------------------------------
  _socketUrl() {
    throw new Error("abstract");
  }
  _protocols() {
    return []; // WebSocket subprotocols to request
  }
  _handshakeMessage() {
    return null; // text to send once the socket opens
  }
  _handshakeType() {
    throw new Error("abstract");
  }
  _isFatal(code) {
    return FATAL_CLOSE_CODES.includes(code);
  }
  _onLive() {}
  _onEnd(_end) {}
  _onTerminate(_error) {}

  // --- lifecycle ---------------------------------------------------------------------------------
  async _start() {
    if (this._state !== "idle") throw new Error(`connect() was already called (state: ${this._state})`);
    this._state = "connecting";
    try {
      if (!this._WebSocket) this._WebSocket = await defaultWebSocket();
      if (this._state === "closed") throw new Error("closed before connecting");
      return await this._open();
    } catch (error) {
      this._terminate({ code: error.closeCode ?? 1006, reason: error.message, error });
      throw error;
    }
  }

  /** Opens one socket; resolves with the handshake reply's detail, rejects when that fails. */
  _open() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        const protocols = this._protocols();
        ws = protocols.length ? new this._WebSocket(this._socketUrl(), protocols) : new this._WebSocket(this._socketUrl());
      } catch (error) {
        reject(withCode(error, 1006));
        return;
      }
      ws.binaryType = "arraybuffer";
      this._ws = ws;
      this._live = false;
      const timer = setTimeout(() => {
        this._failHandshake(ws, withCode(new Error(`no ${this._handshakeType()} reply within ${this._readyTimeoutMs} ms`), 1006));
        safeClose(ws, 1000, "handshake timeout");
      }, this._readyTimeoutMs);
      this._handshake = { ws, resolve, reject, timer };
      ws.onopen = () => {
        const text = this._handshakeMessage();
        if (text !== null) ws.send(text);
      };
      ws.onmessage = (event) => this._receive(ws, event.data);
      // A 'close' event follows every error and decides; Node's `ws` says why (e.g. "Unexpected
      // server response: 404"), browsers do not.
      let why = "";
      ws.onerror = (event) => {
        why = (event && (event.message || (event.error && event.error.message))) || "";
      };
      ws.onclose = (event) => this._closed(ws, event.code, event.reason || why);
    });
  }

  _failHandshake(ws, error) {
    const handshake = this._handshake;
    if (!handshake || handshake.ws !== ws) return;
    clearTimeout(handshake.timer);
    this._handshake = null;
    if (this._ws === ws) this._ws = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    handshake.reject(error);
  }

  _closed(ws, code, reason) {
    if (this._handshake && this._handshake.ws === ws) {
      const why = reason ? `${code} ${reason}` : `${code}`;
      this._failHandshake(ws, withCode(new Error(`connection closed before ${this._handshakeType()} (${why})`), code, reason));
      return;
    }
    if (ws !== this._ws) return; // an old socket we already moved on from
    this._ws = null;
    this._live = false;
    if (this._state === "closed") return;
    this._retry(code, reason || "connection lost");
  }

  /** Drop a live socket that is no use any more (it stalled) and reconnect as if it had closed. */
  _abandon(ws, reason) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    if (typeof ws.terminate === "function") ws.terminate(); // `ws`: no closing handshake to wait for
    else safeClose(ws, 1000, reason);
    this._closed(ws, 1006, reason);
  }

  /** Reconnect with exponential backoff and jitter until a socket is live or we must stop. */
  async _retry(code, reason) {
    const policy = this._reconnect;
    this._state = "reconnecting";
    for (;;) {
      if (this._state === "closed") return;
      if (!policy.enabled || this._isFatal(code)) {
        this._terminate({ code, reason });
        return;
      }
      this._attempt += 1;
      if (this._attempt > policy.maxAttempts) {
        const message = `gave up reconnecting after ${policy.maxAttempts} attempt(s); last close ${code} ${reason}`.trim();
        this._emitError("reconnect_failed", message);
        this._terminate({ code, reason: message });
        return;
      }
      const base = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** (this._attempt - 1));
      const delayMs = Math.round(base * (0.5 + Math.random() * 0.5)); // jitter: a restarted server is not stormed
      this._emit("reconnecting", { attempt: this._attempt, delayMs, code, reason });
      await new Promise((wake) => {
        this._sleep = { timer: setTimeout(wake, delayMs), wake };
      });
      this._sleep = null;
      if (this._state === "closed") return;
      try {
        await this._open();
        return; // _handshakeDone() emitted 'reconnected'
      } catch (error) {
        if (error.fatal) {
          this._terminate({ code: error.closeCode ?? 1006, reason: error.message, error });
          return;
        }
        code = error.closeCode ?? 1006;
        reason = error.closeReason || error.message;
      }
    }
  }

  _handshakeDone(ws, message) {
    const handshake = this._handshake;
    if (!handshake || handshake.ws !== ws) return;
    clearTimeout(handshake.timer);
    this._handshake = null;
    const reconnected = this._connectCount > 0;
    this._connectCount += 1;
    const sessionId = typeof message.session_id === "string" && SESSION_ID.test(message.session_id) ? message.session_id : null;
    if (reconnected && !sessionId) {
      // An older server without sessions: the new stream starts over (segment ids restart at 0).
      this._emitError("resume_unsupported", "the server does not resume sessions: finals of the lost connection may be missing and segment ids restart");
      this._seen.clear();
      this._highest = -1;
    }
    if (sessionId) this._sessionId = sessionId;
    this._live = true;
    this._state = "open";
    const detail = { sessionId: this._sessionId, reconnected, resumed: message.resumed === true, raw: message };
    const attempt = this._attempt;
    this._attempt = 0;
    this._onLive(); // buffered audio goes out before any listener runs
    handshake.resolve(detail);
    this._emit(this._handshakeType(), detail);
    if (reconnected && this._state !== "closed") {
      this._emit("reconnected", { attempt, sessionId: this._sessionId, resumeAfter: this._resumeAfterSent });
    }
  }

  _terminate({ code, reason, error = null, byClient = false }) {
    if (this._state === "closed") return;
    this._state = "closed";
    if (this._sleep) {
      clearTimeout(this._sleep.timer);
      this._sleep.wake();
    }
    const ws = this._ws;
    this._ws = null;
    this._live = false;
    if (this._handshake) this._failHandshake(this._handshake.ws, withCode(new Error(reason || "closed"), code));
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      safeClose(ws, byClient ? code : 1000, byClient ? reason : "done");
    }
    this._onTerminate(error ?? new Error(reason ? `connection closed: ${reason}` : "connection closed"));
    this._emit("close", { code, reason, byClient });
  }

  // --- inbound -----------------------------------------------------------------------------------
  /** Handles one server message. Never throws: anything malformed becomes an 'error' event. */
  _receive(ws, data) {
    if (ws !== this._ws) return;
    try {
      this._dispatch(ws, data);
    } catch (error) {
      this._emitError("client_bug", `failed to handle a server message: ${error && error.message}`);
    }
  }

  _dispatch(ws, data) {
    if (typeof data !== "string") {
      this._emitError("bad_message", "server sent a binary message; expected JSON text");
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this._emitError("bad_message", `server sent text that is not JSON: ${preview(data)}`);
      return;
    }
    if (message === null || typeof message !== "object" || Array.isArray(message)) {
      this._emitError("bad_message", `server message is not a JSON object: ${preview(data)}`);
      return;
    }
    const type = message.type;
    if (type === this._handshakeType()) {
      if (this._handshake && this._handshake.ws === ws) this._handshakeDone(ws, message);
      else this._emitError("bad_message", `unexpected '${type}' message`, message);
    } else if (type === "partial") {
      this._onPartial(message);
    } else if (type === "final") {
      this._onFinal(message, false);
    } else if (type === "end") {
      this._onEndMessage(message);
    } else if (type === "error") {
      this._onServerError(ws, message);
    } else {
      this._emitError("bad_message", `unknown server message type ${JSON.stringify(type)}: ${preview(data)}`, message);
    }
  }

  _onPartial(message) {
    const problem = checkFields(message, { segment_id: "segment id", text: "string" });
    if (problem) {
      this._emitError("bad_message", `partial ${problem}`, message);
      return;
    }
    if (this._seen.has(message.segment_id)) return; // its final is already out: a stale partial
    const stable = typeof message.stable === "string" ? message.stable : "";
    const unstable = typeof message.unstable === "string" ? message.unstable : "";
    this._emit("partial", {
      sessionId: this._sessionId,
      segmentId: message.segment_id,
      text: joinText(stable, unstable) || message.text.trim(),
      stable,
      unstable,
      delta: message.text,
      startMs: numberOrNull(message.start_ms),
      endMs: numberOrNull(message.end_ms),
      mode: typeof message.mode === "string" ? message.mode : null,
      raw: message,
    });
  }

  /** Emits a final unless its segment id was emitted before. Returns the final, or null. */
  _onFinal(message, fromEnd) {
    const hasText = typeof message.final_text === "string" || typeof message.text === "string";
    const problem = checkFields(message, { segment_id: "segment id" }) || (hasText ? null : "has no final_text");
    if (problem) {
      this._emitError("bad_message", `final ${problem}`, message);
      return null;
    }
    const id = message.segment_id;
    if (this._seen.has(id)) return null; // a replay of one we have: never emit a final twice
    this._seen.add(id);
    if (id > this._highest) this._highest = id;
    const final = {
      sessionId: typeof message.session_id === "string" ? message.session_id : this._sessionId,
      segmentId: id,
      text: typeof message.final_text === "string" ? message.final_text : message.text.trim(),
      startMs: numberOrNull(message.start_ms),
      endMs: numberOrNull(message.end_ms),
      endReason: typeof message.end_reason === "string" ? message.end_reason : null,
      replayed: message.replayed === true,
      fromEnd,
      error: typeof message.error === "string" ? message.error : null,
      raw: message,
    };
    this._finals.push(final);
    this._emit("final", final);
    return final;
  }

  _onEndMessage(message) {
    if (!Array.isArray(message.segments)) {
      this._emitError("bad_message", "end reply has no segments list", message);
      return;
    }
    // Offline mode delivers its finals only here; elsewhere these are finals already emitted.
    for (const segment of message.segments) {
      if (segment && typeof segment === "object" && !this._seen.has(segment.segment_id)) {
        this._onFinal({ ...segment, session_id: message.session_id }, true);
      }
    }
    const segments = this._finals.slice().sort((a, b) => a.segmentId - b.segmentId);
    const end = { sessionId: this._sessionId, segments, text: segments.map((s) => s.text).filter(Boolean).join(" "), raw: message };
    this._emit("end", end);
    this._onEnd(end);
  }

  _onServerError(ws, message) {
    const code = typeof message.code === "string" ? message.code : "server_error";
    const text = typeof message.message === "string" ? message.message : typeof message.error === "string" ? message.error : "(no message)";
    this._emitError(code, text, message, true);
    if (this._handshake && this._handshake.ws === ws && code !== "busy") {
      // The server refused our settings: retrying with the same ones cannot succeed. ('busy'
      // is followed by close 1013, which is retried.)
      const error = withCode(new Error(`server refused the stream: ${code}: ${text}`), 1008);
      error.fatal = true;
      error.code = code;
      this._failHandshake(ws, error);
      safeClose(ws, 1000, "refused");
    }
  }

  // --- outbound events ---------------------------------------------------------------------------
  _emit(type, detail) {
    this.dispatchEvent(makeEvent(type, detail));
  }

  _emitError(code, message, raw = null, fromServer = false) {
    this._emit("error", { code, message, fromServer, raw });
  }
}

// ------------------------------------------------------------------------------------------------
// CaptionClient: stream audio, receive captions.
// ------------------------------------------------------------------------------------------------

export class CaptionClient extends CaptionConnection {
  /**
   * @param {string} url ws://host:port/ of the caption server (http(s):// is accepted and converted)
   * @param {object} [options] see livecaption.d.ts (CaptionClientOptions)
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
      if (typeof options.sessionId !== "string" || !SESSION_ID.test(options.sessionId)) {
        throw new RangeError(`option sessionId must be 1..64 characters of A-Z a-z 0-9 _ -; got ${JSON.stringify(options.sessionId)}`);
      }
      this._sessionId = options.sessionId;
    }
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
    this._watchdog = null; // interval that notices a socket the server stopped draining
    this._sentBytes = 0; // bytes handed to the live socket (to tell drained from queued)
    const maxBufferedS = positiveNumber(options.maxBufferedAudioS ?? 30, "maxBufferedAudioS");
    this._maxPendingBytes = Math.round(maxBufferedS * this._audioFs) * 2;
    this._pending = []; // PCM frames (Uint8Array) waiting for a live socket
    this._pendingBytes = 0;
    this._droppedBytes = 0;
    this._resamplers = new Map();
    this._ending = false;
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

  /** Connect and configure the stream; resolves on the server's 'ready' (rejects if that fails). */
  connect() {
    return this._start();
  }

  /**
   * Queue PCM for the server. Int16Array, or Float32Array in [-1, 1] (clipped); `sampleRate`
   * defaults to the inputSampleRate option. Sent at once while connected, otherwise buffered (up
   * to maxBufferedAudioS; the oldest audio is dropped beyond that) and sent in order on reconnect.
   */
  sendPcm(samples, sampleRate = this._inputRate) {
    if (this._state === "closed") throw new Error("sendPcm(): the client is closed");
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
   */
  end({ timeoutMs = 120000 } = {}) {
    if (this._endWaiter) return this._endWaiter.promise;
    if (this._state === "idle") return Promise.reject(new Error("end(): connect() was not called"));
    if (this._state === "closed") return Promise.reject(new Error("end(): the client is closed"));
    let resolve, reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const timer = setTimeout(() => {
      this._terminate({ code: 1000, reason: `no end reply within ${timeoutMs} ms`, error: new Error(`end(): no end reply within ${timeoutMs} ms`) });
    }, timeoutMs);
    this._endWaiter = { promise, resolve, reject, timer };
    for (const resampler of this._resamplers.values()) this._queuePcm(floatToInt16(resampler.flush()));
    this._resamplers.clear();
    this._ending = true;
    if (this._state === "open") this._state = "ending";
    if (this._isLive()) this._send(JSON.stringify({ is_speaking: false }));
    return promise;
  }

  // --- internals ---------------------------------------------------------------------------------
  _socketUrl() {
    return this._url;
  }

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

  _send(data) {
    this._sentBytes += typeof data === "string" ? new TextEncoder().encode(data).byteLength : data.byteLength;
    this._ws.send(data);
  }

  _onLive() {
    this._sentBytes = this._ws.bufferedAmount || 0;
    this._startWatchdog(this._ws);
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
    if (typeof this._watchdog.unref === "function") this._watchdog.unref(); // never keeps Node running by itself
  }

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
        const oldest = this._pending.shift();
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

  _onEnd(end) {
    const waiter = this._endWaiter;
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(end);
    }
    this._terminate({ code: 1000, reason: "end of stream" });
  }

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

// ------------------------------------------------------------------------------------------------
// CaptionSubscriber: follow a session's captions (overlays, other displays).
// ------------------------------------------------------------------------------------------------

export class CaptionSubscriber extends CaptionConnection {
  /**
   * @param {string} url the caption server, e.g. ws://host:port/ (the path becomes /subscribe)
   * @param {string} sessionId the session to follow; it need not exist yet
   * @param {object} [options] {token, reconnect, WebSocket, readyTimeoutMs}
   */
  constructor(url, sessionId, options = {}) {
    super(options);
    if (typeof sessionId !== "string" || !SESSION_ID.test(sessionId)) {
      throw new RangeError(`sessionId must be 1..64 characters of A-Z a-z 0-9 _ -; got ${JSON.stringify(sessionId)}`);
    }
    this._sessionId = sessionId;
    const target = new URL(socketUrl(url, options.token));
    if (!target.pathname.endsWith("/subscribe")) target.pathname = "/subscribe";
    target.searchParams.set("session", sessionId);
    this._url = target.toString();
  }

  /** Connect; resolves on the server's 'subscribed' reply. Stored finals follow as 'final' events. */
  connect() {
    return this._start();
  }

  _socketUrl() {
    return this._url;
  }

  _handshakeType() {
    return "subscribed";
  }

  _onEnd() {
    // A stream of the session ended; the session may go on with another, so keep listening.
  }

  _isFatal(code) {
    // A display dropped for reading too slowly (1008) may come back: it only reads. (A refused
    // token is an error reply before 'subscribed', which stops it regardless.)
    return code !== 1008 && FATAL_CLOSE_CODES.includes(code);
  }
}

// ------------------------------------------------------------------------------------------------
// Audio helpers (exported: pages and tests use them too).
// ------------------------------------------------------------------------------------------------

/** Float samples in [-1, 1] (clipped; NaN becomes 0) to 16-bit integers. */
export function floatToInt16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i];
    const v = s > 1 ? 1 : s < -1 ? -1 : s === s ? s : 0;
    out[i] = v < 0 ? Math.round(v * 32768) : Math.round(v * 32767);
  }
  return out;
}

/** 16-bit integers to floats in [-1, 1). */
export function int16ToFloat(samples) {
  const out = new Float32Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = samples[i] / 32768;
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A fresh little-endian byte copy (callers may reuse their arrays; buffered audio must not change). */
export function int16ToBytesLE(samples) {
  const bytes = new Uint8Array(samples.length * 2);
  if (LITTLE_ENDIAN) {
    bytes.set(new Uint8Array(samples.buffer, samples.byteOffset, samples.length * 2));
  } else {
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < samples.length; i++) view.setInt16(i * 2, samples[i], true);
  }
  return bytes;
}

/**
 * Streaming band-limited resampler (windowed sinc, Blackman window). Feed chunks of any size to
 * process(); the output is the same as resampling the whole signal at once. Downsampling low-passes
 * below the new Nyquist frequency first, so high frequencies do not fold into speech.
 */
export class Resampler {
  constructor(inputRate, outputRate, { zeroCrossings = 8 } = {}) {
    this.inputRate = positiveNumber(inputRate, "inputRate");
    this.outputRate = positiveNumber(outputRate, "outputRate");
    this._step = inputRate / outputRate; // input samples per output sample
    // Cutoff in cycles per input sample: below both Nyquist frequencies, with a transition band.
    this._bandwidth = 2 * 0.5 * Math.min(1, outputRate / inputRate) * 0.92; // 2 * cutoff
    this._half = Math.ceil(zeroCrossings / this._bandwidth); // kernel half-width in input samples
    this.reset();
  }

  reset() {
    // `half` zeros of history centre the first output on the first input sample.
    this._history = new Float32Array(this._half);
    this._time = this._half; // position of the next output, in input samples from _history[0]
  }

  /** Resample one chunk; returns the output samples now computable (the rest waits for more input). */
  process(input) {
    const data = new Float32Array(this._history.length + input.length);
    data.set(this._history);
    data.set(input, this._history.length);
    const half = this._half;
    const last = data.length - 1;
    // Outputs at t, t + step, ... while floor(t) + half <= last (one spare for rounding).
    const count = Math.max(0, Math.ceil((last - half + 1 - this._time) / this._step) + 1);
    const out = new Float32Array(count);
    let n = 0;
    let t = this._time;
    while (Math.floor(t) + half <= last && n < count) {
      const base = Math.floor(t);
      let acc = 0;
      let weights = 0;
      for (let i = base - half + 1; i <= base + half; i++) {
        const w = this._kernel(i - t);
        acc += data[i] * w;
        weights += w;
      }
      out[n++] = weights !== 0 ? acc / weights : 0; // normalised: DC passes exactly
      t += this._step;
    }
    const keep = Math.min(data.length, Math.max(0, Math.floor(t) - half + 1));
    this._history = data.slice(keep);
    this._time = t - keep;
    return n === out.length ? out : out.subarray(0, n);
  }

  /** The tail held back for look-ahead (the input padded with silence); then starts afresh. */
  flush() {
    const tail = this.process(new Float32Array(this._half + Math.ceil(this._step)));
    this.reset();
    return tail;
  }

  _kernel(distance) {
    const x = distance / this._half;
    if (x <= -1 || x >= 1) return 0;
    const window = 0.42 + 0.5 * Math.cos(Math.PI * x) + 0.08 * Math.cos(2 * Math.PI * x);
    const arg = this._bandwidth * distance;
    const sinc = arg === 0 ? 1 : Math.sin(Math.PI * arg) / (Math.PI * arg);
    return sinc * window;
  }
}

/**
 * Decode a PCM WAV file (16-bit, any rate, any channel count; channels are averaged to mono).
 * @param {ArrayBuffer|ArrayBufferView} bytes
 * @returns {{sampleRate: number, channels: number, samples: Int16Array}}
 */
export function decodeWav(bytes) {
  const buffer = bytes instanceof ArrayBuffer ? bytes : bytes.buffer;
  const offset = bytes instanceof ArrayBuffer ? 0 : bytes.byteOffset;
  const length = bytes.byteLength;
  const view = new DataView(buffer, offset, length);
  const tag = (at) => String.fromCharCode(view.getUint8(at), view.getUint8(at + 1), view.getUint8(at + 2), view.getUint8(at + 3));
  if (length < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("not a WAV file (no RIFF/WAVE header)");
  let format = null;
  let pos = 12;
  while (pos + 8 <= length) {
    const id = tag(pos);
    const size = view.getUint32(pos + 4, true);
    const body = pos + 8;
    if (id === "fmt ") {
      let code = view.getUint16(body, true);
      if (code === 0xfffe && size >= 26) code = view.getUint16(body + 24, true); // WAVE_FORMAT_EXTENSIBLE
      format = { code, channels: view.getUint16(body + 2, true), sampleRate: view.getUint32(body + 4, true), bits: view.getUint16(body + 14, true) };
    } else if (id === "data") {
      if (!format) throw new Error("WAV data chunk before its fmt chunk");
      if (format.code !== 1 || format.bits !== 16) throw new Error(`only 16-bit PCM WAV is supported (format ${format.code}, ${format.bits} bits)`);
      if (format.channels < 1) throw new Error("WAV file has no channels");
      const frames = Math.floor(Math.min(size, length - body) / (2 * format.channels));
      const samples = new Int16Array(frames);
      for (let i = 0; i < frames; i++) {
        let sum = 0;
        for (let c = 0; c < format.channels; c++) sum += view.getInt16(body + (i * format.channels + c) * 2, true);
        samples[i] = Math.round(sum / format.channels);
      }
      return { sampleRate: format.sampleRate, channels: format.channels, samples };
    }
    pos = body + size + (size % 2); // chunks are word-aligned
  }
  throw new Error("WAV file has no data chunk");
}

/** Hotwords as the server's start message wants them: FunASR's JSON string '{"word": weight}'. */
export function formatHotwords(hotwords) {
  if (hotwords === undefined || hotwords === null || hotwords === "") return "";
  if (typeof hotwords === "string") return hotwords;
  if (Array.isArray(hotwords)) {
    if (!hotwords.every((w) => typeof w === "string")) throw new TypeError("option hotwords: a list must hold only strings");
    return hotwords.length ? JSON.stringify(Object.fromEntries(hotwords.map((w) => [w, DEFAULT_HOTWORD_WEIGHT]))) : "";
  }
  if (typeof hotwords === "object") return Object.keys(hotwords).length ? JSON.stringify(hotwords) : "";
  throw new TypeError("option hotwords must be an object {word: weight}, a list of words, or a string");
}

// ------------------------------------------------------------------------------------------------
// Small helpers.
// ------------------------------------------------------------------------------------------------

async function defaultWebSocket() {
  if (typeof globalThis.WebSocket === "function") return globalThis.WebSocket;
  const name = "ws"; // Node without a built-in WebSocket; a variable keeps bundlers from resolving it
  try {
    const module = await import(/* webpackIgnore: true */ /* @vite-ignore */ name);
    return module.WebSocket ?? module.default;
  } catch (error) {
    throw new Error(`no WebSocket available: this platform has none and the 'ws' package could not be loaded (${error.message}); install it (npm install ws) or pass the WebSocket option`);
  }
}

function socketUrl(url, token) {
  let target;
  try {
    target = new URL(String(url));
  } catch {
    throw new TypeError(`not a URL: ${JSON.stringify(url)}`);
  }
  if (target.protocol === "http:") target.protocol = "ws:";
  else if (target.protocol === "https:") target.protocol = "wss:";
  if (target.protocol !== "ws:" && target.protocol !== "wss:") throw new TypeError(`url must be ws:// or wss://; got ${target.protocol}`);
  if (token !== undefined && token !== null && token !== "") {
    if (typeof token !== "string") throw new TypeError("option token must be a string");
    target.searchParams.set("token", token);
  }
  return target.toString();
}

function reconnectPolicy(value) {
  if (value === false) return { ...DEFAULT_RECONNECT, enabled: false };
  if (value === undefined || value === true) return { ...DEFAULT_RECONNECT };
  if (typeof value !== "object" || value === null) throw new TypeError("option reconnect must be an object or a boolean");
  const policy = { ...DEFAULT_RECONNECT, ...value };
  positiveNumber(policy.initialDelayMs, "reconnect.initialDelayMs");
  positiveNumber(policy.maxDelayMs, "reconnect.maxDelayMs");
  if (!(policy.maxAttempts >= 0)) throw new RangeError(`reconnect.maxAttempts must be >= 0; got ${policy.maxAttempts}`);
  policy.enabled = policy.enabled !== false;
  return policy;
}

function positiveNumber(value, name) {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive number; got ${JSON.stringify(value)}`);
  }
  return value;
}

function optionalNumber(value, name) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value)) throw new TypeError(`option ${name} must be a number; got ${JSON.stringify(value)}`);
  return value;
}

function optionalString(value, name) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw new TypeError(`option ${name} must be a string; got ${JSON.stringify(value)}`);
  return value;
}

function optionalBoolean(value, name) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "boolean") throw new TypeError(`option ${name} must be true or false; got ${JSON.stringify(value)}`);
  return value;
}

function checkFields(message, fields) {
  for (const [key, kind] of Object.entries(fields)) {
    const value = message[key];
    if (kind === "segment id" && !(Number.isInteger(value) && value >= 0)) return `has no valid ${key} (got ${JSON.stringify(value)})`;
    if (kind === "string" && typeof value !== "string") return `has no ${key} string (got ${JSON.stringify(value)})`;
  }
  return null;
}

function numberOrNull(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

const CJK = /[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]/;

function joinText(a, b) {
  if (!a) return b;
  if (!b) return a;
  return CJK.test(a[a.length - 1]) || CJK.test(b[0]) ? a + b : `${a} ${b}`;
}

function preview(text) {
  const flat = String(text).replace(/\s+/g, " ");
  return flat.length > 80 ? `${JSON.stringify(flat.slice(0, 80))}…` : JSON.stringify(flat);
}

function withCode(error, code, reason = "") {
  error.closeCode = code;
  error.closeReason = reason;
  return error;
}

function safeClose(ws, code, reason) {
  try {
    ws.close(code, reason);
  } catch {
    try {
      ws.close();
    } catch {
      // already closed
    }
  }
}

class DetailEvent extends Event {
  constructor(type, detail) {
    super(type);
    this.detail = detail;
  }
}

function makeEvent(type, detail) {
  return typeof CustomEvent === "function" ? new CustomEvent(type, { detail }) : new DetailEvent(type, detail);
}
