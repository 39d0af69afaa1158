/**
 * Florence-2 on the TensorRT backend, the whole path a user takes, on a real GPU over the stand-in libnvinfer
 * (test/support/trt_standin.ts): `loadFlorence(model, { backend })` finds engines for this GPU in the cache's
 * engines/ folder, loads the split decoders (never the merged one), runs the vision encoder, embed_tokens and the
 * encoder through TensorRtGraph and generation through the TensorRT decoder with beam search. The stand-in's
 * engines compute no Florence-2 (zeros, and logits made of token histories): what is checked is the plumbing —
 * the backend choice, which graphs load, that the GPU decoder runs, that CUDA graphs replay in later frames and
 * give the same results as eager steps and zero-copy, and that everything is freed.
 *
 * Needs what the model needs (onnxruntime-node importable, sharp) and the stand-in findable by soname
 * (LD_LIBRARY_PATH): on a GPU machine run it with scripts/gpu/pipeline-check.sh.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { readEnvironment } from "../../src/config.ts";
import { CudaRuntime } from "../../src/engine/tensorrt/cuda.ts";
import { engineDirName } from "../../src/engine/tensorrt/manifest.ts";
import type { TensorRtEngine } from "../../src/engine/tensorrt/runtime.ts";
import { loadFlorence, type TensorRtTuning } from "../../src/mod.ts";
import { REFERENCE, TINY_MODEL } from "../support/paths.ts";
import { decoderPlans, embedPlan, type StandinPlan, standinOnGpu, writeStandinEngines } from "../support/trt_standin.ts";
import { skipGpuTests } from "../support/gpu_skips.ts";

const availability = CudaRuntime.tryOpen();

if (!availability.ok) {
  console.log(`tensorrt-pipeline: SKIPPED: ${availability.reason}. It runs on a machine with an NVIDIA GPU and driver (scripts/gpu/pipeline-check.sh).`);
  skipGpuTests(import.meta.url, "no usable CUDA GPU here");
} else {
  const cuda = availability.cuda;
  // the backend looks libnvinfer up by soname, as on a real machine: the stand-in must be on the loader's path
  const { standin, machine } = standinOnGpu(cuda, { bySoname: true });
  const config = JSON.parse(readFileSync(join(TINY_MODEL, "config.json"), "utf8")) as { text_config: { d_model: number; vocab_size: number } };
  const hidden = config.text_config.d_model;
  const vocab = config.text_config.vocab_size;
  const cacheDir = mkdtempSync(join(tmpdir(), "standin-cache-"));
  const engineDir = join(cacheDir, "engines", basename(TINY_MODEL), engineDirName(machine.gpuName, machine.computeCapability, machine.tensorrtVersion));
  const MAX_ROWS = 4;
  const MAX_ENCODER = 640;
  const MAX_PROMPT = 64;

  const plans: Record<string, StandinPlan> = {
    vision_encoder: {
      standin: 1,
      kind: "zeros",
      memoryBytes: 256,
      tensors: [
        { name: "pixel_values", input: true, type: "float32", shape: [-1, 3, 768, 768], profile: { min: [1, 3, 768, 768], opt: [1, 3, 768, 768], max: [MAX_ROWS, 3, 768, 768] } },
        { name: "image_features", input: false, type: "float32", shape: [-1, 577, hidden], shapeFrom: ["pixel_values:0", 577, hidden] },
      ],
    },
    embed_tokens: embedPlan(MAX_ROWS, MAX_PROMPT, hidden),
    encoder_model: {
      standin: 1,
      kind: "zeros",
      memoryBytes: 256,
      tensors: [
        { name: "inputs_embeds", input: true, type: "float32", shape: [-1, -1, hidden], profile: { min: [1, 1, hidden], opt: [1, 590, hidden], max: [MAX_ROWS, MAX_ENCODER, hidden] } },
        { name: "attention_mask", input: true, type: "int64", shape: [-1, -1], profile: { min: [1, 1], opt: [1, 590], max: [MAX_ROWS, MAX_ENCODER] } },
        { name: "last_hidden_state", input: false, type: "float32", shape: [-1, -1, hidden], shapeFrom: ["inputs_embeds:0", "inputs_embeds:1", hidden] },
      ],
    },
  };
  const decoders = decoderPlans({ maxRows: MAX_ROWS, maxEncoder: MAX_ENCODER, maxPast: 40, vocab, embed: true, hidden });
  plans["decoder_model"] = decoders["decoder_model"]!;
  plans["decoder_with_past_model"] = decoders["decoder_with_past_model"]!;
  writeStandinEngines(engineDir, plans, machine, basename(TINY_MODEL));
  const env = { ...readEnvironment({}), cacheDir };
  const image = join(REFERENCE, "images", "street.jpg");
  const baseline = cuda.liveAllocations();

  async function frames(tuning: TensorRtTuning, count: number): Promise<{ results: string[]; lines: string[]; stats: ReturnType<TensorRtEngine["stats"]> }> {
    const lines: string[] = [];
    const model = await loadFlorence(TINY_MODEL, { env, backend: "auto", tensorrt: tuning, log: (line) => lines.push(line) });
    const results: string[] = [];
    try {
      assert.is(model.engine.backend, "tensorrt");
      for (let i = 0; i < count; i++) {
        const out = await model.infer(image, [{ task: "<CAPTION>" }, { task: "<OD>" }], { numBeams: 3, maxNewTokens: 20 });
        results.push(JSON.stringify(out.map((r) => [r.generated_ids, r.text, r.result])));
      }
      return { results, lines, stats: (model.engine as TensorRtEngine).stats() };
    } finally {
      await model.dispose();
    }
  }

  test("--backend auto finds the engines for this GPU and runs Florence-2 on TensorRT: split decoders, the GPU decoder, graphs replayed in later frames", async () => {
    const before = standin.stats.engines.created;
    const { results, lines, stats } = await frames({ cudaGraphs: { steps: 128 } }, 3);
    assert.ok(lines.some((l) => /^backend: TensorRT 10\.3\.0 on .* \(auto: engines for this GPU found\)$/.test(l)), lines.join("\n"));
    assert.is(standin.stats.engines.created - before, 5, "vision, embed, encoder and the two split decoders; not the merged one");
    assert.is(stats.decoder.generations, 6, "two tasks a frame, three frames, all on the TensorRT decoder");
    assert.ok(stats.decoder.captures > 0 && stats.decoder.replays > 0, JSON.stringify(stats.decoder));
    assert.equal(stats.decoder.disabled, []);
    assert.is(new Set(results).size, 1, "every frame gives the same result, replayed or not");
    const eager = await frames({ cudaGraphs: false }, 1);
    assert.is(eager.stats.decoder.captures, 0);
    assert.equal(eager.results[0], results[0], "CUDA graphs change nothing in the results");
    const zeroCopy = await frames({ cudaGraphs: { steps: 128 }, zeroCopy: true }, 2);
    assert.ok(zeroCopy.stats.zeroCopy);
    assert.equal(zeroCopy.results, [results[0], results[0]], "zero-copy changes nothing either");
    assert.equal(standin.stats.refused, []);
    console.log(`tensorrt-pipeline: ${stats.decoder.steps} decoder steps in 3 frames: ${stats.decoder.replays} replayed, ${stats.decoder.captures} captured, ${stats.decoder.eager} eager`);
  });

  test("everything is freed", () => {
    assert.equal(cuda.liveAllocations(), baseline);
    assert.is(standin.liveObjects, 0);
  });
}

test.run();
