/**
 * A Florence-2 model in a worker thread, seen from the service's main thread as the camera loop's InferenceModel.
 *
 * Protocol (structured-clone messages; image bytes are transferred, not copied twice):
 *   main → worker: { op: "encode", id, image } → { type: "encoded", id, imageSize, timings }: the vision features
 *                  stay in the worker under `id` until { op: "release", vision: id };
 *                  { op: "run", id, vision, request, options } → { type: "result", id, result: TaskResult };
 *                  { op: "close" } → { type: "closed" } (model and engine disposed).
 *   worker → main: { type: "ready" | "failed" } once after loading; { type: "error", id, error } for a failed
 *                  request (a FlorenceError's code, message and fix, rebuilt here); { type: "log", line }.
 * Requests run one at a time in the worker, in the order sent. If the worker dies, every waiting and later call
 * fails with ENGINE_FAILED naming the cause (the watchdog sees no progress and systemd restarts the service).
 */
import { Worker } from "node:worker_threads";
import { type ErrorCode, FlorenceError } from "../errors.ts";
import type { GenerateOptions, TaskResult, VisionFeatures } from "../florence/florence2.ts";
import type { RgbImage } from "../florence/image.ts";
import type { OpenOptions } from "../mod.ts";
import type { BackendName } from "../engine/engine.ts";

export type WorkerInit = { model: string; options: Omit<OpenOptions, "log"> };

export type WorkerRequest =
  | { op: "encode"; id: number; image: RgbImage | Uint8Array }
  | { op: "run"; id: number; vision: number; request: { task: string; text?: string | undefined }; options: GenerateOptions | undefined }
  | { op: "release"; vision: number }
  | { op: "close" };

export type WorkerError = { code: ErrorCode; message: string; fix?: string };

export type WorkerReply =
  | { type: "ready"; files: { id: string; dir: string; precision: string }; engine: { backend: BackendName; description: string } }
  | { type: "failed"; error: WorkerError }
  | { type: "encoded"; id: number; imageSize: VisionFeatures["imageSize"]; timings: VisionFeatures["timings"] }
  | { type: "result"; id: number; result: TaskResult }
  | { type: "error"; id: number; error: WorkerError }
  | { type: "log"; line: string }
  | { type: "closed" };

/** Vision features that live in the worker. */
export interface RemoteVision {
  readonly handle: number;
  readonly imageSize: VisionFeatures["imageSize"];
  readonly timings: VisionFeatures["timings"];
}

function fromWire(error: WorkerError): FlorenceError {
  return new FlorenceError(error.code, error.message, error.fix ? { fix: error.fix } : {});
}

/** The worker's entry file next to this one: .js when compiled, .ts when run from source (Deno). */
function workerUrl(): URL {
  const self = new URL(import.meta.url);
  return new URL(self.pathname.endsWith(".ts") ? "./inference_worker.ts" : "./inference_worker.js", self);
}

/** A copy of the bytes in a buffer of their own, so that only they travel (a view may sit in a larger pool). */
function ownBytes(data: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(data);
}

export class WorkerModel {
  readonly files: { readonly id: string; readonly dir: string; readonly precision: string };
  readonly engine: { readonly backend: BackendName; readonly description: string };
  readonly #worker: Worker;
  readonly #waiting = new Map<number, { resolve(reply: WorkerReply): void; reject(error: unknown): void }>();
  #nextId = 1;
  #dead: FlorenceError | undefined;
  #closed: Promise<void> | undefined;

  private constructor(worker: Worker, ready: Extract<WorkerReply, { type: "ready" }>) {
    this.#worker = worker;
    this.files = ready.files;
    this.engine = ready.engine;
  }

  /** Starts the worker and loads the model there; resolves once it is ready (or rejects with the load error). */
  static start(model: string, options: OpenOptions): Promise<WorkerModel> {
    const { log, ...rest } = options;
    const worker = new Worker(workerUrl(), { workerData: { model, options: rest } satisfies WorkerInit });
    return new Promise((resolve, reject) => {
      let instance: WorkerModel | undefined;
      const fail = (error: FlorenceError) => {
        if (instance) instance.#die(error);
        else reject(error);
      };
      worker.on("message", (reply: WorkerReply) => {
        if (reply.type === "log") log?.(reply.line);
        else if (reply.type === "ready") resolve((instance = new WorkerModel(worker, reply)));
        else if (reply.type === "failed") {
          reject(fromWire(reply.error));
          void worker.terminate();
        } else if (instance) instance.#reply(reply);
      });
      worker.on("error", (error) => fail(new FlorenceError("ENGINE_FAILED", `the inference worker failed: ${error.message}`, { cause: error })));
      worker.on("exit", (code) => fail(new FlorenceError("ENGINE_FAILED", `the inference worker exited (code ${code})`)));
    });
  }

  #reply(reply: WorkerReply): void {
    if (reply.type === "closed") return;
    if (!("id" in reply)) return;
    const waiter = this.#waiting.get(reply.id);
    if (!waiter) return;
    this.#waiting.delete(reply.id);
    if (reply.type === "error") waiter.reject(fromWire(reply.error));
    else waiter.resolve(reply);
  }

  #die(error: FlorenceError): void {
    if (this.#dead) return;
    this.#dead = this.#closed ? new FlorenceError("DISPOSED", "the model was disposed", { fix: "start the service again" }) : error;
    for (const waiter of this.#waiting.values()) waiter.reject(this.#dead);
    this.#waiting.clear();
  }

  #call(request: WorkerRequest & { id: number }, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    if (this.#dead) return Promise.reject(this.#dead);
    if (this.#closed) return Promise.reject(new FlorenceError("DISPOSED", "the model was disposed", { fix: "start the service again" }));
    return new Promise((resolve, reject) => {
      this.#waiting.set(request.id, { resolve, reject });
      this.#worker.postMessage(request, transfer);
    });
  }

  async encodeImage(image: RgbImage | Uint8Array): Promise<RemoteVision> {
    const id = this.#nextId++;
    const data = ownBytes(image instanceof Uint8Array ? image : image.data);
    const payload = image instanceof Uint8Array ? data : { width: image.width, height: image.height, data };
    const reply = (await this.#call({ op: "encode", id, image: payload }, [data.buffer])) as Extract<WorkerReply, { type: "encoded" }>;
    return { handle: id, imageSize: reply.imageSize, timings: reply.timings };
  }

  async runTask(vision: RemoteVision, request: { task: string; text?: string | undefined }, options?: GenerateOptions): Promise<TaskResult> {
    const reply = (await this.#call({ op: "run", id: this.#nextId++, vision: vision.handle, request, options })) as Extract<WorkerReply, { type: "result" }>;
    return reply.result;
  }

  release(vision: RemoteVision): void {
    if (!this.#dead && !this.#closed) this.#worker.postMessage({ op: "release", vision: vision.handle } satisfies WorkerRequest);
  }

  /** Disposes the model and engine in the worker (after the requests already sent), then ends the thread. */
  dispose(timeoutMs = 10_000): Promise<void> {
    this.#closed ??= (async () => {
      if (!this.#dead) {
        const closed = new Promise<void>((resolve) => {
          this.#worker.on("message", (reply: WorkerReply) => reply.type === "closed" && resolve());
          this.#worker.once("exit", () => resolve());
        });
        this.#worker.postMessage({ op: "close" } satisfies WorkerRequest);
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
        clearTimeout(timer);
      }
      await this.#worker.terminate();
    })();
    return this.#closed;
  }
}
