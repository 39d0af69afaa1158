/**
 * A Florence-2 model folder as users get it (onnx-community layout): which files exist, what the configs say.
 * Accepts config.json in both the Microsoft remote-code form and the HF-native form (transformers >= 4.56),
 * processor_config.json (image processor nested) or preprocessor_config.json (flat).
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { FlorenceError } from "../errors.ts";

export const PRECISIONS = ["fp32", "fp16", "quantized", "int8", "uint8", "q4", "q4f16", "bnb4"] as const;
export type Precision = (typeof PRECISIONS)[number];

export const GRAPH_NAMES = ["vision_encoder", "embed_tokens", "encoder_model", "decoder_model_merged", "decoder_model", "decoder_with_past_model"] as const;
export type GraphName = (typeof GRAPH_NAMES)[number];

/** The text model's shape, whichever config form it came from. */
export interface TextModelConfig {
  dModel: number;
  vocabSize: number;
  encoderLayers: number;
  decoderLayers: number;
  decoderAttentionHeads: number;
  decoderStartTokenId: number;
  bosTokenId: number;
  eosTokenId: number;
  padTokenId: number;
}

export interface ModelConfig {
  /** "hf-native" (model_type florence2 with a bart text_config) or "remote-code" (florence2_language / davit). */
  form: "hf-native" | "remote-code";
  text: TextModelConfig;
  imageTokenId: number | undefined;
  /** The raw config.json, for generation defaults that remote-code repositories keep in text_config. */
  raw: Record<string, unknown>;
}

export interface ModelFiles {
  dir: string;
  /** A short name for logs and MQTT payloads: the folder's last component. */
  id: string;
  config: ModelConfig;
  generationConfig: Record<string, unknown>;
  /** The image processor settings (flat), from processor_config.json or preprocessor_config.json. */
  imageProcessor: Record<string, unknown>;
  imageProcessorSource: string;
  /** post_processor_config from processor_config.json when present (HF-native). */
  postProcessorConfig: Record<string, unknown> | undefined;
  tokenizerPath: string;
  tokenizerConfigPath: string | undefined;
  precision: Precision;
  graphs: Partial<Record<GraphName, string>>;
  /** Precisions with a complete set of graphs in onnx/. */
  availablePrecisions: Precision[];
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

export async function readJsonFile(path: string, what: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (cause) {
    throw new FlorenceError("MODEL_FILE_MISSING", `${what} not found: ${path}`, {
      fix: "point --model at a Florence-2 folder in the onnx-community layout (config.json, tokenizer.json, onnx/*.onnx)",
      cause,
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new FlorenceError("MODEL_FILE_INVALID", `${path} is not valid JSON (${(cause as Error).message})`, {
      fix: `expected ${what}; download the file again`,
      cause,
    });
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new FlorenceError("MODEL_FILE_INVALID", `${path} must hold a JSON object (${what})`, { fix: "download the file again" });
  }
  return value as Record<string, unknown>;
}

function integer(obj: Record<string, unknown>, key: string, source: string, fallback?: number): number {
  const value = obj[key] ?? fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
    throw new FlorenceError("MODEL_FILE_INVALID", `${source}: "${key}" must be a non-negative integer, got ${JSON.stringify(value)}`, {
      fix: "this does not look like a Florence-2 config.json",
    });
  }
  return value;
}

export function parseModelConfig(raw: Record<string, unknown>, source: string): ModelConfig {
  const text = raw["text_config"];
  if (text === null || typeof text !== "object") {
    throw new FlorenceError("MODEL_FILE_INVALID", `${source}: no "text_config" object`, {
      fix: "expected a Florence-2 config.json (model_type florence2) with text_config and vision_config",
    });
  }
  const t = text as Record<string, unknown>;
  const textType = t["model_type"];
  const form = textType === "florence2_language" ? "remote-code" : "hf-native";
  const src = `${source} text_config`;
  const dModel = integer(t, "d_model", src);
  const heads = integer(t, "decoder_attention_heads", src);
  if (heads === 0 || dModel % heads !== 0) {
    throw new FlorenceError("MODEL_FILE_INVALID", `${src}: d_model ${dModel} is not divisible by decoder_attention_heads ${heads}`);
  }
  return {
    form,
    text: {
      dModel,
      vocabSize: integer(t, "vocab_size", src, raw["vocab_size"] as number | undefined),
      encoderLayers: integer(t, "encoder_layers", src),
      decoderLayers: integer(t, "decoder_layers", src),
      decoderAttentionHeads: heads,
      decoderStartTokenId: integer(t, "decoder_start_token_id", src, 2),
      bosTokenId: integer(t, "bos_token_id", src, 0),
      eosTokenId: integer(t, "eos_token_id", src, 2),
      padTokenId: integer(t, "pad_token_id", src, 1),
    },
    imageTokenId: typeof raw["image_token_id"] === "number" ? (raw["image_token_id"] as number) : undefined,
    raw,
  };
}

/** Generation defaults for remote-code folders without generation_config.json: they sit in text_config. */
function generationDefaultsFromConfig(config: ModelConfig): Record<string, unknown> {
  const t = (config.raw["text_config"] ?? {}) as Record<string, unknown>;
  const keys = ["num_beams", "early_stopping", "no_repeat_ngram_size", "max_length", "length_penalty", "forced_bos_token_id", "forced_eos_token_id", "decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id"];
  const out: Record<string, unknown> = {};
  for (const key of keys) if (key in t) out[key] = t[key];
  return out;
}

function graphFile(name: GraphName, precision: Precision): string {
  return precision === "fp32" ? `${name}.onnx` : `${name}_${precision}.onnx`;
}

function completePrecisions(files: Set<string>): Precision[] {
  return PRECISIONS.filter((p) => {
    const has = (g: GraphName) => files.has(graphFile(g, p));
    const decoder = has("decoder_model_merged") || (has("decoder_model") && has("decoder_with_past_model"));
    return has("vision_encoder") && has("embed_tokens") && has("encoder_model") && decoder;
  });
}

export async function locateModelFiles(dir: string, precision: Precision = "fp32"): Promise<ModelFiles> {
  if (!(PRECISIONS as readonly string[]).includes(precision)) {
    throw new FlorenceError("INVALID_ARGUMENT", `unknown precision ${JSON.stringify(precision)}`, { fix: `use one of ${PRECISIONS.join(", ")}` });
  }
  let info;
  try {
    info = await stat(dir);
  } catch (cause) {
    throw new FlorenceError("MODEL_FILE_MISSING", `model folder not found: ${dir}`, {
      fix: "pass --model with a folder holding config.json, tokenizer.json and onnx/*.onnx (e.g. a download of onnx-community/Florence-2-base-ft)",
      cause,
    });
  }
  if (!info.isDirectory()) {
    throw new FlorenceError("MODEL_FILE_MISSING", `--model must be a folder, got a file: ${dir}`, { fix: "pass the folder that holds config.json" });
  }
  const configPath = join(dir, "config.json");
  const config = parseModelConfig(await readJsonFile(configPath, "config.json"), configPath);

  const generationPath = join(dir, "generation_config.json");
  const generationConfig = (await exists(generationPath)) ? await readJsonFile(generationPath, "generation_config.json") : generationDefaultsFromConfig(config);

  let imageProcessor: Record<string, unknown>;
  let imageProcessorSource: string;
  let postProcessorConfig: Record<string, unknown> | undefined;
  const processorPath = join(dir, "processor_config.json");
  const preprocessorPath = join(dir, "preprocessor_config.json");
  const processor = (await exists(processorPath)) ? await readJsonFile(processorPath, "processor_config.json") : undefined;
  if (processor && typeof processor["image_processor"] === "object" && processor["image_processor"] !== null) {
    imageProcessor = processor["image_processor"] as Record<string, unknown>;
    imageProcessorSource = `${processorPath} image_processor`;
  } else if (await exists(preprocessorPath)) {
    imageProcessor = await readJsonFile(preprocessorPath, "preprocessor_config.json");
    imageProcessorSource = preprocessorPath;
  } else {
    throw new FlorenceError("MODEL_FILE_MISSING", `neither ${processorPath} (with "image_processor") nor ${preprocessorPath} exists`, {
      fix: "the model folder needs the image processor settings; download preprocessor_config.json or processor_config.json with the model",
    });
  }
  if (processor && typeof processor["post_processor_config"] === "object" && processor["post_processor_config"] !== null) {
    postProcessorConfig = processor["post_processor_config"] as Record<string, unknown>;
  }

  const tokenizerPath = join(dir, "tokenizer.json");
  if (!(await exists(tokenizerPath))) {
    throw new FlorenceError("MODEL_FILE_MISSING", `tokenizer.json not found: ${tokenizerPath}`, { fix: "download tokenizer.json with the model" });
  }
  const tokenizerConfigPath = join(dir, "tokenizer_config.json");

  const onnxDir = join(dir, "onnx");
  let names: string[];
  try {
    names = await readdir(onnxDir);
  } catch (cause) {
    throw new FlorenceError("MODEL_FILE_MISSING", `no onnx/ folder in ${dir}`, {
      fix: "download the ONNX graphs (onnx/vision_encoder.onnx, embed_tokens, encoder_model, decoder_model_merged) or export them with scripts/python/florence_export.py",
      cause,
    });
  }
  const files = new Set(names);
  const availablePrecisions = completePrecisions(files);
  if (!availablePrecisions.includes(precision)) {
    const missing = GRAPH_NAMES.slice(0, 4).map((g) => graphFile(g, precision)).filter((f) => !files.has(f));
    throw new FlorenceError("MODEL_FILE_MISSING", `precision ${precision} is incomplete in ${onnxDir}: missing ${missing.join(", ")}`, {
      fix: availablePrecisions.length ? `use --precision ${availablePrecisions.join(" | ")}, or download the missing files` : "download the model's onnx/ graphs",
    });
  }
  const graphs: Partial<Record<GraphName, string>> = {};
  for (const name of GRAPH_NAMES) {
    const file = graphFile(name, precision);
    if (files.has(file)) graphs[name] = join(onnxDir, file);
  }
  const id = dir.replace(/[\\/]+$/, "").split(/[\\/]/).pop() ?? dir;
  return {
    dir,
    id,
    config,
    generationConfig,
    imageProcessor,
    imageProcessorSource,
    postProcessorConfig,
    tokenizerPath,
    tokenizerConfigPath: (await exists(tokenizerConfigPath)) ? tokenizerConfigPath : undefined,
    precision,
    graphs,
    availablePrecisions,
  };
}
