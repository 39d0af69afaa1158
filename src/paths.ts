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

/**
 * The demo model the package ships (onnx-community layout): the default wherever a command or the service needs a
 * model and none is given. The random-weight test/fixtures/tiny-seed0 is for the HF-parity tests only.
 */
export function demoModelDir(): string {
  return join(packageRoot(), "assets", "florence-2-shapes");
}

/** Still images the package ships for demos: the service's camera without ffmpeg, the hardware test's timings. */
export function demoImagesDir(): string {
  return join(packageRoot(), "assets", "demo-images");
}

/** The one demo image commands default to. */
export function demoImage(): string {
  return join(demoImagesDir(), "shapes-0.jpg");
}

/**
 * The demo clip the service's embedded camera plays through ffmpeg: moving shapes drawn by the shapes-world
 * generator (scripts/make-shapes-clip.ts), with every frame's ground truth beside it (.json).
 */
export function demoClip(): string {
  return join(packageRoot(), "assets", "shapes-clip.mkv");
}
