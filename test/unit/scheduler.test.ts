/**
 * The one scheduler (src/service/scheduler.ts and the camera loop's turns): the request queue is bounded and refuses
 * with BUSY and a Retry-After from the throughput it measured; a caller that gives up leaves the queue; and with the
 * real tiny model behind it, cameras and queued requests take turns — neither starves the other.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { isFlorenceError } from "../../src/errors.ts";
import { OnnxRuntimeEngine } from "../../src/engine/onnxruntime/onnxruntime.ts";
import { Florence2 } from "../../src/florence/florence2.ts";
import { CameraLoop, type InferenceModel } from "../../src/service/loop.ts";
import { BusyError, RequestQueue } from "../../src/service/scheduler.ts";
import type { Frame } from "../../src/service/types.ts";
import { REFERENCE, TINY_MODEL } from "../support/paths.ts";

const JPEG = new Uint8Array(readFileSync(join(REFERENCE, "images", "street.jpg")));

test("a full queue refuses at once with BUSY and a whole-second Retry-After; refusals and depth are reported", async () => {
  let clock = 0;
  const seen: string[] = [];
  const depths: number[] = [];
  const queue = new RequestQueue<string>({ capacity: 2, now: () => clock, observer: { rejected: (origin) => seen.push(origin), depth: (depth) => depths.push(depth) } });
  const first = queue.submit("http", async (model) => `${model} one`);
  const second = queue.submit("mqtt", async (model) => `${model} two`);
  let refusal: unknown;
  await queue.submit("http", async () => "three").catch((error) => (refusal = error));
  assert.instance(refusal, BusyError);
  assert.ok(isFlorenceError(refusal, "BUSY"));
  assert.match((refusal as Error).message, /the inference queue is full \(2 waiting\) — retry in 3 s/);
  assert.throws(() => queue.admit("http"), /queue is full/);
  assert.equal(seen, ["http", "http"]);
  // jobs run in order when the loop takes them; a measured throughput of 4 jobs a second gives Retry-After ceil(3/4) = 1
  clock = 1000;
  await queue.take()!.run("model");
  clock = 1250;
  await queue.take()!.run("model");
  assert.is(await first, "model one");
  assert.is(await second, "model two");
  assert.is(queue.take(), undefined);
  for (let i = 0; i < 2; i++) void queue.submit("http", async () => "x");
  assert.is(queue.retryAfterS(), 1);
  assert.equal(queue.counters(), { depth: 2, capacity: 2, submitted: 4, served: 2, rejected: 2, cancelled: 0 });
  assert.equal(depths, [1, 2, 1, 0, 1, 2]);
});

test("a waiting job whose caller gives up leaves the queue unrun; one that already runs finishes", async () => {
  const queue = new RequestQueue<string>({ capacity: 4 });
  const abort = new AbortController();
  let ran = false;
  const gone = queue.submit("http", async () => (ran = true), abort.signal);
  abort.abort(new Error("client closed the connection"));
  await gone.then(() => assert.unreachable("must reject"), (error: Error) => assert.match(error.message, /client closed/));
  assert.is(queue.depth, 0);
  assert.is(queue.take(), undefined);
  assert.is(ran, false);
  const late = new AbortController();
  const running = queue.submit("http", async () => "done", late.signal);
  const job = queue.take()!;
  late.abort();
  await job.run("m");
  assert.is(await running, "done");
  assert.equal(queue.counters().cancelled, 1);
  queue.submit("http", async () => "x").catch(() => undefined);
  queue.rejectAll(new Error("stopping"));
  assert.is(queue.counters().cancelled, 2);
});

test("with the real tiny model: two cameras and queued requests take turns, round robin", async () => {
  const engine = new OnnxRuntimeEngine();
  const model = await Florence2.load(TINY_MODEL, { engine });
  const order: string[] = [];
  let seq = 0;
  const always = (camera: string) => ({ take: (): Frame => ({ camera, seq: seq++, capturedAt: Date.now(), capturedMono: performance.now(), format: "jpeg", width: 640, height: 480, data: JPEG }) });
  const queue = new RequestQueue<InferenceModel>({ capacity: 8 });
  const loop = new CameraLoop({
    model,
    requests: queue,
    cameras: ["a", "b"].map((name) => ({ name, slot: always(name), tasks: [{ task: "<OD>", text: undefined, intervalS: 0, snapshot: false }] })),
    events: { result: () => undefined, error: (camera, stage, error) => assert.unreachable(`${camera} ${stage}: ${String(error)}`), processed: (camera) => order.push(camera) },
    generate: { maxNewTokens: 8 },
    waitForFrame: () => Promise.resolve(),
  });
  // four requests, each a real vision pass and task on the image
  const requests = Array.from({ length: 4 }, (_, i) =>
    queue.submit("http", async (m) => {
      const vision = await m.encodeImage(JPEG);
      const result = await m.runTask(vision, { task: "<CAPTION>" }, { maxNewTokens: 8 });
      m.release?.(vision);
      order.push(`request${i}`);
      return result;
    }),
  );
  try {
    loop.start();
    const results = await Promise.all(requests);
    assert.ok(results.every((r) => typeof r.result["<CAPTION>"] === "string"));
    await loop.stop();
  } finally {
    await loop.stop();
    await model.dispose();
    await engine.dispose();
  }
  assert.equal(order.slice(0, 12), ["a", "b", "request0", "a", "b", "request1", "a", "b", "request2", "a", "b", "request3"]);
  assert.is(loop.servedRequests, 4);
});

test.run();
