/**
 * GPU-only test files on a machine without a GPU: every test the file would register is registered as a skip that
 * says why, so uvu counts it (scripts/test-all.mjs prints the total) instead of the file silently registering
 * nothing. The names are read from the file itself, so the list cannot drift from the tests it stands for.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { test } from "uvu";

export function skipGpuTests(fileUrl: string, reason: string): void {
  const source = readFileSync(fileURLToPath(fileUrl), "utf8");
  // test("…", test(`…`: the registrations; a name built at run time keeps its ${…} placeholders
  for (const m of source.matchAll(/^\s*test\(\s*(["`])(.+?)\1\s*,/gm)) test.skip(`${m[2]} [SKIPPED: ${reason}]`, () => undefined);
}
