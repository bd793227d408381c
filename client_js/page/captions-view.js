// The page's caption scrollback: finals appended with [mm:ss] times, the partial below them,
// following the newest line until the user scrolls up (and again once they return to the end).

import { shortTime } from "./captions-export.js";
import { partialLine } from "./partial.js";

const BOTTOM_SLACK_PX = 8; // "at the end" despite sub-pixel rounding

export class CaptionView {
  /**
   * scroller: the scrollable box; list: the <ol> of finals (the ARIA live region);
   * partial: the element for the open segment; jump: a button shown while not following.
   */
  constructor({ scroller, list, partial, jump }) {
    this.scroller = scroller;
    this.list = list;
    this.partial = partialLine(partial);
    this.jump = jump;
    this.captions = []; // {segmentId, startMs, endMs, text} in arrival order, for downloads
    this.seen = new Set(); // segment ids already shown (replays after a reconnect come again)
    this.following = true;
    scroller.addEventListener("scroll", () => this._onScroll(), { passive: true });
    if (jump) jump.addEventListener("click", () => this.scrollToEnd(true));
  }

  _atEnd() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight <= BOTTOM_SLACK_PX;
  }

  _onScroll() {
    this.following = this._atEnd();
    if (this.jump) this.jump.hidden = this.following;
  }

  _follow() {
    if (this.following) this.scroller.scrollTop = this.scroller.scrollHeight;
    else if (this.jump) this.jump.hidden = false;
  }

  scrollToEnd(byUser = false) {
    const reduce = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    this.following = true;
    if (this.jump) this.jump.hidden = true;
    this.scroller.scrollTo({ top: this.scroller.scrollHeight, behavior: byUser && !reduce ? "smooth" : "auto" });
  }

  /** A final reply's caption; returns false for an empty or already-shown segment. */
  addFinal({ segmentId, startMs, endMs, text }) {
    const clean = String(text || "").trim();
    if (segmentId !== undefined && segmentId !== null) {
      if (this.seen.has(segmentId)) return false;
      this.seen.add(segmentId);
    }
    this.partial.clear();
    if (!clean) {
      this._follow();
      return false;
    }
    this.captions.push({ segmentId, startMs, endMs, text: clean });
    const item = document.createElement("li");
    item.className = "final";
    const time = document.createElement("time");
    time.dateTime = `PT${(Math.max(0, startMs) / 1000).toFixed(1)}S`;
    time.textContent = `[${shortTime(startMs)}]`;
    time.setAttribute("aria-hidden", "true"); // the live region announces the words, not the clock
    const words = document.createElement("span");
    words.className = "text";
    words.textContent = clean;
    item.append(time, " ", words);
    this.list.appendChild(item);
    this._follow();
    return true;
  }

  setPartial(stable, unstable) {
    this.partial.set(stable, unstable);
    this._follow();
  }

  clearPartial() {
    this.partial.clear();
  }

  clear() {
    this.list.textContent = "";
    this.partial.clear();
    this.captions = [];
    this.seen.clear();
    this.scrollToEnd();
  }
}
