/**
 * The shared checks of untyped input (JSON, YAML, message payloads, options from callers), so every reader asks the
 * same question and words the answer the same way: `<where><separator>must be <expected>, got <value> — <fix>`.
 * Each owner names the place (a config path like `cameras[0].source.fps`, or `camera "door": source.fps`), the error
 * code and how values are shown; the checks themselves exist only here.
 */
import { describeValue, FlorenceError, type ErrorCode } from "./errors.ts";

/** Where a value came from and how its owner words errors about it. */
export interface Where {
  /** The place, first in the message: a path (`cameras[0].tasks`) or prose (`mqtt reconnectMinMs`). */
  readonly name: string;
  /** Default CONFIG_INVALID. */
  readonly code?: ErrorCode | undefined;
  /** Between the name and the problem: ": " (default, path style) or " " (prose). */
  readonly separator?: string | undefined;
  /** Shows the offending value (default describeValue); e.g. to mask secrets. */
  readonly show?: ((value: unknown) => string) | undefined;
  /** How to fix it, when the owner has one sentence for every problem at this place. */
  readonly fix?: string | undefined;
}

/** The place one key further down a path: `model` → `model.threads`. */
export function child(where: Where, key: string): Where {
  return { ...where, name: `${where.name}.${key}` };
}

/** A plain mapping: an object that is neither null nor an array. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** Throws the owner's error for a bad value; pass `value` to show it as `, got …`. */
export function reject(where: Where, problem: string, options: { value?: unknown; fix?: string | undefined } = {}): never {
  const got = "value" in options ? `, got ${(where.show ?? describeValue)(options.value)}` : "";
  const fix = options.fix ?? where.fix;
  throw new FlorenceError(where.code ?? "CONFIG_INVALID", `${where.name}${where.separator ?? ": "}${problem}${got}`, fix ? { fix } : {});
}

export interface NumberRange {
  min: number;
  max: number;
  /** Only whole numbers. */
  int?: boolean | undefined;
  /** `min` itself is out of range: (min, max]. */
  aboveMin?: boolean | undefined;
  /** The wording after "must be"; default from the range ("an integer in 1..16", "a number in (0, 240]"). */
  expected?: string | undefined;
}

function expectedNumber(range: NumberRange): string {
  if (range.expected !== undefined) return range.expected;
  const kind = range.int ? "an integer" : "a number";
  return range.aboveMin ? `${kind} in (${range.min}, ${range.max}]` : `${kind} in ${range.min}..${range.max}`;
}

/** A finite number in the range; undefined (missing) gives the fallback. */
export function readNumber(where: Where, value: unknown, range: NumberRange, fallback: number): number;
export function readNumber(where: Where, value: unknown, range: NumberRange, fallback?: number | undefined): number | undefined;
export function readNumber(where: Where, value: unknown, range: NumberRange, fallback?: number | undefined): number | undefined {
  if (value === undefined) return fallback;
  const low = range.aboveMin ? (value as number) <= range.min : (value as number) < range.min;
  if (typeof value !== "number" || !Number.isFinite(value) || low || value > range.max || (range.int && !Number.isInteger(value))) {
    reject(where, `must be ${expectedNumber(range)}`, { value });
  }
  return value;
}

export interface StringOptions {
  /** Missing gives this instead. */
  fallback?: string | undefined;
  /** Missing is an error ("must be a non-empty string, got undefined"). */
  required?: boolean | undefined;
  /** No NUL and no line breaks (the value goes into a command line or a header). */
  singleLine?: boolean | undefined;
}

/** A non-empty string; undefined (missing) gives the fallback, else undefined unless required. */
export function readString(where: Where, value: unknown, options: StringOptions & ({ fallback: string } | { required: true })): string;
export function readString(where: Where, value: unknown, options?: StringOptions): string | undefined;
export function readString(where: Where, value: unknown, options: StringOptions = {}): string | undefined {
  if (value === undefined && (options.fallback !== undefined || !options.required)) return options.fallback;
  if (typeof value !== "string" || value.length === 0) reject(where, "must be a non-empty string", { value });
  if (options.singleLine && /[\0\n\r]/.test(value)) reject(where, "must be free of NUL and line breaks", { value });
  return value;
}

/** true or false; undefined (missing) gives the fallback. */
export function readBoolean(where: Where, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") reject(where, "must be true or false", { value });
  return value;
}

/** One of the choices; undefined (missing) gives the fallback. `expected` rewords "one of a, b, c". */
export function readChoice<T extends string | number>(where: Where, value: unknown, choices: readonly T[], fallback: T, expected?: string): T {
  if (value === undefined) return fallback;
  if (!choices.includes(value as T)) reject(where, `must be ${expected ?? `one of ${choices.join(", ")}`}`, { value });
  return value as T;
}

/** A mapping; undefined or null (an empty YAML section) gives an empty one. */
export function readMapping(where: Where, value: unknown): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  if (!isRecord(value)) reject(where, "must be a mapping", { value });
  return value;
}

/** Rejects keys outside `keys` (a typo must not be silently ignored), naming the key's path and the known keys. */
export function checkOnlyKeys(where: Where, record: Record<string, unknown>, keys: readonly string[]): void {
  for (const key of Object.keys(record)) {
    if (!keys.includes(key)) reject(child(where, key), "unknown key", { fix: `known keys here: ${keys.join(", ")}` });
  }
}
