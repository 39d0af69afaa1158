/**
 * A test that needs something this machine may lack (a browser, python3, the shapes-world model): registered as
 * itself when `available`, else as a skip whose name says why, so uvu counts it (scripts/test-all.mjs prints the
 * total) instead of the file silently registering nothing.
 */
import { test } from "uvu";

export function testWhen(available: boolean, reason: string): (name: string, fn: () => void | Promise<void>) => void {
  return available ? test : (name) => test.skip(`${name} [SKIPPED: ${reason}]`, () => undefined);
}

/** The demo model, once it is the shapes-world model: the reason a content test is skipped until then. */
export const NOT_SEEING = "the demo model is not the shapes-world model yet (no world.json in its folder)";
