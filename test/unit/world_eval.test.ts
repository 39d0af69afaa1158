/**
 * The world evaluation judges answers, not shapes of messages: an oracle that answers every task with the world's
 * own answer (read back through HF's post-processing) meets every goal, and a model that sees nothing meets none.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createHash } from "node:crypto";
import { execFile } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { promisify } from "node:util";
import type { Florence2, TaskRequest, VisionFeatures } from "../../src/florence/florence2.ts";
import { postProcessGeneration } from "../../src/florence/postprocess.ts";
import { parseRegionInput, type TaskToken } from "../../src/florence/tasks.ts";
import { drawStill, HELD_OUT_SEED_BASE } from "../../src/world/dataset.ts";
import { evaluateWorld } from "../../src/world/evaluate.ts";
import { loadWorldFont } from "../../src/world/font.ts";
import type { Truth } from "../../src/world/scene.ts";
import { targetText } from "../../src/world/targets.ts";
import { quantizeBox } from "../../src/florence/tasks.ts";
import { REPO_ROOT, TINY_MODEL } from "../support/paths.ts";

const font = loadWorldFont();
const hash = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** A stand-in for Florence2 that knows each image's ground truth and answers as the world says a model should. */
async function oracle(seed: number, images: number): Promise<Florence2> {
  const truths = new Map<string, Truth>();
  for (let i = 0; i < images; i++) {
    const still = await drawStill(font, HELD_OUT_SEED_BASE + seed, i);
    truths.set(hash(still.bytes), still.truth);
  }
  const same = (a: number[], b: number[]) => a.every((v, k) => v === b[k]);
  return {
    encodeImage: async (bytes: Uint8Array) => ({ features: truths.get(hash(bytes)) }) as unknown as VisionFeatures,
    runTask: async (vision: VisionFeatures, request: TaskRequest) => {
      const truth = (vision as unknown as { features: Truth }).features;
      const task = request.task as TaskToken;
      let region: { shape?: Truth["shapes"][number]; word?: string } | undefined;
      if (task.startsWith("<REGION_TO")) {
        const bins = parseRegionInput(request.text!, truth);
        const shape = truth.shapes.find((s) => same(quantizeBox(s.box, truth), bins));
        const word = truth.words.find((w) => same(quantizeBox(w.box, truth), bins));
        region = { ...(shape ? { shape } : {}), ...(word ? { word: word.text } : {}) };
      }
      const text = targetText(task, truth, request.text ?? "", region);
      return { task, result: postProcessGeneration(`</s><s>${text}</s>`, task, truth) };
    },
  } as unknown as Florence2;
}

test("an oracle that answers as the world says meets every goal, on every task", async () => {
  const report = await evaluateWorld(await oracle(3, 12), font, { images: 12, seed: 3 });
  const tasks = new Set(report.figures.map((f) => f.task));
  assert.is(tasks.size, 15, `all 15 tasks are measured: ${[...tasks].join(" ")}`);
  for (const f of report.figures) {
    const floor = f.metric === "median mask IoU" ? 0.85 : 1;
    assert.ok(f.value >= floor, `${f.task} ${f.metric} ${f.value}`);
  }
  assert.ok(report.passed);
});

test("florence-edge eval on a model that sees nothing: figures near zero, --check exits 1, --json is the report", async () => {
  const bin = join(REPO_ROOT, "dist", "src", "bin.js");
  const run = promisify(execFile);
  const failed = await run(process.execPath, [bin, "eval", "--model", TINY_MODEL, "--images", "2", "--threads", "2", "--json", "--check"]).catch((e) => e as { code: number; stdout: string });
  assert.is((failed as { code: number }).code, 1, "--check fails a model that misses its goals");
  const report = JSON.parse((failed as { stdout: string }).stdout) as { passed: boolean; figures: { task: string; value: number }[]; images: number; worldSeed: number };
  assert.is(report.passed, false);
  assert.is(report.images, 2);
  assert.is(report.worldSeed, HELD_OUT_SEED_BASE);
  const od = report.figures.filter((f) => f.task === "<OD>");
  assert.ok(od.length === 2 && od.every((f) => f.value < 0.5), JSON.stringify(od));
});

test("florence-edge eval with several precisions: a report each, then one table of the goal figures and the time relative to the first", async () => {
  const bin = join(REPO_ROOT, "dist", "src", "bin.js");
  const run = promisify(execFile);
  const { stdout } = await run(process.execPath, [bin, "eval", "--model", TINY_MODEL, "--images", "1", "--threads", "2", "--precision", "fp32", "--precision", "fp16"]);
  assert.match(stdout, /\(fp32\): 1 held-out images/);
  assert.match(stdout, /\(fp16\): 1 held-out images/);
  const table = stdout.split("\n").filter((line) => line.startsWith("| "));
  assert.is(table.length, 5, `header, rule, goals, fp32, fp16:\n${table.join("\n")}`);
  assert.match(table[0]!, /<OD> precision@0\.5 .*<OCR> accuracy .*time vs fp32/);
  assert.match(table[2]!, /^\| goal \| ≥ 0\.85 \| ≥ 0\.9 /);
  assert.match(table[3]!, /^\| fp32 \|.* 1\.00× \|$/);
  assert.match(table[4]!, /^\| fp16 \|.* \d+\.\d\d× \|$/);
  const wrong = await run(process.execPath, [bin, "eval", "--model", TINY_MODEL, "--precision", "fp8"]).catch((e) => e as { code: number; stderr: string });
  assert.is((wrong as { code: number }).code, 2, "a bad flag is a usage error");
  assert.match((wrong as { stderr: string }).stderr, /--precision must be one of fp32, fp16, quantized/);
});

test.run();
