/**
 * Structured logs for journald: one JSON object per line, `{"ts","level","msg","fields"?}`.
 *
 * - Levels debug < info < warn < error; lines below the configured level are dropped before any formatting.
 * - Secrets never reach the log: passwords in URLs (`rtsp://user:pw@cam` → `rtsp://user:***@cam`), secret-looking
 *   query parameters (`?token=…`), and the values of fields named like password/secret/token/authorization are
 *   masked, in the message, in every string field (nested too) and in error messages and stacks.
 * - Repeats are rate-limited: the same level + message (+ the `camera` field, so cameras do not hide each other)
 *   is written at most once per `repeatWindowMs`; what was held back is reported as `"suppressed": N` on the next
 *   line written for that message after the window, or by `flush()` (call it on shutdown).
 * - Under systemd (JOURNAL_STREAM set) each line starts with a syslog priority prefix `<3>`…`<7>`, which journald
 *   strips and stores as PRIORITY, so `journalctl -p warning` works; the stored message is the bare JSON.
 */
import process from "node:process";
import { FlorenceError, describeValue } from "../errors.ts";
import { MASK, maskSecrets } from "./redact.ts";

export { maskSecrets } from "./redact.ts";

export type LogLevel = "debug" | "info" | "warn" | "error";
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

export type LogFields = Record<string, unknown>;

export interface LoggerOptions {
  /** Lowest level written; default "info". */
  level?: LogLevel;
  /** Receives each complete line including its "\n"; default: process.stderr. */
  write?: (line: string) => void;
  /** Milliseconds since the epoch; default Date.now. */
  now?: () => number;
  /** Identical messages are written at most once per this many milliseconds; default 10000, 0 disables. */
  repeatWindowMs?: number;
  /** Distinct messages tracked for rate limiting (oldest forgotten first); default 1000. */
  maxTrackedMessages?: number;
  /** Prefix lines with `<N>` for journald; default: when `env.JOURNAL_STREAM` is set. */
  journalPriorityPrefix?: boolean;
  /** Environment used for the journald default; default process.env. */
  env?: Record<string, string | undefined>;
  /** Fields added to every line (a component name, say). */
  fields?: LogFields;
  /** "json" (default: one object per line, for journald and log shippers) or "text" (for a person at a terminal). */
  format?: LogFormat;
}

export type LogFormat = "json" | "text";
export const LOG_FORMATS = ["auto", "json", "text"] as const;

/** "auto" is text on a terminal that is not journald's stream, JSON everywhere else. */
export function resolveLogFormat(choice: (typeof LOG_FORMATS)[number], env: Record<string, string | undefined> = process.env, tty = process.stderr.isTTY === true): LogFormat {
  if (choice !== "auto") return choice;
  return tty && !env["JOURNAL_STREAM"] ? "text" : "json";
}

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
// syslog priorities: err 3, warning 4, info 6, debug 7
const PRIORITY: Record<LogLevel, number> = { debug: 7, info: 6, warn: 4, error: 3 };

// field names whose values are secrets, matched by word (snake, kebab or camel case): "mqtt_password", "hfToken"
const SECRET_WORDS = new Set(["password", "passwd", "pass", "pwd", "secret", "token", "authorization", "auth", "credential", "credentials", "cookie", "apikey"]);
const SECRET_PHRASES = /(^|_)(api_key|private_key|access_key|secret_key)(_|$)/;
const MAX_DEPTH = 6;
const MAX_STRING = 4096;

export function isLogLevel(value: unknown): value is LogLevel {
  return typeof value === "string" && (LOG_LEVELS as readonly string[]).includes(value);
}

function checkLevel(level: unknown, where: string): LogLevel {
  if (!isLogLevel(level)) {
    throw new FlorenceError("INVALID_ARGUMENT", `${where}: log level must be one of ${LOG_LEVELS.join(", ")}, got ${describeValue(level)}`, {
      fix: 'use "debug", "info", "warn" or "error"',
    });
  }
  return level;
}

/** "max_new_tokens" is not a secret, "hf_token", "mqttPassword" and "x-api-key" are. */
export function isSecretKey(key: string): boolean {
  const snake = key.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase().replace(/[^a-z0-9]+/g, "_");
  return snake.split("_").some((word) => SECRET_WORDS.has(word)) || SECRET_PHRASES.test(snake);
}

/** A JSON-safe, secret-free copy of a field value (errors, bigints, typed arrays, cycles handled). */
function sanitize(value: unknown, key: string | undefined, depth: number, seen: Set<object>): unknown {
  if (key !== undefined && value !== undefined && value !== null && value !== "" && isSecretKey(key)) return MASK;
  switch (typeof value) {
    case "string":
      return maskSecrets(value.length > MAX_STRING ? `${value.slice(0, MAX_STRING)}…` : value);
    case "number":
      return Number.isFinite(value) ? value : String(value);
    case "boolean":
      return value;
    case "bigint":
      return value.toString();
    case "undefined":
      return undefined;
    case "symbol":
    case "function":
      return String(value);
  }
  if (value === null) return null;
  const object = value as object;
  if (seen.has(object)) return "[circular]";
  if (depth >= MAX_DEPTH) return "[…]";
  if (value instanceof Error) return sanitizeError(value, depth, seen);
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? "Invalid Date" : value.toISOString();
  if (ArrayBuffer.isView(value)) return `[${value.constructor.name} ${value.byteLength} bytes]`;
  seen.add(object);
  try {
    if (Array.isArray(value)) return value.slice(0, 100).map((item) => sanitize(item, undefined, depth + 1, seen) ?? null);
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      const clean = sanitize(v, k, depth + 1, seen);
      if (clean !== undefined) out[k] = clean;
    }
    return out;
  } finally {
    seen.delete(object);
  }
}

function sanitizeError(error: Error, depth: number, seen: Set<object>): Record<string, unknown> {
  const out: Record<string, unknown> = { name: error.name, message: maskSecrets(error.message) };
  const code = (error as { code?: unknown }).code;
  if (code !== undefined) out["code"] = sanitize(code, undefined, depth + 1, seen);
  // a FlorenceError already says what was wrong and how to fix it; a stack only helps for unexpected errors
  if (!(error instanceof FlorenceError) && typeof error.stack === "string") out["stack"] = maskSecrets(error.stack);
  if (error.cause !== undefined) out["cause"] = sanitize(error.cause, undefined, depth + 1, seen);
  return out;
}

interface RepeatState {
  /** When the current window began (the last line actually written for this message). */
  windowStart: number;
  suppressed: number;
  level: LogLevel;
  msg: string;
  lastFields: LogFields | undefined;
}

/** A structured JSON-lines logger; see the module comment for the rules. */
export class Logger {
  readonly level: LogLevel;
  readonly #rank: number;
  readonly #write: (line: string) => void;
  readonly #now: () => number;
  readonly #windowMs: number;
  readonly #maxTracked: number;
  readonly #prefix: boolean;
  readonly #text: boolean;
  readonly #base: LogFields | undefined;
  /** Shared with child loggers, so rate limiting spans them. */
  readonly #repeats: Map<string, RepeatState>;
  readonly #lastSweep: { at: number };
  readonly #options: LoggerOptions;

  constructor(options: LoggerOptions = {}, shared?: { repeats: Map<string, RepeatState>; lastSweep: { at: number } }) {
    this.level = checkLevel(options.level ?? "info", "Logger");
    this.#rank = RANK[this.level];
    this.#write = options.write ?? ((line) => void process.stderr.write(line));
    this.#now = options.now ?? Date.now;
    const windowMs = options.repeatWindowMs ?? 10_000;
    if (!Number.isFinite(windowMs) || windowMs < 0) {
      throw new FlorenceError("INVALID_ARGUMENT", `Logger: repeatWindowMs must be a number >= 0, got ${describeValue(windowMs)}`, { fix: "pass e.g. 10000, or 0 to log every repeat" });
    }
    this.#windowMs = windowMs;
    const maxTracked = options.maxTrackedMessages ?? 1000;
    if (!Number.isSafeInteger(maxTracked) || maxTracked < 1) {
      throw new FlorenceError("INVALID_ARGUMENT", `Logger: maxTrackedMessages must be a positive integer, got ${describeValue(maxTracked)}`, { fix: "pass e.g. 1000" });
    }
    this.#maxTracked = maxTracked;
    this.#prefix = options.journalPriorityPrefix ?? Boolean((options.env ?? process.env)["JOURNAL_STREAM"]);
    this.#text = options.format === "text";
    this.#base = options.fields && Object.keys(options.fields).length > 0 ? options.fields : undefined;
    this.#repeats = shared?.repeats ?? new Map();
    this.#lastSweep = shared?.lastSweep ?? { at: this.#now() };
    this.#options = options;
  }

  /** A logger that adds `fields` to every line; same level, output and rate limiting. */
  child(fields: LogFields): Logger {
    return new Logger({ ...this.#options, fields: { ...this.#base, ...fields } }, { repeats: this.#repeats, lastSweep: this.#lastSweep });
  }

  enabled(level: LogLevel): boolean {
    return RANK[level] >= this.#rank;
  }

  debug(msg: string, fields?: LogFields): void {
    if (this.#rank <= 0) this.#log("debug", msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    if (this.#rank <= 1) this.#log("info", msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    if (this.#rank <= 2) this.#log("warn", msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.#log("error", msg, fields);
  }

  log(level: LogLevel, msg: string, fields?: LogFields): void {
    if (RANK[checkLevel(level, "Logger.log")] >= this.#rank) this.#log(level, msg, fields);
  }

  /** Writes the pending "suppressed" counts now (on shutdown, say). */
  flush(): void {
    const now = this.#now();
    for (const [key, state] of this.#repeats) {
      if (state.suppressed > 0) this.#writeSummary(state, now);
      this.#repeats.delete(key);
    }
    this.#lastSweep.at = now;
  }

  #log(level: LogLevel, rawMsg: string, fields: LogFields | undefined): void {
    const now = this.#now();
    const msg = maskSecrets(typeof rawMsg === "string" ? rawMsg : String(rawMsg));
    const merged = this.#base ? (fields ? { ...this.#base, ...fields } : this.#base) : fields;
    if (this.#windowMs > 0) {
      const camera = merged?.["camera"];
      const key = `${level}\u0000${msg}\u0000${typeof camera === "string" ? camera : ""}`;
      const state = this.#repeats.get(key);
      if (state && now - state.windowStart < this.#windowMs) {
        state.suppressed++;
        state.lastFields = merged;
        this.#sweep(now);
        return;
      }
      // this line carries its own held-back count; the sweep reports the other expired messages
      const suppressed = state?.suppressed ?? 0;
      if (state) this.#repeats.delete(key); // re-insert: the Map's order is oldest-window-first
      this.#repeats.set(key, { windowStart: now, suppressed: 0, level, msg, lastFields: merged });
      this.#sweep(now);
      if (this.#repeats.size > this.#maxTracked) this.#evictOldest(now);
      this.#emit(level, msg, merged, now, suppressed > 0 ? suppressed : undefined);
      return;
    }
    this.#emit(level, msg, merged, now, undefined);
  }

  /** Reports and forgets messages whose window ended without a new occurrence (at most once per window). */
  #sweep(now: number): void {
    if (now - this.#lastSweep.at < this.#windowMs) return;
    this.#lastSweep.at = now;
    for (const [key, state] of this.#repeats) {
      if (now - state.windowStart < this.#windowMs) break; // ordered by window start
      if (state.suppressed > 0) this.#writeSummary(state, now);
      this.#repeats.delete(key);
    }
  }

  #evictOldest(now: number): void {
    const first = this.#repeats.entries().next();
    if (first.done) return;
    const [key, state] = first.value;
    if (state.suppressed > 0) this.#writeSummary(state, now);
    this.#repeats.delete(key);
  }

  #writeSummary(state: RepeatState, now: number): void {
    this.#emit(state.level, state.msg, state.lastFields, now, state.suppressed);
    state.suppressed = 0;
  }

  #emit(level: LogLevel, msg: string, fields: LogFields | undefined, now: number, suppressed: number | undefined): void {
    const line: Record<string, unknown> = { ts: new Date(now).toISOString(), level, msg };
    if (fields) {
      const clean = sanitize(fields, undefined, 0, new Set()) as Record<string, unknown>;
      if (Object.keys(clean).length > 0) line["fields"] = clean;
    }
    if (suppressed !== undefined) {
      line["suppressed"] = suppressed;
      line["window_s"] = this.#windowMs / 1000;
    }
    let text: string;
    try {
      text = this.#text ? textLine(line) : JSON.stringify(line);
    } catch {
      text = JSON.stringify({ ts: line["ts"], level, msg, fields_error: "fields could not be serialised" });
    }
    this.#write(this.#prefix ? `<${PRIORITY[level]}>${text}\n` : `${text}\n`);
  }
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return new Logger(options);
}

/** `12:04:05 warn  camera demo stalled camera=demo reason="no frame for 10 s"`: the same content, for people. */
function textLine(line: Record<string, unknown>): string {
  const time = String(line["ts"]).slice(11, 19);
  const parts = [`${time} ${String(line["level"]).padEnd(5)} ${String(line["msg"])}`];
  const fields = (line["fields"] ?? {}) as Record<string, unknown>;
  for (const [key, value] of Object.entries(fields)) {
    const shown = typeof value === "string" ? (/^[^\s"=]+$/.test(value) ? value : JSON.stringify(value)) : JSON.stringify(value);
    parts.push(`${key}=${shown}`);
  }
  if (line["suppressed"] !== undefined) parts.push(`(${String(line["suppressed"])} more in ${String(line["window_s"])} s)`);
  return parts.join(" ");
}
