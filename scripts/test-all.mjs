#!/usr/bin/env node
// Runs the uvu suites (unit, then e2e) over the compiled tests and closes with one "N passed, N failed" line.
// Exit code: non-zero when any suite fails. Usage: node scripts/test-all.mjs [pattern]
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);
const uvu = join(dirname(require.resolve("uvu")), "..", "bin.js");
const pattern = process.argv[2];
let passed = 0;
let failed = 0;
let skipped = 0;
let exitCode = 0;
for (const dir of ["dist/test/unit", "dist/test/e2e"]) {
  const args = [uvu, dir, ...(pattern ? [pattern] : [])];
  const code = await new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (chunk) => {
      process.stdout.write(chunk);
      out += chunk.toString();
    });
    child.on("close", (c) => {
      // eslint-disable-next-line no-control-regex
      const plain = out.replace(/\u001b\[[0-9;]*m/g, "");
      const total = Number(/Total:\s+(\d+)/.exec(plain)?.[1] ?? 0);
      const ok = Number(/Passed:\s+(\d+)/.exec(plain)?.[1] ?? 0);
      const skip = Number(/Skipped:\s+(\d+)/.exec(plain)?.[1] ?? 0);
      passed += ok;
      skipped += skip;
      failed += Math.max(0, total - ok); // uvu's Total leaves the skipped ones out
      if (c !== 0 && total - ok === 0) failed += 1; // a suite that crashed before counting
      resolve(c ?? 1);
    });
  });
  if (code !== 0) exitCode = 1;
}
console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(exitCode);
