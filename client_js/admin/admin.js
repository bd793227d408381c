// Admin page (/admin, admin token): the devices here, the loaded engines with their device and
// memory, the batch sizes (GET /admin/devices) and the "clear GPU cache" button (POST
// /admin/gpu/clear-cache, every engine; each says what was freed). Texts: client_js/i18n.js.

import { locale, onLanguageChange, t, textOf } from "../i18n.js";

const ROOT = new URL("../../", import.meta.url); // works behind a proxy that mounts the server under a path
const $ = (id) => document.getElementById(id);
// The page itself opened with the admin token (?token= or a header); the data requests carry it too.
const token = new URLSearchParams(location.search).get("token") || "";
let report = null; // the last GET /admin/devices answer and the last clear: drawn again after a switch
let cleared = null;
let shown = null;

function show(item, kind = "info") {
  shown = item || null;
  $("message").dataset.kind = kind;
  $("message").textContent = item ? textOf(item) : "";
}

async function call(path, method = "GET") {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(new URL(path, ROOT), { method, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  return `${(n / 2 ** 20).toLocaleString(locale(), { maximumFractionDigits: 0 })} MiB`;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const [text, number] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (number) td.className = "number";
    tr.append(td);
  }
  return tr;
}

function memoryText(memory) {
  if (memory.where === "CPU") return t("admin.cpu");
  if ("reserved_bytes" in memory) {
    return t("admin.torchMemory", { allocated: bytes(memory.allocated_bytes), reserved: bytes(memory.reserved_bytes) });
  }
  return t("admin.ct2Memory");
}

function render() {
  if (report) {
    $("devices").replaceChildren(
      ...report.devices.map((d) => {
        const m = d.memory || {};
        const name = d.id === "cpu" ? t("admin.cpu") : d.name || t("admin.unnamed");
        return row([[d.id], [name], [d.seen_by.join(", ")], [bytes(m.total_bytes), true], [bytes(m.free_bytes), true],
          [bytes(m.torch_allocated_bytes), true], [bytes(m.torch_reserved_bytes), true]]);
      }),
    );
    $("engines").replaceChildren(
      ...report.engines.map((e) => row([[e.name], [e.model], [e.device === "cpu" ? t("admin.cpu") : e.device],
        [e.runtime], [memoryText(e.memory)], [t(e.live ? "admin.live" : "admin.filesOnly")]])),
    );
    $("batch").replaceChildren(
      ...Object.entries(report.batch).map(([key, value]) => row([[t(`admin.batch.${key}`)], [String(value), true]])),
      row([[t("admin.requestedDevice")], [report.requested_device]]),
    );
  }
  if (cleared) {
    $("cleared").replaceChildren(
      ...cleared.engines.map((e) => {
        const what = e.cleared
          ? t("admin.freed", { bytes: bytes(e.released_bytes), device: e.device })
          : e.device === "cpu" ? t("admin.nothingOnCpu") : t("admin.nothingCt2", { device: e.device });
        return row([[e.engine], [what]]);
      }),
    );
  }
}

async function refresh() {
  try {
    report = await call("admin/devices");
    render();
  } catch (error) {
    show({ key: "admin.failed", params: { message: error.message } }, "error");
  }
}

$("refresh").addEventListener("click", refresh);
$("clear").addEventListener("click", async () => {
  $("clear").disabled = true;
  try {
    cleared = await call("admin/gpu/clear-cache", "POST");
    show({ key: "admin.clearedAll", params: { n: cleared.engines.length } });
    await refresh();
  } catch (error) {
    show({ key: "admin.failed", params: { message: error.message } }, "error");
  } finally {
    $("clear").disabled = false;
  }
});
onLanguageChange(() => {
  render();
  show(shown, $("message").dataset.kind);
});
refresh();
