/** The WebSocket class to use, and the few things every implementation of it needs done safely. */

/** WebSocket.OPEN, the same for every implementation. */
export const OPEN = 1;

/**
 * An Error that says how the connection ended: its close code and reason, and whether retrying
 * cannot help (`fatal`, with the server's error `code`).
 * @typedef {Error & {closeCode?: number, closeReason?: string, fatal?: boolean, code?: string}} CloseError
 */

/**
 * The platform's WebSocket, else the `ws` package's (Node without a built-in one).
 * @returns {Promise<import("../livecaption.js").WebSocketConstructor>}
 */
export async function defaultWebSocket() {
  if (typeof globalThis.WebSocket === "function") return globalThis.WebSocket;
  const name = "ws"; // a variable keeps bundlers (and tsc) from resolving it
  try {
    const module = await import(/* webpackIgnore: true */ /* @vite-ignore */ name);
    return module.WebSocket ?? module.default;
  } catch (error) {
    const why = /** @type {Error} */ (error).message;
    throw new Error(`no WebSocket available: this platform has none and the 'ws' package could not be loaded (${why}); install it (npm install ws) or pass the WebSocket option`);
  }
}

/**
 * Marks an error with the close code and reason it stands for; returns it.
 * @param {Error} error
 * @param {number} code
 * @param {string} [reason]
 * @returns {CloseError}
 */
export function withCode(error, code, reason = "") {
  const marked = /** @type {CloseError} */ (error);
  marked.closeCode = code;
  marked.closeReason = reason;
  return marked;
}

/**
 * Close a socket, whatever state it is in: an invalid code or reason falls back to a plain close.
 * @param {WebSocket} ws
 * @param {number} code
 * @param {string} reason
 */
export function safeClose(ws, code, reason) {
  try {
    ws.close(code, reason);
  } catch {
    try {
      ws.close();
    } catch {
      // already closed
    }
  }
}
