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
 * model and none is given — the Florence-2 trained on the shapes world (assets/florence-2-shapes, marked by its
 * world.json) once it ships; until then a copy of the tiny random-weight test model (assets/florence-2-tiny-random),
 * which runs every task but sees nothing (isSeeingModel tells which).
 */
export function demoModelDir(): string {
  const shapes = join(packageRoot(), "assets", "florence-2-shapes");
  return existsSync(join(shapes, "config.json")) ? shapes : join(packageRoot(), "assets", "florence-2-tiny-random");
}

/** Whether a model folder is a shapes-world model (trained, with ground truth to check it against). */
export function isSeeingModel(dir: string): boolean {
  return existsSync(join(dir, "world.json"));
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

/** The live view's page, script and style sheet (served as they are: no build step). */
export function webDir(): string {
  return join(packageRoot(), "web");
}
