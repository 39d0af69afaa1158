/**
 * The backend seam. Florence-2 code names graphs (vision_encoder, embed_tokens, encoder_model, decoder…) and tensors;
 * it never knows which backend runs them. ONNX Runtime (CPU) and TensorRT (GPU, through koffi) implement this,
 * decoder included: generation drives a DecoderStep that the engine creates (KV cache naming: kv_cache.ts).
 */
import { FlorenceError } from "../errors.ts";

export type TensorType = "float32" | "float16" | "int64" | "int32" | "bool" | "uint8" | "int8";

export type TensorData = Float32Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array | Int8Array;

/** A host tensor. Backends may return objects with more fields (ORT tensors); only these are relied on. */
export interface Tensor {
  readonly type: TensorType;
  readonly dims: readonly number[];
  readonly data: TensorData;
}

export interface ValueInfo {
  readonly name: string;
  readonly type: TensorType | string;
  /** Numbers for fixed dimensions, names for symbolic ones; empty when unknown. */
  readonly shape: readonly (number | string)[];
}

export interface Graph {
  readonly name: string;
  readonly path: string;
  readonly inputs: readonly ValueInfo[];
  readonly outputs: readonly ValueInfo[];
  /**
   * Runs the graph. Missing or extra feeds, wrong types or ranks are refused with ENGINE_INPUT_INVALID.
   * `outputs` limits what comes back (a backend may still compute the rest); default: every output.
   */
  run(feeds: Readonly<Record<string, Tensor>>, outputs?: readonly string[]): Promise<Record<string, Tensor>>;
  dispose(): Promise<void>;
}

export type BackendName = "onnxruntime" | "tensorrt";

// ---------------------------------------------------------------------------------------------------------------
// The decoder: generation drives a DecoderStep; each engine says which decoder graphs it runs and creates the step.

/** One decoder over `rows` = batch × num_beams sequences (each batch item's beams consecutive). */
export interface DecoderStep {
  readonly rows: number;
  /**
   * Feeds one token per row and returns the logits at that position, [rows × vocab]. The caller may change the
   * array in place; it is valid until the next call.
   */
  next(tokens: Int32Array): Promise<Float32Array>;
  /** Beam search: row r continues from row rowIndices[r] (HF `reorder_cache`). A no-op for the identity. */
  reorder(rowIndices: Int32Array): Promise<void>;
  dispose(): Promise<void>;
}

/** Loaded graphs by their onnx-community names (embed_tokens, decoder_model_merged, decoder_model, decoder_with_past_model). */
export type DecoderGraphs = ReadonlyMap<string, Graph> | Readonly<Partial<Record<string, Graph>>>;

/** The merged decoder (one graph, an If on use_cache_branch) or the split pair (first step, later steps). */
export type DecoderLayout = "merged" | "split";

/** The graphs each layout loads, by onnx-community name. */
export const DECODER_GRAPHS: { readonly [L in DecoderLayout]: readonly string[] } = {
  merged: ["decoder_model_merged"],
  split: ["decoder_model", "decoder_with_past_model"],
};

export interface DecoderOptions {
  graphs: DecoderGraphs;
  /** The encoder's last_hidden_state, [batch, E, D]. */
  encoderHiddenStates: Tensor;
  /** int64 [batch, E]. */
  encoderAttentionMask: Tensor;
  /** Rows per batch item; the encoder outputs are repeated per beam as HF's `_expand_inputs_for_generation` does. */
  numBeams?: number;
  /** Attention geometry, used where the graphs leave it symbolic. */
  config?: { readonly decoderAttentionHeads?: number; readonly dModel?: number };
  /** Which decoder graphs to run when both forms are loaded; default: the engine's choice. */
  use?: DecoderLayout;
}

export interface GraphLoadOptions {
  /**
   * Let the engine answer a graph without running it where it can do so with the same values (ONNX Runtime: a
   * plain float32 embed_tokens as a table lookup in JavaScript); default true. False always runs the graph.
   */
  hostLookup?: boolean;
}

export interface Engine {
  readonly backend: BackendName;
  /** A human-readable line: backend, version, device, threads. */
  readonly description: string;
  /**
   * Where this engine's decoders keep the KV cache. "host": createDecoder runs the graphs it is given through
   * `Graph.run` (a wrapper around those graphs sees every step). "device": the engine keeps the cache in its own
   * memory and needs the very graphs it loaded.
   */
  readonly decoderCache: "host" | "device";
  /** Which decoder graphs to load for a model folder that has (or lacks) the merged decoder. */
  decoderLayout(hasMerged: boolean): DecoderLayout;
  /** Loads one graph file. Refused with DISPOSED after dispose(). */
  loadGraph(name: string, path: string, options?: GraphLoadOptions): Promise<Graph>;
  /** A decoder over graphs this engine loaded. Refused with DISPOSED after dispose(). */
  createDecoder(options: DecoderOptions): Promise<DecoderStep>;
  /** Releases every graph and decoder it made; afterwards loadGraph and createDecoder refuse work. */
  dispose(): Promise<void>;
}

/** The error every engine gives for work asked of it after dispose(). */
export function engineDisposed(backend: string): FlorenceError {
  return new FlorenceError("DISPOSED", `this ${backend} engine was disposed`, { fix: "create a new engine (or load the model again with loadFlorence)" });
}

const ELEMENT_TYPES: Record<TensorType, { new (length: number): TensorData }> = {
  float32: Float32Array,
  float16: Uint16Array,
  int64: BigInt64Array,
  int32: Int32Array,
  bool: Uint8Array,
  uint8: Uint8Array,
  int8: Int8Array,
};

export function elementCount(dims: readonly number[]): number {
  let count = 1;
  for (const d of dims) count *= d;
  return count;
}

export function tensor(type: TensorType, dims: readonly number[], data?: TensorData): Tensor {
  const count = elementCount(dims);
  const values = data ?? new ELEMENT_TYPES[type](count);
  if (values.length !== count) {
    throw new FlorenceError("ENGINE_INPUT_INVALID", `tensor of shape [${dims.join(", ")}] needs ${count} values, got ${values.length}`);
  }
  return { type, dims: [...dims], data: values };
}

export function int64Tensor(dims: readonly number[], values: ArrayLike<number>): Tensor {
  const data = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) data[i] = BigInt(values[i]!);
  return tensor("int64", dims, data);
}

/** Checks feeds against a graph's declared inputs; backends call this before running. */
export function checkFeeds(graph: Pick<Graph, "name" | "inputs">, feeds: Readonly<Record<string, Tensor>>): void {
  // runs before every graph run (decoder steps included): no allocation unless something is wrong
  let fedCount = 0;
  for (const _ in feeds) fedCount++;
  let complete = fedCount === graph.inputs.length;
  for (let i = 0; complete && i < graph.inputs.length; i++) complete = feeds[graph.inputs[i]!.name] !== undefined;
  if (!complete) {
    const expected = new Set(graph.inputs.map((i) => i.name));
    const missing = [...expected].filter((n) => feeds[n] === undefined);
    const extra = Object.keys(feeds).filter((n) => !expected.has(n));
    throw new FlorenceError(
      "ENGINE_INPUT_INVALID",
      `graph ${graph.name}: ${missing.length ? `missing inputs ${missing.join(", ")}` : ""}${missing.length && extra.length ? "; " : ""}${extra.length ? `unexpected inputs ${extra.join(", ")}` : ""}`,
      { fix: `it takes ${[...expected].join(", ")}` },
    );
  }
  for (const info of graph.inputs) {
    const fed = feeds[info.name]!;
    if (info.type !== fed.type) {
      throw new FlorenceError("ENGINE_INPUT_INVALID", `graph ${graph.name}: input ${info.name} must be ${info.type}, got ${fed.type}`);
    }
    const shape = info.shape;
    if (shape.length > 0 && shape.length !== fed.dims.length) {
      throw new FlorenceError(
        "ENGINE_INPUT_INVALID",
        `graph ${graph.name}: input ${info.name} must have rank ${shape.length} [${shape.join(", ")}], got [${fed.dims.join(", ")}]`,
      );
    }
    for (let axis = 0; axis < shape.length; axis++) {
      const d = shape[axis];
      if (typeof d === "number" && d > 0 && fed.dims[axis] !== d) {
        throw new FlorenceError("ENGINE_INPUT_INVALID", `graph ${graph.name}: input ${info.name} axis ${axis} must be ${d}, got ${fed.dims[axis]}`);
      }
    }
  }
}
