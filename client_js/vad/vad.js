// VAD page: upload one file to POST /api/vad (jobs/vad_api.py) and show its speech intervals as a
// timeline and a table, with JSON and CSV downloads. Chinese or English from the browser's language.

const TOKEN_KEY = "livecaption.token"; // sessionStorage, shared with the other pages
const ROOT = new URL("../../", import.meta.url); // works behind a proxy that mounts the server under a path

const TEXTS = {
  en: {
    reasons: { silence: "a pause", max_length: "length limit", end_of_stream: "end of file" },
    summary: (r) => `${r.file}: ${r.intervals.length} interval(s), ${r.speech.toFixed(1)} s of speech in ${r.duration.toFixed(1)} s`,
    busy: "Detecting…",
    tokenNeeded: "This server needs an access token.",
    failed: (m) => `Speech detection failed: ${m}`,
  },
  zh: {
    title: "语音端点检测（VAD）", live: "实时字幕", files: "文件与历史", token: "访问令牌", useToken: "使用令牌",
    choose: "找出文件中的语音", explain: "服务器使用与实时字幕相同的语音检测（能量门限、WebRTC VAD、FSMN）切分文件，列出有人说话的时间段。不做识别，也不保存文件。",
    detect: "检测语音", intervals: "语音区间", start: "开始（秒）", end: "结束（秒）", duration: "时长（秒）", reason: "结束原因",
    reasons: { silence: "停顿", max_length: "长度上限", end_of_stream: "文件结束" },
    summary: (r) => `${r.file}：${r.intervals.length} 个区间，${r.duration.toFixed(1)} 秒中有 ${r.speech.toFixed(1)} 秒语音`,
    busy: "检测中…",
    tokenNeeded: "此服务器需要访问令牌。",
    failed: (m) => `语音检测失败：${m}`,
  },
};
const lang = (navigator.languages || [navigator.language]).some((l) => /^zh\b/i.test(l)) ? "zh" : "en";
const T = TEXTS[lang];

const $ = (id) => document.getElementById(id);
let token = "";
let links = [];

function show(text, kind = "info") {
  $("message").dataset.kind = kind;
  $("message").textContent = text;
}

function loadToken() {
  const query = new URLSearchParams(location.search);
  try {
    if (query.has("token")) sessionStorage.setItem(TOKEN_KEY, query.get("token").trim());
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return query.get("token") || "";
  }
}

async function detect() {
  const file = $("file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  $("detect").disabled = true;
  $("busy").textContent = T.busy;
  show("");
  try {
    const response = await fetch(new URL("api/vad", ROOT), { method: "POST", body: form, headers });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) {
      $("token-form").hidden = false;
      show(T.tokenNeeded, "error");
      return;
    }
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    render(body);
  } catch (error) {
    show(T.failed(error.message), "error");
  } finally {
    $("detect").disabled = false;
    $("busy").textContent = "";
  }
}

function csvOf(result) {
  const rows = [["index", "start_s", "end_s", "duration_s", "reason"]];
  result.intervals.forEach((r, i) => rows.push([i + 1, r.start.toFixed(3), r.end.toFixed(3), r.duration.toFixed(3), r.reason]));
  return rows.map((r) => r.join(",")).join("\r\n") + "\r\n"; // the same columns as ?format=csv
}

function render(result) {
  $("result").hidden = false;
  $("summary").textContent = T.summary(result);
  const timeline = $("timeline");
  timeline.replaceChildren();
  timeline.setAttribute("aria-label", T.summary(result));
  const total = Math.max(result.duration, 1e-6);
  const rows = [];
  result.intervals.forEach((r, i) => {
    const bar = document.createElement("span");
    bar.style.left = `${(100 * r.start) / total}%`;
    bar.style.width = `${(100 * r.duration) / total}%`;
    bar.title = `${r.start.toFixed(2)}–${r.end.toFixed(2)} s`;
    timeline.append(bar);
    const tr = document.createElement("tr");
    for (const cell of [i + 1, r.start.toFixed(3), r.end.toFixed(3), r.duration.toFixed(3), T.reasons[r.reason] || r.reason]) {
      const td = document.createElement("td");
      td.textContent = cell;
      tr.append(td);
    }
    rows.push(tr);
  });
  $("rows").replaceChildren(...rows);
  for (const url of links) URL.revokeObjectURL(url);
  const stem = result.file.replace(/\.[^.]+$/, "") || "audio";
  const json = URL.createObjectURL(new Blob([JSON.stringify(result, null, 2)], { type: "application/json" }));
  const csv = URL.createObjectURL(new Blob(["\ufeff" + csvOf(result)], { type: "text/csv" }));
  links = [json, csv];
  Object.assign($("json"), { href: json, download: `${stem}.vad.json` });
  Object.assign($("csv"), { href: csv, download: `${stem}.vad.csv` });
}

document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
for (const el of document.querySelectorAll("[data-text]")) {
  const text = T[el.dataset.text];
  if (typeof text === "string") el.textContent = text;
}
token = loadToken();
$("file").addEventListener("change", () => ($("detect").disabled = !$("file").files.length));
$("detect").addEventListener("click", detect);
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {}
  $("token-form").hidden = true;
  detect();
});
