// Type declarations for livecaption.js (the caption server's client library).
// test/types-check.ts checks them against the implementation (tsc -p client_js).

// Only what is marked `export` is exported: without this line a .d.ts exports every top-level
// declaration, and the base class CaptionConnection (not exported by livecaption.js) with it.
export {};

/** Sample rates the server accepts as `audio_fs`: 8000, 16000, 22050, 44100, 48000. */
export declare const SERVER_SAMPLE_RATES: readonly number[];

/** Close codes after which the client does not reconnect: 1002, 1003, 1007, 1008, 1009, 1010, 4001
 *  (a CaptionSubscriber does reconnect after 1008: the server drops displays that read too slowly). */
export declare const FATAL_CLOSE_CODES: readonly number[];

export type Mode = "2pass" | "online" | "offline";

/** How a dropped connection is retried: delay = min(maxDelayMs, initialDelayMs * 2^(attempt-1)), times 0.5..1 (jitter). */
export interface ReconnectOptions {
  /** Default true. */
  enabled?: boolean;
  /** Default 250. */
  initialDelayMs?: number;
  /** Default 8000. */
  maxDelayMs?: number;
  /** Consecutive failed attempts before giving up ('error' reconnect_failed, then 'close'). Default Infinity. */
  maxAttempts?: number;
}

/** Any WebSocket class with the browser API (the platform's, or the `ws` package's). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

export interface ConnectionOptions {
  /** Sent as the `token` query parameter (for servers with authentication). */
  token?: string;
  /** `false` turns reconnecting off; `true` or omitted uses the defaults. */
  reconnect?: boolean | ReconnectOptions;
  /** WebSocket implementation. Default: globalThis.WebSocket, else the `ws` package (Node). */
  WebSocket?: WebSocketConstructor;
  /** How long a new socket may take to get its ready/subscribed reply. Default 30000 (a resume
   *  first waits for the server to finalize the old connection's open segment). */
  readyTimeoutMs?: number;
}

export interface CaptionClientOptions extends ConnectionOptions {
  /** Default "2pass": partials and a final per segment. "online": append-only partials. "offline": finals only in the end reply. */
  mode?: Mode;
  /** {word: weight 1..100}, a list of words (weight 20), or the server's string forms. */
  hotwords?: Record<string, number> | string[] | string;
  /** Inverse text normalization ("twenty five" -> "25"). Default true. */
  itn?: boolean;
  /** Language code, e.g. "en". Default: the server's. */
  language?: string;
  /** Silence that closes a segment (server: 50..5000). Default: the server's. */
  silenceMs?: number;
  /** Segments are cut at this length (server: 1..its maximum). Default: the server's. */
  maxSegmentS?: number;
  /** How often partials are re-decoded; 0 = no partials. Default: the server's. */
  partialIntervalMs?: number;
  /** Captions session to start or resume (1..64 of A-Z a-z 0-9 _ -). Default: the server names one. */
  sessionId?: string;
  /** Rate of the PCM given to sendPcm(). Default 16000. A rate the server accepts is declared as
   *  audio_fs; any other is resampled to 16 kHz by the library. */
  inputSampleRate?: number;
  /** Echoed by the server in every reply. Default "stream". */
  wavName?: string;
  /** Audio kept while disconnected; beyond it the oldest is dropped (with an 'error' event). Default 30. */
  maxBufferedAudioS?: number;
  /** A connected socket whose server drains none of the queued data for this long is given up
   *  and the client reconnects (half-open TCP connections otherwise hang for minutes). 0 = never.
   *  Default 20000. */
  stallTimeoutMs?: number;
}

export interface ReadyDetail {
  sessionId: string | null;
  /** True on every ready after the first (a reconnect). */
  reconnected: boolean;
  /** The server resumed an existing session. */
  resumed: boolean;
  /** The server's message as received. */
  raw: Record<string, unknown>;
}

export interface PartialDetail {
  sessionId: string | null;
  segmentId: number;
  /** The open segment's whole provisional caption: stable + unstable. */
  text: string;
  /** Words two decodes agreed on; only grows within a segment. */
  stable: string;
  /** The rest of the newest decode; may still change. */
  unstable: string;
  /** The server's `text`: what append-only (FunASR-style) displays add. */
  delta: string;
  startMs: number | null;
  endMs: number | null;
  mode: string | null;
  raw: Record<string, unknown>;
}

/** One segment's final caption. Emitted at most once per segmentId, across reconnects. */
export interface FinalDetail {
  sessionId: string | null;
  segmentId: number;
  text: string;
  /** Where the speech starts and ends on the session's timeline. */
  startMs: number | null;
  endMs: number | null;
  /** "silence" | "max_length" | "end_of_stream" (null when the server did not say). */
  endReason: string | null;
  /** Re-sent by the server after a reconnect (or to a new subscriber). */
  replayed: boolean;
  /** Known only from the end reply (offline mode delivers its finals there). */
  fromEnd: boolean;
  /** Set when decoding failed on the server (text is then empty). */
  error: string | null;
  raw: Record<string, unknown>;
}

export interface EndDetail {
  sessionId: string | null;
  /** Every final emitted by this client, by segment id. */
  segments: FinalDetail[];
  /** The finals' texts joined with spaces. */
  text: string;
  raw: Record<string, unknown>;
}

/**
 * Codes: the server's error codes (docs/protocol.md; `fromServer` true), and the client's own:
 * "bad_message" (a malformed server message, ignored), "audio_dropped" (the reconnect buffer
 * overflowed), "connection_stalled" (the server took no data for stallTimeoutMs; reconnecting),
 * "reconnect_failed", "resume_unsupported" (a server without sessions), "client_bug".
 */
export interface ErrorDetail {
  code: string;
  message: string;
  fromServer: boolean;
  raw: unknown;
}

export interface ReconnectingDetail {
  /** 1 for the first retry after a drop. */
  attempt: number;
  delayMs: number;
  /** Close code of the lost connection (1006 when it just vanished). */
  code: number;
  reason: string;
}

export interface ReconnectedDetail {
  attempt: number;
  sessionId: string | null;
  /** The resume_after sent: the server replays finals after this segment id. */
  resumeAfter: number | null;
}

/** Sent once, when the client is done: after end(), close(), a fatal close code, or giving up. */
export interface CloseDetail {
  code: number;
  reason: string;
  byClient: boolean;
}

export interface CaptionEventMap {
  ready: ReadyDetail;
  partial: PartialDetail;
  final: FinalDetail;
  end: EndDetail;
  error: ErrorDetail;
  reconnecting: ReconnectingDetail;
  reconnected: ReconnectedDetail;
  close: CloseDetail;
}

export interface SubscriberEventMap extends Omit<CaptionEventMap, "ready"> {
  subscribed: ReadyDetail;
}

export type ConnectionState = "idle" | "connecting" | "open" | "ending" | "reconnecting" | "closed";

declare class CaptionConnection<Events> extends EventTarget {
  readonly state: ConnectionState;
  /** The captions session: from the sessionId option, else named by the server's first reply. */
  readonly sessionId: string | null;
  /** Highest segment id of any final emitted; -1 before the first. */
  readonly lastSegmentId: number;
  /** Every final emitted so far, in order. */
  readonly finals: FinalDetail[];
  /** The current underlying WebSocket (null between connections); for diagnostics and tests. */
  readonly socket: WebSocket | null;

  /** Listen with the event's detail; returns a function that removes the listener. */
  listen<K extends keyof Events>(type: K, listener: (detail: Events[K], event: CustomEvent<Events[K]>) => void): () => void;

  addEventListener<K extends keyof Events & string>(
    type: K,
    listener: (event: CustomEvent<Events[K]>) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof Events & string>(
    type: K,
    listener: (event: CustomEvent<Events[K]>) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;

  /** Close for good (no reconnect); a pending connect() or end() rejects; 'close' follows. */
  close(code?: number, reason?: string): void;
}

/** Streams PCM to the server and emits its captions; one client = one stream of one session. */
export declare class CaptionClient extends CaptionConnection<CaptionEventMap> {
  /** @param url ws://host:port/ (or wss://; http(s):// is converted) */
  constructor(url: string, options?: CaptionClientOptions);
  /** The audio_fs declared to the server. */
  readonly sampleRate: number;
  /** PCM bytes waiting for a connection. */
  readonly bufferedBytes: number;
  /** Connects and configures the stream; resolves on 'ready'. Rejects if the first attempt fails
   *  (refused settings, unreachable server): only an established stream is reconnected. */
  connect(): Promise<ReadyDetail>;
  /** Int16Array, or Float32Array in [-1, 1] (clipped), at `sampleRate` (default: inputSampleRate).
   *  Buffered while disconnected and sent in order after reconnecting. Throws after end()/close(). */
  sendPcm(samples: Int16Array | Float32Array, sampleRate?: number): void;
  /** Sends {"is_speaking": false}; resolves with every final once the server's end reply arrives
   *  (reconnecting first if the connection dropped), then closes. Rejects after `timeoutMs`
   *  (default 120000) without any reply from the server; each reply (a final, a partial) restarts it. */
  end(options?: { timeoutMs?: number }): Promise<EndDetail>;
}

/** Follows the captions of a session streamed by someone else (overlays, other displays). It
 *  receives the session's stored finals first (replayed), then live partials, finals and end
 *  replies, and keeps listening across streams and reconnects until close(). */
export declare class CaptionSubscriber extends CaptionConnection<SubscriberEventMap> {
  /** @param url the server, ws://host:port/ (the path becomes /subscribe) */
  constructor(url: string, sessionId: string, options?: ConnectionOptions);
  connect(): Promise<ReadyDetail>;
}

/** Streaming windowed-sinc resampler; chunked output equals whole-signal output. */
export declare class Resampler {
  constructor(inputRate: number, outputRate: number, options?: { zeroCrossings?: number });
  readonly inputRate: number;
  readonly outputRate: number;
  process(input: Float32Array): Float32Array;
  /** The held-back tail (input padded with silence); then starts afresh. */
  flush(): Float32Array;
  reset(): void;
}

export declare function floatToInt16(samples: Float32Array | Float64Array): Int16Array;
export declare function int16ToFloat(samples: Int16Array): Float32Array;
export declare function int16ToBytesLE(samples: Int16Array): Uint8Array;
/** 16-bit PCM WAV, any rate and channel count (averaged to mono). */
export declare function decodeWav(bytes: ArrayBuffer | ArrayBufferView): { sampleRate: number; channels: number; samples: Int16Array };
/** Hotwords in the server's form: FunASR's JSON string '{"word": weight}'. */
export declare function formatHotwords(hotwords: Record<string, number> | string[] | string | null | undefined): string;
