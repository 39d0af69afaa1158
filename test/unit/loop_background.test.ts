/**
 * Background jobs (the events' descriptions) on the camera loop, with the real tiny model: while a camera keeps a
 * frame waiting all the time, descriptions take at most their share of the inference time and detection keeps the
 * rest; with no frame waiting they run back to back; the queue is bounded and what does not fit is counted.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { readEnvironment } from "../../src/config.ts";
import type { TaskResult } from "../../src/florence/florence2.ts";
import { loadFlorence } from "../../src/mod.ts";
import { type BackgroundJob, CameraLoop, type InferenceModel } from "../../src/service/loop.ts";
import type { Frame } from "../../src/service/types.ts";
import { REFERENCE, TINY_MODEL } from "../support/paths.ts";

const JPEG = new Uint8Array(readFileSync(join(REFERENCE, "images", "street.jpg")));
const SHARE = 0.2;

/** A camera faster than inference: a frame always waits (or never, when `idle`). */
class BusySlot {
  seq = 0;
  readonly idle: boolean;
  constructor(idle: boolean) {
    this.idle = idle;
  }
  get pending(): boolean {
    return !this.idle;
  }
  take(): Frame | undefined {
    if (this.idle) return undefined;
    return { camera: "cam", seq: this.seq++, capturedAt: Date.now(), capturedMono: performance.now(), format: "jpeg", width: 640, height: 480, data: JPEG };
  }
}

async function measure(idle: boolean, jobs: number, until: (loop: CameraLoop, done: number) => boolean) {
  const model = await loadFlorence(TINY_MODEL, { env: readEnvironment({}), backend: "onnxruntime", threads: 2 });
  // the real model, timed: each encode is followed by one task (a frame's <OD> or a job's), which says whose it was
  const spent = { frames: 0, background: 0, longestJob: 0 };
  let encodeMs = 0;
  const timed: InferenceModel = {
    files: model.files,
    encodeImage: async (image) => {
      const t = performance.now();
      const vision = await model.encodeImage(image);
      encodeMs = performance.now() - t;
      return vision;
    },
    runTask: async (vision, request, options) => {
      const t = performance.now();
      const result = await model.runTask(vision as never, request, options);
      const ms = encodeMs + performance.now() - t;
      if (request.task === "<OD>") spent.frames += ms;
      else {
        spent.background += ms;
        spent.longestJob = Math.max(spent.longestJob, ms);
      }
      return result;
    },
  };
  const loop = new CameraLoop({
    model: timed,
    cameras: [{ name: "cam", slot: new BusySlot(idle), tasks: [{ task: "<OD>", text: undefined, intervalS: 0, snapshot: false }] }],
    events: { result: () => undefined, error: (_c, _s, e) => assert.unreachable(String(e)), processed: () => undefined },
    generate: { maxNewTokens: 12 },
    waitForFrame: () => new Promise((resolve) => setTimeout(resolve, 5)),
    background: { maxQueued: 8, share: SHARE },
  });
  let done = 0;
  const results: TaskResult[] = [];
  for (let i = 0; i < jobs; i++) {
    const job: BackgroundJob = {
      camera: "cam",
      image: JPEG,
      task: "<REGION_TO_DESCRIPTION>",
      text: "100,100,300,300",
      done: (result) => {
        results.push(result);
        done++;
      },
      failed: (error) => assert.unreachable(String(error)),
    };
    loop.enqueueBackground(job);
  }
  loop.start();
  while (!until(loop, done)) await new Promise((resolve) => setTimeout(resolve, 20));
  await loop.stop();
  await model.dispose();
  return { spent, done, loop, results };
}

test("frames always waiting: descriptions progress in at most their share of the inference time, the queue drops what does not fit", async () => {
  const { spent, done, loop, results } = await measure(false, 40, (l) => l.processedFrames >= 40);
  assert.is(loop.backgroundDropped, 32, "8 queued, 32 dropped");
  assert.ok(done >= 1, `descriptions done while frames kept coming: ${done}`);
  assert.ok(results.every((r) => r.task === "<REGION_TO_DESCRIPTION>" && typeof r.result["<REGION_TO_DESCRIPTION>"] === "string"));
  const budget = (spent.frames * SHARE) / (1 - SHARE) + spent.longestJob;
  assert.ok(spent.background <= budget * 1.05, `descriptions took ${spent.background.toFixed(0)} ms beside ${spent.frames.toFixed(0)} ms of frames (budget ${budget.toFixed(0)} ms)`);
  console.log(`  ${loop.processedFrames} frames (${spent.frames.toFixed(0)} ms), ${done} descriptions (${spent.background.toFixed(0)} ms): ${(100 * spent.background / (spent.frames + spent.background)).toFixed(1)} % of the inference time`);
});

test("no frame waiting: the queued descriptions run back to back", async () => {
  const { done, loop } = await measure(true, 5, (_l, d) => d >= 5);
  assert.is(done, 5);
  assert.is(loop.backgroundRun, 5);
  assert.is(loop.backgroundDropped, 0);
  assert.is(loop.processedFrames, 0);
});

test.run();
