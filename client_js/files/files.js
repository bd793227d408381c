// Files and history page: upload audio for batch transcription, follow the jobs, search and
// download the history (live sessions and transcribed files). Talks to the server's /api/ (jobs/api.py).

import { locale, onLanguageChange, t, textOf } from "../i18n.js";
import { shortTime } from "../page/captions-export.js";
import { knownLanguage, setupLanguageMenu } from "../page/languages.js";
import { loadToken, parseHotwords, saveToken } from "../page/settings.js";

const POLL_ACTIVE_MS = 1000; // while a job is queued or running
const POLL_IDLE_MS = 15000; // otherwise: jobs may also arrive from the CLI or another browser
const POLL_RETRY_MS = 5000; // after a failed poll (server restarting)
const HISTORY_LIMIT = 200; // rows /api/history returns at most (jobs/store.py search)
const OPTIONS_KEY = "livecaption.files.v1"; // upload options remembered across reloads

const FILE_FORMATS = [
  ["txt", "TXT"],
  ["srt", "SRT"],
  ["vtt", "WebVTT"],
  ["json", "JSON"],
];
const JOB_FORMATS = [
  ["zip", "ZIP"],
  ["csv", "CSV"],
  ["json", "JSON"],
];
/** queued, running, done, failed, cancelled in words; a state this page does not know as it is. */
function statusText(status) {
  const text = t(`status.${status}`);
  return text === `status.${status}` ? status : text;
}
const ACTIVE = new Set(["queued", "running"]);

// The server root, from this module's own address (…/client_js/files/files.js), so the page also
// works behind a proxy that mounts the server under a path.
const ROOT = new URL("../../", import.meta.url);
const apiUrl = (path) => new URL(path, ROOT).href;

const $ = (id) => document.getElementById(id);
const ui = {
  message: $("message"),
  tokenForm: $("token-form"),
  token: $("token"),
  drop: $("drop"),
  fileInput: $("file-input"),
  queue: $("queue"),
  engine: $("engine"),
  language: $("language"),
  hotwords: $("hotwords"),
  itn: $("itn"),
  maxSegment: $("max-segment"),
  skipVad: $("skip-vad"),
  choose: $("choose"),
  upload: $("upload"),
  clear: $("clear"),
  uploadProgress: $("upload-progress"),
  uploadText: $("upload-text"),
  jobsTitle: $("jobs-title"),
  jobsEmpty: $("jobs-empty"),
  jobs: $("jobs"),
  historyForm: $("history-form"),
  q: $("q"),
  since: $("since"),
  until: $("until"),
  historyCount: $("history-count"),
  history: $("history"),
};

let token = "";
let unauthorized = false; // after a 401: no polling until a token is entered
let queued = []; // File objects chosen or dropped, not yet uploaded
let uploading = false;
let pollTimer = 0;
let jobsSeq = 0; // answers to older requests are dropped (they may arrive after newer ones)
let historySeq = 0;
const jobViews = new Map(); // job id -> its DOM parts, updated in place so focus survives polls
const lastStatus = new Map(); // "job:<id>" / "file:<id>" -> status at the previous poll
const fileNames = new Map(); // file id -> name, for file results in the history

// --- small helpers ---------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role") el.setAttribute(key, value);
    else el[key] = value;
  }
  el.append(...children.filter((c) => c !== null && c !== undefined));
  return el;
}

let shownMessage = null; // {key, params} or an Error: said again after a language switch

/** `item`: {key, params}, a LocalizedError, or "" to clear. */
function showMessage(item, kind = "info", reason = "") {
  shownMessage = item || null;
  ui.message.textContent = item ? textOf(item) : "";
  ui.message.dataset.kind = kind;
  ui.message.dataset.reason = reason;
}

function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return t("time.s", { s });
  if (s < 3600) return t("time.minS", { m: Math.floor(s / 60), s: s % 60 });
  return t("time.hMin", { h: Math.floor(s / 3600), m: Math.floor(s / 60) % 60 });
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GB`;
}

const formatTime = (unixSeconds) => new Date(unixSeconds * 1000).toLocaleString(locale());

// --- the API: every request carries the token; failures become ApiError with the server's words
class ApiError extends Error {
  constructor(status, message, code = "") {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The server's {"error": …} body (jobs/api.py, server/app.py), or its first words of text. */
function errorFrom(status, bodyText) {
  let message = "";
  let code = "";
  try {
    const body = JSON.parse(bodyText);
    message = body.error || body.message || "";
    code = body.code || "";
  } catch {
    message = String(bodyText || "")
      .replace(/<[^>]*>/g, " ")
      .replace(/\s+/g, " ")
      .trim()
      .slice(0, 300);
  }
  if (!message) message = t("api.answered", { status });
  return new ApiError(status, message, code);
}

async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  if (token) headers.set("Authorization", `Bearer ${token}`);
  let response;
  try {
    response = await fetch(apiUrl(path), { ...init, headers });
  } catch {
    throw new ApiError(0, t("api.unreachable"));
  }
  if (!response.ok) {
    const error = errorFrom(response.status, await response.text());
    if (response.status === 401) askForToken(error);
    throw error;
  }
  unauthorized = false;
  return response;
}

/** Shows what went wrong (after t(prefixKey)), unless it was a 401 (the token form already says so). */
function report(error, prefixKey) {
  if (error instanceof ApiError && error.status === 401) return;
  const text = error instanceof ApiError ? error.message : String(error && error.message ? error.message : error);
  const item = prefixKey ? { key: "files.failedWith", params: { what: { key: prefixKey }, text } } : text;
  showMessage(item, "error", error.code || "error");
}

// --- access token ----------------------------------------------------------------------------
function setupToken() {
  // A shared link may carry ?token=: take it, then drop it from the address bar (and history).
  const query = new URLSearchParams(location.search);
  if (query.has("token")) {
    saveToken(query.get("token").trim());
    token = query.get("token").trim();
    query.delete("token");
    const rest = query.toString();
    history.replaceState(null, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
  }
  token = token || loadToken(); // the captions page keeps it under the same key
  ui.token.value = token;
  ui.tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    token = ui.token.value.trim();
    saveToken(token);
    unauthorized = false;
    ui.tokenForm.hidden = true;
    showMessage("");
    loadEngines();
    refreshJobs();
    searchHistory();
  });
}

function askForToken(error) {
  const first = !unauthorized;
  unauthorized = true;
  clearTimeout(pollTimer);
  ui.tokenForm.hidden = false;
  const text = token ? { key: "files.tokenRefused", params: { reason: error.message } } : { key: "files.tokenNeeded" };
  showMessage(text, "error", "token");
  if (first) ui.token.focus();
}

// --- downloads -------------------------------------------------------------------------------
function downloadLink(path, label, what) {
  return h("a", {
    class: "button",
    href: apiUrl(path),
    download: "",
    text: label,
    "data-download": "",
    "aria-label": t("files.downloadAs", { what, format: label }),
  });
}

function filenameFrom(response, fallback) {
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename\*=UTF-8''([^;]+)/i.exec(disposition);
  return match ? decodeURIComponent(match[1]) : fallback;
}

// A plain link cannot carry an Authorization header: with a token, fetch the file and save it.
// (Putting ?token= into every link would spread the token into history and the logs of proxies.)
document.addEventListener("click", async (event) => {
  const link = event.target instanceof Element ? event.target.closest("a[data-download]") : null;
  if (!link || !token) return;
  event.preventDefault();
  try {
    const response = await api(link.href);
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const save = h("a", { href: url, download: filenameFrom(response, link.href.split("/").pop()), hidden: true });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    report(error, "files.downloadFailed");
  }
});

// --- choosing files: drop zone (mouse and keyboard), file dialog -------------------------------
function addFiles(fileList) {
  const known = new Set(queued.map((f) => `${f.name}/${f.size}/${f.lastModified}`));
  let added = 0;
  for (const file of fileList) {
    const key = `${file.name}/${file.size}/${file.lastModified}`;
    if (known.has(key)) continue;
    known.add(key);
    queued.push(file);
    added += 1;
  }
  renderQueue();
  if (added) showMessage({ key: "files.ready", params: { n: queued.length } });
}

function renderQueue() {
  ui.queue.replaceChildren(
    ...queued.map((file, index) =>
      h(
        "li",
        {},
        h("span", { class: "file-name", text: file.name }),
        h("span", { class: "muted", text: formatBytes(file.size) }),
        h("button", {
          type: "button",
          class: "small",
          text: t("files.remove"),
          "aria-label": t("files.removeFile", { name: file.name }),
          disabled: uploading,
          onclick: () => {
            queued.splice(index, 1);
            renderQueue();
            (ui.queue.querySelector("button") || ui.choose).focus();
          },
        }),
      ),
    ),
  );
  ui.upload.disabled = uploading || queued.length === 0;
  ui.clear.disabled = uploading || queued.length === 0;
}

function setupChoosing() {
  const openDialog = () => ui.fileInput.click();
  ui.choose.addEventListener("click", openDialog);
  ui.drop.addEventListener("click", openDialog);
  ui.drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault(); // Space would scroll the page
      openDialog();
    }
  });
  ui.fileInput.addEventListener("change", () => {
    addFiles(ui.fileInput.files);
    ui.fileInput.value = ""; // choosing the same file again fires change again
  });
  let depth = 0; // dragenter/dragleave also fire for the zone's children
  ui.drop.addEventListener("dragenter", (event) => {
    event.preventDefault();
    depth += 1;
    ui.drop.classList.add("over");
  });
  ui.drop.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) ui.drop.classList.remove("over");
  });
  ui.drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
  });
  ui.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    ui.drop.classList.remove("over");
    if (event.dataTransfer && event.dataTransfer.files.length) addFiles(event.dataTransfer.files);
  });
  // A file dropped beside the zone must not replace the page with the file.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());
  ui.clear.addEventListener("click", () => {
    queued = [];
    renderQueue();
    showMessage("");
  });
  ui.upload.addEventListener("click", uploadQueued);
}

// --- upload options ----------------------------------------------------------------------------
/** The form -> the `options` JSON the server reads (jobs/api.py _options). Throws Error on bad input. */
function readOptions() {
  const options = { itn: ui.itn.checked };
  if (ui.engine.value) options.engine = ui.engine.value;
  if (ui.language.value) options.language = ui.language.value; // a menu of codes the server takes
  const hotwords = parseHotwords(ui.hotwords.value);
  if (hotwords) options.hotwords = JSON.stringify(hotwords); // FunASR's '{"word": weight}' string
  const maxSegment = ui.maxSegment.value.trim();
  if (maxSegment) options.max_segment_s = Number(maxSegment); // the server checks the range
  if (ui.skipVad.checked) options.vad = false; // sent only when off, like the server keeps it
  return options;
}

function loadOptions() {
  try {
    const saved = JSON.parse(localStorage.getItem(OPTIONS_KEY) || "{}") || {};
    setupLanguageMenu(ui.language, knownLanguage(String(saved.language || "").toLowerCase()));
    ui.hotwords.value = saved.hotwords || "";
    ui.itn.checked = saved.itn !== false;
    ui.maxSegment.value = saved.maxSegment || "";
    ui.skipVad.checked = saved.skipVad === true;
    ui.engine.dataset.saved = saved.engine || ""; // chosen once the server has listed its engines
  } catch {
    /* storage blocked or garbled: the defaults in the form stay */
  }
  if (!ui.language.options.length) setupLanguageMenu(ui.language, "");
  const save = () => {
    try {
      localStorage.setItem(
        OPTIONS_KEY,
        JSON.stringify({
          language: ui.language.value,
          hotwords: ui.hotwords.value,
          itn: ui.itn.checked,
          maxSegment: ui.maxSegment.value,
          skipVad: ui.skipVad.checked,
          engine: ui.engine.value,
        }),
      );
    } catch {
      /* private mode: options last for this page load */
    }
  };
  for (const el of [ui.language, ui.hotwords, ui.itn, ui.maxSegment, ui.skipVad, ui.engine]) el.addEventListener("change", save);
}

/** Fills the engine choice from GET /api/engines: the live engine (the default) and any loaded for files. */
async function loadEngines() {
  let listed;
  try {
    listed = await (await api("api/engines")).json();
  } catch (error) {
    report(error, "files.enginesFailed");
    return; // "Server default" stays the only choice
  }
  const wanted = ui.engine.value || ui.engine.dataset.saved || listed.default;
  ui.engine.replaceChildren(
    ...listed.engines.map((engine) =>
      h("option", {
        value: engine.name,
        text: `${engine.name} – ${engine.model}${engine.name === listed.default ? t("files.defaultSuffix") : ""}`,
      }),
    ),
  );
  ui.engine.value = listed.engines.some((engine) => engine.name === wanted) ? wanted : listed.default;
}

// --- upload: XMLHttpRequest, because fetch() cannot report upload progress ----------------------
function postFiles(files, options) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const file of files) form.append("file", file, file.name);
    form.append("options", JSON.stringify(options));
    const xhr = new XMLHttpRequest();
    xhr.open("POST", apiUrl("api/jobs"));
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const percent = (100 * event.loaded) / event.total;
      ui.uploadProgress.value = percent;
      ui.uploadText.textContent = t("files.uploadingPercent", { percent: Math.floor(percent), size: formatBytes(event.total) });
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 201) {
        resolve(JSON.parse(xhr.responseText));
        return;
      }
      const error = errorFrom(xhr.status, xhr.responseText);
      if (xhr.status === 401) askForToken(error);
      reject(error);
    });
    // The server answers 413 as soon as a file passes max_upload_mb and may close the connection
    // before the browser has sent the rest; the browser then reports a network error, not the 413.
    xhr.addEventListener("error", () =>
      reject(
        new ApiError(0, t("files.uploadClosed")),
      ),
    );
    xhr.send(form);
  });
}

async function uploadQueued() {
  if (!queued.length || uploading) return;
  let options;
  try {
    options = readOptions();
  } catch (error) {
    showMessage(error, "error", "options");
    $("options-panel").open = true;
    return;
  }
  uploading = true;
  renderQueue();
  ui.uploadProgress.hidden = false;
  ui.uploadProgress.value = 0;
  const files = queued.slice();
  showMessage({ key: "files.uploading", params: { n: files.length } });
  try {
    const result = await postFiles(files, options);
    queued = [];
    // Announce how this page's own files end, even a failure that comes before the next poll.
    lastStatus.set(`job:${result.job_id}`, "queued");
    for (const file of result.files) lastStatus.set(`file:${file.id}`, "queued");
    const duplicates = result.duplicates && result.duplicates.length ? result.duplicates.join(", ") : "";
    const params = { id: result.job_id, n: result.files.length, duplicates };
    showMessage({ key: duplicates ? "files.uploadedSkipped" : "files.uploaded", params }, "info", "uploaded");
    refreshJobs();
  } catch (error) {
    report(error, error.status === 413 ? "files.tooLarge" : "files.uploadFailed");
  } finally {
    uploading = false;
    ui.uploadProgress.hidden = true;
    ui.uploadText.textContent = "";
    renderQueue();
  }
}

// --- jobs: polled, updated in place -------------------------------------------------------------
function schedulePoll(ms) {
  clearTimeout(pollTimer);
  if (!unauthorized) pollTimer = setTimeout(refreshJobs, ms);
}

async function refreshJobs() {
  clearTimeout(pollTimer);
  const seq = ++jobsSeq;
  try {
    const { jobs } = await (await api("api/jobs")).json();
    if (seq !== jobsSeq) return;
    renderJobs(jobs);
    schedulePoll(jobs.some((job) => ACTIVE.has(job.status)) ? POLL_ACTIVE_MS : POLL_IDLE_MS);
  } catch (error) {
    if (seq !== jobsSeq) return;
    report(error, "files.jobsFailed");
    schedulePoll(POLL_RETRY_MS);
  }
}

function progressText(job) {
  const parts = [`${Math.floor(job.percent)}%`];
  if (ACTIVE.has(job.status) && job.eta_s !== null && job.eta_s !== undefined) {
    parts.push(t("files.eta", { time: formatDuration(job.eta_s) }));
  }
  if (job.audio_s) parts.push(t("files.audioDone", { done: formatDuration(job.done_s), total: formatDuration(job.audio_s) }));
  return parts.join(" · ");
}

function setProgress(bar, percent, text) {
  bar.value = percent;
  bar.setAttribute("aria-valuetext", text);
}

function buildJob(job) {
  const title = h("h3", { class: "job-title" }, t("files.jobPrefix"), h("code", { text: job.id }));
  const status = h("span", { class: "badge" });
  const meta = h("span", { class: "muted" });
  const bar = h("progress", { max: 100, value: 0, "aria-label": t("files.jobLabel", { id: job.id }) });
  const text = h("span", { class: "progress-text" });
  const files = h("ul", { class: "file-rows", "aria-label": t("files.jobFiles", { id: job.id }) });
  const downloads = h(
    "span",
    { class: "downloads", role: "group", "aria-label": t("files.downloadJob", { id: job.id }), hidden: true },
    t("files.allFiles"),
    ...JOB_FORMATS.map(([fmt, label]) =>
      downloadLink(`api/jobs/${job.id}/export.${fmt}`, label, t("files.jobWhat", { id: job.id })),
    ),
  );
  const cancel = h("button", {
    type: "button",
    class: "cancel",
    text: t("files.cancelJob"),
    "aria-label": t("files.cancelJobLabel", { id: job.id }),
  });
  cancel.addEventListener("click", () => cancelJob(job.id));
  const remove = h("button", {
    type: "button",
    class: "delete",
    text: t("files.deleteJob"),
    "aria-label": t("files.deleteJobLabel", { id: job.id }),
  });
  remove.addEventListener("click", () => deleteJob(job.id));
  const root = h(
    "li",
    { class: "job", "data-job-id": job.id },
    h("div", { class: "job-head" }, title, status, meta),
    h("div", { class: "progress-line" }, bar, text),
    files,
    h("div", { class: "job-actions" }, downloads, cancel, remove),
  );
  return { root, status, meta, bar, text, files, downloads, cancel, rows: new Map() };
}

function buildFileRow(file) {
  const status = h("span", { class: "badge" });
  const bar = h("progress", { max: 100, value: 0, "aria-label": file.name });
  const percent = h("span", { class: "progress-text" });
  const downloads = h(
    "span",
    { class: "downloads", role: "group", "aria-label": t("files.downloadFile", { name: file.name }), hidden: true },
    ...FILE_FORMATS.map(([fmt, label]) => downloadLink(`api/files/${file.id}/export.${fmt}`, label, file.name)),
  );
  const error = h("p", { class: "file-error", hidden: true });
  const root = h(
    "li",
    { class: "file-row", "data-file-id": String(file.id) },
    h("span", { class: "file-name", text: file.name }),
    status,
    bar,
    percent,
    downloads,
    error,
  );
  return { root, status, bar, percent, downloads, error };
}

function updateFileRow(row, file) {
  row.root.dataset.status = file.status;
  row.status.textContent = statusText(file.status);
  row.status.dataset.status = file.status;
  const text = `${Math.floor(file.percent)}%`;
  setProgress(row.bar, file.percent, `${text}, ${statusText(file.status)}`);
  row.percent.textContent = file.duration_s ? t("files.percentOf", { percent: text, duration: formatDuration(file.duration_s) }) : text;
  row.downloads.hidden = file.status !== "done";
  row.error.hidden = !file.error;
  row.error.textContent = file.error || "";
}

function renderJobs(jobs) {
  const news = [];
  const seen = new Set();
  jobs.forEach((job, index) => {
    seen.add(job.id);
    let view = jobViews.get(job.id);
    if (!view) {
      view = buildJob(job);
      jobViews.set(job.id, view);
    }
    // Reorder only when needed: moving a node that holds focus would drop the focus.
    if (ui.jobs.children[index] !== view.root) ui.jobs.insertBefore(view.root, ui.jobs.children[index] || null);
    const failed = job.files.filter((f) => f.status === "failed").length;
    // The server calls a job "done" once every file has finished, even when all of them failed.
    const shown = job.status === "done" && failed === job.files.length ? "failed" : job.status;
    view.root.dataset.status = shown;
    view.status.textContent = statusText(shown);
    view.status.dataset.status = shown;
    const engine = job.engine ? ` · ${job.engine}` : "";
    const count = t(failed ? "files.countFailed" : "files.count", { n: job.files.length, failed });
    view.meta.textContent = `${formatTime(job.created)} · ${count}${engine}`;
    const text = progressText(job);
    setProgress(view.bar, job.percent, text);
    view.text.textContent = text;
    view.downloads.hidden = !job.files.some((f) => f.status === "done");
    // Only a job still queued or running can be cancelled; moving focus off a vanishing button first.
    if (!ACTIVE.has(job.status) && document.activeElement === view.cancel) ui.jobsTitle.focus();
    view.cancel.hidden = !ACTIVE.has(job.status);
    for (const file of job.files) {
      fileNames.set(String(file.id), file.name);
      let row = view.rows.get(file.id);
      if (!row) {
        row = buildFileRow(file);
        view.rows.set(file.id, row);
        view.files.append(row.root);
      }
      updateFileRow(row, file);
      const before = lastStatus.get(`file:${file.id}`);
      if (before && before !== file.status && !ACTIVE.has(file.status)) {
        news.push(
          file.status === "failed"
            ? { key: "files.fileFailed", params: { name: file.name, error: file.error || t("files.noReason") } }
            : { key: file.status === "done" ? "files.fileDone" : "files.fileCancelled", params: { name: file.name } },
        );
      }
      lastStatus.set(`file:${file.id}`, file.status);
    }
    const before = lastStatus.get(`job:${job.id}`);
    if (before && ACTIVE.has(before) && !ACTIVE.has(job.status)) {
      news.push({ key: job.status === "cancelled" ? "files.jobCancelled" : "files.jobFinished", params: { id: job.id } });
    }
    lastStatus.set(`job:${job.id}`, job.status);
  });
  for (const [id, view] of jobViews) {
    if (seen.has(id)) continue;
    view.root.remove();
    jobViews.delete(id);
  }
  ui.jobsEmpty.hidden = jobs.length > 0;
  // History results found before the jobs arrived show "file 12": name them now.
  for (const hit of ui.history.querySelectorAll('.hit[data-kind="file"]')) {
    const name = fileNames.get(hit.dataset.source);
    if (name) hit.querySelector(".hit-title").textContent = name;
  }
  if (news.length) {
    const failedNews = news.some((n) => n.key === "files.fileFailed");
    showMessage(news, failedNews ? "error" : "info", "jobs");
  }
}

async function cancelJob(id) {
  if (!confirm(t("files.confirmCancel", { id }))) return;
  try {
    await api(`api/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    showMessage({ key: "files.jobCancelled", params: { id } }, "info", "cancelled");
    refreshJobs();
  } catch (error) {
    report(error, error.status === 409 ? "files.notCancelled" : "files.cancelFailed");
  }
}

async function deleteJob(id) {
  if (!confirm(t("files.confirmDelete", { id }))) return;
  try {
    await api(`api/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
    const view = jobViews.get(id);
    if (view) {
      view.root.remove();
      jobViews.delete(id);
    }
    ui.jobsEmpty.hidden = jobViews.size > 0;
    ui.jobsTitle.focus(); // the button that had focus is gone
    showMessage({ key: "files.jobDeleted", params: { id } }, "info", "deleted");
    refreshJobs();
  } catch (error) {
    report(error, error.status === 409 ? "files.notDeleted" : "files.deleteFailed");
  }
}

// --- history: search, grouped by live session or file ----------------------------------------------
/** A yyyy-mm-dd date input -> Unix seconds at local midnight (plus `days`), or null when empty. */
function dayStart(value, days = 0) {
  if (!value) return null;
  const [year, month, day] = value.split("-").map(Number);
  return new Date(year, month - 1, day + days).getTime() / 1000;
}

async function searchHistory() {
  const params = new URLSearchParams();
  const q = ui.q.value.trim();
  const since = dayStart(ui.since.value);
  const until = dayStart(ui.until.value, 1); // the whole "to" day
  if (since !== null && until !== null && until <= since) {
    showMessage({ key: "files.badDates" }, "error", "dates");
    return;
  }
  if (q) params.set("q", q);
  if (since !== null) params.set("since", String(since));
  if (until !== null) params.set("until", String(until));
  const seq = ++historySeq;
  ui.historyCount.textContent = t("files.searching");
  try {
    const { results } = await (await api(`api/history?${params}`)).json();
    if (seq !== historySeq) return;
    renderHistory(results, q);
  } catch (error) {
    if (seq !== historySeq) return;
    ui.historyCount.textContent = "";
    report(error, "files.searchFailed");
  }
}

/** `text` with each occurrence of `q` (case-insensitive) in a <mark>; text nodes only. */
function highlighted(text, q) {
  if (!q) return [text];
  const parts = [];
  const lower = text.toLowerCase();
  const needle = q.toLowerCase();
  let at = 0;
  for (let i = lower.indexOf(needle); i !== -1; i = lower.indexOf(needle, at)) {
    if (i > at) parts.push(text.slice(at, i));
    parts.push(h("mark", { text: text.slice(i, i + needle.length) }));
    at = i + needle.length;
  }
  parts.push(text.slice(at));
  return parts;
}

function renderHistory(rows, q) {
  const groups = new Map();
  for (const row of rows) {
    const key = `${row.kind}:${row.source}`;
    if (!groups.has(key)) groups.set(key, { kind: row.kind, source: row.source, created: row.created, engine: row.engine, rows: [] });
    const group = groups.get(key);
    group.created = Math.max(group.created, row.created);
    group.rows.push(row);
  }
  ui.history.replaceChildren(...[...groups.values()].map((group) => historyGroup(group, q)));
  const kinds = [...groups.values()].map((g) => g.kind);
  const sessions = kinds.filter((k) => k === "live").length;
  const files = kinds.length - sessions;
  ui.historyCount.textContent = rows.length
    ? t("files.found", { n: rows.length, q, sessions, files }) +
      (rows.length >= HISTORY_LIMIT ? t("files.newest", { limit: HISTORY_LIMIT }) : "")
    : t("files.nothingFound", { q });
}

function historyGroup(group, q) {
  const live = group.kind === "live";
  const name = live ? group.source : fileNames.get(group.source) || t("files.fileNumber", { id: group.source });
  const exportBase = live ? `api/sessions/${encodeURIComponent(group.source)}` : `api/files/${encodeURIComponent(group.source)}`;
  const lines = [...group.rows]
    .sort((a, b) => a.start_ms - b.start_ms)
    .map((row) => h("li", {}, h("time", { text: `[${shortTime(row.start_ms)}]` }), " ", ...highlighted(row.text, q)));
  const actions = h(
    "div",
    { class: "hit-actions" },
    h(
      "span",
      { class: "downloads", role: "group", "aria-label": t(live ? "files.downloadSession" : "files.downloadFileNamed", { name }) },
      t("common.download"),
      ...FILE_FORMATS.map(([fmt, label]) => downloadLink(`${exportBase}/export.${fmt}`, label, name)),
    ),
  );
  const root = h(
    "li",
    { class: "hit", "data-kind": group.kind, "data-source": group.source },
    h(
      "div",
      { class: "hit-head" },
      h("span", { class: "badge", "data-kind": group.kind, text: t(live ? "files.liveSession" : "files.file") }),
      h("h3", { class: "hit-title", text: name }),
      group.engine ? h("span", { class: "muted hit-engine", text: group.engine }) : null,
      h("time", { class: "muted", dateTime: new Date(group.created * 1000).toISOString(), text: formatTime(group.created) }),
    ),
    h("ol", { class: "hit-lines" }, ...lines),
    actions,
  );
  if (live) {
    const remove = h("button", {
      type: "button",
      class: "delete",
      text: t("files.deleteSession"),
      "aria-label": t("files.deleteSessionLabel", { name }),
    });
    remove.addEventListener("click", () => deleteSession(group.source, root));
    actions.append(remove);
  }
  return root;
}

async function deleteSession(sessionId, element) {
  if (!confirm(t("files.confirmDeleteSession", { id: sessionId }))) return;
  try {
    await api(`api/sessions/${encodeURIComponent(sessionId)}`, { method: "DELETE" });
    element.remove();
    ui.q.focus();
    showMessage({ key: "files.sessionDeleted", params: { id: sessionId } }, "info", "deleted");
  } catch (error) {
    report(error, "files.deleteFailed");
  }
}

/** After a language switch: rebuild what this module wrote (jobs, history, engine names, message). */
function relabel() {
  if (shownMessage) ui.message.textContent = textOf(shownMessage);
  for (const view of jobViews.values()) view.root.remove();
  jobViews.clear();
  renderQueue();
  if (!unauthorized) {
    loadEngines();
    refreshJobs();
    if (ui.historyCount.textContent) searchHistory();
  }
}

// --- start ---------------------------------------------------------------------------------------
setupToken();
setupChoosing();
loadOptions();
loadEngines();
renderQueue();
ui.historyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  searchHistory();
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && !unauthorized) refreshJobs();
});
onLanguageChange(relabel);
refreshJobs();
searchHistory();
