/** CaptionSubscriber: follow a session's captions (overlays, other displays). */
import { CaptionConnection } from "./connection.js";
import { FATAL_CLOSE_CODES, isSessionId, socketUrl } from "./protocol.js";

export class CaptionSubscriber extends CaptionConnection {
  /**
   * @param {string} url the caption server, e.g. ws://host:port/ (the path becomes /subscribe)
   * @param {string} sessionId the session to follow; it need not exist yet
   * @param {import("../livecaption.js").ConnectionOptions} [options]
   */
  constructor(url, sessionId, options = {}) {
    super(options);
    if (!isSessionId(sessionId)) {
      throw new RangeError(`sessionId must be 1..64 characters of A-Z a-z 0-9 _ -; got ${JSON.stringify(sessionId)}`);
    }
    this._sessionId = sessionId;
    const target = new URL(socketUrl(url, options.token));
    if (!target.pathname.endsWith("/subscribe")) target.pathname = "/subscribe";
    target.searchParams.set("session", sessionId);
    this._url = target.toString();
  }

  /**
   * Connect; resolves on the server's 'subscribed' reply. Stored finals follow as 'final' events.
   * @returns {Promise<import("../livecaption.js").ReadyDetail>}
   */
  connect() {
    return this._start();
  }

  _socketUrl() {
    return this._url;
  }

  /** @returns {"subscribed"} */
  _handshakeType() {
    return "subscribed";
  }

  _onEnd() {
    // A stream of the session ended; the session may go on with another, so keep listening.
  }

  /** @param {number} code */
  _isFatal(code) {
    // A display dropped for reading too slowly (1008) may come back: it only reads. (A refused
    // token is an error reply before 'subscribed', which stops it regardless.)
    return code !== 1008 && FATAL_CLOSE_CODES.includes(code);
  }
}
