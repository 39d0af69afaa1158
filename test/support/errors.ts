/** Assertions for the project's typed errors: the code, and the message naming what was wrong. */
import * as assert from "uvu/assert";
import { type FlorenceError, isFlorenceError } from "../../src/errors.ts";

function check(error: unknown, code: string, pattern: RegExp | string | undefined): void {
  assert.ok(isFlorenceError(error), `expected a FlorenceError, got ${String(error)}`);
  const message = (error as Error).message;
  assert.is((error as { code: string }).code, code, message);
  if (typeof pattern === "string") assert.ok(message.includes(pattern), `"${message}" lacks "${pattern}"`);
  else if (pattern) assert.match(message, pattern);
}

/** `fn` throws a FlorenceError with this code, its message matching `pattern` (a RegExp, or a substring). */
export function throwsCode(fn: () => unknown, code: string, pattern?: RegExp | string): void {
  try {
    fn();
  } catch (error) {
    check(error, code, pattern);
    return;
  }
  assert.unreachable(`expected ${code}`);
}

/** The promise (or the async function) rejects with a FlorenceError with this code and a matching message; returns it. */
export async function rejectsCode(action: Promise<unknown> | (() => unknown), code: string, pattern?: RegExp | string): Promise<FlorenceError> {
  try {
    await (typeof action === "function" ? action() : action);
  } catch (error) {
    check(error, code, pattern);
    return error as FlorenceError;
  }
  assert.unreachable(`expected ${code}`);
  throw new Error("unreachable");
}
