// The speech-language menu of the live page and /files: the server's default, automatic
// detection, or one language, sent per stream (CaptionClient's `language`) or per job.

import { onLanguageChange, t } from "../i18n.js";

// The server does not list languages: the ones FunASR's SenseVoice knows (zh en yue ja ko) and
// the Whisper languages most asked for. Any other code still works from the API.
export const SPEECH_LANGUAGES = Object.freeze(["zh", "en", "yue", "ja", "ko", "fr", "de", "es", "it", "pt", "ru"]);
const CHOICES = ["", "auto", ...SPEECH_LANGUAGES]; // "" = leave it to the server's setting

function label(code) {
  if (code === "") return t("lang.default");
  if (code === "auto") return t("lang.auto");
  return `${t(`lang.${code}`)} (${code})`;
}

/** Fills `select` with the choices, selects `chosen` (when offered) and relabels on a switch. */
export function setupLanguageMenu(select, chosen = "") {
  select.replaceChildren(...CHOICES.map((code) => new Option(label(code), code)));
  select.value = CHOICES.includes(chosen) ? chosen : "";
  onLanguageChange(() => {
    for (const option of select.options) option.textContent = label(option.value);
  });
}

/** A stored choice that is still offered, else "" (the server's default). */
export const knownLanguage = (code) => (CHOICES.includes(code) ? code : "");
