/** PCM helpers: float/int16 conversion, little-endian bytes, a streaming resampler, WAV decoding. */
import { positiveNumber } from "./options.js";

/**
 * Float samples in [-1, 1] (clipped; NaN becomes 0) to 16-bit integers.
 * @param {Float32Array | Float64Array} samples
 * @returns {Int16Array}
 */
export function floatToInt16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i];
    const v = s > 1 ? 1 : s < -1 ? -1 : s === s ? s : 0;
    out[i] = v < 0 ? Math.round(v * 32768) : Math.round(v * 32767);
  }
  return out;
}

/**
 * 16-bit integers to floats in [-1, 1).
 * @param {Int16Array} samples
 * @returns {Float32Array}
 */
export function int16ToFloat(samples) {
  const out = new Float32Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = samples[i] / 32768;
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * A fresh little-endian byte copy (callers may reuse their arrays; buffered audio must not change).
 * @param {Int16Array} samples
 * @returns {Uint8Array<ArrayBuffer>}
 */
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
  /**
   * @param {number} inputRate
   * @param {number} outputRate
   * @param {{zeroCrossings?: number}} [options] kernel half-width in zero crossings of the sinc
   */
  constructor(inputRate, outputRate, { zeroCrossings = 8 } = {}) {
    this.inputRate = positiveNumber(inputRate, "inputRate");
    this.outputRate = positiveNumber(outputRate, "outputRate");
    this._step = inputRate / outputRate; // input samples per output sample
    // Cutoff in cycles per input sample: below both Nyquist frequencies, with a transition band.
    this._bandwidth = 2 * 0.5 * Math.min(1, outputRate / inputRate) * 0.92; // 2 * cutoff
    this._half = Math.ceil(zeroCrossings / this._bandwidth); // kernel half-width in input samples
    /** @type {Float32Array} */
    this._history = new Float32Array(0);
    this._time = 0;
    this.reset();
  }

  reset() {
    // `half` zeros of history centre the first output on the first input sample.
    this._history = new Float32Array(this._half);
    this._time = this._half; // position of the next output, in input samples from _history[0]
  }

  /**
   * Resample one chunk; returns the output samples now computable (the rest waits for more input).
   * @param {Float32Array | Float64Array} input (CaptionClient passes Float64Array too)
   * @returns {Float32Array}
   */
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

  /**
   * The tail held back for look-ahead (the input padded with silence); then starts afresh.
   * @returns {Float32Array}
   */
  flush() {
    const tail = this.process(new Float32Array(this._half + Math.ceil(this._step)));
    this.reset();
    return tail;
  }

  /** @param {number} distance from the output's position, in input samples */
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
  const tag = (/** @type {number} */ at) => String.fromCharCode(view.getUint8(at), view.getUint8(at + 1), view.getUint8(at + 2), view.getUint8(at + 3));
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

