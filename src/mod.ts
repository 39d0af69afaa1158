/**
 * florence-edge public library API. Everything a program (or the service) needs is exported here, and only here.
 */
import { existsSync } from "node:fs";
import { basename, join } from "node:path";
import type { RuntimeEnvironment } from "./config.ts";
import type { Engine } from "./engine/engine.ts";
import type { TensorRtOptions } from "./engine/tensorrt/runtime.ts";
import { OnnxRuntimeEngine } from "./engine/onnxruntime/onnxruntime.ts";
import { FlorenceError } from "./errors.ts";
import { Florence2, type LoadOptions } from "./florence/florence2.ts";
import { DEFAULT_HUB_MODEL, downloadModel, isHubId } from "./florence/hub.ts";
import type { Precision } from "./florence/model_files.ts";
import { packageRoot } from "./paths.ts";

export { FlorenceError, isFlorenceError, type ErrorCode } from "./errors.ts";
export { Florence2, type GenerateOptions, type LoadOptions, type StageTimings, type TaskRequest, type TaskResult, type VisionFeatures } from "./florence/florence2.ts";
export { postProcessGeneration, type PostProcessOptions } from "./florence/postprocess.ts";
export { TASKS, constructPrompt } from "./florence/tasks.ts";
export { Tokenizer } from "./florence/tokenizer.ts";
export { decodeImage, type RgbImage } from "./florence/image.ts";
export { pixelValues, parseImageProcessorConfig, type ImageProcessorConfig, type ResizeMode } from "./florence/preprocess.ts";
export { resolveGenerationConfig, generate, type GenerationConfig } from "./florence/generate.ts";
export { locateModelFiles, PRECISIONS, type ModelFiles, type Precision } from "./florence/model_files.ts";
export { DEFAULT_HUB_MODEL, downloadModel } from "./florence/hub.ts";
export { OnnxRuntimeEngine } from "./engine/onnxruntime/onnxruntime.ts";
export type { DecoderLayout, DecoderOptions, DecoderStep, Engine, Graph, GraphLoadOptions, Tensor } from "./engine/engine.ts";
export { readEnvironment, type RuntimeEnvironment } from "./config.ts";

export type BackendChoice = "auto" | "onnxruntime" | "tensorrt";

/** How the TensorRT backend runs, where it is chosen: CUDA graphs for decoder steps, zero-copy, kept workspaces. */
export type TensorRtTuning = Pick<TensorRtOptions, "cudaGraphs" | "zeroCopy" | "workspaces">;

export interface OpenOptions extends Omit<LoadOptions, "engine" | "ownsEngine"> {
  env: RuntimeEnvironment;
  backend?: BackendChoice;
  threads?: number;
  precision?: Precision;
  /** Progress and the backend choice, one line each. */
  log?: (line: string) => void;
  tensorrt?: TensorRtTuning;
}

/**
 * Creates the engine for a backend choice. `auto` picks TensorRT when engines built for this GPU and TensorRT
 * version exist for the model (in the cache's engines/ or the package's engines/), else ONNX Runtime on the CPU,
 * and says which it chose and why.
 */
export async function createEngine(
  choice: BackendChoice,
  options: { threads?: number; log?: (line: string) => void; modelDir?: string; cacheDir?: string; tensorrt?: TensorRtTuning },
): Promise<Engine> {
  let reason = "no model folder to look up engines for";
  if (choice !== "onnxruntime" && options.modelDir !== undefined) {
    // loaded only here, so CPU-only runs never load koffi or look for CUDA
    const trt = await import("./engine/tensorrt/runtime.ts");
    const roots = [...(options.cacheDir ? [join(options.cacheDir, "engines")] : []), join(packageRoot(), "engines")];
    const found = await trt.findEngines(roots, basename(options.modelDir.replace(/[\\/]+$/, "")));
    if (found.ok) {
      const engine = await trt.openTensorRt({ ...options.tensorrt, engineDir: found.engineDir, modelDir: options.modelDir, ...(options.log ? { log: options.log } : {}) });
      options.log?.(`backend: ${engine.description}${choice === "auto" ? " (auto: engines for this GPU found)" : ""}`);
      return engine;
    }
    reason = found.reason;
  }
  if (choice === "tensorrt") {
    throw new FlorenceError("ENGINE_UNAVAILABLE", `the TensorRT backend cannot run: ${reason}`, {
      fix: "build engines for this GPU with `florence-edge build-engines --model DIR`, or use --backend onnxruntime",
    });
  }
  const engine = new OnnxRuntimeEngine(options.threads ? { intraOpThreads: options.threads } : {});
  options.log?.(`backend: ${engine.description}${choice === "auto" ? ` (auto: ${reason})` : ""}`);
  return engine;
}

/** Resolves a model folder or hub id (downloading into the cache when needed). */
export async function resolveModelDir(model: string, env: RuntimeEnvironment, options: { precision?: Precision; log?: (line: string) => void } = {}): Promise<string> {
  if (existsSync(model) || !isHubId(model)) return model;
  const cached = join(env.cacheDir, "models");
  return downloadModel(model, {
    cacheDir: cached,
    ...(options.precision ? { precision: options.precision } : {}),
    ...(env.hfToken ? { token: env.hfToken } : {}),
    ...(env.hubEndpoint ? { endpoint: env.hubEndpoint } : {}),
    ...(options.log ? { log: options.log } : {}),
  });
}

/**
 * Opens a Florence-2 model (folder or hub id) on the chosen backend. The model owns its engine: `dispose()` (or
 * `await using`) releases the graphs, decoders and the engine below them; nothing else needs disposing.
 */
export async function loadFlorence(model: string = DEFAULT_HUB_MODEL, options: OpenOptions): Promise<Florence2> {
  const dir = await resolveModelDir(model, options.env, { ...(options.precision ? { precision: options.precision } : {}), ...(options.log ? { log: options.log } : {}) });
  const engine = await createEngine(options.backend ?? "auto", {
    ...(options.threads ?? options.env.threads ? { threads: (options.threads ?? options.env.threads)! } : {}),
    ...(options.log ? { log: options.log } : {}),
    modelDir: dir,
    cacheDir: options.env.cacheDir,
    ...(options.tensorrt ? { tensorrt: options.tensorrt } : {}),
  });
  try {
    const { env: _env, backend: _backend, threads: _threads, log: _log, tensorrt: _tensorrt, ...load } = options;
    return await Florence2.load(dir, { ...load, engine, ownsEngine: true });
  } catch (error) {
    await engine.dispose();
    throw error;
  }
}
