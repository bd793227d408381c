// The open segment's caption: stable words and unstable words in separate spans.
//
// Only a span whose text changed is touched, so words that are already stable never re-render
// (no flicker) while the unstable tail keeps changing at every partial.

const CJK = /[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]/;

/** A space between the spans only when both have words and the script uses spaces. */
function needsSpace(left, right) {
  if (!left || /\s$/.test(left) || /^\s/.test(right)) return false;
  return !(CJK.test(left[left.length - 1]) || CJK.test(right[0]));
}

/** Creates the two spans inside `element` (emptied) and returns an updater. */
export function partialLine(element) {
  element.textContent = "";
  const stable = document.createElement("span");
  stable.className = "stable";
  const unstable = document.createElement("span");
  unstable.className = "unstable";
  element.append(stable, unstable);
  let shownStable = "";
  let shownUnstable = "";

  function set(stableText, unstableText) {
    const s = stableText || "";
    const u = unstableText ? (needsSpace(s, unstableText) ? " " : "") + unstableText : "";
    if (s !== shownStable) stable.textContent = shownStable = s;
    if (u !== shownUnstable) unstable.textContent = shownUnstable = u;
    element.classList.toggle("empty", !s && !u);
  }

  return {
    element,
    stable,
    unstable,
    set,
    clear: () => set("", ""),
    get text() {
      return (shownStable + shownUnstable).trim();
    },
  };
}

/** stable/unstable of a partial reply; older servers (or online mode) may send only `text` deltas. */
export function partialParts(message, previous) {
  if (typeof message.stable === "string" || typeof message.unstable === "string") {
    return { stable: message.stable || "", unstable: message.unstable || "" };
  }
  // Append-only deltas: everything so far is stable.
  return { stable: ((previous && previous.stable) || "") + (message.text || ""), unstable: "" };
}
