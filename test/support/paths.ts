/** Where the repository's fixtures are, whether tests run compiled (dist/test) or from source (Deno). */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, "utf8")).name === "florence-edge") return dir;
    dir = dirname(dir);
  }
  throw new Error("cannot find the florence-edge repository root above " + fileURLToPath(import.meta.url));
}

export const REPO_ROOT = findRoot();
/** The fixture model; FLORENCE_EDGE_FIXTURE points the end-to-end tests at another one (e.g. a holdout seed). */
export const TINY_MODEL = process.env["FLORENCE_EDGE_FIXTURE"] || join(REPO_ROOT, "test", "fixtures", "tiny-seed0");
export const REFERENCE = join(TINY_MODEL, "reference");

export function readReference<T = unknown>(name: string): T {
  return JSON.parse(readFileSync(join(REFERENCE, name), "utf8")) as T;
}
