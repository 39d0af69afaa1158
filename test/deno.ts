/**
 * The test suite under Deno 2 (`deno task test [NAME]`): the same uvu files, run from source. Each file runs in its
 * own Deno process, one after another (as isolated as the uvu CLI's files under Node, with no shared temp dirs,
 * brokers or signal handlers between files); the run closes with one "N passed, N failed" line.
 * `deno task test NAME` runs the files whose name contains NAME; `--e2e` includes test/e2e (unit only by default
 * keeps CI short: the e2e files also run under Node).
 */
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import process from "node:process";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = (globalThis as unknown as { Deno: { args: string[]; execPath(): string } }).Deno;
const fileIndex = args.args.indexOf("--file");

if (fileIndex >= 0) {
  // one file, registered deferred and executed the way the uvu CLI does it
  const g = globalThis as unknown as { UVU_DEFER: number; UVU_INDEX: number; UVU_QUEUE: unknown[][] };
  g.UVU_DEFER = 1;
  const uvu = await import("uvu");
  const file = args.args[fileIndex + 1]!;
  g.UVU_INDEX = 0;
  g.UVU_QUEUE.push([file]);
  await import(pathToFileURL(file).href);
  await (uvu as unknown as { exec(bail?: boolean): Promise<void> }).exec(false);
  process.exit(process.exitCode ?? 0);
}

const withE2e = args.args.includes("--e2e");
const only = args.args.find((a) => !a.startsWith("--"));
let passed = 0;
let failed = 0;
let skipped = 0;
for (const folder of withE2e ? ["unit", "e2e"] : ["unit"]) {
  const names = readdirSync(join(here, folder)).filter((n) => n.endsWith(".test.ts")).sort();
  for (const name of names) {
    if (only && !name.includes(only)) continue;
    const file = join(here, folder, name);
    const run = spawnSync(args.execPath(), ["run", "--allow-all", fileURLToPath(import.meta.url), "--file", file], { encoding: "utf8", maxBuffer: 64 << 20 });
    process.stdout.write(`${folder}/${name}\n${run.stdout ?? ""}`);
    if (run.stderr) process.stderr.write(run.stderr);
    // deno-lint-ignore no-control-regex
    const plain = (run.stdout ?? "").replace(/\u001b\[[0-9;]*m/g, "");
    const total = Number(/Total:\s+(\d+)/.exec(plain)?.[1] ?? 0);
    const ok = Number(/Passed:\s+(\d+)/.exec(plain)?.[1] ?? 0);
    const skip = Number(/Skipped:\s+(\d+)/.exec(plain)?.[1] ?? 0);
    passed += ok;
    skipped += skip;
    failed += Math.max(0, total - ok) + (run.status !== 0 && total - ok === 0 ? 1 : 0);
  }
}
console.log(`\ndeno: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 ? 1 : 0);
