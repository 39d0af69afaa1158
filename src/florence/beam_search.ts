/**
 * HF's vectorized beam search (`_beam_search`, transformers 5.17) over a DecoderStep: top-K continuations per batch
 * item, finished hypotheses kept by length-penalised score, early stopping as HF decides it, in float32 where HF
 * compares scores.
 */
import type { DecoderStep } from "../engine/engine.ts";
import type { GenerationConfig } from "./generation_config.ts";
import { checkVocab, fround, type GenerationOutput, isEos, logSoftmaxInPlace, NEG_1E9, processorsFor, processRow } from "./search_steps.ts";
import { TorchTopK } from "./torch_topk.ts";

/** HF `_beam_search` (transformers 5): top-K continuations, running beams, finished beams, early-stop heuristic. */
export async function beamSearch(decoder: DecoderStep, batch: number, config: GenerationConfig): Promise<GenerationOutput> {
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
