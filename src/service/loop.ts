/**
 * The camera loop: newest frame per camera → one vision pass → the tasks due on it → results out.
 * Inference runs one unit of work at a time (one model, one accelerator), in fair turns: each camera with a fresh
 * frame, then one job of the request queue (scheduler.ts: HTTP requests, MQTT `infer` commands), round robin. So a
 * slow camera never starves the others, requests cannot starve the cameras (nor the cameras the requests), and
 * inference never falls behind real time (older frames are dropped and counted by the per-camera slot). One bad
 * frame, command, request or task is counted and logged; the loop goes on.
 *
 * Background jobs (the events' descriptions) come last: they run when no frame and no request waits, and while frames
 * keep coming they may take at most `background.share` of the inference time (a credit earned by each frame's time),
 * so detection keeps its rate; their queue is bounded and a job that does not fit is dropped and counted.
 */
import { performance } from "node:perf_hooks";
import { FlorenceError } from "../errors.ts";
import type { GenerateOptions, TaskResult, VisionFeatures } from "../florence/florence2.ts";
import type { RgbImage } from "../florence/image.ts";
import { RequestQueue } from "./scheduler.ts";
import type { TaskSchedule } from "./service_config.ts";
import type { Frame, ResultMessage } from "./types.ts";

/** A frame's vision features as the loop sees them: only the timings are read. */
export interface EncodedFrame {
  readonly timings: VisionFeatures["timings"];
}

/**
 * What the loop needs of a Florence-2 model: a Florence2 on this thread, or a WorkerModel (worker_model.ts) whose
 * features stay in its thread until released.
 */
export interface InferenceModel<V extends EncodedFrame = EncodedFrame> {
  readonly files: { readonly id: string };
  encodeImage(image: RgbImage | Uint8Array): Promise<V>;
  runTask(vision: V, request: { task: string; text?: string | undefined }, options?: GenerateOptions): Promise<TaskResult>;
  /** Called once the frame's tasks are done with the features. */
  release?(vision: V): void;
}

/** What the loop needs of the per-camera newest-frame slot. */
export interface FrameSlot {
  take(): Frame | undefined;
  /** Whether a frame waits (without taking it); a slot without it always counts as waiting. */
  readonly pending?: boolean;
}

/** Low-priority work on the model: one task on an image, answered through `done` or `failed`. */
export interface BackgroundJob {
  camera: string;
  image: RgbImage | Uint8Array;
  task: string;
  text: string | undefined;
  done(result: TaskResult): void;
  failed(error: unknown): void;
}

export interface LoopCamera {
  name: string;
  slot: FrameSlot;
  tasks: TaskSchedule[];
}

export interface LoopEvents {
  /** A result to publish (with the frame, for snapshots). */
  result(message: ResultMessage, frame: Frame, taskResult: TaskResult, schedule: TaskSchedule): void;
  /** A frame that could not be decoded, or a task that failed; counted, and logged by the receiver. */
  error(camera: string, stage: "decode" | "inference", error: unknown): void;
  /** Called after every processed frame: progress for the watchdog and the stats. */
  processed(camera: string, stageMs: Record<string, number>): void;
}

export interface OneOffRequest {
  camera: string;
  task: string;
  text: string | undefined;
  resolve(result: ResultMessage): void;
  reject(error: unknown): void;
}

export interface LoopOptions {
  model: InferenceModel;
  cameras: LoopCamera[];
  events: LoopEvents;
  generate: GenerateOptions;
  /** Wakes the loop when any camera has a new frame; resolves at once if one is pending. */
  waitForFrame(signal: AbortSignal): Promise<void>;
  /** The queue of on-demand work that takes turns with the cameras; default: one of `maxPendingRequests` (8). */
  requests?: RequestQueue<InferenceModel>;
  maxPendingRequests?: number;
  /** Background jobs: at most `maxQueued` waiting (default 16), at most `share` of the inference time while frames wait (default 0.2). */
  background?: { maxQueued?: number; share?: number };
  now?: () => number;
}

/** A frame as the model (and renderSnapshot) take it: raw RGB, or the encoded file's bytes. */
export function frameImage(frame: Frame): RgbImage | Uint8Array {
  return frame.format === "rgb24" ? { width: frame.width, height: frame.height, data: frame.data } : frame.data;
}

/** One task on one image: a vision pass, the task, and the features released whatever happens. */
export async function inferOnce(model: InferenceModel, image: RgbImage | Uint8Array, request: { task: string; text?: string | undefined }, generate: GenerateOptions): Promise<TaskResult> {
  const vision = await model.encodeImage(image);
  try {
    return await model.runTask(vision, { task: request.task, text: request.text }, generate);
  } finally {
    model.release?.(vision);
  }
}

export class CameraLoop {
  readonly #options: LoopOptions;
  readonly #lastRun = new Map<string, number>();
  readonly #lastFrame = new Map<string, Frame>();
  readonly #requests: RequestQueue<InferenceModel>;
  readonly #background: BackgroundJob[] = [];
  /** Milliseconds of inference background jobs may still take while frames wait. */
  #backgroundCredit = 0;
  /** Whose turn it is: cameras[0..n-1], then n for the request queue. */
  #cursor = 0;
  #abort = new AbortController();
  #running: Promise<void> | undefined;
  /** Frames fully processed: the watchdog's progress counter. */
  processedFrames = 0;
  /** Background jobs run, and dropped because the queue was full. */
  backgroundRun = 0;
  backgroundDropped = 0;

  constructor(options: LoopOptions) {
    this.#options = options;
    this.#requests = options.requests ?? new RequestQueue({ capacity: options.maxPendingRequests ?? 8 });
    this.#requests.onWork = () => this.#wake?.();
  }

  /** Jobs of the request queue run so far: progress for the watchdog beside processedFrames. */
  get servedRequests(): number {
    return this.#requests.counters().served;
  }

  /** True when the request queue has work waiting. */
  get requestsWaiting(): boolean {
    return this.#requests.depth > 0;
  }

  #now(): number {
    return this.#options.now?.() ?? Date.now();
  }

  /** Replaces a camera's schedule (an MQTT `set` command, already validated). */
  setTasks(camera: string, tasks: TaskSchedule[]): void {
    const entry = this.#options.cameras.find((c) => c.name === camera);
    if (!entry) throw new FlorenceError("INVALID_ARGUMENT", `unknown camera ${JSON.stringify(camera)}`, { fix: `cameras: ${this.#options.cameras.map((c) => c.name).join(", ")}` });
    entry.tasks = tasks;
    for (const key of [...this.#lastRun.keys()]) if (key.startsWith(`${camera}\u0000`)) this.#lastRun.delete(key);
  }

  tasksOf(camera: string): TaskSchedule[] | undefined {
    return this.#options.cameras.find((c) => c.name === camera)?.tasks;
  }

  /** Queues a one-off inference on the camera's newest frame; refused with BUSY when the request queue is full. */
  request(request: Omit<OneOffRequest, "resolve" | "reject">): Promise<ResultMessage> {
    return this.#requests.submit("mqtt", () => new Promise<ResultMessage>((resolve, reject) => void this.#serveRequest({ ...request, resolve, reject })));
  }

  /** Queues a background job; false (counted in `backgroundDropped`) when the queue is full or the loop stopped. */
  enqueueBackground(job: BackgroundJob): boolean {
    if (this.#abort.signal.aborted || this.#background.length >= (this.#options.background?.maxQueued ?? 16)) {
      this.backgroundDropped++;
      return false;
    }
    this.#background.push(job);
    this.#wake?.();
    return true;
  }

  /** Background jobs waiting. */
  get backgroundQueued(): number {
    return this.#background.length;
  }

  #wake: (() => void) | undefined;

  start(): void {
    if (this.#running) return;
    this.#abort = new AbortController();
    this.#running = this.#run(this.#abort.signal);
  }

  /** Stops taking new work; resolves when the inference in flight has finished. */
  async stop(): Promise<void> {
    this.#abort.abort();
    this.#wake?.();
    await this.#running;
    this.#running = undefined;
    this.#requests.rejectAll(new FlorenceError("ENGINE_UNAVAILABLE", "the service is stopping", { fix: "retry once it is back" }));
    for (const job of this.#background.splice(0)) job.failed(new FlorenceError("ENGINE_UNAVAILABLE", "the service is stopping"));
  }

  /** Whether a camera has a frame waiting with tasks due on it. */
  #framesWaiting(now: number): boolean {
    return this.#options.cameras.some((c) => c.slot.pending !== false && this.#dueTasks(c, now).length > 0);
  }

  #dueTasks(camera: LoopCamera, now: number): TaskSchedule[] {
    return camera.tasks.filter((t) => {
      const last = this.#lastRun.get(`${camera.name}\u0000${t.task}\u0000${t.text ?? ""}`);
      return last === undefined || t.intervalS === 0 || now - last >= t.intervalS * 1000;
    });
  }

  /** One turn: the first lane from the cursor with work (a camera with a due frame, or the request queue) runs. */
  async #turn(signal: AbortSignal): Promise<boolean> {
    const cameras = this.#options.cameras;
    const lanes = cameras.length + 1;
    for (let i = 0; i < lanes && !signal.aborted; i++) {
      const lane = (this.#cursor + i) % lanes;
      if (lane === cameras.length) {
        const job = this.#requests.take();
        if (!job) continue;
        this.#cursor = (lane + 1) % lanes;
        await job.run(this.#options.model);
        return true;
      }
      const camera = cameras[lane]!;
      const due = this.#dueTasks(camera, this.#now());
      if (due.length === 0) continue;
      const frame = camera.slot.take();
      if (!frame) continue;
      this.#lastFrame.set(camera.name, frame);
      this.#cursor = (lane + 1) % lanes;
      const started = performance.now();
      await this.#process(camera, frame, due);
      const share = this.#options.background?.share ?? 0.2;
      // earned only while jobs wait, and at most a few seconds' worth: idle credit must not starve frames later
      if (this.#background.length > 0) this.#backgroundCredit = Math.min(5000, this.#backgroundCredit + ((performance.now() - started) * share) / (1 - share));
      return true;
    }
    return false;
  }

  async #run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      // a background job: on its credit, or when neither a frame nor a request waits
      if (this.#background.length > 0 && (this.#backgroundCredit > 0 || (this.#requests.depth === 0 && !this.#framesWaiting(this.#now())))) {
        const started = performance.now();
        await this.#runBackground(this.#background.shift()!);
        this.#backgroundCredit -= performance.now() - started;
        continue;
      }
      const worked = await this.#turn(signal);
      if (!worked && !signal.aborted && this.#requests.depth === 0 && this.#background.length === 0) {
        const wake = new AbortController();
        const onAbort = () => wake.abort();
        signal.addEventListener("abort", onAbort, { once: true });
        this.#wake = () => wake.abort();
        // re-check schedules at least every 250 ms: an interval task can become due without a new frame
        const timer = setTimeout(() => wake.abort(), 250);
        try {
          await this.#options.waitForFrame(wake.signal).catch(() => undefined);
        } finally {
          clearTimeout(timer);
          signal.removeEventListener("abort", onAbort);
          this.#wake = undefined;
        }
      }
    }
  }

  async #process(camera: LoopCamera, frame: Frame, due: TaskSchedule[]): Promise<void> {
    const { model, events, generate } = this.#options;
    let vision: EncodedFrame;
    try {
      vision = await model.encodeImage(frameImage(frame));
    } catch (error) {
      events.error(camera.name, "decode", error);
      return;
    }
    const stages: Record<string, number> = { preprocess: vision.timings.preprocess_ms, vision: vision.timings.vision_ms };
    if (vision.timings.decode_ms !== undefined) stages["decode"] = vision.timings.decode_ms;
    for (const schedule of due) {
      this.#lastRun.set(`${camera.name}\u0000${schedule.task}\u0000${schedule.text ?? ""}`, this.#now());
      try {
        const result = await model.runTask(vision, { task: schedule.task, text: schedule.text }, generate);
        stages["encoder"] = (stages["encoder"] ?? 0) + result.timings_ms.encoder_ms;
        stages["decoder"] = (stages["decoder"] ?? 0) + result.timings_ms.decoder_ms;
        stages["parse"] = (stages["parse"] ?? 0) + result.timings_ms.parse_ms;
        events.result(this.#message(camera.name, frame, result, schedule.text), frame, result, schedule);
      } catch (error) {
        events.error(camera.name, "inference", error);
      }
    }
    model.release?.(vision);
    this.processedFrames++;
    events.processed(camera.name, stages);
  }

  async #runBackground(job: BackgroundJob): Promise<void> {
    try {
      const result = await inferOnce(this.#options.model, job.image, job, this.#options.generate);
      this.backgroundRun++;
      job.done(result);
    } catch (error) {
      job.failed(error);
    }
  }

  async #serveRequest(request: OneOffRequest): Promise<void> {
    const camera = this.#options.cameras.find((c) => c.name === request.camera);
    const frame = camera ? (camera.slot.take() ?? this.#lastFrame.get(camera.name)) : undefined;
    if (!camera || !frame) {
      request.reject(new FlorenceError("INVALID_ARGUMENT", camera ? `camera ${request.camera} has no frame yet` : `unknown camera ${JSON.stringify(request.camera)}`));
      return;
    }
    this.#lastFrame.set(camera.name, frame);
    try {
      const result = await inferOnce(this.#options.model, frameImage(frame), request, this.#options.generate);
      request.resolve(this.#message(camera.name, frame, result, request.text));
    } catch (error) {
      request.reject(error);
    }
  }

  #message(camera: string, frame: Frame, result: TaskResult, text: string | undefined): ResultMessage {
    const t = result.timings_ms;
    return {
      camera,
      task: result.task,
      ...(text !== undefined ? { text_input: text } : {}),
      frame: frame.seq,
      timestamp: new Date(frame.capturedAt).toISOString(),
      image_size: result.image_size,
      result: result.result,
      latency_ms: {
        total: round(t.total_ms),
        capture_to_publish: round(performance.now() - frame.capturedMono),
        ...(t.decode_ms !== undefined ? { decode: round(t.decode_ms) } : {}),
        preprocess: round(t.preprocess_ms ?? 0),
        vision: round(t.vision_ms ?? 0),
        encoder: round(t.encoder_ms),
        decoder: round(t.decoder_ms),
        parse: round(t.parse_ms),
      },
      model: this.#options.model.files.id,
    };
  }
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
