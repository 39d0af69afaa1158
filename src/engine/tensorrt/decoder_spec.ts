/**
 * What the TensorRT decoder checks before it allocates anything: that the decoder engines (decoder_model,
 * decoder_with_past_model, embed_tokens) fit together and with the encoder outputs, and the geometry of one
 * generation (rows, encoder length, vocabulary, KV capacity) they imply.
 */
import { type DecoderGraphs, type DecoderOptions, type TensorType } from "../engine.ts";
import { FlorenceError } from "../../errors.ts";
import { decoderGeometry, graphNamed, PAST_KEY_VALUES } from "../kv_cache.ts";
import { type EngineShared, REBUILD, TensorRtGraph } from "./graph.ts";

export function decoderEngineError(graph: string, message: string, fix: string): FlorenceError {
  return new FlorenceError("MODEL_FILE_INVALID", `decoder engine ${graph}: ${message}`, { fix });
}

/** The decoder's engines and the geometry of one generation, validated. */
export interface DecoderSpec {
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

function trtGraphNamed(graphs: DecoderGraphs, name: string): TensorRtGraph | undefined {
  const found: unknown = graphNamed(graphs, name);
  if (found && !(found instanceof TensorRtGraph)) throw new FlorenceError("INVALID_ARGUMENT", `graph ${name} is not a TensorRT graph`, { fix: "load every graph of the model with the same TensorRtEngine" });
  return found as TensorRtGraph | undefined;
}

/** Checks that the engines fit together and with the encoder outputs; throws what is wrong and how to rebuild. */
export function decoderSpec(shared: EngineShared, options: DecoderOptions): DecoderSpec {
  const first = trtGraphNamed(options.graphs, "decoder_model");
  const later = trtGraphNamed(options.graphs, "decoder_with_past_model");
  const embed = trtGraphNamed(options.graphs, "embed_tokens");
  if (!first || !later) {
    throw new FlorenceError("MODEL_FILE_MISSING", "the TensorRT decoder needs the decoder_model and decoder_with_past_model engines", {
      fix: `TensorRT cannot build the merged decoder (an If node); ${REBUILD} ${shared.modelDir ?? "DIR"} builds the split pair`,
    });
  }
  const { rows } = decoderGeometry(options);
  const [, encoderLength, hiddenSize] = options.encoderHiddenStates.dims as [number, number, number];
  const fix = `use decoder engines built from one onnx-community export: ${REBUILD} ${shared.modelDir ?? "DIR"}`;
  for (const g of [first, later]) {
    for (const t of g.io.values()) {
      if (!t.input) continue;
      if (PAST_KEY_VALUES.test(t.name)) continue;
      if (!["input_ids", "inputs_embeds", "encoder_hidden_states", "encoder_attention_mask"].includes(t.name)) throw decoderEngineError(g.name, `takes an input ${t.name} that Florence-2 decoding does not provide`, fix);
      if (t.name === "inputs_embeds" && !embed) throw new FlorenceError("MODEL_FILE_MISSING", `decoder engine ${g.name} takes inputs_embeds, but the embed_tokens engine is not loaded`, { fix: "load embed_tokens with the decoder" });
      if (t.name === "encoder_attention_mask" && t.type !== "int64") throw decoderEngineError(g.name, `encoder_attention_mask is ${t.type}, expected int64`, fix);
      if (t.name === "input_ids" && t.type !== "int64") throw decoderEngineError(g.name, `input_ids is ${t.type}, expected int64`, fix);
    }
    const logits = g.io.get("logits");
    if (!logits || logits.input || (logits.type !== "float32" && logits.type !== "float16")) throw decoderEngineError(g.name, "has no float logits output", fix);
  }
  if (!first.io.get("encoder_hidden_states")?.input) throw decoderEngineError(first.name, "does not take encoder_hidden_states", fix);
  if (![...later.io.values()].some((t) => t.input && PAST_KEY_VALUES.test(t.name))) throw decoderEngineError(later.name, "has no past_key_values inputs", fix);
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
  const anyPast = [...later.io.values()].find((t) => t.input && PAST_KEY_VALUES.exec(t.name)?.[2] === "decoder");
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
