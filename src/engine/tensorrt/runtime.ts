/**
 * The TensorRT backend: serialized engines (.plan) run through libnvinfer's C++ runtime, called by vtable slot
 * (abi.ts) through koffi (ffi.ts), with CUDA memory and streams from cuda.ts.
 *
 * - `TensorRtEngine` implements the Engine seam: `loadGraph(name, onnxPath)` loads `<engineDir>/<name>.plan`
 *   after checking manifest.json against this GPU, this TensorRT and the ONNX file it was built from.
 * - `TensorRtEngine.createDecoder` implements DecoderStep with the KV cache on the GPU (tensorrt_decoder.ts: workspaces kept
 *   between generations, CUDA graphs for decoder steps, zero-copy on Jetson); the TensorRT objects are in graph.ts.
 * - `findEngines` / `openTensorRt` are what the backend choice (`--backend auto|tensorrt`) needs.
 *
 * Engines live in `<root>/<model-id>/<gpu>-sm<cc>-trt<version>/` (engineFolderName) with a manifest.json
 * (EngineManifest) written by `florence-edge build-engines`.
 */
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { open, readdir, readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { type DecoderLayout, type DecoderOptions, type DecoderStep, type Engine, engineDisposed, type Graph } from "../engine.ts";
import { FlorenceError } from "../../errors.ts";
import { selfCheckFailure } from "./abi.ts";
import { type CudaOpenOptions, CudaRuntime, type DeviceBuffer, formatCudaVersion } from "./cuda.ts";
import { DecoderWorkspaces, type DecoderStats } from "./decoder_workspace.ts";
import { allocNative, type ApivMethods, bindApivObject, callAsync, dimsToArray, type Pointer, readPointer } from "./ffi.ts";
import { type TensorRtLibrary, type TensorRtLibraryOptions, tryLoadTensorRt } from "./library.ts";
import { TensorRtDecoder } from "./tensorrt_decoder.ts";
import { createContext, dataTypeName, dataTypeOf, type EngineHandle, type EngineShared, type IoTensor, REBUILD, TensorRtGraph, TrtRuntime } from "./graph.ts";
import { type EngineEntry, type EngineManifest, engineDirName, gpuKey, parseManifest } from "./manifest.ts";

// ---------------------------------------------------------------------------------------------------------------
// Machine, manifest, engine folders

/** What an engine is tied to: the GPU and the TensorRT version it was built with. */
export interface MachineInfo {
  /** From the driver; "GPU" when libcuda cannot be opened. */
  gpuName: string;
  /** "8.7", "9.0". */
  computeCapability: string;
  /** "10.3.0", from getInferLibVersion. */
  tensorrtVersion: string;
  /** As cudaRuntimeGetVersion encodes it (12060). */
  cudaRuntimeVersion: number;
  cudaDriverVersion: number;
  /** Jetson: GPU and CPU share memory. */
  integrated: boolean;
}

export type { EngineEntry, EngineManifest } from "./manifest.ts";
export { MIN_TRT_VERSION, type TensorRtLibrary, type TensorRtLibraryOptions, tryLoadTensorRt } from "./library.ts";

/** The folder a GPU and TensorRT version map to (manifest.ts engineDirName): `geforce-rtx-4090-sm89-trt10.3.0`. */
export function engineFolderName(machine: Pick<MachineInfo, "gpuName" | "computeCapability" | "tensorrtVersion">): string {
  return engineDirName(machine.gpuName, machine.computeCapability, machine.tensorrtVersion);
}

function manifestError(path: string, message: string): FlorenceError {
  return new FlorenceError("MODEL_FILE_INVALID", `${path}: ${message}`, { fix: `rebuild the engines: ${REBUILD} DIR` });
}

export async function readManifest(engineDir: string): Promise<EngineManifest> {
  const path = join(engineDir, "manifest.json");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (cause) {
    throw new FlorenceError("MODEL_FILE_MISSING", `no TensorRT engines in ${engineDir} (${path} not found)`, { fix: `build them: ${REBUILD} DIR`, cause });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw manifestError(path, `not valid JSON (${(cause as Error).message})`);
  }
  return parseManifest(json, path, `${REBUILD} DIR`);
}

/** Refuses engines built for another GPU or TensorRT version, saying how to rebuild. */
export function checkManifest(manifest: EngineManifest, machine: MachineInfo, engineDir: string, modelDir?: string): void {
  const problems: string[] = [];
  if (manifest.tensorrt.version !== machine.tensorrtVersion) problems.push(`TensorRT ${manifest.tensorrt.version} (this machine has ${machine.tensorrtVersion})`);
  if (manifest.gpu.computeCapability !== machine.computeCapability) problems.push(`compute capability ${manifest.gpu.computeCapability} (this GPU is ${machine.computeCapability})`);
  else if (machine.gpuName !== "GPU" && gpuKey(manifest.gpu.name) !== gpuKey(machine.gpuName)) problems.push(`GPU ${manifest.gpu.name} (this GPU is ${machine.gpuName})`);
  if (problems.length > 0) {
    throw new FlorenceError("ENGINE_UNAVAILABLE", `the TensorRT engines in ${engineDir} were built for ${problems.join(" and ")}`, {
      fix: `TensorRT engines only run on the GPU and TensorRT version they were built with: rebuild them on this machine with ${REBUILD} ${modelDir ?? "DIR"}`,
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The machine: CUDA and libnvinfer (library.ts)

export function describeMachine(cuda: CudaRuntime, trt: TensorRtLibrary): MachineInfo {
  const device = cuda.deviceInfo();
  return {
    gpuName: device.name ?? "GPU",
    computeCapability: `${device.computeCapability.major}.${device.computeCapability.minor}`,
    tensorrtVersion: trt.versionText,
    cudaRuntimeVersion: cuda.runtimeVersion,
    cudaDriverVersion: cuda.driverVersion,
    integrated: device.integrated,
  };
}

export interface MachineOptions {
  cuda?: CudaOpenOptions;
  tensorrt?: TensorRtLibraryOptions;
}

/** CUDA + TensorRT on this machine, or why not. */
export function detectMachine(options: MachineOptions = {}): { ok: true; machine: MachineInfo; cuda: CudaRuntime; trt: TensorRtLibrary } | { ok: false; reason: string } {
  const cuda = CudaRuntime.tryOpen(options.cuda);
  if (!cuda.ok) return cuda;
  const trt = tryLoadTensorRt(options.tensorrt);
  if (!trt.ok) return trt;
  return { ok: true, machine: describeMachine(cuda.cuda, trt.trt), cuda: cuda.cuda, trt: trt.trt };
}

export type EngineSearch = { ok: true; engineDir: string; manifest: EngineManifest; machine: MachineInfo } | { ok: false; reason: string };

/**
 * Engines for `modelId` built on this machine's GPU and TensorRT version, under any of `roots`
 * (e.g. `<cache>/engines` and the package's engines/). Never throws: the reason says what is missing.
 */
export async function findEngines(roots: string | readonly string[], modelId: string, options: MachineOptions & { machine?: MachineInfo } = {}): Promise<EngineSearch> {
  let machine = options.machine;
  if (!machine) {
    const detected = detectMachine(options);
    if (!detected.ok) return detected;
    machine = detected.machine;
  }
  const folder = engineFolderName(machine);
  const elsewhere: string[] = [];
  for (const root of typeof roots === "string" ? [roots] : roots) {
    const engineDir = join(root, modelId, folder);
    if (existsSync(join(engineDir, "manifest.json"))) {
      try {
        const manifest = await readManifest(engineDir);
        checkManifest(manifest, machine, engineDir);
        return { ok: true, engineDir, manifest, machine };
      } catch (error) {
        return { ok: false, reason: (error as Error).message };
      }
    }
    try {
      for (const entry of await readdir(join(root, modelId))) if (existsSync(join(root, modelId, entry, "manifest.json"))) elsewhere.push(join(root, modelId, entry));
    } catch {
      // no engines for this model under this root
    }
  }
  const searched = (typeof roots === "string" ? [roots] : roots).map((r) => join(r, modelId, folder)).join(", ");
  return {
    ok: false,
    reason: `no TensorRT engines for ${modelId} on ${machine.gpuName} (sm${machine.computeCapability.replace(".", "")}, TensorRT ${machine.tensorrtVersion}) in ${searched}${elsewhere.length ? `; engines for other machines: ${elsewhere.join(", ")}` : ""} — build them with ${REBUILD} MODEL_DIR`,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The engine

export interface TensorRtOptions extends MachineOptions {
  /** The engine folder (manifest.json and the .plan files): usually what findEngines returned. */
  engineDir: string;
  /** The model folder the engines were built from: for ONNX freshness checks and rebuild hints. */
  modelDir?: string;
  /**
   * How loadGraph checks that a plan was built from the ONNX file it is asked for: "size" (default: the byte
   * count recorded in the manifest), "sha256" (hashes the file; slower), "none".
   */
  verifyOnnx?: "size" | "sha256" | "none";
  log?: (line: string) => void;
  /** Also pass TensorRT's info messages to `log`. */
  verbose?: boolean;
  /**
   * CUDA graphs for decoder steps: each of the first `steps` steps (default 128) is captured the first time it
   * runs and replayed with one launch afterwards; `false` runs every step kernel by kernel.
   */
  cudaGraphs?: false | { steps?: number };
  /**
   * Let TensorRT read inputs and write outputs in mapped host memory instead of copying (default: on GPUs that
   * share the CPU's memory — Jetson — off on desktop GPUs, where every access would cross PCIe).
   */
  zeroCopy?: boolean | "auto";
  /** Decoder workspaces (KV cache, step contexts and their graphs) kept between generations (default 2). */
  workspaces?: number;
}

/** What the TensorRT backend did, for benchmarks and the hardware test. */
export interface TensorRtStats {
  zeroCopy: boolean;
  decoder: DecoderStats;
}

/** Decoder steps that get CUDA graphs by default: captions and most detections; long OCR runs its tail eagerly. */
export const DEFAULT_GRAPH_STEPS = 128;

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Uint8Array);
  return hash.digest("hex");
}

export class TensorRtEngine implements Engine {
  readonly backend = "tensorrt" as const;
  /** The KV cache stays on the GPU, in workspaces over this engine's own graphs. */
  readonly decoderCache = "device" as const;
  readonly description: string;
  readonly engineDir: string;
  readonly manifest: EngineManifest;
  readonly machine: MachineInfo;
  readonly #shared: EngineShared;
  readonly #options: TensorRtOptions;
  readonly #graphs = new Set<TensorRtGraph>();
  readonly #decoders = new Set<TensorRtDecoder>();
  readonly #workspaces: DecoderWorkspaces;
  #disposed = false;

  private constructor(options: TensorRtOptions, manifest: EngineManifest, machine: MachineInfo, shared: EngineShared) {
    this.#options = options;
    this.engineDir = options.engineDir;
    this.manifest = manifest;
    this.machine = machine;
    this.#shared = shared;
    this.#workspaces = new DecoderWorkspaces(shared);
    const cuda = shared.cuda;
    this.description = `TensorRT ${machine.tensorrtVersion} on ${machine.gpuName} (sm${machine.computeCapability.replace(".", "")}), CUDA runtime ${formatCudaVersion(cuda.runtimeVersion)}, driver ${formatCudaVersion(cuda.driverVersion)}, engines ${options.engineDir}`;
  }

  /** Opens CUDA and TensorRT, checks the manifest against this machine and self-checks the ABI table. */
  static async open(options: TensorRtOptions): Promise<TensorRtEngine> {
    const manifest = await readManifest(options.engineDir);
    const cuda = CudaRuntime.open(options.cuda);
    const loaded = tryLoadTensorRt({ ...options.tensorrt, preferMajor: manifest.tensorrt.major });
    if (!loaded.ok) throw new FlorenceError("ENGINE_UNAVAILABLE", loaded.reason, { fix: "install TensorRT 10 or 11 (JetPack 6/7 include it), or use --backend onnxruntime" });
    const machine = describeMachine(cuda, loaded.trt);
    checkManifest(manifest, machine, options.engineDir, options.modelDir);
    const graphSteps = options.cudaGraphs === false ? 0 : (options.cudaGraphs?.steps ?? DEFAULT_GRAPH_STEPS);
    const workspaces = options.workspaces ?? 2;
    if (!Number.isInteger(graphSteps) || graphSteps < 0) throw new FlorenceError("INVALID_ARGUMENT", `cudaGraphs.steps must be a non-negative integer, got ${graphSteps}`);
    if (!Number.isInteger(workspaces) || workspaces < 0) throw new FlorenceError("INVALID_ARGUMENT", `workspaces must be a non-negative integer, got ${workspaces}`);
    const canMap = cuda.canMapHostMemory();
    const zeroCopy = (options.zeroCopy ?? "auto") === "auto" ? machine.integrated && canMap : options.zeroCopy === true;
    if (zeroCopy && !canMap) throw new FlorenceError("ENGINE_UNAVAILABLE", `${machine.gpuName} cannot map host memory`, { fix: "leave zeroCopy at auto" });
    const runtime = await TrtRuntime.create(loaded.trt, options.log, options.verbose === true);
    let empty: DeviceBuffer;
    try {
      empty = cuda.allocDevice(256);
    } catch (error) {
      await runtime.dispose();
      throw error;
    }
    return new TensorRtEngine(options, manifest, machine, {
      cuda,
      runtime,
      empty,
      engineDir: options.engineDir,
      modelDir: options.modelDir,
      zeroCopy,
      graphSteps,
      workspaces,
      log: options.log,
    });
  }

  #check(): void {
    if (this.#disposed) throw engineDisposed("TensorRT");
  }

  /** TensorRT cannot build the merged decoder's If node: it always runs the split pair (engines cut from the merged graph). */
  decoderLayout(_hasMerged: boolean): DecoderLayout {
    return "split";
  }

  /** Whether the manifest has an engine for a graph (TensorRT runs decoder_model + decoder_with_past_model, never decoder_model_merged). */
  hasGraph(name: string): boolean {
    return Object.hasOwn(this.manifest.graphs, name);
  }

  /**
   * Loads `<engineDir>/<plan>` for graph `name`. `path` is the ONNX file the caller would otherwise run: when it
   * exists, it must be the one the plan was built from (see verifyOnnx). A `.plan` path is loaded as it is.
   */
  async loadGraph(name: string, path: string): Promise<Graph> {
    this.#check();
    const record = this.manifest.graphs[name];
    const modelDir = this.#options.modelDir ?? "DIR";
    let planPath: string;
    if (path.endsWith(".plan")) planPath = path;
    else {
      if (!record) {
        throw new FlorenceError("MODEL_FILE_MISSING", `no TensorRT engine for graph ${name} in ${this.engineDir} (it has ${Object.keys(this.manifest.graphs).join(", ")})`, {
          fix: name === "decoder_model_merged" ? "TensorRT runs decoder_model + decoder_with_past_model instead of the merged decoder: load those" : `rebuild the engines: ${REBUILD} ${modelDir}`,
        });
      }
      planPath = join(this.engineDir, record.plan);
      await this.#verifyOnnx(name, path, record);
    }
    const graph = await this.#deserialize(name, planPath);
    this.#graphs.add(graph);
    return graph;
  }

  async #verifyOnnx(name: string, onnxPath: string, record: EngineEntry): Promise<void> {
    const mode = this.#options.verifyOnnx ?? "size";
    if (mode === "none" || !onnxPath || !existsSync(onnxPath)) return;
    // the model file the plan was made from (for the split decoders: the merged decoder they were cut from)
    const source = record.sources.find((s) => basename(s.file) === basename(onnxPath)) ?? record.sources[0];
    if (!source) return;
    const file = basename(onnxPath) === basename(source.file) ? onnxPath : join(dirname(onnxPath), basename(source.file));
    if (!existsSync(file)) return;
    const stale = (what: string) =>
      new FlorenceError("ENGINE_UNAVAILABLE", `the TensorRT engine for ${name} in ${this.engineDir} was built from another ${basename(file)} (${what})`, {
        fix: `rebuild the engines: ${REBUILD} ${this.#options.modelDir ?? "DIR"}`,
      });
    const bytes = (await stat(file)).size;
    if (bytes !== source.bytes) throw stale(`${source.bytes} bytes then, ${bytes} now`);
    if (mode === "sha256") {
      const digest = await sha256File(file);
      if (digest !== source.sha256.toLowerCase()) throw stale(`sha256 ${source.sha256.slice(0, 12)}… then, ${digest.slice(0, 12)}… now`);
    }
  }

  async #deserialize(name: string, planPath: string): Promise<TensorRtGraph> {
    const { runtime, cuda } = this.#shared;
    const table = runtime.trt.table;
    let handle;
    try {
      handle = await open(planPath, "r");
    } catch (cause) {
      throw new FlorenceError("MODEL_FILE_MISSING", `TensorRT engine file for ${name} not found: ${planPath}`, { fix: `rebuild the engines: ${REBUILD} ${this.#options.modelDir ?? "DIR"}`, cause });
    }
    // the plan goes into native memory: the async call must not depend on a movable JS buffer
    let blob;
    try {
      const { size } = await handle.stat();
      blob = allocNative(size);
      for (let offset = 0; offset < size; ) {
        const { bytesRead } = await handle.read(blob.view, offset, Math.min(size - offset, 64 << 20), offset);
        if (bytesRead === 0) throw new FlorenceError("MODEL_FILE_INVALID", `${planPath} ended after ${offset} of ${size} bytes`);
        offset += bytesRead;
      }
    } catch (error) {
      blob?.free();
      throw error;
    } finally {
      await handle.close();
    }
    let engineWrapper: Pointer | null;
    try {
      // deserialising logs from TensorRT's threads: a synchronous call would deadlock on the first message
      engineWrapper = await callAsync(runtime.methods.deserializeCudaEngine, runtime.impl, blob.address, blob.bytes);
    } finally {
      blob.free();
    }
    if (engineWrapper === null) {
      const said = runtime.takeRecent();
      throw new FlorenceError("ENGINE_UNAVAILABLE", `TensorRT ${runtime.trt.versionText} could not load ${planPath}${said ? `: ${said}` : ""}`, {
        fix: `the plan is damaged or was built with another TensorRT or GPU: rebuild it with ${REBUILD} ${this.#options.modelDir ?? "DIR"}`,
      });
    }
    const destroyEngine = () => runtime.destroyWrapper(engineWrapper!, "ICudaEngine");
    try {
      const engineImpl = readPointer(engineWrapper, table.wrappers.ICudaEngine.implOffset);
      const engine = engineImpl === null ? undefined : bindApivObject("VCudaEngine", engineImpl, table);
      const engineCheck = selfCheckFailure(table, runtime.trt.version, [{ what: "VCudaEngine.getPImpl()", expected: engineImpl === null ? null : engineWrapper, actual: engine ? engine.getPImpl(engineImpl!) : null }]);
      if (engineCheck || !engine) throw new FlorenceError("ENGINE_UNAVAILABLE", engineCheck!, { fix: "run `florence-edge check-trt-abi --include <TensorRT include dir>`" });
      const io = this.#introspect(name, planPath, engine, engineImpl!);
      const handle: EngineHandle = { wrapper: engineWrapper, impl: engineImpl!, methods: engine };
      const context = await createContext(this.#shared, handle, planPath);
      if (this.#options.verbose) this.#options.log?.(`TensorRT: loaded ${name} from ${planPath} (${io.size} tensors, ${(Number(engine.getDeviceMemorySizeV2(engineImpl!)) / 2 ** 20).toFixed(1)} MiB of activations)`);
      let stream;
      try {
        stream = cuda.createStream();
      } catch (error) {
        await runtime.destroyWrapper(context.wrapper, "IExecutionContext");
        context.free();
        throw error;
      }
      return new TensorRtGraph(name, planPath, this.#shared, handle, io, context, stream);
    } catch (error) {
      await destroyEngine();
      throw error;
    }
  }

  #introspect(name: string, planPath: string, engine: ApivMethods["VCudaEngine"], impl: Pointer): Map<string, IoTensor> {
    const table = this.#shared.runtime.trt.table;
    const enums = table.enums;
    const io = new Map<string, IoTensor>();
    const profiles = engine.getNbOptimizationProfiles(impl);
    const count = engine.getNbIOTensors(impl);
    const refuse = (message: string) =>
      new FlorenceError("MODEL_FILE_INVALID", `TensorRT engine ${planPath} (${name}): ${message}`, { fix: `rebuild it with ${REBUILD} ${this.#options.modelDir ?? "DIR"}` });
    for (let i = 0; i < count; i++) {
      const tensorName = engine.getIOTensorName(impl, i);
      if (tensorName === null) throw refuse(`I/O tensor ${i} has no name`);
      const mode = engine.getTensorIOMode(impl, tensorName);
      if (mode !== enums.TensorIOMode["kINPUT"] && mode !== enums.TensorIOMode["kOUTPUT"]) throw refuse(`${tensorName} is neither input nor output`);
      const input = mode === enums.TensorIOMode["kINPUT"];
      const dataType = engine.getTensorDataType(impl, tensorName);
      const type = dataTypeOf(table, dataType);
      if (!type) throw refuse(`${tensorName} is ${dataTypeName(table, dataType)}; engine inputs and outputs must be float32, float16, int64, int32, int8, uint8 or bool`);
      if (engine.getTensorFormat(impl, tensorName) !== enums.TensorFormat["kLINEAR"]) throw refuse(`${tensorName} is not in linear (row-major) format`);
      if (engine.isShapeInferenceIO(impl, tensorName)) throw refuse(`${tensorName} is a shape tensor, which this runtime does not feed`);
      const shape = dimsToArray(engine.getTensorShape(impl, tensorName));
      const ranges = [];
      if (input) {
        for (let p = 0; p < profiles; p++) {
          const at = (selector: string) => dimsToArray(engine.getProfileShape(impl, tensorName, p, enums.OptProfileSelector[selector]!));
          ranges.push({ min: at("kMIN"), opt: at("kOPT"), max: at("kMAX") });
        }
      }
      io.set(tensorName, { name: tensorName, input, type: type.type, elementBytes: type.bytes, shape, profiles: ranges });
    }
    return io;
  }

  /**
   * A DecoderStep over this engine's decoder_model / decoder_with_past_model (and embed_tokens) graphs, with the
   * KV cache on the GPU (tensorrt_decoder.ts).
   */
  async createDecoder(options: DecoderOptions): Promise<DecoderStep> {
    this.#check();
    const decoder = await TensorRtDecoder.create(this.#shared, this.#workspaces, options, (d) => this.#decoders.delete(d));
    this.#decoders.add(decoder);
    return decoder;
  }

  /** GPU memory use, for logs. */
  memory(): { freeBytes: number; totalBytes: number; device: number; pinned: number; deviceBytes: number; pinnedBytes: number; graphs: number } {
    return { ...this.#shared.cuda.memoryInfo(), ...this.#shared.cuda.liveAllocations() };
  }

  /** CUDA graph and zero-copy use so far. */
  stats(): TensorRtStats {
    return { zeroCopy: this.#shared.zeroCopy, decoder: this.#workspaces.stats() };
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    const decoders = [...this.#decoders];
    this.#decoders.clear();
    await Promise.all(decoders.map((d) => d.dispose()));
    await this.#workspaces.dispose();
    const graphs = [...this.#graphs];
    this.#graphs.clear();
    for (const graph of graphs) await graph.dispose();
    this.#shared.empty.free();
    await this.#shared.runtime.dispose();
  }
}

/** What createEngine needs for `--backend tensorrt`: a TensorRtEngine over an engine folder. */
export async function openTensorRt(options: TensorRtOptions): Promise<TensorRtEngine> {
  return TensorRtEngine.open(options);
}
