// Interface language of every page (English or Simplified Chinese): which one, t(key, params),
// and the data-i18n markup that static text carries.
//
// The choice: ?lang= in the address (this load only), else what the language switch stored, else
// the browser's languages (the first that is zh* or en*; zh-TW and zh-HK get Simplified Chinese),
// else English. Markup: data-i18n="key" sets an element's text; data-i18n-html="key" its markup
// (dictionary strings only, never data); data-i18n-attr="title:key; aria-label:key" attributes.
// An element with data-language-switch gets the switch (a <select>) put inside it.

import en from "./i18n/en.js";
import zh from "./i18n/zh.js";

export const LANGUAGES = Object.freeze({
  en: Object.freeze({ tag: "en", name: "English" }),
  zh: Object.freeze({ tag: "zh-CN", name: "简体中文" }),
});
const DICTIONARIES = { en, zh };
const STORAGE_KEY = "livecaption.uiLanguage";
const EVENT = "livecaption:language";

/** The interface language for a list of BCP 47 tags (navigator.languages), "en" when none fits. */
export function detectLanguage(tags) {
  for (const tag of tags || []) {
    const base = String(tag).toLowerCase().split(/[-_]/)[0];
    if (base in DICTIONARIES) return base;
  }
  return "en";
}

function stored() {
  try {
    return localStorage.getItem(STORAGE_KEY) || "";
  } catch {
    return ""; // storage blocked: the browser's language decides
  }
}

function initialLanguage() {
  if (typeof window === "undefined") return "en"; // Node (tests of the dictionaries)
  const asked = new URLSearchParams(location.search).get("lang");
  if (asked) return detectLanguage([asked]);
  const saved = stored();
  if (saved in DICTIONARIES) return saved;
  return detectLanguage(navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language]);
}

let current = initialLanguage();

/** "en" or "zh". */
export const language = () => current;
/** The BCP 47 tag of the interface language ("en", "zh-CN"): <html lang>, dates and numbers. */
export const locale = () => LANGUAGES[current].tag;

/**
 * The text for `key` in the interface language (English when the key is missing there), with
 * {name} replaced by params.name; a dictionary entry may be a function of params (plurals).
 */
export function t(key, params = {}) {
  const entry = DICTIONARIES[current][key] ?? en[key];
  if (entry === undefined) return key;
  if (typeof entry === "function") return entry(params);
  return entry.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? textOf(params[name]) : whole));
}

/** An Error whose message is t(key, params) and which can be shown again in another language. */
export class LocalizedError extends Error {
  constructor(key, params = {}) {
    super(t(key, params));
    this.key = key;
    this.params = params;
  }
}

/**
 * The text of a message kept as data: {key, params} or a LocalizedError is translated (again,
 * after a switch), a list is joined as sentences, an Error gives its message, anything else String().
 */
export function textOf(item) {
  if (Array.isArray(item)) return item.map(textOf).join(t("i18n.sentenceGap"));
  if (item && typeof item === "object" && typeof item.key === "string") return t(item.key, item.params || {});
  if (item instanceof Error) return item.message;
  return String(item ?? "");
}

/** Applies the data-i18n markup under `root`; on the document, <html lang> too. */
export function applyTranslations(root = document) {
  if (root === document) document.documentElement.lang = locale();
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-html]")) el.innerHTML = t(el.dataset.i18nHtml);
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":").map((s) => s.trim());
      if (attr && key) el.setAttribute(attr, t(key));
    }
  }
}

/** Switches the interface language, remembers it, and tells the page (onLanguageChange). */
export function setLanguage(lang) {
  if (!(lang in DICTIONARIES) || lang === current) return;
  current = lang;
  try {
    localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    /* storage blocked: the choice lasts for this page load */
  }
  applyTranslations(document);
  for (const select of document.querySelectorAll("select.ui-language")) select.value = lang;
  window.dispatchEvent(new CustomEvent(EVENT, { detail: { language: lang } }));
}

/** Calls `listener` after each switch, for text the page builds itself. */
export function onLanguageChange(listener) {
  window.addEventListener(EVENT, listener);
}

/** Puts the language switch into `container`: a labelled <select> of the interface languages. */
export function mountLanguageSwitch(container) {
  const label = document.createElement("label");
  label.className = "ui-language-label";
  const text = document.createElement("span");
  text.dataset.i18n = "i18n.switch";
  const select = document.createElement("select");
  select.className = "ui-language";
  select.id = container.dataset.languageSwitch || "ui-language";
  // The options name themselves in their own language, so anyone can find theirs.
  for (const [code, { tag, name }] of Object.entries(LANGUAGES)) {
    const option = new Option(name, code);
    option.lang = tag;
    select.append(option);
  }
  select.value = current;
  select.addEventListener("change", () => setLanguage(select.value));
  label.append(text, " ", select);
  container.replaceChildren(label);
  text.textContent = t("i18n.switch");
}

if (typeof document !== "undefined") {
  for (const container of document.querySelectorAll("[data-language-switch]")) mountLanguageSwitch(container);
  applyTranslations(document);
}
