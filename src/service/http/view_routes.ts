/**
 * The routes that show what the service sees: the live view (a page, a script and a style sheet from web/, served
 * from memory: only those three names exist, so no path reaches the file system), the cameras and their newest
 * annotated frames and results, a server-sent event stream of results and state changes, /healthz and the
 * Prometheus metrics.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { FlorenceError } from "../../errors.ts";
import { TASK_TOKENS, TASKS } from "../../florence/tasks.ts";
import { webDir } from "../../paths.ts";
import { PROMETHEUS_CONTENT_TYPE, type ServiceMetrics } from "../metrics.ts";
import type { QueueCounters } from "../scheduler.ts";
import type { TaskSchedule } from "../service_config.ts";
import { HttpError, jsonResponse } from "./http_errors.ts";
import type { Route } from "./http_server.ts";
import type { LiveState, Subscriber } from "./live_state.ts";

export interface ViewDeps {
  live: LiveState;
  modelId: string;
  metrics: ServiceMetrics;
  queue(): QueueCounters;
  tasksOf(camera: string): readonly TaskSchedule[] | undefined;
}

const ASSETS: Record<string, string> = {
  "/": "index.html",
  "/app.js": "app.js",
  "/style.css": "style.css",
};
const TYPES: Record<string, string> = { html: "text/html; charset=utf-8", js: "text/javascript; charset=utf-8", css: "text/css; charset=utf-8" };
// the page loads its own script and style, and images from the API (as blobs) or the upload's data URL
const PAGE_POLICY = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";
const PING_MS = 15_000;

/** The live view's files, read once. */
function loadAssets(): Map<string, { body: Uint8Array<ArrayBuffer>; type: string }> {
  const assets = new Map<string, { body: Uint8Array<ArrayBuffer>; type: string }>();
  for (const [path, file] of Object.entries(ASSETS)) {
    let body: Uint8Array<ArrayBuffer>;
    try {
      body = new Uint8Array(readFileSync(join(webDir(), file)));
    } catch (cause) {
      throw new FlorenceError("ASSET_MISSING", `the live view's ${file} is missing from ${webDir()}`, { fix: "reinstall florence-edge (the package ships web/)", cause });
    }
    assets.set(path, { body, type: TYPES[file.split(".").pop()!]! });
  }
  return assets;
}

function camera(deps: ViewDeps, params: Record<string, string>): string {
  const name = params["name"] ?? "";
  if (!deps.live.has(name)) throw new HttpError(404, "unknown_camera", `no camera ${JSON.stringify(name.slice(0, 64))}`, { fix: `cameras here: ${deps.live.cameraNames.join(", ") || "none"} (GET /api/cameras)` });
  return name;
}

function cameras(deps: ViewDeps): Response {
  const stats = deps.metrics.snapshot().cameras;
  return jsonResponse({
    model: deps.modelId,
    cameras: deps.live.cameraNames.map((name) => {
      const numbers = stats[name];
      const status = deps.live.statusOf(name);
      const latest = deps.live.results(name)[0];
      return {
        name,
        state: status?.state ?? numbers?.state ?? null,
        reason: status?.reason ?? null,
        fps_received: numbers?.fps_received ?? 0,
        fps_processed: numbers?.fps_processed ?? 0,
        frames_received: numbers?.frames_received ?? 0,
        frames_processed: numbers?.frames_processed ?? 0,
        frames_dropped: numbers?.frames_dropped ?? 0,
        latency_ms: latest?.latency_ms.total ?? null,
        frame: latest?.frame ?? null,
        tasks: (deps.tasksOf(name) ?? []).map((t) => t.task),
      };
    }),
  });
}

async function latestJpeg(deps: ViewDeps, params: Record<string, string>): Promise<Response> {
  const name = camera(deps, params);
  const annotated = deps.live.annotatedFrame(name);
  if (!annotated) throw new HttpError(404, "no_frame_yet", `camera ${name} has no processed frame yet`, { fix: "retry in a moment (GET /api/cameras shows its state)" });
  return new Response((await annotated.jpeg) as Uint8Array<ArrayBuffer>, { headers: { "Content-Type": "image/jpeg", "Cache-Control": "no-store", "X-Frame": String(annotated.seq) } });
}

/** Results and state changes as server-sent events; the current state first. */
function events(deps: ViewDeps, request: Request): Response {
  if (deps.live.subscribers >= deps.live.maxSubscribers) throw new HttpError(503, "too_many_streams", `${deps.live.subscribers} event streams are open already`, { fix: "close another live view, or poll GET /api/cameras/:name/results", headers: { "Retry-After": "10" } });
  const encoder = new TextEncoder();
  let subscriber: Subscriber | undefined;
  let ping: ReturnType<typeof setInterval> | undefined;
  const stop = () => {
    clearInterval(ping);
    if (subscriber) deps.live.unsubscribe(subscriber);
  };
  const body = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        const write = (text: string): boolean => {
          // a reader that does not keep up is dropped instead of buffered
          if ((controller.desiredSize ?? 0) <= 0) return false;
          try {
            controller.enqueue(encoder.encode(text));
            return true;
          } catch {
            return false;
          }
        };
        subscriber = {
          send: (event, data) => write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`),
          close: () => {
            stop();
            try {
              controller.close();
            } catch {
              // already closed
            }
          },
        };
        write("retry: 2000\n\n");
        for (const name of deps.live.cameraNames) {
          const status = deps.live.statusOf(name);
          if (status) subscriber.send("status", status);
          for (const result of deps.live.results(name).reverse()) subscriber.send("result", result);
        }
        deps.live.subscribe(subscriber);
        ping = setInterval(() => write(": ping\n\n") || subscriber!.close(), PING_MS);
        request.signal.addEventListener("abort", stop, { once: true });
      },
      cancel: stop,
    },
    new CountQueuingStrategy({ highWaterMark: 256 }),
  );
  return new Response(body, { headers: { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store", "X-Accel-Buffering": "no" } });
}

export function viewRoutes(deps: ViewDeps): Route[] {
  const assets = loadAssets();
  const asset = (path: string): Route => ({
    method: "GET",
    path,
    public: true,
    handle: () => {
      const { body, type } = assets.get(path)!;
      return new Response(body, { headers: { "Content-Type": type, "Cache-Control": "no-cache", ...(path === "/" ? { "Content-Security-Policy": PAGE_POLICY } : {}) } });
    },
  });
  return [
    ...Object.keys(ASSETS).map(asset),
    {
      method: "GET",
      path: "/healthz",
      public: true,
      handle: () => jsonResponse({ status: "ok", model: deps.modelId, cameras: deps.live.cameraNames.length, queue: deps.queue() }),
    },
    { method: "GET", path: "/metrics", handle: () => new Response(deps.metrics.prometheusText(), { headers: { "Content-Type": PROMETHEUS_CONTENT_TYPE, "Cache-Control": "no-store" } }) },
    { method: "GET", path: "/api/tasks", handle: () => jsonResponse({ tasks: TASK_TOKENS.map((token) => ({ task: token, slug: TASKS[token].slug, takes_text: TASKS[token].takesText, region_input: TASKS[token].regionInput })) }) },
    { method: "GET", path: "/api/cameras", handle: () => cameras(deps) },
    { method: "GET", path: "/api/cameras/:name/latest.jpg", handle: (_request, params) => latestJpeg(deps, params) },
    {
      method: "GET",
      path: "/api/cameras/:name/results",
      handle: (_request, params) => {
        const name = camera(deps, params);
        return jsonResponse({ camera: name, results: deps.live.results(name) });
      },
    },
    { method: "GET", path: "/api/events", handle: (request) => events(deps, request) },
  ];
}
