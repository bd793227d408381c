/** Checks of constructor options: a bad value throws at once, naming the option. */

const DEFAULT_RECONNECT = Object.freeze({ enabled: true, initialDelayMs: 250, maxDelayMs: 8000, maxAttempts: Infinity });

/**
 * The `reconnect` option as a complete policy.
 * @param {boolean | import("../livecaption.js").ReconnectOptions | undefined} value
 * @returns {Required<import("../livecaption.js").ReconnectOptions>}
 */
export function reconnectPolicy(value) {
  if (value === false) return { ...DEFAULT_RECONNECT, enabled: false };
  if (value === undefined || value === true) return { ...DEFAULT_RECONNECT };
  if (typeof value !== "object" || value === null) throw new TypeError("option reconnect must be an object or a boolean");
  const policy = { ...DEFAULT_RECONNECT, ...value };
  positiveNumber(policy.initialDelayMs, "reconnect.initialDelayMs");
  positiveNumber(policy.maxDelayMs, "reconnect.maxDelayMs");
  if (!(policy.maxAttempts >= 0)) throw new RangeError(`reconnect.maxAttempts must be >= 0; got ${policy.maxAttempts}`);
  policy.enabled = policy.enabled !== false;
  return policy;
}

/**
 * @param {unknown} value
 * @param {string} name
 * @returns {number}
 */
export function positiveNumber(value, name) {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive number; got ${JSON.stringify(value)}`);
  }
  return value;
}

/**
 * @param {unknown} value
 * @param {string} name
 * @returns {number | undefined}
 */
export function optionalNumber(value, name) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value)) throw new TypeError(`option ${name} must be a number; got ${JSON.stringify(value)}`);
  return value;
}

/**
 * @param {unknown} value
 * @param {string} name
 * @returns {string | undefined}
 */
export function optionalString(value, name) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw new TypeError(`option ${name} must be a string; got ${JSON.stringify(value)}`);
  return value;
}

/**
 * @param {unknown} value
 * @param {string} name
 * @returns {boolean | undefined}
 */
export function optionalBoolean(value, name) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "boolean") throw new TypeError(`option ${name} must be true or false; got ${JSON.stringify(value)}`);
  return value;
}
