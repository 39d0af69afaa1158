/**
 * Florence-2 end to end: image → pixel values → vision encoder → (prompt embeds) → encoder → generation → parse.
 * Backend-agnostic: graphs run through the Engine seam. One vision pass serves any number of tasks on a frame.
 */
import { performance } from "node:perf_hooks";
import { DECODER_GRAPHS, type Engine, type Graph, type Tensor, int64Tensor, tensor } from "../engine/engine.ts";
import { FlorenceError } from "../errors.ts";
import { type GenerationConfig, generate, resolveGenerationConfig } from "./generate.ts";
import { decodeImage, type RgbImage, resizeWithSharp } from "./image.ts";
import { type GraphName, locateModelFiles, type ModelFiles, type Precision } from "./model_files.ts";
import { type PostProcessOptions, postProcessGeneration } from "./postprocess.ts";
import { type ImageProcessorConfig, parseImageProcessorConfig, pixelValues, type ResizeMode } from "./preprocess.ts";
import { createResizeCache, type ResizeCache } from "./resize.ts";
import { float32ToFloat16 } from "../engine/float16.ts";
import { constructPrompt, type TaskToken } from "./tasks.ts";
import { Tokenizer } from "./tokenizer.ts";

export interface LoadOptions {
  precision?: Precision;
  /**
   * The engine that runs the graphs. The model disposes the graphs it loads; it disposes the engine too only when
   * `ownsEngine` is true (loadFlorence's models do).
   */
  engine: Engine;
  /** Dispose `engine` with the model (default false: the caller keeps it, e.g. to load another model on it). */
  ownsEngine?: boolean;
  resize?: ResizeMode;
  exifOrientation?: "ignore" | "apply";
  /** Largest accepted input image, in pixels (decoding is refused above it). */
  maxPixels?: number;
  /**
   * Let the engine answer embed_tokens on the host where it can with the same values (ONNX Runtime: a plain float32
   * Gather as a table lookup in JavaScript instead of a session call per decoder step); default true. See the
   * engine's GraphLoadOptions.hostLookup.
   */
  hostEmbedding?: boolean;
}

export interface TaskRequest {
  task: string;
  /** Text input for grounding/detection tasks, or a region "<loc_a><loc_b><loc_c><loc_d>" / "x1,y1,x2,y2" in pixels. */
  text?: string | undefined;
}

export interface GenerateOptions {
  numBeams?: number;
  maxNewTokens?: number;
  /** Any other generation_config key (HF names), e.g. { length_penalty: 0.8 }. */
  generation?: Record<string, unknown>;
  postprocess?: PostProcessOptions;
}

export interface StageTimings {
  decode_ms?: number;
  preprocess_ms?: number;
  vision_ms?: number;
  encoder_ms: number;
  decoder_ms: number;
  parse_ms: number;
  total_ms: number;
}

export interface TaskResult {
  task: string;
  text_input: string | undefined;
  /** Raw generated text with special tokens kept, as HF batch_decode(skip_special_tokens=False). */
  text: string;
  /** The whole sequence as HF generate returns it (starting with decoder_start_token_id). */
  generated_ids: number[];
  /** Tokens the encoder read: the image's feature rows and the prompt's ids. */
  prompt_tokens: number;
  /** `{ [task]: … }` in the shape of HF post_process_generation (or the NVIDIA shape on request). */
  result: Record<string, unknown>;
  image_size: { width: number; height: number };
  timings_ms: StageTimings;
}

/** The output of one vision-encoder pass: reusable for every task on the same image. */
export interface VisionFeatures {
  readonly features: Tensor;
  readonly imageSize: { width: number; height: number };
  readonly timings: { decode_ms?: number; preprocess_ms: number; vision_ms: number };
}

const MAX_CACHED_PROMPTS = 64;

function now(): number {
  return performance.now();
}

function concatRows(a: Tensor, b: Tensor): Tensor {
  // [1, A, D] ++ [1, B, D] -> [1, A+B, D]; both of the graph's float type
  const [, rowsA, dim] = a.dims as [number, number, number];
  const rowsB = b.dims[1]!;
  if (a.type !== b.type || b.dims[2] !== dim) {
    throw new FlorenceError("ENGINE_FAILED", `image features ${a.type}[${a.dims}] and prompt embeddings ${b.type}[${b.dims}] do not concatenate`, {
      fix: "the model's vision_encoder and embed_tokens graphs disagree on hidden size or precision; use graphs from one export",
    });
  }
  const out = tensor(a.type, [1, rowsA + rowsB, dim]);
  (out.data as Float32Array).set(a.data as Float32Array, 0);
  (out.data as Float32Array).set(b.data as Float32Array, rowsA * dim);
  return out;
}

function sliceRow(features: Tensor, index: number): Tensor {
  const [, rows, dim] = features.dims as [number, number, number];
  const size = rows * dim;
  return tensor(features.type, [1, rows, dim], (features.data as Float32Array).subarray(index * size, (index + 1) * size));
}

export class Florence2 {
  readonly files: ModelFiles;
  readonly tokenizer: Tokenizer;
  readonly imageProcessor: ImageProcessorConfig;
  readonly engine: Engine;
  readonly #graphs: Map<GraphName, Graph>;
  readonly #options: LoadOptions;
  /** A frame's pixel values are being read from the resize cache's memory (see encodeImages). */
  #pixelsInPlace = false;
  // coefficient tables and scratch buffers: camera frames repeat one size, so nothing is allocated per frame
  readonly #resizeCache: ResizeCache = createResizeCache();
  readonly #promptIds = new Map<string, readonly number[]>();
  #disposed = false;

  private constructor(files: ModelFiles, tokenizer: Tokenizer, imageProcessor: ImageProcessorConfig, graphs: Map<GraphName, Graph>, options: LoadOptions) {
    this.files = files;
    this.tokenizer = tokenizer;
    this.imageProcessor = imageProcessor;
    this.engine = options.engine;
    this.#graphs = graphs;
    this.#options = options;
  }

  static async load(dir: string, options: LoadOptions): Promise<Florence2> {
    const files = await locateModelFiles(dir, options.precision ?? "fp32");
    const tokenizer = await Tokenizer.fromFiles(dir);
    const imageProcessor = parseImageProcessorConfig(files.imageProcessor, files.imageProcessorSource);
    const graphs = new Map<GraphName, Graph>();
    // the engine picks the merged decoder or the split pair
    const layout = options.engine.decoderLayout(files.graphs.decoder_model_merged !== undefined);
    const wanted = ["vision_encoder", "embed_tokens", "encoder_model", ...DECODER_GRAPHS[layout]] as GraphName[];
    try {
      for (const name of wanted) {
        // split decoders the folder lacks may have been cut from the merged graph (an engine's build): name its file
        const path = files.graphs[name] ?? files.graphs.decoder_model_merged!;
        graphs.set(name, await options.engine.loadGraph(name, path, { hostLookup: options.hostEmbedding !== false }));
      }
    } catch (error) {
      await Promise.all([...graphs.values()].map((g) => g.dispose()));
      throw error;
    }
    return new Florence2(files, tokenizer, imageProcessor, graphs, options);
  }

  #graph(name: GraphName): Graph {
    if (this.#disposed) throw new FlorenceError("DISPOSED", "this Florence2 model was disposed", { fix: "load it again with Florence2.load" });
    const graph = this.#graphs.get(name);
    if (!graph) throw new FlorenceError("ENGINE_FAILED", `graph ${name} is not loaded`);
    return graph;
  }

  /** Decodes (when given bytes or a path), preprocesses and runs the vision encoder once. */
  async encodeImage(image: RgbImage | Uint8Array | string): Promise<VisionFeatures> {
    return (await this.encodeImages([image]))[0]!;
  }

  /** One vision-encoder pass over a batch of images. */
  async encodeImages(images: readonly (RgbImage | Uint8Array | string)[]): Promise<VisionFeatures[]> {
    const vision = this.#graph("vision_encoder");
    let t0 = now();
    const decoded: RgbImage[] = [];
    for (const image of images) {
      decoded.push(
        typeof image === "string" || image instanceof Uint8Array
          ? await decodeImage(image, { exifOrientation: this.#options.exifOrientation ?? "ignore", ...(this.#options.maxPixels ? { maxPixels: this.#options.maxPixels } : {}) })
          : image,
      );
    }
    const decodeMs = images.some((i) => typeof i === "string" || i instanceof Uint8Array) ? now() - t0 : undefined;
    t0 = now();
    const { height, width } = this.imageProcessor.size;
    const plane = 3 * height * width;
    const batch = decoded.length;
    const resize = this.#options.resize ?? "pil";
    // one frame: the vision encoder reads the planes where the resize kernels wrote them (no 7 MB copy). That memory
    // stays untouched until the run is over: a call that overlaps it resizes with a cache of its own.
    const inPlace = batch === 1 && !this.#pixelsInPlace;
    const cache = inPlace || !this.#pixelsInPlace ? this.#resizeCache : createResizeCache();
    if (inPlace) this.#pixelsInPlace = true;
    let out;
    let preprocessMs: number;
    try {
      let pixelData: Float32Array;
      if (inPlace) {
        const source = resize === "fast" ? await resizeWithSharp(decoded[0]!, width, height) : decoded[0]!;
        pixelData = pixelValues(source, this.imageProcessor, { resize, cache, view: true });
      } else {
        // a batch (or a call overlapping another) gets its own array: calls may overlap while the engine runs
        pixelData = new Float32Array(plane * batch);
        for (let i = 0; i < batch; i++) {
          const source = resize === "fast" ? await resizeWithSharp(decoded[i]!, width, height) : decoded[i]!;
          pixelValues(source, this.imageProcessor, { resize, cache }, pixelData.subarray(i * plane, (i + 1) * plane));
        }
      }
      preprocessMs = now() - t0;
      t0 = now();
      const inputType = vision.inputs[0]?.type === "float16" ? "float16" : "float32";
      const dims = [batch, 3, height, width];
      const pixels = inputType === "float16" ? tensor("float16", dims, float32ToFloat16(pixelData)) : tensor("float32", dims, pixelData);
      out = await vision.run({ [vision.inputs[0]!.name]: pixels });
    } finally {
      if (inPlace) this.#pixelsInPlace = false;
    }
    const features = out[vision.outputs[0]!.name]!;
    const visionMs = now() - t0;
    return decoded.map((img, i) => ({
      features: batch === 1 ? features : sliceRow(features, i),
      imageSize: { width: img.width, height: img.height },
      timings: { ...(decodeMs !== undefined ? { decode_ms: decodeMs / batch } : {}), preprocess_ms: preprocessMs / batch, vision_ms: visionMs / batch },
    }));
  }

  /** The prompt's token ids: `<s>` + HF's prompt text + `</s>` (HF puts the 577 <image> placeholders before them). */
  promptIds(request: TaskRequest, imageSize: { width: number; height: number }): number[] {
    const prompt = constructPrompt(request.task, request.text, imageSize);
    // a camera loop asks for the same few prompts every frame
    let ids = this.#promptIds.get(prompt);
    if (!ids) {
      ids = this.tokenizer.encode(`<s>${prompt}</s>`);
      if (this.#promptIds.size >= MAX_CACHED_PROMPTS) this.#promptIds.delete(this.#promptIds.keys().next().value!);
      this.#promptIds.set(prompt, ids);
    }
    return [...ids];
  }

  generationConfig(options: GenerateOptions = {}): GenerationConfig {
    const overrides: Record<string, unknown> = { ...(options.generation ?? {}) };
    if (options.numBeams !== undefined) overrides["num_beams"] = options.numBeams;
    if (options.maxNewTokens !== undefined) overrides["max_new_tokens"] = options.maxNewTokens;
    return resolveGenerationConfig(this.files.generationConfig, overrides, `${this.files.dir}/generation_config.json`);
  }

  /** Runs one task on precomputed vision features (several tasks on one frame share one vision pass). */
  async runTask(vision: VisionFeatures, request: TaskRequest, options: GenerateOptions = {}): Promise<TaskResult> {
    return (await this.runTaskBatch([vision], request, options))[0]!;
  }

  /** Runs one task on a batch of images' features: one encoder batch, one generation batch. */
  async runTaskBatch(visions: readonly VisionFeatures[], request: TaskRequest, options: GenerateOptions = {}): Promise<TaskResult[]> {
    const embed = this.#graph("embed_tokens");
    const encoder = this.#graph("encoder_model");
    const config = this.generationConfig(options);
    const started = now();
    let t0 = now();
    const batch = visions.length;
    const promptIds = visions.map((v) => this.promptIds(request, v.imageSize));
    const length = promptIds[0]!.length;
    if (promptIds.some((ids) => ids.length !== length)) {
      // region prompts quantise per image size; different sizes can give different prompt lengths
      return (await Promise.all(visions.map((v) => this.runTaskBatch([v], request, options)))).flat();
    }
    const rows: Tensor[] = [];
    for (let i = 0; i < batch; i++) {
      const embedded = (await embed.run({ input_ids: int64Tensor([1, length], promptIds[i]!) })).inputs_embeds!;
      rows.push(concatRows(visions[i]!.features, embedded));
    }
    const sequence = rows[0]!.dims[1]!;
    const hidden = rows[0]!.dims[2]!;
    const encoderInput = batch === 1 ? rows[0]! : tensor(rows[0]!.type, [batch, sequence, hidden]);
    if (batch > 1) rows.forEach((r, i) => (encoderInput.data as Float32Array).set(r.data as Float32Array, i * sequence * hidden));
    const mask = int64Tensor([batch, sequence], new Array(batch * sequence).fill(1));
    const encoded = (await encoder.run({ inputs_embeds: encoderInput, attention_mask: mask })).last_hidden_state!;
    const encoderMs = now() - t0;

    t0 = now();
    const decoder = await this.engine.createDecoder({
      graphs: this.#graphs,
      config: this.files.config.text,
      encoderHiddenStates: encoded,
      encoderAttentionMask: mask,
      numBeams: config.numBeams,
    });
    let generated;
    try {
      generated = await generate(decoder, batch, config);
    } finally {
      await decoder.dispose();
    }
    const decoderMs = now() - t0;

    const results: TaskResult[] = [];
    for (let i = 0; i < batch; i++) {
      t0 = now();
      const ids = generated.sequences[i]!;
      const text = this.tokenizer.decode(ids, { skipSpecialTokens: false });
      const wantScores = options.postprocess?.scores === true;
      const result = postProcessGeneration(text, request.task, visions[i]!.imageSize, {
        ...(this.files.postProcessorConfig ? { postProcessorConfig: this.files.postProcessorConfig } : {}),
        ...options.postprocess,
        ...(wantScores ? { tokens: { spans: this.tokenizer.decodeTokenSpans(ids).spans, logprobs: generated.tokenLogprobs[i]! } } : {}),
      });
      const parseMs = now() - t0;
      const v = visions[i]!;
      results.push({
        task: request.task,
        text_input: request.text,
        text,
        generated_ids: ids,
        prompt_tokens: sequence,
        result,
        image_size: v.imageSize,
        timings_ms: {
          ...(v.timings.decode_ms !== undefined ? { decode_ms: v.timings.decode_ms } : {}),
          preprocess_ms: v.timings.preprocess_ms,
          vision_ms: v.timings.vision_ms,
          encoder_ms: encoderMs / batch,
          decoder_ms: decoderMs / batch,
          parse_ms: parseMs,
          total_ms: (v.timings.decode_ms ?? 0) + v.timings.preprocess_ms + v.timings.vision_ms + (now() - started) / batch,
        },
      });
    }
    return results;
  }

  /** Several tasks on one image with one vision pass. */
  async infer(image: RgbImage | Uint8Array | string, requests: TaskRequest | readonly TaskRequest[], options: GenerateOptions = {}): Promise<TaskResult[]> {
    const vision = await this.encodeImage(image);
    const list = Array.isArray(requests) ? requests : [requests as TaskRequest];
    const results: TaskResult[] = [];
    for (const request of list) results.push(await this.runTask(vision, request, options));
    return results;
  }

  /** Releases the graphs this model loaded and, when it owns it (loadFlorence), its engine. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    const graphs = [...this.#graphs.values()];
    this.#graphs.clear();
    try {
      await Promise.all(graphs.map((g) => g.dispose()));
    } finally {
      if (this.#options.ownsEngine === true) await this.engine.dispose();
    }
  }

  /** `await using model = await loadFlorence(…)` disposes the model and everything below it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

export type { TaskToken };
