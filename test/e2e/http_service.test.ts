/**
 * The HTTP face beside a running camera: `florence-edge serve` with a camera of demo stills, a real MQTT broker and
 * subscriber, and real HTTP clients. The camera APIs (list, newest annotated frame, results, the event stream),
 * /healthz and /metrics; and the one scheduler: HTTP requests share the model with the camera through one bounded
 * queue — when it is full the answer is 429 with Retry-After, the refusals are counted in the metrics, and the
 * camera's results keep being published while clients hammer the API.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import mqtt from "mqtt";
import { decodeImage } from "../../src/florence/image.ts";
import { demoImagesDir, demoModelDir } from "../../src/paths.ts";
import { type EmbeddedBroker, startBroker } from "../../src/service/broker.ts";
import { demoCameraYaml, type ServiceProcess, startService } from "../support/service_process.ts";
import { waitFor } from "../support/wait_for.ts";

const QUEUE = 2;
const CONFIG = [`model: { path: ${JSON.stringify(demoModelDir())} }`, `http: { port: 0, queue_size: ${QUEUE} }`, demoCameraYaml("yard", demoImagesDir(), ["<OD>"])].join("\n");
const JPEG = readFileSync(join(demoImagesDir(), "shapes-0.jpg"));
const CHAT = JSON.stringify({ model: "florence-2", messages: [{ role: "user", content: [{ type: "text", text: "<CAPTION>" }, { type: "image_url", image_url: { url: `data:image/jpeg;base64,${JPEG.toString("base64")}` } }] }] });

let broker: EmbeddedBroker;
let subscriber: mqtt.MqttClient;
let service: ServiceProcess;
/** Arrival times (ms) of the camera's published <OD> results. */
const published: number[] = [];

async function json<T>(path: string): Promise<T> {
  const response = await fetch(`${service.url}${path}`);
  assert.is(response.status, 200, `${path}: ${response.status}`);
  return (await response.json()) as T;
}

/** The value of a Prometheus sample, 0 when absent. */
async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`${service.url}/metrics`)).text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && want.every((w) => l.includes(w)));
  return line ? Number(line.split(" ").pop()) : 0;
}

test.before(async () => {
  broker = await startBroker({ port: 0 });
  subscriber = mqtt.connect(broker.url, { protocolVersion: 4, reconnectPeriod: 0 });
  await new Promise<void>((resolve, reject) => {
    subscriber.once("connect", () => resolve());
    subscriber.once("error", reject);
  });
  subscriber.on("message", (topic) => topic === "fe-http/yard/od" && published.push(Date.now()));
  await subscriber.subscribeAsync("fe-http/#");
  service = await startService(CONFIG, { args: ["--mqtt", broker.url, "--topic-prefix", "fe-http"] });
  await waitFor("the camera's first result", 60_000, () => (published.length > 0 ? true : undefined));
});

test.after(async () => {
  const code = await service?.stop();
  await subscriber?.endAsync(true);
  await broker?.close();
  assert.is(code, 0);
});

test("GET /api/cameras, latest.jpg, results, /api/tasks and /healthz describe the running camera", async () => {
  const cameras = await json<{ model: string; cameras: { name: string; state: string; fps_processed: number; frames_processed: number; tasks: string[]; frame: number }[] }>("/api/cameras");
  assert.is(cameras.model, (await json<{ data: { id: string }[] }>("/v1/models")).data[0]!.id);
  assert.is(cameras.cameras.length, 1);
  const yard = cameras.cameras[0]!;
  assert.equal([yard.name, yard.state, yard.tasks], ["yard", "running", ["<OD>"]]);
  assert.ok(yard.frames_processed > 0 && yard.fps_processed > 0, JSON.stringify(yard));

  const latest = await fetch(`${service.url}/api/cameras/yard/latest.jpg`);
  assert.is(latest.headers.get("content-type"), "image/jpeg");
  const frame = Number(latest.headers.get("x-frame"));
  assert.ok(Number.isInteger(frame) && frame >= 0);
  const image = await decodeImage(new Uint8Array(await latest.arrayBuffer()));
  assert.ok(image.width > 0 && image.width <= 1280);

  const results = await json<{ camera: string; results: { task: string; frame: number; result: Record<string, unknown>; summary: string; model: string }[] }>("/api/cameras/yard/results");
  assert.is(results.camera, "yard");
  assert.equal(results.results.map((r) => r.task), ["<OD>"]);
  assert.ok("bboxes" in (results.results[0]!.result["<OD>"] as object));
  assert.is(results.results[0]!.model, cameras.model);
  assert.type(results.results[0]!.summary, "string");

  const missing = await fetch(`${service.url}/api/cameras/garage/results`);
  assert.is(missing.status, 404);
  assert.match(((await missing.json()) as { error: { message: string } }).error.message, /no camera "garage".*cameras here: yard/);
  assert.is((await json<{ tasks: unknown[] }>("/api/tasks")).tasks.length, 15);
  const health = await json<{ status: string; cameras: number; queue: { capacity: number } }>("/healthz");
  assert.equal([health.status, health.cameras, health.queue.capacity], ["ok", 1, QUEUE]);
});

test("GET /api/events streams the camera's results as server-sent events", async () => {
  const abort = new AbortController();
  const response = await fetch(`${service.url}/api/events`, { signal: abort.signal });
  assert.match(response.headers.get("content-type")!, /^text\/event-stream/);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = Date.now() + 15_000;
  const framesSeen = () => [...text.matchAll(/event: result\ndata: (.*)\n/g)].map((m) => (JSON.parse(m[1]!) as { frame: number; camera: string }).frame);
  while (new Set(framesSeen()).size < 3 && Date.now() < deadline) text += (await reader.read()).value ?? "";
  abort.abort();
  const frames = framesSeen();
  assert.ok(new Set(frames).size >= 3, `results of three frames arrive: ${frames.join(", ")}`);
  assert.ok(frames.every((f, i) => i === 0 || f >= frames[i - 1]!), "in order");
  assert.match(text, /event: status\ndata: \{"camera":"yard","state":"running"/);
});

test("one bounded queue: a flood of requests gets 429 + Retry-After beyond it, counted, while the camera keeps publishing", async () => {
  const rejectedBefore = await metric("florence_edge_queue_dropped_total", { queue: "requests" });
  const statuses: number[] = [];
  const retryAfter: string[] = [];
  const messages: string[] = [];
  const started = Date.now();
  const floodMs = 5_000;
  // six clients, each sending again as soon as it has an answer, for five seconds
  await Promise.all(
    Array.from({ length: 6 }, async () => {
      while (Date.now() - started < floodMs) {
        const answer = await fetch(`${service.url}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: CHAT });
        statuses.push(answer.status);
        if (answer.status === 429) {
          retryAfter.push(answer.headers.get("retry-after") ?? "");
          messages.push(((await answer.json()) as { error: { message: string } }).error.message);
        } else await answer.arrayBuffer();
      }
    }),
  );
  const during = published.filter((t) => t >= started && t <= started + floodMs).length;
  const served = statuses.filter((s) => s === 200).length;
  const refused = statuses.filter((s) => s === 429).length;
  console.log(`  flood: ${statuses.length} requests, ${served} answered, ${refused} refused; the camera published ${during} results meanwhile`);
  assert.ok(statuses.every((s) => s === 200 || s === 429), `only 200 and 429: ${[...new Set(statuses)].join(", ")}`);
  assert.ok(served >= 5, `requests were answered during the flood: ${served}`);
  assert.ok(refused >= 1, "the queue refused some");
  assert.ok(retryAfter.every((r) => /^[1-9]\d*$/.test(r)), `Retry-After in whole seconds: ${retryAfter.slice(0, 5).join(", ")}`);
  assert.ok(messages.every((m) => /the inference queue is full \(\d+ waiting\) — retry in \d+ s/.test(m)), messages[0]);
  // the camera delivers 2 fps; with fair turns it keeps at least one frame a second however many requests wait
  assert.ok(during >= floodMs / 1000, `the camera published ${during} results in ${floodMs / 1000} s of flood`);
  const rejected = (await metric("florence_edge_queue_dropped_total", { queue: "requests" })) - rejectedBefore;
  assert.is(rejected, refused, "every refusal is counted in the metrics");
  assert.ok((await metric("florence_edge_http_requests_total", { route: "/v1/chat/completions", code: "429" })) >= refused);
  assert.is(await metric("florence_edge_queue_capacity", { queue: "requests" }), QUEUE);
});

test.run();
