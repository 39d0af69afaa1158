/**
 * Service benchmark: the whole `serve` pipeline in one process — an embedded aedes broker, an ffmpeg file source
 * faster than inference, the newest-frame slot, the camera loop with the real model, the real MQTT publisher and a
 * real subscriber — and what the service itself costs per frame around inference.
 *
 *   node dist/scripts/bench-service.js [--duration S] [--sample S] [--fps N] [--task T …] [--threads N] [--json]
 *
 * Per published result:
 *   capture→publish   frame.capturedMono (the source handed the frame over) to the publish call (as serve.ts stamps it)
 *   model             time inside model.encodeImage + model.runTask for that frame so far (decode, preprocess,
 *                     vision, encoder, decoder, parse)
 *   slot wait         age of the frame when the loop picked it up: newest frame wins, so it is bounded by the
 *                     source's frame interval (0..1/fps, about half of it on average) and is not work
 *   service overhead  capture→publish end − model − slot wait: the service's own work on the frame's path (taking
 *                     the frame, the loop's scheduling, building the message, serialising and queueing it)
 *   overhead incl. wait  capture→publish − model (slot wait included), for comparison
 *   delivery          publish call → the subscriber's message event (publisher queue, socket, broker, loopback)
 * and every --sample seconds a window: median capture→publish, RSS and heap; at the end least-squares slopes
 * (ms per minute, MiB per minute) and last/first window ratios, so "flat over 10 minutes" is a number.
 * Target (issue 3): service overhead median <= 5 ms at 640x480 on a 2-core machine; latency and memory flat.
 * Skips (exit 0) when ffmpeg is missing.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import process from "node:process";
import { connectAsync, type MqttClient } from "mqtt";
import { quantile } from "../src/timing.ts";
import { round } from "../src/bench.ts";
import { readEnvironment } from "../src/config.ts";
import { type FlagSpec, parseFlags, usage, runAsScript } from "../src/cli_args.ts";
import { OnnxRuntimeEngine } from "../src/engine/onnxruntime/onnxruntime.ts";
import { describeValue, FlorenceError } from "../src/errors.ts";
import { Florence2, type GenerateOptions, type TaskResult, type VisionFeatures } from "../src/florence/florence2.ts";
import type { RgbImage } from "../src/florence/image.ts";
import { isTaskToken, TASKS } from "../src/florence/tasks.ts";
import { type EmbeddedBroker, startBroker } from "../src/service/broker.ts";
import type { TaskSchedule } from "../src/service/service_config.ts";
import { LatestFrame, waitForAnyFrame } from "../src/service/latest.ts";
import { CameraLoop, type EncodedFrame, type InferenceModel } from "../src/service/loop.ts";
import { WorkerModel } from "../src/service/worker_model.ts";
import { MqttPublisher } from "../src/service/mqtt.ts";
import { createSource } from "../src/service/sources/index.ts";
import type { Frame, FrameSource, ResultMessage } from "../src/service/types.ts";
import { packageRoot } from "../src/paths.ts";

// ---------------------------------------------------------------------------------------------------------------
// Options

export interface ServiceBenchOptions {
  model: string;
  /** A video file; undefined: a testsrc clip made with scripts/make-test-clip.sh at `size` and `fps`. */
  clip: string | undefined;
  width: number;
  height: number;
  fps: number;
  frameFormat: "jpeg" | "rgb24";
  tasks: string[];
  threads: number;
  /** Where inference runs (serve.ts: model.thread). */
  thread: "worker" | "main";
  numBeams: number | undefined;
  maxNewTokens: number | undefined;
  durationS: number;
  sampleS: number;
  warmupS: number;
  json: boolean;
}

export const FLAGS: Record<string, FlagSpec> = {
  duration: { kind: "number", min: 1, max: 86400, help: "measured seconds after the warm-up (default 60; 600 for the 10-minute soak)" },
  sample: { kind: "number", min: 1, max: 3600, help: "seconds per time-series window (default 10)" },
  warmup: { kind: "number", min: 0, max: 600, help: "seconds run before measuring (default 5)" },
  model: { kind: "string", help: "model folder (default test/fixtures/tiny-seed0)" },
  clip: { kind: "string", help: "video file to loop (default: a testsrc clip made at --size and --fps)" },
  size: { kind: "string", help: "frame size WxH (default 640x480): the source scales to it" },
  fps: { kind: "number", min: 0.1, max: 240, help: "source frame rate, paced in real time (default 25: faster than inference)" },
  "frame-format": { kind: "string", choices: ["jpeg", "rgb24"], help: "what the source hands over (default jpeg, as serve does)" },
  task: { kind: "strings", help: 'task run on every frame, repeatable (default "<OD>")' },
  threads: { kind: "int", min: 1, max: 1024, help: "ONNX Runtime intra-op threads (default: all cores)" },
  thread: { kind: "string", choices: ["worker", "main"], help: "where inference runs: a worker thread like the service (default), or the main thread" },
  "num-beams": { kind: "int", min: 1, max: 16, help: "beam count (default: the model's generation_config, as serve does)" },
  "max-new-tokens": { kind: "int", min: 1, max: 4096, help: "token limit (default: the model's)" },
  json: { kind: "boolean", help: "print one JSON object instead of text" },
  help: { kind: "boolean", help: "show this help" },
};


export function parseServiceBenchArgs(argv: readonly string[], repoRoot: () => string): ServiceBenchOptions | "help" {
  const { flags, positional } = parseFlags("bench-service", argv, FLAGS);
  if (flags["help"]) return "help";
  if (positional.length > 0) throw new FlorenceError("INVALID_ARGUMENT", `bench-service: unexpected argument ${describeValue(positional[0])}`, { fix: "pass everything as --flag value" });
  const size = (flags["size"] as string | undefined) ?? "640x480";
  const match = /^(\d{2,5})x(\d{2,5})$/.exec(size);
  if (!match) throw new FlorenceError("INVALID_ARGUMENT", `bench-service: --size must be WxH, got ${describeValue(size)}`, { fix: "e.g. --size 640x480" });
  const tasks = (flags["task"] as string[] | undefined) ?? ["<OD>"];
  for (const task of tasks) {
    if (!isTaskToken(task)) throw new FlorenceError("UNKNOWN_TASK", `bench-service: --task ${describeValue(task)} is not a Florence-2 task token`, { fix: `use one of ${Object.keys(TASKS).join(" ")}` });
    if (TASKS[task].takesText) throw new FlorenceError("TASK_INPUT_INVALID", `bench-service: --task ${task} needs a text input, which this benchmark does not pass`, { fix: "pick a task without input, e.g. <OD>, <CAPTION>" });
  }
  const model = (flags["model"] as string | undefined) ?? join(repoRoot(), "test", "fixtures", "tiny-seed0");
  if (!existsSync(model)) throw new FlorenceError("INVALID_ARGUMENT", `bench-service: --model ${describeValue(model, 200)} does not exist`, { fix: "pass a model folder" });
  const clip = flags["clip"] as string | undefined;
  if (clip !== undefined && !existsSync(clip)) throw new FlorenceError("INVALID_ARGUMENT", `bench-service: --clip ${describeValue(clip, 200)} does not exist`, { fix: "pass a video file, or leave --clip out to generate one" });
  return {
    model,
    clip,
    width: Number(match[1]),
    height: Number(match[2]),
    fps: (flags["fps"] as number | undefined) ?? 25,
    frameFormat: (flags["frame-format"] as "jpeg" | "rgb24" | undefined) ?? "jpeg",
    tasks,
    threads: (flags["threads"] as number | undefined) ?? availableParallelism(),
    thread: (flags["thread"] as "worker" | "main" | undefined) ?? "worker",
    numBeams: flags["num-beams"] as number | undefined,
    maxNewTokens: flags["max-new-tokens"] as number | undefined,
    durationS: (flags["duration"] as number | undefined) ?? 60,
    sampleS: (flags["sample"] as number | undefined) ?? 10,
    warmupS: (flags["warmup"] as number | undefined) ?? 5,
    json: flags["json"] === true,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics


export interface Spread {
  median: number;
  p90: number;
  max: number;
  n: number;
}

export function spread(values: readonly number[]): Spread {
  return { median: round(quantile(values, 0.5)), p90: round(quantile(values, 0.9)), max: round(values.length ? Math.max(...values) : NaN), n: values.length };
}

/** Least-squares slope of y over x (NaN with fewer than two distinct x). */
export function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = Math.min(xs.length, ys.length);
  if (n < 2) return NaN;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += xs[i]!;
    my += ys[i]!;
  }
  mx /= n;
  my /= n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i]! - mx) * (ys[i]! - my);
    sxx += (xs[i]! - mx) ** 2;
  }
  return sxx === 0 ? NaN : sxy / sxx;
}

// ---------------------------------------------------------------------------------------------------------------
// Measurement

/** One published result, all times in ms. */
interface ResultSample {
  at: number;
  captureToPublish: number;
  captureToPublishEnd: number;
  model: number;
  slotWait: number;
  pipeLag: number;
  publishCall: number;
  json: number;
  inferenceTotal: number;
}

/** The frame the loop is working on: the loop runs one frame at a time, so one record at a time suffices. */
interface FrameRecord {
  encodeStart: number;
  modelMs: number;
}

/** Wraps the model so that the loop's calls are timed per frame. */
/** The model the service runs: in a worker thread as serve.ts does by default, or on this thread. */
type BenchModel = InferenceModel & { dispose(): Promise<void> };

function timedModel(model: InferenceModel): { model: InferenceModel; current: () => FrameRecord | undefined } {
  let current: FrameRecord | undefined;
  return {
    current: () => current,
    model: {
      files: model.files,
      async encodeImage(image: RgbImage | Uint8Array): Promise<EncodedFrame> {
        const record: FrameRecord = { encodeStart: performance.now(), modelMs: 0 };
        current = record;
        try {
          return await model.encodeImage(image);
        } finally {
          record.modelMs += performance.now() - record.encodeStart;
        }
      },
      async runTask(vision: EncodedFrame, request: { task: string; text?: string | undefined }, options?: GenerateOptions): Promise<TaskResult> {
        const t0 = performance.now();
        try {
          return await model.runTask(vision, request, options);
        } finally {
          if (current) current.modelMs += performance.now() - t0;
        }
      },
      release: (vision: EncodedFrame) => model.release?.(vision),
    },
  };
}

interface Window {
  /** Seconds since the measurement started, at the window's end. */
  t_s: number;
  results: number;
  capture_to_publish_median_ms: number;
  service_overhead_median_ms: number;
  model_median_ms: number;
  rss_mib: number;
  heap_used_mib: number;
  external_mib: number;
  /** Share of the window the JS main thread was busy (frame delivery, the model's JS stages, loop, MQTT, subscriber). */
  event_loop_utilization: number;
  /** How late the main thread ran a due callback (p99): frames read from ffmpeg's pipe wait this long at worst
   * before they are stamped captured, and that wait is in no other figure. */
  event_loop_delay_p99_ms: number;
  frames_received: number;
  frames_dropped: number;
  frames_processed: number;
}

export interface ServiceBenchReport {
  machine: { cpus: number; node: string; platform: string };
  setup: {
    model: string;
    backend: string;
    clip: string;
    source: string;
    size: string;
    fps: number;
    frame_format: string;
    tasks: string[];
    generation: Record<string, unknown>;
    duration_s: number;
    warmup_s: number;
    sample_s: number;
  };
  results_published: number;
  results_received: number;
  service_overhead_ms: Spread;
  overhead_incl_slot_wait_ms: Spread;
  slot_wait_ms: Spread;
  /** Estimated: how late the frame reached JS after ffmpeg's 1/fps schedule (its offset above the minimum of the last
   * 5 s). Not in capture→publish, which starts at the stamp. */
  pipe_lag_ms: Spread;
  /** capture→publish + pipe lag: the frame's age at publish counted from its place in the source's schedule. */
  scheduled_capture_to_publish_ms: Spread;
  capture_to_publish_ms: Spread;
  capture_to_subscriber_ms: Spread;
  model_ms: Spread;
  inference_total_ms: Spread;
  publish_call_ms: Spread;
  json_stringify_ms: Spread;
  delivery_ms: Spread;
  /** Main-thread lateness over the run (resolution 5 ms): an upper bound on how long a frame can sit in ffmpeg's pipe before it is stamped captured. */
  event_loop_delay_ms: { p50: number; p99: number; max: number };
  frames: {
    received: number;
    taken: number;
    dropped: number;
    processed: number;
    /** Frames replaced in the slot before the loop took them, per frame received. */
    drop_ratio: number;
    /** Frames processed per frame received. */
    processed_ratio: number;
    source_fps: number;
    processed_fps: number;
  };
  mqtt: Record<string, unknown>;
  windows: Window[];
  trend: {
    latency_slope_ms_per_min: number;
    latency_last_over_first: number;
    overhead_slope_ms_per_min: number;
    rss_slope_mib_per_min: number;
    rss_last_over_first: number;
    heap_slope_mib_per_min: number;
    heap_last_over_first: number;
  };
  target: { service_overhead_median_ms_max: number; met: boolean };
}

function hasFfmpeg(): boolean {
  const probe = spawnSync("ffmpeg", ["-hide_banner", "-version"], { stdio: "ignore" });
  return probe.error === undefined && probe.status === 0;
}

const MIB = 1024 * 1024;
const CAMERA = "bench";
const PREFIX = "florence-edge-bench";

export async function runServiceBench(options: ServiceBenchOptions, repoRoot: string, progress: (line: string) => void, interrupted: Promise<void>): Promise<ServiceBenchReport> {
  let tempDir: string | undefined;
  let clip = options.clip;
  let broker: EmbeddedBroker | undefined;
  let publisher: MqttPublisher | undefined;
  let subscriber: MqttClient | undefined;
  let source: FrameSource | undefined;
  let loop: CameraLoop | undefined;
  let model: BenchModel | undefined;
  const engine = new OnnxRuntimeEngine({ intraOpThreads: options.threads });
  try {
    if (clip === undefined) {
      tempDir = mkdtempSync(join(tmpdir(), "florence-bench-service-"));
      clip = join(tempDir, "clip.mp4");
      const made = spawnSync("sh", [join(repoRoot, "scripts", "make-test-clip.sh"), clip, "20", String(Math.ceil(options.fps)), `${options.width}x${options.height}`], { stdio: ["ignore", "ignore", "pipe"] });
      if (made.status !== 0) throw new FlorenceError("INVALID_ARGUMENT", `scripts/make-test-clip.sh failed: ${String(made.stderr).trim()}`, { fix: "check ffmpeg, or pass --clip" });
    }

    if (options.thread === "worker") {
      model = await WorkerModel.start(options.model, { env: readEnvironment({}), backend: "onnxruntime", threads: options.threads });
    } else {
      const local = await Florence2.load(options.model, { engine });
      model = { files: local.files, encodeImage: (i) => local.encodeImage(i), runTask: (v, r, o) => local.runTask(v as VisionFeatures, r, o), dispose: () => local.dispose() };
    }
    const timed = timedModel(model);
    broker = await startBroker({ host: "127.0.0.1", port: 0 });

    // the subscriber: what Home Assistant would see
    const published = new Map<string, number>();
    const deliveries: { at: number; delivery: number; captureToSubscriber: number }[] = [];
    const captureOf = new Map<string, number>();
    let received = 0;
    subscriber = await connectAsync(broker.url, { protocolVersion: 4, clientId: `bench-sub-${process.pid}`, reconnectPeriod: 0 });
    subscriber.on("message", (topic, payload) => {
      const at = performance.now();
      if (topic.split("/").length !== 3) return;
      received++;
      const message = JSON.parse(payload.toString("utf8")) as ResultMessage;
      const key = `${message.frame}\u0000${message.task}`;
      const sentAt = published.get(key);
      const capturedMono = captureOf.get(key);
      published.delete(key);
      captureOf.delete(key);
      if (sentAt !== undefined && capturedMono !== undefined) deliveries.push({ at, delivery: at - sentAt, captureToSubscriber: at - capturedMono });
    });
    await subscriber.subscribeAsync(`${PREFIX}/${CAMERA}/#`, { qos: 0 });

    publisher = new MqttPublisher({ url: broker.url, cameras: [CAMERA], topicPrefix: PREFIX, protocol: 4, discovery: { enabled: false }, log: (level, message) => { if (level === "warn" || level === "error") progress(`mqtt ${level}: ${message}`); } });
    publisher.start();
    if (!(await publisher.waitOnline(10_000))) throw new FlorenceError("ENGINE_UNAVAILABLE", `the publisher did not connect to the embedded broker ${broker.url}`);

    const slot = new LatestFrame(CAMERA);
    const pipeLagOf = new WeakMap<Frame, number>();
    const samples: ResultSample[] = [];
    let measureFrom = Number.POSITIVE_INFINITY;
    let publishedCount = 0;
    const onResult = (message: ResultMessage, frame: Frame, taskResult: TaskResult) => {
      // as serve.ts: stamp capture_to_publish, then publish
      const t0 = performance.now();
      message.latency_ms.capture_to_publish = Math.round((t0 - frame.capturedMono) * 100) / 100;
      const key = `${message.frame}\u0000${message.task}`;
      published.set(key, t0);
      captureOf.set(key, frame.capturedMono);
      publisher!.publishResult(message);
      const t1 = performance.now();
      publishedCount++;
      // bounded even if the subscriber misses messages
      if (published.size > 1000) {
        const oldest = published.keys().next().value!;
        published.delete(oldest);
        captureOf.delete(oldest);
      }
      const j0 = performance.now();
      JSON.stringify(message);
      const json = performance.now() - j0;
      const record = timed.current();
      if (!record || t0 < measureFrom) return;
      const t = taskResult.timings_ms;
      samples.push({
        at: t1,
        captureToPublish: t0 - frame.capturedMono,
        captureToPublishEnd: t1 - frame.capturedMono,
        model: record.modelMs,
        slotWait: record.encodeStart - frame.capturedMono,
        pipeLag: pipeLagOf.get(frame) ?? NaN,
        publishCall: t1 - t0,
        json,
        inferenceTotal: (t.decode_ms ?? 0) + (t.preprocess_ms ?? 0) + (t.vision_ms ?? 0) + t.encoder_ms + t.decoder_ms + t.parse_ms,
      });
    };
    const tasks: TaskSchedule[] = options.tasks.map((task) => ({ task, text: undefined, intervalS: 0, snapshot: false }));
    const generate: GenerateOptions = {
      ...(options.numBeams !== undefined ? { numBeams: options.numBeams } : {}),
      ...(options.maxNewTokens !== undefined ? { maxNewTokens: options.maxNewTokens } : {}),
    };
    const errors: string[] = [];
    loop = new CameraLoop({
      model: timed.model,
      cameras: [{ name: CAMERA, slot, tasks }],
      generate,
      waitForFrame: (signal) => waitForAnyFrame([slot], signal),
      events: {
        result: (message, frame, taskResult) => onResult(message, frame, taskResult),
        error: (camera, stage, error) => {
          if (errors.length < 5) errors.push(`${camera} ${stage}: ${String((error as Error).message ?? error)}`);
        },
        processed: () => undefined,
      },
    });

    source = createSource({
      camera: CAMERA,
      type: "file",
      path: clip,
      loop: true,
      fps: options.fps,
      decoder: "ffmpeg",
      drops: slot,
      ...(options.frameFormat === "rgb24" || options.clip !== undefined ? { output: options.frameFormat, width: options.width, height: options.height } : {}),
    });
    const sourceDescription = source.description;
    // ffmpeg paces frames at 1/fps, so a frame's lateness is its offset from that schedule above the recent minimum
    const intervalMs = 1000 / options.fps;
    const offsets = new Float64Array(Math.max(8, Math.round(options.fps * 5)));
    let offsetCount = 0;
    source.start((frame) => {
      offsets[offsetCount++ % offsets.length] = frame.capturedMono - frame.seq * intervalMs;
      let baseline = Number.POSITIVE_INFINITY;
      for (let i = 0; i < Math.min(offsetCount, offsets.length); i++) if (offsets[i]! < baseline) baseline = offsets[i]!;
      pipeLagOf.set(frame, frame.capturedMono - frame.seq * intervalMs - baseline);
      slot.put(frame);
    }, (status) => {
      if (status.state === "failed" || status.state === "stalled" || status.state === "restarting") progress(`source ${status.state}: ${status.reason ?? ""}`);
    });
    loop.start();
    progress(`${sourceDescription}; ${options.tasks.join(" + ")} with ${engine.description} (inference on the ${options.thread === "worker" ? "worker" : "main"} thread); warm-up ${options.warmupS} s, then ${options.durationS} s`);

    const sleep = (ms: number) => Promise.race([new Promise<boolean>((r) => setTimeout(() => r(false), ms)), interrupted.then(() => true)]);
    if (await sleep(options.warmupS * 1000)) throw new FlorenceError("INVALID_ARGUMENT", "interrupted during the warm-up");

    // measurement
    measureFrom = performance.now();
    const base = { received: slot.received, taken: slot.taken, dropped: slot.dropped, processed: loop.processedFrames, published: publishedCount, delivered: received };
    deliveries.length = 0;
    const windows: Window[] = [];
    let windowSampleIndex = 0;
    let last = { received: slot.received, dropped: slot.dropped, processed: loop.processedFrames };
    let elu = performance.eventLoopUtilization();
    const loopDelay = monitorEventLoopDelay({ resolution: 5 });
    const loopDelayAll = monitorEventLoopDelay({ resolution: 5 });
    loopDelay.enable();
    loopDelayAll.enable();
    const end = measureFrom + options.durationS * 1000;
    let stoppedEarly = false;
    while (performance.now() < end - 1) {
      const wait = Math.min(options.sampleS * 1000, end - performance.now());
      if (await sleep(wait)) {
        stoppedEarly = true;
      }
      const now = performance.now();
      const inWindow = samples.slice(windowSampleIndex);
      windowSampleIndex = samples.length;
      const memory = process.memoryUsage();
      const eluNow = performance.eventLoopUtilization(elu);
      elu = performance.eventLoopUtilization();
      windows.push({
        t_s: round((now - measureFrom) / 1000, 1),
        results: inWindow.length,
        capture_to_publish_median_ms: round(quantile(inWindow.map((s) => s.captureToPublish), 0.5)),
        service_overhead_median_ms: round(quantile(inWindow.map((s) => s.captureToPublishEnd - s.model - s.slotWait), 0.5)),
        model_median_ms: round(quantile(inWindow.map((s) => s.model), 0.5)),
        rss_mib: round(memory.rss / MIB, 1),
        heap_used_mib: round(memory.heapUsed / MIB, 1),
        external_mib: round((memory.external + memory.arrayBuffers) / MIB, 1),
        event_loop_utilization: round(eluNow.utilization, 3),
        event_loop_delay_p99_ms: round(loopDelay.percentile(99) / 1e6, 1),
        frames_received: slot.received - last.received,
        frames_dropped: slot.dropped - last.dropped,
        frames_processed: loop.processedFrames - last.processed,
      });
      loopDelay.reset();
      last = { received: slot.received, dropped: slot.dropped, processed: loop.processedFrames };
      const w = windows[windows.length - 1]!;
      progress(`  t=${w.t_s}s results ${w.results}  capture→publish median ${w.capture_to_publish_median_ms} ms  overhead ${w.service_overhead_median_ms} ms  rss ${w.rss_mib} MiB  heap ${w.heap_used_mib} MiB  elu ${w.event_loop_utilization} lag p99 ${w.event_loop_delay_p99_ms} ms`);
      if (stoppedEarly) break;
    }
    const measuredS = (performance.now() - measureFrom) / 1000;
    loopDelay.disable();
    loopDelayAll.disable();
    // the histogram's floor is its timer resolution: delays below ~5 ms read as ~5 ms
    const eventLoopDelay = { p50: round(loopDelayAll.percentile(50) / 1e6, 1), p99: round(loopDelayAll.percentile(99) / 1e6, 1), max: round(loopDelayAll.max / 1e6, 1) };
    const counts = { received: slot.received - base.received, taken: slot.taken - base.taken, dropped: slot.dropped - base.dropped, processed: loop.processedFrames - base.processed };
    const resultsPublished = publishedCount - base.published;
    const resultsReceived = received - base.delivered;
    // let the last deliveries arrive before stopping
    await publisher.flush(2000);
    if (errors.length > 0) progress(`errors: ${errors.join("; ")}`);
    if (samples.length === 0) throw new FlorenceError("ENGINE_UNAVAILABLE", `no result was published in ${round(measuredS, 1)} s${errors.length ? `: ${errors[0]}` : ""}`, { fix: "run longer (--duration), or check the source and model" });

    const firstFull = windows[0]!;
    const lastW = windows[windows.length - 1]!;
    const minutes = windows.map((w) => w.t_s / 60);
    const report: ServiceBenchReport = {
      machine: { cpus: availableParallelism(), node: process.version, platform: `${process.platform} ${process.arch}` },
      setup: {
        model: options.model,
        backend: engine.description,
        clip,
        source: sourceDescription,
        size: `${options.width}x${options.height}`,
        fps: options.fps,
        frame_format: options.frameFormat,
        tasks: options.tasks,
        generation: { num_beams: options.numBeams ?? "model default", max_new_tokens: options.maxNewTokens ?? "model default" },
        duration_s: round(measuredS, 1),
        warmup_s: options.warmupS,
        sample_s: options.sampleS,
      },
      results_published: resultsPublished,
      results_received: resultsReceived,
      service_overhead_ms: spread(samples.map((s) => s.captureToPublishEnd - s.model - s.slotWait)),
      overhead_incl_slot_wait_ms: spread(samples.map((s) => s.captureToPublish - s.model)),
      slot_wait_ms: spread(samples.map((s) => s.slotWait)),
      pipe_lag_ms: spread(samples.map((s) => s.pipeLag).filter((v) => Number.isFinite(v))),
      scheduled_capture_to_publish_ms: spread(samples.map((s) => s.captureToPublish + s.pipeLag).filter((v) => Number.isFinite(v))),
      capture_to_publish_ms: spread(samples.map((s) => s.captureToPublish)),
      capture_to_subscriber_ms: spread(deliveries.map((d) => d.captureToSubscriber)),
      model_ms: spread(samples.map((s) => s.model)),
      inference_total_ms: spread(samples.map((s) => s.inferenceTotal)),
      publish_call_ms: spread(samples.map((s) => s.publishCall)),
      json_stringify_ms: spread(samples.map((s) => s.json)),
      delivery_ms: spread(deliveries.map((d) => d.delivery)),
      event_loop_delay_ms: eventLoopDelay,
      frames: {
        ...counts,
        drop_ratio: round(counts.dropped / Math.max(1, counts.received), 3),
        processed_ratio: round(counts.processed / Math.max(1, counts.received), 3),
        source_fps: round(counts.received / measuredS, 2),
        processed_fps: round(counts.processed / measuredS, 2),
      },
      mqtt: publisher.counters() as unknown as Record<string, unknown>,
      windows,
      trend: {
        latency_slope_ms_per_min: round(slope(minutes, windows.map((w) => w.capture_to_publish_median_ms)), 3),
        latency_last_over_first: round(lastW.capture_to_publish_median_ms / firstFull.capture_to_publish_median_ms, 3),
        overhead_slope_ms_per_min: round(slope(minutes, windows.map((w) => w.service_overhead_median_ms)), 3),
        rss_slope_mib_per_min: round(slope(minutes, windows.map((w) => w.rss_mib)), 3),
        rss_last_over_first: round(lastW.rss_mib / firstFull.rss_mib, 3),
        heap_slope_mib_per_min: round(slope(minutes, windows.map((w) => w.heap_used_mib)), 3),
        heap_last_over_first: round(lastW.heap_used_mib / firstFull.heap_used_mib, 3),
      },
      target: { service_overhead_median_ms_max: 5, met: false },
    };
    report.target.met = report.service_overhead_ms.median <= report.target.service_overhead_median_ms_max;
    return report;
  } finally {
    // the order serve.ts stops in: sources, the loop (finishes the inference in flight), MQTT, model, broker
    await source?.stop().catch(() => undefined);
    await loop?.stop().catch(() => undefined);
    await publisher?.stop(5000).catch(() => undefined);
    await subscriber?.endAsync(true).catch(() => undefined);
    if (model) await model.dispose().catch(() => undefined);
    await engine.dispose().catch(() => undefined);
    await broker?.close().catch(() => undefined);
    if (tempDir !== undefined) rmSync(tempDir, { recursive: true, force: true });
  }
}

function line(name: string, s: Spread, note = ""): string {
  return `  ${name.padEnd(30)} median ${String(s.median).padStart(8)}  p90 ${String(s.p90).padStart(8)}  max ${String(s.max).padStart(8)}  (n ${s.n})${note ? `  ${note}` : ""}`;
}

export function formatReport(r: ServiceBenchReport): string {
  const f = r.frames;
  const t = r.trend;
  const lines = [
    `bench-service — ${r.setup.source}`,
    `  ${r.setup.tasks.join(" + ")} on every frame, ${r.setup.backend}, model ${r.setup.model}; ${r.machine.cpus} CPUs, Node ${r.machine.node}`,
    `  measured ${r.setup.duration_s} s after ${r.setup.warmup_s} s warm-up; windows of ${r.setup.sample_s} s`,
    "",
    "per published result (ms):",
    line("service overhead", r.service_overhead_ms, `target median <= ${r.target.service_overhead_median_ms_max}: ${r.target.met ? "MET" : "NOT MET"}`),
    line("  incl. slot wait", r.overhead_incl_slot_wait_ms, "(capture→publish − model)"),
    line("slot wait (frame age)", r.slot_wait_ms, `(newest frame wins: <= 1/fps = ${round(1000 / r.setup.fps, 1)} ms)`),
    line("pipe lag (estimated)", r.pipe_lag_ms, "(frame read late from ffmpeg's pipe: main thread busy)"),
    line("model (encodeImage+runTask)", r.model_ms),
    line("  TaskResult stage sum", r.inference_total_ms),
    line("capture→publish", r.capture_to_publish_ms),
    line("  + pipe lag", r.scheduled_capture_to_publish_ms, "(from the source's 1/fps schedule)"),
    line("publish call", r.publish_call_ms, "(topic, JSON.stringify, queue, socket write)"),
    line("  JSON.stringify alone", r.json_stringify_ms),
    line("publish→subscriber", r.delivery_ms, "(loopback through aedes)"),
    line("capture→subscriber", r.capture_to_subscriber_ms),
    `  event-loop delay (5 ms timer)  p50 ${r.event_loop_delay_ms.p50}  p99 ${r.event_loop_delay_ms.p99}  max ${r.event_loop_delay_ms.max}  (how late a frame can be read from ffmpeg's pipe before capturedMono)`,
    "",
    `frames: received ${f.received} (${f.source_fps} fps), processed ${f.processed} (${f.processed_fps} fps), dropped ${f.dropped} — drop ratio ${f.drop_ratio}, processed/received ${f.processed_ratio}`,
    `results: published ${r.results_published}, received by the subscriber ${r.results_received}; mqtt dropped ${String(r.mqtt["dropped_backpressure"])} (backpressure) ${String(r.mqtt["dropped_offline"])} (offline)`,
    "",
    "time series:",
    `  ${"t s".padStart(7)} ${"results".padStart(7)} ${"c→p med".padStart(8)} ${"ovh med".padStart(8)} ${"model".padStart(8)} ${"rss MiB".padStart(8)} ${"heap MiB".padStart(8)} ${"ext MiB".padStart(8)} ${"elu".padStart(6)} ${"lag99".padStart(6)} ${"recv".padStart(6)} ${"drop".padStart(6)} ${"proc".padStart(6)}`,
    ...r.windows.map((w) => `  ${String(w.t_s).padStart(7)} ${String(w.results).padStart(7)} ${String(w.capture_to_publish_median_ms).padStart(8)} ${String(w.service_overhead_median_ms).padStart(8)} ${String(w.model_median_ms).padStart(8)} ${String(w.rss_mib).padStart(8)} ${String(w.heap_used_mib).padStart(8)} ${String(w.external_mib).padStart(8)} ${String(w.event_loop_utilization).padStart(6)} ${String(w.event_loop_delay_p99_ms).padStart(6)} ${String(w.frames_received).padStart(6)} ${String(w.frames_dropped).padStart(6)} ${String(w.frames_processed).padStart(6)}`),
    "",
    `trend: capture→publish ${t.latency_slope_ms_per_min} ms/min (last/first window ${t.latency_last_over_first}); overhead ${t.overhead_slope_ms_per_min} ms/min;`,
    `       RSS ${t.rss_slope_mib_per_min} MiB/min (last/first ${t.rss_last_over_first}); heap ${t.heap_slope_mib_per_min} MiB/min (last/first ${t.heap_last_over_first})`,
  ];
  return lines.join("\n");
}

async function main(argv: readonly string[]): Promise<number> {
  const options = parseServiceBenchArgs(argv, () => packageRoot());
  if (options === "help") {
    process.stdout.write(`${usage("bench-service", "the serve pipeline's own cost per frame, latency and memory over time", FLAGS)}\n`);
    return 0;
  }
  if (!hasFfmpeg()) {
    const reason = "ffmpeg not found: the benchmark needs a real file source (install ffmpeg, e.g. apt-get install ffmpeg)";
    process.stdout.write(options.json ? `${JSON.stringify({ skipped: true, reason })}\n` : `bench-service skipped: ${reason}\n`);
    return 0;
  }
  let interrupt!: () => void;
  const interrupted = new Promise<void>((r) => (interrupt = r));
  // Ctrl-C ends the measurement early and still reports
  process.once("SIGINT", () => interrupt());
  const report = await runServiceBench(options, packageRoot(), (text) => process.stderr.write(`${text}\n`), interrupted);
  process.stdout.write(options.json ? `${JSON.stringify(report)}\n` : `${formatReport(report)}\n`);
  return 0;
}

runAsScript(import.meta, main);
