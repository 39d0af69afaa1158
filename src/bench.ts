/**
 * `florence-edge bench`: the pipeline timed warm in one process. Prints medians, p90 and per-stage medians, and
 * how much of the time is spent inside the bare engine sessions (the rest is our own overhead).
 */
import { performance } from "node:perf_hooks";
import { Florence2, type GenerateOptions, type TaskResult } from "./florence/florence2.ts";
import { createEngine, type OpenOptions, resolveModelDir } from "./mod.ts";
import { type DecoderEngine, quantile, timedEngine } from "./timing.ts";

export interface BenchOptions {
  model: string;
  image: string;
  tasks: string[];
  text: string | undefined;
  runs: number;
  warmup: number;
  generate: GenerateOptions;
  load: OpenOptions;
}

export interface BenchReport {
  model: string;
  backend: string;
  tasks: string[];
  runs: number;
  median_ms: number;
  p90_ms: number;
  min_ms: number;
  /** Median time inside engine sessions (graph runs) per iteration. */
  engine_median_ms: number;
  /** median_ms / engine_median_ms: 1.0 means no overhead beyond the sessions. */
  overhead_ratio: number;
  stages_median_ms: Record<string, number>;
  generated_tokens: number[];
  /** What the backend reports about itself after the runs (TensorRT: CUDA graph and zero-copy use). */
  backend_stats?: unknown;
  summary: string;
}

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const { env, backend, threads, log, tensorrt, ...load } = options.load;
  const dir = await resolveModelDir(options.model, env, { ...(load.precision ? { precision: load.precision } : {}), ...(log ? { log } : {}) });
  const inner = await createEngine(backend ?? "auto", {
    ...(threads ?? env.threads ? { threads: (threads ?? env.threads)! } : {}),
    ...(log ? { log } : {}),
    ...(tensorrt ? { tensorrt } : {}),
    modelDir: dir,
    cacheDir: env.cacheDir,
  });
  const { engine, take } = timedEngine(inner);
  const model = await Florence2.load(dir, { ...load, engine });
  const totals: number[] = [];
  const engineTimes: number[] = [];
  const stages: Record<string, number[]> = {};
  let tokens: number[] = [];
  let backendStats: unknown;
  try {
    const requests = options.tasks.map((task) => ({ task, text: options.text }));
    for (let i = 0; i < options.warmup + options.runs; i++) {
      take();
      const t0 = performance.now();
      const results: TaskResult[] = await model.infer(options.image, requests, options.generate);
      const total = performance.now() - t0;
      const inEngine = take();
      if (i < options.warmup) continue;
      totals.push(total);
      engineTimes.push(inEngine);
      tokens = results.map((r) => r.generated_ids.length - 1);
      const first = results[0]!.timings_ms;
      const add = (key: string, value: number | undefined) => {
        if (value !== undefined) (stages[key] ??= []).push(value);
      };
      add("decode", first.decode_ms);
      add("preprocess", first.preprocess_ms);
      add("vision", first.vision_ms);
      add("encoder", results.reduce((s, r) => s + r.timings_ms.encoder_ms, 0));
      add("decoder", results.reduce((s, r) => s + r.timings_ms.decoder_ms, 0));
      add("parse", results.reduce((s, r) => s + r.timings_ms.parse_ms, 0));
    }
    backendStats = (inner as DecoderEngine).stats?.();
  } finally {
    await model.dispose();
    await engine.dispose();
  }
  const median = quantile(totals, 0.5);
  const engineMedian = quantile(engineTimes, 0.5);
  const stagesMedian = Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, round(quantile(v, 0.5))]));
  const report: Omit<BenchReport, "summary"> = {
    model: dir,
    backend: inner.description,
    tasks: options.tasks,
    runs: options.runs,
    median_ms: round(median),
    p90_ms: round(quantile(totals, 0.9)),
    min_ms: round(Math.min(...totals)),
    engine_median_ms: round(engineMedian),
    overhead_ratio: round(median / engineMedian, 3),
    stages_median_ms: stagesMedian,
    generated_tokens: tokens,
    ...(backendStats !== undefined ? { backend_stats: backendStats } : {}),
  };
  const summary = [
    `${options.tasks.join(" + ")} on ${options.image} — ${inner.description}`,
    `  end to end: median ${report.median_ms} ms, p90 ${report.p90_ms} ms, min ${report.min_ms} ms over ${options.runs} runs (${options.warmup} warm-up)`,
    `  inside engine sessions: median ${report.engine_median_ms} ms  (end-to-end / sessions = ${report.overhead_ratio})`,
    `  stages (median ms): ${Object.entries(stagesMedian).map(([k, v]) => `${k} ${v}`).join(", ")}`,
    `  generated tokens: ${tokens.join(", ")}`,
  ].join("\n");
  return { ...report, summary };
}

/** Rounds to `digits` decimals, for reports. */
export function round(value: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
