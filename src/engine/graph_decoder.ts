/**
 * A DecoderStep over host graphs (engine.ts's seam): one token per row in, last-position logits out, with the KV
 * cache kept in host tensors between steps (onnx-community layout: embed_tokens + decoder_model_merged, or
 * decoder_model + decoder_with_past_model). Any engine whose graphs run on the host can create its decoders here;
 * the TensorRT engine keeps the cache on the GPU instead (tensorrt/tensorrt_decoder.ts).
 */
import { type DecoderOptions, type DecoderStep, elementCount, type Graph, type Tensor, type TensorType, tensor, type ValueInfo } from "./engine.ts";
import { float16ToFloat32, float32ToFloat16, fromHalf } from "./float16.ts";
import { FlorenceError } from "../errors.ts";
import { decoderGeometry, graphNamed, PAST_KEY_VALUES, pastNameFor, PRESENT } from "./kv_cache.ts";

type FloatArray = Float32Array | Uint16Array;

function convert(t: Tensor, to: TensorType | string): Tensor {
  if (t.type === to) return t;
  if (t.type === "float32" && to === "float16") return tensor("float16", t.dims, float32ToFloat16(t.data as Float32Array));
  if (t.type === "float16" && to === "float32") return tensor("float32", t.dims, float16ToFloat32(t.data as Uint16Array));
  throw new FlorenceError("ENGINE_INPUT_INVALID", `cannot feed a ${t.type} tensor where the decoder takes ${to}`, {
    fix: "use embed_tokens, encoder_model and decoder graphs of one precision",
  });
}

/** [b, ...] → [b × times, ...], each row repeated `times` times consecutively. */
function repeatRows(t: Tensor, times: number): Tensor {
  if (times === 1) return t;
  const batch = t.dims[0]!;
  const block = elementCount(t.dims.slice(1));
  // same element type in and out; the casts only name one member of the TensorData union
  const src = t.data as Float32Array;
  const out = new (src.constructor as Float32ArrayConstructor)(src.length * times);
  for (let b = 0; b < batch; b++) {
    const row = src.subarray(b * block, (b + 1) * block);
    for (let j = 0; j < times; j++) out.set(row, (b * times + j) * block);
  }
  return tensor(t.type as TensorType, [batch * times, ...t.dims.slice(1)], out);
}

class GraphDecoder implements DecoderStep {
  readonly rows: number;
  readonly #numBeams: number;
  readonly #embed: Graph | undefined;
  readonly #first: Graph;
  readonly #later: Graph;
  readonly #hidden: Tensor;
  readonly #mask: Tensor;
  readonly #ids: BigInt64Array;
  readonly #idsTensor: Tensor;
  readonly #useCache: [Tensor, Tensor];
  readonly #emptyPast = new Map<string, Tensor>();
  /** Self-attention cache, by past input name; replaced every step. */
  readonly #selfCache = new Map<string, Tensor>();
  /** Cross-attention cache from the first step, by past input name. */
  readonly #crossCache = new Map<string, Tensor>();
  readonly #presentToPast = new Map<string, { past: string; cross: boolean } | null>();
  readonly #firstFeeds: Record<string, Tensor> = {};
  readonly #laterFeeds: Record<string, Tensor> = {};
  #steps = 0;
  #disposed = false;
  #logits: Float32Array | undefined;
  #scratch32: Float32Array | undefined;
  #scratch16: Uint16Array | undefined;

  constructor(options: DecoderOptions, embed: Graph | undefined, first: Graph, later: Graph) {
    const { rows, numBeams } = decoderGeometry(options);
    const hidden = options.encoderHiddenStates;
    const mask = options.encoderAttentionMask;
    this.#numBeams = numBeams;
    this.rows = rows;
    this.#embed = embed;
    this.#first = first;
    this.#later = later;
    const hiddenType = first.inputs.find((i) => i.name === "encoder_hidden_states")?.type ?? hidden.type;
    this.#hidden = repeatRows(convert(hidden, hiddenType), numBeams);
    this.#mask = repeatRows(mask, numBeams);
    this.#ids = new BigInt64Array(this.rows);
    this.#idsTensor = tensor("int64", [this.rows, 1], this.#ids);
    this.#useCache = [tensor("bool", [1], new Uint8Array([0])), tensor("bool", [1], new Uint8Array([1]))];

    for (const graph of new Set([first, later])) {
      for (const input of graph.inputs) {
        const past = PAST_KEY_VALUES.exec(input.name);
        if (past) {
          if (!this.#emptyPast.has(input.name)) this.#emptyPast.set(input.name, this.#emptyCache(graph, input, options.config));
          continue;
        }
        if (!["encoder_attention_mask", "encoder_hidden_states", "inputs_embeds", "input_ids", "use_cache_branch"].includes(input.name)) {
          throw new FlorenceError("MODEL_FILE_INVALID", `decoder graph ${graph.name} (${graph.path}) takes an input ${input.name} that Florence-2 decoding does not provide`, {
            fix: "use a decoder exported in the onnx-community layout (scripts/python/florence_export.py)",
          });
        }
        if (input.name === "inputs_embeds" && !embed) {
          throw new FlorenceError("MODEL_FILE_MISSING", `decoder graph ${graph.name} takes inputs_embeds, but embed_tokens is not loaded`, {
            fix: "load onnx/embed_tokens.onnx with the decoder",
          });
        }
      }
    }
    if (!later.inputs.some((i) => PAST_KEY_VALUES.test(i.name))) {
      throw new FlorenceError("MODEL_FILE_INVALID", `decoder graph ${later.name} (${later.path}) has no past_key_values inputs`, {
        fix: "use decoder_model_merged.onnx, or decoder_model.onnx with decoder_with_past_model.onnx",
      });
    }
  }

  #emptyCache(graph: Graph, input: ValueInfo, config: DecoderOptions["config"]): Tensor {
    const shape = input.shape;
    const heads = typeof shape[1] === "number" && shape[1] > 0 ? shape[1] : config?.decoderAttentionHeads;
    const headDim = typeof shape[3] === "number" && shape[3] > 0 ? shape[3] : heads && config?.dModel ? config.dModel / heads : undefined;
    if (!heads || !headDim || !Number.isInteger(headDim)) {
      throw new FlorenceError("MODEL_FILE_INVALID", `decoder graph ${graph.name}: cannot tell the shape of ${input.name} [${shape.join(", ")}]`, {
        fix: "pass the text config (decoderAttentionHeads, dModel) when creating the decoder",
      });
    }
    return tensor(input.type as TensorType, [this.rows, heads, 0, headDim]);
  }

  #check(): void {
    if (this.#disposed) throw new FlorenceError("DISPOSED", "this decoder was disposed", { fix: "create a new decoder for each generation" });
  }

  async next(tokens: Int32Array): Promise<Float32Array> {
    this.#check();
    if (tokens.length !== this.rows) {
      throw new FlorenceError("INVALID_ARGUMENT", `the decoder has ${this.rows} rows, got ${tokens.length} tokens`);
    }
    for (let r = 0; r < this.rows; r++) this.#ids[r] = BigInt(tokens[r]!);
    const first = this.#steps === 0;
    const graph = first ? this.#first : this.#later;
    const feeds = first ? this.#firstFeeds : this.#laterFeeds;
    let embeds: Tensor | undefined;
    for (const input of graph.inputs) {
      const name = input.name;
      if (name === "inputs_embeds") {
        if (!embeds) {
          const out = await this.#embed!.run({ input_ids: this.#idsTensor });
          embeds = convert(out["inputs_embeds"] ?? Object.values(out)[0]!, input.type);
        }
        feeds[name] = embeds;
      } else if (name === "input_ids") feeds[name] = this.#idsTensor;
      else if (name === "encoder_hidden_states") feeds[name] = this.#hidden;
      else if (name === "encoder_attention_mask") feeds[name] = this.#mask;
      else if (name === "use_cache_branch") feeds[name] = this.#useCache[first ? 0 : 1];
      else {
        const cached = first ? undefined : name.includes(".encoder.") ? this.#crossCache.get(name) : this.#selfCache.get(name);
        if (!first && !cached) {
          throw new FlorenceError("MODEL_FILE_INVALID", `decoder graph ${this.#first.name} did not return the cache for ${name}`, {
            fix: "use decoder graphs from one onnx-community export",
          });
        }
        feeds[name] = cached ?? this.#emptyPast.get(name)!;
      }
    }
    // after the first step the cross-attention presents are placeholders: don't copy them out every step
    const out = first ? await graph.run(feeds) : await graph.run(feeds, this.#laterOutputs(graph));
    this.#checkDisposedDuringRun(out);
    for (const name in out) {
      const link = this.#pastFor(name);
      if (!link) continue;
      // after the first step the merged graph's encoder outputs are placeholders: the cross-attention cache stays
      if (!link.cross) this.#selfCache.set(link.past, out[name]!);
      else if (first) this.#crossCache.set(link.past, out[name]!);
    }
    this.#steps++;
    return this.#lastLogits(out["logits"], graph);
  }

  #laterOutputNames: string[] | undefined;

  #laterOutputs(graph: Graph): string[] {
    this.#laterOutputNames ??= graph.outputs.map((o) => o.name).filter((name) => !this.#pastFor(name)?.cross);
    return this.#laterOutputNames;
  }

  /** The past input a present output feeds, parsed once per name (every step returns the same names). */
  #pastFor(output: string): { past: string; cross: boolean } | null {
    let link = this.#presentToPast.get(output);
    if (link === undefined) {
      const present = PRESENT.exec(output);
      link = present ? { past: pastNameFor(output), cross: present[2] === "encoder" } : null;
      this.#presentToPast.set(output, link);
    }
    return link;
  }

  #checkDisposedDuringRun(out: Record<string, Tensor>): void {
    if (!this.#disposed) return;
    for (const value of Object.values(out)) (value as { dispose?: () => void }).dispose?.();
    this.#check();
  }

  #lastLogits(logits: Tensor | undefined, graph: Graph): Float32Array {
    if (!logits || logits.dims.length !== 3 || logits.dims[0] !== this.rows) {
      throw new FlorenceError("ENGINE_FAILED", `decoder graph ${graph.name} returned logits ${logits ? `[${logits.dims.join(", ")}]` : "(none)"}`, {
        fix: `its logits output must be [${this.rows}, 1, vocab]`,
      });
    }
    const [, positions, vocab] = logits.dims as [number, number, number];
    if (positions === 1 && logits.type === "float32") return logits.data as Float32Array;
    const size = this.rows * vocab;
    if (!this.#logits || this.#logits.length !== size) this.#logits = new Float32Array(size);
    const out = this.#logits;
    for (let r = 0; r < this.rows; r++) {
      const from = (r * positions + positions - 1) * vocab;
      if (logits.type === "float32") out.set((logits.data as Float32Array).subarray(from, from + vocab), r * vocab);
      else for (let i = 0; i < vocab; i++) out[r * vocab + i] = fromHalf((logits.data as Uint16Array)[from + i]!);
    }
    return out;
  }

  async reorder(rowIndices: Int32Array): Promise<void> {
    this.#check();
    if (rowIndices.length !== this.rows) {
      throw new FlorenceError("INVALID_ARGUMENT", `reorder needs ${this.rows} row indices, got ${rowIndices.length}`);
    }
    let identity = true;
    let withinItems = true;
    for (let r = 0; r < this.rows; r++) {
      const source = rowIndices[r]!;
      if (source < 0 || source >= this.rows) throw new FlorenceError("INVALID_ARGUMENT", `reorder: row index ${source} is outside 0..${this.rows - 1}`);
      if (source !== r) identity = false;
      if (Math.floor(source / this.#numBeams) !== Math.floor(r / this.#numBeams)) withinItems = false;
    }
    if (identity || this.#steps === 0) return;
    for (const value of this.#selfCache.values()) this.#gatherRows(value, rowIndices);
    // the cross-attention cache is identical across one batch item's beams: only moves between items need it
    if (!withinItems) for (const value of this.#crossCache.values()) this.#gatherRows(value, rowIndices);
  }

  #gatherRows(t: Tensor, rowIndices: Int32Array): void {
    const data = t.data as FloatArray;
    const block = data.length / this.rows;
    let scratch: FloatArray;
    if (data instanceof Float32Array) {
      if (!this.#scratch32 || this.#scratch32.length < data.length) this.#scratch32 = new Float32Array(Math.max(data.length, 2 * (this.#scratch32?.length ?? 0)));
      scratch = this.#scratch32;
      this.#scratch32.set(data);
    } else if (data instanceof Uint16Array) {
      if (!this.#scratch16 || this.#scratch16.length < data.length) this.#scratch16 = new Uint16Array(Math.max(data.length, 2 * (this.#scratch16?.length ?? 0)));
      scratch = this.#scratch16;
      this.#scratch16.set(data);
    } else {
      throw new FlorenceError("ENGINE_FAILED", `cannot reorder a ${t.type} KV cache`, { fix: "use float32 or float16 decoder graphs" });
    }
    for (let r = 0; r < this.rows; r++) {
      const source = rowIndices[r]!;
      if (source === r) continue;
      (data as Float32Array).set((scratch as Float32Array).subarray(source * block, (source + 1) * block), r * block);
    }
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const value of [...this.#selfCache.values(), ...this.#crossCache.values()]) (value as { dispose?: () => void }).dispose?.();
    this.#selfCache.clear();
    this.#crossCache.clear();
    this.#scratch32 = undefined;
    this.#scratch16 = undefined;
    this.#logits = undefined;
  }
}

/**
 * A decoder over host graphs. Takes the merged decoder when loaded (or when `use` says so), else the split pair;
 * embed_tokens turns tokens into the decoder's inputs_embeds.
 */
export async function createGraphDecoder(options: DecoderOptions): Promise<DecoderStep> {
  const merged = graphNamed(options.graphs, "decoder_model_merged");
  const first = graphNamed(options.graphs, "decoder_model");
  const withPast = graphNamed(options.graphs, "decoder_with_past_model");
  const embed = graphNamed(options.graphs, "embed_tokens");
  const split = first && withPast ? ([first, withPast] as const) : undefined;
  let chosen: readonly [Graph, Graph] | undefined;
  if (options.use === "split") chosen = split;
  else if (options.use === "merged") chosen = merged ? [merged, merged] : undefined;
  else chosen = merged ? [merged, merged] : split;
  if (!chosen) {
    const wanted = options.use === "split" ? "decoder_model and decoder_with_past_model" : options.use === "merged" ? "decoder_model_merged" : "decoder_model_merged (or decoder_model and decoder_with_past_model)";
    throw new FlorenceError("MODEL_FILE_MISSING", `no decoder graph to run: ${wanted} not loaded`, {
      fix: "load onnx/decoder_model_merged.onnx, or onnx/decoder_model.onnx with onnx/decoder_with_past_model.onnx",
    });
  }
  return new GraphDecoder(options, embed, chosen[0], chosen[1]);
}
