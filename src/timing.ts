/**
 * Time spent inside engine sessions: run-time sums per graph, and an engine wrapper that adds every graph run (and
 * an engine's own decoder steps) to them. No engine or model imports here, so GPU test bundles can use it alone.
 */
import { performance } from "node:perf_hooks";
import type { Engine, Graph } from "./engine/engine.ts";

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

/** An engine with statistics of its own (TensorRT: CUDA graph and zero-copy use). */
export interface DecoderEngine extends Engine {
  stats?(): unknown;
}

/**
 * Wraps an engine so that every graph run adds its wall time to a counter, in total (`take`) and per graph name
 * (`takeByGraph`). Output selection passes through unchanged, so the wrapped engine does the same work. A decoder
 * whose cache is on the host runs the wrapped graphs (each run counted by graph); one whose cache is on the device
 * gets the engine's own graphs, its steps counted as `decoder_step`. `stats()` passes through.
 */
export function timedEngine(inner: Engine): { engine: Engine; take: () => number; takeByGraph: () => GraphRuns } {
  const times = runTimes();
  const own = new WeakMap<Graph, Graph>();
  const timed = async <T>(name: string, work: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await work();
    } finally {
      times.add(name, performance.now() - t0);
    }
  };
  const wrap = (graph: Graph): Graph => {
    const wrapped: Graph = {
      name: graph.name,
      path: graph.path,
      inputs: graph.inputs,
      outputs: graph.outputs,
      run: (feeds, outputs) => timed(graph.name, () => graph.run(feeds, outputs)),
      dispose: () => graph.dispose(),
    };
    own.set(wrapped, graph);
    return wrapped;
  };
  const source = inner as DecoderEngine;
  const engine: DecoderEngine = {
    backend: inner.backend,
    description: inner.description,
    decoderCache: inner.decoderCache,
    decoderLayout: (hasMerged) => inner.decoderLayout(hasMerged),
    loadGraph: async (name, path, options) => wrap(await inner.loadGraph(name, path, options)),
    createDecoder: async (options) => {
      if (inner.decoderCache === "host") return inner.createDecoder(options);
      const entries = options.graphs instanceof Map ? [...options.graphs.entries()] : Object.entries(options.graphs);
      const graphs = new Map(entries.filter((e): e is [string, Graph] => e[1] !== undefined).map(([name, g]) => [name, own.get(g) ?? g]));
      const step = await inner.createDecoder({ ...options, graphs });
      return {
        rows: step.rows,
        next: (tokens) => timed("decoder_step", () => step.next(tokens)),
        reorder: (rows) => timed("decoder_step", () => step.reorder(rows)),
        dispose: () => step.dispose(),
      };
    },
    dispose: () => inner.dispose(),
  };
  if (source.stats) engine.stats = () => source.stats!();
  return { engine, take: times.take, takeByGraph: times.takeByGraph };
}
