// Type-checked, never run (`tsc -p client_js`, from tests/test_client_js.py): livecaption.d.ts must
// describe livecaption.js exactly. An import of "../livecaption.js" resolves to the .d.ts; the
// tsconfig "paths" entry "livecaption-implementation" is the JS itself, typed by its JSDoc.
import * as Declared from "../livecaption.js";
import * as Implemented from "livecaption-implementation";

type Exact<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
/** A class's public members: the implementation's own start with "_". */
type Public<T> = { [K in keyof T as K extends `_${string}` ? never : K]: T[K] };

/** A declared class with EventTarget's own add/removeEventListener: the .d.ts narrows them to typed
 *  events (what the runtime dispatches), which the JS, inheriting them, cannot say. */
type WithPlainListeners<C extends abstract new (...args: any) => any> = new (
  ...args: ConstructorParameters<C>
) => Omit<InstanceType<C>, "addEventListener" | "removeEventListener">;

// The same names are exported, and each export can stand in for its declaration (functions and
// constructors take what is declared and return what is promised; instances have every member).
export const sameExports: Exact<keyof typeof Implemented, keyof typeof Declared> = true;
export const implementsDeclaration: Omit<typeof Declared, "CaptionClient" | "CaptionSubscriber"> = Implemented;
export const implementsClient: WithPlainListeners<typeof Declared.CaptionClient> = Implemented.CaptionClient;
export const implementsSubscriber: WithPlainListeners<typeof Declared.CaptionSubscriber> = Implemented.CaptionSubscriber;
// No public member that the declaration leaves out.
export const clientMembers: Exact<keyof Public<Implemented.CaptionClient>, keyof Declared.CaptionClient> = true;
export const subscriberMembers: Exact<keyof Public<Implemented.CaptionSubscriber>, keyof Declared.CaptionSubscriber> = true;
export const resamplerMembers: Exact<keyof Public<Implemented.Resampler>, keyof Declared.Resampler> = true;

// Every public name as a caller writes it, typed by the declaration alone.
export async function usesEveryDeclaredName(ws: Declared.WebSocketConstructor): Promise<string[]> {
  const rates: readonly number[] = Declared.SERVER_SAMPLE_RATES;
  const fatal: readonly number[] = Declared.FATAL_CLOSE_CODES;
  const mode: Declared.Mode = "2pass";
  const reconnect: Declared.ReconnectOptions = { enabled: true, initialDelayMs: 250, maxDelayMs: 8000, maxAttempts: 3 };
  const connection: Declared.ConnectionOptions = { token: "t", reconnect, WebSocket: ws, readyTimeoutMs: 30000 };
  const options: Declared.CaptionClientOptions = {
    ...connection,
    mode,
    hotwords: { FunASR: 20 },
    itn: true,
    language: "en",
    silenceMs: 500,
    maxSegmentS: 10,
    partialIntervalMs: 300,
    sessionId: "s1",
    inputSampleRate: 48000,
    wavName: "stream",
    maxBufferedAudioS: 30,
    stallTimeoutMs: 0,
  };
  const seen: string[] = [];
  const client = new Declared.CaptionClient("ws://127.0.0.1:10095", options);
  const state: Declared.ConnectionState = client.state;
  seen.push(state, String(client.sessionId), String(client.lastSegmentId), String(client.sampleRate), String(client.bufferedBytes));
  seen.push(String(client.socket?.url), ...client.finals.map((f) => f.text));
  const stop = client.listen("partial", (p: Declared.PartialDetail, event: CustomEvent<Declared.PartialDetail>) => {
    seen.push(p.sessionId ?? "", String(p.segmentId), p.text, p.stable, p.unstable, p.delta, String(p.startMs), String(p.endMs));
    seen.push(String(p.mode), String(p.raw), event.type);
  });
  stop();
  client.listen("final", (f: Declared.FinalDetail) => {
    seen.push(f.sessionId ?? "", String(f.segmentId), f.text, String(f.startMs), String(f.endMs), String(f.endReason));
    seen.push(String(f.replayed), String(f.fromEnd), String(f.error), String(f.raw));
  });
  client.listen("error", (e: Declared.ErrorDetail) => seen.push(e.code, e.message, String(e.fromServer), String(e.raw)));
  client.listen("reconnecting", (r: Declared.ReconnectingDetail) => seen.push(String(r.attempt), String(r.delayMs), String(r.code), r.reason));
  client.listen("reconnected", (r: Declared.ReconnectedDetail) => seen.push(String(r.attempt), String(r.sessionId), String(r.resumeAfter)));
  client.listen("close", (c: Declared.CloseDetail) => seen.push(String(c.code), c.reason, String(c.byClient)));
  const onEnd = (event: CustomEvent<Declared.EndDetail>) => seen.push(event.detail.text);
  client.addEventListener("end", onEnd);
  client.removeEventListener("end", onEnd);
  const ready: Declared.ReadyDetail = await client.connect();
  seen.push(String(ready.sessionId), String(ready.reconnected), String(ready.resumed), String(ready.raw));
  client.sendPcm(new Int16Array(160));
  client.sendPcm(new Float32Array(480), 48000);
  const end: Declared.EndDetail = await client.end({ timeoutMs: 1000 });
  seen.push(String(end.sessionId), end.text, String(end.raw), ...end.segments.map((s) => s.text));
  client.close(1000, "done");

  const subscriber = new Declared.CaptionSubscriber("ws://127.0.0.1:10095", "s1", connection);
  subscriber.listen("subscribed", (r: Declared.ReadyDetail) => seen.push(String(r.sessionId)));
  const subscribed: Declared.ReadyDetail = await subscriber.connect();
  seen.push(String(subscribed.resumed), subscriber.state);
  subscriber.close();

  const resampler = new Declared.Resampler(48000, 16000, { zeroCrossings: 8 });
  const resampled: Float32Array = resampler.process(new Float32Array(480));
  const tail: Float32Array = resampler.flush();
  resampler.reset();
  seen.push(String(resampler.inputRate + resampler.outputRate + resampled.length + tail.length));
  const pcm: Int16Array = Declared.floatToInt16(Declared.int16ToFloat(new Int16Array(4)));
  const bytes: Uint8Array = Declared.int16ToBytesLE(pcm);
  const wav: { sampleRate: number; channels: number; samples: Int16Array } = Declared.decodeWav(bytes);
  seen.push(String(wav.sampleRate + wav.channels + wav.samples.length), Declared.formatHotwords(["FunASR"]));
  seen.push(String(rates.length + fatal.length));
  return seen;
}
