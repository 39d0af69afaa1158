/**
 * Side-by-side benchmark: florence-edge vs transformers.js on the same ONNX graphs, in one process, warm, on the CPU.
 *
 *   node dist/scripts/bench-vs-transformersjs.js [--model DIR] [--image PATH] [--task T] [--runs N] [--json]
 *
 * One iteration on each side is the whole job for one image and task: read + decode the file, preprocess, vision
 * encoder, encoder, greedy generation of max_new_tokens, batch_decode, post-process. Runs are interleaved
 * (ours, theirs, theirs, ours, …) so that machine noise hits both sides, with a full garbage collection before each
 * (untimed; --no-gc to skip) so neither side pays for the other's garbage. Both sides use the same generation settings
 * (the model's generation_config.json with num_beams 1, no sampling, max_new_tokens), the same ORT intra-op thread
 * count and graph optimisation level. transformers.js loads the onnx-community form of the model (Microsoft
 * remote-code config.json + preprocessor_config.json); for a fixture folder that form is assembled in a temporary
 * folder from reference/variants/ (graphs and tokenizer files symlinked).
 *
 * Targets (issue 2, item 10): transformers.js / ours >= 1.5, ours end to end <= 1.10 × the sum of our bare ORT
 * session times, and several tasks on one image run the vision encoder once.
 * Profile one side alone: node --cpu-prof dist/scripts/bench-vs-transformersjs.js --side ours
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, mkdirSync, readdirSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { type GraphRuns, quantile, runTimes } from "../src/timing.ts";
import { packageRoot } from "../src/paths.ts";
import { round } from "../src/bench.ts";
import { firstDifference } from "../src/hardware/parity.ts";
import { type FlagSpec, parseFlags, usage, runAsScript } from "../src/cli_args.ts";
import { FlorenceError, describeValue } from "../src/errors.ts";
import { Florence2, type GenerateOptions, type TaskResult } from "../src/florence/florence2.ts";
import { TASKS, type TaskToken, isTaskToken } from "../src/florence/tasks.ts";
import { OnnxRuntimeEngine } from "../src/engine/onnxruntime/onnxruntime.ts";

// ---------------------------------------------------------------------------------------------------------------
// Options

export type Side = "both" | "ours" | "transformersjs";

export interface BenchVsOptions {
  model: string;
  image: string;
  task: TaskToken;
  /** Second task of the multi-task line (one vision pass for both). */
  secondTask: TaskToken;
  runs: number;
  warmup: number;
  maxNewTokens: number;
  threads: number;
  side: Side;
  multi: boolean;
  /** Collect garbage before every timed iteration, so neither side pays for the other's garbage. */
  gcBetween: boolean;
  json: boolean;
}

export const FLAGS: Record<string, FlagSpec> = {
  model: { kind: "string", help: "model folder: onnx-community layout, or a fixture with reference/variants (default test/fixtures/tiny-seed0)" },
  image: { kind: "string", help: "image file, read and decoded in every iteration (default the fixture's street.jpg)" },
  task: { kind: "string", help: 'task token without text input (default "<OD>")' },
  "second-task": { kind: "string", help: 'the other task of the multi-task line (default "<CAPTION>")' },
  runs: { kind: "int", min: 1, max: 100000, help: "measured iterations per side (default 20)" },
  warmup: { kind: "int", min: 0, max: 1000, help: "unmeasured iterations per side first (default 3)" },
  "max-new-tokens": { kind: "int", min: 1, max: 4096, help: "greedy tokens to generate (default 24)" },
  threads: { kind: "int", min: 1, max: 1024, help: "ONNX Runtime intra-op threads on both sides (default: all cores)" },
  side: { kind: "string", choices: ["both", "ours", "transformersjs"], help: "run one side alone, e.g. under node --cpu-prof (default both)" },
  "no-multi": { kind: "boolean", help: "skip the multi-task line" },
  "no-gc": { kind: "boolean", help: "do not collect garbage between iterations (then one side's garbage can be collected during the other's run)" },
  json: { kind: "boolean", help: "print one JSON object instead of text" },
  help: { kind: "boolean", help: "show this help" },
};


function taskFlag(flag: string, value: unknown, fallback: TaskToken): TaskToken {
  if (value === undefined) return fallback;
  if (typeof value !== "string" || !isTaskToken(value)) {
    throw new FlorenceError("UNKNOWN_TASK", `--${flag} must be a Florence-2 task token, got ${describeValue(value)}`, {
      fix: `use one of ${Object.keys(TASKS).join(" ")}`,
    });
  }
  if (TASKS[value].takesText) {
    throw new FlorenceError("TASK_INPUT_INVALID", `--${flag} ${value} needs a text input, which this benchmark does not pass`, {
      fix: "pick a task without input, e.g. <OD>, <CAPTION>, <OCR>",
    });
  }
  return value;
}

export function parseBenchArgs(argv: readonly string[], repoRoot: () => string, cores = availableParallelism()): BenchVsOptions | "help" {
  const { flags, positional } = parseFlags("bench-vs-transformersjs", argv, FLAGS);
  if (flags["help"]) return "help";
  if (positional.length > 0) {
    throw new FlorenceError("INVALID_ARGUMENT", `bench-vs-transformersjs: unexpected argument ${describeValue(positional[0])}`, {
      fix: "pass everything as --flag value",
    });
  }
  const fixture = (): string => join(repoRoot(), "test", "fixtures", "tiny-seed0");
  const model = (flags["model"] as string | undefined) ?? fixture();
  const image = (flags["image"] as string | undefined) ?? join(fixture(), "reference", "images", "street.jpg");
  for (const [flag, path] of [["model", model], ["image", image]] as const) {
    if (!existsSync(path)) {
      throw new FlorenceError("INVALID_ARGUMENT", `--${flag} ${describeValue(path, 200)} does not exist`, { fix: `pass an existing ${flag === "model" ? "model folder" : "image file"}` });
    }
  }
  return {
    model,
    image,
    task: taskFlag("task", flags["task"], "<OD>"),
    secondTask: taskFlag("second-task", flags["second-task"], "<CAPTION>"),
    runs: (flags["runs"] as number | undefined) ?? 20,
    warmup: (flags["warmup"] as number | undefined) ?? 3,
    maxNewTokens: (flags["max-new-tokens"] as number | undefined) ?? 24,
    threads: (flags["threads"] as number | undefined) ?? cores,
    side: ((flags["side"] as Side | undefined) ?? "both"),
    multi: !flags["no-multi"],
    gcBetween: !flags["no-gc"],
    json: flags["json"] === true,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics

export interface Summary {
  median_ms: number;
  p90_ms: number;
  min_ms: number;
  runs: number;
}

export function summarise(times: readonly number[]): Summary {
  return { median_ms: round(quantile(times, 0.5)), p90_ms: round(quantile(times, 0.9)), min_ms: round(Math.min(...times)), runs: times.length };
}

/** Medians of per-iteration stage times, keys in first-seen order. */
export function stageMedians(samples: readonly Record<string, number>[]): Record<string, number> {
  const keys: string[] = [];
  for (const s of samples) for (const k of Object.keys(s)) if (!keys.includes(k)) keys.push(k);
  return Object.fromEntries(keys.map((k) => [k, round(quantile(samples.map((s) => s[k]).filter((v): v is number => v !== undefined), 0.5))]));
}


// ---------------------------------------------------------------------------------------------------------------
// The transformers.js model folder

/**
 * What transformers.js's Florence2Processor reads from preprocessor_config.json to build prompts and parse output
 * (the onnx-community files carry them; Microsoft's remote code hard-codes them). Taken from our task table, which
 * is HF's.
 */
export function florenceProcessorTables(): {
  task_prompts_without_inputs: Record<string, string>;
  task_prompts_with_input: Record<string, string>;
  tasks_answer_post_processing_type: Record<string, string>;
} {
  const without: Record<string, string> = {};
  const withInput: Record<string, string> = {};
  const types: Record<string, string> = {};
  for (const [token, spec] of Object.entries(TASKS)) {
    if (spec.takesText) withInput[token] = spec.prompt;
    else without[token] = spec.prompt;
    types[token] = spec.parseType;
  }
  return { task_prompts_without_inputs: without, task_prompts_with_input: withInput, tasks_answer_post_processing_type: types };
}

export interface TransformersJsFolder {
  /** transformers.js env.localModelPath */
  root: string;
  /** The model id under root. */
  id: string;
  /** Remove what was created (nothing when the model folder is used as it is). */
  cleanup: () => void;
  /** How the folder was made, for the report. */
  note: string;
}

/**
 * The onnx-community form transformers.js expects. A folder that already has preprocessor_config.json is used as it
 * is; a fixture (HF-native files + reference/variants/) gets a temporary folder with the Microsoft remote-code
 * config.json, preprocessor_config.json (plus the Florence-2 task tables), the model's generation_config.json and
 * tokenizer files, and onnx/ symlinked.
 */
export function prepareTransformersJsFolder(modelDir: string, tempParent = tmpdir()): TransformersJsFolder {
  const dir = resolve(modelDir);
  if (existsSync(join(dir, "preprocessor_config.json")) && !existsSync(join(dir, "reference", "variants"))) {
    return { root: dirname(dir), id: dir.split(/[\\/]/).pop()!, cleanup: () => {}, note: `model folder used as it is: ${dir}` };
  }
  const variants = join(dir, "reference", "variants");
  const remoteConfig = join(variants, "config.remote_code.json");
  const preprocessor = join(variants, "preprocessor_config.json");
  for (const needed of [remoteConfig, preprocessor, join(dir, "onnx"), join(dir, "tokenizer.json")]) {
    if (!existsSync(needed)) {
      throw new FlorenceError("MODEL_FILE_MISSING", `transformers.js needs the onnx-community form of ${describeValue(dir, 200)}, but ${describeValue(needed, 200)} is missing`, {
        fix: "pass an onnx-community model folder (with preprocessor_config.json), or a fixture with reference/variants/",
      });
    }
  }
  const root = mkdtempSync(join(tempParent, "florence-bench-tjs-"));
  const id = "model";
  const out = join(root, id);
  mkdirSync(out);
  writeFileSync(join(out, "config.json"), readFileSync(remoteConfig));
  const processorConfig = { ...JSON.parse(readFileSync(preprocessor, "utf8")) as Record<string, unknown> };
  for (const [key, value] of Object.entries(florenceProcessorTables())) processorConfig[key] ??= value;
  writeFileSync(join(out, "preprocessor_config.json"), JSON.stringify(processorConfig, null, 2));
  for (const name of ["generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"]) {
    if (existsSync(join(dir, name))) symlinkSync(join(dir, name), join(out, name));
  }
  mkdirSync(join(out, "onnx"));
  for (const name of readdirSync(join(dir, "onnx"))) symlinkSync(join(dir, "onnx", name), join(out, "onnx", name));
  return {
    root,
    id,
    cleanup: () => rmSync(root, { recursive: true, force: true }),
    note: `temporary onnx-community folder ${out} (config.remote_code.json, variants/preprocessor_config.json + task tables, onnx/ and tokenizer symlinked)`,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The two sides

export type { GraphRuns } from "../src/timing.ts";

interface Iteration {
  total: number;
  /** Session runs during this iteration, by graph name. */
  graphRuns: GraphRuns;
  ids: number[][];
  parsed: Record<string, unknown>[];
  stages: Record<string, number>;
  /** Time inside ORT session runs during this iteration. */
  sessions: number;
}

interface Runner {
  readonly name: string;
  /** Library, runtime and session settings, one line. */
  readonly runtime: string;
  readonly sessionsMeasuredAt: string;
  readonly generation: Record<string, unknown>;
  run(tasks: readonly TaskToken[]): Promise<Iteration>;
  dispose(): Promise<void>;
}


/** Ours can also run several tasks as separate runs (a vision pass each). */
async function ourRunner(options: BenchVsOptions): Promise<Runner & { runSeparately(tasks: readonly TaskToken[]): Promise<Iteration> }> {
  // the bare session time: measured around ONNX Runtime's own session.run, inside our engine seam (its input checks
  // and tensor wrapping count as our overhead, like everything else outside ONNX Runtime)
  const times = runTimes();
  const engine = new OnnxRuntimeEngine({ intraOpThreads: options.threads, graphOptimizationLevel: "all", onSessionRun: times.add });
  const model = await Florence2.load(options.model, { engine });
  const generate: GenerateOptions = { numBeams: 1, maxNewTokens: options.maxNewTokens };
  const config = model.generationConfig(generate);
  const iteration = (results: TaskResult[], total: number): Iteration => {
    const t = results[0]!.timings_ms;
    const stages: Record<string, number> = {
      decode: t.decode_ms ?? 0,
      preprocess: t.preprocess_ms ?? 0,
      vision: t.vision_ms ?? 0,
      encoder: results.reduce((s, r) => s + r.timings_ms.encoder_ms, 0),
      decoder: results.reduce((s, r) => s + r.timings_ms.decoder_ms, 0),
      parse: results.reduce((s, r) => s + r.timings_ms.parse_ms, 0),
    };
    stages["other"] = total - Object.values(stages).reduce((a, b) => a + b, 0);
    return { total, ids: results.map((r) => r.generated_ids), parsed: results.map((r) => r.result), stages, sessions: times.take(), graphRuns: times.takeByGraph() };
  };
  return {
    name: "florence-edge",
    sessionsMeasuredAt: "InferenceSession.run (inside the engine seam: its input checks and tensor wrapping count as overhead)",
    runtime: `${engine.description} (intraOpNumThreads ${options.threads}, graphOptimizationLevel all)`,
    generation: {
      max_length: config.maxLength,
      num_beams: config.numBeams,
      do_sample: false,
      no_repeat_ngram_size: config.noRepeatNgramSize,
      min_length: config.minLength,
      forced_bos_token_id: config.forcedBosTokenId,
      forced_eos_token_id: config.forcedEosTokenIds,
      eos_token_id: config.eosTokenIds,
      repetition_penalty: 1,
    },
    async run(tasks) {
      times.take();
      times.takeByGraph();
      const t0 = performance.now();
      const results = await model.infer(options.image, tasks.map((task) => ({ task })), generate);
      return iteration(results, performance.now() - t0);
    },
    async runSeparately(tasks) {
      times.take();
      times.takeByGraph();
      const t0 = performance.now();
      const results: TaskResult[] = [];
      for (const task of tasks) results.push(...(await model.infer(options.image, { task }, generate)));
      return iteration(results, performance.now() - t0);
    },
    async dispose() {
      await model.dispose();
      await engine.dispose();
    },
  };
}

/** The parts of transformers.js used here (its own .d.ts types are wider than needed). */
interface TjsTensor {
  readonly dims: number[];
  tolist(): unknown[];
}
interface TjsSession {
  run(feeds: unknown, options?: unknown): Promise<unknown>;
}
interface TjsModel {
  readonly sessions: Record<string, TjsSession>;
  generate(args: Record<string, unknown>): Promise<TjsTensor>;
  _prepare_generation_config(config: unknown, kwargs: Record<string, unknown>): Record<string, unknown>;
  dispose(): Promise<unknown>;
}
interface TjsProcessor {
  (image: unknown, text: string): Promise<Record<string, unknown>>;
  batch_decode(ids: TjsTensor, options: Record<string, unknown>): string[];
  post_process_generation(text: string, task: string, size: [number, number]): Record<string, unknown>;
}
interface TjsImage {
  readonly size: [number, number];
}
interface TjsModule {
  env: Record<string, unknown>;
  Florence2ForConditionalGeneration: { from_pretrained(id: string, options: Record<string, unknown>): Promise<TjsModel> };
  AutoProcessor: { from_pretrained(id: string, options?: Record<string, unknown>): Promise<TjsProcessor> };
  RawImage: { read(path: string): Promise<TjsImage> };
}

async function transformersJsRunner(options: BenchVsOptions, folder: TransformersJsFolder): Promise<Runner> {
  let tjs: TjsModule;
  try {
    tjs = (await import("@huggingface/transformers")) as unknown as TjsModule;
  } catch (cause) {
    throw new FlorenceError("ENGINE_UNAVAILABLE", `@huggingface/transformers cannot be loaded: ${(cause as Error).message}`, {
      fix: "install the devDependencies (npm install), or run our side alone with --side ours",
      cause,
    });
  }
  tjs.env["allowRemoteModels"] = false;
  tjs.env["allowLocalModels"] = true;
  tjs.env["useFSCache"] = false;
  tjs.env["localModelPath"] = `${folder.root}/`;
  const sessionOptions = { intraOpNumThreads: options.threads, graphOptimizationLevel: "all" };
  const model = await tjs.Florence2ForConditionalGeneration.from_pretrained(folder.id, { dtype: "fp32", device: "cpu", session_options: sessionOptions });
  const processor = await tjs.AutoProcessor.from_pretrained(folder.id);
  // time every session run on this model's own session objects
  let sessions = 0;
  let graphRuns: GraphRuns = {};
  for (const [name, session] of Object.entries(model.sessions)) {
    // transformers.js names the encoder session "model"
    const graph = name === "model" ? "encoder_model" : name;
    const run = session.run.bind(session);
    session.run = async (feeds, runOptions) => {
      const t0 = performance.now();
      try {
        return await run(feeds, runOptions);
      } finally {
        const spent = performance.now() - t0;
        sessions += spent;
        const entry = (graphRuns[graph] ??= { runs: 0, ms: 0 });
        entry.runs++;
        entry.ms += spent;
      }
    };
  }
  const kwargs = { max_new_tokens: options.maxNewTokens, num_beams: 1, do_sample: false };
  const config = model._prepare_generation_config(null, kwargs);
  const one = async (task: TaskToken, stages: Record<string, number>): Promise<{ ids: number[]; parsed: Record<string, unknown> }> => {
    let t0 = performance.now();
    const image = await tjs.RawImage.read(options.image);
    let t1 = performance.now();
    stages["read+decode"] = (stages["read+decode"] ?? 0) + t1 - t0;
    t0 = t1;
    const inputs = await processor(image, task);
    t1 = performance.now();
    stages["processor"] = (stages["processor"] ?? 0) + t1 - t0;
    t0 = t1;
    const generated = await model.generate({ ...inputs, ...kwargs });
    t1 = performance.now();
    stages["generate"] = (stages["generate"] ?? 0) + t1 - t0;
    t0 = t1;
    const text = processor.batch_decode(generated, { skip_special_tokens: false })[0]!;
    const parsed = processor.post_process_generation(text, task, image.size);
    stages["decode+parse"] = (stages["decode+parse"] ?? 0) + performance.now() - t0;
    const ids = (generated.tolist()[0] as (bigint | number)[]).map(Number);
    return { ids, parsed };
  };
  return {
    name: "transformers.js",
    sessionsMeasuredAt: "InferenceSession.run",
    runtime: `@huggingface/transformers ${String(tjs.env["version"] ?? "?")} on onnxruntime-node (session_options intraOpNumThreads ${options.threads}, graphOptimizationLevel all)`,
    generation: {
      // generate() sets max_length to the decoder input's length (decoder_start_token_id alone) + max_new_tokens
      max_length: options.maxNewTokens + 1,
      num_beams: config["num_beams"],
      do_sample: config["do_sample"],
      no_repeat_ngram_size: config["no_repeat_ngram_size"],
      min_length: config["min_length"],
      forced_bos_token_id: config["forced_bos_token_id"],
      forced_eos_token_id: config["forced_eos_token_id"],
      eos_token_id: config["eos_token_id"],
      repetition_penalty: config["repetition_penalty"],
    },
    async run(tasks) {
      sessions = 0;
      graphRuns = {};
      const stages: Record<string, number> = {};
      const t0 = performance.now();
      const outs = [];
      for (const task of tasks) outs.push(await one(task, stages));
      const total = performance.now() - t0;
      return { total, ids: outs.map((o) => o.ids), parsed: outs.map((o) => o.parsed), stages, sessions, graphRuns };
    },
    async dispose() {
      await model.dispose();
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The benchmark

interface SideReport extends Summary {
  side: string;
  runtime: string;
  /** Where session time is measured: InferenceSession.run on both sides. */
  sessions_measured_at: string;
  sessions_median_ms: number;
  /** median end to end / median of the summed session times */
  end_to_end_over_sessions: number;
  /** The same ratio per iteration, then the median (noise that hits one iteration hits both of its terms). */
  end_to_end_over_sessions_per_run: number;
  /** Median of (end to end − sessions) per iteration: everything that is not ONNX Runtime. */
  outside_sessions_median_ms: number;
  stages_median_ms: Record<string, number>;
  /** Per graph: median over iterations of the summed session time, and runs per iteration. */
  sessions_by_graph: Record<string, { median_ms: number; runs: number }>;
  generated_ids: number[];
  result: Record<string, unknown>;
}

export interface BenchVsReport {
  model: string;
  image: string;
  task: string;
  runs: number;
  warmup: number;
  threads: number;
  node: string;
  gc_between_iterations: boolean;
  transformersjs_folder?: string;
  generation: Record<string, Record<string, unknown>>;
  ours?: SideReport;
  transformersjs?: SideReport;
  /** transformers.js median / ours median (target >= 1.5). */
  speedup?: number;
  speedup_target_met?: boolean;
  /** ours: end to end median <= 1.10 × sessions median. */
  overhead_target_met?: boolean;
  same_token_ids?: boolean;
  first_difference?: number;
  multi_task?: {
    tasks: string[];
    one_vision_pass: Summary;
    separate_runs: Summary;
    transformersjs_separate_runs?: Summary;
    saved_ms: number;
    vision_runs_per_iteration: { one_pass: number; separate: number };
    same_ids_as_single_runs: boolean;
  };
}

function sideReport(runner: Runner, iterations: readonly Iteration[]): SideReport {
  const totals = iterations.map((i) => i.total);
  const sessions = iterations.map((i) => i.sessions);
  const summary = summarise(totals);
  const sessionsMedian = quantile(sessions, 0.5);
  const last = iterations[iterations.length - 1]!;
  return {
    side: runner.name,
    runtime: runner.runtime,
    ...summary,
    sessions_measured_at: runner.sessionsMeasuredAt,
    sessions_median_ms: round(sessionsMedian),
    end_to_end_over_sessions: round(quantile(totals, 0.5) / sessionsMedian, 3),
    end_to_end_over_sessions_per_run: round(quantile(iterations.map((i) => i.total / i.sessions), 0.5), 3),
    outside_sessions_median_ms: round(quantile(iterations.map((i) => i.total - i.sessions), 0.5)),
    stages_median_ms: stageMedians(iterations.map((i) => i.stages)),
    sessions_by_graph: Object.fromEntries(
      Object.keys(last.graphRuns).sort().map((g) => [g, { median_ms: round(quantile(iterations.map((i) => i.graphRuns[g]?.ms ?? 0), 0.5)), runs: last.graphRuns[g]!.runs }]),
    ),
    generated_ids: last.ids[0]!,
    result: last.parsed[0]!,
  };
}

/** V8's full garbage collection, exposed at run time; undefined where the runtime does not allow it. */
function garbageCollector(): (() => void) | undefined {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) return exposed;
  try {
    setFlagsFromString("--expose-gc");
    return runInNewContext("gc") as () => void;
  } catch {
    return undefined;
  }
}

export async function runBenchVs(options: BenchVsOptions, log: (line: string) => void = () => {}): Promise<BenchVsReport> {
  const wantOurs = options.side !== "transformersjs";
  const wantTheirs = options.side !== "ours";
  const folder = wantTheirs ? prepareTransformersJsFolder(options.model) : undefined;
  const runners: Runner[] = [];
  const collect = options.gcBetween ? garbageCollector() : undefined;
  // the collection itself is outside the timed region
  const measured = <T>(run: () => Promise<T>): Promise<T> => {
    collect?.();
    return run();
  };
  let ours: Awaited<ReturnType<typeof ourRunner>> | undefined;
  let theirs: Runner | undefined;
  try {
    if (wantOurs) {
      ours = await ourRunner(options);
      runners.push(ours);
    }
    if (wantTheirs) {
      theirs = await transformersJsRunner(options, folder!);
      runners.push(theirs);
    }
    const report: BenchVsReport = {
      model: resolve(options.model),
      image: resolve(options.image),
      task: options.task,
      runs: options.runs,
      warmup: options.warmup,
      threads: options.threads,
      node: process.version,
      gc_between_iterations: collect !== undefined,
      ...(folder ? { transformersjs_folder: folder.note } : {}),
      generation: Object.fromEntries(runners.map((r) => [r.name, r.generation])),
    };

    // single task, interleaved; who goes first alternates, so neither side always runs right after the other
    const samples = runners.map(() => [] as Iteration[]);
    for (let i = 0; i < options.warmup + options.runs; i++) {
      for (let k = 0; k < runners.length; k++) {
        const s = i % 2 === 0 ? k : runners.length - 1 - k;
        const it = await measured(() => runners[s]!.run([options.task]));
        if (i >= options.warmup) samples[s]!.push(it);
      }
      if (i === options.warmup - 1) log(`warm-up done (${options.warmup} per side)`);
    }
    if (ours) report.ours = sideReport(ours, samples[0]!);
    if (theirs) report.transformersjs = sideReport(theirs, samples[runners.length - 1]!);
    if (report.ours && report.transformersjs) {
      report.speedup = round(report.transformersjs.median_ms / report.ours.median_ms, 3);
      report.speedup_target_met = report.speedup >= 1.5;
      const diff = firstDifference(report.ours.generated_ids, report.transformersjs.generated_ids);
      report.same_token_ids = diff < 0;
      if (diff >= 0) report.first_difference = diff;
    }
    if (report.ours) report.overhead_target_met = report.ours.end_to_end_over_sessions <= 1.1;

    // several tasks on one image: one vision pass vs one per task
    if (options.multi && ours) {
      const tasks = [options.task, options.secondTask];
      const onePass: Iteration[] = [];
      const separate: Iteration[] = [];
      const theirsSeparate: Iteration[] = [];
      for (let i = 0; i < options.warmup + options.runs; i++) {
        const a = await measured(() => ours!.run(tasks));
        const b = await measured(() => ours!.runSeparately(tasks));
        const c = theirs ? await measured(() => theirs!.run(tasks)) : undefined;
        if (i < options.warmup) continue;
        onePass.push(a);
        separate.push(b);
        if (c) theirsSeparate.push(c);
      }
      const one = summarise(onePass.map((i) => i.total));
      const sep = summarise(separate.map((i) => i.total));
      const sameIds = onePass.every((it, k) => it.ids.every((ids, t) => firstDifference(ids, separate[k]!.ids[t]!) < 0));
      report.multi_task = {
        tasks,
        one_vision_pass: one,
        separate_runs: sep,
        ...(theirs ? { transformersjs_separate_runs: summarise(theirsSeparate.map((i) => i.total)) } : {}),
        saved_ms: round(sep.median_ms - one.median_ms),
        vision_runs_per_iteration: { one_pass: onePass[0]!.graphRuns["vision_encoder"]?.runs ?? 0, separate: separate[0]!.graphRuns["vision_encoder"]?.runs ?? 0 },
        same_ids_as_single_runs: sameIds,
      };
    }
    return report;
  } finally {
    for (const r of runners) await r.dispose();
    folder?.cleanup();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Output

function stagesLine(stages: Record<string, number>): string {
  return Object.entries(stages).map(([k, v]) => `${k} ${v}`).join(", ");
}

export function formatReport(r: BenchVsReport): string {
  const lines: string[] = [];
  lines.push(`${r.task} on ${r.image}`);
  lines.push(`model ${r.model}; ${r.runs} runs per side after ${r.warmup} warm-up, interleaved (A B B A …)${r.gc_between_iterations ? ", full GC before each (untimed)" : ""}; ${r.threads} ORT threads; node ${r.node}`);
  if (r.transformersjs_folder) lines.push(`transformers.js model: ${r.transformersjs_folder}`);
  for (const [side, g] of Object.entries(r.generation)) lines.push(`generation (${side}): ${JSON.stringify(g)}`);
  for (const s of [r.ours, r.transformersjs]) {
    if (!s) continue;
    lines.push("");
    lines.push(`${s.side}: median ${s.median_ms} ms, p90 ${s.p90_ms} ms, min ${s.min_ms} ms`);
    lines.push(`  ${s.runtime}`);
    lines.push(`  inside ORT sessions (${s.sessions_measured_at}): median ${s.sessions_median_ms} ms`);
    lines.push(`  end to end / sessions: ${s.end_to_end_over_sessions} (ratio of medians), ${s.end_to_end_over_sessions_per_run} (median per run); outside sessions: median ${s.outside_sessions_median_ms} ms`);
    lines.push(`  stages (median ms): ${stagesLine(s.stages_median_ms)}`);
    lines.push(`  sessions by graph (median ms, runs): ${Object.entries(s.sessions_by_graph).map(([g, v]) => `${g} ${v.median_ms} (${v.runs})`).join(", ")}`);
  }
  lines.push("");
  if (r.speedup !== undefined) {
    lines.push(`speed-up transformers.js / ours: ${r.speedup}× (target >= 1.5: ${r.speedup_target_met ? "met" : "NOT met"})`);
  }
  if (r.ours) {
    lines.push(`ours end to end / sessions: ${r.ours.end_to_end_over_sessions} (target <= 1.10: ${r.overhead_target_met ? "met" : "NOT met"})`);
  }
  if (r.same_token_ids !== undefined && r.ours && r.transformersjs) {
    if (r.same_token_ids) lines.push(`token ids: identical on both sides (${r.ours.generated_ids.length} ids)`);
    else {
      lines.push(`token ids: DIFFER from position ${r.first_difference}`);
      lines.push(`  ours:            ${r.ours.generated_ids.join(" ")}`);
      lines.push(`  transformers.js: ${r.transformersjs.generated_ids.join(" ")}`);
    }
  }
  if (r.multi_task) {
    const m = r.multi_task;
    lines.push("");
    lines.push(`multi-task ${m.tasks.join(" + ")} on one image (ours): one vision pass median ${m.one_vision_pass.median_ms} ms (p90 ${m.one_vision_pass.p90_ms}) vs separate runs median ${m.separate_runs.median_ms} ms (p90 ${m.separate_runs.p90_ms}): ${m.saved_ms} ms saved`);
    lines.push(`  vision_encoder runs per iteration: ${m.vision_runs_per_iteration.one_pass} (one pass) vs ${m.vision_runs_per_iteration.separate} (separate); same ids as separate runs: ${m.same_ids_as_single_runs ? "yes" : "NO"}`);
    if (m.transformersjs_separate_runs) lines.push(`  transformers.js, the two tasks as two runs: median ${m.transformersjs_separate_runs.median_ms} ms (p90 ${m.transformersjs_separate_runs.p90_ms})`);
  }
  return lines.join("\n");
}

async function main(argv: readonly string[]): Promise<number> {
  const options = parseBenchArgs(argv, () => packageRoot());
  if (options === "help") {
    process.stdout.write(`${usage("bench-vs-transformersjs", "florence-edge vs transformers.js, same graphs, one process", FLAGS)}\n`);
    return 0;
  }
  const report = await runBenchVs(options, (line) => process.stderr.write(`${line}\n`));
  process.stdout.write(options.json ? `${JSON.stringify(report)}\n` : `${formatReport(report)}\n`);
  return 0;
}

runAsScript(import.meta, main);
