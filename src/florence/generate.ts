/**
 * Text generation as Hugging Face transformers 5.17 `generate` does it for Florence-2 (an encoder-decoder): greedy
 * search (`_sample` without sampling) and the vectorized beam search (`_beam_search`), with the logits processors a
 * Florence-2 generation_config switches on (no_repeat_ngram_size, min_length, forced BOS/EOS) in HF's order.
 *
 * Pure algorithm: the model is behind a `DecoderStep` (decoder.ts) that turns one token per row into logits.
 * Float32 arithmetic is reproduced where HF compares scores (beam scores, length penalty) so that ties and
 * near-ties resolve as they do in PyTorch.
 */
import { describeValue, FlorenceError } from "../errors.ts";
import type { DecoderStep } from "../engine/engine.ts";

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

export interface GenerationOutput {
  /** HF `generate(...).sequences`: each row starts with decoder_start_token_id; rows that end early are padded. */
  sequences: number[][];
  /** Beam search only: HF `sequences_scores` (summed log-probabilities / generated_length ** length_penalty). */
  sequencesScores?: number[];
  /**
   * tokenLogprobs[i][t] belongs to sequences[i][t + 1]: log_softmax of the processed scores at that token (greedy:
   * processors applied to the raw logits, as HF's `scores`; beam: HF's processed beam log-probabilities, along the
   * returned beam's path). Padding after a row's end holds 0.
   */
  tokenLogprobs: number[][];
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

/**
 * HF's merge of a model's generation_config.json with `generate(**kwargs)`: kwargs win, then the file's non-null
 * values, then HF's global defaults. Lengths follow `_prepare_generated_length` for an encoder-decoder, whose
 * decoder input is the single decoder_start_token_id: max_new_tokens wins over max_length
 * (max_length = max_new_tokens + 1); with neither set anywhere max_length is 20 + 1.
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

  // the call's value (null included: it unsets), else the file's non-null value
  const pick = (key: string): { value: unknown; origin: Origin } | undefined => {
    if (call[key] !== undefined) return { value: call[key], origin: callOrigin };
    if (file[key] !== undefined && file[key] !== null) return { value: file[key], origin: fileOrigin };
    return undefined;
  };
  const required = (key: string, fallback: unknown): { value: unknown; origin: Origin } => {
    const got = pick(key);
    if (got && got.value === null) throw invalid(got.origin, key, "set (null is not allowed)", null);
    return got ?? { value: fallback, origin: fileOrigin };
  };
  const nullable = <T>(key: string, parse: (origin: Origin, key: string, value: unknown) => T): T | null => {
    const got = pick(key);
    return got === undefined || got.value === null ? null : parse(got.origin, key, got.value);
  };

  const numBeamsEntry = required("num_beams", 1);
  const numBeams = integerAtLeast(numBeamsEntry.origin, "num_beams", numBeamsEntry.value, 1);

  const penaltyEntry = required("length_penalty", 1.0);
  if (typeof penaltyEntry.value !== "number" || !Number.isFinite(penaltyEntry.value)) {
    throw invalid(penaltyEntry.origin, "length_penalty", "a finite number", penaltyEntry.value);
  }
  const lengthPenalty = penaltyEntry.value;

  const earlyEntry = required("early_stopping", false);
  if (earlyEntry.value !== true && earlyEntry.value !== false && earlyEntry.value !== "never") {
    throw invalid(earlyEntry.origin, "early_stopping", 'true, false or "never"', earlyEntry.value);
  }
  const earlyStopping = earlyEntry.value as EarlyStopping;

  const ngramEntry = required("no_repeat_ngram_size", 0);
  const noRepeatNgramSize = integerAtLeast(ngramEntry.origin, "no_repeat_ngram_size", ngramEntry.value, 0);

  const eos = nullable("eos_token_id", tokenIds);
  const eosTokenIds = eos ?? [];
  const forcedBosTokenId = nullable("forced_bos_token_id", tokenId);
  const forcedEosTokenIds = nullable("forced_eos_token_id", tokenIds);
  const bosTokenId = nullable("bos_token_id", tokenId);
  const pad = nullable("pad_token_id", tokenId);
  // HF `_prepare_special_tokens`: pad falls back to the first EOS id; decoder start to bos
  const padTokenId = pad ?? (eosTokenIds.length > 0 ? eosTokenIds[0]! : null);
  const decoderStart = nullable("decoder_start_token_id", tokenId) ?? bosTokenId;
  if (decoderStart === null) {
    throw new FlorenceError("INVALID_ARGUMENT", `${source}: decoder_start_token_id (or bos_token_id) has to be set for encoder-decoder generation`, {
      fix: "add decoder_start_token_id to generation_config.json (Florence-2 uses 2)",
    });
  }

  // the decoder's input before generating is [decoder_start_token_id]: length 1
  const inputLength = 1;
  const maxNew = nullable("max_new_tokens", (o, k, v) => integerAtLeast(o, k, v, 1));
  const maxLengthEntry = pick("max_length");
  if (maxLengthEntry && maxLengthEntry.value === null && call["max_length"] !== undefined && maxNew === null) {
    throw invalid(callOrigin, "max_length", "set when max_new_tokens is not (null is not allowed)", null);
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

  const minNew = nullable("min_new_tokens", (o, k, v) => integerAtLeast(o, k, v, 0));
  const minLengthEntry = required("min_length", 0);
  const minLengthValue = integerAtLeast(minLengthEntry.origin, "min_length", minLengthEntry.value, 0);
  const minLength = minNew !== null ? minNew + inputLength : minLengthValue;

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

// ---------------------------------------------------------------------------------------------------------------
// Logits processors (HF `_get_logits_processor` order: no-repeat-ngram, min-length, forced BOS, forced EOS)

const fround = Math.fround;
const NEG_1E9 = -1e9; // exact in float32

interface Processors {
  ngram: number;
  minLength: number;
  eos: Int32Array;
  forcedBos: number;
  forcedEos: Int32Array | null;
  maxLength: number;
}

function processorsFor(config: GenerationConfig): Processors {
  return {
    ngram: config.noRepeatNgramSize,
    minLength: config.eosTokenIds.length > 0 ? config.minLength : 0,
    eos: Int32Array.from(config.eosTokenIds),
    forcedBos: config.forcedBosTokenId ?? -1,
    forcedEos: config.forcedEosTokenIds ? Int32Array.from(config.forcedEosTokenIds) : null,
    maxLength: config.maxLength,
  };
}

/** Applies the processors in place to one row of scores, given that row's sequence so far (curLen tokens). */
function processRow(p: Processors, scores: Float32Array, off: number, vocab: number, seq: Int32Array, seqOff: number, curLen: number): void {
  // the forced processors run last and overwrite the whole row, so the first one that fires decides (EOS after BOS)
  if (p.forcedEos !== null && curLen === p.maxLength - 1) {
    scores.fill(-Infinity, off, off + vocab);
    for (let i = 0; i < p.forcedEos.length; i++) scores[off + p.forcedEos[i]!] = 0;
    return;
  }
  if (p.forcedBos >= 0 && curLen === 1) {
    scores.fill(-Infinity, off, off + vocab);
    scores[off + p.forcedBos] = 0;
    return;
  }
  const n = p.ngram;
  if (n > 0 && curLen >= n) {
    // a window whose first n-1 tokens equal the last n-1 tokens bans its last token
    const prefix = seqOff + curLen - n + 1;
    for (let start = seqOff; start + n <= seqOff + curLen; start++) {
      let match = true;
      for (let j = 0; j < n - 1; j++) {
        if (seq[start + j] !== seq[prefix + j]) {
          match = false;
          break;
        }
      }
      if (match) scores[off + seq[start + n - 1]!] = -Infinity;
    }
  }
  if (curLen < p.minLength) {
    for (let i = 0; i < p.eos.length; i++) scores[off + p.eos[i]!] = -Infinity;
  }
}

function isEos(eos: Int32Array, token: number): boolean {
  for (let i = 0; i < eos.length; i++) if (eos[i] === token) return true;
  return false;
}

/** log_softmax of one row, in place, as torch computes it in float32: x - max - log(sum(exp(x - max))). */
function logSoftmaxInPlace(scores: Float32Array, off: number, vocab: number): void {
  const end = off + vocab;
  let max = -Infinity;
  for (let i = off; i < end; i++) if (scores[i]! > max) max = scores[i]!;
  let sum = 0;
  for (let i = off; i < end; i++) sum += Math.exp(scores[i]! - max);
  const logSum = fround(Math.log(sum));
  for (let i = off; i < end; i++) scores[i] = fround(fround(scores[i]! - max) - logSum);
}

// ---------------------------------------------------------------------------------------------------------------
// Search

function checkVocab(logits: Float32Array, rows: number, config: GenerationConfig): number {
  const vocab = logits.length / rows;
  if (!Number.isInteger(vocab) || vocab <= 0) {
    throw new FlorenceError("ENGINE_FAILED", `the decoder returned ${logits.length} logits for ${rows} rows`, {
      fix: "the decoder graph's logits output must be [rows, 1, vocab]",
    });
  }
  const ids: [string, number | null][] = [
    ["decoder_start_token_id", config.decoderStartTokenId],
    ["forced_bos_token_id", config.forcedBosTokenId],
    ["pad_token_id", config.padTokenId],
    ...config.eosTokenIds.map((id): [string, number] => ["eos_token_id", id]),
    ...(config.forcedEosTokenIds ?? []).map((id): [string, number] => ["forced_eos_token_id", id]),
  ];
  for (const [key, id] of ids) {
    if (id !== null && id >= vocab) {
      throw new FlorenceError("INVALID_ARGUMENT", `${key} ${id} is outside the model's vocabulary of ${vocab} tokens`, {
        fix: "use the generation_config.json that came with the model",
      });
    }
  }
  return vocab;
}

/**
 * Runs HF generation over a decoder whose rows are batchSize × config.numBeams (each batch item's beams
 * consecutive). Greedy when numBeams is 1, beam search otherwise.
 */
export async function generate(decoder: DecoderStep, batchSize: number, config: GenerationConfig): Promise<GenerationOutput> {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new FlorenceError("INVALID_ARGUMENT", `batch size must be a positive integer, got ${describeValue(batchSize)}`);
  }
  if (!Number.isInteger(config.numBeams) || config.numBeams < 1) {
    throw new FlorenceError("INVALID_ARGUMENT", `numBeams must be a positive integer, got ${describeValue(config.numBeams)}`, {
      fix: "build the config with resolveGenerationConfig",
    });
  }
  if (!Number.isInteger(config.maxLength) || config.maxLength < 2) {
    throw new FlorenceError("INVALID_ARGUMENT", `maxLength must be an integer >= 2 (it counts decoder_start_token_id), got ${describeValue(config.maxLength)}`, {
      fix: "build the config with resolveGenerationConfig",
    });
  }
  if (decoder.rows !== batchSize * config.numBeams) {
    throw new FlorenceError("INVALID_ARGUMENT", `the decoder has ${decoder.rows} rows, but batch ${batchSize} × num_beams ${config.numBeams} needs ${batchSize * config.numBeams}`, {
      fix: "create the decoder with the same numBeams as the generation config",
    });
  }
  return config.numBeams === 1 ? greedySearch(decoder, batchSize, config) : beamSearch(decoder, batchSize, config);
}

async function greedySearch(decoder: DecoderStep, batch: number, config: GenerationConfig): Promise<GenerationOutput> {
  const processors = processorsFor(config);
  const maxLength = config.maxLength;
  const eos = processors.eos;
  // HF pads finished rows only when an EOS stopping criterion exists, with pad_token_id or else the first EOS id
  const pad = config.padTokenId ?? eos[0] ?? 0;
  const sequences = new Int32Array(batch * maxLength);
  const logprobs = new Float32Array(batch * maxLength);
  const unfinished = new Uint8Array(batch).fill(1);
  const tokens = new Int32Array(batch).fill(config.decoderStartTokenId);
  for (let r = 0; r < batch; r++) sequences[r * maxLength] = config.decoderStartTokenId;
  let open = batch;
  let curLen = 1;
  let vocab = 0;
  while (open > 0) {
    const logits = await decoder.next(tokens);
    if (vocab === 0) vocab = checkVocab(logits, batch, config);
    for (let r = 0; r < batch; r++) {
      const seqOff = r * maxLength;
      if (!unfinished[r]) {
        tokens[r] = pad;
        sequences[seqOff + curLen] = pad;
        continue;
      }
      const off = r * vocab;
      processRow(processors, logits, off, vocab, sequences, seqOff, curLen);
      // torch.argmax: the first maximum
      let best = -Infinity;
      let bestToken = 0;
      for (let i = 0; i < vocab; i++) {
        if (logits[off + i]! > best) {
          best = logits[off + i]!;
          bestToken = i;
        }
      }
      // the token's log-probability (the confidence score): log-sum-exp over the row, skipping terms below
      // e^-40 of the largest, whose sum stays under vocab · 4e-18 (far below float32 resolution)
      let sum = 0;
      const floor = best - 40;
      for (let i = off; i < off + vocab; i++) {
        const x = logits[i]!;
        if (x > floor) sum += Math.exp(x - best);
      }
      tokens[r] = bestToken;
      sequences[seqOff + curLen] = bestToken;
      logprobs[seqOff + curLen] = fround(-Math.log(sum));
    }
    curLen++;
    for (let r = 0; r < batch; r++) {
      if (unfinished[r] && (curLen >= maxLength || isEos(eos, tokens[r]!))) {
        unfinished[r] = 0;
        open--;
      }
    }
  }

  const out: GenerationOutput = { sequences: [], tokenLogprobs: [] };
  for (let r = 0; r < batch; r++) {
    const seqOff = r * maxLength;
    const row = Array.from(sequences.subarray(seqOff, seqOff + curLen));
    const lps = Array.from(logprobs.subarray(seqOff + 1, seqOff + curLen));
    out.sequences.push(row);
    out.tokenLogprobs.push(lps);
  }
  return out;
}

/** torch's comparator for topk(largest=True): NaN above everything, then `>`. */
function above(a: number, b: number): boolean {
  return a > b || (a !== a && b === b);
}

/**
 * torch.topk(largest=True, sorted=True) on the CPU, down to the order of equal values: PyTorch's TopKImpl.h runs
 * libstdc++'s std::partial_sort when k·64 <= n, else std::nth_element and std::sort of the first k-1, over
 * (value, index) pairs compared by value alone. Those algorithms are not stable, so ties (forced tokens, equal
 * float16 logits) come out in their order, reproduced here step for step. Positions are indices into the queue.
 */
class TorchTopK {
  readonly values: Float32Array;
  readonly indices: Int32Array;
  #streamed = 0;
  #k = 0;

  constructor(capacity: number) {
    this.values = new Float32Array(capacity);
    this.indices = new Int32Array(capacity);
  }

  /** Orders the first n queued pairs so that positions 0..k-1 hold torch's top k. */
  select(n: number, k: number): void {
    if (k * 64 <= n) this.#partialSort(0, k, n);
    else {
      this.#nthElement(0, k - 1, n);
      this.#sort(0, k - 1);
    }
  }

  /** The partial_sort path fed one pair at a time, for n too large to queue: positions past k are never read again. */
  beginStream(k: number): void {
    this.#streamed = 0;
    this.#k = k;
  }

  push(value: number, index: number): void {
    const k = this.#k;
    const at = this.#streamed++;
    if (at < k) {
      this.values[at] = value;
      this.indices[at] = index;
      if (at === k - 1) this.#makeHeap(0, k);
    } else if (above(value, this.values[0]!)) {
      // __pop_heap(first, middle, i): the heap top goes to position i (never read again), the pair sifts in
      this.#adjustHeap(0, 0, k, value, index);
    }
  }

  endStream(): void {
    this.#sortHeap(0, this.#k);
  }

  #swap(a: number, b: number): void {
    const v = this.values[a]!;
    const i = this.indices[a]!;
    this.values[a] = this.values[b]!;
    this.indices[a] = this.indices[b]!;
    this.values[b] = v;
    this.indices[b] = i;
  }

  #move(from: number, to: number): void {
    this.values[to] = this.values[from]!;
    this.indices[to] = this.indices[from]!;
  }

  #pushHeap(first: number, hole: number, top: number, value: number, index: number): void {
    let parent = ((hole - 1) / 2) | 0;
    while (hole > top && above(this.values[first + parent]!, value)) {
      this.#move(first + parent, first + hole);
      hole = parent;
      parent = ((hole - 1) / 2) | 0;
    }
    this.values[first + hole] = value;
    this.indices[first + hole] = index;
  }

  #adjustHeap(first: number, hole: number, len: number, value: number, index: number): void {
    const top = hole;
    let child = hole;
    while (child < (((len - 1) / 2) | 0)) {
      child = 2 * (child + 1);
      if (above(this.values[first + child]!, this.values[first + child - 1]!)) child--;
      this.#move(first + child, first + hole);
      hole = child;
    }
    if ((len & 1) === 0 && child === (((len - 2) / 2) | 0)) {
      child = 2 * (child + 1);
      this.#move(first + child - 1, first + hole);
      hole = child - 1;
    }
    this.#pushHeap(first, hole, top, value, index);
  }

  #popHeap(first: number, last: number, result: number): void {
    const value = this.values[result]!;
    const index = this.indices[result]!;
    this.#move(first, result);
    this.#adjustHeap(first, 0, last - first, value, index);
  }

  #makeHeap(first: number, last: number): void {
    const len = last - first;
    if (len < 2) return;
    for (let parent = ((len - 2) / 2) | 0; ; parent--) {
      this.#adjustHeap(first, parent, len, this.values[first + parent]!, this.indices[first + parent]!);
      if (parent === 0) return;
    }
  }

  #sortHeap(first: number, last: number): void {
    while (last - first > 1) {
      last--;
      this.#popHeap(first, last, last);
    }
  }

  #heapSelect(first: number, middle: number, last: number): void {
    this.#makeHeap(first, middle);
    for (let i = middle; i < last; i++) if (above(this.values[i]!, this.values[first]!)) this.#popHeap(first, middle, i);
  }

  #partialSort(first: number, middle: number, last: number): void {
    this.#heapSelect(first, middle, last);
    this.#sortHeap(first, middle);
  }

  #unguardedLinearInsert(last: number): void {
    const value = this.values[last]!;
    const index = this.indices[last]!;
    let next = last - 1;
    while (above(value, this.values[next]!)) {
      this.#move(next, last);
      last = next;
      next--;
    }
    this.values[last] = value;
    this.indices[last] = index;
  }

  #insertionSort(first: number, last: number): void {
    if (first === last) return;
    for (let i = first + 1; i < last; i++) {
      if (above(this.values[i]!, this.values[first]!)) {
        const value = this.values[i]!;
        const index = this.indices[i]!;
        this.values.copyWithin(first + 1, first, i);
        this.indices.copyWithin(first + 1, first, i);
        this.values[first] = value;
        this.indices[first] = index;
      } else this.#unguardedLinearInsert(i);
    }
  }

  #finalInsertionSort(first: number, last: number): void {
    if (last - first > 16) {
      this.#insertionSort(first, first + 16);
      for (let i = first + 16; i < last; i++) this.#unguardedLinearInsert(i);
    } else this.#insertionSort(first, last);
  }

  #moveMedianToFirst(result: number, a: number, b: number, c: number): void {
    const v = this.values;
    if (above(v[a]!, v[b]!)) {
      if (above(v[b]!, v[c]!)) this.#swap(result, b);
      else if (above(v[a]!, v[c]!)) this.#swap(result, c);
      else this.#swap(result, a);
    } else if (above(v[a]!, v[c]!)) this.#swap(result, a);
    else if (above(v[b]!, v[c]!)) this.#swap(result, c);
    else this.#swap(result, b);
  }

  #unguardedPartitionPivot(first: number, last: number): number {
    const mid = first + (((last - first) / 2) | 0);
    this.#moveMedianToFirst(first, first + 1, mid, last - 1);
    const pivot = first;
    let lo = first + 1;
    let hi = last;
    for (;;) {
      while (above(this.values[lo]!, this.values[pivot]!)) lo++;
      hi--;
      while (above(this.values[pivot]!, this.values[hi]!)) hi--;
      if (!(lo < hi)) return lo;
      this.#swap(lo, hi);
      lo++;
    }
  }

  #introsortLoop(first: number, last: number, depth: number): void {
    while (last - first > 16) {
      if (depth === 0) {
        this.#partialSort(first, last, last);
        return;
      }
      depth--;
      const cut = this.#unguardedPartitionPivot(first, last);
      this.#introsortLoop(cut, last, depth);
      last = cut;
    }
  }

  #sort(first: number, last: number): void {
    if (first === last) return;
    this.#introsortLoop(first, last, 2 * (31 - Math.clz32(last - first)));
    this.#finalInsertionSort(first, last);
  }

  #nthElement(first: number, nth: number, last: number): void {
    if (first === last || nth === last) return;
    let depth = 2 * (31 - Math.clz32(last - first));
    while (last - first > 3) {
      if (depth === 0) {
        this.#heapSelect(first, nth + 1, last);
        this.#swap(first, nth);
        return;
      }
      depth--;
      const cut = this.#unguardedPartitionPivot(first, last);
      if (cut <= nth) first = cut;
      else last = cut;
    }
    this.#insertionSort(first, last);
  }
}

/** HF `_beam_search` (transformers 5): top-K continuations, running beams, finished beams, early-stop heuristic. */
async function beamSearch(decoder: DecoderStep, batch: number, config: GenerationConfig): Promise<GenerationOutput> {
  const processors = processorsFor(config);
  const beams = config.numBeams;
  const rows = batch * beams;
  const maxLength = config.maxLength;
  const promptLength = 1;
  const eos = processors.eos;
  const lengthPenalty = config.lengthPenalty;
  const earlyStopping = config.earlyStopping;
  // candidates kept per step, so that num_beams of them continue even if many just ended
  const keep = Math.max(2, 1 + eos.length) * beams;
  // HF: `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1` (a pad id of 0 counts as unset)
  const fill = eos.length > 0 ? (config.padTokenId ? config.padTokenId : eos[0]!) : -1;

  let runSeq = new Int32Array(rows * maxLength);
  let nextRunSeq = new Int32Array(rows * maxLength);
  let runLp = new Float32Array(rows * maxLength);
  let nextRunLp = new Float32Array(rows * maxLength);
  let runScore = new Float32Array(rows);
  let nextRunScore = new Float32Array(rows);
  let finSeq = new Int32Array(rows * maxLength);
  let nextFinSeq = new Int32Array(rows * maxLength);
  let finLp = new Float32Array(rows * maxLength);
  let nextFinLp = new Float32Array(rows * maxLength);
  let finScore = new Float32Array(rows).fill(NEG_1E9);
  let nextFinScore = new Float32Array(rows);
  let finDone = new Uint8Array(rows);
  let nextFinDone = new Uint8Array(rows);
  let finLen = new Int32Array(rows);
  let nextFinLen = new Int32Array(rows);

  const candScore = new Float32Array(keep);
  const candBeam = new Int32Array(keep);
  const candToken = new Int32Array(keep);
  const candLp = new Float32Array(keep);
  const candHit = new Uint8Array(keep);
  const mergeScore = new Float32Array(beams + keep);
  const small = new TorchTopK(beams + keep);
  let candidates: TorchTopK | undefined;
  const unsatisfied = new Uint8Array(batch).fill(1);
  const tokens = new Int32Array(rows).fill(config.decoderStartTokenId);
  const reorder = new Int32Array(rows);

  for (let r = 0; r < rows; r++) {
    runSeq[r * maxLength] = config.decoderStartTokenId;
    finSeq[r * maxLength] = config.decoderStartTokenId;
    // only the first beam starts live, so the first step does not pick the same token num_beams times
    runScore[r] = r % beams === 0 ? 0 : NEG_1E9;
  }

  let curLen = promptLength;
  let vocab = 0;
  for (;;) {
    const logits = await decoder.next(tokens);
    if (vocab === 0) vocab = checkVocab(logits, rows, config);
    for (let r = 0; r < rows; r++) {
      logSoftmaxInPlace(logits, r * vocab, vocab);
      processRow(processors, logits, r * vocab, vocab, runSeq, r * maxLength, curLen);
    }

    let allHit = true;
    const pairs = beams * vocab;
    // torch.topk's partial_sort path streams; its nth_element path (few pairs) needs them all queued
    const streamed = keep * 64 <= pairs;
    candidates ??= new TorchTopK(streamed ? keep : pairs);
    for (let b = 0; b < batch; b++) {
      // top `keep` of (beam score + token log-prob) over beams × vocab, in torch.topk's order
      if (streamed) candidates.beginStream(keep);
      for (let beam = 0; beam < beams; beam++) {
        const row = b * beams + beam;
        const base = runScore[row]!;
        const off = row * vocab;
        if (streamed) {
          for (let t = 0; t < vocab; t++) candidates.push(fround(logits[off + t]! + base), beam * vocab + t);
        } else {
          for (let t = 0; t < vocab; t++) {
            candidates.values[beam * vocab + t] = fround(logits[off + t]! + base);
            candidates.indices[beam * vocab + t] = beam * vocab + t;
          }
        }
      }
      if (streamed) candidates.endStream();
      else candidates.select(pairs, keep);
      for (let k = 0; k < keep; k++) {
        const pair = candidates.indices[k]!;
        const beam = (pair / vocab) | 0;
        const token = pair - beam * vocab;
        candScore[k] = candidates.values[k]!;
        candBeam[k] = beam;
        candToken[k] = token;
        candLp[k] = logits[(b * beams + beam) * vocab + token]!;
        candHit[k] = curLen + 1 >= maxLength || isEos(eos, token) ? 1 : 0;
        if (!candHit[k]) allHit = false;
        // just-ended candidates must not continue
        small.values[k] = candHit[k] ? fround(candScore[k]! + NEG_1E9) : candScore[k]!;
        small.indices[k] = k;
      }

      // the running beams of the next step
      small.select(keep, beams);
      for (let j = 0; j < beams; j++) {
        const k = small.indices[j]!;
        const src = (b * beams + candBeam[k]!) * maxLength;
        const dst = (b * beams + j) * maxLength;
        nextRunSeq.set(runSeq.subarray(src, src + curLen), dst);
        nextRunSeq[dst + curLen] = candToken[k]!;
        nextRunLp.set(runLp.subarray(src, src + curLen), dst);
        nextRunLp[dst + curLen] = candLp[k]!;
        nextRunScore[b * beams + j] = small.values[j]!;
        reorder[b * beams + j] = b * beams + candBeam[k]!;
      }

      // the finished beams: the best num_beams of the kept ones and those that ended among the top num_beams now
      let full = earlyStopping === true;
      for (let s = 0; s < beams; s++) if (!finDone[b * beams + s]) full = false;
      const divisor = fround((curLen + 1 - promptLength) ** lengthPenalty);
      for (let s = 0; s < beams; s++) mergeScore[s] = finScore[b * beams + s]!;
      for (let k = 0; k < keep; k++) {
        let v = fround(candScore[k]! / divisor);
        if (full) v = fround(v + NEG_1E9);
        if (!unsatisfied[b]) v = fround(v + NEG_1E9);
        if (!(candHit[k] && k < beams)) v = fround(v + NEG_1E9);
        mergeScore[beams + k] = v;
      }
      for (let m = 0; m < beams + keep; m++) {
        small.values[m] = mergeScore[m]!;
        small.indices[m] = m;
      }
      small.select(beams + keep, beams);
      for (let j = 0; j < beams; j++) {
        const m = small.indices[j]!;
        const dstSlot = b * beams + j;
        const dst = dstSlot * maxLength;
        if (m < beams) {
          const srcSlot = b * beams + m;
          const length = promptLength + finLen[srcSlot]!;
          nextFinSeq.set(finSeq.subarray(srcSlot * maxLength, srcSlot * maxLength + length), dst);
          nextFinLp.set(finLp.subarray(srcSlot * maxLength, srcSlot * maxLength + length), dst);
          nextFinScore[dstSlot] = finScore[srcSlot]!;
          nextFinDone[dstSlot] = finDone[srcSlot]!;
          nextFinLen[dstSlot] = finLen[srcSlot]!;
        } else {
          const k = m - beams;
          const src = (b * beams + candBeam[k]!) * maxLength;
          nextFinSeq.set(runSeq.subarray(src, src + curLen), dst);
          nextFinSeq[dst + curLen] = candToken[k]!;
          nextFinLp.set(runLp.subarray(src, src + curLen), dst);
          nextFinLp[dst + curLen] = candLp[k]!;
          nextFinScore[dstSlot] = mergeScore[m]!;
          nextFinDone[dstSlot] = candHit[k] && k < beams ? 1 : 0;
          nextFinLen[dstSlot] = curLen + 1 - promptLength;
        }
      }
    }

    [runSeq, nextRunSeq] = [nextRunSeq, runSeq];
    [runLp, nextRunLp] = [nextRunLp, runLp];
    [runScore, nextRunScore] = [nextRunScore, runScore];
    [finSeq, nextFinSeq] = [nextFinSeq, finSeq];
    [finLp, nextFinLp] = [nextFinLp, finLp];
    [finScore, nextFinScore] = [nextFinScore, finScore];
    [finDone, nextFinDone] = [nextFinDone, finDone];
    [finLen, nextFinLen] = [nextFinLen, finLen];
    curLen++;

    // HF `_check_early_stop_heuristic`: can the best running beam still beat the worst finished one?
    const bestLength = earlyStopping === "never" && lengthPenalty > 0 ? maxLength - promptLength : curLen - promptLength;
    const bestDivisor = fround(bestLength ** lengthPenalty);
    let anyUnsatisfied = false;
    let allDone = true;
    for (let b = 0; b < batch; b++) {
      const best = fround(runScore[b * beams]! / bestDivisor);
      let worst = Infinity;
      for (let s = 0; s < beams; s++) worst = Math.min(worst, finScore[b * beams + s]!);
      let improvable = false;
      for (let s = 0; s < beams; s++) {
        if (!finDone[b * beams + s]) allDone = false;
        if (best > (finDone[b * beams + s] ? worst : NEG_1E9)) improvable = true;
      }
      if (!improvable) unsatisfied[b] = 0;
      if (unsatisfied[b]) anyUnsatisfied = true;
    }
    const openBeam = !(allDone && earlyStopping === true);
    if (!(anyUnsatisfied && openBeam && !allHit)) break;

    await decoder.reorder(reorder);
    for (let r = 0; r < rows; r++) tokens[r] = runSeq[r * maxLength + curLen - 1]!;
  }

  // the best finished beam of each batch item; the output is as long as the longest of them
  let generated = 0;
  for (let b = 0; b < batch; b++) generated = Math.max(generated, finLen[b * beams]!);
  const outLength = promptLength + generated;
  const out: GenerationOutput = { sequences: [], sequencesScores: [], tokenLogprobs: [] };
  for (let b = 0; b < batch; b++) {
    const slot = b * beams;
    const length = promptLength + finLen[slot]!;
    const sequence = new Array<number>(outLength).fill(fill);
    const lps = new Array<number>(outLength - 1).fill(0);
    for (let t = 0; t < length; t++) sequence[t] = finSeq[slot * maxLength + t]!;
    for (let t = 1; t < length; t++) lps[t - 1] = finLp[slot * maxLength + t]!;
    out.sequences.push(sequence);
    out.tokenLogprobs.push(lps);
    out.sequencesScores!.push(finScore[slot]!);
  }
  return out;
}
