/**
 * The TensorRT decoder: DecoderStep over the decoder_model (first step) and decoder_with_past_model (later steps)
 * engines, and embed_tokens where the decoders take embeddings, with the KV cache on the GPU.
 *
 * Everything a generation needs lives in a workspace (decoder_workspace.ts), allocated once for a geometry and kept
 * between generations; the engines are checked first (decoder_spec.ts). Per step only the token ids go up and the logits
 * come down — or, with zero-copy (Jetson), neither: TensorRT reads the ids and writes the logits in mapped host
 * memory.
 *
 * Addresses are a function of the step index alone: step k reads the self-attention past from buffer (k−1) mod 2
 * and writes its present to buffer k mod 2; beam reorders gather rows and copy them back into place. With an
 * execution context per step (sharing one activation block), each of the first `graphSteps` steps is captured as a
 * CUDA graph the first time it runs (step_graphs.ts) and replayed with one launch in later generations.
 */
import { type DecoderOptions, type DecoderStep, type Tensor, type TensorData } from "../engine.ts";
import { float32ToFloat16, fromHalf } from "../float16.ts";
import { FlorenceError } from "../../errors.ts";
import { PAST_KEY_VALUES, PRESENT } from "../kv_cache.ts";
import type { CudaStream, DeviceBuffer } from "./cuda.ts";
import type { Pointer } from "./ffi.ts";
import { decoderSpec } from "./decoder_spec.ts";
import { type DecoderWorkspace, type DecoderWorkspaces, type StepContexts } from "./decoder_workspace.ts";
import { type EngineShared, REBUILD, type TensorRtGraph, type TrtContext } from "./graph.ts";

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
          const match = PAST_KEY_VALUES.exec(name)!;
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
