/** Where the package keeps the shapes world's shipped files. */
import { join } from "node:path";
import { packageRoot } from "../paths.ts";

/** The Florence-2 trained on the shapes world (the demo model). */
export function demoModelDir(): string {
  return join(packageRoot(), "assets", "florence-2-shapes");
}

/** The demo clip the generator made, and its ground truth. */
export function demoClipPath(): string {
  return join(packageRoot(), "assets", "shapes-clip.mkv");
}
