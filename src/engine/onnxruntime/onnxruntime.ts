/**
 * ONNX Runtime backend (CPU). The only module that imports onnxruntime-node. Its decoders run the decoder graphs
 * with the KV cache in host tensors (graph_decoder.ts), and it answers a plain embed_tokens graph by table lookup
 * (host_embedding.ts) instead of a session call per decoder step.
 */
import { performance } from "node:perf_hooks";
import * as ort from "onnxruntime-node";
import { FlorenceError } from "../../errors.ts";
import { checkFeeds, type DecoderLayout, type DecoderOptions, type DecoderStep, type Engine, engineDisposed, type Graph, type GraphLoadOptions, type Tensor, type ValueInfo } from "../engine.ts";
import { createGraphDecoder } from "../graph_decoder.ts";
import { loadHostEmbedding } from "../host_embedding.ts";

export interface OnnxRuntimeOptions {
  /** Threads inside one operator; default: ONNX Runtime's choice (all cores). */
  intraOpThreads?: number;
  graphOptimizationLevel?: "disabled" | "basic" | "extended" | "all";
  /** Let idle ORT threads spin (default false: Florence-2 runs many small graphs back to back). */
  allowSpinning?: boolean;
  /**
   * Called after every run with the wall time spent inside ONNX Runtime's own `session.run` (no input checks, no
   * tensor wrapping): what benchmarks call the bare session time.
   */
  onSessionRun?: (graph: string, ms: number) => void;
}

/**
 * ONNX Runtime's JS tensors keep float16 data in a Float16Array wherever the JS runtime has one (Deno 2; Node once it
 * ships it), but the engine contract is IEEE half bit patterns in a Uint16Array (engine.ts), and Deno's N-API panics
 * when a Float16Array reaches native code. ORT fills its typed-array table once, at the first Tensor it builds: build
 * that first one with Float16Array hidden, so float16 means Uint16Array in and out, on every runtime.
 */
function pinFloat16ToUint16(): void {
  const saved = Object.getOwnPropertyDescriptor(globalThis, "Float16Array");
  if (!saved?.configurable) {
    new ort.Tensor("float32", new Float32Array(1), [1]);
    return;
  }
  delete (globalThis as { Float16Array?: unknown }).Float16Array;
  try {
    new ort.Tensor("float32", new Float32Array(1), [1]);
  } finally {
    Object.defineProperty(globalThis, "Float16Array", saved);
  }
}
pinFloat16ToUint16();

function valueInfo(meta: ort.InferenceSession.ValueMetadata): ValueInfo {
  return meta.isTensor ? { name: meta.name, type: meta.type, shape: [...meta.shape] } : { name: meta.name, type: "non-tensor", shape: [] };
}

class OnnxRuntimeGraph implements Graph {
  readonly name: string;
  readonly path: string;
  readonly inputs: readonly ValueInfo[];
  readonly outputs: readonly ValueInfo[];
  #session: ort.InferenceSession | undefined;
  readonly #onSessionRun: ((graph: string, ms: number) => void) | undefined;

  constructor(name: string, path: string, session: ort.InferenceSession, onSessionRun?: (graph: string, ms: number) => void) {
    this.name = name;
    this.path = path;
    this.#session = session;
    this.#onSessionRun = onSessionRun;
    this.inputs = session.inputMetadata.map(valueInfo);
    this.outputs = session.outputMetadata.map(valueInfo);
  }

  async run(feeds: Readonly<Record<string, Tensor>>, outputs?: readonly string[]): Promise<Record<string, Tensor>> {
    const session = this.#session;
    if (!session) throw new FlorenceError("DISPOSED", `graph ${this.name} was disposed`, { fix: "load the model again" });
    checkFeeds(this, feeds);
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, value] of Object.entries(feeds)) {
      // ORT's own tensors (a previous step's outputs) go back in without a copy
      ortFeeds[name] = value instanceof ort.Tensor ? value : new ort.Tensor(value.type, value.data as never, value.dims);
    }
    // the caller's frames survive in the error's async stack trace (every caller awaits), so none is captured here
    const timer = this.#onSessionRun;
    const t0 = timer ? performance.now() : 0;
    try {
      return (await (outputs ? session.run(ortFeeds, outputs as string[]) : session.run(ortFeeds))) as unknown as Record<string, Tensor>;
    } catch (cause) {
      throw new FlorenceError("ENGINE_FAILED", `ONNX Runtime failed running ${this.name} (${this.path}): ${(cause as Error).message}`, { cause });
    } finally {
      if (timer) timer(this.name, performance.now() - t0);
    }
  }

  async dispose(): Promise<void> {
    const session = this.#session;
    this.#session = undefined;
    await session?.release();
  }
}

export class OnnxRuntimeEngine implements Engine {
  readonly backend = "onnxruntime" as const;
  readonly decoderCache = "host" as const;
  readonly description: string;
  readonly #options: OnnxRuntimeOptions;
  readonly #graphs = new Set<Graph>();
  readonly #decoders = new Set<DecoderStep>();
  #disposed = false;

  constructor(options: OnnxRuntimeOptions = {}) {
    this.#options = options;
    this.description = `onnxruntime-node ${ort.env.versions?.common ?? ""} CPU${options.intraOpThreads ? `, ${options.intraOpThreads} threads` : ""}`.trim();
  }

  #check(): void {
    if (this.#disposed) throw engineDisposed("ONNX Runtime");
  }

  /** The merged decoder when the model folder has it (one graph, no second session), else the split pair. */
  decoderLayout(hasMerged: boolean): DecoderLayout {
    return hasMerged ? "merged" : "split";
  }

  async loadGraph(name: string, path: string, options: GraphLoadOptions = {}): Promise<Graph> {
    this.#check();
    const host = name === "embed_tokens" && options.hostLookup !== false ? await loadHostEmbedding(name, path) : undefined;
    const graph = host ?? (await this.#loadSession(name, path));
    if (this.#disposed) {
      // disposed while the file was loading: nothing may outlive the engine
      await graph.dispose();
      this.#check();
    }
    this.#graphs.add(graph);
    return graph;
  }

  async #loadSession(name: string, path: string): Promise<Graph> {
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(path, {
        executionProviders: ["cpu"],
        graphOptimizationLevel: this.#options.graphOptimizationLevel ?? "all",
        ...(this.#options.intraOpThreads ? { intraOpNumThreads: this.#options.intraOpThreads } : {}),
        logSeverityLevel: 3,
        // idle worker threads spinning between runs steal the core the next graph needs (2-core Jetsons, this CI)
        extra: { session: { intra_op: { allow_spinning: this.#options.allowSpinning ? "1" : "0" } } },
      });
    } catch (cause) {
      throw new FlorenceError("MODEL_FILE_INVALID", `ONNX Runtime cannot load ${name} from ${path}: ${(cause as Error).message}`, {
        fix: "the file is missing, truncated or not an ONNX graph; download the model again or re-export it with scripts/python/florence_export.py",
        cause,
      });
    }
    return new OnnxRuntimeGraph(name, path, session, this.#options.onSessionRun);
  }

  /** A decoder over graphs loaded here (or any host graphs: a wrapper that times each run passes its own). */
  async createDecoder(options: DecoderOptions): Promise<DecoderStep> {
    this.#check();
    const decoder = await createGraphDecoder(options);
    this.#decoders.add(decoder);
    return {
      rows: decoder.rows,
      next: (tokens) => decoder.next(tokens),
      reorder: (rows) => decoder.reorder(rows),
      dispose: async () => {
        this.#decoders.delete(decoder);
        await decoder.dispose();
      },
    };
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    const decoders = [...this.#decoders];
    this.#decoders.clear();
    await Promise.all(decoders.map((d) => d.dispose()));
    const graphs = [...this.#graphs];
    this.#graphs.clear();
    await Promise.all(graphs.map((g) => g.dispose()));
  }
}
