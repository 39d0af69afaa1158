/**
 * The test suite under Deno 2 (`deno task test`): the same uvu files, run from source, one suite after another as
 * the uvu CLI runs them under Node (deferred registration, then `exec`). Test files are found by listing test/unit
 * and test/e2e, so a new file is never forgotten here. `deno task test NAME` runs the files whose name contains NAME.
 */
import { readdirSync } from "node:fs";
import process from "node:process";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const only = (globalThis as unknown as { Deno: { args: string[] } }).Deno.args[0];
const g = globalThis as unknown as { UVU_DEFER: number; UVU_INDEX: number; UVU_QUEUE: unknown[][] };
g.UVU_DEFER = 1;
const uvu = await import("uvu");
let index = 0;
for (const folder of ["unit", "e2e"]) {
  let names: string[] = [];
  try {
    names = readdirSync(join(here, folder)).filter((n) => n.endsWith(".test.ts")).sort();
  } catch {
    continue;
  }
  for (const name of names) {
    if (only && !name.includes(only)) continue;
    g.UVU_INDEX = index++;
    g.UVU_QUEUE.push([`${folder}/${name}`]);
    await import(pathToFileURL(join(here, folder, name)).href);
  }
}
await (uvu as unknown as { exec(bail?: boolean): Promise<void> }).exec(false);
// uvu sets process.exitCode on failure; leave no handle (broker, child) keeping the runtime alive
process.exit(process.exitCode ?? 0);
