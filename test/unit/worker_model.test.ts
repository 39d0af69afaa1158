/**
 * The service's inference thread (src/service/worker_model.ts + inference_worker.ts) with the real tiny model:
 * the same results as the model on this thread, typed errors across the thread boundary, release and dispose, and
 * the point of it all: the main thread's event loop keeps running while a frame is inferred.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { type RuntimeEnvironment, readEnvironment } from "../../src/config.ts";
import { loadFlorence } from "../../src/mod.ts";
import { WorkerModel } from "../../src/service/worker_model.ts";
import { rejectsCode } from "../support/errors.ts";
import { REFERENCE, TINY_MODEL } from "../support/paths.ts";

const ENV: RuntimeEnvironment = readEnvironment({});
const OPEN = { env: ENV, backend: "onnxruntime" as const, threads: 2 };
const JPEG = new Uint8Array(readFileSync(join(REFERENCE, "images", "street.jpg")));

test("results equal the model's on this thread, for bytes and for RGB frames", async () => {
  const local = await loadFlorence(TINY_MODEL, OPEN);
  const worker = await WorkerModel.start(TINY_MODEL, OPEN);
  try {
    assert.is(worker.files.id, local.files.id);
    assert.is(worker.engine.backend, "onnxruntime");
    const here = await local.encodeImage(JPEG);
    const there = await worker.encodeImage(JPEG);
    assert.equal(there.imageSize, { width: 640, height: 480 });
    for (const request of [{ task: "<OD>" }, { task: "<CAPTION_TO_PHRASE_GROUNDING>", text: "a red car" }]) {
      const a = await local.runTask(here, request, { numBeams: 3, maxNewTokens: 16 });
      const b = await worker.runTask(there, request, { numBeams: 3, maxNewTokens: 16 });
      assert.equal(b.generated_ids, a.generated_ids, request.task);
      assert.equal(b.result, a.result, request.task);
    }
    worker.release(there);
    // an RGB frame (what rgb24 sources deliver), whose bytes sit inside a larger buffer
    const rgb = await import("../../src/florence/image.ts").then((m) => m.decodeImage(JPEG));
    const pool = new Uint8Array(rgb.data.length + 64);
    pool.set(rgb.data, 32);
    const frame = { width: rgb.width, height: rgb.height, data: pool.subarray(32, 32 + rgb.data.length) };
    const fromRgb = await worker.encodeImage(frame);
    const c = await worker.runTask(fromRgb, { task: "<OD>" }, { maxNewTokens: 16 });
    const d = await local.runTask(await local.encodeImage(rgb), { task: "<OD>" }, { maxNewTokens: 16 });
    assert.equal(c.generated_ids, d.generated_ids);
    assert.is(pool.length, rgb.data.length + 64, "the caller's buffer is not transferred away");
  } finally {
    await worker.dispose();
    await local.dispose();
  }
});

test("errors cross the thread as typed FlorenceErrors; released features and a disposed model are refused", async () => {
  await rejectsCode(WorkerModel.start(join(TINY_MODEL, "reference"), OPEN), "MODEL_FILE_MISSING");
  const worker = await WorkerModel.start(TINY_MODEL, OPEN);
  await rejectsCode(worker.encodeImage(new Uint8Array([1, 2, 3, 4])), "IMAGE_UNREADABLE", /cannot be decoded/);
  const vision = await worker.encodeImage(JPEG);
  await rejectsCode(worker.runTask(vision, { task: "<NOPE>" }), "UNKNOWN_TASK");
  worker.release(vision);
  await rejectsCode(worker.runTask(vision, { task: "<OD>" }), "INVALID_ARGUMENT", /released/);
  // the worker is still serving after all of that
  const again = await worker.encodeImage(JPEG);
  assert.ok((await worker.runTask(again, { task: "<CAPTION>" }, { maxNewTokens: 4 })).generated_ids.length > 1);
  await worker.dispose();
  await rejectsCode(worker.encodeImage(JPEG), "DISPOSED");
});

/** Runs `work` while a 2 ms timer ticks on this thread; the longest gap between ticks. */
async function longestStall(work: () => Promise<unknown>): Promise<number> {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 2);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return Math.max(longest, performance.now() - last);
}

test("the event loop keeps turning during inference in the worker, and does not on this thread", async () => {
  const local = await loadFlorence(TINY_MODEL, OPEN);
  const worker = await WorkerModel.start(TINY_MODEL, OPEN);
  try {
    const frames = 4;
    let visionMs = Infinity;
    const onThread = await longestStall(async () => {
      for (let i = 0; i < frames; i++) {
        const v = await local.encodeImage(JPEG);
        visionMs = Math.min(visionMs, v.timings.vision_ms);
        await local.runTask(v, { task: "<OD>" }, { maxNewTokens: 8 });
      }
    });
    const inWorker = await longestStall(async () => {
      for (let i = 0; i < frames; i++) {
        const v = await worker.encodeImage(JPEG);
        await worker.runTask(v, { task: "<OD>" }, { maxNewTokens: 8 });
        worker.release(v);
      }
    });
    console.log(`  longest event-loop stall: ${onThread.toFixed(1)} ms on this thread, ${inWorker.toFixed(1)} ms with the worker (vision pass ${visionMs.toFixed(1)} ms)`);
    // a vision pass on this thread blocks the loop for all of its length; in the worker, never for most of it
    assert.ok(onThread >= 0.9 * visionMs, `on this thread the loop stalls for the vision pass (${onThread} vs ${visionMs} ms)`);
    assert.ok(inWorker < 0.5 * visionMs, `with the worker the loop stalls ${inWorker} ms, under half the ${visionMs} ms vision pass`);
  } finally {
    await worker.dispose();
    await local.dispose();
  }
});

test.run();
