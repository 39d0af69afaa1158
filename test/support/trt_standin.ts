/**
 * A stand-in for libnvinfer, for running the TensorRT backend (runtime.ts, graph.ts, tensorrt_decoder.ts) on a machine that
 * has CUDA but no TensorRT (TensorRT cannot be installed where this project is developed).
 *
 * It is TensorRT's ABI as abi.ts states it, nothing more: libnvinfer's two C entry points (standin_nvinfer.c), the
 * public wrappers (a destructor vtable and `mImpl`) and the apiv objects whose vtable slots are JS callbacks,
 * registered with the prototypes the runtime calls them through. Its "engines" are JSON plans, and enqueueV3 does
 * their work with cudaMemcpyAsync / cudaMemsetAsync on the caller's stream, so stream capture records it as it
 * would record TensorRT's kernels, and a replayed CUDA graph does it again without calling JS.
 *
 * Plans:
 * - `copy`: output `y` is input `x` (any shape).
 * - `zeros`: every output zero, shaped by its `shapeFrom` (stands in for the vision encoder and the encoder).
 * - `embed`: `inputs_embeds` [rows, length, D] float32: each token's first two floats hold the bytes of its int64 id.
 * - `decoder`: one layer, one head, head size 2 (8 bytes: one token id per position). present.0.decoder.* is the past
 *   followed by this step's token; present.0.encoder.* is encoder_hidden_states (first step) or the past
 *   encoder cache (with past). logits [rows, 1, V] float32: the row's token history (as int64 pairs), zeros, and
 *   the first 8 bytes of its cross-attention cache in the last two entries — so the logits show whether the KV
 *   cache, the beam reorders and the graphs kept every row's history.
 *
 * It also enforces what TensorRT requires and the runtime must honour: non-null addresses for every tensor,
 * shapes inside the profile, device memory set on kUSER_MANAGED contexts, and an eager enqueue after a shape
 * change before one may be captured (`stats.refused` counts refusals).
 */
import koffi, { type TypeObject } from "koffi";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { ABI_TABLES, type ApivClass, type ApivMethod, POINTER_BYTES } from "../../src/engine/tensorrt/abi.ts";
import type { CudaRuntime, DeviceBuffer } from "../../src/engine/tensorrt/cuda.ts";
import { describeMachine, type MachineInfo, type TensorRtLibrary, tryLoadTensorRt } from "../../src/engine/tensorrt/runtime.ts";
import { apivProto, destructorProto, type Pointer, writePointer } from "../../src/engine/tensorrt/ffi.ts";

export type StandinType = "float32" | "float16" | "int64";

export interface StandinTensor {
  name: string;
  input: boolean;
  type: StandinType;
  /** -1 where the shape is set at run time. */
  shape: number[];
  /** Inputs with dynamic dimensions: the one optimization profile. */
  profile?: { min: number[]; opt: number[]; max: number[] };
  /** Outputs of `zeros` and `embed` plans: each dimension a number or "input:axis". */
  shapeFrom?: (number | string)[];
}

export interface StandinPlan {
  standin: 1;
  kind: "copy" | "zeros" | "embed" | "decoder";
  tensors: StandinTensor[];
  /** What getDeviceMemorySizeV2 reports; the decoder passes its logits through this memory. */
  memoryBytes: number;
}

const TABLE = ABI_TABLES[10];
const DATA_TYPE: Record<StandinType, number> = { float32: TABLE.enums.DataType["kFLOAT"]!, float16: TABLE.enums.DataType["kHALF"]!, int64: TABLE.enums.DataType["kINT64"]! };
const ELEMENT_BYTES: Record<StandinType, number> = { float32: 4, float16: 2, int64: 8 };
const MEMCPY_DEFAULT = 4; // cudaMemcpyDefault: direction from the (unified) addresses
const CAPTURE_NONE = 0;

const LOADED = new Set<unknown>();

/** A koffi prototype made once per process (several stand-ins may be created). */
function namedProto(name: string, result: string, args: string[]): TypeObject {
  try {
    return koffi.type(name);
  } catch {
    return koffi.proto(name, result, args);
  }
}

/** Builds the entry points library (needs a C compiler) unless `FLORENCE_EDGE_STANDIN_LIB` names a built one. */
export function standinLibrary(major = 10): string {
  const prebuilt = process.env["FLORENCE_EDGE_STANDIN_LIB"];
  if (prebuilt && existsSync(prebuilt)) return prebuilt;
  // beside this module in the sources; from dist/test/support, back in the sources
  const here = dirname(fileURLToPath(import.meta.url));
  const source = [join(here, "standin_nvinfer.c"), join(here, "..", "..", "..", "test", "support", "standin_nvinfer.c")].find((p) => existsSync(p));
  if (!source) throw new Error(`standin_nvinfer.c not found near ${here}: set FLORENCE_EDGE_STANDIN_LIB to a built stand-in library`);
  const path = join(mkdtempSync(join(tmpdir(), "standin-nvinfer-")), `libnvinfer.so.${major}`);
  execFileSync("cc", ["-shared", "-fPIC", "-O1", `-Wl,-soname,libnvinfer.so.${major}`, "-o", path, source]);
  return path;
}

interface NativeObject {
  wrapper: Pointer;
  impl: Pointer;
  free(): void;
}

interface EngineObject extends NativeObject {
  plan: StandinPlan;
  tensors: Map<string, StandinTensor>;
  names: Pointer[];
}

interface ContextObject extends NativeObject {
  engine: EngineObject;
  userManaged: boolean;
  memory: { address: Pointer; bytes: number } | undefined;
  own: DeviceBuffer | undefined;
  shapes: Map<string, number[]>;
  addresses: Map<string, Pointer>;
  /** Shapes changed since the last eager enqueue: TensorRT must enqueue once before capturing. */
  dirty: boolean;
}

export interface StandinStats {
  /** enqueueV3 calls that ran (eager) or were recorded (capturing), per plan kind. */
  eager: Record<string, number>;
  captured: Record<string, number>;
  /** enqueueV3 / setInputShape calls refused, with why. */
  refused: string[];
  contexts: { created: number; destroyed: number; userManaged: number };
  engines: { created: number; destroyed: number };
}

export class StandinTensorRt {
  readonly libraryPath: string;
  readonly stats: StandinStats = { eager: {}, captured: {}, refused: [], contexts: { created: 0, destroyed: 0, userManaged: 0 }, engines: { created: 0, destroyed: 0 } };
  readonly #cuda: () => CudaRuntime;
  readonly #callbacks: Pointer[] = [];
  readonly #allocations: Pointer[] = [];
  readonly #objects = new Map<Pointer, NativeObject>();
  readonly #vtables: { wrapper: Pointer; runtime: Pointer; engine: Pointer; context: Pointer };
  #logger: Pointer | null = null;

  /** `cuda`: the runtime's CUDA (for the copies and the contexts' own memory), asked for on first use. */
  constructor(libraryPath: string, version: number, cuda: () => CudaRuntime) {
    this.libraryPath = libraryPath;
    this.#cuda = cuda;
    const self = <C extends ApivClass>(cls: C, method: ApivMethod<C>, fn: (...args: never[]) => unknown, proto = apivProto(cls, method)) => ({ slot: TABLE.slots[cls][method] as number, fn, proto });
    const get = <T extends NativeObject>(impl: Pointer) => this.#objects.get(impl) as T;
    const dims = (values: readonly number[]) => ({ nbDims: values.length, d: Array.from({ length: 8 }, (_, i) => values[i] ?? 0) });
    const stringReturn = namedProto("florence_standin_name", "void *", ["void *", "int32_t"]);

    const wrapperDelete = (wrapper: Pointer) => {
      for (const object of this.#objects.values()) if (object.wrapper === wrapper) object.free();
    };
    this.#vtables = {
      wrapper: this.#vtable([
        { slot: 0, fn: wrapperDelete, proto: destructorProto() },
        { slot: 1, fn: wrapperDelete, proto: destructorProto() },
      ]),
      runtime: this.#vtable([
        self("VRuntime", "getPImpl", (impl: Pointer) => get(impl).wrapper),
        self("VRuntime", "deserializeCudaEngine", (_impl: Pointer, blob: Pointer, bytes: number) => this.#deserialize(blob, bytes)),
        self("VRuntime", "getLogger", () => this.#logger),
      ]),
      engine: this.#vtable([
        self("VCudaEngine", "getPImpl", (impl: Pointer) => get(impl).wrapper),
        self("VCudaEngine", "createExecutionContext", (impl: Pointer, strategy: number) => this.#createContext(get<EngineObject>(impl), strategy)),
        self("VCudaEngine", "getNbOptimizationProfiles", () => 1),
        self("VCudaEngine", "getTensorShape", (impl: Pointer, name: string) => dims(get<EngineObject>(impl).tensors.get(name)?.shape ?? [])),
        self("VCudaEngine", "getTensorDataType", (impl: Pointer, name: string) => DATA_TYPE[get<EngineObject>(impl).tensors.get(name)?.type ?? "float32"]),
        self("VCudaEngine", "isShapeInferenceIO", () => false),
        self("VCudaEngine", "getTensorIOMode", (impl: Pointer, name: string) => {
          const t = get<EngineObject>(impl).tensors.get(name);
          return t ? (t.input ? 1 : 2) : 0;
        }),
        self("VCudaEngine", "getTensorFormat", () => 0),
        self("VCudaEngine", "getProfileShape", (impl: Pointer, name: string, _profile: number, selector: number) => {
          const t = get<EngineObject>(impl).tensors.get(name);
          const range = t?.profile ?? (t ? { min: t.shape, opt: t.shape, max: t.shape } : { min: [], opt: [], max: [] });
          return dims(selector === 0 ? range.min : selector === 1 ? range.opt : range.max);
        }),
        self("VCudaEngine", "getNbIOTensors", (impl: Pointer) => get<EngineObject>(impl).plan.tensors.length),
        self("VCudaEngine", "getIOTensorName", (impl: Pointer, index: number) => get<EngineObject>(impl).names[index] ?? null, stringReturn),
        self("VCudaEngine", "getDeviceMemorySizeV2", (impl: Pointer) => get<EngineObject>(impl).plan.memoryBytes),
      ]),
      context: this.#vtable([
        self("VExecutionContext", "getPImpl", (impl: Pointer) => get(impl).wrapper),
        self("VExecutionContext", "getEngine", (impl: Pointer) => get<ContextObject>(impl).engine.wrapper),
        self("VExecutionContext", "allInputDimensionsSpecified", (impl: Pointer) => {
          const c = get<ContextObject>(impl);
          return c.engine.plan.tensors.every((t) => !t.input || !t.shape.includes(-1) || c.shapes.has(t.name));
        }),
        self("VExecutionContext", "setOptimizationProfileAsync", (_impl: Pointer, profile: number) => profile === 0),
        self("VExecutionContext", "setInputShape", (impl: Pointer, name: string, address: Pointer) => this.#setShape(get<ContextObject>(impl), name, address)),
        self("VExecutionContext", "getTensorShape", (impl: Pointer, name: string) => dims(this.#shapeOf(get<ContextObject>(impl), name))),
        self("VExecutionContext", "setTensorAddress", (impl: Pointer, name: string, address: Pointer | null) => {
          const c = get<ContextObject>(impl);
          if (!c.engine.tensors.has(name) || !address) return this.#refuse(`setTensorAddress(${name}, ${address})`);
          c.addresses.set(name, address);
          return true;
        }),
        self("VExecutionContext", "enqueueV3", (impl: Pointer, stream: Pointer | null) => this.#enqueue(get<ContextObject>(impl), stream)),
        self("VExecutionContext", "setDeviceMemoryV2", (impl: Pointer, memory: Pointer, bytes: number | bigint) => {
          get<ContextObject>(impl).memory = { address: memory, bytes: Number(bytes) };
        }),
      ]),
    };

    // kept for the life of the process: koffi closes a library whose handle is collected, and a reloaded one has
    // lost its configuration
    const library = koffi.load(libraryPath);
    LOADED.add(library);
    const create = namedProto("florence_standin_create", "void *", ["void *", "int32_t"]);
    const configure = library.func("void florence_standin_configure(int32_t version, florence_standin_create *create)");
    const createRuntime = this.#register((logger: Pointer, _version: number) => {
      this.#logger = logger;
      return this.#object(this.#vtables.runtime, () => undefined).wrapper;
    }, create);
    configure(version, createRuntime);
  }

  /** A plan file's bytes. */
  static plan(plan: StandinPlan): string {
    return JSON.stringify(plan);
  }

  /** Enqueues per kind, counted. */
  get enqueued(): { eager: number; captured: number } {
    const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
    return { eager: sum(this.stats.eager), captured: sum(this.stats.captured) };
  }

  /** Live objects (runtime, engines, contexts): 0 once the backend has destroyed everything. */
  get liveObjects(): number {
    return this.#objects.size;
  }

  #register(fn: (...args: never[]) => unknown, proto: TypeObject): Pointer {
    const pointer = koffi.register(fn as (...args: unknown[]) => unknown, koffi.pointer(proto));
    this.#callbacks.push(pointer);
    return pointer;
  }

  #alloc(bytes: number): Pointer {
    const address = koffi.alloc("uint8_t", bytes) as Pointer;
    new Uint8Array(koffi.view(address, bytes)).fill(0);
    return address;
  }

  /** A vtable as a compiler lays it out (offset-to-top, typeinfo, then the slots); returns the address objects point at. */
  #vtable(entries: { slot: number; fn: (...args: never[]) => unknown; proto: TypeObject }[]): Pointer {
    const slots = Math.max(...entries.map((e) => e.slot)) + 1;
    const memory = this.#alloc((2 + slots) * POINTER_BYTES);
    this.#allocations.push(memory);
    for (const e of entries) writePointer(memory, (2 + e.slot) * POINTER_BYTES, this.#register(e.fn, e.proto));
    return memory + BigInt(2 * POINTER_BYTES);
  }

  /** A public wrapper (destructor vtable, mImpl) over an apiv object (its vtable). */
  #object(vtable: Pointer, onFree: () => void): NativeObject {
    const wrapper = this.#alloc(2 * POINTER_BYTES);
    const impl = this.#alloc(POINTER_BYTES);
    writePointer(wrapper, 0, this.#vtables.wrapper);
    writePointer(wrapper, TABLE.wrappers.IRuntime.implOffset, impl);
    writePointer(impl, 0, vtable);
    const object: NativeObject = {
      wrapper,
      impl,
      free: () => {
        if (!this.#objects.delete(impl)) return;
        onFree();
        koffi.free(wrapper);
        koffi.free(impl);
      },
    };
    this.#objects.set(impl, object);
    return object;
  }

  #deserialize(blob: Pointer, bytes: number): Pointer | null {
    let plan: StandinPlan;
    try {
      plan = JSON.parse(new TextDecoder().decode(new Uint8Array(koffi.view(blob, bytes)))) as StandinPlan;
      if (plan.standin !== 1) return null;
    } catch {
      return null;
    }
    const names = plan.tensors.map((t) => {
      const encoded = new TextEncoder().encode(`${t.name}\0`);
      const address = this.#alloc(encoded.length);
      new Uint8Array(koffi.view(address, encoded.length)).set(encoded);
      return address;
    });
    this.stats.engines.created++;
    const base = this.#object(this.#vtables.engine, () => {
      for (const n of names) koffi.free(n);
      this.stats.engines.destroyed++;
    });
    // base is registered under its impl already: the engine fields go onto the same object
    const engine = Object.assign(base, { plan, tensors: new Map(plan.tensors.map((t) => [t.name, t])), names }) as EngineObject;
    return engine.wrapper;
  }

  #createContext(engine: EngineObject, strategy: number): Pointer {
    const userManaged = strategy === TABLE.enums.ExecutionContextAllocationStrategy["kUSER_MANAGED"];
    const own = userManaged ? undefined : this.#cuda().allocDevice(Math.max(engine.plan.memoryBytes, 1));
    this.stats.contexts.created++;
    if (userManaged) this.stats.contexts.userManaged++;
    const base = this.#object(this.#vtables.context, () => {
      own?.free();
      this.stats.contexts.destroyed++;
    });
    const context = Object.assign(base, { engine, userManaged, memory: own ? { address: own.address, bytes: own.bytes } : undefined, own, shapes: new Map(), addresses: new Map(), dirty: true }) as ContextObject;
    return context.wrapper;
  }

  #refuse(why: string): false {
    this.stats.refused.push(why);
    return false;
  }

  #setShape(context: ContextObject, name: string, address: Pointer): boolean {
    const t = context.engine.tensors.get(name);
    const nbDims = koffi.decode(address, 0, "int32_t") as number;
    const values: number[] = [];
    for (let i = 0; i < nbDims; i++) values.push(Number(koffi.decode(address, 8 + 8 * i, "int64_t")));
    if (!t || !t.input || nbDims !== t.shape.length) return this.#refuse(`setInputShape(${name}, [${values}])`);
    const range = t.profile ?? { min: t.shape, max: t.shape };
    if (values.some((d, i) => d < range.min[i]! || d > range.max[i]!)) return this.#refuse(`setInputShape(${name}, [${values}]) outside [${range.min}]..[${range.max}]`);
    const previous = context.shapes.get(name);
    if (!previous || previous.join() !== values.join()) context.dirty = true;
    context.shapes.set(name, values);
    return true;
  }

  #input(context: ContextObject, name: string): number[] {
    return context.shapes.get(name) ?? context.engine.tensors.get(name)?.shape ?? [];
  }

  #shapeOf(context: ContextObject, name: string): number[] {
    const t = context.engine.tensors.get(name);
    if (!t) return [];
    if (t.input) return this.#input(context, name);
    const plan = context.engine.plan;
    if (t.shapeFrom) {
      return t.shapeFrom.map((d) => {
        if (typeof d === "number") return d;
        const [input, axis] = d.split(":");
        return this.#input(context, input!)[Number(axis)] ?? -1;
      });
    }
    if (plan.kind === "copy") return this.#input(context, "x");
    const tokens = context.engine.tensors.has("input_ids") ? "input_ids" : "inputs_embeds";
    const rows = this.#input(context, tokens)[0]!;
    const encoder = this.#input(context, "encoder_hidden_states")[1]!;
    const past = context.engine.tensors.has("past_key_values.0.decoder.key") ? this.#input(context, "past_key_values.0.decoder.key")[2]! : 0;
    if (name === "logits") return [rows, 1, t.shape[2]!];
    if (name.includes(".decoder.")) return [rows, 1, past + 1, 2];
    return [rows, 1, encoder, 2];
  }

  #enqueue(context: ContextObject, stream: Pointer | null): boolean {
    const cuda = this.#cuda();
    const plan = context.engine.plan;
    const status: [number] = [0];
    cuda.check(cuda.api.cudaStreamIsCapturing(stream, status), "cudaStreamIsCapturing");
    const capturing = status[0] !== CAPTURE_NONE;
    if (!stream) return this.#refuse("enqueueV3 on the default stream");
    if (context.userManaged && !context.memory) return this.#refuse("enqueueV3 on a kUSER_MANAGED context without setDeviceMemoryV2");
    if (context.memory && context.memory.bytes < plan.memoryBytes) return this.#refuse(`device memory of ${context.memory.bytes} bytes, needs ${plan.memoryBytes}`);
    if (capturing && context.dirty) return this.#refuse("captured before an eager enqueue after a shape change");
    for (const t of plan.tensors) {
      if (!context.addresses.has(t.name)) return this.#refuse(`enqueueV3 without an address for ${t.name}`);
      if (t.input && t.shape.includes(-1) && !context.shapes.has(t.name)) return this.#refuse(`enqueueV3 without a shape for ${t.name}`);
    }
    const at = (name: string) => context.addresses.get(name)!;
    const copy = (dst: Pointer, src: Pointer, bytes: number) => {
      if (bytes > 0) cuda.check(cuda.api.cudaMemcpyAsync(dst, src, bytes, MEMCPY_DEFAULT, stream), "stand-in cudaMemcpyAsync");
    };
    const bytesOf = (name: string) => this.#shapeOf(context, name).reduce((a, b) => a * b, 1) * ELEMENT_BYTES[context.engine.tensors.get(name)!.type];
    const zero = (name: string) => cuda.check(cuda.api.cudaMemsetAsync(at(name), 0, bytesOf(name), stream), "stand-in cudaMemsetAsync");
    if (plan.kind === "copy") copy(at("y"), at("x"), bytesOf("x"));
    else if (plan.kind === "zeros") {
      for (const t of plan.tensors) if (!t.input) zero(t.name);
    }
    else if (plan.kind === "embed") {
      const [rows, length, width] = this.#shapeOf(context, "inputs_embeds") as [number, number, number];
      zero("inputs_embeds");
      for (let i = 0; i < rows * length; i++) copy(at("inputs_embeds") + BigInt(i * width * 4), at("input_ids") + BigInt(i * 8), 8);
    } else {
      const byIds = context.engine.tensors.has("input_ids");
      const tokens = at(byIds ? "input_ids" : "inputs_embeds");
      const tokenStride = byIds ? 8 : this.#input(context, "inputs_embeds")[2]! * 4;
      const hiddenStride = this.#input(context, "encoder_hidden_states")[1]! * this.#input(context, "encoder_hidden_states")[2]! * 4;
      const [rows, , past] = [...this.#shapeOf(context, "present.0.decoder.key")];
      const P = past! - 1;
      const encoder = this.#shapeOf(context, "present.0.encoder.key")[2]!;
      const vocab = this.#shapeOf(context, "logits")[2]!;
      const withPast = context.engine.tensors.has("past_key_values.0.decoder.key");
      for (const part of ["key", "value"]) {
        const present = at(`present.0.decoder.${part}`);
        for (let r = 0; r < rows!; r++) {
          if (withPast) copy(present + BigInt(r * (P + 1) * 8), at(`past_key_values.0.decoder.${part}`) + BigInt(r * P * 8), P * 8);
          copy(present + BigInt((r * (P + 1) + P) * 8), tokens + BigInt(r * tokenStride), 8);
          // the encoder cache row: the past one, or the first E·8 bytes of the row's encoder states
          const encoderRow = BigInt(r * encoder * 8);
          copy(at(`present.0.encoder.${part}`) + encoderRow, withPast ? at(`past_key_values.0.encoder.${part}`) + encoderRow : at("encoder_hidden_states") + BigInt(r * hiddenStride), encoder * 8);
        }
      }
      const logits = at("logits");
      const scratch = context.memory!.address;
      const cross = withPast ? at("past_key_values.0.encoder.key") : at("encoder_hidden_states");
      const crossStride = withPast ? encoder * 8 : hiddenStride;
      cuda.check(cuda.api.cudaMemsetAsync(logits, 0, rows! * vocab * 4, stream), "stand-in cudaMemsetAsync");
      for (let r = 0; r < rows!; r++) {
        copy(scratch + BigInt(r * (P + 1) * 8), at("present.0.decoder.key") + BigInt(r * (P + 1) * 8), (P + 1) * 8);
        copy(logits + BigInt(r * vocab * 4), scratch + BigInt(r * (P + 1) * 8), (P + 1) * 8);
        copy(logits + BigInt((r * vocab + vocab - 2) * 4), cross + BigInt(r * crossStride), 8);
      }
    }
    const counts = capturing ? this.stats.captured : this.stats.eager;
    counts[plan.kind] = (counts[plan.kind] ?? 0) + 1;
    if (!capturing) context.dirty = false;
    return true;
  }

  /** Frees what the stand-in itself allocated (callbacks, vtables); objects are freed by the backend. */
  dispose(): void {
    for (const object of [...this.#objects.values()]) object.free();
    for (const callback of this.#callbacks) koffi.unregister(callback);
    for (const memory of this.#allocations) koffi.free(memory);
    this.#callbacks.length = 0;
    this.#allocations.length = 0;
  }
}

/** Plans for a decoder: decoder_model, decoder_with_past_model and, with `embed`, embed_tokens. */
export function decoderPlans(options: { maxRows: number; maxEncoder: number; maxPast: number; vocab: number; embed: boolean; hidden?: number }): Record<string, StandinPlan> {
  const { maxRows, maxEncoder, maxPast, vocab, embed } = options;
  const hidden = options.hidden ?? 2;
  const dynamic = (name: string, type: StandinType, min: number[], max: number[]): StandinTensor => ({ name, input: true, type, shape: min.map((m, i) => (m === max[i] ? m : -1)), profile: { min, opt: max, max } });
  const output = (name: string, type: StandinType, shape: number[]): StandinTensor => ({ name, input: false, type, shape });
  const tokens = embed ? dynamic("inputs_embeds", "float32", [1, 1, hidden], [maxRows, 1, hidden]) : dynamic("input_ids", "int64", [1, 1], [maxRows, 1]);
  const encoderInputs = [dynamic("encoder_hidden_states", "float32", [1, 1, hidden], [maxRows, maxEncoder, hidden]), dynamic("encoder_attention_mask", "int64", [1, 1], [maxRows, maxEncoder])];
  const outputs = [output("logits", "float32", [-1, 1, vocab]), ...["key", "value"].flatMap((p) => [output(`present.0.decoder.${p}`, "float32", [-1, 1, -1, 2]), output(`present.0.encoder.${p}`, "float32", [-1, 1, -1, 2])])];
  const memoryBytes = maxRows * (maxPast + 1) * 8;
  const plans: Record<string, StandinPlan> = {
    decoder_model: { standin: 1, kind: "decoder", memoryBytes, tensors: [tokens, ...encoderInputs, ...outputs] },
    decoder_with_past_model: {
      standin: 1,
      kind: "decoder",
      memoryBytes,
      tensors: [
        tokens,
        ...encoderInputs,
        ...["key", "value"].flatMap((p) => [dynamic(`past_key_values.0.decoder.${p}`, "float32", [1, 1, 1, 2], [maxRows, 1, maxPast, 2]), dynamic(`past_key_values.0.encoder.${p}`, "float32", [1, 1, 1, 2], [maxRows, 1, maxEncoder, 2])]),
        ...outputs,
      ],
    },
  };
  if (embed) plans["embed_tokens"] = embedPlan(maxRows, 1, hidden);
  return plans;
}

/** embed_tokens: input_ids [1..rows, 1..length] → inputs_embeds [rows, length, hidden]. */
export function embedPlan(maxRows: number, maxLength: number, hidden: number): StandinPlan {
  return {
    standin: 1,
    kind: "embed",
    memoryBytes: 0,
    tensors: [
      { name: "input_ids", input: true, type: "int64", shape: [-1, maxLength === 1 ? 1 : -1], profile: { min: [1, 1], opt: [1, 1], max: [maxRows, maxLength] } },
      { name: "inputs_embeds", input: false, type: "float32", shape: [-1, maxLength === 1 ? 1 : -1, hidden], shapeFrom: ["input_ids:0", "input_ids:1", hidden] },
    ],
  };
}

/**
 * The stand-in (TensorRT 10.3.0) over a real GPU, and the TensorRT library and machine the backend sees.
 * `bySoname`: load it the way the backend's own lookups do (the library's folder must be on LD_LIBRARY_PATH).
 */
export function standinOnGpu(cuda: CudaRuntime, options: { bySoname?: boolean } = {}): { library: string; standin: StandinTensorRt; trt: TensorRtLibrary; machine: MachineInfo } {
  const library = standinLibrary();
  const standin = new StandinTensorRt(library, 100300, () => cuda);
  const loaded = tryLoadTensorRt(options.bySoname ? {} : { libraries: [library] });
  if (!loaded.ok || loaded.trt.versionText !== "10.3.0") {
    const found = loaded.ok ? `TensorRT ${loaded.trt.versionText}` : loaded.reason;
    throw new Error(options.bySoname ? `the stand-in libnvinfer is not found by soname (${found}): run with LD_LIBRARY_PATH=${dirname(library)}` : found);
  }
  return { library, standin, trt: loaded.trt, machine: describeMachine(cuda, loaded.trt) };
}

/** An engine folder as build-engines writes it, for the stand-in: one .plan per graph and a manifest for `machine`. */
export function writeStandinEngines(dir: string, plans: Record<string, StandinPlan>, machine: MachineInfo, modelId: string): void {
  mkdirSync(dir, { recursive: true });
  const graphs: Record<string, unknown> = {};
  for (const [name, plan] of Object.entries(plans)) {
    writeFileSync(join(dir, `${name}.plan`), StandinTensorRt.plan(plan));
    graphs[name] = { plan: `${name}.plan`, sources: [], profiles: {} };
  }
  const manifest = {
    schema: 1,
    model: { id: modelId, dir: "", precision: "fp32" },
    tensorrt: { version: machine.tensorrtVersion, major: 10, trtexec: "stand-in" },
    gpu: { name: machine.gpuName, computeCapability: machine.computeCapability, driver: null },
    graphs,
  };
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(manifest));
}
