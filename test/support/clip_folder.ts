/**
 * A moving-shapes clip (src/world/clip.ts) drawn into a folder of JPEG frames, for a `type: folder` camera: the
 * frame names sort in clip order, so a published frame number is the clip frame it shows.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ClipFrame, type ClipOptions, sampleClip } from "../../src/world/clip.ts";
import type { WorldFont } from "../../src/world/font.ts";
import { drawScene } from "../../src/world/render.ts";

export async function clipFolder(font: WorldFont, options: ClipOptions, prefix = "fe-clip-"): Promise<{ dir: string; frames: string; clip: ClipFrame[] }> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const frames = join(dir, "frames");
  const clip = sampleClip(font, options);
  mkdirSync(frames);
  for (const f of clip) writeFileSync(join(frames, `frame${String(f.index).padStart(4, "0")}.jpg`), await drawScene(f.scene, font));
  return { dir, frames, clip };
}
