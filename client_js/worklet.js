// AudioWorkletProcessor "pcm16-capture": downmix to mono, resample to 16 kHz, post Int16 frames.
//
// Runs on the audio rendering thread. Each posted message is
//   {type: "frame", pcm: ArrayBuffer (Int16, little-endian on every platform browsers run on), peak}
// holding exactly frameMs of audio (80 ms = 1280 samples at 16 kHz). A {type: "flush"} message
// from the main thread posts the partial frame still held, then {type: "flushed"}.
//
// Resampling is a windowed-sinc low-pass evaluated at each output instant (band-limited to 90 %
// of the lower Nyquist rate), so 44.1/48 kHz microphones do not alias into the speech band.

const ZERO_CROSSINGS = 8; // sinc lobes each side of the centre: quality vs. CPU
const TABLE_STEPS = 256; // kernel samples per input sample (linear interpolation in between)

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.outRate = opts.targetRate || 16000;
    const frameMs = Math.min(100, Math.max(60, opts.frameMs || 80));
    this.frameSamples = Math.round((this.outRate * frameMs) / 1000);
    this.inRate = sampleRate; // global of AudioWorkletGlobalScope: the context's rate
    this.step = this.inRate / this.outRate; // input samples per output sample
    this.passthrough = this.inRate === this.outRate;

    // Cut-off in cycles per input sample; the kernel widens as the cut-off drops.
    const cutoff = (0.5 * 0.9) / Math.max(this.step, 1);
    this.half = Math.ceil(ZERO_CROSSINGS / (2 * cutoff));
    this.gain = 2 * cutoff;
    this.table = new Float32Array(this.half * TABLE_STEPS + 2);
    for (let i = 0; i < this.table.length; i++) {
      const d = i / TABLE_STEPS; // distance in input samples
      const x = 2 * cutoff * d;
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      const w = d >= this.half ? 0 : 0.5 + 0.5 * Math.cos((Math.PI * d) / this.half); // Hann
      this.table[i] = this.gain * sinc * w;
    }

    // Input history: `half` zeros of look-behind so the first output has a full kernel.
    this.buf = new Float32Array(Math.max(4096, this.half * 4));
    this.len = this.half;
    this.pos = this.half; // fractional input index of the next output sample

    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.peak = 0;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === "flush") {
        if (this.filled > 0) this.post(this.frame.slice(0, this.filled));
        this.filled = 0;
        this.port.postMessage({ type: "flushed" });
      }
    };
  }

  post(samples) {
    this.port.postMessage({ type: "frame", pcm: samples.buffer, peak: this.peak }, [samples.buffer]);
    this.peak = 0;
  }

  emit(value) {
    const v = value > 1 ? 1 : value < -1 ? -1 : value;
    const a = v < 0 ? -v : v;
    if (a > this.peak) this.peak = a;
    this.frame[this.filled++] = v < 0 ? v * 32768 : v * 32767;
    if (this.filled === this.frameSamples) {
      this.post(this.frame);
      this.frame = new Int16Array(this.frameSamples);
      this.filled = 0;
    }
  }

  append(mono) {
    if (this.len + mono.length > this.buf.length) {
      const grown = new Float32Array((this.len + mono.length) * 2);
      grown.set(this.buf.subarray(0, this.len));
      this.buf = grown;
    }
    this.buf.set(mono, this.len);
    this.len += mono.length;
  }

  kernel(distance) {
    const t = (distance < 0 ? -distance : distance) * TABLE_STEPS;
    const i = t | 0;
    const f = t - i;
    return this.table[i] + (this.table[i + 1] - this.table[i]) * f;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true; // no source connected (yet)
    const channels = input.length;
    const n = input[0].length;
    const mono = new Float32Array(n);
    for (let c = 0; c < channels; c++) {
      const data = input[c];
      for (let i = 0; i < n; i++) mono[i] += data[i];
    }
    if (channels > 1) for (let i = 0; i < n; i++) mono[i] /= channels;

    if (this.passthrough) {
      for (let i = 0; i < n; i++) this.emit(mono[i]);
      return true;
    }
    this.append(mono);
    const buf = this.buf;
    const half = this.half;
    while (this.pos + half < this.len) {
      const centre = Math.floor(this.pos);
      let acc = 0;
      for (let k = centre - half + 1; k <= centre + half; k++) acc += buf[k] * this.kernel(this.pos - k);
      this.emit(acc);
      this.pos += this.step;
    }
    // Drop input no longer inside any future kernel.
    const keepFrom = Math.floor(this.pos) - half;
    if (keepFrom > 0) {
      buf.copyWithin(0, keepFrom, this.len);
      this.len -= keepFrom;
      this.pos -= keepFrom;
    }
    return true;
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
