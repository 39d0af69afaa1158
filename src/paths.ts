/** Paths inside the installed package, the same from src/ (Deno) and dist/src/ (Node). */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** The package root: the nearest folder above this module with a package.json named florence-edge. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "src", "mod.ts"))) return dir;
    dir = dirname(dir);
  }
  return process.cwd();
}

/** The tiny random-weight model the repository ships for demos and tests. */
export function bundledModelDir(): string {
  return join(packageRoot(), "test", "fixtures", "tiny-seed0");
}
