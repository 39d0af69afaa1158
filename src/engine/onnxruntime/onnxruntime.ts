/** ONNX Runtime backend (CPU). The only module that imports onnxruntime-node. */
import * as ort from "onnxruntime-node";
import { FlorenceError } from "../../errors.ts";
import { checkFeeds, type Engine, type Graph, type Tensor, type ValueInfo } from "../engine.ts";

export interface OnnxRuntimeOptions {
  /** Threads inside one operator; default: ONNX Runtime's choice (all cores). */
  intraOpThreads?: number;
  graphOptimizationLevel?: "disabled" | "basic" | "extended" | "all";
  /** Let idle ORT threads spin (default false: Florence-2 runs many small graphs back to back). */
  allowSpinning?: boolean;
}

function valueInfo(meta: ort.InferenceSession.ValueMetadata): ValueInfo {
  return meta.isTensor ? { name: meta.name, type: meta.type, shape: [...meta.shape] } : { name: meta.name, type: "non-tensor", shape: [] };
}

class OnnxRuntimeGraph implements Graph {
  readonly name: string;
  readonly path: string;
  readonly inputs: readonly ValueInfo[];
  readonly outputs: readonly ValueInfo[];
  #session: ort.InferenceSession | undefined;

  constructor(name: string, path: string, session: ort.InferenceSession) {
    this.name = name;
    this.path = path;
    this.#session = session;
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
    // keep the caller's frames across the native call; the stack is only formatted if the run fails
    const caller: { stack?: string } = {};
    Error.captureStackTrace(caller, this.run);
    try {
      return (await (outputs ? session.run(ortFeeds, outputs as string[]) : session.run(ortFeeds))) as unknown as Record<string, Tensor>;
    } catch (cause) {
      const error = new FlorenceError("ENGINE_FAILED", `ONNX Runtime failed running ${this.name} (${this.path}): ${(cause as Error).message}`, { cause });
      if (caller.stack) error.stack = `${error.name}: ${error.message}\n${caller.stack.split("\n").slice(1).join("\n")}`;
      throw error;
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
  readonly description: string;
  readonly #options: OnnxRuntimeOptions;
  readonly #graphs = new Set<Graph>();

  constructor(options: OnnxRuntimeOptions = {}) {
    this.#options = options;
    this.description = `onnxruntime-node ${ort.env.versions?.common ?? ""} CPU${options.intraOpThreads ? `, ${options.intraOpThreads} threads` : ""}`.trim();
  }

  async loadGraph(name: string, path: string): Promise<Graph> {
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
    const graph = new OnnxRuntimeGraph(name, path, session);
    this.#graphs.add(graph);
    return graph;
  }

  async dispose(): Promise<void> {
    const graphs = [...this.#graphs];
    this.#graphs.clear();
    await Promise.all(graphs.map((g) => g.dispose()));
  }
}
