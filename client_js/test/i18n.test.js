// The interface dictionaries (i18n/en.js, i18n/zh.js): the same keys and values in both, and
// every key the pages use is in them.

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { detectLanguage, t } from "../i18n.js";
import en from "../i18n/en.js";
import zh from "../i18n/zh.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const EXTRA_ZH = /^status\.key\./; // /healthz field names: English shows them as they are
const placeholders = (text) => [...String(text).matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

test("both languages have the same keys and the same {values}", () => {
  const missing = Object.keys(en).filter((k) => !(k in zh));
  const extra = Object.keys(zh).filter((k) => !(k in en) && !EXTRA_ZH.test(k));
  assert.deepEqual(missing, []);
  assert.deepEqual(extra, []);
  for (const key of Object.keys(en)) {
    if (typeof en[key] === "function" || typeof zh[key] === "function") continue;
    assert.deepEqual(placeholders(zh[key]), placeholders(en[key]), key);
  }
});

test("plural entries give text in both languages", () => {
  const params = { n: 2, id: "j1", duplicates: "a.wav", failed: 1, q: "门", sessions: 1, files: 1 };
  for (const key of Object.keys(en)) {
    for (const dict of [en, zh]) {
      const entry = dict[key];
      const text = typeof entry === "function" ? entry(params) : entry;
      assert.ok(typeof text === "string" && !text.includes("undefined"), key);
    }
  }
  assert.equal(en["files.found"]({ n: 2, q: "morning", sessions: 1, files: 1 }), "2 captions containing “morning” from 1 live session and 1 file");
  assert.equal(zh["files.found"]({ n: 2, q: "早上", sessions: 1, files: 1 }), "1 个实时会话和1 个文件中有 2 条包含“早上”的字幕");
});

function sources(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (["node_modules", "test", "i18n"].includes(entry.name)) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sources(path));
    else if (/\.(js|html)$/.test(entry.name)) out.push(path);
  }
  return out;
}

test("every key the pages name is in the dictionary", () => {
  const files = [...sources(ROOT), join(ROOT, "..", "server", "status.html")];
  const used = new Set();
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/\bt\("([\w.]+)"/g)) used.add(m[1]);
    for (const m of text.matchAll(/key: (?:[^"{}]*\? )?"([\w.]+)"(?: : "([\w.]+)")?/g)) used.add(m[1]).add(m[2] || m[1]);
    for (const m of text.matchAll(/(?:LocalizedError|MicError)\((?:"[\w-]+", )?"([\w.]+)"/g)) used.add(m[1]);
    for (const m of text.matchAll(/data-i18n(?:-html)?="([\w.]+)"/g)) used.add(m[1]);
    for (const m of text.matchAll(/data-i18n-attr="([^"]+)"/g)) {
      for (const pair of m[1].split(";")) used.add(pair.split(":")[1].trim());
    }
  }
  assert.ok(used.size > 100, `only ${used.size} keys found`);
  used.delete("key"); // i18n.js's own comment
  assert.deepEqual([...used].filter((k) => !(k in en)), []);
});

test("the browser's languages choose the interface language", () => {
  assert.equal(detectLanguage(["zh-CN"]), "zh");
  assert.equal(detectLanguage(["zh-TW", "en"]), "zh");
  assert.equal(detectLanguage(["zh_HK"]), "zh");
  assert.equal(detectLanguage(["fr-FR", "zh-CN"]), "zh"); // the first one there is a dictionary for
  assert.equal(detectLanguage(["en-GB", "zh-CN"]), "en");
  assert.equal(detectLanguage(["fr", "de"]), "en");
  assert.equal(detectLanguage([]), "en");
});

test("t fills in values and falls back to the key", () => {
  assert.equal(t("files.jobDeleted", { id: "abc" }), "Job abc deleted.");
  assert.equal(t("files.failedWith", { what: { key: "files.uploadFailed" }, text: "x" }), "Upload failed: x");
  assert.equal(t("no.such.key"), "no.such.key");
});
