/**
 * Draws a shard of shapes-world stills for training (or, with --held-out, for evaluation): images plus
 * examples-<start>.jsonl with each image's ground truth and training examples.
 *   node dist/scripts/train/world-stills.js --seed S [--held-out] --start N --count C --out DIR
 * Training seeds are 0 ≤ S < 1,000,000; --held-out draws from seed 1,000,000 + S, never used in training.
 */
import { parseArgs } from "node:util";
import { loadWorldFont } from "../../src/world/font.ts";
import { HELD_OUT_SEED_BASE, writeStills } from "../../src/world/dataset.ts";

const { values } = parseArgs({
  options: { seed: { type: "string" }, "held-out": { type: "boolean", default: false }, start: { type: "string", default: "0" }, count: { type: "string" }, out: { type: "string" } },
});
const seed = Number(values.seed);
if (!Number.isInteger(seed) || seed < 0 || seed >= HELD_OUT_SEED_BASE || !values.count || !values.out) {
  console.error(`usage: world-stills --seed S (0 ≤ S < ${HELD_OUT_SEED_BASE}) [--held-out] --start N --count C --out DIR`);
  process.exit(2);
}
const worldSeed = values["held-out"] ? HELD_OUT_SEED_BASE + seed : seed;
const n = await writeStills(loadWorldFont(), { seed: worldSeed, start: Number(values.start), count: Number(values.count), out: values.out });
console.log(`wrote ${n} stills (world seed ${worldSeed}) to ${values.out}`);
