// VAD page: upload one file to POST /api/vad (jobs/vad_api.py) and show its speech intervals as a
// timeline and a table, with JSON and CSV downloads. Texts: client_js/i18n.js (Chinese or English).

import { onLanguageChange, t, textOf } from "../i18n.js";

const TOKEN_KEY = "livecaption.token"; // sessionStorage, shared with the other pages
const ROOT = new URL("../../", import.meta.url); // works behind a proxy that mounts the server under a path

const reasonText = (reason) => {
  const text = t(`vad.reason.${reason}`); // silence, max_length, end_of_stream
  return text === `vad.reason.${reason}` ? reason : text;
};

const $ = (id) => document.getElementById(id);
let token = "";
let links = [];
let shown = null; // the message as {key, params}, and the last result: said again after a switch
let result = null;

function show(item, kind = "info") {
  shown = item || null;
  $("message").dataset.kind = kind;
  $("message").textContent = item ? textOf(item) : "";
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
  $("busy").textContent = t("vad.busy");
  show("");
  try {
    const response = await fetch(new URL("api/vad", ROOT), { method: "POST", body: form, headers });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) {
      $("token-form").hidden = false;
      show({ key: "vad.tokenNeeded" }, "error");
      return;
    }
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    render(body);
  } catch (error) {
    show({ key: "vad.failed", params: { message: error.message } }, "error");
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

function summary(r) {
  const params = { file: r.file, n: r.intervals.length, speech: r.speech.toFixed(1), duration: r.duration.toFixed(1) };
  return t("vad.summary", params);
}

function render(answer) {
  result = answer;
  $("result").hidden = false;
  $("summary").textContent = summary(result);
  const timeline = $("timeline");
  timeline.replaceChildren();
  timeline.setAttribute("aria-label", summary(result));
  const total = Math.max(result.duration, 1e-6);
  const rows = [];
  result.intervals.forEach((r, i) => {
    const bar = document.createElement("span");
    bar.style.left = `${(100 * r.start) / total}%`;
    bar.style.width = `${(100 * r.duration) / total}%`;
    bar.title = `${r.start.toFixed(2)}–${r.end.toFixed(2)} s`;
    timeline.append(bar);
    const tr = document.createElement("tr");
    for (const cell of [i + 1, r.start.toFixed(3), r.end.toFixed(3), r.duration.toFixed(3), reasonText(r.reason)]) {
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

onLanguageChange(() => {
  if (shown) show(shown, $("message").dataset.kind);
  if (result) render(result);
});
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
