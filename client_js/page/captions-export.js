// Session transcripts as TXT, SubRip (.srt) and WebVTT (.vtt); pure functions over final captions.
//
// A caption is {startMs, endMs, text} on the session's timeline (the finals' start_ms/end_ms).

function clock(ms, separator, alwaysHours) {
  const total = Math.max(0, Math.round(ms));
  const hours = Math.floor(total / 3600000);
  const minutes = Math.floor(total / 60000) % 60;
  const seconds = Math.floor(total / 1000) % 60;
  const millis = total % 1000;
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  const head = alwaysHours || hours > 0 ? `${pad(hours)}:` : "";
  return `${head}${pad(minutes)}:${pad(seconds)}${separator}${pad(millis, 3)}`;
}

/** "[mm:ss]" (or "[h:mm:ss]" past the first hour), as the page shows beside each final. */
export function shortTime(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor(total / 60) % 60;
  const seconds = total % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return hours > 0 ? `${hours}:${pad(minutes)}:${pad(seconds)}` : `${pad(minutes)}:${pad(seconds)}`;
}

export const srtTime = (ms) => clock(ms, ",", true); // 00:01:02,345
export const vttTime = (ms) => clock(ms, ".", true); // 00:01:02.345

function usable(captions) {
  return captions
    .map((c) => ({ startMs: c.startMs, endMs: Math.max(c.endMs, c.startMs), text: String(c.text || "").trim() }))
    .filter((c) => c.text)
    .sort((a, b) => a.startMs - b.startMs);
}

export function toTxt(captions) {
  return usable(captions)
    .map((c) => `[${shortTime(c.startMs)}] ${c.text}\n`)
    .join("");
}

export function toSrt(captions) {
  return usable(captions)
    .map((c, i) => `${i + 1}\n${srtTime(c.startMs)} --> ${srtTime(c.endMs)}\n${c.text.replace(/\n+/g, " ")}\n`)
    .join("\n");
}

function vttText(text) {
  // Cue text is HTML-like: escape markup characters; "-->" may not appear in a cue payload.
  return text
    .replace(/\n+/g, " ")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;");
}

export function toVtt(captions) {
  const cues = usable(captions).map(
    (c, i) => `${i + 1}\n${vttTime(c.startMs)} --> ${vttTime(c.endMs)}\n${vttText(c.text)}\n`,
  );
  return `WEBVTT\n\n${cues.join("\n")}`;
}

export const FORMATS = {
  txt: { build: toTxt, mime: "text/plain;charset=utf-8" },
  srt: { build: toSrt, mime: "application/x-subrip;charset=utf-8" },
  vtt: { build: toVtt, mime: "text/vtt;charset=utf-8" },
};

/** Offer `captions` as a file download (Blob + a temporary <a download>). */
export function download(captions, format, basename) {
  const { build, mime } = FORMATS[format];
  const blob = new Blob([build(captions)], { type: mime });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = `${basename}.${format}`;
  link.hidden = true;
  document.body.appendChild(link);
  link.click();
  link.remove();
  // The download has its own reference by now; release ours after the click is handled.
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
