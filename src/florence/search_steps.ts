/**
 * What greedy and beam search share: the output shape, the logits processors a Florence-2 generation_config switches
 * on (HF's `_get_logits_processor` order: no-repeat-ngram, min-length, forced BOS, forced EOS), log-softmax in float32
 * and the vocabulary check.
 */
import { FlorenceError } from "../errors.ts";
import type { GenerationConfig } from "./generation_config.ts";

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
// Logits processors (HF `_get_logits_processor` order: no-repeat-ngram, min-length, forced BOS, forced EOS)

export const fround = Math.fround;
export const NEG_1E9 = -1e9; // exact in float32

interface Processors {
  ngram: number;
  minLength: number;
  eos: Int32Array;
  forcedBos: number;
  forcedEos: Int32Array | null;
  maxLength: number;
}

export function processorsFor(config: GenerationConfig): Processors {
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
export function processRow(p: Processors, scores: Float32Array, off: number, vocab: number, seq: Int32Array, seqOff: number, curLen: number): void {
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

export function isEos(eos: Int32Array, token: number): boolean {
  for (let i = 0; i < eos.length; i++) if (eos[i] === token) return true;
  return false;
}

/** log_softmax of one row, in place, as torch computes it in float32: x - max - log(sum(exp(x - max))). */
export function logSoftmaxInPlace(scores: Float32Array, off: number, vocab: number): void {
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

export function checkVocab(logits: Float32Array, rows: number, config: GenerationConfig): number {
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
