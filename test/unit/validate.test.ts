/**
 * The one family of checks for untyped input (src/validate.ts): each check over good values (returned, or the
 * fallback when missing) and bad ones (the owner's code, place, wording, the value shown and the fix).
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { isFlorenceError } from "../../src/errors.ts";
import { checkOnlyKeys, child, readBoolean, readChoice, readMapping, readNumber, readString, reject, type Where } from "../../src/validate.ts";

const PATH: Where = { name: "cameras[0].source.fps" };
const PROSE: Where = { name: "mqtt reconnectMinMs", code: "INVALID_ARGUMENT", separator: " ", fix: "pick a sane delay" };

/** Runs a check that must fail and returns its error. */
function failure(check: () => unknown): Error & { code: string; fix: string | undefined } {
  try {
    check();
  } catch (error) {
    assert.ok(isFlorenceError(error), String(error));
    return error as Error & { code: string; fix: string | undefined };
  }
  throw new Error("the check accepted a bad value");
}

const GOOD: [string, () => unknown, unknown][] = [
  ["number in range", () => readNumber(PATH, 5, { min: 1, max: 240 }), 5],
  ["number at max", () => readNumber(PATH, 240, { min: 1, max: 240 }), 240],
  ["missing number → fallback", () => readNumber(PATH, undefined, { min: 1, max: 240 }, 30), 30],
  ["missing number, no fallback", () => readNumber(PATH, undefined, { min: 1, max: 240 }), undefined],
  ["integer", () => readNumber(PATH, 7, { min: 0, max: 15, int: true }), 7],
  ["above an open min", () => readNumber(PATH, 0.5, { min: 0, aboveMin: true, max: 1 }), 0.5],
  ["string", () => readString(PATH, "door"), "door"],
  ["missing string → fallback", () => readString(PATH, undefined, { fallback: "x" }), "x"],
  ["missing optional string", () => readString(PATH, undefined), undefined],
  ["boolean", () => readBoolean(PATH, false, true), false],
  ["missing boolean → fallback", () => readBoolean(PATH, undefined, true), true],
  ["choice", () => readChoice(PATH, "udp", ["tcp", "udp"] as const, "tcp"), "udp"],
  ["numeric choice", () => readChoice(PATH, 2, [0, 1, 2] as const, 0), 2],
  ["missing choice → fallback", () => readChoice(PATH, undefined, ["tcp", "udp"] as const, "tcp"), "tcp"],
  ["mapping", () => readMapping(PATH, { a: 1 }), { a: 1 }],
  ["empty YAML section → empty mapping", () => readMapping(PATH, null), {}],
  ["known keys only", () => checkOnlyKeys(PATH, { a: 1 }, ["a", "b"]), undefined],
  ["child path", () => child({ name: "model" }, "threads").name, "model.threads"],
];

const BAD: [string, () => unknown, string, string][] = [
  ["number too large", () => readNumber(PATH, 241, { min: 1, max: 240 }), "CONFIG_INVALID", "cameras[0].source.fps: must be a number in 1..240, got 241"],
  ["number as text", () => readNumber(PATH, "5", { min: 1, max: 240 }), "CONFIG_INVALID", 'cameras[0].source.fps: must be a number in 1..240, got "5"'],
  ["not finite", () => readNumber(PATH, Infinity, { min: 1, max: Infinity }), "CONFIG_INVALID", "must be a number in 1..Infinity, got null"],
  ["fraction for an integer", () => readNumber(PATH, 1.5, { min: 0, max: 15, int: true }), "CONFIG_INVALID", "must be an integer in 0..15, got 1.5"],
  ["the open min itself", () => readNumber(PATH, 0, { min: 0, aboveMin: true, max: 240 }), "CONFIG_INVALID", "must be a number in (0, 240], got 0"],
  ["own wording", () => readNumber(PATH, 8, { min: 16, max: 64, int: true, expected: "an integer pixel size in 16..64" }), "CONFIG_INVALID", "must be an integer pixel size in 16..64, got 8"],
  ["prose place, code and fix", () => readNumber(PROSE, 0, { min: 1, max: 10 }), "INVALID_ARGUMENT", "mqtt reconnectMinMs must be a number in 1..10, got 0 — pick a sane delay"],
  ["empty string", () => readString(PATH, ""), "CONFIG_INVALID", 'must be a non-empty string, got ""'],
  ["required string missing", () => readString(PATH, undefined, { required: true }), "CONFIG_INVALID", "must be a non-empty string, got undefined"],
  ["line break", () => readString(PATH, "a\nb", { singleLine: true }), "CONFIG_INVALID", "must be free of NUL and line breaks"],
  ["boolean as text", () => readBoolean(PATH, "yes", true), "CONFIG_INVALID", 'must be true or false, got "yes"'],
  ["unknown choice", () => readChoice(PATH, "sctp", ["tcp", "udp"] as const, "tcp"), "CONFIG_INVALID", 'must be one of tcp, udp, got "sctp"'],
  ["choice in own words", () => readChoice(PROSE, 3, [0, 1, 2] as const, 0, "0, 1 or 2"), "INVALID_ARGUMENT", "must be 0, 1 or 2, got 3"],
  ["list for a mapping", () => readMapping(PATH, [1]), "CONFIG_INVALID", "cameras[0].source.fps: must be a mapping, got [1]"],
  ["unknown key", () => checkOnlyKeys({ name: "model" }, { treads: 4 }, ["threads"]), "CONFIG_INVALID", "model.treads: unknown key — known keys here: threads"],
  ["reject without a value", () => reject(PATH, "is required"), "CONFIG_INVALID", "cameras[0].source.fps: is required"],
];

test("good values come back (or the fallback when missing)", () => {
  for (const [name, check, expected] of GOOD) assert.equal(check(), expected, name);
});

test("bad values give the owner's code, place, wording, the value and the fix", () => {
  for (const [name, check, code, message] of BAD) {
    const error = failure(check);
    assert.is(error.code, code, name);
    assert.ok(error.message.includes(message), `${name}: ${error.message}`);
  }
});

test("the owner decides how a value is shown (e.g. secrets masked) and a long value is shortened", () => {
  const masked = failure(() => readString({ name: "url", show: () => "rtsp://u:***@cam" }, 5));
  assert.is(masked.message, "url: must be a non-empty string, got rtsp://u:***@cam");
  const long = failure(() => readNumber(PATH, "x".repeat(200), { min: 0, max: 1 }));
  assert.ok(long.message.length < 160, long.message);
});

test.run();
