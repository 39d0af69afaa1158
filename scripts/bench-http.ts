/**
 * HTTP benchmark: `florence-edge serve` as users run it (a child process, its HTTP face on loopback), loaded by
 * 1, 2, 4 and 8 concurrent clients each sending `POST /v1/chat/completions` back to back — once with no camera and
 * once with a camera running (demo stills at 2 fps, <OD> on every frame, as `npm start` does) — and what the HTTP
 * face costs beyond inference.
 *
 *   npm run bench:http -- [--duration S] [--warmup S] [--clients 1,2,4,8] [--task T] [--image FILE] [--model DIR] [--json]
 *
 * Per request, from the client: latency (request sent → answer read). From the service's Server-Timing header:
 * queue (waiting for a turn at the model) and inference (the turn: decode, preprocess, vision, encoder, decoder,
 * parse). Overhead = latency − queue − inference: parsing and checking the JSON and the image, building and
 * sending the answer, loopback — the HTTP face's own cost (goal: under 5 ms at p50). Clients run in this process on
 * the same cores as the service, so at 8 clients they compete with it for CPU. Medians and ratios, not a timed test.
 */
import { readFileSync } from "node:fs";
import { availableParallelism, cpus } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { round } from "../src/bench.ts";
import { type FlagSpec, parseFlags, runAsScript, usage } from "../src/cli_args.ts";
import { describeValue, FlorenceError } from "../src/errors.ts";
import { isTaskToken } from "../src/florence/tasks.ts";
import { demoImagesDir, demoModelDir, packageRoot } from "../src/paths.ts";
import { quantile } from "../src/timing.ts";
import { demoCameraYaml, type ServiceProcess, startService } from "../test/support/service_process.ts";

const FLAGS: Record<string, FlagSpec> = {
  duration: { kind: "number", min: 1, max: 3600, help: "measured seconds per concurrency level (default 10)" },
  warmup: { kind: "number", min: 0, max: 600, help: "seconds of load before each measurement (default 2)" },
  clients: { kind: "string", help: "concurrency levels, comma-separated (default 1,2,4,8)" },
  task: { kind: "string", help: 'the task token sent in the text part (default "<CAPTION>")' },
  image: { kind: "string", help: "the JPEG sent as a data URL (default: the test fixture street.jpg, 640x480)" },
  model: { kind: "string", help: "model folder (default: the bundled demo model)" },
  json: { kind: "boolean", help: "print the report as JSON" },
  help: { kind: "boolean", help: "show this help" },
};

interface Level {
  camera: boolean;
  clients: number;
  requests: number;
  refused: number;
  requests_per_s: number;
  latency_ms: { p50: number; p99: number };
  queue_ms: { p50: number };
  inference_ms: { p50: number };
  overhead_ms: { p50: number; p99: number };
}

interface Sample {
  latency: number;
  queue: number;
  inference: number;
}

function timing(header: string | null, name: string): number {
  const match = header ? new RegExp(`${name};dur=([\\d.]+)`).exec(header) : null;
  if (!match) throw new FlorenceError("ENGINE_FAILED", `the answer has no Server-Timing ${name}: ${describeValue(header)}`);
  return Number(match[1]);
}

/** `clients` loops sending the request back to back until `until`; the samples of those that started after `from`. */
async function load(url: string, body: string, clients: number, from: number, until: number): Promise<{ samples: Sample[]; refused: number }> {
  const samples: Sample[] = [];
  let refused = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < until) {
        const started = performance.now();
        const answer = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body });
        await answer.arrayBuffer();
        const latency = performance.now() - started;
        if (started < from) continue;
        if (answer.status === 429) refused++;
        else if (answer.status !== 200) throw new FlorenceError("ENGINE_FAILED", `the service answered ${answer.status}`);
        else {
          const header = answer.headers.get("server-timing");
          samples.push({ latency, queue: timing(header, "queue"), inference: timing(header, "inference") });
        }
      }
    }),
  );
  return { samples, refused };
}

function summarise(camera: boolean, clients: number, durationS: number, { samples, refused }: { samples: Sample[]; refused: number }): Level {
  const latency = samples.map((s) => s.latency);
  const overhead = samples.map((s) => s.latency - s.queue - s.inference);
  return {
    camera,
    clients,
    requests: samples.length,
    refused,
    requests_per_s: round(samples.length / durationS, 2),
    latency_ms: { p50: round(quantile(latency, 0.5)), p99: round(quantile(latency, 0.99)) },
    queue_ms: { p50: round(quantile(samples.map((s) => s.queue), 0.5)) },
    inference_ms: { p50: round(quantile(samples.map((s) => s.inference), 0.5)) },
    overhead_ms: { p50: round(quantile(overhead, 0.5)), p99: round(quantile(overhead, 0.99)) },
  };
}

async function runLevels(service: ServiceProcess, camera: boolean, body: string, levels: readonly number[], warmupS: number, durationS: number, log: (line: string) => void): Promise<Level[]> {
  const out: Level[] = [];
  for (const clients of levels) {
    const from = performance.now() + warmupS * 1000;
    const result = await load(service.url, body, clients, from, from + durationS * 1000);
    const level = summarise(camera, clients, durationS, result);
    log(`  ${camera ? "camera" : "no camera"}, ${clients} client(s): ${level.requests_per_s} req/s, p50 ${level.latency_ms.p50} ms, overhead p50 ${level.overhead_ms.p50} ms`);
    out.push(level);
  }
  return out;
}

function format(levels: readonly Level[], header: string): string {
  const base = new Map(levels.filter((l) => l.clients === 1).map((l) => [l.camera, l.requests_per_s]));
  const rows = levels.map((l) =>
    [l.camera ? "yes" : "no", String(l.clients), String(l.requests_per_s), `${round(l.requests_per_s / (base.get(l.camera) ?? l.requests_per_s), 2)}×`, String(l.latency_ms.p50), String(l.latency_ms.p99), String(l.queue_ms.p50), String(l.inference_ms.p50), String(l.overhead_ms.p50), String(l.overhead_ms.p99), String(l.refused)],
  );
  const titles = ["camera", "clients", "req/s", "vs 1", "p50 ms", "p99 ms", "queue p50", "infer p50", "overhead p50", "overhead p99", "429s"];
  const widths = titles.map((t, i) => Math.max(t.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join("  ");
  const overhead = levels.map((l) => l.overhead_ms.p50);
  return [header, "", line(titles), ...rows.map(line), "", `HTTP overhead per request beyond inference, p50: ${round(quantile(overhead, 0.5))} ms (median over the levels; ${Math.min(...overhead)}–${Math.max(...overhead)} ms; goal < 5 ms)`].join("\n");
}

async function main(argv: readonly string[]): Promise<number> {
  const { flags } = parseFlags("bench-http", argv, FLAGS);
  if (flags["help"]) {
    process.stdout.write(`${usage("bench-http", "requests/s, latency and the HTTP face's own cost with 1-8 clients, with and without a camera", FLAGS)}\n`);
    return 0;
  }
  const durationS = (flags["duration"] as number | undefined) ?? 10;
  const warmupS = (flags["warmup"] as number | undefined) ?? 2;
  const levels = ((flags["clients"] as string | undefined) ?? "1,2,4,8").split(",").map(Number);
  if (levels.some((n) => !Number.isInteger(n) || n < 1 || n > 64)) throw new FlorenceError("INVALID_ARGUMENT", `--clients must be whole numbers in 1..64, got ${describeValue(flags["clients"])}`, { fix: "e.g. --clients 1,2,4,8" });
  const task = (flags["task"] as string | undefined) ?? "<CAPTION>";
  if (!isTaskToken(task)) throw new FlorenceError("UNKNOWN_TASK", `--task ${describeValue(task)} is not a Florence-2 task`, { fix: 'e.g. --task "<OD>"' });
  const image = (flags["image"] as string | undefined) ?? join(packageRoot(), "test", "fixtures", "tiny-seed0", "reference", "images", "street.jpg");
  const model = (flags["model"] as string | undefined) ?? demoModelDir();
  const body = JSON.stringify({ model: "florence-2", messages: [{ role: "user", content: [{ type: "text", text: task }, { type: "image_url", image_url: { url: `data:image/jpeg;base64,${readFileSync(image).toString("base64")}` } }] }] });
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const results: Level[] = [];
  for (const camera of [false, true]) {
    const config = [`model: { path: ${JSON.stringify(model)} }`, "http: { port: 0, queue_size: 64 }", camera ? demoCameraYaml("bench", demoImagesDir(), ["<OD>"]) : "cameras: []", ""].join("\n");
    const service = await startService(config);
    try {
      results.push(...(await runLevels(service, camera, body, levels, warmupS, durationS, log)));
    } finally {
      await service.stop();
    }
  }
  const machine = `${availableParallelism()} cores (${cpus()[0]?.model.trim() ?? "unknown CPU"}), Node ${process.version}`;
  if (flags["json"]) process.stdout.write(`${JSON.stringify({ machine, task, image, model, duration_s: durationS, levels: results })}\n`);
  else process.stdout.write(`${format(results, `POST /v1/chat/completions ${task}, ${image.split("/").pop()} as a data URL, model ${model.split("/").pop()}; ${durationS} s per level after ${warmupS} s; ${machine}`)}\n`);
  return 0;
}

runAsScript(import.meta, main);
