/**
 * The TensorRT decoder: DecoderStep over the decoder_model (first step) and decoder_with_past_model (later steps)
 * engines, and embed_tokens where the decoders take embeddings, with the KV cache on the GPU.
 *
 * Everything a generation needs lives in a workspace (KV cache, token and logits buffers, encoder outputs),
 * allocated once for a geometry (rows × encoder length) and kept between generations (`DecoderWorkspaces`), so a
 * camera loop allocates nothing per frame and nothing per step. Per step only the token ids go up and the logits
 * come down — or, with zero-copy (Jetson), neither: TensorRT reads the ids and writes the logits in mapped host
 * memory.
 *
 * Addresses are a function of the step index alone: step k reads the self-attention past from buffer (k−1) mod 2
 * and writes its present to buffer k mod 2; beam reorders gather rows and copy them back into place. With an
 * execution context per step (sharing one activation block), each of the first `graphSteps` steps is captured as a
 * CUDA graph the first time it runs (step_graphs.ts) and replayed with one launch in later generations.
 */
import { elementCount, type Tensor, type TensorData, type TensorType } from "../engine.ts";
import { float32ToFloat16, fromHalf } from "../float16.ts";
import { FlorenceError } from "../../errors.ts";
import type { DecoderOptions, DecoderStep, DecoderGraphs } from "../../florence/decoder.ts";
import type { CudaGraphExec, CudaStream, DeviceBuffer, PinnedBuffer } from "./cuda.ts";
import type { Pointer } from "./ffi.ts";
import { type EngineShared, type IoTensor, REBUILD, TensorRtGraph, type TrtContext } from "./graph.ts";
import { type StepGraphStats, StepGraphs } from "./step_graphs.ts";

const PAST = /^past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)$/;
const PRESENT = /^present\.(\d+)\.(decoder|encoder)\.(key|value)$/;

interface CacheTensor {
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

function decoderEngineError(graph: string, message: string, fix: string): FlorenceError {
  return new FlorenceError("MODEL_FILE_INVALID", `decoder engine ${graph}: ${message}`, { fix });
}

/** The decoder's engines and the geometry of one generation, validated. */
interface DecoderSpec {
  readonly rows: number;
  readonly encoderLength: number;
  readonly hiddenSize: number;
  readonly vocab: number;
  /** Self-attention capacity in positions: the with-past profile's longest past + 1. */
  readonly capacity: number;
  readonly logitsType: TensorType;
  readonly embed: TensorRtGraph | undefined;
  readonly first: TensorRtGraph;
  readonly later: TensorRtGraph;
  readonly config: DecoderOptions["config"];
}

function graphNamed(graphs: DecoderGraphs, name: string): TensorRtGraph | undefined {
  const found = graphs instanceof Map ? graphs.get(name) : (graphs as Readonly<Partial<Record<string, unknown>>>)[name];
  if (found && !(found instanceof TensorRtGraph)) throw new FlorenceError("INVALID_ARGUMENT", `graph ${name} is not a TensorRT graph`, { fix: "load every graph of the model with the same TensorRtEngine" });
  return found as TensorRtGraph | undefined;
}

/** Checks that the engines fit together and with the encoder outputs; throws what is wrong and how to rebuild. */
function decoderSpec(shared: EngineShared, options: DecoderOptions): DecoderSpec {
  const first = graphNamed(options.graphs, "decoder_model");
  const later = graphNamed(options.graphs, "decoder_with_past_model");
  const embed = graphNamed(options.graphs, "embed_tokens");
  if (!first || !later) {
    throw new FlorenceError("MODEL_FILE_MISSING", "the TensorRT decoder needs the decoder_model and decoder_with_past_model engines", {
      fix: `TensorRT cannot build the merged decoder (an If node); ${REBUILD} ${shared.modelDir ?? "DIR"} builds the split pair`,
    });
  }
  const numBeams = options.numBeams ?? 1;
  if (!Number.isInteger(numBeams) || numBeams < 1) throw new FlorenceError("INVALID_ARGUMENT", `numBeams must be a positive integer, got ${numBeams}`);
  const hidden = options.encoderHiddenStates;
  const mask = options.encoderAttentionMask;
  if (hidden.dims.length !== 3 || mask.dims.length !== 2 || mask.dims[0] !== hidden.dims[0] || mask.dims[1] !== hidden.dims[1] || mask.type !== "int64") {
    throw new FlorenceError("INVALID_ARGUMENT", `encoder outputs do not fit together: hidden states ${hidden.type}[${hidden.dims.join(", ")}], attention mask ${mask.type}[${mask.dims.join(", ")}]`, {
      fix: "pass the encoder's last_hidden_state [batch, E, D] and its int64 attention mask [batch, E]",
    });
  }
  const [batch, encoderLength, hiddenSize] = hidden.dims as [number, number, number];
  const rows = batch * numBeams;
  const fix = `use decoder engines built from one onnx-community export: ${REBUILD} ${shared.modelDir ?? "DIR"}`;
  for (const g of [first, later]) {
    for (const t of g.io.values()) {
      if (!t.input) continue;
      if (PAST.test(t.name)) continue;
      if (!["input_ids", "inputs_embeds", "encoder_hidden_states", "encoder_attention_mask"].includes(t.name)) throw decoderEngineError(g.name, `takes an input ${t.name} that Florence-2 decoding does not provide`, fix);
      if (t.name === "inputs_embeds" && !embed) throw new FlorenceError("MODEL_FILE_MISSING", `decoder engine ${g.name} takes inputs_embeds, but the embed_tokens engine is not loaded`, { fix: "load embed_tokens with the decoder" });
      if (t.name === "encoder_attention_mask" && t.type !== "int64") throw decoderEngineError(g.name, `encoder_attention_mask is ${t.type}, expected int64`, fix);
      if (t.name === "input_ids" && t.type !== "int64") throw decoderEngineError(g.name, `input_ids is ${t.type}, expected int64`, fix);
    }
    const logits = g.io.get("logits");
    if (!logits || logits.input || (logits.type !== "float32" && logits.type !== "float16")) throw decoderEngineError(g.name, "has no float logits output", fix);
  }
  if (!first.io.get("encoder_hidden_states")?.input) throw decoderEngineError(first.name, "does not take encoder_hidden_states", fix);
  if (![...later.io.values()].some((t) => t.input && PAST.test(t.name))) throw decoderEngineError(later.name, "has no past_key_values inputs", fix);
  if (embed && embed.io.get("input_ids")?.type !== "int64") throw decoderEngineError(embed.name, "input_ids must be int64", fix);
  for (const g of [first, later]) {
    const wanted = g.io.get("inputs_embeds");
    const made = embed?.io.get("inputs_embeds");
    if (wanted?.input && (!made || made.input || made.type !== wanted.type)) throw decoderEngineError(g.name, `takes ${wanted.type} inputs_embeds, but embed_tokens outputs ${made ? made.type : "none"}`, fix);
  }
  const logitsInfo = first.io.get("logits")!;
  if (later.io.get("logits")!.type !== logitsInfo.type) throw decoderEngineError(later.name, "its logits type differs from decoder_model's", fix);
  const vocab = logitsInfo.shape[2] !== undefined && logitsInfo.shape[2] > 0 ? logitsInfo.shape[2] : undefined;
  if (!vocab) throw decoderEngineError(first.name, `logits shape [${logitsInfo.shape.join(", ")}] does not fix the vocabulary size`, fix);

  // capacity: the with-past engine's longest past (profile 0), plus the step that writes one more
  const anyPast = [...later.io.values()].find((t) => t.input && PAST.exec(t.name)?.[2] === "decoder");
  if (!anyPast) throw decoderEngineError(later.name, "has no past_key_values.*.decoder inputs", fix);
  const range = anyPast.profiles[0];
  if (!range) throw decoderEngineError(later.name, "has no optimization profile", fix);
  const capacity = range.max[2]! + 1;
  const batchRange = [range.min[0]!, range.max[0]!];
  if (rows < batchRange[0]! || rows > batchRange[1]!) {
    throw new FlorenceError("ENGINE_INPUT_INVALID", `decoder engines take ${batchRange[0]}..${batchRange[1]} rows (batch × beams), got ${rows}`, {
      fix: `use fewer beams or a smaller batch, or rebuild the engines for more: ${REBUILD} ${shared.modelDir ?? "DIR"}`,
    });
  }
  return { rows, encoderLength, hiddenSize, vocab, capacity, logitsType: logitsInfo.type, embed, first, later, config: options.config };
}

/** Contexts a step runs on: its own (CUDA graphs) or the graphs' shared ones. */
interface StepContexts {
  readonly decoder: TrtContext;
  readonly embed: TrtContext | undefined;
}

/** One geometry's buffers, step contexts and CUDA graphs; used by one generation at a time. */
class DecoderWorkspace {
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
      const match = t.input ? PAST.exec(t.name) : undefined;
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

export class TensorRtDecoder implements DecoderStep {
  readonly rows: number;
  readonly #ws: DecoderWorkspace;
  readonly #pool: DecoderWorkspaces;
  readonly #numBeams: number;
  readonly #empty: DeviceBuffer;
  readonly #leaseOwner: object;
  readonly #onDispose: (decoder: TensorRtDecoder) => void;
  #steps = 0;
  /** Every item's beams share one cross-attention cache row content, until a reorder moves a row across items. */
  #crossPerItem = true;
  #disposed = false;

  private constructor(ws: DecoderWorkspace, pool: DecoderWorkspaces, numBeams: number, empty: DeviceBuffer, leaseOwner: object, onDispose: (decoder: TensorRtDecoder) => void) {
    this.#ws = ws;
    this.#pool = pool;
    this.rows = ws.spec.rows;
    this.#numBeams = numBeams;
    this.#empty = empty;
    this.#leaseOwner = leaseOwner;
    this.#onDispose = onDispose;
  }

  /** Validates the engines, takes a workspace for this geometry and uploads the encoder outputs into it. */
  static async create(shared: EngineShared, pool: DecoderWorkspaces, options: DecoderOptions, onDispose: (decoder: TensorRtDecoder) => void): Promise<TensorRtDecoder> {
    const spec = decoderSpec(shared, options);
    const leaseOwner = {};
    const graphs = [spec.embed, spec.first, spec.later];
    let leased = 0;
    let ws: DecoderWorkspace | undefined;
    try {
      for (const g of graphs) {
        g?.lease(leaseOwner);
        leased++;
      }
      ws = await pool.acquire(spec);
      await upload(ws, options.encoderHiddenStates, options.encoderAttentionMask, options.numBeams ?? 1);
      return new TensorRtDecoder(ws, pool, options.numBeams ?? 1, shared.empty, leaseOwner, onDispose);
    } catch (error) {
      if (ws) await pool.release(ws);
      for (const g of graphs.slice(0, leased)) g?.release(leaseOwner);
      throw error;
    }
  }

  #check(): void {
    if (this.#disposed) throw new FlorenceError("DISPOSED", "this decoder was disposed", { fix: "create a new decoder for each generation" });
  }

  async next(tokens: Int32Array): Promise<Float32Array> {
    this.#check();
    const ws = this.#ws;
    const spec = ws.spec;
    if (tokens.length !== this.rows) throw new FlorenceError("INVALID_ARGUMENT", `the decoder has ${this.rows} rows, got ${tokens.length} tokens`);
    const step = this.#steps;
    if (step + 1 > spec.capacity) {
      throw new FlorenceError("ENGINE_INPUT_INVALID", `generation reached ${step} tokens, the most the decoder engines' profile allows (${spec.capacity - 1} past positions)`, {
        fix: `lower max_new_tokens, or rebuild the engines with a longer maximum: ${REBUILD} DIR`,
      });
    }
    for (let r = 0; r < this.rows; r++) ws.idsView[r] = BigInt(tokens[r]!);
    if (ws.graphs.replay(step)) ws.stream.synchronize();
    else {
      const contexts = await ws.contextsFor(step);
      this.#bind(step, contexts);
      this.#enqueue(step, contexts);
      ws.stream.synchronize();
      ws.graphs.ranEagerly();
      // TensorRT has now run this step's shapes on this context and the stream is idle: it can be captured
      if (ws.stepContexts.get(step) === contexts) ws.graphs.capture(step, () => this.#enqueue(step, contexts));
    }
    this.#steps++;
    ws.steps++;
    const out = ws.logits32;
    if (spec.logitsType === "float32") out.set(new Float32Array(ws.logitsHost.buffer, 0, out.length));
    else {
      const half = new Uint16Array(ws.logitsHost.buffer, 0, out.length);
      for (let i = 0; i < out.length; i++) out[i] = fromHalf(half[i]!);
    }
    return out;
  }

  /** The step's whole GPU work, in stream order: what a CUDA graph captures. */
  #enqueue(step: number, contexts: StepContexts): void {
    const ws = this.#ws;
    const stream = ws.stream;
    const { embed, first, later } = ws.spec;
    if (ws.idsDevice) stream.copyHostToDevice(ws.idsDevice, ws.idsHost, this.rows * 8);
    if (embed && !contexts.embed!.methods.enqueueV3(contexts.embed!.impl, stream.handle)) throw embed.failure("could not enqueue embed_tokens");
    const graph = step === 0 ? first : later;
    if (!contexts.decoder.methods.enqueueV3(contexts.decoder.impl, stream.handle)) throw graph.failure(`could not enqueue decoder step ${step}`);
    if (ws.logitsDevice) stream.copyDeviceToHost(ws.logitsHost, ws.logitsDevice, ws.logitsHost.bytes);
  }

  /** Shapes and addresses for `step` (each context skips the calls where nothing changed). */
  #bind(step: number, contexts: StepContexts): void {
    const ws = this.#ws;
    const { rows, encoderLength, hiddenSize, embed, first, later } = ws.spec;
    const idsAddress = ws.idsDevice ? ws.idsDevice.address : ws.idsHost.deviceAddress;
    const logitsAddress = ws.logitsDevice ? ws.logitsDevice.address : ws.logitsHost.deviceAddress;
    const bind = (graph: TensorRtGraph, context: TrtContext, name: string, dims: readonly number[] | undefined, address: Pointer) => {
      if (dims && !context.setShape(name, dims)) throw graph.failure(`refused shape [${dims.join(", ")}] for ${name}`);
      if (!context.setAddress(name, address)) throw graph.failure(`refused the address of ${name}`);
    };
    if (embed) {
      const context = contexts.embed!;
      bind(embed, context, "input_ids", [rows, 1], idsAddress);
      for (const t of embed.io.values()) if (!t.input) bind(embed, context, t.name, undefined, t.name === "inputs_embeds" ? ws.embeds!.address : ws.sink(embed, context, t.name).address);
      if (!ws.checked.has(context)) {
        const dims = context.shapeOf("inputs_embeds");
        if (dims.join(",") !== [rows, 1, hiddenSize].join(",")) throw embed.failure(`would write inputs_embeds as [${dims.join(", ")}], expected [${rows}, 1, ${hiddenSize}]`);
        ws.checked.add(context);
      }
    }
    const graph = step === 0 ? first : later;
    const context = contexts.decoder;
    const read = (step + 1) % 2; // (step − 1) mod 2
    const write = step % 2;
    for (const t of graph.io.values()) {
      const name = t.name;
      if (t.input) {
        if (name === "input_ids") bind(graph, context, name, [rows, 1], idsAddress);
        else if (name === "inputs_embeds") bind(graph, context, name, [rows, 1, hiddenSize], ws.embeds!.address);
        else if (name === "encoder_hidden_states") bind(graph, context, name, [rows, encoderLength, hiddenSize], ws.hidden.address);
        else if (name === "encoder_attention_mask") bind(graph, context, name, [rows, encoderLength], ws.mask.address);
        else {
          const match = PAST.exec(name)!;
          const cache = ws.cache.get(`${match[1]}.${match[2]}.${match[3]}`);
          if (!cache) throw graph.failure(`takes ${name}, which no decoder engine outputs`);
          if (cache.self) {
            // the first step's past is empty: zero positions at a non-null address
            bind(graph, context, name, [rows, cache.heads, step, cache.headDim], step === 0 ? this.#empty.address : cache.buffers[read]!.address);
          } else {
            if (step === 0) throw graph.failure(`takes the cross-attention cache ${name} on the first step`);
            bind(graph, context, name, [rows, cache.heads, encoderLength, cache.headDim], cache.buffers[0]!.address);
          }
        }
      } else if (name === "logits") bind(graph, context, name, undefined, logitsAddress);
      else {
        const match = PRESENT.exec(name);
        const cache = match ? ws.cache.get(`${match[1]}.${match[2]}.${match[3]}`) : undefined;
        if (cache?.self) bind(graph, context, name, undefined, cache.buffers[write]!.address);
        else if (cache && step === 0) bind(graph, context, name, undefined, cache.buffers[0]!.address);
        else bind(graph, context, name, undefined, ws.sink(graph, context, name).address);
      }
    }
    if (!ws.checked.has(context)) this.#checkOutputShapes(graph, context, step);
  }

  /** Once per context: the shapes TensorRT will write must fit the buffers bound to them. */
  #checkOutputShapes(graph: TensorRtGraph, context: TrtContext, step: number): void {
    const ws = this.#ws;
    const { rows, vocab, encoderLength } = ws.spec;
    for (const t of graph.io.values()) {
      if (t.input) continue;
      const match = PRESENT.exec(t.name);
      const cache = match ? ws.cache.get(`${match[1]}.${match[2]}.${match[3]}`) : undefined;
      const expected =
        t.name === "logits"
          ? [rows, 1, vocab]
          : cache?.self
            ? [rows, cache.heads, step + 1, cache.headDim]
            : cache && step === 0
              ? [rows, cache.heads, encoderLength, cache.headDim]
              : undefined;
      if (!expected) continue;
      const dims = context.shapeOf(t.name);
      if (dims.join(",") !== expected.join(",")) throw graph.failure(`would write ${t.name} as [${dims.join(", ")}], expected [${expected.join(", ")}]`);
    }
    ws.checked.add(context);
  }

  /**
   * Beam search moved rows: row r continues from row rowIndices[r]. The rows that change are gathered into the
   * other self-attention buffer and copied back, so every step keeps its addresses (and its CUDA graph).
   */
  async reorder(rowIndices: Int32Array): Promise<void> {
    this.#check();
    const ws = this.#ws;
    if (rowIndices.length !== this.rows) throw new FlorenceError("INVALID_ARGUMENT", `reorder needs ${this.rows} row indices, got ${rowIndices.length}`);
    let withinItems = true;
    const moved: number[] = [];
    for (let r = 0; r < this.rows; r++) {
      const source = rowIndices[r]!;
      if (!Number.isInteger(source) || source < 0 || source >= this.rows) throw new FlorenceError("INVALID_ARGUMENT", `reorder: row index ${source} is outside 0..${this.rows - 1}`);
      if (source !== r) moved.push(r);
      if (Math.floor(source / this.#numBeams) !== Math.floor(r / this.#numBeams)) withinItems = false;
    }
    if (moved.length === 0 || this.#steps === 0) return;
    const stream = ws.stream;
    const current = (this.#steps - 1) % 2;
    const scratch = 1 - current;
    for (const cache of ws.cache.values()) {
      if (!cache.self) continue;
      // rows are contiguous blocks of the packed [rows, heads, steps, headDim] present
      const block = cache.heads * this.#steps * cache.headDim * cache.elementBytes;
      gatherRows(stream, cache.buffers[current]!, cache.buffers[scratch]!, block, moved, rowIndices);
    }
    // the cross-attention cache is the same for one item's beams (HF's beam search never moves rows between
    // items): copied only once a reorder has moved a row to another item, and from then on
    if (!withinItems) this.#crossPerItem = false;
    if (!this.#crossPerItem) {
      for (const cache of ws.cache.values()) {
        if (cache.self) continue;
        const block = cache.heads * ws.spec.encoderLength * cache.headDim * cache.elementBytes;
        gatherRows(stream, cache.buffers[0]!, ws.spareFor(cache), block, moved, rowIndices);
      }
    }
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    const ws = this.#ws;
    try {
      await ws.stream.synchronizeAsync();
    } finally {
      const { embed, first, later } = ws.spec;
      for (const g of [embed, first, later]) g?.release(this.#leaseOwner);
      await this.#pool.release(ws);
      this.#onDispose(this);
    }
  }
}

/**
 * Row r of `buffer` becomes the old row sources[r], for the rows in `moved`: gathered into `scratch` first (a row
 * may be both read and overwritten), then copied back, runs of consecutive rows as one copy.
 */
function gatherRows(stream: CudaStream, buffer: DeviceBuffer, scratch: DeviceBuffer, block: number, moved: readonly number[], sources: Int32Array): void {
  for (const r of moved) stream.copyDeviceToDevice(scratch, buffer, block, r * block, sources[r]! * block);
  for (let i = 0; i < moved.length; ) {
    let j = i + 1;
    while (j < moved.length && moved[j] === moved[j - 1]! + 1) j++;
    stream.copyDeviceToDevice(buffer, scratch, (j - i) * block, moved[i]! * block, moved[i]! * block);
    i = j;
  }
}

/** The encoder outputs, repeated per beam as HF's _expand_inputs_for_generation does, converted to the engine's type, into the workspace. */
async function upload(ws: DecoderWorkspace, hidden: Tensor, mask: Tensor, numBeams: number): Promise<void> {
  const { rows, first } = ws.spec;
  const hiddenType = first.io.get("encoder_hidden_states")!.type;
  let hiddenData: TensorData = hidden.data;
  if (hidden.type !== hiddenType) {
    if (hidden.type === "float32" && hiddenType === "float16") hiddenData = float32ToFloat16(hidden.data as Float32Array);
    else if (hidden.type === "float16" && hiddenType === "float32") hiddenData = Float32Array.from(hidden.data as Uint16Array, fromHalf);
    else throw new FlorenceError("ENGINE_INPUT_INVALID", `cannot feed ${hidden.type} encoder states to a decoder engine that takes ${hiddenType}`);
  }
  const hiddenRow = hiddenData.byteLength / hidden.dims[0]!;
  const maskRow = mask.data.byteLength / mask.dims[0]!;
  const staging = ws.encoderHost;
  // the previous generation's steps may still read this memory (zero-copy) or its copies (staging)
  await ws.stream.synchronizeAsync();
  const bytes = new Uint8Array(staging.buffer, 0, staging.bytes);
  const hiddenBytes = new Uint8Array(hiddenData.buffer, hiddenData.byteOffset, hiddenData.byteLength);
  const maskBytes = new Uint8Array(mask.data.buffer, mask.data.byteOffset, mask.data.byteLength);
  for (let r = 0; r < rows; r++) {
    const item = Math.floor(r / numBeams);
    bytes.set(hiddenBytes.subarray(item * hiddenRow, (item + 1) * hiddenRow), r * hiddenRow);
    bytes.set(maskBytes.subarray(item * maskRow, (item + 1) * maskRow), rows * hiddenRow + r * maskRow);
  }
  if (ws.hidden.device && ws.mask.device) {
    ws.stream.copyHostToDevice(ws.hidden.device, staging, rows * hiddenRow);
    ws.stream.copyHostToDevice(ws.mask.device, staging, rows * maskRow, 0, rows * hiddenRow);
    await ws.stream.synchronizeAsync();
  }
}
