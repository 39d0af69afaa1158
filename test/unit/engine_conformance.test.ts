/**
 * The engine conformance suite (test/support/engine_conformance.ts) against ONNX Runtime on the CPU and against
 * TensorRT over the stand-in libnvinfer (test/support/trt_standin.ts), which needs a CUDA GPU: without one, its
 * cases are registered as counted skips saying why. HF reference cases run through ONNX Runtime's decoder; the
 * stand-in's logits are synthetic (they carry each row's token history), so there they are counted skips too.
 */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OnnxRuntimeEngine } from "../../src/engine/onnxruntime/onnxruntime.ts";
import { CudaRuntime } from "../../src/engine/tensorrt/cuda.ts";
import { engineDirName } from "../../src/engine/tensorrt/manifest.ts";
import { TensorRtEngine } from "../../src/engine/tensorrt/runtime.ts";
import { ReferenceEncoder } from "../support/encoder_inputs.ts";
import { type ConformanceSubject, engineConformance, type HfCase } from "../support/engine_conformance.ts";
import { readReference, TINY_MODEL } from "../support/paths.ts";
import { decoderPlans, standinOnGpu, writeStandinEngines } from "../support/trt_standin.ts";

const modelConfig = JSON.parse(readFileSync(join(TINY_MODEL, "config.json"), "utf8")) as { text_config: { d_model: number; vocab_size: number } };
const CASES = readReference<HfCase[]>("generate.json");
// a greedy case, a beam case, a batch of three and a batch of beams: the decoder paths generation takes
const HF_CASES = ["street.jpg|<CAPTION>|greedy", "street.jpg|<OD>|beam3", "extra|batch-greedy", "extra|batch-beam3"].map((id) => CASES.find((c) => c.id === id)!);

engineConformance({
  name: "onnxruntime",
  open: async () => new OnnxRuntimeEngine({ intraOpThreads: 1 }),
  graphPath: (name) => join(TINY_MODEL, "onnx", `${name}.onnx`),
  extraGraphs: ["embed_tokens"],
  hidden: modelConfig.text_config.d_model,
  encoderLength: 6,
  tokenLimit: modelConfig.text_config.vocab_size,
  hf: {
    cases: HF_CASES,
    generationJson: JSON.parse(readFileSync(join(TINY_MODEL, "generation_config.json"), "utf8")) as Record<string, unknown>,
    encode: async (engine, _graphs, c) => {
      const encoder = await ReferenceEncoder.load(engine, []);
      const encoded = await encoder.encode(c.images, c.prompt_ids);
      return { hidden: encoded.hiddenStates, mask: encoded.attentionMask };
    },
  },
});

const cuda = CudaRuntime.tryOpen();
let standin: Omit<ConformanceSubject, "name" | "hfUnavailable"> = {
  unavailable: cuda.ok ? undefined : `no CUDA GPU here (${cuda.ok ? "" : cuda.reason.slice(0, 120)}…); scripts/gpu/cuda-check.sh runs it on one`,
  open: () => Promise.reject(new Error("no GPU")),
  graphPath: (name) => name,
  extraGraphs: [],
  hidden: 2,
  encoderLength: 5,
  tokenLimit: 50_000,
};
if (cuda.ok) {
  const { library, machine } = standinOnGpu(cuda.cuda);
  const engineDir = join(mkdtempSync(join(tmpdir(), "conformance-engines-")), "model", engineDirName(machine.gpuName, machine.computeCapability, machine.tensorrtVersion));
  writeStandinEngines(engineDir, decoderPlans({ maxRows: 4, maxEncoder: 8, maxPast: 15, vocab: 40, embed: false }), machine, "model");
  standin = {
    ...standin,
    open: () => TensorRtEngine.open({ engineDir, tensorrt: { libraries: [library] }, verifyOnnx: "none" }),
    graphPath: (name) => join(engineDir, `${name}.plan`),
  };
}
engineConformance({ name: "tensorrt stand-in", ...standin, hfUnavailable: "the stand-in's logits are synthetic (each row's token history), not the model's" });
