/**
 * TensorRT objects the backend drives: the IRuntime with its logger (TrtRuntime), execution contexts (TrtContext),
 * and one deserialized engine as a Graph (TensorRtGraph) that runs through its own context and stream.
 *
 * Contexts come in two kinds: each graph's own (TensorRT allocates its activation memory), and the decoder's
 * per-step contexts (`createStepContext`), which share one activation block per engine so that a CUDA graph can
 * be kept per decoder step (a CUDA graph fixes the context's shapes and addresses).
 *
 * With `zeroCopy` (default on Jetson, whose GPU shares the CPU's DRAM), inputs and outputs live in mapped pinned
 * memory that TensorRT reads and writes in place: no staging copies.
 */
import { checkFeeds, elementCount, tensor, type Graph, type Tensor, type TensorType, type ValueInfo } from "../engine.ts";
import { FlorenceError } from "../../errors.ts";
import { type AbiTable, selfCheckFailure } from "./abi.ts";
import type { CudaRuntime, CudaStream, DeviceBuffer, PinnedBuffer } from "./cuda.ts";
import { allocDims, type ApivMethods, bindApivObject, callAsync, createNativeLogger, dimsToArray, type NativeDims, type NativeLogger, type Pointer, readPointer, wrapperDeleter } from "./ffi.ts";
import type { TensorRtLibrary } from "./library.ts";

export const REBUILD = "florence-edge build-engines --model";

const SEVERITY = ["internal error", "error", "warning", "info", "verbose"] as const;

export function dataTypeOf(table: AbiTable, value: number): { type: TensorType; bytes: number } | undefined {
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

export function dataTypeName(table: AbiTable, value: number): string {
  return Object.entries(table.enums.DataType).find(([, v]) => v === value)?.[0] ?? `DataType ${value}`;
}

/** One IRuntime with its logger: the root every engine of a TensorRtEngine hangs from. */
export class TrtRuntime {
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
        fix: "run `florence-edge check-trt-abi --include <TensorRT include dir>` and update src/engine/tensorrt/abi.ts; meanwhile use --backend onnxruntime",
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

export interface IoTensor {
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
export class TrtContext {
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

/**
 * A device buffer and its pinned staging twin, grown on demand (never shrunk). Zero-copy: only the pinned buffer,
 * mapped, which TensorRT uses in place.
 */
interface Staged {
  device: DeviceBuffer | undefined;
  pinned: PinnedBuffer | undefined;
}

/** The address TensorRT reads or writes a staged tensor at. */
function stagedAddress(staged: Staged): Pointer {
  return staged.device ? staged.device.address : staged.pinned!.deviceAddress;
}


function grownSize(bytes: number, current: number): number {
  // 256-byte multiples (TensorRT's alignment), and headroom so slowly growing shapes do not reallocate every run
  return Math.ceil(Math.max(bytes, Math.floor(current * 1.5)) / 256) * 256;
}

/** Shared by every graph of one TensorRtEngine. */
export interface EngineShared {
  readonly cuda: CudaRuntime;
  readonly runtime: TrtRuntime;
  /** A non-null address for empty tensors (TensorRT refuses null even for zero bytes). */
  readonly empty: DeviceBuffer;
  readonly engineDir: string;
  readonly modelDir: string | undefined;
  /** Inputs and outputs in mapped pinned memory that TensorRT uses in place (Jetson's unified memory). */
  readonly zeroCopy: boolean;
  /** CUDA graphs for decoder steps 0..steps-1 (0: none). */
  readonly graphSteps: number;
  /** Decoder workspaces (buffers, step contexts, graphs) kept for reuse between generations. */
  readonly workspaces: number;
  readonly log: ((line: string) => void) | undefined;
}

/** A deserialized engine: its apiv object and bound methods. */
export interface EngineHandle {
  readonly wrapper: Pointer;
  readonly impl: Pointer;
  readonly methods: ApivMethods["VCudaEngine"];
}

/**
 * Creates and self-checks an execution context. kUSER_MANAGED contexts get their activation memory from
 * `memory` (setDeviceMemoryV2) and allocate none of their own.
 */
export async function createContext(shared: EngineShared, engine: EngineHandle, planPath: string, memory?: DeviceBuffer): Promise<TrtContext> {
  const { runtime } = shared;
  const table = runtime.trt.table;
  const strategy = table.enums.ExecutionContextAllocationStrategy[memory ? "kUSER_MANAGED" : "kSTATIC"]!;
  const wrapper = await callAsync(engine.methods.createExecutionContext, engine.impl, strategy);
  if (wrapper === null) {
    const said = runtime.takeRecent();
    throw new FlorenceError("ENGINE_FAILED", `TensorRT could not create an execution context for ${planPath}${said ? `: ${said}` : ""}`, {
      fix: "the GPU may be out of memory: close other GPU programs",
    });
  }
  const impl = readPointer(wrapper, table.wrappers.IExecutionContext.implOffset);
  const methods = impl === null ? undefined : bindApivObject("VExecutionContext", impl, table);
  const check = selfCheckFailure(table, runtime.trt.version, [
    { what: "VExecutionContext.getPImpl()", expected: impl === null ? null : wrapper, actual: methods ? methods.getPImpl(impl!) : null },
    { what: "VExecutionContext.getEngine()", expected: engine.wrapper, actual: methods ? methods.getEngine(impl!) : null },
  ]);
  if (check || !methods) {
    await runtime.destroyWrapper(wrapper, "IExecutionContext");
    throw new FlorenceError("ENGINE_UNAVAILABLE", check!, { fix: "run `florence-edge check-trt-abi --include <TensorRT include dir>`" });
  }
  if (memory) methods.setDeviceMemoryV2(impl!, memory.address, memory.bytes);
  return new TrtContext(wrapper, impl!, methods, allocDims(table));
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
  readonly #engine: EngineHandle;
  readonly #stream: CudaStream;
  readonly #staged = new Map<string, Staged>();
  /** Activation memory shared by the step contexts (one runs at a time: the decoder leases the graph). */
  #stepMemory: DeviceBuffer | undefined;
  readonly #stepContexts = new Set<TrtContext>();
  #tail: Promise<unknown> = Promise.resolve();
  #leasedBy: object | undefined;
  #disposed = false;

  /** @internal */
  constructor(name: string, path: string, shared: EngineShared, engine: EngineHandle, io: Map<string, IoTensor>, context: TrtContext, stream: CudaStream) {
    this.name = name;
    this.path = path;
    this.#shared = shared;
    this.#engine = engine;
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

  get disposed(): boolean {
    return this.#disposed;
  }

  /** @internal fails with TensorRT's own words */
  failure(what: string): FlorenceError {
    const said = this.#shared.runtime.takeRecent();
    return new FlorenceError("ENGINE_FAILED", `TensorRT ${what} for ${this.name} (${this.path})${said ? `: ${said}` : ""}`, {
      fix: `if the engine is stale or was built with other profiles, rebuild it: ${REBUILD} ${this.#shared.modelDir ?? "DIR"}`,
    });
  }

  /**
   * @internal An extra execution context for one decoder step: its activation memory is the engine's shared
   * block (allocated on first use at getDeviceMemorySizeV2, the most any profile needs).
   */
  async createStepContext(): Promise<TrtContext> {
    this.#check();
    if (!this.#stepMemory) {
      const bytes = Number(this.#engine.methods.getDeviceMemorySizeV2(this.#engine.impl));
      this.#stepMemory = this.#shared.cuda.allocDevice(Math.ceil(Math.max(bytes, 1) / 256) * 256);
    }
    const context = await createContext(this.#shared, this.#engine, this.path, this.#stepMemory);
    this.#stepContexts.add(context);
    return context;
  }

  /** @internal */
  async destroyStepContext(context: TrtContext): Promise<void> {
    if (!this.#stepContexts.delete(context)) return;
    try {
      await this.#shared.runtime.destroyWrapper(context.wrapper, "IExecutionContext");
    } finally {
      context.free();
    }
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
    if (this.#shared.zeroCopy) {
      // one mapped buffer, used by TensorRT in place: nothing to copy
      if (!staged.pinned || staged.pinned.bytes < bytes) {
        const size = grownSize(bytes, staged.pinned?.bytes ?? 0);
        staged.pinned?.free();
        staged.pinned = undefined;
        staged.pinned = cuda.allocPinned(size, { mapped: true });
      }
      return staged;
    }
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
      if (staged.device) stream.copyHostToDevice(staged.device, staged.pinned!, bytes);
      if (!context.setAddress(tensor.name, stagedAddress(staged))) throw this.failure(`refused the address of input ${tensor.name}`);
    }
    if (!context.methods.allInputDimensionsSpecified(context.impl)) throw this.failure("reports unspecified input dimensions");
    const outputs: { tensor: IoTensor; dims: number[]; bytes: number; staged: Staged | undefined }[] = [];
    for (const tensor of this.io.values()) {
      if (tensor.input) continue;
      const dims = context.shapeOf(tensor.name);
      if (dims.some((d) => d < 0)) throw this.failure(`cannot tell the shape of output ${tensor.name} before running ([${dims.join(", ")}]; data-dependent shapes are not supported)`);
      const bytes = elementCount(dims) * tensor.elementBytes;
      const staged = bytes > 0 ? this.#stage(tensor.name, bytes, true) : undefined;
      if (!context.setAddress(tensor.name, staged ? stagedAddress(staged) : this.#shared.empty.address)) throw this.failure(`refused the address of output ${tensor.name}`);
      outputs.push({ tensor, dims, bytes, staged });
    }
    if (!context.methods.enqueueV3(context.impl, stream.handle)) throw this.failure("could not enqueue the inference");
    for (const out of outputs) if (out.staged?.device) stream.copyDeviceToHost(out.staged.pinned!, out.staged.device, out.bytes);
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
      for (const context of [...this.#stepContexts]) await this.destroyStepContext(context);
      await runtime.destroyWrapper(this.context.wrapper, "IExecutionContext");
      await runtime.destroyWrapper(this.#engine.wrapper, "ICudaEngine");
    } finally {
      this.context.free();
      this.#stepMemory?.free();
      for (const staged of this.#staged.values()) {
        staged.device?.free();
        staged.pinned?.free();
      }
      this.#staged.clear();
      this.#stream.destroy();
    }
  }
}
