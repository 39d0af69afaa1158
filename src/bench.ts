/**
 * `florence-edge bench`: the pipeline timed warm in one process. Prints medians, p90 and per-stage medians, and
 * how much of the time is spent inside the bare engine sessions (the rest is our own overhead).
 */
import { performance } from "node:perf_hooks";
import type { Engine, Graph } from "./engine/engine.ts";
import { Florence2, type GenerateOptions, type TaskResult } from "./florence/florence2.ts";
import { createEngine, type OpenOptions, resolveModelDir } from "./mod.ts";

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
  summary: string;
}

export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export type GraphRuns = Record<string, { runs: number; ms: number }>;

/** Graph-run times summed in total (`take`) and per graph (`takeByGraph`); each take returns and resets its sum. */
export function runTimes(): { add: (graph: string, ms: number) => void; take: () => number; takeByGraph: () => GraphRuns } {
  let spent = 0;
  let byGraph: GraphRuns = {};
  return {
    add: (graph, ms) => {
      spent += ms;
      const entry = (byGraph[graph] ??= { runs: 0, ms: 0 });
      entry.runs++;
      entry.ms += ms;
    },
    take: () => {
      const value = spent;
      spent = 0;
      return value;
    },
    takeByGraph: () => {
      const value = byGraph;
      byGraph = {};
      return value;
    },
  };
}

/**
 * Wraps an engine so that every graph run adds its wall time to a counter, in total (`take`) and per graph name
 * (`takeByGraph`). Output selection passes through unchanged, so the wrapped engine does the same work.
 */
export function timedEngine(inner: Engine): { engine: Engine; take: () => number; takeByGraph: () => GraphRuns } {
  const times = runTimes();
  const wrap = (graph: Graph): Graph => ({
    name: graph.name,
    path: graph.path,
    inputs: graph.inputs,
    outputs: graph.outputs,
    async run(feeds, outputs) {
      const t0 = performance.now();
      try {
        return await graph.run(feeds, outputs);
      } finally {
        times.add(graph.name, performance.now() - t0);
      }
    },
    dispose: () => graph.dispose(),
  });
  const engine: Engine = {
    backend: inner.backend,
    description: inner.description,
    loadGraph: async (name, path) => wrap(await inner.loadGraph(name, path)),
    dispose: () => inner.dispose(),
  };
  return { engine, take: times.take, takeByGraph: times.takeByGraph };
}

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const { env, backend, threads, log, ...load } = options.load;
  const dir = await resolveModelDir(options.model, env, { ...(load.precision ? { precision: load.precision } : {}), ...(log ? { log } : {}) });
  const inner = await createEngine(backend ?? "auto", { ...(threads ?? env.threads ? { threads: (threads ?? env.threads)! } : {}), ...(log ? { log } : {}), modelDir: dir, cacheDir: env.cacheDir });
  const { engine, take } = timedEngine(inner);
  const model = await Florence2.load(dir, { ...load, engine });
  const totals: number[] = [];
  const engineTimes: number[] = [];
  const stages: Record<string, number[]> = {};
  let tokens: number[] = [];
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

function round(value: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
