/**
 * The TensorRT decoder's workspaces: everything a generation needs (KV cache, token and logits buffers, encoder
 * outputs, step contexts and their CUDA graphs), allocated once for a geometry (rows × encoder length) and kept
 * between generations, so a camera loop allocates nothing per frame and nothing per step.
 */
import { elementCount } from "../engine.ts";
import { PAST_KEY_VALUES, PRESENT } from "../kv_cache.ts";
import type { CudaGraphExec, CudaStream, DeviceBuffer, PinnedBuffer } from "./cuda.ts";
import { decoderEngineError, type DecoderSpec } from "./decoder_spec.ts";
import type { Pointer } from "./ffi.ts";
import { type EngineShared, type IoTensor, REBUILD, type TensorRtGraph, type TrtContext } from "./graph.ts";
import { type StepGraphStats, StepGraphs } from "./step_graphs.ts";

export interface CacheTensor {
  /** "3.decoder.key" */
  readonly id: string;
  readonly self: boolean;
  readonly heads: number;
  readonly headDim: number;
  readonly elementBytes: number;
  /** Self-attention: two buffers; step k reads buffer (k−1) mod 2 and writes buffer k mod 2. Cross: one. */
  readonly buffers: readonly DeviceBuffer[];
  /** Cross-attention scratch for reorders that move rows between batch items (allocated when first needed). */
  spare: DeviceBuffer | undefined;
}

/** Contexts a step runs on: its own (CUDA graphs) or the graphs' shared ones. */
export interface StepContexts {
  readonly decoder: TrtContext;
  readonly embed: TrtContext | undefined;
}

/** One geometry's buffers, step contexts and CUDA graphs; used by one generation at a time. */
export class DecoderWorkspace {
  readonly spec: DecoderSpec;
  readonly stream: CudaStream;
  readonly graphs: StepGraphs<CudaStream, CudaGraphExec>;
  readonly idsHost: PinnedBuffer;
  readonly idsView: BigInt64Array;
  /** Desktop: the device copy of the ids. Zero-copy: undefined (TensorRT reads idsHost in place). */
  readonly idsDevice: DeviceBuffer | undefined;
  readonly embeds: DeviceBuffer | undefined;
  /** The encoder outputs, repeated per beam: device buffers, or mapped host memory with zero-copy. */
  readonly hidden: { readonly address: Pointer; readonly device: DeviceBuffer | undefined };
  readonly mask: { readonly address: Pointer; readonly device: DeviceBuffer | undefined };
  /** Pinned staging for the encoder outputs (zero-copy: the buffer TensorRT reads). */
  readonly encoderHost: PinnedBuffer;
  readonly logitsHost: PinnedBuffer;
  readonly logitsDevice: DeviceBuffer | undefined;
  readonly logits32: Float32Array;
  readonly cache = new Map<string, CacheTensor>();
  /** Outputs a graph computes but the decoder does not keep (a with-past graph's pass-through encoder presents). */
  readonly sinks = new Map<string, DeviceBuffer>();
  /** Step index → its own contexts (steps below graphSteps); the embed context is shared by all of them. */
  readonly stepContexts = new Map<number, StepContexts>();
  #embedContext: TrtContext | undefined;
  readonly checked = new Set<TrtContext>();
  readonly #owned: (DeviceBuffer | PinnedBuffer)[] = [];
  readonly #shared: EngineShared;
  inUse = false;
  lastUsed = 0;
  generations = 0;
  steps = 0;

  constructor(shared: EngineShared, spec: DecoderSpec) {
    this.#shared = shared;
    this.spec = spec;
    const cuda = shared.cuda;
    const zeroCopy = shared.zeroCopy;
    const own = <T extends DeviceBuffer | PinnedBuffer>(buffer: T): T => {
      this.#owned.push(buffer);
      return buffer;
    };
    this.stream = cuda.createStream();
    try {
      const { rows, encoderLength, hiddenSize } = spec;
      this.idsHost = own(cuda.allocPinned(rows * 8, { mapped: zeroCopy }));
      this.idsView = new BigInt64Array(this.idsHost.buffer, 0, rows);
      this.idsDevice = zeroCopy ? undefined : own(cuda.allocDevice(rows * 8));
      const embedType = spec.embed?.io.get("inputs_embeds");
      this.embeds = embedType ? own(cuda.allocDevice(rows * hiddenSize * embedType.elementBytes)) : undefined;
      const hiddenBytes = rows * encoderLength * hiddenSize * spec.first.io.get("encoder_hidden_states")!.elementBytes;
      const maskBytes = rows * encoderLength * 8;
      this.encoderHost = own(cuda.allocPinned(hiddenBytes + maskBytes, { mapped: zeroCopy }));
      if (zeroCopy) {
        this.hidden = { address: this.encoderHost.deviceAddress, device: undefined };
        this.mask = { address: this.encoderHost.deviceAddress + BigInt(hiddenBytes), device: undefined };
      } else {
        const hidden = own(cuda.allocDevice(hiddenBytes));
        const mask = own(cuda.allocDevice(maskBytes));
        this.hidden = { address: hidden.address, device: hidden };
        this.mask = { address: mask.address, device: mask };
      }
      const logitsBytes = rows * spec.vocab * (spec.logitsType === "float16" ? 2 : 4);
      this.logitsHost = own(cuda.allocPinned(logitsBytes, { mapped: zeroCopy }));
      this.logitsDevice = zeroCopy ? undefined : own(cuda.allocDevice(logitsBytes));
      this.logits32 = new Float32Array(rows * spec.vocab);
      this.#allocateCache(own);
    } catch (error) {
      this.#freeBuffers();
      this.stream.destroy();
      throw error;
    }
    this.graphs = new StepGraphs(this.stream, {
      limit: shared.graphSteps,
      enabled: shared.graphSteps > 0,
      what: `the decoder workspace ${this.describe()}`,
      log: shared.log,
    });
  }

  describe(): string {
    return `${this.spec.rows} row(s) × ${this.spec.encoderLength} encoder positions`;
  }

  /** Whether this workspace serves `spec`: same engines, same geometry. */
  fits(spec: DecoderSpec): boolean {
    const s = this.spec;
    return s.rows === spec.rows && s.encoderLength === spec.encoderLength && s.hiddenSize === spec.hiddenSize && s.first === spec.first && s.later === spec.later && s.embed === spec.embed;
  }

  get stale(): boolean {
    const { embed, first, later } = this.spec;
    return first.disposed || later.disposed || embed?.disposed === true;
  }

  #allocateCache(own: (buffer: DeviceBuffer) => DeviceBuffer): void {
    const { later, first, config, rows, capacity, encoderLength } = this.spec;
    const fix = `use decoder engines built from one onnx-community export: ${REBUILD} ${this.#shared.modelDir ?? "DIR"}`;
    const layout = (t: IoTensor): { heads: number; headDim: number } => {
      const heads = t.shape[1]! > 0 ? t.shape[1]! : config?.decoderAttentionHeads;
      const headDim = t.shape[3]! > 0 ? t.shape[3]! : heads && config?.dModel ? config.dModel / heads : undefined;
      if (!heads || !headDim || !Number.isInteger(headDim)) throw decoderEngineError(later.name, `cannot tell the shape of ${t.name} [${t.shape.join(", ")}]`, "pass the text config (decoderAttentionHeads, dModel)");
      return { heads, headDim };
    };
    for (const t of later.io.values()) {
      const match = t.input ? PAST_KEY_VALUES.exec(t.name) : undefined;
      if (!match) continue;
      const self = match[2] === "decoder";
      const { heads, headDim } = layout(t);
      const bytes = rows * heads * (self ? capacity : encoderLength) * headDim * t.elementBytes;
      const buffers = (self ? [0, 1] : [0]).map(() => own(this.#shared.cuda.allocDevice(bytes)));
      const id = `${match[1]}.${match[2]}.${match[3]}`;
      this.cache.set(id, { id, self, heads, headDim, elementBytes: t.elementBytes, buffers, spare: undefined });
    }
    const presents = (g: TensorRtGraph) => new Set([...g.io.values()].filter((t) => !t.input && PRESENT.test(t.name)).map((t) => t.name.replace(/^present\./, "")));
    const fromFirst = presents(first);
    const fromLater = presents(later);
    for (const id of fromFirst) if (!this.cache.has(id)) throw decoderEngineError(first.name, `outputs present.${id}, which ${later.name} does not take back`, fix);
    for (const cache of this.cache.values()) {
      if (!fromFirst.has(cache.id)) throw decoderEngineError(first.name, `does not output present.${cache.id}, which ${later.name} takes`, fix);
      if (cache.self && !fromLater.has(cache.id)) throw decoderEngineError(later.name, `does not output present.${cache.id}`, fix);
    }
  }

  /** A buffer a step may write an output into and nobody reads; the same one every time (CUDA graphs keep addresses). */
  sink(graph: TensorRtGraph, context: TrtContext, name: string): DeviceBuffer {
    const key = `${graph.name}/${name}`;
    let sink = this.sinks.get(key);
    const tensor = graph.io.get(name)!;
    const bytes = Math.max(1, elementCount(context.shapeOf(name).map((d) => Math.max(d, 0)))) * tensor.elementBytes;
    if (sink && sink.bytes < bytes) throw graph.failure(`would write ${name} larger (${bytes} bytes) than on an earlier step (${sink.bytes})`);
    if (!sink) {
      sink = this.#shared.cuda.allocDevice(bytes);
      this.sinks.set(key, sink);
      this.#owned.push(sink);
    }
    return sink;
  }

  spareFor(cache: CacheTensor): DeviceBuffer {
    if (!cache.spare) {
      cache.spare = this.#shared.cuda.allocDevice(cache.buffers[0]!.bytes);
      this.#owned.push(cache.spare);
    }
    return cache.spare;
  }

  /** The contexts for `step`: made on first use for steps that get graphs, else the engines' shared contexts. */
  async contextsFor(step: number): Promise<StepContexts> {
    const { embed, first, later } = this.spec;
    const shared: StepContexts = { decoder: (step === 0 ? first : later).context, embed: embed?.context };
    if (!this.graphs.wants(step)) return shared;
    const existing = this.stepContexts.get(step);
    if (existing) return existing;
    const graph = step === 0 ? first : later;
    if (embed && !this.#embedContext) this.#embedContext = await embed.createStepContext();
    const own: StepContexts = { decoder: await graph.createStepContext(), embed: this.#embedContext };
    this.stepContexts.set(step, own);
    return own;
  }

  #freeBuffers(): void {
    for (const buffer of this.#owned) buffer.free();
    this.#owned.length = 0;
  }

  async dispose(): Promise<void> {
    try {
      await this.stream.synchronizeAsync();
    } finally {
      this.graphs.dispose();
      const { embed, first, later } = this.spec;
      for (const [step, contexts] of this.stepContexts) await (step === 0 ? first : later).destroyStepContext(contexts.decoder);
      this.stepContexts.clear();
      if (this.#embedContext) await embed!.destroyStepContext(this.#embedContext);
      this.#embedContext = undefined;
      this.#freeBuffers();
      this.stream.destroy();
    }
  }
}

export interface DecoderStats extends Omit<StepGraphStats, "disabled"> {
  /** Generations and decoder steps run. */
  generations: number;
  steps: number;
  /** Workspaces alive now (in use or kept for the next generation). */
  workspaces: number;
  /** Why CUDA graphs are off, where they are. */
  disabled: string[];
}

/** The engine's workspaces: reused when a generation has the geometry of an earlier one, bounded, freed on dispose. */
export class DecoderWorkspaces {
  readonly #shared: EngineShared;
  readonly #all: DecoderWorkspace[] = [];
  /** Counts of workspaces already disposed, so stats cover the engine's life. */
  readonly #retired = { generations: 0, steps: 0, replays: 0, captures: 0, eager: 0 };
  #clock = 0;

  constructor(shared: EngineShared) {
    this.#shared = shared;
  }

  /** An idle workspace for this geometry, or a new one (freeing idle ones beyond the limit, or all idle ones when the GPU is out of memory). */
  async acquire(spec: DecoderSpec): Promise<DecoderWorkspace> {
    for (const ws of [...this.#all]) if (!ws.inUse && ws.stale) await this.#drop(ws);
    let ws = this.#all.find((w) => !w.inUse && w.fits(spec));
    if (!ws) {
      await this.#trim(Math.max(0, this.#shared.workspaces - 1));
      try {
        ws = new DecoderWorkspace(this.#shared, spec);
      } catch (error) {
        const idle = this.#all.filter((w) => !w.inUse);
        if (!idle.length || !/out of memory|cudaErrorMemoryAllocation/.test((error as Error).message)) throw error;
        await this.#trim(0);
        ws = new DecoderWorkspace(this.#shared, spec);
      }
      this.#all.push(ws);
    }
    ws.inUse = true;
    ws.generations++;
    ws.lastUsed = ++this.#clock;
    return ws;
  }

  async release(ws: DecoderWorkspace): Promise<void> {
    ws.inUse = false;
    await this.#trim(this.#shared.workspaces);
  }

  /** Drops the least recently used idle workspaces until at most `keep` idle ones remain. */
  async #trim(keep: number): Promise<void> {
    const idle = this.#all.filter((w) => !w.inUse).sort((a, b) => a.lastUsed - b.lastUsed);
    while (idle.length > keep) await this.#drop(idle.shift()!);
  }

  async #drop(ws: DecoderWorkspace): Promise<void> {
    this.#all.splice(this.#all.indexOf(ws), 1);
    const stats = ws.graphs.stats;
    this.#retired.generations += ws.generations;
    this.#retired.steps += ws.steps;
    this.#retired.replays += stats.replays;
    this.#retired.captures += stats.captures;
    this.#retired.eager += stats.eager;
    await ws.dispose();
  }

  stats(): DecoderStats {
    const out: DecoderStats = { ...this.#retired, graphs: 0, nodes: 0, workspaces: this.#all.length, disabled: [] };
    for (const ws of this.#all) {
      const stats = ws.graphs.stats;
      out.generations += ws.generations;
      out.steps += ws.steps;
      out.replays += stats.replays;
      out.captures += stats.captures;
      out.eager += stats.eager;
      out.graphs += stats.graphs;
      out.nodes += stats.nodes;
      if (stats.disabled) out.disabled.push(`${ws.describe()}: ${stats.disabled}`);
    }
    return out;
  }

  async dispose(): Promise<void> {
    for (const ws of [...this.#all]) await this.#drop(ws);
  }
}
