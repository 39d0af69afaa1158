/**
 * generation_config.json (and generate() keyword arguments) → GenerationConfig, as HF's GenerationConfig reads them:
 * defaults, validation with the offending key and value, and the options this runtime refuses or ignores.
 */
import { describeValue, FlorenceError } from "../errors.ts";


export type EarlyStopping = boolean | "never";

/** A resolved generation config: HF's `GenerationConfig` after `_prepare_generation_config` and `_prepare_generated_length`. */
export interface GenerationConfig {
  /** Longest returned sequence, counting decoder_start_token_id (HF `max_length` after max_new_tokens is applied). */
  readonly maxLength: number;
  /** End-of-sequence is banned while the sequence (with decoder_start_token_id) is shorter than this. */
  readonly minLength: number;
  readonly numBeams: number;
  /** Beam scores are divided by generated_length ** lengthPenalty. */
  readonly lengthPenalty: number;
  readonly earlyStopping: EarlyStopping;
  /** 0: off. */
  readonly noRepeatNgramSize: number;
  readonly forcedBosTokenId: number | null;
  readonly forcedEosTokenIds: readonly number[] | null;
  /** Empty: generation only stops at maxLength. */
  readonly eosTokenIds: readonly number[];
  /** Pads rows that finished early; HF falls back to the first EOS id when unset. */
  readonly padTokenId: number | null;
  readonly bosTokenId: number | null;
  readonly decoderStartTokenId: number;
}

/** `generate(**kwargs)` keys, by their HF names, that change what greedy or beam search returns. */
export interface GenerationKwargs {
  max_length?: number;
  max_new_tokens?: number | null;
  min_length?: number;
  min_new_tokens?: number | null;
  num_beams?: number;
  length_penalty?: number;
  early_stopping?: EarlyStopping;
  no_repeat_ngram_size?: number;
  forced_bos_token_id?: number | null;
  forced_eos_token_id?: number | readonly number[] | null;
  eos_token_id?: number | readonly number[] | null;
  pad_token_id?: number | null;
  bos_token_id?: number | null;
  decoder_start_token_id?: number | null;
  do_sample?: boolean;
  num_return_sequences?: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration

/** HF's `GenerationConfig._get_default_generation_params()` for the keys used here. */
const DEFAULT_MAX_LENGTH = 20;

/** Keys that select behaviour this implementation does not have: refused unless they hold their no-op value. */
const UNSUPPORTED: Record<string, (value: unknown) => boolean> = {
  do_sample: (v) => v === true,
  num_return_sequences: (v) => v !== 1,
  repetition_penalty: (v) => v !== 1,
  encoder_repetition_penalty: (v) => v !== 1,
  encoder_no_repeat_ngram_size: (v) => v !== 0,
  bad_words_ids: (v) => v !== null,
  suppress_tokens: (v) => v !== null,
  begin_suppress_tokens: (v) => v !== null,
  sequence_bias: (v) => v !== null,
  exponential_decay_length_penalty: (v) => v !== null,
  renormalize_logits: (v) => v === true,
  remove_invalid_values: (v) => v === true,
  guidance_scale: (v) => v !== null && v !== 1,
  num_beam_groups: (v) => v !== 1,
  diversity_penalty: (v) => v !== 0,
  penalty_alpha: (v) => v !== null && v !== 0,
  constraints: (v) => v !== null,
  force_words_ids: (v) => v !== null,
  stop_strings: (v) => v !== null,
  max_time: (v) => v !== null,
  token_healing: (v) => v === true,
  watermarking_config: (v) => v !== null,
  prefix_allowed_tokens_fn: (v) => v !== null,
};

/** Keys HF accepts that do not change greedy or beam-search output (sampling knobs, output flags, metadata). */
const WITHOUT_EFFECT = new Set([
  "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff", "use_cache",
  "cache_implementation", "cache_config", "max_cache_len", "output_scores", "output_logits", "output_attentions",
  "output_hidden_states", "return_dict_in_generate", "transformers_version", "_from_model_config", "_commit_hash",
  "num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold", "assistant_lookbehind",
  "target_lookbehind", "is_assistant", "compile_config", "disable_compile", "low_memory", "prefill_chunk_size",
]);

const SUPPORTED = new Set([
  "max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams", "length_penalty", "early_stopping",
  "no_repeat_ngram_size", "forced_bos_token_id", "forced_eos_token_id", "eos_token_id", "pad_token_id", "bos_token_id",
  "decoder_start_token_id",
]);

interface Origin {
  /** Where a value came from, for messages: the generation_config.json path or "generate option". */
  where: string;
  fix: string;
}

function invalid(origin: Origin, key: string, expected: string, value: unknown): FlorenceError {
  return new FlorenceError("INVALID_ARGUMENT", `${origin.where}: ${key} must be ${expected}, got ${describeValue(value)}`, { fix: origin.fix });
}

function integerAtLeast(origin: Origin, key: string, value: unknown, min: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min) {
    throw invalid(origin, key, min === 0 ? "a non-negative integer" : `an integer >= ${min}`, value);
  }
  return value;
}

function tokenId(origin: Origin, key: string, value: unknown): number {
  return integerAtLeast(origin, key, value, 0);
}

function tokenIds(origin: Origin, key: string, value: unknown): number[] {
  if (typeof value === "number") return [tokenId(origin, key, value)];
  if (!Array.isArray(value) || value.length === 0) throw invalid(origin, key, "a token id or a non-empty list of token ids", value);
  return value.map((v) => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw invalid(origin, key, "a token id or a non-empty list of token ids", value);
    return v;
  });
}

function asRecord(value: unknown, origin: Origin): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new FlorenceError("INVALID_ARGUMENT", `${origin.where}: expected a JSON object of generation settings, got ${describeValue(value)}`, { fix: origin.fix });
  }
  return value as Record<string, unknown>;
}

/** A key's value after the merge, with where it came from. */
interface Setting {
  value: unknown;
  origin: Origin;
}

type Parse<T> = (origin: Origin, key: string, value: unknown) => T;

/** Reads keys from the merged settings: `pick` the call's value (null included: it unsets), else the file's non-null value. */
class SettingsReader {
  readonly #file: Record<string, unknown>;
  readonly #call: Record<string, unknown>;
  readonly fileOrigin: Origin;
  readonly callOrigin: Origin;

  constructor(file: Record<string, unknown>, call: Record<string, unknown>, fileOrigin: Origin, callOrigin: Origin) {
    this.#file = file;
    this.#call = call;
    this.fileOrigin = fileOrigin;
    this.callOrigin = callOrigin;
  }

  pick(key: string): Setting | undefined {
    if (this.#call[key] !== undefined) return { value: this.#call[key], origin: this.callOrigin };
    if (this.#file[key] !== undefined && this.#file[key] !== null) return { value: this.#file[key], origin: this.fileOrigin };
    return undefined;
  }

  /** The call sets `key` (null included). */
  inCall(key: string): boolean {
    return this.#call[key] !== undefined;
  }

  /** A key with an HF default that may not be unset. */
  required<T>(key: string, fallback: unknown, parse: Parse<T>): T {
    const got = this.pick(key);
    if (got && got.value === null) throw invalid(got.origin, key, "set (null is not allowed)", null);
    const { value, origin } = got ?? { value: fallback, origin: this.fileOrigin };
    return parse(origin, key, value);
  }

  /** A key that null (or absence) leaves unset. */
  nullable<T>(key: string, parse: Parse<T>): T | null {
    const got = this.pick(key);
    return got === undefined || got.value === null ? null : parse(got.origin, key, got.value);
  }
}

const positiveInteger: Parse<number> = (origin, key, value) => integerAtLeast(origin, key, value, 1);
const nonNegativeInteger: Parse<number> = (origin, key, value) => integerAtLeast(origin, key, value, 0);

const finiteNumber: Parse<number> = (origin, key, value) => {
  if (typeof value !== "number" || !Number.isFinite(value)) throw invalid(origin, key, "a finite number", value);
  return value;
};

const earlyStoppingValue: Parse<EarlyStopping> = (origin, key, value) => {
  if (value !== true && value !== false && value !== "never") throw invalid(origin, key, 'true, false or "never"', value);
  return value;
};

/** Refuses keys that select behaviour this runtime lacks (file and call) and, in the call, keys HF does not know. */
function refuseUnsupported(file: Record<string, unknown>, call: Record<string, unknown>, source: string): void {
  for (const [key, value] of Object.entries(file)) {
    if (value !== null && UNSUPPORTED[key]?.(value)) {
      throw new FlorenceError("INVALID_ARGUMENT", `${source}: ${key} = ${describeValue(value)} is not supported (greedy and beam search only)`, {
        fix: `override it in the generate options with its neutral value, or remove ${key} from generation_config.json`,
      });
    }
  }
  for (const [key, value] of Object.entries(call)) {
    if (value === undefined) continue;
    if (key in UNSUPPORTED) {
      if (value !== null && UNSUPPORTED[key]!(value)) {
        throw new FlorenceError("INVALID_ARGUMENT", `generate option ${key} = ${describeValue(value)} is not supported (greedy and beam search only)`, {
          fix: `leave ${key} out`,
        });
      }
      continue;
    }
    if (!SUPPORTED.has(key) && !WITHOUT_EFFECT.has(key)) {
      throw new FlorenceError("INVALID_ARGUMENT", `unknown generate option ${describeValue(key)}`, {
        fix: `use HF generation_config names: ${[...SUPPORTED].join(", ")}`,
      });
    }
  }
}

/**
 * HF `_prepare_generated_length` for an encoder-decoder whose decoder input is the single decoder_start_token_id:
 * max_new_tokens wins over max_length (max_length = max_new_tokens + 1); with neither set max_length is 20 + 1;
 * min_new_tokens likewise wins over min_length.
 */
function resolveLengths(read: SettingsReader): { maxLength: number; minLength: number } {
  // the decoder's input before generating is [decoder_start_token_id]: length 1
  const inputLength = 1;
  const maxNew = read.nullable("max_new_tokens", positiveInteger);
  const maxLengthEntry = read.pick("max_length");
  if (maxLengthEntry && maxLengthEntry.value === null && read.inCall("max_length") && maxNew === null) {
    throw invalid(read.callOrigin, "max_length", "set when max_new_tokens is not (null is not allowed)", null);
  }
  let maxLength: number;
  if (maxNew !== null) {
    if (maxLengthEntry && maxLengthEntry.value !== null) integerAtLeast(maxLengthEntry.origin, "max_length", maxLengthEntry.value, 1);
    maxLength = maxNew + inputLength;
  } else if (!maxLengthEntry || maxLengthEntry.value === null) {
    maxLength = DEFAULT_MAX_LENGTH + inputLength;
  } else {
    maxLength = integerAtLeast(maxLengthEntry.origin, "max_length", maxLengthEntry.value, 1);
    if (maxLength <= inputLength) {
      throw new FlorenceError(
        "INVALID_ARGUMENT",
        `${maxLengthEntry.origin.where}: max_length is ${maxLength}, but the decoder input (decoder_start_token_id) already has length ${inputLength}`,
        { fix: "set max_length >= 2, or better max_new_tokens" },
      );
    }
  }

  const minNew = read.nullable("min_new_tokens", nonNegativeInteger);
  const minLengthValue = read.required("min_length", 0, nonNegativeInteger);
  const minLength = minNew !== null ? minNew + inputLength : minLengthValue;
  return { maxLength, minLength };
}

/**
 * HF's merge of a model's generation_config.json with `generate(**kwargs)`: kwargs win, then the file's non-null
 * values, then HF's global defaults; lengths as resolveLengths says. Keys are read in HF's order, so the first
 * invalid one is the one reported.
 */
export function resolveGenerationConfig(
  generationConfigJson: unknown,
  overrides: Partial<GenerationKwargs> | Readonly<Record<string, unknown>> = {},
  source = "generation_config.json",
): GenerationConfig {
  const fileOrigin: Origin = { where: source, fix: "fix the value in generation_config.json or override it in the generate options" };
  const callOrigin: Origin = { where: "generate option", fix: "pass a valid value, or leave the option out to use the model's generation_config.json" };
  const file = asRecord(generationConfigJson, fileOrigin);
  const call = asRecord(overrides, callOrigin);
  refuseUnsupported(file, call, source);
  const read = new SettingsReader(file, call, fileOrigin, callOrigin);

  const numBeams = read.required("num_beams", 1, positiveInteger);
  const lengthPenalty = read.required("length_penalty", 1.0, finiteNumber);
  const earlyStopping = read.required("early_stopping", false, earlyStoppingValue);
  const noRepeatNgramSize = read.required("no_repeat_ngram_size", 0, nonNegativeInteger);
  const eosTokenIds = read.nullable("eos_token_id", tokenIds) ?? [];
  const forcedBosTokenId = read.nullable("forced_bos_token_id", tokenId);
  const forcedEosTokenIds = read.nullable("forced_eos_token_id", tokenIds);
  const bosTokenId = read.nullable("bos_token_id", tokenId);
  const pad = read.nullable("pad_token_id", tokenId);
  // HF `_prepare_special_tokens`: pad falls back to the first EOS id; decoder start to bos
  const padTokenId = pad ?? (eosTokenIds.length > 0 ? eosTokenIds[0]! : null);
  const decoderStart = read.nullable("decoder_start_token_id", tokenId) ?? bosTokenId;
  if (decoderStart === null) {
    throw new FlorenceError("INVALID_ARGUMENT", `${source}: decoder_start_token_id (or bos_token_id) has to be set for encoder-decoder generation`, {
      fix: "add decoder_start_token_id to generation_config.json (Florence-2 uses 2)",
    });
  }
  const { maxLength, minLength } = resolveLengths(read);

  return {
    maxLength,
    minLength,
    numBeams,
    lengthPenalty,
    earlyStopping,
    noRepeatNgramSize,
    forcedBosTokenId,
    forcedEosTokenIds,
    eosTokenIds,
    padTokenId,
    bosTokenId,
    decoderStartTokenId: decoderStart,
  };
}
