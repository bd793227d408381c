/** The base of CaptionClient and CaptionSubscriber: one logical connection that survives dropped sockets. */
import { reconnectPolicy, positiveNumber } from "./options.js";
import { FATAL_CLOSE_CODES, isSessionId, parseServerMessage, preview, readFinal, readPartial, readServerError } from "./protocol.js";
import { defaultWebSocket, safeClose, withCode } from "./socket.js";

/** @typedef {import("../livecaption.js").ConnectionOptions} ConnectionOptions */
/** @typedef {import("../livecaption.js").ConnectionState} ConnectionState */
/** @typedef {import("../livecaption.js").EndDetail} EndDetail */
/** @typedef {import("../livecaption.js").FinalDetail} FinalDetail */
/** @typedef {import("../livecaption.js").ReadyDetail} ReadyDetail */
/** @typedef {import("../livecaption.js").WebSocketConstructor} WebSocketConstructor */
/** @typedef {import("../livecaption.js").CaptionEventMap & import("../livecaption.js").SubscriberEventMap} EventMap */
/** @typedef {import("./protocol.js").Message} Message */
/** @typedef {import("./socket.js").CloseError} CloseError */
/** @typedef {WebSocket & {terminate?: () => void}} Socket the browser's WebSocket, or the `ws` package's (which can terminate) */
/** @typedef {{ws: Socket, resolve: (detail: ReadyDetail) => void, reject: (error: Error) => void, timer: ReturnType<typeof setTimeout>}} Handshake */

/** Shared by CaptionClient and CaptionSubscriber: sockets, reconnects, parsing, dedupe, events. */
export class CaptionConnection extends EventTarget {
  /** @param {ConnectionOptions} options */
  constructor(options) {
    super();
    this._reconnect = reconnectPolicy(options.reconnect);
    // Generous: on a resume the server first finalizes the old connection's open segment.
    this._readyTimeoutMs = positiveNumber(options.readyTimeoutMs ?? 30000, "readyTimeoutMs");
    if (options.WebSocket !== undefined && typeof options.WebSocket !== "function") {
      throw new TypeError("option WebSocket must be a WebSocket constructor");
    }
    /** @type {WebSocketConstructor | null} */
    this._WebSocket = options.WebSocket ?? null;
    /** @type {ConnectionState} */
    this._state = "idle";
    /** @type {Socket | null} */
    this._ws = null;
    this._live = false; // the current socket got its handshake reply
    /** @type {Handshake | null} while a socket waits for its handshake reply */
    this._handshake = null;
    this._attempt = 0;
    /** @type {{timer: ReturnType<typeof setTimeout>, wake: () => void} | null} while waiting to retry */
    this._sleep = null;
    /** @type {string | null} */
    this._sessionId = null;
    /** @type {Set<number>} segment ids of every final emitted */
    this._seen = new Set();
    this._highest = -1;
    /** @type {FinalDetail[]} every final emitted, in order */
    this._finals = [];
    this._connectCount = 0;
    /** @type {number | null} resume_after of the latest handshake (CaptionClient) */
    this._resumeAfterSent = null;
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

  /**
   * Add a listener that receives the event's detail; returns a function that removes it.
   * @param {string} type
   * @param {(detail: any, event: CustomEvent) => void} listener
   * @returns {() => void}
   */
  listen(type, listener) {
    const wrapped = (/** @type {Event} */ event) => listener(/** @type {CustomEvent} */ (event).detail, /** @type {CustomEvent} */ (event));
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  /**
   * Whether the client is done for good. A method, not a `_state` comparison: the state changes
   * under an await or a callback, which a type checker's narrowing cannot see.
   */
  _isClosed() {
    return this._state === "closed";
  }

  /** Close for good: no reconnect; a pending connect() or end() rejects. Sends 'close' once. */
  close(code = 1000, reason = "closed by client") {
    this._terminate({ code, reason, byClient: true });
  }

  // --- subclass hooks ----------------------------------------------------------------------------
  /** @returns {string} */
  _socketUrl() {
    throw new Error("abstract");
  }
  /** @returns {string[]} WebSocket subprotocols to request */
  _protocols() {
    return [];
  }
  /** @returns {string | null} text to send once the socket opens */
  _handshakeMessage() {
    return null;
  }
  /** @returns {"ready" | "subscribed"} */
  _handshakeType() {
    throw new Error("abstract");
  }
  /** @param {number} code */
  _isFatal(code) {
    return FATAL_CLOSE_CODES.includes(code);
  }
  _onLive() {}
  /** A well-formed message came from the server (the server is making progress). */
  _onReply() {}
  /** @param {EndDetail} _end */
  _onEnd(_end) {}
  /** @param {Error} _error */
  _onTerminate(_error) {}

  // --- lifecycle ---------------------------------------------------------------------------------
  /** @returns {Promise<ReadyDetail>} */
  async _start() {
    if (this._state !== "idle") throw new Error(`connect() was already called (state: ${this._state})`);
    this._state = "connecting";
    try {
      if (!this._WebSocket) this._WebSocket = await defaultWebSocket();
      if (this._isClosed()) throw new Error("closed before connecting");
      return await this._open();
    } catch (caught) {
      const error = /** @type {CloseError} */ (caught);
      this._terminate({ code: error.closeCode ?? 1006, reason: error.message, error });
      throw error;
    }
  }

  /**
   * Opens one socket; resolves with the handshake reply's detail, rejects when that fails.
   * @returns {Promise<ReadyDetail>}
   */
  _open() {
    return new Promise((resolve, reject) => {
      const WebSocketClass = /** @type {WebSocketConstructor} */ (this._WebSocket); // set by _start()
      /** @type {Socket} */
      let ws;
      try {
        const protocols = this._protocols();
        ws = protocols.length ? new WebSocketClass(this._socketUrl(), protocols) : new WebSocketClass(this._socketUrl());
      } catch (error) {
        reject(withCode(/** @type {Error} */ (error), 1006));
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
      ws.onerror = (/** @type {Event & {message?: string, error?: Error}} */ event) => {
        why = (event && (event.message || (event.error && event.error.message))) || "";
      };
      ws.onclose = (event) => this._closed(ws, event.code, event.reason || why);
    });
  }

  /**
   * @param {Socket} ws
   * @param {Error} error
   */
  _failHandshake(ws, error) {
    const handshake = this._handshake;
    if (!handshake || handshake.ws !== ws) return;
    clearTimeout(handshake.timer);
    this._handshake = null;
    if (this._ws === ws) this._ws = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    handshake.reject(error);
  }

  /**
   * @param {Socket} ws
   * @param {number} code
   * @param {string} reason
   */
  _closed(ws, code, reason) {
    if (this._handshake && this._handshake.ws === ws) {
      const why = reason ? `${code} ${reason}` : `${code}`;
      this._failHandshake(ws, withCode(new Error(`connection closed before ${this._handshakeType()} (${why})`), code, reason));
      return;
    }
    if (ws !== this._ws) return; // an old socket we already moved on from
    this._ws = null;
    this._live = false;
    if (this._isClosed()) return;
    this._retry(code, reason || "connection lost");
  }

  /**
   * Drop a live socket that is no use any more (it stalled) and reconnect as if it had closed.
   * @param {Socket} ws
   * @param {string} reason
   */
  _abandon(ws, reason) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    if (typeof ws.terminate === "function") ws.terminate(); // `ws`: no closing handshake to wait for
    else safeClose(ws, 1000, reason);
    this._closed(ws, 1006, reason);
  }

  /**
   * Reconnect with exponential backoff and jitter until a socket is live or we must stop.
   * @param {number} code
   * @param {string} reason
   */
  async _retry(code, reason) {
    const policy = this._reconnect;
    this._state = "reconnecting";
    for (;;) {
      if (this._isClosed()) return;
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
      await new Promise((/** @type {(value?: unknown) => void} */ wake) => {
        this._sleep = { timer: setTimeout(wake, delayMs), wake };
      });
      this._sleep = null;
      if (this._isClosed()) return;
      try {
        await this._open();
        return; // _handshakeDone() emitted 'reconnected'
      } catch (caught) {
        const error = /** @type {CloseError} */ (caught);
        if (error.fatal) {
          this._terminate({ code: error.closeCode ?? 1006, reason: error.message, error });
          return;
        }
        code = error.closeCode ?? 1006;
        reason = error.closeReason || error.message;
      }
    }
  }

  /**
   * @param {Socket} ws
   * @param {Message} message
   */
  _handshakeDone(ws, message) {
    const handshake = this._handshake;
    if (!handshake || handshake.ws !== ws) return;
    clearTimeout(handshake.timer);
    this._handshake = null;
    const reconnected = this._connectCount > 0;
    this._connectCount += 1;
    const sessionId = isSessionId(message.session_id) ? message.session_id : null;
    if (reconnected && !sessionId) {
      // An older server without sessions: the new stream starts over (segment ids restart at 0).
      this._emitError("resume_unsupported", "the server does not resume sessions: finals of the lost connection may be missing and segment ids restart");
      this._seen.clear();
      this._highest = -1;
    }
    if (sessionId) this._sessionId = sessionId;
    this._live = true;
    this._state = "open";
    /** @type {ReadyDetail} */
    const detail = { sessionId: this._sessionId, reconnected, resumed: message.resumed === true, raw: message };
    const attempt = this._attempt;
    this._attempt = 0;
    this._onLive(); // buffered audio goes out before any listener runs
    handshake.resolve(detail);
    this._emit(this._handshakeType(), detail);
    if (reconnected && !this._isClosed()) {
      this._emit("reconnected", { attempt, sessionId: this._sessionId, resumeAfter: this._resumeAfterSent });
    }
  }

  /** @param {{code: number, reason: string, error?: Error | null, byClient?: boolean}} how */
  _terminate({ code, reason, error = null, byClient = false }) {
    if (this._isClosed()) return;
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
  /**
   * Handles one server message. Never throws: anything malformed becomes an 'error' event.
   * @param {Socket} ws
   * @param {unknown} data
   */
  _receive(ws, data) {
    if (ws !== this._ws) return;
    try {
      this._dispatch(ws, data);
    } catch (error) {
      this._emitError("client_bug", `failed to handle a server message: ${error && /** @type {Error} */ (error).message}`);
    }
  }

  /**
   * @param {Socket} ws
   * @param {unknown} data
   */
  _dispatch(ws, data) {
    const { message, problem } = parseServerMessage(data);
    if (problem !== undefined) {
      this._emitError("bad_message", problem);
      return;
    }
    this._onReply();
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

  /** @param {Message} message */
  _onPartial(message) {
    const { partial, problem } = readPartial(message, this._sessionId);
    if (problem !== undefined) {
      this._emitError("bad_message", problem, message);
      return;
    }
    if (this._seen.has(partial.segmentId)) return; // its final is already out: a stale partial
    this._emit("partial", partial);
  }

  /**
   * Emits a final unless its segment id was emitted before. Returns the final, or null.
   * @param {Message} message
   * @param {boolean} fromEnd
   * @returns {FinalDetail | null}
   */
  _onFinal(message, fromEnd) {
    const { final, problem } = readFinal(message, this._sessionId, fromEnd);
    if (problem !== undefined) {
      this._emitError("bad_message", problem, message);
      return null;
    }
    const id = final.segmentId;
    if (this._seen.has(id)) return null; // a replay of one we have: never emit a final twice
    this._seen.add(id);
    if (id > this._highest) this._highest = id;
    this._finals.push(final);
    this._emit("final", final);
    return final;
  }

  /** @param {Message} message */
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
    /** @type {EndDetail} */
    const end = { sessionId: this._sessionId, segments, text: segments.map((s) => s.text).filter(Boolean).join(" "), raw: message };
    this._emit("end", end);
    this._onEnd(end);
  }

  /**
   * @param {Socket} ws
   * @param {Message} message
   */
  _onServerError(ws, message) {
    const { code, text } = readServerError(message);
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
  /**
   * @template {keyof EventMap} K
   * @param {K} type
   * @param {EventMap[K]} detail as livecaption.d.ts declares it for this event
   */
  _emit(type, detail) {
    this.dispatchEvent(makeEvent(type, detail));
  }

  /**
   * @param {string} code
   * @param {string} message
   * @param {unknown} [raw]
   * @param {boolean} [fromServer]
   */
  _emitError(code, message, raw = null, fromServer = false) {
    this._emit("error", { code, message, fromServer, raw });
  }
}

class DetailEvent extends Event {
  /**
   * @param {string} type
   * @param {unknown} detail
   */
  constructor(type, detail) {
    super(type);
    this.detail = detail;
  }
}

/**
 * A CustomEvent where the platform has one (browsers, Node 19+), else an Event with a detail.
 * @param {string} type
 * @param {unknown} detail
 * @returns {Event}
 */
function makeEvent(type, detail) {
  return typeof CustomEvent === "function" ? new CustomEvent(type, { detail }) : new DetailEvent(type, detail);
}
