/**
 * Builds FP16 TensorRT engines for the local GPU from a Florence-2 model folder's ONNX graphs, with trtexec
 * (`florence-edge build-engines --model DIR`).
 *
 * Output: engines/<model-id>/<gpu>-sm<cc>-trt<version>/<graph>.plan and manifest.json. The merged decoder is split
 * first (src/engine/onnx/split.ts): TensorRT cannot build its If node. TensorRT 10 builds with --fp16 and precision
 * constraints that keep LayerNorm, Softmax and Pow (and a decomposed LayerNorm's variance chain) in FP32; TensorRT 11
 * has only strongly typed networks, so it gets a mixed-precision ONNX (FP16 everywhere else) and --stronglyTyped.
 * Engines whose ONNX and flags are unchanged are skipped; everything is built in a temporary folder that replaces the
 * engine folder only when every graph succeeded.
 */
import { existsSync } from "node:fs";
import { copyFile, link, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { parseModel, tensorTypeOf } from "../engine/onnx/proto.ts";
import { type BuildMode, type EngineEntry, type EngineManifest, MANIFEST_SCHEMA, engineDirName } from "../engine/tensorrt/manifest.ts";
import { FlorenceError, isFlorenceError } from "../errors.ts";
import { locateModelFiles, type ModelFiles } from "../florence/model_files.ts";
import { detectCudaToolkit, detectGpu, detectTensorRT, findTrtexec, type GpuInfo, type TensorRTVersion, tensorRTVersion } from "./detect.ts";
import { isUpToDate, readPreviousManifest, removeStaleTemporaries, replaceAtomically, replaceFile } from "./engine_folder.ts";
import { ENGINE_GRAPHS, type EngineGraph, sha256File } from "./graphs.ts";
import { type BuildContext, type PreparedGraph, prepareGraphs } from "./prepare.ts";
import type { Limits } from "./profiles.ts";
import { formatCommand, runTrtexec } from "./trtexec.ts";

export interface BuildEnginesOptions {
  /** The model folder (onnx-community layout). */
  model: string;
  /** Which ONNX graphs to build from: fp32 (default) or fp16. The engines are FP16 either way. */
  precision?: "fp32" | "fp16";
  /** The engines root; default "engines". */
  out?: string;
  /** Images per call; default 1. */
  maxBatch?: number;
  /** Beams per image; decoder rows go up to maxBatch × maxBeams. Default: generation_config num_beams, else 1. */
  maxBeams?: number;
  /** Prompt tokens after the image tokens; default 256. */
  maxPrompt?: number;
  /** Generated tokens; the with-past decoder takes past lengths 0..maxNewTokens−1. Default 1024. */
  maxNewTokens?: number;
  /** trtexec's path; default JetPack's /usr/src/tensorrt/bin/trtexec, then trtexec on PATH. */
  trtexec?: string;
  /** nvidia-smi's path; default nvidia-smi on PATH. */
  nvidiaSmi?: string;
  /** Build TensorRT 10 engines from the mixed-precision ONNX with --stronglyTyped too (TensorRT 11 always does). */
  stronglyTyped?: boolean;
  /** Rebuild engines that are up to date. */
  force?: boolean;
  /** Print what would be built, with the trtexec command lines; write nothing. */
  dryRun?: boolean;
  /** Progress lines; default stderr. */
  log?: (line: string) => void;
  /** Seconds between progress lines while trtexec runs; default 15. */
  heartbeatSeconds?: number;
  /** Stops a build: trtexec is killed and nothing is left half-written. */
  signal?: AbortSignal;
}

export interface BuildEnginesResult {
  engineDir: string;
  built: EngineGraph[];
  skipped: EngineGraph[];
  /** trtexec argv per graph built (or, for a dry run, that would be built). */
  commands: { graph: EngineGraph; argv: string[] }[];
  manifest: EngineManifest | undefined;
  dryRun: boolean;
}

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < 1) {
    throw new FlorenceError("INVALID_ARGUMENT", `--${name} must be a positive integer, got ${JSON.stringify(value)}`, { fix: `e.g. --${name} ${fallback}` });
  }
  return v;
}

/** The build's limits: the options checked against the model's positions, and the profile bounds they make. */
async function buildLimits(files: ModelFiles, options: BuildEnginesOptions): Promise<{ limits: Limits; maxBeams: number; maxNewTokens: number }> {
  const maxBatch = positiveInteger("max-batch", options.maxBatch, 1);
  const numBeams = Number(files.generationConfig["num_beams"] ?? 1);
  const maxBeams = positiveInteger("max-beams", options.maxBeams, Number.isInteger(numBeams) && numBeams > 0 ? numBeams : 1);
  const maxPrompt = positiveInteger("max-prompt", options.maxPrompt, 256);
  const maxNewTokens = positiveInteger("max-new-tokens", options.maxNewTokens, 1024);
  const text = files.config.raw["text_config"] as Record<string, unknown>;
  const maxPositions = typeof text["max_position_embeddings"] === "number" ? (text["max_position_embeddings"] as number) : 1024;
  const imageTokens = await imageTokenCount(files);
  if (imageTokens + maxPrompt > maxPositions) {
    throw new FlorenceError("INVALID_ARGUMENT", `--max-prompt ${maxPrompt}: ${imageTokens} image tokens + ${maxPrompt} prompt tokens exceed the encoder's ${maxPositions} positions`, {
      fix: `use --max-prompt ${maxPositions - imageTokens} or less`,
    });
  }
  if (maxNewTokens > maxPositions) {
    throw new FlorenceError("INVALID_ARGUMENT", `--max-new-tokens ${maxNewTokens} exceeds the decoder's ${maxPositions} positions`, { fix: `use --max-new-tokens ${maxPositions} or less` });
  }
  const limits: Limits = {
    maxBatch,
    maxRows: maxBatch * maxBeams,
    maxPrompt,
    maxPast: maxNewTokens - 1,
    imageTokens,
    heads: files.config.text.decoderAttentionHeads,
    headDim: files.config.text.dModel / files.config.text.decoderAttentionHeads,
    dModel: files.config.text.dModel,
  };
  return { limits, maxBeams, maxNewTokens };
}

interface Toolchain {
  trtexec: string;
  trt: TensorRTVersion;
  gpu: GpuInfo;
}

/** TensorRT and the GPU; a dry run goes on without them. */
async function detectToolchain(options: BuildEnginesOptions, log: (line: string) => void): Promise<Toolchain> {
  try {
    const trtexec = await findTrtexec(options.trtexec);
    return { trtexec, trt: await detectTensorRT(trtexec), gpu: await detectGpu(options.nvidiaSmi) };
  } catch (error) {
    if (!options.dryRun || !isFlorenceError(error, "ENGINE_UNAVAILABLE")) throw error;
    log(`dry run without TensorRT or a GPU (${(error as Error).message.split(" — ")[0]}): assuming TensorRT 10 and an unknown GPU`);
    return { trtexec: options.trtexec ?? "trtexec", trt: tensorRTVersion(10, 0, 0), gpu: { name: "unknown-gpu", computeCapability: "0.0", driver: null, cudaDriver: null } };
  }
}

/** Where one build writes: the final engine folder, its temporary twin and the timing caches. */
interface BuildPaths {
  modelOut: string;
  dirName: string;
  engineDir: string;
  tempDir: string;
  tempCache: string;
  sharedCache: string;
}

function buildPaths(options: BuildEnginesOptions, files: ModelFiles, toolchain: Toolchain): BuildPaths {
  const out = resolve(options.out ?? "engines");
  const dirName = engineDirName(toolchain.gpu.name, toolchain.gpu.computeCapability, toolchain.trt.version);
  const modelOut = join(out, files.id);
  // a dry run shows a placeholder: a real build names its temporary folder after its process and start time
  const tempDir = join(modelOut, options.dryRun ? `.${dirName}.partial` : `.${dirName}.partial-${process.pid}-${Date.now()}`);
  return { modelOut, dirName, engineDir: join(modelOut, dirName), tempDir, tempCache: join(tempDir, "timing.cache"), sharedCache: join(out, "timing-cache", `${dirName}.cache`) };
}

/** Runs trtexec on one prepared graph in the temporary folder and returns its manifest entry. */
async function buildGraph(prepared: PreparedGraph, argv: string[], paths: BuildPaths, trtexec: string, step: string, ctx: { log: (line: string) => void; heartbeatSeconds: number; signal: AbortSignal | undefined }): Promise<EngineEntry> {
  const { graph } = prepared;
  const onnxPath = join(paths.tempDir, "onnx", `${graph}.onnx`);
  await writeFile(onnxPath, prepared.bytes);
  const logPath = join(paths.tempDir, `${graph}.build.log`);
  ctx.log(`${step}: building (${Array.isArray(prepared.fp32Layers) ? `${prepared.fp32Layers.length} FP32 nodes` : `${prepared.fp32Layers} FP32 nodes`}; ${formatCommand([trtexec, ...argv]).length} chars of trtexec arguments)`);
  const t0 = Date.now();
  await runTrtexec(trtexec, argv, logPath, join(paths.modelOut, `${paths.dirName}.${graph}.failed.log`), graph, ctx);
  const planPath = join(paths.tempDir, `${graph}.plan`);
  const planBytes = existsSync(planPath) ? (await stat(planPath)).size : 0;
  if (planBytes === 0) {
    throw new FlorenceError("ENGINE_FAILED", `trtexec exited successfully but wrote no engine for ${graph} (${planPath})`, { fix: "run the trtexec command by hand with --verbose" });
  }
  const seconds = (Date.now() - t0) / 1000;
  await rm(onnxPath, { force: true });
  if (existsSync(paths.tempCache)) {
    await mkdir(dirname(paths.sharedCache), { recursive: true });
    await replaceFile(paths.tempCache, paths.sharedCache);
  }
  ctx.log(`${step}: built in ${seconds.toFixed(1)} s (${(planBytes / 2 ** 20).toFixed(1)} MiB)`);
  return {
    plan: `${graph}.plan`,
    planSha256: await sha256File(planPath),
    planBytes,
    sources: prepared.sources,
    derivation: prepared.derivation,
    onnxSha256: prepared.onnxSha256,
    flags: prepared.flags,
    profiles: prepared.profiles,
    fp32Layers: prepared.fp32Layers,
    inputs: prepared.inputs,
    outputs: prepared.outputs,
    buildSeconds: Math.round(seconds * 10) / 10,
    builtAt: new Date().toISOString(),
  };
}

/** Builds (or, with dryRun, plans) the engines; see the module comment. */
export async function buildEngines(options: BuildEnginesOptions): Promise<BuildEnginesResult> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const precision = options.precision ?? "fp32";
  if (precision !== "fp32" && precision !== "fp16") {
    throw new FlorenceError("INVALID_ARGUMENT", `--precision must be fp32 or fp16, got ${JSON.stringify(precision)}`, {
      fix: "TensorRT builds FP16 engines from the fp32 (default) or fp16 graphs; the quantized graphs use ONNX Runtime-only ops",
    });
  }
  const files = await locateModelFiles(options.model, precision);
  const { limits, maxBeams, maxNewTokens } = await buildLimits(files, options);
  const toolchain = await detectToolchain(options, log);
  const { trtexec, trt, gpu } = toolchain;
  const mode: BuildMode = trt.major >= 11 || options.stronglyTyped ? "strongly-typed-mixed-precision" : "fp16-precision-constraints";
  const paths = buildPaths(options, files, toolchain);
  const { modelOut, dirName, engineDir, tempDir, tempCache, sharedCache } = paths;
  log(`${files.id}: TensorRT ${trt.version} (${trtexec}), ${gpu.name} sm${gpu.computeCapability.replace(".", "")}, ${mode === "strongly-typed-mixed-precision" ? "strongly typed, mixed-precision ONNX" : "--fp16 with FP32 LayerNorm/Softmax/Pow"}`);
  log(`  profiles: batch 1..${limits.maxBatch}, decoder rows 1..${limits.maxRows}, encoder length ${limits.imageTokens + 1}..${limits.imageTokens + limits.maxPrompt}, past 0..${limits.maxPast}`);
  log(`  → ${engineDir}`);

  const oldManifest = await readPreviousManifest(join(engineDir, "manifest.json"));
  const ctx: BuildContext = { files, mode, limits, log };
  const result: BuildEnginesResult = { engineDir, built: [], skipped: [], commands: [], manifest: undefined, dryRun: Boolean(options.dryRun) };
  const argvFor = (graph: EngineGraph, flags: string[]) => [`--onnx=${join(tempDir, "onnx", `${graph}.onnx`)}`, `--saveEngine=${join(tempDir, `${graph}.plan`)}`, ...flags, `--timingCacheFile=${tempCache}`];
  const run = { log, heartbeatSeconds: options.heartbeatSeconds ?? 15, signal: options.signal };

  const entries: Partial<Record<EngineGraph, EngineEntry>> = {};
  let started = false;
  const startTemp = async () => {
    if (started) return;
    started = true;
    await mkdir(modelOut, { recursive: true });
    await removeStaleTemporaries(modelOut, dirName);
    await mkdir(join(tempDir, "onnx"), { recursive: true });
    if (existsSync(sharedCache)) await copyFile(sharedCache, tempCache);
  };
  const pendingCopies: EngineGraph[] = [];
  try {
    let index = 0;
    for await (const prepared of prepareGraphs(ctx)) {
      index++;
      const graph = prepared.graph;
      const step = `[${index}/${ENGINE_GRAPHS.length}] ${graph}`;
      const oldEntry = oldManifest?.graphs[graph];
      if (!options.force && (await isUpToDate(oldEntry, prepared, engineDir, mode, oldManifest))) {
        log(`${step}: up to date`);
        result.skipped.push(graph);
        entries[graph] = oldEntry!;
        pendingCopies.push(graph);
        continue;
      }
      const argv = argvFor(graph, prepared.flags);
      result.commands.push({ graph, argv });
      if (options.dryRun) {
        log(`${step}: would build — ${formatCommand([trtexec, ...argv])}`);
        continue;
      }
      await startTemp();
      entries[graph] = await buildGraph(prepared, argv, paths, trtexec, step, run);
      result.built.push(graph);
    }

    if (options.dryRun || result.built.length === 0) {
      if (!options.dryRun) log(`all ${result.skipped.length} engines are up to date in ${engineDir}`);
      result.manifest = options.dryRun ? undefined : oldManifest;
      return result;
    }
    for (const graph of pendingCopies) {
      const from = join(engineDir, entries[graph]!.plan);
      const to = join(tempDir, entries[graph]!.plan);
      await link(from, to).catch(() => copyFile(from, to));
    }
    const manifest: EngineManifest = {
      schema: MANIFEST_SCHEMA,
      model: { id: files.id, dir: resolve(files.dir), precision },
      tensorrt: { version: trt.version, major: trt.major, trtexec },
      cuda: { driver: gpu.cudaDriver, toolkit: await detectCudaToolkit() },
      gpu: { name: gpu.name, computeCapability: gpu.computeCapability, driver: gpu.driver },
      mode,
      limits: { maxBatch: limits.maxBatch, maxBeams, maxDecoderRows: limits.maxRows, maxPrompt: limits.maxPrompt, maxNewTokens, imageTokens: limits.imageTokens },
      graphs: Object.fromEntries(ENGINE_GRAPHS.filter((g) => entries[g]).map((g) => [g, entries[g]!])) as EngineManifest["graphs"],
      timingCache: sharedCache,
      createdAt: new Date().toISOString(),
    };
    await rm(join(tempDir, "onnx"), { recursive: true, force: true });
    await rm(tempCache, { force: true });
    await writeFile(join(tempDir, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    await replaceAtomically(tempDir, engineDir);
    for (const name of await readdir(modelOut)) {
      if (name.startsWith(`${dirName}.`) && name.endsWith(".failed.log")) await rm(join(modelOut, name), { force: true });
    }
    result.manifest = manifest;
    log(`built ${result.built.join(", ")}${result.skipped.length ? `; kept ${result.skipped.join(", ")}` : ""} → ${engineDir}`);
    return result;
  } finally {
    if (started && existsSync(tempDir)) await rm(tempDir, { recursive: true, force: true });
  }
}

/** Image tokens per image: the vision encoder's output length, else the processor's image_seq_length. */
async function imageTokenCount(files: ModelFiles): Promise<number> {
  const path = files.graphs.vision_encoder;
  if (path) {
    const model = parseModel(new Uint8Array(await readFile(path)));
    const length = tensorTypeOf(model.graph!.output[0]!)?.shape?.[1];
    if (typeof length === "number" && length > 0) return length;
  }
  for (const key of ["image_seq_length", "num_image_tokens"]) {
    const value = files.imageProcessor[key];
    if (typeof value === "number" && Number.isInteger(value) && value > 0) return value;
  }
  throw new FlorenceError("MODEL_FILE_INVALID", `cannot tell how many tokens an image makes: the vision encoder's output length is symbolic and ${files.imageProcessorSource} has no image_seq_length`, {
    fix: "add \"image_seq_length\": 577 (Florence-2 at 768×768) to the image processor config",
  });
}
