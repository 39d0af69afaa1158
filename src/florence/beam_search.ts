/**
 * HF's vectorized beam search (`_beam_search`, transformers 5.17) over a DecoderStep: top-K continuations per batch
 * item, finished hypotheses kept by length-penalised score, early stopping as HF decides it, in float32 where HF
 * compares scores. The finished hypotheses are beam_hypotheses.ts.
 */
import type { DecoderStep } from "../engine/engine.ts";
import { type BeamCandidates, BeamHypotheses, PROMPT_LENGTH } from "./beam_hypotheses.ts";
import type { GenerationConfig } from "./generation_config.ts";
import { checkVocab, fround, type GenerationOutput, isEos, logSoftmaxInPlace, NEG_1E9, processorsFor, processRow } from "./search_steps.ts";
import { TorchTopK } from "./torch_topk.ts";

/** HF `_beam_search` (transformers 5): top-K continuations, running beams, finished beams, early-stop heuristic. */
export async function beamSearch(decoder: DecoderStep, batch: number, config: GenerationConfig): Promise<GenerationOutput> {
  const processors = processorsFor(config);
  const beams = config.numBeams;
  const rows = batch * beams;
  const maxLength = config.maxLength;
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
  const finished = new BeamHypotheses(batch, beams, keep, maxLength, lengthPenalty, earlyStopping, config.decoderStartTokenId);

  const cand: BeamCandidates = { score: new Float32Array(keep), beam: new Int32Array(keep), token: new Int32Array(keep), lp: new Float32Array(keep), hit: new Uint8Array(keep) };
  const small = new TorchTopK(beams + keep);
  let candidates: TorchTopK | undefined;
  const unsatisfied = new Uint8Array(batch).fill(1);
  const tokens = new Int32Array(rows).fill(config.decoderStartTokenId);
  const reorder = new Int32Array(rows);

  for (let r = 0; r < rows; r++) {
    runSeq[r * maxLength] = config.decoderStartTokenId;
    // only the first beam starts live, so the first step does not pick the same token num_beams times
    runScore[r] = r % beams === 0 ? 0 : NEG_1E9;
  }

  let curLen = PROMPT_LENGTH;
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
        cand.score[k] = candidates.values[k]!;
        cand.beam[k] = beam;
        cand.token[k] = token;
        cand.lp[k] = logits[(b * beams + beam) * vocab + token]!;
        cand.hit[k] = curLen + 1 >= maxLength || isEos(eos, token) ? 1 : 0;
        if (!cand.hit[k]) allHit = false;
        // just-ended candidates must not continue
        small.values[k] = cand.hit[k] ? fround(cand.score[k]! + NEG_1E9) : cand.score[k]!;
        small.indices[k] = k;
      }

      // the running beams of the next step
      small.select(keep, beams);
      for (let j = 0; j < beams; j++) {
        const k = small.indices[j]!;
        const src = (b * beams + cand.beam[k]!) * maxLength;
        const dst = (b * beams + j) * maxLength;
        nextRunSeq.set(runSeq.subarray(src, src + curLen), dst);
        nextRunSeq[dst + curLen] = cand.token[k]!;
        nextRunLp.set(runLp.subarray(src, src + curLen), dst);
        nextRunLp[dst + curLen] = cand.lp[k]!;
        nextRunScore[b * beams + j] = small.values[j]!;
        reorder[b * beams + j] = b * beams + cand.beam[k]!;
      }

      // the finished beams: the best num_beams of the kept ones and those that ended among the top num_beams now
      finished.merge(b, curLen, cand, runSeq, runLp, !unsatisfied[b], small);
    }

    [runSeq, nextRunSeq] = [nextRunSeq, runSeq];
    [runLp, nextRunLp] = [nextRunLp, runLp];
    [runScore, nextRunScore] = [nextRunScore, runScore];
    finished.swap();
    curLen++;

    // HF `_check_early_stop_heuristic`: can the best running beam still beat the worst finished one?
    const anyUnsatisfied = finished.updateUnsatisfied(runScore, curLen, unsatisfied);
    const openBeam = !(finished.allDone() && earlyStopping === true);
    if (!(anyUnsatisfied && openBeam && !allHit)) break;

    await decoder.reorder(reorder);
    for (let r = 0; r < rows; r++) tokens[r] = runSeq[r * maxLength + curLen - 1]!;
  }

  // the best finished beam of each batch item; the output is as long as the longest of them
  return finished.output(batch, fill);
}
