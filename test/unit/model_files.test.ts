import { test } from "uvu";
import * as assert from "uvu/assert";
import { cp, mkdtemp, readFile, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { locateModelFiles, parseModelConfig } from "../../src/florence/model_files.ts";
import { REFERENCE, TINY_MODEL } from "../support/paths.ts";
import { rejectsCode as rejects } from "../support/errors.ts";

async function copyModel(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "fe-model-"));
  for (const f of ["config.json", "generation_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json"]) {
    await cp(join(TINY_MODEL, f), join(dir, f));
  }
  await mkdir(join(dir, "onnx"));
  for (const g of ["vision_encoder", "embed_tokens", "encoder_model", "decoder_model_merged"]) {
    await writeFile(join(dir, "onnx", `${g}.onnx`), "");
    await writeFile(join(dir, "onnx", `${g}_quantized.onnx`), "");
  }
  return dir;
}


test("the fixture folder: HF-native config, processor_config.json with the image processor nested", async () => {
  const files = await locateModelFiles(TINY_MODEL);
  assert.is(files.config.form, "hf-native");
  assert.is(files.config.text.dModel, 64);
  assert.is(files.config.text.decoderLayers, 2);
  assert.is(files.config.text.decoderAttentionHeads, 4);
  assert.is(files.config.imageTokenId, 1625);
  assert.equal((files.imageProcessor["size"] as Record<string, number>)["height"], 768);
  assert.ok(files.postProcessorConfig && "phrase_grounding" in files.postProcessorConfig);
  assert.equal(files.availablePrecisions, ["fp32", "fp16", "quantized"]);
  assert.ok(files.graphs.decoder_model_merged?.endsWith("decoder_model_merged.onnx"));
  assert.ok(files.graphs.decoder_with_past_model?.endsWith("decoder_with_past_model.onnx"));
  const fp16 = await locateModelFiles(TINY_MODEL, "fp16");
  assert.ok(fp16.graphs.vision_encoder?.endsWith("vision_encoder_fp16.onnx"));
  assert.is(fp16.graphs.decoder_model, undefined, "the split decoders exist only in fp32 here");
});

test("the Microsoft remote-code config and the flat preprocessor_config.json read the same", async () => {
  const dir = await copyModel();
  try {
    await cp(join(REFERENCE, "variants", "config.remote_code.json"), join(dir, "config.json"));
    await rm(join(dir, "processor_config.json"));
    await rm(join(dir, "generation_config.json"));
    await cp(join(REFERENCE, "variants", "preprocessor_config.json"), join(dir, "preprocessor_config.json"));
    const remote = await locateModelFiles(dir, "quantized");
    const native = await locateModelFiles(TINY_MODEL);
    assert.is(remote.config.form, "remote-code");
    assert.equal(remote.config.text, native.config.text);
    assert.equal(remote.imageProcessor["image_mean"], native.imageProcessor["image_mean"]);
    assert.is(remote.generationConfig["num_beams"], 3, "generation defaults come from text_config without generation_config.json");
    assert.is(remote.generationConfig["no_repeat_ngram_size"], 3);
    assert.is(remote.postProcessorConfig, undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("missing and malformed files name the file and what was expected", async () => {
  await rejects(locateModelFiles("/nonexistent/florence"), "MODEL_FILE_MISSING", /model folder not found: \/nonexistent\/florence/);
  const dir = await copyModel();
  try {
    await rejects(locateModelFiles(dir, "fp16"), "MODEL_FILE_MISSING", /precision fp16 is incomplete .*vision_encoder_fp16\.onnx.*--precision fp32 \| quantized/);
    await rejects(locateModelFiles(dir, "fp64" as never), "INVALID_ARGUMENT", /unknown precision "fp64"/);
    await writeFile(join(dir, "config.json"), "{ not json");
    await rejects(locateModelFiles(dir), "MODEL_FILE_INVALID", /config\.json is not valid JSON/);
    await writeFile(join(dir, "config.json"), JSON.stringify({ model_type: "bert" }));
    await rejects(locateModelFiles(dir), "MODEL_FILE_INVALID", /no "text_config" object/);
    const config = JSON.parse(await readFile(join(TINY_MODEL, "config.json"), "utf8"));
    config.text_config.d_model = "64";
    await writeFile(join(dir, "config.json"), JSON.stringify(config));
    await rejects(locateModelFiles(dir), "MODEL_FILE_INVALID", /"d_model" must be a non-negative integer, got "64"/);
    await cp(join(TINY_MODEL, "config.json"), join(dir, "config.json"));
    await rm(join(dir, "processor_config.json"));
    await rejects(locateModelFiles(dir), "MODEL_FILE_MISSING", /preprocessor_config\.json/);
    await cp(join(TINY_MODEL, "processor_config.json"), join(dir, "processor_config.json"));
    await rm(join(dir, "tokenizer.json"));
    await rejects(locateModelFiles(dir), "MODEL_FILE_MISSING", /tokenizer\.json not found/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("parseModelConfig refuses heads that do not divide d_model", () => {
  try {
    parseModelConfig({ text_config: { d_model: 64, decoder_attention_heads: 5, encoder_layers: 1, decoder_layers: 1, vocab_size: 10 } }, "x.json");
    assert.unreachable();
  } catch (error) {
    assert.match((error as Error).message, /not divisible/);
  }
});

test.run();
