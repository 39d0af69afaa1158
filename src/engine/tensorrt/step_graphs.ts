/**
 * CUDA graphs for decoder steps: which steps replay a captured graph, which run eagerly, and what it cost.
 *
 * A decoder step enqueues dozens to hundreds of kernels (TensorRT launches each layer's kernels one by one) plus
 * the token upload and the logits download; on a Jetson the launches alone take a large share of a step. A CUDA
 * graph replays the whole step with one launch. A graph fixes the shapes, the tensor addresses and the execution
 * context it was captured with, so the decoder keys graphs by step index inside one workspace (fixed buffers,
 * one execution context per step). TensorRT must have enqueued once, and the stream been waited on, after its
 * shapes were set before the step can be captured: the first time a step runs it runs eagerly, and is captured
 * right after (`capture`), for the next generation to replay (`replay`).
 *
 * When a capture fails (an engine TensorRT cannot capture: weight streaming, data-dependent shapes, plugins that
 * synchronise), graphs are switched off for this workspace, the reason is logged once and kept in `stats`, and
 * every step runs eagerly from then on: slower, never wrong.
 */

/** The part of a CUDA stream this needs (CudaStream in cuda.ts). */
export interface CapturingStream<G extends CapturedGraph> {
  capture(enqueue: () => void): G;
}

/** The part of an instantiated graph this needs (CudaGraphExec in cuda.ts). */
export interface CapturedGraph {
  readonly nodes: number;
  launch(stream: never): void;
  destroy(): void;
}

export interface StepGraphStats {
  /** Steps run as one graph launch. */
  replays: number;
  /** Graphs captured (each after one eager run of the same step). */
  captures: number;
  /** Steps run kernel by kernel. */
  eager: number;
  /** Live graphs and the operations they hold. */
  graphs: number;
  nodes: number;
  /** Why graphs are off, when they are. */
  disabled: string | undefined;
}

export interface StepGraphsOptions {
  /** Steps 0..limit-1 get graphs; later steps run eagerly (each graph keeps an execution context and GPU memory for its launch). */
  limit: number;
  /** false: every step eager (the same as limit 0, reported as turned off). */
  enabled: boolean;
  /** Told once when a capture fails and graphs are switched off. */
  log?: (line: string) => void;
  /** Names the owner in that line ("decoder workspace 3×590"). */
  what: string;
}

export class StepGraphs<S extends CapturingStream<G>, G extends CapturedGraph> {
  readonly #stream: S;
  readonly #options: StepGraphsOptions;
  readonly #graphs = new Map<number, G>();
  #disabled: string | undefined;
  #replays = 0;
  #captures = 0;
  #eager = 0;
  #nodes = 0;

  constructor(stream: S, options: StepGraphsOptions) {
    if (!Number.isInteger(options.limit) || options.limit < 0) throw new RangeError(`StepGraphs limit must be a non-negative integer, got ${options.limit}`);
    this.#stream = stream;
    this.#options = options;
    if (!options.enabled) this.#disabled = "turned off (cudaGraphs: false)";
  }

  /** Whether `step` should get a graph: graphs on and the step within the limit. */
  wants(step: number): boolean {
    return this.#disabled === undefined && step < this.#options.limit;
  }

  /** Launches the step's graph when it has one; false: run the step eagerly (and `capture` it afterwards). */
  replay(step: number): boolean {
    const graph = this.#graphs.get(step);
    if (!graph) return false;
    graph.launch(this.#stream as never);
    this.#replays++;
    return true;
  }

  /** Counts a step that ran kernel by kernel. */
  ranEagerly(): void {
    this.#eager++;
  }

  /**
   * Captures `enqueue` (the step's whole work: upload, engines, download) as the graph for `step`, once the same
   * work has run eagerly with the same shapes and addresses and the stream has been waited on. Does not run it.
   * Returns whether a graph was made; a failure switches graphs off (logged once) and is not thrown.
   */
  capture(step: number, enqueue: () => void): boolean {
    if (!this.wants(step) || this.#graphs.has(step)) return false;
    let graph: G;
    try {
      graph = this.#stream.capture(enqueue);
    } catch (error) {
      this.#disabled = `capturing step ${step} failed: ${(error as Error).message}`;
      this.#options.log?.(`CUDA graphs off for ${this.#options.what}: ${this.#disabled}; decoder steps run kernel by kernel`);
      this.#destroyAll();
      return false;
    }
    this.#graphs.set(step, graph);
    this.#captures++;
    this.#nodes += graph.nodes;
    return true;
  }

  get stats(): StepGraphStats {
    return {
      replays: this.#replays,
      captures: this.#captures,
      eager: this.#eager,
      graphs: this.#graphs.size,
      nodes: this.#nodes,
      disabled: this.#disabled,
    };
  }

  /** Destroys the graphs (they hold the workspace's addresses: call before its buffers are freed). */
  dispose(): void {
    this.#destroyAll();
  }

  #destroyAll(): void {
    for (const graph of this.#graphs.values()) graph.destroy();
    this.#graphs.clear();
    this.#nodes = 0;
  }
}
