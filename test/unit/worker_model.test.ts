/**
 * The service's inference thread (src/service/worker_model.ts + inference_worker.ts) with the real tiny model:
 * the same results as the model on this thread, typed errors across the thread boundary, release and dispose, and
 * the point of it all: the main thread's event loop keeps running while a frame is inferred.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
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

/**
 * Runs `work` while an immediate re-queues itself on this thread: how many times the event loop turned meanwhile.
 * A count, not a time: a loaded machine slows both sides alike instead of failing the comparison.
 */
async function loopTurns(work: () => Promise<unknown>): Promise<number> {
  let turns = 0;
  let running = true;
  const turn = () => {
    if (!running) return;
    turns++;
    setImmediate(turn);
  };
  setImmediate(turn);
  try {
    await work();
  } finally {
    running = false;
  }
  return turns;
}

test("the event loop keeps turning during inference in the worker, and does not on this thread", async () => {
  const local = await loadFlorence(TINY_MODEL, OPEN);
  const worker = await WorkerModel.start(TINY_MODEL, OPEN);
  try {
    const frames = 4;
    const onThread: number[] = [];
    const inWorker: number[] = [];
    for (let i = 0; i < frames; i++) {
      onThread.push(await loopTurns(async () => {
        const v = await local.encodeImage(JPEG);
        await local.runTask(v, { task: "<OD>" }, { maxNewTokens: 8 });
      }));
      inWorker.push(await loopTurns(async () => {
        const v = await worker.encodeImage(JPEG);
        await worker.runTask(v, { task: "<OD>" }, { maxNewTokens: 8 });
        worker.release(v);
      }));
    }
    const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
    console.log(`  event-loop turns per frame: ${onThread.join(", ")} on this thread, ${inWorker.join(", ")} with the worker`);
    // inference on this thread holds the loop (preprocess and graph runs); in the worker the loop keeps turning
    assert.ok(inWorker.every((t) => t > 0), "the loop turned during every frame the worker ran");
    assert.ok(sum(inWorker) > 2 * sum(onThread), `the loop turns far more often with the worker (${sum(inWorker)}) than with inference on this thread (${sum(onThread)})`);
  } finally {
    await worker.dispose();
    await local.dispose();
  }
});

test.run();
