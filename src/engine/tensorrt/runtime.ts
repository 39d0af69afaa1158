/**
 * The TensorRT backend: serialized engines (.plan) run through libnvinfer's C++ runtime, called by vtable slot
 * (abi.ts) through koffi (ffi.ts), with CUDA memory and streams from cuda.ts.
 *
 * - `TensorRtEngine` implements the Engine seam: `loadGraph(name, onnxPath)` loads `<engineDir>/<name>.plan`
 *   after checking manifest.json against this GPU, this TensorRT and the ONNX file it was built from.
 * - `TensorRtEngine.createDecoder` implements DecoderStep with the KV cache on the GPU: per step only the tokens go
 *   up and the logits come down; every buffer is allocated when the decoder is created.
 * - `findEngines` / `openTensorRt` are what the backend choice (`--backend auto|tensorrt`) needs.
 *
 * Engines live in `<root>/<model-id>/<gpu>-sm<cc>-trt<version>/` (engineFolderName) with a manifest.json
 * (EngineManifest) written by `npm run build:engines`.
 */
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { open, readdir, readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { checkFeeds, elementCount, type Engine, tensor, type Graph, type Tensor, type TensorData, type TensorType, type ValueInfo } from "../engine.ts";
import { float32ToFloat16, fromHalf } from "../float16.ts";
import { FlorenceError } from "../../errors.ts";
import type { DecoderOptions, DecoderStep } from "../../florence/decoder.ts";
import { type AbiTable, abiTableFor, formatTrtVersion, selfCheckFailure, SUPPORTED_TRT_MAJORS } from "./abi.ts";
import { type CudaOpenOptions, CudaRuntime, type CudaStream, type DeviceBuffer, formatCudaVersion, type PinnedBuffer } from "./cuda.ts";
import {
  allocDims,
  allocNative,
  type ApivMethods,
  bindApivObject,
  bindNvInfer,
  callAsync,
  createNativeLogger,
  dimsToArray,
  FFI_LAYOUTS,
  LIBRARY_DIRS,
  type NativeDims,
  type NativeLogger,
  type NvInferApi,
  openLibrary,
  type Pointer,
  readPointer,
  SONAMES,
  wrapperDeleter,
} from "./ffi.ts";
import { type EngineEntry, type EngineManifest, engineDirName, gpuKey, parseManifest } from "./manifest.ts";

const REBUILD = "npm run build:engines -- --model";

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
// The library

export interface TensorRtLibraryOptions {
  /** libnvinfer files or sonames to try first. */
  libraries?: readonly string[];
  /** More directories to look for libnvinfer in. */
  searchDirs?: readonly string[];
  /** Try this major's soname first (the version the engines were built with). */
  preferMajor?: number;
}

export interface TensorRtLibrary {
  readonly api: NvInferApi;
  /** getInferLibVersion(): major·10000 + minor·100 + patch. */
  readonly version: number;
  readonly versionText: string;
  readonly table: AbiTable;
}

/** Opens libnvinfer (.so.11, .so.10), checks getInferLibVersion and picks the ABI table. Never throws. */
export function tryLoadTensorRt(options: TensorRtLibraryOptions = {}): { ok: true; trt: TensorRtLibrary } | { ok: false; reason: string } {
  const sonames = [...SONAMES.nvinfer].sort((a, b) => Number(b.endsWith(`.so.${options.preferMajor}`)) - Number(a.endsWith(`.so.${options.preferMajor}`)));
  const candidates = [...(options.libraries ?? []), ...sonames];
  const library = openLibrary(candidates, [...(options.searchDirs ?? []), ...LIBRARY_DIRS.nvinfer]);
  if ("failures" in library) return { ok: false, reason: `TensorRT not found (tried ${candidates.join(", ")}): ${library.failures.join("; ") || "no such files"}` };
  const api = bindNvInfer(library);
  const version = api.getInferLibVersion();
  const versionText = formatTrtVersion(version);
  const table = abiTableFor(version);
  if (!table) return { ok: false, reason: `${library.path} is TensorRT ${versionText}; this runtime supports TensorRT ${SUPPORTED_TRT_MAJORS.join(" and ")}` };
  const sonameMajor = /\.so\.(\d+)/.exec(library.path)?.[1];
  if (sonameMajor && Number(sonameMajor) !== table.major) return { ok: false, reason: `${library.path} reports TensorRT ${versionText}: soname and getInferLibVersion disagree` };
  const dims = table.structs.Dims64;
  if (FFI_LAYOUTS.Dims64.size !== dims.size || FFI_LAYOUTS.Dims64.d !== dims.offsets["d"] || FFI_LAYOUTS.Dims64.nbDims !== dims.offsets["nbDims"]) {
    return { ok: false, reason: `koffi lays out Dims64 as ${JSON.stringify(FFI_LAYOUTS.Dims64)}, TensorRT ${table.major} as ${JSON.stringify(dims)}` };
  }
  return { ok: true, trt: { api, version, versionText, table } };
}

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
// TensorRT objects

const SEVERITY = ["internal error", "error", "warning", "info", "verbose"] as const;

function dataTypeOf(table: AbiTable, value: number): { type: TensorType; bytes: number } | undefined {
  const name = Object.entries(table.enums.DataType).find(([, v]) => v === value)?.[0];
  const known: Record<string, { type: TensorType; bytes: number }> = {
    kFLOAT: { type: "float32", bytes: 4 },
    kHALF: { type: "float16", bytes: 2 },
    kINT8: { type: "int8", bytes: 1 },
    kINT32: { type: "int32", bytes: 4 },
    kBOOL: { type: "bool", bytes: 1 },
    kUINT8: { type: "uint8", bytes: 1 },
    kINT64: { type: "int64", bytes: 8 },
  };
  return name ? known[name] : undefined;
}

function dataTypeName(table: AbiTable, value: number): string {
  return Object.entries(table.enums.DataType).find(([, v]) => v === value)?.[0] ?? `DataType ${value}`;
}

/** One IRuntime with its logger: the root every engine of a TensorRtEngine hangs from. */
class TrtRuntime {
  readonly trt: TensorRtLibrary;
  readonly wrapper: Pointer;
  readonly impl: Pointer;
  readonly methods: ApivMethods["VRuntime"];
  readonly #logger: NativeLogger;
  /** Recent warnings and errors, for error messages. */
  readonly #recent: string[];
  #disposed = false;

  private constructor(trt: TensorRtLibrary, logger: NativeLogger, recent: string[], wrapper: Pointer, impl: Pointer, methods: ApivMethods["VRuntime"]) {
    this.trt = trt;
    this.#logger = logger;
    this.#recent = recent;
    this.wrapper = wrapper;
    this.impl = impl;
    this.methods = methods;
  }

  static async create(trt: TensorRtLibrary, log: ((line: string) => void) | undefined, verbose: boolean): Promise<TrtRuntime> {
    const recent: string[] = [];
    const logger = createNativeLogger(trt.table, (severity, message) => {
      const line = `TensorRT ${SEVERITY[severity] ?? severity}: ${message}`;
      if (severity <= 2) {
        recent.push(line);
        if (recent.length > 16) recent.shift();
      }
      if (severity <= 2 || (verbose && severity <= 3)) log?.(line);
    });
    let wrapper: Pointer | null;
    try {
      // creating the runtime may log from TensorRT's threads: run it off the JS thread
      wrapper = await callAsync(trt.api.createInferRuntime_INTERNAL, logger.object, trt.version);
    } catch (cause) {
      logger.dispose();
      throw new FlorenceError("ENGINE_UNAVAILABLE", `createInferRuntime failed: ${(cause as Error).message}`, { cause });
    }
    if (wrapper === null) {
      logger.dispose();
      throw new FlorenceError("ENGINE_UNAVAILABLE", `TensorRT ${trt.versionText} could not create a runtime${recent.length ? `: ${recent.join("; ")}` : ""}`, {
        fix: "check that the CUDA driver works (nvidia-smi) and that TensorRT's libraries match the installed CUDA",
      });
    }
    const table = trt.table;
    const impl = readPointer(wrapper, table.wrappers.IRuntime.implOffset);
    const failure =
      impl === null
        ? selfCheckFailure(table, trt.version, [{ what: "IRuntime::mImpl", expected: null, actual: null }])
        : (() => {
            const methods = bindApivObject("VRuntime", impl, table);
            return selfCheckFailure(table, trt.version, [
              { what: "VRuntime.getPImpl()", expected: wrapper, actual: methods.getPImpl(impl) },
              { what: "VRuntime.getLogger()", expected: logger.object, actual: methods.getLogger(impl) },
            ]);
          })();
    if (failure) {
      // nothing more is called through an untrusted table: the runtime and logger are left to the process
      throw new FlorenceError("ENGINE_UNAVAILABLE", failure, {
        fix: "run `npm run check:trt-abi -- --include <TensorRT include dir>` and update src/engine/tensorrt/abi.ts; meanwhile use --backend onnxruntime",
      });
    }
    return new TrtRuntime(trt, logger, recent, wrapper, impl!, bindApivObject("VRuntime", impl!, table));
  }

  /** The warnings and errors TensorRT logged since the last call. */
  takeRecent(): string {
    const text = this.#recent.join("; ");
    this.#recent.length = 0;
    return text;
  }

  async destroyWrapper(wrapper: Pointer, kind: "IRuntime" | "ICudaEngine" | "IExecutionContext"): Promise<void> {
    const slot = this.trt.table.wrappers[kind].vtable.indexOf("~deleting");
    await callAsync(wrapperDeleter(wrapper, slot), wrapper);
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await this.destroyWrapper(this.wrapper, "IRuntime");
    this.#logger.dispose();
  }
}

interface IoTensor {
  readonly name: string;
  readonly input: boolean;
  readonly type: TensorType;
  readonly elementBytes: number;
  /** The engine's shape, -1 where it is set at run time. */
  readonly shape: readonly number[];
  /** Inputs: per optimization profile. */
  readonly profiles: readonly { readonly min: readonly number[]; readonly opt: readonly number[]; readonly max: readonly number[] }[];
}

/** An execution context with the calls the graph and the decoder make, each skipped when nothing changed. */
class TrtContext {
  readonly wrapper: Pointer;
  readonly impl: Pointer;
  readonly methods: ApivMethods["VExecutionContext"];
  readonly #dims: NativeDims;
  readonly #shapes = new Map<string, number[]>();
  readonly #addresses = new Map<string, Pointer>();
  profile = 0;

  constructor(wrapper: Pointer, impl: Pointer, methods: ApivMethods["VExecutionContext"], dims: NativeDims) {
    this.wrapper = wrapper;
    this.impl = impl;
    this.methods = methods;
    this.#dims = dims;
  }

  setShape(name: string, dims: readonly number[]): boolean {
    const previous = this.#shapes.get(name);
    if (previous && previous.length === dims.length && previous.every((d, i) => d === dims[i])) return true;
    if (!this.methods.setInputShape(this.impl, name, this.#dims.set(dims))) {
      this.#shapes.delete(name);
      return false;
    }
    if (previous && previous.length === dims.length) for (let i = 0; i < dims.length; i++) previous[i] = dims[i]!;
    else this.#shapes.set(name, [...dims]);
    return true;
  }

  setAddress(name: string, address: Pointer): boolean {
    if (this.#addresses.get(name) === address) return true;
    if (!this.methods.setTensorAddress(this.impl, name, address)) {
      this.#addresses.delete(name);
      return false;
    }
    this.#addresses.set(name, address);
    return true;
  }

  shapeOf(name: string): number[] {
    return dimsToArray(this.methods.getTensorShape(this.impl, name));
  }

  forgetBindings(): void {
    this.#shapes.clear();
    this.#addresses.clear();
  }

  free(): void {
    this.#dims.free();
  }
}

/** A device buffer and its pinned staging twin, grown on demand (never shrunk). */
interface Staged {
  device: DeviceBuffer | undefined;
  pinned: PinnedBuffer | undefined;
}


function grownSize(bytes: number, current: number): number {
  // 256-byte multiples (TensorRT's alignment), and headroom so slowly growing shapes do not reallocate every run
  return Math.ceil(Math.max(bytes, Math.floor(current * 1.5)) / 256) * 256;
}

/** Shared by every graph of one TensorRtEngine. */
interface EngineShared {
  readonly cuda: CudaRuntime;
  readonly runtime: TrtRuntime;
  /** A non-null address for empty tensors (TensorRT refuses null even for zero bytes). */
  readonly empty: DeviceBuffer;
  readonly engineDir: string;
  readonly modelDir: string | undefined;
}

export class TensorRtGraph implements Graph {
  readonly name: string;
  readonly path: string;
  readonly inputs: readonly ValueInfo[];
  readonly outputs: readonly ValueInfo[];
  /** @internal the decoder binds tensors itself */
  readonly io: ReadonlyMap<string, IoTensor>;
  /** @internal */
  readonly context: TrtContext;
  readonly #shared: EngineShared;
  readonly #engineWrapper: Pointer;
  readonly #stream: CudaStream;
  readonly #staged = new Map<string, Staged>();
  #tail: Promise<unknown> = Promise.resolve();
  #leasedBy: object | undefined;
  #disposed = false;

  /** @internal */
  constructor(name: string, path: string, shared: EngineShared, engineWrapper: Pointer, io: Map<string, IoTensor>, context: TrtContext, stream: CudaStream) {
    this.name = name;
    this.path = path;
    this.#shared = shared;
    this.#engineWrapper = engineWrapper;
    this.io = io;
    this.context = context;
    this.#stream = stream;
    const info = (t: IoTensor): ValueInfo => ({ name: t.name, type: t.type, shape: t.shape.map((d, axis) => (d >= 0 ? d : `${t.name}_dim${axis}`)) });
    this.inputs = [...io.values()].filter((t) => t.input).map(info);
    this.outputs = [...io.values()].filter((t) => !t.input).map(info);
  }

  /** @internal a decoder takes the graph's context for its lifetime */
  lease(owner: object): void {
    this.#check();
    if (this.#leasedBy && this.#leasedBy !== owner) throw new FlorenceError("ENGINE_FAILED", `graph ${this.name} is in use by another decoder`, { fix: "dispose the previous decoder before creating the next" });
    this.#leasedBy = owner;
    this.context.forgetBindings();
  }

  /** @internal */
  release(owner: object): void {
    if (this.#leasedBy === owner) {
      this.#leasedBy = undefined;
      this.context.forgetBindings();
    }
  }

  #check(): void {
    if (this.#disposed) throw new FlorenceError("DISPOSED", `graph ${this.name} was disposed`, { fix: "load the model again" });
  }

  /** @internal fails with TensorRT's own words */
  failure(what: string): FlorenceError {
    const said = this.#shared.runtime.takeRecent();
    return new FlorenceError("ENGINE_FAILED", `TensorRT ${what} for ${this.name} (${this.path})${said ? `: ${said}` : ""}`, {
      fix: `if the engine is stale or was built with other profiles, rebuild it: ${REBUILD} ${this.#shared.modelDir ?? "DIR"}`,
    });
  }

  /** @internal the optimization profile whose ranges hold these input shapes */
  pickProfile(shapes: ReadonlyMap<string, readonly number[]>): number {
    const inputs = [...this.io.values()].filter((t) => t.input);
    const count = inputs[0]?.profiles.length ?? 1;
    for (let p = 0; p < count; p++) {
      const fits = inputs.every((t) => {
        const dims = shapes.get(t.name);
        const range = t.profiles[p];
        return !dims || !range || dims.every((d, axis) => d >= range.min[axis]! && d <= range.max[axis]!);
      });
      if (fits) return p;
    }
    const detail = inputs
      .map((t) => `${t.name} [${shapes.get(t.name)?.join(", ")}] (profiles: ${t.profiles.map((r) => `[${r.min.join(", ")}]..[${r.max.join(", ")}]`).join(", ")})`)
      .join("; ");
    throw new FlorenceError("ENGINE_INPUT_INVALID", `graph ${this.name}: no optimization profile of ${this.path} takes these input shapes: ${detail}`, {
      fix: `rebuild the engines with larger profiles (batch size, beams, lengths): ${REBUILD} ${this.#shared.modelDir ?? "DIR"}`,
    });
  }

  /** @internal */
  selectProfile(profile: number, stream: CudaStream): void {
    if (this.context.profile === profile) return;
    if (!this.context.methods.setOptimizationProfileAsync(this.context.impl, profile, stream.handle)) throw this.failure(`could not select optimization profile ${profile}`);
    this.context.profile = profile;
    this.context.forgetBindings();
  }

  #stage(name: string, bytes: number, pinned: boolean): Staged {
    let staged = this.#staged.get(name);
    if (!staged) {
      staged = { device: undefined, pinned: undefined };
      this.#staged.set(name, staged);
    }
    const cuda = this.#shared.cuda;
    if (!staged.device || staged.device.bytes < bytes) {
      const size = grownSize(bytes, staged.device?.bytes ?? 0);
      staged.device?.free();
      staged.device = undefined;
      staged.device = cuda.allocDevice(size);
    }
    if (pinned && (!staged.pinned || staged.pinned.bytes < bytes)) {
      const size = grownSize(bytes, staged.pinned?.bytes ?? 0);
      staged.pinned?.free();
      staged.pinned = undefined;
      staged.pinned = cuda.allocPinned(size);
    }
    return staged;
  }

  run(feeds: Readonly<Record<string, Tensor>>): Promise<Record<string, Tensor>> {
    // one run at a time: the context and the staging buffers are shared
    const result = this.#tail.then(() => this.#run(feeds));
    this.#tail = result.catch(() => undefined);
    return result;
  }

  async #run(feeds: Readonly<Record<string, Tensor>>): Promise<Record<string, Tensor>> {
    this.#check();
    if (this.#leasedBy) throw new FlorenceError("ENGINE_FAILED", `graph ${this.name} is in use by a decoder`, { fix: "dispose the decoder first" });
    checkFeeds(this, feeds);
    const context = this.context;
    const stream = this.#stream;
    const shapes = new Map<string, readonly number[]>();
    for (const [name, value] of Object.entries(feeds)) shapes.set(name, value.dims);
    this.selectProfile(this.pickProfile(shapes), stream);
    for (const tensor of this.io.values()) {
      if (!tensor.input) continue;
      const fed = feeds[tensor.name]!;
      if (!context.setShape(tensor.name, fed.dims)) throw this.failure(`refused shape [${fed.dims.join(", ")}] for input ${tensor.name}`);
      const bytes = fed.data.byteLength;
      if (bytes === 0) {
        if (!context.setAddress(tensor.name, this.#shared.empty.address)) throw this.failure(`refused the address of input ${tensor.name}`);
        continue;
      }
      const staged = this.#stage(tensor.name, bytes, true);
      new Uint8Array(staged.pinned!.buffer, 0, bytes).set(new Uint8Array(fed.data.buffer, fed.data.byteOffset, bytes));
      stream.copyHostToDevice(staged.device!, staged.pinned!, bytes);
      if (!context.setAddress(tensor.name, staged.device!.address)) throw this.failure(`refused the address of input ${tensor.name}`);
    }
    if (!context.methods.allInputDimensionsSpecified(context.impl)) throw this.failure("reports unspecified input dimensions");
    const outputs: { tensor: IoTensor; dims: number[]; bytes: number; staged: Staged | undefined }[] = [];
    for (const tensor of this.io.values()) {
      if (tensor.input) continue;
      const dims = context.shapeOf(tensor.name);
      if (dims.some((d) => d < 0)) throw this.failure(`cannot tell the shape of output ${tensor.name} before running ([${dims.join(", ")}]; data-dependent shapes are not supported)`);
      const bytes = elementCount(dims) * tensor.elementBytes;
      const staged = bytes > 0 ? this.#stage(tensor.name, bytes, true) : undefined;
      if (!context.setAddress(tensor.name, staged ? staged.device!.address : this.#shared.empty.address)) throw this.failure(`refused the address of output ${tensor.name}`);
      outputs.push({ tensor, dims, bytes, staged });
    }
    if (!context.methods.enqueueV3(context.impl, stream.handle)) throw this.failure("could not enqueue the inference");
    for (const out of outputs) if (out.staged) stream.copyDeviceToHost(out.staged.pinned!, out.staged.device!, out.bytes);
    await stream.synchronizeAsync();
    const result: Record<string, Tensor> = {};
    for (const out of outputs) {
      const host = tensor(out.tensor.type, out.dims);
      if (out.staged) new Uint8Array(host.data.buffer).set(new Uint8Array(out.staged.pinned!.buffer, 0, out.bytes));
      result[out.tensor.name] = host;
    }
    return result;
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    await this.#tail;
    this.#disposed = true;
    const runtime = this.#shared.runtime;
    try {
      await runtime.destroyWrapper(this.context.wrapper, "IExecutionContext");
      await runtime.destroyWrapper(this.#engineWrapper, "ICudaEngine");
    } finally {
      this.context.free();
      for (const staged of this.#staged.values()) {
        staged.device?.free();
        staged.pinned?.free();
      }
      this.#staged.clear();
      this.#stream.destroy();
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The decoder with its KV cache on the GPU

const PAST = /^past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)$/;
const PRESENT = /^present\.(\d+)\.(decoder|encoder)\.(key|value)$/;

interface CacheTensor {
  /** "3.decoder.key" */
  readonly id: string;
  readonly self: boolean;
  readonly heads: number;
  readonly headDim: number;
  readonly elementBytes: number;
  /** Self-attention: two buffers, the past of the next step and its present, swapped every step. Cross: one. */
  readonly buffers: DeviceBuffer[];
  /** Cross-attention spare for reorders that move rows between batch items (allocated when first needed). */
  spare: DeviceBuffer | undefined;
}

function decoderEngineError(graph: string, message: string, fix: string): FlorenceError {
  return new FlorenceError("MODEL_FILE_INVALID", `decoder engine ${graph}: ${message}`, { fix });
}

class TensorRtDecoder implements DecoderStep {
  readonly rows: number;
  readonly #cuda: CudaRuntime;
  readonly #stream: CudaStream;
  readonly #numBeams: number;
  readonly #embed: TensorRtGraph | undefined;
  readonly #first: TensorRtGraph;
  readonly #later: TensorRtGraph;
  readonly #encoderLength: number;
  readonly #hiddenSize: number;
  readonly #vocab: number;
  /** Self-attention capacity in positions: the with-past profile's longest past + 1. */
  readonly #capacity: number;
  readonly #cache = new Map<string, CacheTensor>();
  readonly #ids: DeviceBuffer;
  readonly #idsHost: PinnedBuffer;
  readonly #idsView: BigInt64Array;
  readonly #embeds: DeviceBuffer | undefined;
  readonly #hidden: DeviceBuffer;
  readonly #mask: DeviceBuffer;
  readonly #logits: DeviceBuffer;
  readonly #logitsHost: PinnedBuffer;
  readonly #logitsType: TensorType;
  readonly #logits32: Float32Array;
  readonly #empty: DeviceBuffer;
  /** Outputs a graph computes but the decoder does not keep (a with-past graph's pass-through encoder presents). */
  readonly #sinks = new Map<string, DeviceBuffer>();
  readonly #owned: (DeviceBuffer | PinnedBuffer)[] = [];
  readonly #checkedShapes = new Set<TensorRtGraph>();
  readonly #leaseOwner: object;
  readonly #onDispose: (decoder: TensorRtDecoder) => void;
  /** Which self-attention buffer holds the latest present. */
  #current = 0;
  #steps = 0;
  #disposed = false;

  private constructor(init: {
    cuda: CudaRuntime;
    stream: CudaStream;
    numBeams: number;
    rows: number;
    embed: TensorRtGraph | undefined;
    first: TensorRtGraph;
    later: TensorRtGraph;
    encoderLength: number;
    hiddenSize: number;
    vocab: number;
    capacity: number;
    logitsType: TensorType;
    empty: DeviceBuffer;
    leaseOwner: object;
    onDispose: (decoder: TensorRtDecoder) => void;
  }) {
    this.#leaseOwner = init.leaseOwner;
    this.#onDispose = init.onDispose;
    this.#cuda = init.cuda;
    this.#stream = init.stream;
    this.#numBeams = init.numBeams;
    this.rows = init.rows;
    this.#embed = init.embed;
    this.#first = init.first;
    this.#later = init.later;
    this.#encoderLength = init.encoderLength;
    this.#hiddenSize = init.hiddenSize;
    this.#vocab = init.vocab;
    this.#capacity = init.capacity;
    this.#logitsType = init.logitsType;
    this.#empty = init.empty;
    const cuda = init.cuda;
    const own = <T extends DeviceBuffer | PinnedBuffer>(buffer: T): T => {
      this.#owned.push(buffer);
      return buffer;
    };
    try {
      this.#ids = own(cuda.allocDevice(this.rows * 8));
      this.#idsHost = own(cuda.allocPinned(this.rows * 8));
      this.#idsView = new BigInt64Array(this.#idsHost.buffer, 0, this.rows);
      const embedType = init.embed?.io.get("inputs_embeds");
      this.#embeds = embedType ? own(cuda.allocDevice(this.rows * this.#hiddenSize * embedType.elementBytes)) : undefined;
      const hiddenInput = init.first.io.get("encoder_hidden_states")!;
      this.#hidden = own(cuda.allocDevice(this.rows * this.#encoderLength * this.#hiddenSize * hiddenInput.elementBytes));
      this.#mask = own(cuda.allocDevice(this.rows * this.#encoderLength * 8));
      const logitsBytes = this.rows * this.#vocab * (init.logitsType === "float16" ? 2 : 4);
      this.#logits = own(cuda.allocDevice(logitsBytes));
      this.#logitsHost = own(cuda.allocPinned(logitsBytes));
      this.#logits32 = new Float32Array(this.rows * this.#vocab);
    } catch (error) {
      for (const buffer of this.#owned) buffer.free();
      throw error;
    }
  }

  /** Builds the decoder: validates the engines, allocates every buffer and uploads the encoder outputs. */
  static async create(shared: EngineShared, options: DecoderOptions, onDispose: (decoder: TensorRtDecoder) => void): Promise<TensorRtDecoder> {
    const graph = (name: string): TensorRtGraph | undefined => {
      const graphs = options.graphs;
      const found = graphs instanceof Map ? graphs.get(name) : (graphs as Readonly<Partial<Record<string, Graph>>>)[name];
      if (found && !(found instanceof TensorRtGraph)) throw new FlorenceError("INVALID_ARGUMENT", `graph ${name} is not a TensorRT graph`, { fix: "load every graph of the model with the same TensorRtEngine" });
      return found;
    };
    const first = graph("decoder_model");
    const later = graph("decoder_with_past_model");
    const embed = graph("embed_tokens");
    if (!first || !later) {
      throw new FlorenceError("MODEL_FILE_MISSING", "the TensorRT decoder needs the decoder_model and decoder_with_past_model engines", {
        fix: `TensorRT cannot build the merged decoder (an If node); ${REBUILD} ${shared.modelDir ?? "DIR"} builds the split pair`,
      });
    }
    const numBeams = options.numBeams ?? 1;
    if (!Number.isInteger(numBeams) || numBeams < 1) throw new FlorenceError("INVALID_ARGUMENT", `numBeams must be a positive integer, got ${numBeams}`);
    const hidden = options.encoderHiddenStates;
    const mask = options.encoderAttentionMask;
    if (hidden.dims.length !== 3 || mask.dims.length !== 2 || mask.dims[0] !== hidden.dims[0] || mask.dims[1] !== hidden.dims[1] || mask.type !== "int64") {
      throw new FlorenceError("INVALID_ARGUMENT", `encoder outputs do not fit together: hidden states ${hidden.type}[${hidden.dims.join(", ")}], attention mask ${mask.type}[${mask.dims.join(", ")}]`, {
        fix: "pass the encoder's last_hidden_state [batch, E, D] and its int64 attention mask [batch, E]",
      });
    }
    const [batch, encoderLength, hiddenSize] = hidden.dims as [number, number, number];
    const rows = batch * numBeams;
    const fix = `use decoder engines built from one onnx-community export: ${REBUILD} ${shared.modelDir ?? "DIR"}`;
    for (const g of [first, later]) {
      for (const t of g.io.values()) {
        if (!t.input) continue;
        if (PAST.test(t.name)) continue;
        if (!["input_ids", "inputs_embeds", "encoder_hidden_states", "encoder_attention_mask"].includes(t.name)) throw decoderEngineError(g.name, `takes an input ${t.name} that Florence-2 decoding does not provide`, fix);
        if (t.name === "inputs_embeds" && !embed) throw new FlorenceError("MODEL_FILE_MISSING", `decoder engine ${g.name} takes inputs_embeds, but the embed_tokens engine is not loaded`, { fix: "load embed_tokens with the decoder" });
        if (t.name === "encoder_attention_mask" && t.type !== "int64") throw decoderEngineError(g.name, `encoder_attention_mask is ${t.type}, expected int64`, fix);
        if (t.name === "input_ids" && t.type !== "int64") throw decoderEngineError(g.name, `input_ids is ${t.type}, expected int64`, fix);
      }
      const logits = g.io.get("logits");
      if (!logits || logits.input || (logits.type !== "float32" && logits.type !== "float16")) throw decoderEngineError(g.name, "has no float logits output", fix);
    }
    if (!first.io.get("encoder_hidden_states")?.input) throw decoderEngineError(first.name, "does not take encoder_hidden_states", fix);
    if (![...later.io.values()].some((t) => t.input && PAST.test(t.name))) throw decoderEngineError(later.name, "has no past_key_values inputs", fix);
    if (embed && embed.io.get("input_ids")?.type !== "int64") throw decoderEngineError(embed.name, "input_ids must be int64", fix);
    for (const g of [first, later]) {
      const wanted = g.io.get("inputs_embeds");
      const made = embed?.io.get("inputs_embeds");
      if (wanted?.input && (!made || made.input || made.type !== wanted.type)) throw decoderEngineError(g.name, `takes ${wanted.type} inputs_embeds, but embed_tokens outputs ${made ? made.type : "none"}`, fix);
    }
    const logitsInfo = first.io.get("logits")!;
    if (later.io.get("logits")!.type !== logitsInfo.type) throw decoderEngineError(later.name, "its logits type differs from decoder_model's", fix);
    const vocab = logitsInfo.shape[2] !== undefined && logitsInfo.shape[2] > 0 ? logitsInfo.shape[2] : undefined;
    if (!vocab) throw decoderEngineError(first.name, `logits shape [${logitsInfo.shape.join(", ")}] does not fix the vocabulary size`, fix);

    // capacity: the with-past engine's longest past (profile 0), plus the step that writes one more
    const anyPast = [...later.io.values()].find((t) => t.input && PAST.exec(t.name)?.[2] === "decoder");
    if (!anyPast) throw decoderEngineError(later.name, "has no past_key_values.*.decoder inputs", fix);
    const range = anyPast.profiles[0];
    if (!range) throw decoderEngineError(later.name, "has no optimization profile", fix);
    const capacity = range.max[2]! + 1;
    const batchRange = [range.min[0]!, range.max[0]!];
    if (rows < batchRange[0]! || rows > batchRange[1]!) {
      throw new FlorenceError("ENGINE_INPUT_INVALID", `decoder engines take ${batchRange[0]}..${batchRange[1]} rows (batch × beams), got ${rows}`, {
        fix: `use fewer beams or a smaller batch, or rebuild the engines for more: ${REBUILD} ${shared.modelDir ?? "DIR"}`,
      });
    }

    const leaseOwner = {};
    for (const g of [embed, first, later]) g?.lease(leaseOwner);
    const stream = shared.cuda.createStream();
    let decoder: TensorRtDecoder | undefined;
    try {
      decoder = new TensorRtDecoder({
        cuda: shared.cuda,
        stream,
        numBeams,
        rows,
        embed,
        first,
        later,
        encoderLength,
        hiddenSize,
        vocab,
        capacity,
        logitsType: logitsInfo.type,
        empty: shared.empty,
        leaseOwner,
        onDispose,
      });
      decoder.#allocateCache(options, fix);
      await decoder.#upload(hidden, mask, numBeams);
      return decoder;
    } catch (error) {
      if (decoder) await decoder.dispose();
      else {
        for (const g of [embed, first, later]) g?.release(leaseOwner);
        stream.destroy();
      }
      throw error;
    }
  }

  #allocateCache(options: DecoderOptions, fix: string): void {
    const layout = (t: IoTensor): { heads: number; headDim: number } => {
      const heads = t.shape[1]! > 0 ? t.shape[1]! : options.config?.decoderAttentionHeads;
      const headDim = t.shape[3]! > 0 ? t.shape[3]! : heads && options.config?.dModel ? options.config.dModel / heads : undefined;
      if (!heads || !headDim || !Number.isInteger(headDim)) throw decoderEngineError(this.#later.name, `cannot tell the shape of ${t.name} [${t.shape.join(", ")}]`, "pass the text config (decoderAttentionHeads, dModel)");
      return { heads, headDim };
    };
    for (const t of this.#later.io.values()) {
      const match = t.input ? PAST.exec(t.name) : undefined;
      if (!match) continue;
      const self = match[2] === "decoder";
      const { heads, headDim } = layout(t);
      const positions = self ? this.#capacity : this.#encoderLength;
      const bytes = this.rows * heads * positions * headDim * t.elementBytes;
      const buffers = (self ? [0, 1] : [0]).map(() => {
        const buffer = this.#cuda.allocDevice(bytes);
        this.#owned.push(buffer);
        return buffer;
      });
      this.#cache.set(`${match[1]}.${match[2]}.${match[3]}`, { id: `${match[1]}.${match[2]}.${match[3]}`, self, heads, headDim, elementBytes: t.elementBytes, buffers, spare: undefined });
    }
    const presents = (g: TensorRtGraph) => new Set([...g.io.values()].filter((t) => !t.input && PRESENT.test(t.name)).map((t) => t.name.replace(/^present\./, "")));
    const fromFirst = presents(this.#first);
    const fromLater = presents(this.#later);
    for (const id of fromFirst) if (!this.#cache.has(id)) throw decoderEngineError(this.#first.name, `outputs present.${id}, which ${this.#later.name} does not take back`, fix);
    for (const cache of this.#cache.values()) {
      if (!fromFirst.has(cache.id)) throw decoderEngineError(this.#first.name, `does not output present.${cache.id}, which ${this.#later.name} takes`, fix);
      if (cache.self && !fromLater.has(cache.id)) throw decoderEngineError(this.#later.name, `does not output present.${cache.id}`, fix);
    }
  }

  /** The encoder outputs, repeated per beam as HF's _expand_inputs_for_generation does, converted to the engine's type. */
  async #upload(hidden: Tensor, mask: Tensor, numBeams: number): Promise<void> {
    const hiddenType = this.#first.io.get("encoder_hidden_states")!.type;
    let hiddenData: TensorData = hidden.data;
    if (hidden.type !== hiddenType) {
      if (hidden.type === "float32" && hiddenType === "float16") hiddenData = float32ToFloat16(hidden.data as Float32Array);
      else if (hidden.type === "float16" && hiddenType === "float32") hiddenData = Float32Array.from(hidden.data as Uint16Array, fromHalf);
      else throw new FlorenceError("ENGINE_INPUT_INVALID", `cannot feed ${hidden.type} encoder states to a decoder engine that takes ${hiddenType}`);
    }
    const hiddenRow = hiddenData.byteLength / hidden.dims[0]!;
    const maskRow = mask.data.byteLength / mask.dims[0]!;
    const staging = this.#cuda.allocPinned(this.rows * (hiddenRow + maskRow));
    try {
      const bytes = new Uint8Array(staging.buffer, 0, staging.bytes);
      const hiddenBytes = new Uint8Array(hiddenData.buffer, hiddenData.byteOffset, hiddenData.byteLength);
      const maskBytes = new Uint8Array(mask.data.buffer, mask.data.byteOffset, mask.data.byteLength);
      for (let r = 0; r < this.rows; r++) {
        const item = Math.floor(r / numBeams);
        bytes.set(hiddenBytes.subarray(item * hiddenRow, (item + 1) * hiddenRow), r * hiddenRow);
        bytes.set(maskBytes.subarray(item * maskRow, (item + 1) * maskRow), this.rows * hiddenRow + r * maskRow);
      }
      this.#stream.copyHostToDevice(this.#hidden, staging, this.rows * hiddenRow);
      this.#stream.copyHostToDevice(this.#mask, staging, this.rows * maskRow, 0, this.rows * hiddenRow);
      await this.#stream.synchronizeAsync();
    } finally {
      staging.free();
    }
  }

  #check(): void {
    if (this.#disposed) throw new FlorenceError("DISPOSED", "this decoder was disposed", { fix: "create a new decoder for each generation" });
  }

  #bind(graph: TensorRtGraph, name: string, dims: readonly number[] | undefined, address: Pointer): void {
    const context = graph.context;
    if (dims && !context.setShape(name, dims)) throw graph.failure(`refused shape [${dims.join(", ")}] for ${name}`);
    if (!context.setAddress(name, address)) throw graph.failure(`refused the address of ${name}`);
  }

  async next(tokens: Int32Array): Promise<Float32Array> {
    this.#check();
    if (tokens.length !== this.rows) throw new FlorenceError("INVALID_ARGUMENT", `the decoder has ${this.rows} rows, got ${tokens.length} tokens`);
    const step = this.#steps;
    if (step + 1 > this.#capacity) {
      throw new FlorenceError("ENGINE_INPUT_INVALID", `generation reached ${step} tokens, the most the decoder engines' profile allows (${this.#capacity - 1} past positions)`, {
        fix: `lower max_new_tokens, or rebuild the engines with a longer maximum: ${REBUILD} DIR`,
      });
    }
    const rows = this.rows;
    const stream = this.#stream;
    for (let r = 0; r < rows; r++) this.#idsView[r] = BigInt(tokens[r]!);
    stream.copyHostToDevice(this.#ids, this.#idsHost, rows * 8);
    if (this.#embed) {
      const embed = this.#embed;
      this.#bind(embed, "input_ids", [rows, 1], this.#ids.address);
      for (const t of embed.io.values()) if (!t.input) this.#bind(embed, t.name, undefined, t.name === "inputs_embeds" ? this.#embeds!.address : this.#sink(embed, t.name).address);
      if (!this.#checkedShapes.has(embed)) {
        const dims = embed.context.shapeOf("inputs_embeds");
        if (dims.join(",") !== [rows, 1, this.#hiddenSize].join(",")) throw embed.failure(`would write inputs_embeds as [${dims.join(", ")}], expected [${rows}, 1, ${this.#hiddenSize}]`);
        this.#checkedShapes.add(embed);
      }
      if (!embed.context.methods.enqueueV3(embed.context.impl, stream.handle)) throw embed.failure("could not enqueue embed_tokens");
    }
    const graph = step === 0 ? this.#first : this.#later;
    const write = step === 0 ? 0 : 1 - this.#current;
    for (const t of graph.io.values()) {
      const name = t.name;
      if (t.input) {
        if (name === "input_ids") this.#bind(graph, name, [rows, 1], this.#ids.address);
        else if (name === "inputs_embeds") this.#bind(graph, name, [rows, 1, this.#hiddenSize], this.#embeds!.address);
        else if (name === "encoder_hidden_states") this.#bind(graph, name, [rows, this.#encoderLength, this.#hiddenSize], this.#hidden.address);
        else if (name === "encoder_attention_mask") this.#bind(graph, name, [rows, this.#encoderLength], this.#mask.address);
        else {
          const match = PAST.exec(name)!;
          const cache = this.#cache.get(`${match[1]}.${match[2]}.${match[3]}`);
          if (!cache) throw graph.failure(`takes ${name}, which no decoder engine outputs`);
          if (cache.self) {
            // the first step's past is empty: zero positions at a non-null address
            const past = step === 0 ? 0 : step;
            this.#bind(graph, name, [rows, cache.heads, past, cache.headDim], past === 0 ? this.#empty.address : cache.buffers[this.#current]!.address);
          } else {
            if (step === 0) throw graph.failure(`takes the cross-attention cache ${name} on the first step`);
            this.#bind(graph, name, [rows, cache.heads, this.#encoderLength, cache.headDim], cache.buffers[0]!.address);
          }
        }
      } else if (name === "logits") this.#bind(graph, name, undefined, this.#logits.address);
      else {
        const match = PRESENT.exec(name);
        const cache = match ? this.#cache.get(`${match[1]}.${match[2]}.${match[3]}`) : undefined;
        if (cache?.self) this.#bind(graph, name, undefined, cache.buffers[write]!.address);
        else if (cache && step === 0) this.#bind(graph, name, undefined, cache.buffers[0]!.address);
        else this.#bind(graph, name, undefined, this.#sink(graph, name).address);
      }
    }
    if (!this.#checkedShapes.has(graph)) this.#checkOutputShapes(graph, step);
    if (!graph.context.methods.enqueueV3(graph.context.impl, stream.handle)) throw graph.failure(`could not enqueue decoder step ${step}`);
    stream.copyDeviceToHost(this.#logitsHost, this.#logits, this.#logitsHost.bytes);
    stream.synchronize();
    this.#current = write;
    this.#steps++;
    const out = this.#logits32;
    if (this.#logitsType === "float32") out.set(new Float32Array(this.#logitsHost.buffer, 0, out.length));
    else {
      const half = new Uint16Array(this.#logitsHost.buffer, 0, out.length);
      for (let i = 0; i < out.length; i++) out[i] = fromHalf(half[i]!);
    }
    return out;
  }

  /** Once per graph: the shapes TensorRT will write must fit the buffers bound to them. */
  #checkOutputShapes(graph: TensorRtGraph, step: number): void {
    for (const t of graph.io.values()) {
      if (t.input) continue;
      const dims = graph.context.shapeOf(t.name);
      const match = PRESENT.exec(t.name);
      const cache = match ? this.#cache.get(`${match[1]}.${match[2]}.${match[3]}`) : undefined;
      const expected =
        t.name === "logits"
          ? [this.rows, 1, this.#vocab]
          : cache?.self
            ? [this.rows, cache.heads, step + 1, cache.headDim]
            : cache && step === 0
              ? [this.rows, cache.heads, this.#encoderLength, cache.headDim]
              : undefined;
      if (expected && dims.join(",") !== expected.join(",")) throw graph.failure(`would write ${t.name} as [${dims.join(", ")}], expected [${expected.join(", ")}]`);
    }
    this.#checkedShapes.add(graph);
  }

  #sink(graph: TensorRtGraph, name: string): DeviceBuffer {
    const key = `${graph.name}/${name}`;
    let sink = this.#sinks.get(key);
    if (!sink) {
      const dims = graph.context.shapeOf(name);
      const tensor = graph.io.get(name)!;
      sink = this.#cuda.allocDevice(Math.max(1, elementCount(dims.map((d) => Math.max(d, 0)))) * tensor.elementBytes);
      this.#sinks.set(key, sink);
      this.#owned.push(sink);
    }
    return sink;
  }

  async reorder(rowIndices: Int32Array): Promise<void> {
    this.#check();
    if (rowIndices.length !== this.rows) throw new FlorenceError("INVALID_ARGUMENT", `reorder needs ${this.rows} row indices, got ${rowIndices.length}`);
    let identity = true;
    let withinItems = true;
    for (let r = 0; r < this.rows; r++) {
      const source = rowIndices[r]!;
      if (!Number.isInteger(source) || source < 0 || source >= this.rows) throw new FlorenceError("INVALID_ARGUMENT", `reorder: row index ${source} is outside 0..${this.rows - 1}`);
      if (source !== r) identity = false;
      if (Math.floor(source / this.#numBeams) !== Math.floor(r / this.#numBeams)) withinItems = false;
    }
    if (identity || this.#steps === 0) return;
    const stream = this.#stream;
    const from = this.#current;
    const to = 1 - from;
    for (const cache of this.#cache.values()) {
      if (!cache.self) continue;
      // rows are contiguous blocks of the packed [rows, heads, steps, headDim] present: gather them into the other buffer
      const block = cache.heads * this.#steps * cache.headDim * cache.elementBytes;
      for (let r = 0; r < this.rows; r++) stream.copyDeviceToDevice(cache.buffers[to]!, cache.buffers[from]!, block, r * block, rowIndices[r]! * block);
    }
    this.#current = to;
    // the cross-attention cache is the same for one item's beams: only moves between items need it
    if (!withinItems) {
      for (const cache of this.#cache.values()) {
        if (cache.self) continue;
        if (!cache.spare) {
          cache.spare = this.#cuda.allocDevice(cache.buffers[0]!.bytes);
          this.#owned.push(cache.spare);
        }
        const block = cache.heads * this.#encoderLength * cache.headDim * cache.elementBytes;
        for (let r = 0; r < this.rows; r++) stream.copyDeviceToDevice(cache.spare, cache.buffers[0]!, block, r * block, rowIndices[r]! * block);
        [cache.buffers[0], cache.spare] = [cache.spare, cache.buffers[0]!];
      }
    }
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    try {
      await this.#stream.synchronizeAsync();
    } finally {
      for (const buffer of this.#owned) buffer.free();
      this.#owned.length = 0;
      this.#stream.destroy();
      for (const g of [this.#embed, this.#first, this.#later]) g?.release(this.#leaseOwner);
      this.#onDispose(this);
    }
  }
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
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Uint8Array);
  return hash.digest("hex");
}

export class TensorRtEngine implements Engine {
  readonly backend = "tensorrt" as const;
  readonly description: string;
  readonly engineDir: string;
  readonly manifest: EngineManifest;
  readonly machine: MachineInfo;
  readonly #shared: EngineShared;
  readonly #options: TensorRtOptions;
  readonly #graphs = new Set<TensorRtGraph>();
  readonly #decoders = new Set<TensorRtDecoder>();
  #disposed = false;

  private constructor(options: TensorRtOptions, manifest: EngineManifest, machine: MachineInfo, shared: EngineShared) {
    this.#options = options;
    this.engineDir = options.engineDir;
    this.manifest = manifest;
    this.machine = machine;
    this.#shared = shared;
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
    const runtime = await TrtRuntime.create(loaded.trt, options.log, options.verbose === true);
    let empty: DeviceBuffer;
    try {
      empty = cuda.allocDevice(256);
    } catch (error) {
      await runtime.dispose();
      throw error;
    }
    return new TensorRtEngine(options, manifest, machine, { cuda, runtime, empty, engineDir: options.engineDir, modelDir: options.modelDir });
  }

  #check(): void {
    if (this.#disposed) throw new FlorenceError("DISPOSED", "this TensorRT engine was disposed", { fix: "create a new one" });
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
      if (engineCheck || !engine) throw new FlorenceError("ENGINE_UNAVAILABLE", engineCheck!, { fix: "run `npm run check:trt-abi -- --include <TensorRT include dir>`" });
      const io = this.#introspect(name, planPath, engine, engineImpl!);
      const contextWrapper = await callAsync(engine.createExecutionContext, engineImpl!, table.enums.ExecutionContextAllocationStrategy["kSTATIC"]!);
      if (contextWrapper === null) {
        const said = runtime.takeRecent();
        throw new FlorenceError("ENGINE_FAILED", `TensorRT could not create an execution context for ${planPath}${said ? `: ${said}` : ""}`, {
          fix: "the GPU may be out of memory: close other GPU programs",
        });
      }
      const contextImpl = readPointer(contextWrapper, table.wrappers.IExecutionContext.implOffset);
      const methods = contextImpl === null ? undefined : bindApivObject("VExecutionContext", contextImpl, table);
      const contextCheck = selfCheckFailure(table, runtime.trt.version, [
        { what: "VExecutionContext.getPImpl()", expected: contextImpl === null ? null : contextWrapper, actual: methods ? methods.getPImpl(contextImpl!) : null },
        { what: "VExecutionContext.getEngine()", expected: engineWrapper, actual: methods ? methods.getEngine(contextImpl!) : null },
      ]);
      if (contextCheck || !methods) throw new FlorenceError("ENGINE_UNAVAILABLE", contextCheck!, { fix: "run `npm run check:trt-abi -- --include <TensorRT include dir>`" });
      if (this.#options.verbose) this.#options.log?.(`TensorRT: loaded ${name} from ${planPath} (${io.size} tensors, ${(Number(engine.getDeviceMemorySizeV2(engineImpl!)) / 2 ** 20).toFixed(1)} MiB of activations)`);
      const context = new TrtContext(contextWrapper, contextImpl!, methods, allocDims(table));
      const stream = cuda.createStream();
      return new TensorRtGraph(name, planPath, this.#shared, engineWrapper, io, context, stream);
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
   * KV cache on the GPU. Takes the same options as decoder.ts's createDecoder.
   */
  async createDecoder(options: DecoderOptions): Promise<DecoderStep> {
    this.#check();
    const decoder = await TensorRtDecoder.create(this.#shared, options, (d) => this.#decoders.delete(d));
    this.#decoders.add(decoder);
    return decoder;
  }

  /** GPU memory use, for logs. */
  memory(): { freeBytes: number; totalBytes: number; device: number; pinned: number; deviceBytes: number; pinnedBytes: number } {
    return { ...this.#shared.cuda.memoryInfo(), ...this.#shared.cuda.liveAllocations() };
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    const decoders = [...this.#decoders];
    this.#decoders.clear();
    await Promise.all(decoders.map((d) => d.dispose()));
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
