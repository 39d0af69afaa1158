import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { OnnxRuntimeEngine } from "../../src/engine/onnxruntime/onnxruntime.ts";
import type { DecoderStep } from "../../src/engine/engine.ts";
import { createGraphDecoder as createDecoder } from "../../src/engine/graph_decoder.ts";
import { generate, type GenerationConfig, type GenerationOutput, resolveGenerationConfig } from "../../src/florence/generate.ts";
import { ReferenceEncoder, type EncoderOutput } from "../support/encoder_inputs.ts";
import { readReference, TINY_MODEL } from "../support/paths.ts";
import { rejectsCode as rejects } from "../support/errors.ts";

interface GenerateCase {
  id: string;
  images: string[];
  generate_kwargs: Record<string, unknown>;
  prompt_ids: number[];
  generated_ids: number[][];
  token_logprobs?: number[][];
  sequences_scores?: number[];
}

const CASES = readReference<GenerateCase[]>("generate.json");
const GENERATION_JSON_PATH = join(TINY_MODEL, "generation_config.json");
const GENERATION_JSON = JSON.parse(readFileSync(GENERATION_JSON_PATH, "utf8")) as Record<string, unknown>;
const DECODERS = ["merged", "split"] as const;

const engine = new OnnxRuntimeEngine();
let encoder: ReferenceEncoder;
const matched = { merged: 0, split: 0 };

test.before(async () => {
  encoder = await ReferenceEncoder.load(engine, ["decoder_model_merged", "decoder_model", "decoder_with_past_model"]);
});

test.after(async () => {
  await encoder.dispose();
  await engine.dispose();
});

async function run(encoded: EncoderOutput, config: GenerationConfig, use: "merged" | "split"): Promise<GenerationOutput> {
  const decoder = await createDecoder({ graphs: encoder.graphs, encoderHiddenStates: encoded.hiddenStates, encoderAttentionMask: encoded.attentionMask, numBeams: config.numBeams, use });
  try {
    return await generate(decoder, encoded.hiddenStates.dims[0]!, config);
  } finally {
    await decoder.dispose();
  }
}

/** Generated tokens of a row up to and including its first EOS (the rest is padding). */
function generatedLength(row: readonly number[], eos: readonly number[]): number {
  for (let t = 1; t < row.length; t++) if (eos.includes(row[t]!)) return t;
  return row.length - 1;
}


for (const c of CASES) {
  test(`HF generate: ${c.id} ${JSON.stringify(c.generate_kwargs)}`, async () => {
    const config = resolveGenerationConfig(GENERATION_JSON, c.generate_kwargs, GENERATION_JSON_PATH);
    const encoded = await encoder.encode(c.images, c.prompt_ids);
    for (const use of DECODERS) {
      const out = await run(encoded, config, use);
      assert.equal(out.sequences, c.generated_ids, `${use} decoder: sequences`);
      matched[use]++;
      assert.is(out.tokenLogprobs.length, c.generated_ids.length);
      out.tokenLogprobs.forEach((row, i) => assert.is(row.length, c.generated_ids[i]!.length - 1, "one log-probability per generated position"));
      if (config.numBeams === 1) {
        assert.ok(c.token_logprobs, "greedy reference has token_logprobs");
        assert.is(out.sequencesScores, undefined);
        c.token_logprobs!.forEach((expected, i) => {
          const length = generatedLength(c.generated_ids[i]!, config.eosTokenIds);
          for (let t = 0; t < length; t++) {
            const diff = Math.abs(out.tokenLogprobs[i]![t]! - expected[t]!);
            assert.ok(diff <= 1e-3, `${use}: row ${i} token ${t}: log-prob ${out.tokenLogprobs[i]![t]} vs HF ${expected[t]}`);
          }
        });
      } else {
        assert.ok(c.sequences_scores && out.sequencesScores, "beam search returns sequences_scores");
        out.sequencesScores!.forEach((score, i) => {
          assert.ok(Math.abs(score - c.sequences_scores![i]!) <= 1e-4, `${use}: row ${i}: sequences_score ${score} vs HF ${c.sequences_scores![i]}`);
          // HF's score is the summed processed log-probabilities along the beam over generated_length ** length_penalty
          const length = generatedLength(c.generated_ids[i]!, config.eosTokenIds);
          const sum = out.tokenLogprobs[i]!.slice(0, length).reduce((a, b) => a + b, 0);
          assert.ok(Math.abs(sum / length ** config.lengthPenalty - c.sequences_scores![i]!) <= 1e-4, `${use}: row ${i}: token log-probs do not add up to the score`);
        });
      }
    }
  });
}

test(`all ${CASES.length} reference cases match with both decoder forms`, () => {
  console.log(`  generate: ${matched.merged}/${CASES.length} cases match HF with decoder_model_merged, ${matched.split}/${CASES.length} with decoder_model + decoder_with_past_model`);
  assert.is(matched.merged, CASES.length);
  assert.is(matched.split, CASES.length);
});

test("max_new_tokens 1: forced EOS overrides forced BOS at the last position (HF processor order)", async () => {
  const c = CASES.find((x) => x.generate_kwargs["num_beams"] === 1)!;
  const encoded = await encoder.encode(c.images, c.prompt_ids);
  for (const numBeams of [1, 3]) {
    const config = resolveGenerationConfig(GENERATION_JSON, { max_new_tokens: 1, num_beams: numBeams });
    assert.is(config.maxLength, 2);
    const out = await run(encoded, config, "merged");
    assert.equal(out.sequences, [[2, 2]]);
    assert.equal(out.tokenLogprobs, [[0]]);
    if (numBeams > 1) assert.equal(out.sequencesScores, [0]);
    // without forced EOS the one token is the forced BOS, the reference's first generated token
    const noForcedEos = resolveGenerationConfig(GENERATION_JSON, { max_new_tokens: 1, num_beams: numBeams, forced_eos_token_id: null });
    assert.equal((await run(encoded, noForcedEos, "split")).sequences, [c.generated_ids[0]!.slice(0, 2)]);
  }
});

test("generation stops at max_new_tokens and the prefix matches a longer HF run", async () => {
  const c = CASES.find((x) => x.id === "extra|greedy-long")!;
  const encoded = await encoder.encode(c.images, c.prompt_ids);
  // with forced EOS off, greedy tokens before the limit are those of the unlimited run
  const config = resolveGenerationConfig(GENERATION_JSON, { num_beams: 1, max_new_tokens: 10, forced_eos_token_id: null });
  const out = await run(encoded, config, "merged");
  const reference = c.generated_ids[0]!;
  const expected = reference.slice(0, Math.min(11, reference.length));
  assert.equal(out.sequences[0], expected);
});

test("resolveGenerationConfig: the model's generation_config.json without overrides", () => {
  const config = resolveGenerationConfig(GENERATION_JSON, {});
  assert.equal(config, {
    maxLength: 30,
    minLength: 0,
    numBeams: 3,
    lengthPenalty: 1,
    earlyStopping: true,
    noRepeatNgramSize: 3,
    forcedBosTokenId: 0,
    forcedEosTokenIds: [2],
    eosTokenIds: [2],
    padTokenId: 1,
    bosTokenId: 0,
    decoderStartTokenId: 2,
  });
});

test("resolveGenerationConfig: HF length rules", () => {
  // max_new_tokens wins over max_length, wherever each comes from
  assert.is(resolveGenerationConfig(GENERATION_JSON, { max_new_tokens: 5 }).maxLength, 6);
  assert.is(resolveGenerationConfig(GENERATION_JSON, { max_new_tokens: 5, max_length: 50 }).maxLength, 6);
  assert.is(resolveGenerationConfig({ ...GENERATION_JSON, max_new_tokens: 7 }, { max_length: 50 }).maxLength, 8);
  assert.is(resolveGenerationConfig(GENERATION_JSON, { max_length: 12 }).maxLength, 12);
  // neither set anywhere: HF's default of 20 new tokens
  const { max_length: _unused, ...withoutMax } = GENERATION_JSON;
  assert.is(resolveGenerationConfig(withoutMax, {}).maxLength, 21);
  assert.is(resolveGenerationConfig({ ...GENERATION_JSON, max_length: null }, {}).maxLength, 21);
  assert.is(resolveGenerationConfig({ decoder_start_token_id: 2 }, {}).maxLength, 21);
  // min_new_tokens counts after decoder_start_token_id
  assert.is(resolveGenerationConfig(GENERATION_JSON, { min_new_tokens: 4 }).minLength, 5);
  assert.is(resolveGenerationConfig(GENERATION_JSON, { min_length: 4 }).minLength, 4);
});

test("resolveGenerationConfig: special tokens", () => {
  assert.equal(resolveGenerationConfig(GENERATION_JSON, { eos_token_id: [2, 7] }).eosTokenIds, [2, 7]);
  assert.equal(resolveGenerationConfig(GENERATION_JSON, { forced_eos_token_id: [2, 7] }).forcedEosTokenIds, [2, 7]);
  assert.is(resolveGenerationConfig(GENERATION_JSON, { forced_bos_token_id: null }).forcedBosTokenId, null);
  assert.equal(resolveGenerationConfig(GENERATION_JSON, { eos_token_id: null }).eosTokenIds, []);
  // HF: pad falls back to the first EOS id, decoder start to bos
  const { pad_token_id: _pad, decoder_start_token_id: _start, ...bare } = GENERATION_JSON;
  const fallback = resolveGenerationConfig(bare, { eos_token_id: [5, 2] });
  assert.is(fallback.padTokenId, 5);
  assert.is(fallback.decoderStartTokenId, 0);
  // keys that do not change greedy or beam output are accepted
  assert.is(resolveGenerationConfig({ ...GENERATION_JSON, temperature: 0.7, _from_model_config: true }, { use_cache: true, num_return_sequences: 1 }).numBeams, 3);
});

test("resolveGenerationConfig: invalid values are INVALID_ARGUMENT naming the key", async () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ num_beams: 0 }, /num_beams/],
    [{ num_beams: "3" }, /num_beams/],
    [{ num_beams: 2.5 }, /num_beams/],
    [{ num_beams: null }, /num_beams/],
    [{ length_penalty: Number.NaN }, /length_penalty/],
    [{ length_penalty: "1" }, /length_penalty/],
    [{ early_stopping: "sometimes" }, /early_stopping/],
    [{ early_stopping: 1 }, /early_stopping/],
    [{ max_new_tokens: 0 }, /max_new_tokens/],
    [{ max_length: 1 }, /max_length/],
    [{ max_length: -3 }, /max_length/],
    [{ min_length: -1 }, /min_length/],
    [{ no_repeat_ngram_size: -1 }, /no_repeat_ngram_size/],
    [{ eos_token_id: [-1] }, /eos_token_id/],
    [{ eos_token_id: [] }, /eos_token_id/],
    [{ forced_eos_token_id: "2" }, /forced_eos_token_id/],
    [{ forced_bos_token_id: 1.5 }, /forced_bos_token_id/],
    [{ pad_token_id: -1 }, /pad_token_id/],
    [{ decoder_start_token_id: [2] }, /decoder_start_token_id/],
    [{ num_beam: 3 }, /num_beam/],
    [{ do_sample: true }, /do_sample/],
    [{ repetition_penalty: 1.2 }, /repetition_penalty/],
    [{ num_return_sequences: 2 }, /num_return_sequences/],
  ];
  for (const [overrides, pattern] of bad) {
    await rejects(() => resolveGenerationConfig(GENERATION_JSON, overrides, GENERATION_JSON_PATH), "INVALID_ARGUMENT", pattern);
  }
  // a bad value in the file names the file and the key
  await rejects(() => resolveGenerationConfig({ ...GENERATION_JSON, num_beams: -2 }, {}, GENERATION_JSON_PATH), "INVALID_ARGUMENT", /generation_config\.json.*num_beams/);
  await rejects(() => resolveGenerationConfig({ ...GENERATION_JSON, do_sample: true }, {}, GENERATION_JSON_PATH), "INVALID_ARGUMENT", /generation_config\.json.*do_sample/);
  await rejects(() => resolveGenerationConfig([1, 2], {}, GENERATION_JSON_PATH), "INVALID_ARGUMENT", /generation_config\.json/);
  await rejects(() => resolveGenerationConfig({ bos_token_id: null, decoder_start_token_id: null }, {}), "INVALID_ARGUMENT", /decoder_start_token_id/);
});

test("generate: refuses a decoder whose rows do not match batch × num_beams, and ids outside the vocabulary", async () => {
  const c = CASES[0]!;
  const encoded = await encoder.encode(c.images, c.prompt_ids);
  const decoder = await createDecoder({ graphs: encoder.graphs, encoderHiddenStates: encoded.hiddenStates, encoderAttentionMask: encoded.attentionMask, numBeams: 1 });
  try {
    await rejects(() => generate(decoder, 1, resolveGenerationConfig(GENERATION_JSON, { num_beams: 3 })), "INVALID_ARGUMENT", /rows/);
    await rejects(() => generate(decoder, 0, resolveGenerationConfig(GENERATION_JSON, { num_beams: 1 })), "INVALID_ARGUMENT", /batch/);
    await rejects(() => generate(decoder, 1, resolveGenerationConfig(GENERATION_JSON, { num_beams: 1, eos_token_id: 99999 })), "INVALID_ARGUMENT", /eos_token_id 99999/);
  } finally {
    await decoder.dispose();
  }
});

test("decoder: logits per row, identity reorder, dispose", async () => {
  const c = CASES[0]!;
  const encoded = await encoder.encode(c.images, c.prompt_ids);
  const numBeams = 2;
  const decoders: DecoderStep[] = [];
  for (const use of DECODERS) {
    decoders.push(await createDecoder({ graphs: encoder.graphs, encoderHiddenStates: encoded.hiddenStates, encoderAttentionMask: encoded.attentionMask, numBeams, use }));
  }
  const [merged, split] = decoders as [DecoderStep, DecoderStep];
  assert.is(merged.rows, 2);
  const vocab = 1626;
  let tokens = Int32Array.from([2, 2]);
  for (let step = 0; step < 3; step++) {
    const a = Float32Array.from(await merged.next(tokens));
    const b = Float32Array.from(await split.next(tokens));
    assert.is(a.length, 2 * vocab);
    // both forms compute the same function (the fixture's onnx_check found them bit-identical)
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-5, `step ${step} logit ${i}: merged ${a[i]} vs split ${b[i]}`);
    // rows fed the same tokens and history give the same logits
    for (let i = 0; i < vocab; i++) assert.ok(Math.abs(a[i]! - a[vocab + i]!) <= 1e-5);
    await merged.reorder(Int32Array.from([0, 1]));
    await split.reorder(Int32Array.from([1, 0]));
    tokens = Int32Array.from([0, 0]);
  }
  await rejects(() => merged.reorder(Int32Array.from([0])), "INVALID_ARGUMENT", /row indices/);
  await rejects(() => merged.reorder(Int32Array.from([0, 5])), "INVALID_ARGUMENT", /row index 5/);
  await rejects(() => merged.next(Int32Array.from([1])), "INVALID_ARGUMENT", /tokens/);
  for (const d of decoders) {
    await d.dispose();
    await d.dispose();
    await rejects(() => d.next(tokens), "DISPOSED", /disposed/);
    await rejects(() => d.reorder(Int32Array.from([0, 1])), "DISPOSED", /disposed/);
  }
});

test("decoder: beam reorder gathers KV-cache rows (a reordered row continues the source row's history)", async () => {
  const c = CASES[0]!;
  const encoded = await encoder.encode(c.images, c.prompt_ids);
  const make = () => createDecoder({ graphs: encoder.graphs, encoderHiddenStates: encoded.hiddenStates, encoderAttentionMask: encoded.attentionMask, numBeams: 2 });
  const reordered = await make();
  const straight = await make();
  try {
    // rows take different paths, then row 0 continues from row 1's history
    await reordered.next(Int32Array.from([2, 2]));
    await straight.next(Int32Array.from([2, 2]));
    await reordered.next(Int32Array.from([0, 5]));
    await straight.next(Int32Array.from([5, 5]));
    await reordered.reorder(Int32Array.from([1, 1]));
    const a = Float32Array.from(await reordered.next(Int32Array.from([7, 7])));
    const b = await straight.next(Int32Array.from([7, 7]));
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-5, `logit ${i}: ${a[i]} vs ${b[i]}`);
  } finally {
    await reordered.dispose();
    await straight.dispose();
  }
});

test("createDecoder: missing graphs are MODEL_FILE_MISSING", async () => {
  const c = CASES[0]!;
  const encoded = await encoder.encode(c.images, c.prompt_ids);
  const only = new Map([["embed_tokens", encoder.graphs.get("embed_tokens")!], ["decoder_model", encoder.graphs.get("decoder_model")!]]);
  await rejects(() => createDecoder({ graphs: only, encoderHiddenStates: encoded.hiddenStates, encoderAttentionMask: encoded.attentionMask }), "MODEL_FILE_MISSING", /decoder_model_merged/);
  const noEmbed = new Map([["decoder_model_merged", encoder.graphs.get("decoder_model_merged")!]]);
  await rejects(() => createDecoder({ graphs: noEmbed, encoderHiddenStates: encoded.hiddenStates, encoderAttentionMask: encoded.attentionMask }), "MODEL_FILE_MISSING", /embed_tokens/);
});

// ---------------------------------------------------------------------------------------------------------------
// Beam-search corners the tiny model's reference never reaches (ties between equal scores, early_stopping False and
// "never", the early-stop heuristic, finished-beam bookkeeping, min_length, EOS lists, the pad-0 fill quirk).
// HF transformers 5.17 / torch 2.11 (CPU) ran `generate(input_ids=[[2]] * batch, use_cache=False, **kwargs)` with
// `model.generation_config = GenerationConfig(**config)` on a stand-in model whose forward returns, for every row,
// the logits below: a 32-bit hash of (batch item, prefix) quantised to `levels` steps in [-4, 4), plus
// 0.5 · (prefix length − 4) on token 2. Few levels make many exact ties (torch.topk's order then decides).

interface HashCase {
  what: string;
  vocab: number;
  levels: number;
  config: Record<string, unknown>;
  kwargs: Record<string, unknown>;
  batch: number;
  sequences: number[][];
  scores?: number[];
  logprobs?: number[][];
}

const HF_HASH_CASES: HashCase[] = [
  {"what":"stable-ties","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":[2,7],"pad_token_id":1,"forced_bos_token_id":0,"forced_eos_token_id":[2,5],"no_repeat_ngram_size":3,"early_stopping":true,"length_penalty":2,"num_beams":2},"kwargs":{"max_new_tokens":3},"batch":2,"sequences":[[2,0,1,5],[2,0,1,5]],"scores":[-0.086948,-0.125398]},
  {"what":"stable-ties","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_eos_token_id":[2,5],"no_repeat_ngram_size":2,"min_length":3,"early_stopping":true,"length_penalty":1,"num_beams":5},"kwargs":{"max_new_tokens":3,"num_beams":3},"batch":2,"sequences":[[2,9,9,5],[2,10,7,5]],"scores":[-0.423944,-0.460822]},
  {"what":"stable-ties","vocab":300,"levels":16,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_bos_token_id":0,"forced_eos_token_id":[2,5],"no_repeat_ngram_size":0,"early_stopping":false,"length_penalty":0,"num_beams":5,"max_length":20},"kwargs":{"max_new_tokens":16},"batch":1,"sequences":[[2,0,61,29,16,190,237,2]],"scores":[-21.387171]},
  {"what":"stable-ties","vocab":300,"levels":16,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_eos_token_id":[2,5],"no_repeat_ngram_size":0,"early_stopping":true,"length_penalty":1,"num_beams":5,"max_length":5},"kwargs":{},"batch":3,"sequences":[[2,140,57,158,2],[2,40,29,123,2],[2,174,29,211,2]],"scores":[-2.820235,-2.925569,-2.856361]},
  {"what":"stable-ties","vocab":40,"levels":1024,"config":{"bos_token_id":0,"eos_token_id":[2,7],"pad_token_id":1,"forced_bos_token_id":0,"forced_eos_token_id":2,"no_repeat_ngram_size":3,"early_stopping":true,"length_penalty":-0.5,"num_beams":3},"kwargs":{"max_new_tokens":3},"batch":3,"sequences":[[2,0,17,2],[2,0,17,2],[2,0,28,2]],"scores":[-3.047256,-2.247152,-2.824077]},
  {"what":"stable-ties","vocab":40,"levels":1024,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_bos_token_id":0,"forced_eos_token_id":[2,5],"no_repeat_ngram_size":2,"early_stopping":false,"length_penalty":1,"num_beams":4,"max_length":5},"kwargs":{"max_new_tokens":3},"batch":3,"sequences":[[2,0,17,2],[2,0,17,5],[2,0,28,5]],"scores":[-0.586445,-0.432465,-0.543494]},
  {"what":"stable-ties","vocab":700,"levels":64,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_bos_token_id":0,"forced_eos_token_id":2,"no_repeat_ngram_size":3,"min_length":3,"early_stopping":"never","length_penalty":1,"num_beams":5},"kwargs":{},"batch":2,"sequences":[[2,0,230,536,620,2,1,1,1],[2,0,376,419,24,56,646,323,2]],"scores":[-3.552627,-3.740273]},
  {"what":"stable-ties","vocab":700,"levels":64,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":0,"forced_eos_token_id":2,"no_repeat_ngram_size":3,"early_stopping":"never","length_penalty":-0.5,"num_beams":3},"kwargs":{"max_new_tokens":10,"num_beams":3},"batch":3,"sequences":[[2,461,248,0,40,405,444,195,2,2],[2,182,636,129,109,116,308,253,193,2],[2,278,239,8,594,409,2,2,2,2]],"scores":[-98.528755,-114.926361,-65.544601]},
  {"what":"never","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_bos_token_id":0,"no_repeat_ngram_size":2,"early_stopping":"never","length_penalty":2,"num_beams":2},"kwargs":{},"batch":1,"sequences":[[2,0,1,0,6,10,7,10,3,1,7,6,4,1,2]],"scores":[-0.075352]},
  {"what":"never","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":[2,7],"pad_token_id":1,"forced_eos_token_id":2,"no_repeat_ngram_size":2,"early_stopping":"never","length_penalty":1,"num_beams":2},"kwargs":{"max_new_tokens":10,"num_beams":3},"batch":3,"sequences":[[2,9,9,0,2,1,1,1,1,1,1],[2,10,0,3,6,9,3,0,1,1,2],[2,8,0,6,8,10,5,9,0,9,2]],"scores":[-0.659137,-0.683771,-0.766006]},
  {"what":"never","vocab":300,"levels":16,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_eos_token_id":2,"no_repeat_ngram_size":3,"early_stopping":true,"length_penalty":2,"num_beams":4,"max_length":20},"kwargs":{"max_new_tokens":16,"early_stopping":"never"},"batch":2,"sequences":[[2,64,162,5,130,35,59,197,105,23,6,33,119,143,46,75,2],[2,53,202,112,100,60,121,129,17,155,77,21,41,61,19,97,2]],"scores":[-0.221925,-0.223411]},
  {"what":"never","vocab":700,"levels":64,"config":{"bos_token_id":0,"eos_token_id":[2,7],"pad_token_id":0,"forced_bos_token_id":0,"forced_eos_token_id":[2,5],"no_repeat_ngram_size":3,"early_stopping":"never","length_penalty":2,"num_beams":2},"kwargs":{"max_new_tokens":10},"batch":2,"sequences":[[2,0,391,340,37,118,211,32,153,78,2],[2,0,32,594,48,515,326,217,326,122,2]],"scores":[-0.361758,-0.361006]},
  {"what":"fill","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":0,"forced_bos_token_id":0,"forced_eos_token_id":[2,5],"no_repeat_ngram_size":3,"min_length":3,"early_stopping":false,"length_penalty":1,"num_beams":2,"max_length":12},"kwargs":{"max_new_tokens":10,"num_beams":3},"batch":3,"sequences":[[2,0,1,0,6,9,11,2],[2,0,5,9,6,2,2,2],[2,0,11,3,10,1,0,2]],"scores":[-0.667717,-0.608391,-0.595961]},
  {"what":"fill","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":0,"forced_bos_token_id":0,"forced_eos_token_id":2,"no_repeat_ngram_size":0,"early_stopping":"never","length_penalty":1,"num_beams":3},"kwargs":{"max_new_tokens":10},"batch":3,"sequences":[[2,0,1,0,6,9,11,2],[2,0,5,9,6,2,2,2],[2,0,11,3,10,1,0,2]],"scores":[-0.667717,-0.608391,-0.595961]},
  {"what":"minlen","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":[2,7],"pad_token_id":1,"no_repeat_ngram_size":0,"min_length":3,"early_stopping":false,"length_penalty":0.6,"num_beams":2},"kwargs":{},"batch":3,"sequences":[[2,9,9,0,2,1,1,1],[2,10,0,3,6,11,9,7],[2,4,0,2,1,1,1,1]],"scores":[-1.147625,-1.642087,-1.425704]},
  {"what":"minlen","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_bos_token_id":0,"no_repeat_ngram_size":3,"min_length":6,"early_stopping":true,"length_penalty":0,"num_beams":1},"kwargs":{"max_new_tokens":6,"num_beams":1},"batch":1,"sequences":[[2,0,1,0,6,9,11]],"logprobs":[[0,-0.76322,-0.87835,-0.75038,-1.15859,-0.80412]]},
  {"what":"minlen","vocab":40,"levels":1024,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":0,"forced_eos_token_id":2,"no_repeat_ngram_size":2,"min_length":6,"early_stopping":true,"length_penalty":-0.5,"num_beams":3,"max_length":12},"kwargs":{"max_new_tokens":6},"batch":3,"sequences":[[2,27,32,24,3,13,2],[2,14,28,11,21,31,2],[2,34,13,19,10,16,2]],"scores":[-20.552603,-19.196512,-20.225454]},
  {"what":"heuristic","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":[2,7],"pad_token_id":0,"forced_bos_token_id":0,"forced_eos_token_id":2,"no_repeat_ngram_size":0,"min_length":3,"early_stopping":false,"length_penalty":2,"num_beams":4},"kwargs":{},"batch":3,"sequences":[[2,0,4,11,1,4,10,10,3,9,9,5,2],[2,0,1,3,5,10,1,9,3,3,11,4,2],[2,0,11,3,10,1,1,9,0,6,3,8,2]],"scores":[-0.063286,-0.065144,-0.065836]},
  {"what":"heuristic","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":0,"no_repeat_ngram_size":0,"early_stopping":false,"length_penalty":2,"num_beams":3,"max_length":20},"kwargs":{"early_stopping":false},"batch":3,"sequences":[[2,1,11,11,7,5,6,6,9,7,9,0,2,2,2,2],[2,10,0,3,6,11,9,7,5,3,2,2,2,2,2,2],[2,8,0,6,8,10,5,9,0,9,4,0,6,8,1,2]],"scores":[-0.068016,-0.07352,-0.056442]},
  {"what":"heuristic","vocab":300,"levels":16,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":null,"forced_eos_token_id":[2,5],"no_repeat_ngram_size":0,"early_stopping":false,"length_penalty":1,"num_beams":3},"kwargs":{},"batch":3,"sequences":[[2,45,59,80,29,186,13,119,2,2,2,2],[2,16,150,78,79,10,28,95,10,2,2,2],[2,106,169,51,26,99,110,3,8,48,44,2]],"scores":[-3.565981,-3.612639,-3.570128]},
  {"what":"heuristic","vocab":700,"levels":64,"config":{"bos_token_id":0,"eos_token_id":[2,7],"pad_token_id":1,"forced_bos_token_id":0,"forced_eos_token_id":[2,5],"no_repeat_ngram_size":3,"early_stopping":false,"length_penalty":2,"num_beams":3},"kwargs":{},"batch":1,"sequences":[[2,0,579,179,612,96,368,639,90,544,249,349,22,472,2]],"scores":[-0.281474]},
  {"what":"full","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":[2,7],"pad_token_id":1,"forced_bos_token_id":0,"forced_eos_token_id":2,"no_repeat_ngram_size":3,"early_stopping":true,"length_penalty":2,"num_beams":5},"kwargs":{"max_new_tokens":6,"num_beams":3},"batch":3,"sequences":[[2,0,1,0,6,9,2],[2,0,1,3,10,0,2],[2,0,11,3,10,7,1]],"scores":[-0.101446,-0.097378,-0.132543]},
  {"what":"full","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":[2,7],"pad_token_id":1,"forced_bos_token_id":0,"forced_eos_token_id":2,"no_repeat_ngram_size":2,"early_stopping":true,"length_penalty":2,"num_beams":3},"kwargs":{"max_new_tokens":16},"batch":3,"sequences":[[2,0,1,0,6,9,11,2],[2,0,1,3,3,11,5,2],[2,0,11,3,10,7,1,1]],"scores":[-0.095388,-0.109458,-0.132543]},
  {"what":"full","vocab":40,"levels":1024,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":0,"forced_bos_token_id":0,"forced_eos_token_id":[2,5],"no_repeat_ngram_size":3,"min_length":3,"early_stopping":true,"length_penalty":2,"num_beams":5},"kwargs":{},"batch":2,"sequences":[[2,0,17,11,23,11,19,10,2,2,2,2],[2,0,17,15,30,38,23,28,36,33,1,2]],"scores":[-0.183197,-0.132339]},
  {"what":"full","vocab":40,"levels":1024,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_eos_token_id":2,"no_repeat_ngram_size":2,"early_stopping":true,"length_penalty":0.6,"num_beams":3},"kwargs":{"max_new_tokens":6},"batch":2,"sequences":[[2,19,26,20,2,1,1],[2,14,28,11,21,31,2]],"scores":[-3.209686,-2.674582]},
  {"what":"unsat","vocab":12,"levels":1048576,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_eos_token_id":2,"no_repeat_ngram_size":3,"early_stopping":false,"length_penalty":2,"num_beams":5},"kwargs":{},"batch":3,"sequences":[[2,1,11,11,7,5,6,6,9,7,9,0,2],[2,10,0,3,6,11,6,3,5,1,2,1,1],[2,8,0,6,8,4,5,1,11,9,2,1,1]],"scores":[-0.068016,-0.072432,-0.084379]},
  {"what":"unsat","vocab":300,"levels":16,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_eos_token_id":[2,5],"no_repeat_ngram_size":3,"min_length":6,"early_stopping":false,"length_penalty":1,"num_beams":2,"max_length":20},"kwargs":{"max_new_tokens":16},"batch":3,"sequences":[[2,45,36,24,25,25,0,7,2,1,1,1],[2,40,12,5,16,107,73,3,5,50,111,2],[2,26,15,15,7,113,38,7,9,20,33,2]],"scores":[-3.639458,-3.551706,-3.587475]},
  {"what":"unsat","vocab":700,"levels":64,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_eos_token_id":2,"no_repeat_ngram_size":2,"early_stopping":true,"length_penalty":1,"num_beams":3,"max_length":12},"kwargs":{"max_new_tokens":10,"early_stopping":false},"batch":3,"sequences":[[2,461,248,0,40,405,444,195,2,1,1],[2,182,636,129,109,116,308,253,193,188,2],[2,278,239,8,594,409,241,33,14,180,2]],"scores":[-4.354397,-4.043379,-4.031157]},
  {"what":"greedy-ties","vocab":300,"levels":16,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":1,"forced_bos_token_id":0,"forced_eos_token_id":2,"no_repeat_ngram_size":3,"early_stopping":true,"length_penalty":0,"num_beams":1,"max_length":20},"kwargs":{"max_new_tokens":3},"batch":2,"sequences":[[2,0,11,2],[2,0,8,2]],"logprobs":[[0,-4.08019,0],[0,-3.96605,0]]},
  {"what":"greedy-ties","vocab":300,"levels":16,"config":{"bos_token_id":0,"eos_token_id":2,"pad_token_id":0,"forced_bos_token_id":0,"forced_eos_token_id":2,"no_repeat_ngram_size":3,"early_stopping":true,"length_penalty":-0.5,"num_beams":1},"kwargs":{"max_new_tokens":6},"batch":2,"sequences":[[2,0,11,26,5,80,2],[2,0,8,17,1,2,0]],"logprobs":[[0,-4.08019,-3.84297,-3.71539,-3.69087,0],[0,-3.96605,-3.82803,-3.72237,-4.01576]]}
];

function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** The stand-in model: logits depend on the batch item and the whole prefix; beams are reordered like a KV cache. */
class HashDecoder implements DecoderStep {
  readonly rows: number;
  readonly #beams: number;
  readonly #vocab: number;
  readonly #levels: number;
  #prefixes: number[][];

  constructor(batch: number, beams: number, vocab: number, levels: number) {
    this.rows = batch * beams;
    this.#beams = beams;
    this.#vocab = vocab;
    this.#levels = levels;
    this.#prefixes = Array.from({ length: this.rows }, () => []);
  }

  async next(tokens: Int32Array): Promise<Float32Array> {
    const vocab = this.#vocab;
    const out = new Float32Array(this.rows * vocab);
    for (let r = 0; r < this.rows; r++) {
      const prefix = this.#prefixes[r]!;
      prefix.push(tokens[r]!);
      let h = mix((0x9747b28c ^ Math.floor(r / this.#beams)) >>> 0);
      for (const t of prefix) h = mix((h ^ (Math.imul(t + 1, 0x9e3779b1) >>> 0)) >>> 0);
      for (let v = 0; v < vocab; v++) out[r * vocab + v] = (mix((h ^ (Math.imul(v + 1, 0x85ebca77) >>> 0)) >>> 0) % this.#levels) * (8 / this.#levels) - 4;
      out[r * vocab + 2] += 0.5 * (prefix.length - 4);
    }
    return out;
  }

  async reorder(rowIndices: Int32Array): Promise<void> {
    this.#prefixes = Array.from(rowIndices, (source) => this.#prefixes[source]!.slice());
  }

  async dispose(): Promise<void> {}
}

test(`HF generate on a hash-logits model: ${HF_HASH_CASES.length} cases of ties, early stopping and length rules`, async () => {
  for (const c of HF_HASH_CASES) {
    const label = `${c.what} ${JSON.stringify(c.config)} ${JSON.stringify(c.kwargs)} batch ${c.batch}`;
    const config = resolveGenerationConfig({ ...c.config, decoder_start_token_id: 2 }, c.kwargs);
    const out = await generate(new HashDecoder(c.batch, config.numBeams, c.vocab, c.levels), c.batch, config);
    assert.equal(out.sequences, c.sequences, label);
    c.scores?.forEach((score, i) => assert.ok(Math.abs(out.sequencesScores![i]! - score) <= 1e-4, `${label}: score ${out.sequencesScores![i]} vs HF ${score}`));
    c.logprobs?.forEach((row, i) => row.forEach((lp, t) => assert.ok(Math.abs(out.tokenLogprobs[i]![t]! - lp) <= 1e-4, `${label}: row ${i} token ${t}`)));
  }
});

test.run();
