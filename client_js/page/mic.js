// Microphone capture: getUserMedia -> AudioWorklet (client_js/worklet.js) -> 16 kHz PCM16 frames.

import { LocalizedError, t } from "../i18n.js";

export const TARGET_RATE = 16000;

/** A capture failure with a stable `reason` and a message (key "mic.<reason>") a person can act on. */
export class MicError extends LocalizedError {
  constructor(reason, key, params, cause) {
    super(key, params);
    this.name = "MicError";
    this.reason = reason; // "insecure" | "denied" | "no-device" | "busy" | "unsupported" | "failed"
    this.cause = cause;
  }
}

/** Why getUserMedia cannot work here, before asking: null when it can. */
export function micUnavailable() {
  if (!window.isSecureContext) {
    return new MicError("insecure", "mic.insecure", { origin: location.origin });
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return new MicError("unsupported", "mic.noGetUserMedia");
  }
  if (typeof AudioWorkletNode === "undefined") {
    return new MicError("unsupported", "mic.noWorklet");
  }
  return null;
}

/** Map a getUserMedia/AudioContext exception to a MicError with a clear message. */
export function explainMicError(error, deviceChosen) {
  if (error instanceof MicError) return error;
  const name = (error && error.name) || "";
  if (name === "NotAllowedError" || name === "PermissionDeniedError" || name === "SecurityError") {
    return new MicError("denied", "mic.denied", {}, error);
  }
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
    return new MicError("no-device", deviceChosen ? "mic.chosenGone" : "mic.noDevice", {}, error);
  }
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
    return new MicError("busy", "mic.busy", {}, error);
  }
  return new MicError("failed", "mic.failed", { reason: (error && error.message) || error }, error);
}

/** The audio inputs, labelled once permission has been granted (browsers hide labels before). */
export async function listMicrophones() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return [];
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices
    .filter((d) => d.kind === "audioinput")
    .map((d, i) => ({ deviceId: d.deviceId, label: d.label || t("mic.numbered", { n: i + 1 }) }));
}

/**
 * Captures one microphone. `onFrame(int16Array, peak)` receives frameMs of 16 kHz mono PCM16
 * (peak = loudest absolute sample of the frame, 0..1).
 */
export class MicCapture {
  constructor({ deviceId = "", frameMs = 80, onFrame }) {
    this.deviceId = deviceId;
    this.frameMs = frameMs;
    this.onFrame = onFrame;
    this.stream = null;
    this.context = null;
    this.node = null;
    this.sink = null;
    this.trackLabel = "";
  }

  async start() {
    const unavailable = micUnavailable();
    if (unavailable) throw unavailable;
    const audio = {
      channelCount: { ideal: 1 },
      // Speech recognition wants the raw signal; browser voice processing is for calls.
      echoCancellation: false,
      noiseSuppression: false,
      autoGainControl: false,
    };
    if (this.deviceId) audio.deviceId = { exact: this.deviceId };
    try {
      // The graph is built before the microphone opens: sound that arrives before the source is
      // connected is lost, so the first syllable depends on this order. The context runs at the
      // device's native rate; the worklet resamples (one place, one filter).
      this.context = new AudioContext({ latencyHint: "interactive" });
      await this.context.audioWorklet.addModule(new URL("../worklet.js", import.meta.url));
      this.node = new AudioWorkletNode(this.context, "pcm16-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { targetRate: TARGET_RATE, frameMs: this.frameMs },
      });
      this.node.port.onmessage = (event) => this._onMessage(event.data);
      // A silent path to the destination keeps the graph pulled in every browser.
      this.sink = this.context.createGain();
      this.sink.gain.value = 0;
      this.node.connect(this.sink);
      this.sink.connect(this.context.destination);
      this.stream = await navigator.mediaDevices.getUserMedia({ audio });
      const track = this.stream.getAudioTracks()[0];
      this.trackLabel = track ? track.label : "";
      this.context.createMediaStreamSource(this.stream).connect(this.node);
      if (this.context.state === "suspended") await this.context.resume();
    } catch (error) {
      await this.stop();
      throw explainMicError(error, Boolean(this.deviceId));
    }
  }

  _onMessage(data) {
    if (data.type === "frame" && this.onFrame) this.onFrame(new Int16Array(data.pcm), data.peak);
    else if (data.type === "flushed" && this._flushed) this._flushed();
  }

  /** Post the partial frame the worklet still holds (call before ending the stream). */
  flush(timeoutMs = 500) {
    if (!this.node) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this._flushed = () => {
        clearTimeout(timer);
        this._flushed = null;
        resolve();
      };
      this.node.port.postMessage({ type: "flush" });
    });
  }

  async stop() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    if (this.node) this.node.port.onmessage = null;
    if (this.context && this.context.state !== "closed") {
      try {
        await this.context.close();
      } catch {
        /* already closing */
      }
    }
    this.stream = this.context = this.node = this.sink = null;
  }
}
