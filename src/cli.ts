/**
 * florence-edge command line. The subcommands and their flags are a stable contract that the service, scripts
 * and other programs build on:
 *   infer | parse | bench | serve | download | export | help
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { type FlagSpec, type FlagValues, parseFlags, requireFlag, usage } from "./cli_args.ts";
import { environmentVariables, readEnvironment } from "./config.ts";
import { FlorenceError } from "./errors.ts";
import { runBench } from "./bench.ts";
import { loadFlorence } from "./mod.ts";
import { PRECISIONS } from "./florence/model_files.ts";
import { postProcessGeneration } from "./florence/postprocess.ts";
import type { GenerateOptions, TaskResult } from "./florence/florence2.ts";
import { EVAL_FLAGS, cmdEval } from "./world/eval_command.ts";

const MODEL_FLAGS: Record<string, FlagSpec> = {
  model: { kind: "string", help: "model folder (onnx-community layout) or a hub id such as onnx-community/Florence-2-base-ft" },
  precision: { kind: "string", choices: PRECISIONS, help: "which onnx/*.onnx files to use (default fp32)" },
  backend: { kind: "string", choices: ["auto", "onnxruntime", "tensorrt"], help: "inference backend (default auto: TensorRT when engines exist, else ONNX Runtime on the CPU)" },
  threads: { kind: "int", min: 1, max: 1024, help: "ONNX Runtime threads (default: all cores)" },
  resize: { kind: "string", choices: ["pil", "torchvision", "fast"], help: "resize arithmetic: pil (HF's PIL backend, default), torchvision (transformers 5 default backend), fast (approximate)" },
  "exif-orientation": { kind: "string", choices: ["ignore", "apply"], help: "ignore EXIF orientation like PIL.Image.open (default) or apply it" },
};

const TASK_FLAGS: Record<string, FlagSpec> = {
  image: { kind: "string", help: "image file (JPEG, PNG, WebP, TIFF, …)" },
  task: { kind: "strings", help: 'task token, e.g. "<OD>"; repeat for several tasks on one vision pass' },
  text: { kind: "string", help: "text input for grounding/detection tasks, or a region <loc_a><loc_b><loc_c><loc_d> or x1,y1,x2,y2 in pixels" },
  "num-beams": { kind: "int", min: 1, max: 64, help: "beam width (default: the model's generation_config)" },
  "max-new-tokens": { kind: "int", min: 1, max: 4096, help: "generation limit (default: the model's generation_config)" },
  coordinates: { kind: "string", choices: ["float", "int"], help: "box coordinates at bin centres as floats (default) or truncated to int like HF-native" },
  format: { kind: "string", choices: ["hf", "nvidia"], help: "result shape: HF post_process_generation (default) or NVIDIA's hosted API entities" },
  scores: { kind: "boolean", help: "add a confidence score per box/phrase from the decoder's token probabilities" },
  json: { kind: "boolean", help: "print one JSON object" },
};

function packageVersion(): string {
  try {
    const path = fileURLToPath(new URL("../../package.json", import.meta.url));
    return JSON.parse(readFileSync(path, "utf8")).version as string;
  } catch {
    return "unknown";
  }
}

function generateOptions(flags: FlagValues): GenerateOptions {
  return {
    ...(flags["num-beams"] !== undefined ? { numBeams: flags["num-beams"] as number } : {}),
    ...(flags["max-new-tokens"] !== undefined ? { maxNewTokens: flags["max-new-tokens"] as number } : {}),
    postprocess: {
      coordinates: (flags["coordinates"] as "float" | "int" | undefined) ?? "float",
      format: (flags["format"] as "hf" | "nvidia" | undefined) ?? "hf",
      scores: flags["scores"] === true,
    },
  };
}

function printResults(results: TaskResult[], json: boolean): void {
  if (json) {
    const out = results.map((r) => ({ task: r.task, ...(r.text_input !== undefined ? { text_input: r.text_input } : {}), text: r.text, generated_ids: r.generated_ids, result: r.result, image_size: r.image_size, timings_ms: r.timings_ms }));
    process.stdout.write(`${JSON.stringify(out.length === 1 ? out[0] : out)}\n`);
    return;
  }
  for (const r of results) {
    process.stdout.write(`${r.task}${r.text_input ? ` ${JSON.stringify(r.text_input)}` : ""}  (${r.timings_ms.total_ms.toFixed(1)} ms)\n`);
    process.stdout.write(`  ${JSON.stringify(r.result[r.task] ?? r.result)}\n`);
  }
}

async function cmdInfer(argv: string[]): Promise<number> {
  const specs = { ...MODEL_FLAGS, ...TASK_FLAGS };
  const { flags } = parseFlags("infer", argv, specs);
  if (flags["help"]) return 0;
  const modelArg = requireFlag<string>("infer", flags, "model", "--model ./Florence-2-base-ft");
  const image = requireFlag<string>("infer", flags, "image", "--image photo.jpg");
  const tasks = (flags["task"] as string[] | undefined) ?? [];
  if (tasks.length === 0) throw new FlorenceError("INVALID_ARGUMENT", "infer: --task is required", { fix: 'e.g. --task "<OD>"' });
  const env = readEnvironment();
  const model = await loadFlorence(modelArg, {
    env,
    backend: (flags["backend"] as "auto" | "onnxruntime" | "tensorrt" | undefined) ?? "auto",
    ...(flags["precision"] ? { precision: flags["precision"] as (typeof PRECISIONS)[number] } : {}),
    ...(flags["threads"] ? { threads: flags["threads"] as number } : {}),
    ...(flags["resize"] ? { resize: flags["resize"] as "pil" | "torchvision" | "fast" } : {}),
    ...(flags["exif-orientation"] ? { exifOrientation: flags["exif-orientation"] as "ignore" | "apply" } : {}),
    log: (line) => process.stderr.write(`${line}\n`),
  });
  try {
    const requests = tasks.map((task) => ({ task, text: flags["text"] as string | undefined }));
    printResults(await model.infer(image, requests, generateOptions(flags)), flags["json"] === true);
  } finally {
    await model.dispose();
    await model.engine.dispose();
  }
  return 0;
}

function parseImageSize(value: string): { width: number; height: number } {
  const match = /^(\d+)x(\d+)$/.exec(value.trim());
  const width = match ? Number(match[1]) : NaN;
  const height = match ? Number(match[2]) : NaN;
  if (!match || width < 1 || height < 1 || width > 1_000_000 || height > 1_000_000) {
    throw new FlorenceError("INVALID_ARGUMENT", `parse: --image-size must be WIDTHxHEIGHT, got ${JSON.stringify(value)}`, { fix: "e.g. --image-size 640x480" });
  }
  return { width, height };
}

async function cmdParse(argv: string[]): Promise<number> {
  const specs: Record<string, FlagSpec> = {
    task: { kind: "string", help: 'task token, e.g. "<OD>"' },
    text: { kind: "string", help: "raw generated text (special tokens kept)" },
    "image-size": { kind: "string", help: "WIDTHxHEIGHT of the original image" },
    coordinates: TASK_FLAGS["coordinates"]!,
    format: TASK_FLAGS["format"]!,
    json: TASK_FLAGS["json"]!,
  };
  const { flags } = parseFlags("parse", argv, specs);
  const task = requireFlag<string>("parse", flags, "task", '--task "<OD>"');
  const text = requireFlag<string>("parse", flags, "text", '--text "car<loc_1><loc_2><loc_3><loc_4>"');
  const size = parseImageSize(requireFlag<string>("parse", flags, "image-size", "--image-size 640x480"));
  const result = postProcessGeneration(text, task, size, {
    coordinates: (flags["coordinates"] as "float" | "int" | undefined) ?? "float",
    format: (flags["format"] as "hf" | "nvidia" | undefined) ?? "hf",
  });
  process.stdout.write(flags["json"] ? `${JSON.stringify(result)}\n` : `${JSON.stringify(result, null, 2)}\n`);
  return 0;
}

async function cmdBench(argv: string[]): Promise<number> {
  const specs: Record<string, FlagSpec> = {
    ...MODEL_FLAGS,
    ...TASK_FLAGS,
    runs: { kind: "int", min: 1, max: 100000, help: "timed runs after one warm-up (default 10)" },
    warmup: { kind: "int", min: 0, max: 1000, help: "warm-up runs (default 2)" },
  };
  const { flags } = parseFlags("bench", argv, specs);
  const modelArg = requireFlag<string>("bench", flags, "model", "--model ./Florence-2-base-ft");
  const image = requireFlag<string>("bench", flags, "image", "--image photo.jpg");
  const tasks = (flags["task"] as string[] | undefined) ?? ["<CAPTION>"];
  const report = await runBench({
    model: modelArg,
    image,
    tasks,
    text: flags["text"] as string | undefined,
    runs: (flags["runs"] as number | undefined) ?? 10,
    warmup: (flags["warmup"] as number | undefined) ?? 2,
    generate: generateOptions(flags),
    load: {
      env: readEnvironment(),
      backend: (flags["backend"] as "auto" | "onnxruntime" | "tensorrt" | undefined) ?? "auto",
      ...(flags["precision"] ? { precision: flags["precision"] as (typeof PRECISIONS)[number] } : {}),
      ...(flags["threads"] ? { threads: flags["threads"] as number } : {}),
      ...(flags["resize"] ? { resize: flags["resize"] as "pil" | "torchvision" | "fast" } : {}),
      log: (line: string) => process.stderr.write(`${line}\n`),
    },
  });
  if (flags["json"]) process.stdout.write(`${JSON.stringify(report)}\n`);
  else process.stdout.write(`${report.summary}\n`);
  return 0;
}

const SERVE_FLAGS: Record<string, FlagSpec> = {
  config: { kind: "string", help: "config file (YAML or JSON); default $FLORENCE_EDGE_CONFIG, else embedded defaults" },
  model: { kind: "string", help: "model folder or hub id (overrides model.path)" },
  source: { kind: "string", help: "one camera's source: rtsp://…, http(s)://…/snapshot.jpg, /dev/videoN, csi://N, a video file or an image folder" },
  mqtt: { kind: "string", help: "broker URL, e.g. mqtt://homeassistant.local:1883 (default: an embedded broker on 127.0.0.1)" },
  "topic-prefix": { kind: "string", help: "MQTT topic prefix (default florence-edge)" },
  camera: { kind: "string", help: "the camera's name for --source/--task (a topic segment)" },
  task: { kind: "strings", help: 'task for that camera, e.g. "<OD>"; repeat for several (one vision pass per frame)' },
  text: { kind: "string", help: "text input for the --task tasks that take one" },
  interval: { kind: "number", min: 0, max: 86400, help: "seconds between runs of the --task tasks (0: every frame)" },
  precision: MODEL_FLAGS["precision"]!,
  backend: MODEL_FLAGS["backend"]!,
  "metrics-port": { kind: "int", min: 0, max: 65535, help: "serve Prometheus /metrics on this port (127.0.0.1)" },
  "log-level": { kind: "string", choices: ["debug", "info", "warn", "error"], help: "log level (default info)" },
  duration: { kind: "number", min: 0.1, max: 1e9, help: "stop after this many seconds (demos and tests)" },
  echo: { kind: "boolean", help: "print one line per published result (default on with embedded defaults)" },
};

async function cmdServe(argv: string[]): Promise<number> {
  const { flags } = parseFlags("serve", argv, SERVE_FLAGS);
  const { loadServiceConfig } = await import("./service/service_config.ts");
  const { serve } = await import("./service/serve.ts");
  const env = environmentVariables();
  const config = loadServiceConfig(
    {
      ...(flags["config"] !== undefined ? { config: flags["config"] as string } : {}),
      ...(flags["model"] !== undefined ? { model: flags["model"] as string } : {}),
      ...(flags["source"] !== undefined ? { source: flags["source"] as string } : {}),
      ...(flags["mqtt"] !== undefined ? { mqtt: flags["mqtt"] as string } : {}),
      ...(flags["topic-prefix"] !== undefined ? { topicPrefix: flags["topic-prefix"] as string } : {}),
      ...(flags["camera"] !== undefined ? { camera: flags["camera"] as string } : {}),
      ...(flags["task"] !== undefined ? { task: flags["task"] as string[] } : {}),
      ...(flags["text"] !== undefined ? { text: flags["text"] as string } : {}),
      ...(flags["interval"] !== undefined ? { interval: flags["interval"] as number } : {}),
      ...(flags["precision"] !== undefined ? { precision: flags["precision"] as string } : {}),
      ...(flags["backend"] !== undefined ? { backend: flags["backend"] as string } : {}),
      ...(flags["metrics-port"] !== undefined ? { metricsPort: flags["metrics-port"] as number } : {}),
      ...(flags["log-level"] !== undefined ? { logLevel: flags["log-level"] as string } : {}),
    },
    env,
  );
  const embedded = config.cameras.length === 0 && config.mqtt.url === undefined;
  return serve(config, {
    env: readEnvironment(env),
    echo: flags["echo"] === true || (embedded && flags["echo"] !== false),
    ...(flags["duration"] !== undefined ? { durationS: flags["duration"] as number } : {}),
  });
}

const HELP = `florence-edge ${packageVersion()} — Florence-2 on ONNX Runtime (CPU) and TensorRT (NVIDIA GPUs)

  florence-edge infer --model DIR --image PATH --task "<OD>" [--text T] [--num-beams N] [--max-new-tokens N] [--json]
  florence-edge parse --task "<OD>" --text RAW --image-size 640x480 [--json]
  florence-edge bench --model DIR --image PATH --task T [--num-beams N] [--max-new-tokens N] --runs N [--json]
  florence-edge serve [--config FILE] [--model DIR] [--source SRC] [--mqtt URL] [--topic-prefix P] [--camera NAME] [--task T …]
  florence-edge eval [--model DIR] [--precision P] [--images N] [--seed S] [--json]

Run a subcommand with --help for its flags.`;

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; summary: string; specs?: Record<string, FlagSpec> }> = {
  infer: { run: cmdInfer, summary: "run tasks on one image", specs: { ...MODEL_FLAGS, ...TASK_FLAGS } },
  parse: { run: cmdParse, summary: "post-process a raw generated text" },
  bench: { run: cmdBench, summary: "time the pipeline warm, in one process: medians, p90 and per-stage medians" },
  serve: { run: cmdServe, summary: "run the camera → Florence-2 → MQTT service", specs: SERVE_FLAGS },
  eval: { run: cmdEval, summary: "a model's per-task figures on fresh held-out images of the shapes world", specs: EVAL_FLAGS },
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === "help" || command === "--help" || command === "-h") {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  if (command === "--version" || command === "version") {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  const entry = COMMANDS[command];
  if (!entry) {
    process.stderr.write(`florence-edge: unknown command ${JSON.stringify(command)}\n\n${HELP}\n`);
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(`${usage(command, entry.summary, entry.specs ?? {})}\n`);
    return 0;
  }
  try {
    return await entry.run(rest);
  } catch (error) {
    if (error instanceof FlorenceError) {
      process.stderr.write(`florence-edge ${command}: ${error.code}: ${error.message}\n`);
      return error.code === "INVALID_ARGUMENT" || error.code === "CONFIG_INVALID" ? 2 : 1;
    }
    throw error;
  }
}
