/**
 * The test suite under Deno 2 (`deno task test`): the same uvu files, run from source. Test files are found by
 * listing test/unit and test/e2e, so a new file is never forgotten here.
 */
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const only = (globalThis as unknown as { Deno: { args: string[] } }).Deno.args[0];
for (const folder of ["unit", "e2e"]) {
  let names: string[] = [];
  try {
    names = readdirSync(join(here, folder)).filter((n) => n.endsWith(".test.ts")).sort();
  } catch {
    continue;
  }
  for (const name of names) {
    if (only && !name.includes(only)) continue;
    await import(join(here, folder, name));
  }
}


