/**
 * Training and held-out sets of stills: image files plus one JSON line per image with its ground truth and its
 * training examples. Seeds name disjoint worlds: training uses seeds below HELD_OUT_SEED_BASE, evaluation at or
 * above it, so no evaluated image was ever seen in training.
 */
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { WorldFont } from "./font.ts";
import { WorldRandom } from "./random.ts";
import { drawScene } from "./render.ts";
import { sampleStill, type Scene, sceneTruth, type Truth } from "./scene.ts";
import { trainingExamples, type TrainingExample } from "./targets.ts";

/** Seeds at or above this are never used for training. */
export const HELD_OUT_SEED_BASE = 1_000_000;

export interface StillRecord {
  file: string;
  scene: Pick<Scene, "style">;
  truth: Truth;
  examples: TrainingExample[];
}

export interface Still {
  bytes: Uint8Array;
  scene: Scene;
  truth: Truth;
}

export async function drawStill(font: WorldFont, seed: number, index: number): Promise<Still> {
  const scene = sampleStill(font, seed, index);
  return { bytes: await drawScene(scene, font), scene, truth: sceneTruth(scene, font) };
}

/** Writes stills [start, start + count) of `seed` into `out` and their records into `out/examples.jsonl`. */
export async function writeStills(font: WorldFont, options: { seed: number; start: number; count: number; out: string }): Promise<number> {
  mkdirSync(options.out, { recursive: true });
  const lines: string[] = [];
  for (let i = options.start; i < options.start + options.count; i++) {
    const still = await drawStill(font, options.seed, i);
    const file = `${String(i).padStart(7, "0")}.${still.scene.style.encoding.format === "png" ? "png" : "jpg"}`;
    writeFileSync(join(options.out, file), still.bytes);
    const record: StillRecord = {
      file, scene: { style: still.scene.style }, truth: still.truth, examples: trainingExamples(still.truth, new WorldRandom(options.seed ^ 0x5eed, i)),
    };
    lines.push(JSON.stringify(record));
  }
  // written whole, then renamed: a trainer watching the folder never reads half a shard
  const list = join(options.out, `examples-${options.start}.jsonl`);
  writeFileSync(`${list}.part`, lines.join("\n") + "\n");
  renameSync(`${list}.part`, list);
  return lines.length;
}
