/**
 * The inference thread of `florence-edge serve` (a worker_threads worker). ONNX Runtime's Node binding runs a
 * session on the calling thread, so inference on the main thread would stall MQTT keep-alives, commands, the
 * watchdog and source pipes for the length of a vision pass; here it runs beside them. This file only adapts
 * messages to a Florence2 model: see worker_model.ts for the protocol and the main-thread side.
 */
import { parentPort, workerData } from "node:worker_threads";
import { FlorenceError, isFlorenceError } from "../errors.ts";
import type { Florence2, VisionFeatures } from "../florence/florence2.ts";
import { loadFlorence } from "../mod.ts";
import type { WorkerInit, WorkerReply, WorkerRequest, WorkerError } from "./worker_model.ts";

function toWire(error: unknown): WorkerError {
  if (isFlorenceError(error)) {
    const fix = error.fix;
    const message = fix && error.message.endsWith(` — ${fix}`) ? error.message.slice(0, -(fix.length + 3)) : error.message;
    return { code: error.code, message, ...(fix ? { fix } : {}) };
  }
  return { code: "ENGINE_FAILED", message: error instanceof Error ? error.message : String(error) };
}

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error("inference_worker.ts runs as a worker thread (see worker_model.ts)");
  const init = workerData as WorkerInit;
  const post = (reply: WorkerReply, transfer: ArrayBuffer[] = []): void => port.postMessage(reply, transfer);
  let model: Florence2;
  try {
    model = await loadFlorence(init.model, { ...init.options, log: (line) => post({ type: "log", line }) });
  } catch (error) {
    post({ type: "failed", error: toWire(error) });
    return;
  }
  post({
    type: "ready",
    files: { id: model.files.id, dir: model.files.dir, precision: model.files.precision },
    engine: { backend: model.engine.backend, description: model.engine.description },
  });

  const visions = new Map<number, VisionFeatures>();
  let chain = Promise.resolve();
  port.on("message", (request: WorkerRequest) => {
    // one request at a time, in order: one model, one engine
    chain = chain.then(async () => {
      try {
        switch (request.op) {
          case "encode": {
            const vision = await model.encodeImage(request.image);
            visions.set(request.id, vision);
            post({ type: "encoded", id: request.id, imageSize: vision.imageSize, timings: vision.timings });
            break;
          }
          case "run": {
            const vision = visions.get(request.vision);
            if (!vision) throw new FlorenceError("INVALID_ARGUMENT", `vision features #${request.vision} were released`, { fix: "encode the frame again" });
            post({ type: "result", id: request.id, result: await model.runTask(vision, request.request, request.options) });
            break;
          }
          case "release":
            visions.delete(request.vision);
            break;
          case "close":
            visions.clear();
            await model.dispose(); // and the engine it owns
            post({ type: "closed" });
            port.close();
            break;
        }
      } catch (error) {
        if (request.op === "encode" || request.op === "run") post({ type: "error", id: request.id, error: toWire(error) });
      }
    });
  });
}

void main();
