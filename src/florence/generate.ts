/**
 * Text generation as Hugging Face transformers 5.17 `generate` does it for Florence-2 (an encoder-decoder): greedy
 * search (`_sample` without sampling) and the vectorized beam search (`_beam_search`), with the logits processors a
 * Florence-2 generation_config switches on (no_repeat_ngram_size, min_length, forced BOS/EOS) in HF's order.
 *
 * Pure algorithm: the model is behind a `DecoderStep` (engine/engine.ts) that turns one token per row into logits.
 * Here: generate() and greedy search; beam search (beam_search.ts), the logits processors (search_steps.ts) and
 * the configuration (generation_config.ts) live apart.
 * Float32 arithmetic is reproduced where HF compares scores (beam scores, length penalty) so that ties and
 * near-ties resolve as they do in PyTorch.
 */
import { describeValue, FlorenceError } from "../errors.ts";
import type { DecoderStep } from "../engine/engine.ts";
import { beamSearch } from "./beam_search.ts";
import type { GenerationConfig } from "./generation_config.ts";
import { checkVocab, fround, type GenerationOutput, isEos, processorsFor, processRow } from "./search_steps.ts";

export { type EarlyStopping, type GenerationConfig, type GenerationKwargs, resolveGenerationConfig } from "./generation_config.ts";
export type { GenerationOutput } from "./search_steps.ts";

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
