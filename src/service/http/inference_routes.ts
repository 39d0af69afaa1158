/**
 * The routes that run the model: OpenAI's chat completions and model list, NVIDIA's hosted Florence-2 API, and the
 * live view's upload (`POST /api/infer`). Each checks its request completely — JSON, images, task and text input —
 * before it asks for a turn at the model, so a bad request costs no inference and never disturbs the cameras; the
 * turn is one job of the queue shared with the cameras and MQTT (429 + Retry-After when it is full). Each answer
 * says how long it waited and how long inference took (`Server-Timing: queue, inference`).
 */
import { Buffer } from "node:buffer";
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { GenerateOptions, TaskResult } from "../../florence/florence2.ts";
import type { SnapshotOverlay } from "../../florence/image.ts";
import { constructPrompt, isTaskToken, TASK_TOKENS, taskBySlug } from "../../florence/tasks.ts";
import { describeAnswer } from "../console_view.ts";
import { type InferenceModel, inferOnce } from "../loop.ts";
import { overlayFromResult } from "../overlay.ts";
import type { RequestQueue } from "../scheduler.ts";
import { badRequest, errorResponse, jsonResponse } from "./http_errors.ts";
import type { Route } from "./http_server.ts";
import { checkImage, type ImageLimits, type InputImage, loadImageUrl } from "./image_input.ts";
import { nvidiaResponse, nvidiaZip, parseNvidiaRequest } from "./nvidia_api.ts";
import { chatCompletion, chatContent, chunkEvent, type CompletionMeta, contentPieces, modelList, parseChatRequest, usageOf } from "./openai_api.ts";

export interface InferenceDeps {
  queue: RequestQueue<InferenceModel>;
  modelId: string;
  /** When the model was loaded, in Unix seconds (the model list's `created`). */
  created: number;
  /** The service's generation and post-processing settings (the cameras' too). */
  generate: GenerateOptions;
  limits: ImageLimits;
  defaultTask: string;
  maxImages: number;
  /** Draws an overlay on an image: renderSnapshot. */
  render(image: Uint8Array, overlay: SnapshotOverlay, format: "jpeg" | "png"): Promise<Uint8Array>;
}

const MAX_TEXT_INPUT = 1024;

interface Inference {
  results: TaskResult[];
  queueMs: number;
  inferenceMs: number;
}

/** Parses a body as JSON, or says where it is broken. */
export async function readJson(request: Request): Promise<unknown> {
  const text = await request.text();
  if (text.trim() === "") throw badRequest("body", "is empty", "send a JSON object with Content-Type: application/json");
  try {
    return JSON.parse(text);
  } catch (error) {
    throw badRequest("body", `is not valid JSON: ${(error as Error).message}`, "send a JSON object with Content-Type: application/json");
  }
}

/** The task's prompt must build for every image (text inputs, regions in pixels) before the job is queued. */
function checkTaskInput(task: string, text: string | undefined, images: readonly InputImage[]): void {
  if (text !== undefined && text.length > MAX_TEXT_INPUT) throw badRequest("text", `is ${text.length} characters; at most ${MAX_TEXT_INPUT}`);
  for (const image of images) constructPrompt(task, text, image);
}

/**
 * Queues one job running the task on each image and resolves with the results. The queue is asked synchronously,
 * so a full queue is known (and refused) before an answer has begun.
 */
function infer(deps: InferenceDeps, images: readonly InputImage[], request: { task: string; text: string | undefined }, generate: GenerateOptions, signal: AbortSignal): Promise<Inference> {
  checkTaskInput(request.task, request.text, images);
  deps.queue.admit("http");
  const submitted = performance.now();
  let started = submitted;
  return deps.queue
    .submit(
      "http",
      async (model) => {
        started = performance.now();
        const results: TaskResult[] = [];
        for (const image of images) results.push(await inferOnce(model, image.bytes, request, generate));
        return results;
      },
      signal,
    )
    .then((results) => ({ results, queueMs: started - submitted, inferenceMs: performance.now() - started }));
}

function serverTiming(inference: Inference): Record<string, string> {
  return { "Server-Timing": `queue;dur=${inference.queueMs.toFixed(2)}, inference;dur=${inference.inferenceMs.toFixed(2)}` };
}

function withMaxTokens(generate: GenerateOptions, maxNewTokens: number | undefined): GenerateOptions {
  if (maxNewTokens === undefined) return generate;
  return { ...generate, maxNewTokens: Math.min(maxNewTokens, generate.maxNewTokens ?? maxNewTokens) };
}

function streamAnswer(meta: CompletionMeta, answer: Promise<Inference>, content: (results: TaskResult[]) => string, includeUsage: boolean, abort: AbortController): Response {
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      const send = (text: string) => {
        try {
          controller.enqueue(encoder.encode(text));
        } catch {
          // the client went away
        }
      };
      send(chunkEvent(meta, { role: "assistant", content: "" }, null));
      try {
        const { results } = await answer;
        for (const piece of contentPieces(content(results))) send(chunkEvent(meta, { content: piece }, null));
        send(chunkEvent(meta, {}, "stop"));
        if (includeUsage) send(chunkEvent(meta, undefined, null, usageOf(results)));
      } catch (error) {
        // the status is sent already: the error travels as an event (the openai clients raise it)
        send(`data: ${JSON.stringify(await errorResponse(error).json())}\n\n`);
      }
      send("data: [DONE]\n\n");
      try {
        controller.close();
      } catch {
        // already cancelled
      }
    },
    cancel() {
      abort.abort(new Error("the client closed the stream"));
    },
  });
  return new Response(body, { headers: { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store", "X-Accel-Buffering": "no" } });
}

async function chatCompletions(deps: InferenceDeps, request: Request): Promise<Response> {
  const plan = parseChatRequest(await readJson(request), { defaultTask: deps.defaultTask, maxImages: deps.maxImages });
  const images = await Promise.all(plan.images.map((image) => loadImageUrl(image.url, image.param, deps.limits, request.signal)));
  const meta: CompletionMeta = { id: `chatcmpl-${randomUUID()}`, created: Math.floor(Date.now() / 1000), model: deps.modelId };
  const abort = new AbortController();
  request.signal.addEventListener("abort", () => abort.abort(request.signal.reason), { once: true });
  const answer = infer(deps, images, plan, withMaxTokens(deps.generate, plan.maxNewTokens), abort.signal);
  if (plan.stream) return streamAnswer(meta, answer, (results) => chatContent(plan, results), plan.includeUsage, abort);
  const inference = await answer;
  return jsonResponse(chatCompletion(meta, chatContent(plan, inference.results), usageOf(inference.results)), 200, serverTiming(inference));
}

/** The boxes, quads and polygons of an answer, without its caption (the hosted API's overlay draws shapes only). */
function shapesOf(result: TaskResult): SnapshotOverlay | undefined {
  const { boxes, polygons, quads } = overlayFromResult(result.result, { task: result.task });
  if (!boxes && !polygons && !quads) return undefined;
  return { ...(boxes ? { boxes } : {}), ...(polygons ? { polygons } : {}), ...(quads ? { quads } : {}) };
}

async function nvidiaFlorence(deps: InferenceDeps, request: Request): Promise<Response> {
  const plan = parseNvidiaRequest(await readJson(request));
  const image = await loadImageUrl(plan.imageUrl, plan.param, { ...deps.limits, remoteImages: false }, request.signal);
  const generate: GenerateOptions = { ...deps.generate, postprocess: { ...deps.generate.postprocess, format: "nvidia", scores: false } };
  const inference = await infer(deps, [image], plan, generate, request.signal);
  const id = randomUUID();
  const response = nvidiaResponse(id, inference.results[0]!, usageOf(inference.results));
  if (new URL(request.url).searchParams.get("format") === "json") return jsonResponse(response, 200, serverTiming(inference));
  const shapes = shapesOf(inference.results[0]!);
  const overlay = shapes ? await deps.render(image.bytes, shapes, "png") : undefined;
  return new Response(nvidiaZip(id, response, overlay), {
    headers: { "Content-Type": "application/zip", "Content-Disposition": `attachment; filename="${id}.zip"`, "Cache-Control": "no-store", ...serverTiming(inference) },
  });
}

/** `?task=` as a token (`<OD>`) or a slug (`od`). */
function taskParam(value: string | null, fallback: string): string {
  if (value === null || value === "") return fallback;
  const task = isTaskToken(value) ? value : taskBySlug(value.toLowerCase());
  if (task === undefined) throw badRequest("task", `unknown Florence-2 task ${JSON.stringify(value.slice(0, 40))}`, `use one of ${TASK_TOKENS.join(" ")} (or its name in lower case: od, caption …)`);
  return task;
}

/** The live view's upload: an image as the body, `?task=` and `?text=`; the answer and the image with it drawn. */
async function inferUpload(deps: InferenceDeps, request: Request): Promise<Response> {
  const query = new URL(request.url).searchParams;
  const task = taskParam(query.get("task"), "<OD>");
  const text = query.get("text") || undefined;
  const image = await checkImage(new Uint8Array(await request.arrayBuffer()), "body", deps.limits);
  const inference = await infer(deps, [image], { task, text }, deps.generate, request.signal);
  const result = inference.results[0]!;
  const drawn = await deps.render(image.bytes, overlayFromResult(result.result, { task }), "jpeg");
  return jsonResponse(
    {
      task,
      text_input: text ?? null,
      image_size: result.image_size,
      result: result.result,
      summary: describeAnswer(result.result[task]),
      latency_ms: { queue: Math.round(inference.queueMs * 100) / 100, inference: Math.round(inference.inferenceMs * 100) / 100 },
      model: deps.modelId,
      overlay: `data:image/jpeg;base64,${Buffer.from(drawn).toString("base64")}`,
    },
    200,
    serverTiming(inference),
  );
}

export function inferenceRoutes(deps: InferenceDeps): Route[] {
  return [
    { method: "POST", path: "/v1/chat/completions", handle: (request) => chatCompletions(deps, request) },
    { method: "GET", path: "/v1/models", handle: () => jsonResponse(modelList(deps.modelId, deps.created)) },
    { method: "POST", path: "/v1/vlm/microsoft/florence-2", handle: (request) => nvidiaFlorence(deps, request) },
    { method: "POST", path: "/api/infer", handle: (request) => inferUpload(deps, request) },
  ];
}
