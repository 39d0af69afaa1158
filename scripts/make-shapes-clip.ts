/**
 * The bundled demo clip: a moving-shapes scene drawn by the shapes-world generator, its JPEG frames put as they
 * are into Matroska (MJPEG, no re-encoding), and the ground truth of every frame beside it; and the demo stills
 * (assets/demo-images/shapes-N.jpg, held-out world seed 1,000,042), which the service plays when ffmpeg is missing.
 *   node dist/scripts/make-shapes-clip.js [--seed 42] [--frames 60] [--fps 10] [--out assets/shapes-clip.mkv]
 * Writes OUT and OUT with .json instead of .mkv: { fps, width, height, frames: [{ shapes: [{id, label, box,
 * visible}], words: [{text, box}] }] }. Needs ffmpeg.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { sampleClip } from "../src/world/clip.ts";
import { loadWorldFont } from "../src/world/font.ts";
import { drawScene, renderScene } from "../src/world/render.ts";
import { encodeRgb } from "../src/florence/image.ts";
import { demoClip, demoImagesDir } from "../src/paths.ts";
import { drawStill, HELD_OUT_SEED_BASE } from "../src/world/dataset.ts";

const { values } = parseArgs({ options: { seed: { type: "string", default: "42" }, frames: { type: "string", default: "60" }, fps: { type: "string", default: "10" }, out: { type: "string", default: demoClip() } } });
const font = loadWorldFont();
const frames = sampleClip(font, { seed: Number(values.seed), frames: Number(values.frames) });
const work = mkdtempSync(join(tmpdir(), "shapes-clip-"));
try {
  for (const f of frames) writeFileSync(join(work, `${String(f.index).padStart(4, "0")}.jpg`), await drawScene(f.scene, font));
  const ff = spawnSync("ffmpeg", ["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-framerate", values.fps!, "-i", join(work, "%04d.jpg"), "-c:v", "copy", "-fflags", "+bitexact", values.out!], { stdio: "inherit" });
  if (ff.status !== 0) throw new Error(`ffmpeg failed (${ff.error?.message ?? `exit ${ff.status}`}): install ffmpeg`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
const r = (v: number) => Math.round(v * 10) / 10;
const truth = {
  seed: Number(values.seed), fps: Number(values.fps), width: frames[0]!.truth.width, height: frames[0]!.truth.height,
  frames: frames.map((f) => ({
    shapes: f.truth.shapes.map((s, k) => ({ id: s.id, label: s.label, box: s.box.map(r), visible: r(f.visibility[k]!.visible) })),
    words: f.truth.words.map((w) => ({ text: w.text, box: w.box.map(r) })),
  })),
};
writeFileSync(values.out!.replace(/\.mkv$/, ".json"), `${JSON.stringify(truth)}\n`);
console.log(`${values.out}: ${frames.length} frames at ${values.fps} fps`);
mkdirSync(demoImagesDir(), { recursive: true });
for (let i = 0; i < 6; i++) {
  const still = await drawStill(font, HELD_OUT_SEED_BASE + 42, i);
  const jpeg = still.scene.style.encoding.format === "jpeg" ? still.bytes : undefined;
  writeFileSync(join(demoImagesDir(), `shapes-${i}.jpg`), jpeg ?? await encodeRgb(await renderScene(still.scene, font), { format: "jpeg", quality: 90, chroma: "4:2:0" }));
}
console.log(`${demoImagesDir()}: 6 stills`);
