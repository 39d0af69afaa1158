/**
 * The finished hypotheses of HF's vectorized beam search (`_beam_search`'s `sequences`, `beam_scores`,
 * `is_sent_finished`, transformers 5.17): per batch item the best num_beams ended beams by length-penalised score,
 * merged with each step's ended candidates, in float32 where HF compares scores. Buffers are double-buffered and
 * allocated once: a step allocates nothing.
 */
import type { EarlyStopping } from "./generation_config.ts";
import { fround, type GenerationOutput, NEG_1E9 } from "./search_steps.ts";
import type { TorchTopK } from "./torch_topk.ts";

/** The decoder's prompt is [decoder_start_token_id]: generated lengths count from after it. */
export const PROMPT_LENGTH = 1;

/** One step's top `keep` continuations of one batch item, in torch.topk's order (beam search owns the arrays). */
export interface BeamCandidates {
  /** Beam score + token log-prob. */
  score: Float32Array;
  /** The running beam (within the batch item) each continues. */
  beam: Int32Array;
  token: Int32Array;
  /** The token's processed log-prob. */
  lp: Float32Array;
  /** 1 where the candidate ends its beam (EOS or max length). */
  hit: Uint8Array;
}

export class BeamHypotheses {
  readonly #beams: number;
  readonly #keep: number;
  readonly #maxLength: number;
  readonly #lengthPenalty: number;
  readonly #earlyStopping: EarlyStopping;
  /** Finished beams' score (num_beams kept ones, then the keep candidates), selected together. */
  readonly #mergeScore: Float32Array;
  #seq: Int32Array;
  #nextSeq: Int32Array;
  #lp: Float32Array;
  #nextLp: Float32Array;
  #score: Float32Array;
  #nextScore: Float32Array;
  #done: Uint8Array;
  #nextDone: Uint8Array;
  /** Generated length (after the prompt) of each finished beam. */
  #len: Int32Array;
  #nextLen: Int32Array;

  constructor(batch: number, beams: number, keep: number, maxLength: number, lengthPenalty: number, earlyStopping: EarlyStopping, decoderStartTokenId: number) {
    const rows = batch * beams;
    this.#beams = beams;
    this.#keep = keep;
    this.#maxLength = maxLength;
    this.#lengthPenalty = lengthPenalty;
    this.#earlyStopping = earlyStopping;
    this.#mergeScore = new Float32Array(beams + keep);
    this.#seq = new Int32Array(rows * maxLength);
    this.#nextSeq = new Int32Array(rows * maxLength);
    this.#lp = new Float32Array(rows * maxLength);
    this.#nextLp = new Float32Array(rows * maxLength);
    this.#score = new Float32Array(rows).fill(NEG_1E9);
    this.#nextScore = new Float32Array(rows);
    this.#done = new Uint8Array(rows);
    this.#nextDone = new Uint8Array(rows);
    this.#len = new Int32Array(rows);
    this.#nextLen = new Int32Array(rows);
    for (let r = 0; r < rows; r++) this.#seq[r * maxLength] = decoderStartTokenId;
  }

  /**
   * Batch item b's finished beams of the next step: the best num_beams of the kept ones and of the candidates that
   * ended among the top num_beams now (`small` is scratch of beams + keep slots). Call swap() after every item.
   */
  merge(b: number, curLen: number, cand: BeamCandidates, runSeq: Int32Array, runLp: Float32Array, satisfied: boolean, small: TorchTopK): void {
    const beams = this.#beams;
    const keep = this.#keep;
    const maxLength = this.#maxLength;
    const mergeScore = this.#mergeScore;
    const finSeq = this.#seq;
    const finLp = this.#lp;
    const finScore = this.#score;
    const finDone = this.#done;
    const finLen = this.#len;
    let full = this.#earlyStopping === true;
    for (let s = 0; s < beams; s++) if (!finDone[b * beams + s]) full = false;
    const divisor = fround((curLen + 1 - PROMPT_LENGTH) ** this.#lengthPenalty);
    for (let s = 0; s < beams; s++) mergeScore[s] = finScore[b * beams + s]!;
    for (let k = 0; k < keep; k++) {
      let v = fround(cand.score[k]! / divisor);
      if (full) v = fround(v + NEG_1E9);
      if (satisfied) v = fround(v + NEG_1E9);
      if (!(cand.hit[k] && k < beams)) v = fround(v + NEG_1E9);
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
        const length = PROMPT_LENGTH + finLen[srcSlot]!;
        this.#nextSeq.set(finSeq.subarray(srcSlot * maxLength, srcSlot * maxLength + length), dst);
        this.#nextLp.set(finLp.subarray(srcSlot * maxLength, srcSlot * maxLength + length), dst);
        this.#nextScore[dstSlot] = finScore[srcSlot]!;
        this.#nextDone[dstSlot] = finDone[srcSlot]!;
        this.#nextLen[dstSlot] = finLen[srcSlot]!;
      } else {
        const k = m - beams;
        const src = (b * beams + cand.beam[k]!) * maxLength;
        this.#nextSeq.set(runSeq.subarray(src, src + curLen), dst);
        this.#nextSeq[dst + curLen] = cand.token[k]!;
        this.#nextLp.set(runLp.subarray(src, src + curLen), dst);
        this.#nextLp[dst + curLen] = cand.lp[k]!;
        this.#nextScore[dstSlot] = mergeScore[m]!;
        this.#nextDone[dstSlot] = cand.hit[k] && k < beams ? 1 : 0;
        this.#nextLen[dstSlot] = curLen + 1 - PROMPT_LENGTH;
      }
    }
  }

  /** Makes the merged beams current (after every batch item's merge()). */
  swap(): void {
    const seq = this.#seq;
    this.#seq = this.#nextSeq;
    this.#nextSeq = seq;
    const lp = this.#lp;
    this.#lp = this.#nextLp;
    this.#nextLp = lp;
    const score = this.#score;
    this.#score = this.#nextScore;
    this.#nextScore = score;
    const done = this.#done;
    this.#done = this.#nextDone;
    this.#nextDone = done;
    const len = this.#len;
    this.#len = this.#nextLen;
    this.#nextLen = len;
  }

  /**
   * HF `_check_early_stop_heuristic`: a batch item whose best running beam (`runScore` of its first beam, at
   * `curLen`) can no longer beat its worst finished one is satisfied for good; true while any item is not.
   */
  updateUnsatisfied(runScore: Float32Array, curLen: number, unsatisfied: Uint8Array): boolean {
    const beams = this.#beams;
    const lengthPenalty = this.#lengthPenalty;
    const bestLength = this.#earlyStopping === "never" && lengthPenalty > 0 ? this.#maxLength - PROMPT_LENGTH : curLen - PROMPT_LENGTH;
    const bestDivisor = fround(bestLength ** lengthPenalty);
    let anyUnsatisfied = false;
    for (let b = 0; b < unsatisfied.length; b++) {
      const best = fround(runScore[b * beams]! / bestDivisor);
      let worst = Infinity;
      for (let s = 0; s < beams; s++) worst = Math.min(worst, this.#score[b * beams + s]!);
      let improvable = false;
      for (let s = 0; s < beams; s++) if (best > (this.#done[b * beams + s] ? worst : NEG_1E9)) improvable = true;
      if (!improvable) unsatisfied[b] = 0;
      if (unsatisfied[b]) anyUnsatisfied = true;
    }
    return anyUnsatisfied;
  }

  /** Every finished slot of every batch item holds an ended beam. */
  allDone(): boolean {
    for (let r = 0; r < this.#done.length; r++) if (!this.#done[r]) return false;
    return true;
  }

  /** The best finished beam of each batch item; the output is as long as the longest of them, padded with `fill`. */
  output(batch: number, fill: number): GenerationOutput {
    const beams = this.#beams;
    const maxLength = this.#maxLength;
    let generated = 0;
    for (let b = 0; b < batch; b++) generated = Math.max(generated, this.#len[b * beams]!);
    const outLength = PROMPT_LENGTH + generated;
    const out: GenerationOutput = { sequences: [], sequencesScores: [], tokenLogprobs: [] };
    for (let b = 0; b < batch; b++) {
      const slot = b * beams;
      const length = PROMPT_LENGTH + this.#len[slot]!;
      const sequence = new Array<number>(outLength).fill(fill);
      const lps = new Array<number>(outLength - 1).fill(0);
      for (let t = 0; t < length; t++) sequence[t] = this.#seq[slot * maxLength + t]!;
      for (let t = 1; t < length; t++) lps[t - 1] = this.#lp[slot * maxLength + t]!;
      out.sequences.push(sequence);
      out.tokenLogprobs.push(lps);
      out.sequencesScores!.push(this.#score[slot]!);
    }
    return out;
  }
}
