/**
 * The FFI contract: the only module that imports koffi for TensorRT and CUDA. Every native function, every vtable
 * method the runtime calls and every callback it hands to TensorRT is declared here with its C type and its
 * TypeScript type. cuda.ts and runtime.ts never see koffi; they get typed functions and plain memory helpers.
 *
 * Pointers are BigInt addresses (koffi 3); a null pointer comes back as `null`. Out-parameters are one-element
 * arrays that the call fills in. Functions that may block or log from another thread also have `.async`
 * (see `callAsync`), which runs them on a koffi worker thread while the event loop keeps running.
 */
import koffi, { type LibraryHandle, type TypeObject } from "koffi";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type AbiTable, type ApivClass, type ApivMethod, type LoggerEntry, POINTER_BYTES } from "./abi.ts";

/** A native address. */
export type Pointer = bigint;
export type MaybePointer = bigint | null;
/** An out-parameter: the native call writes element 0. */
export type Out<T> = [T];

/** A native function as koffi binds it: callable synchronously, or on a worker thread through `.async`. */
export interface NativeFunction<A extends unknown[], R> {
  (...args: A): R;
  async(...args: [...A, (error: unknown, result: R) => void]): void;
}

/** Runs a native call on a koffi worker thread (for calls that may block, or log from another thread). */
export function callAsync<A extends unknown[], R>(fn: NativeFunction<A, R>, ...args: A): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    (fn.async as (...all: unknown[]) => void)(...args, (error: unknown, result: R) => (error ? reject(error) : resolve(result)));
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Types. Named (koffi resolves anonymous struct returns in callbacks wrongly); reused when this module loads twice.

function namedStruct(name: string, fields: Record<string, string | TypeObject>): TypeObject {
  try {
    return koffi.type(name);
  } catch {
    return koffi.struct(name, fields);
  }
}

function namedProto(name: string, result: string | TypeObject, args: readonly (string | TypeObject)[]): TypeObject {
  try {
    return koffi.type(name);
  } catch {
    return koffi.proto(name, result, [...args]);
  }
}

/** nvinfer1::Dims64 (TensorRT 10 and 11): returned by value, like a C struct of the same fields. */
const DIMS64 = namedStruct("florence_trt_Dims64", { nbDims: "int32_t", d: koffi.array("int64_t", 8) });
/** nvinfer1::InterfaceInfo: what TensorRT 11's ILogger::getInterfaceInfo returns (16 bytes, in registers). */
const INTERFACE_INFO = namedStruct("florence_trt_InterfaceInfo", { kind: "void *", major: "int32_t", minor: "int32_t" });

/** A Dims64 as koffi returns it. */
export interface DimsValue {
  nbDims: number;
  d: BigInt64Array;
}

export const FFI_LAYOUTS = {
  Dims64: { size: koffi.sizeof(DIMS64), nbDims: koffi.offsetof(DIMS64, "nbDims"), d: koffi.offsetof(DIMS64, "d"), maxDims: 8 },
  InterfaceInfo: { size: koffi.sizeof(INTERFACE_INFO), kind: koffi.offsetof(INTERFACE_INFO, "kind"), major: koffi.offsetof(INTERFACE_INFO, "major"), minor: koffi.offsetof(INTERFACE_INFO, "minor") },
} as const;

// ---------------------------------------------------------------------------------------------------------------
// Libraries, found by soname

export interface LoadedLibrary {
  /** What was opened: a bare soname (found by the dynamic loader) or a full path. */
  readonly path: string;
  readonly handle: LibraryHandle;
}

/** Where distributions put CUDA, TensorRT and the driver when the loader's search path does not cover them. */
export const LIBRARY_DIRS = {
  cudart: ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/local/cuda/targets/aarch64-linux/lib", "/usr/local/cuda/targets/sbsa-linux/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"],
  nvinfer: ["/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/local/tensorrt/lib", "/opt/tensorrt/lib", "/usr/local/cuda/lib64"],
  cuda: ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu/nvidia", "/usr/lib/aarch64-linux-gnu/tegra", "/usr/local/nvidia/lib64", "/usr/lib64"],
} as const;

/** Sonames, newest first. */
export const SONAMES = {
  cudart: ["libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"],
  nvinfer: ["libnvinfer.so.11", "libnvinfer.so.10"],
  cuda: ["libcuda.so.1"],
} as const;

/**
 * Opens the first of `names` that loads: each bare (the loader's search path, LD_LIBRARY_PATH, ld.so.cache),
 * then in each of `dirs`. Returns the reasons when none loads.
 */
export function openLibrary(names: readonly string[], dirs: readonly string[]): LoadedLibrary | { failures: string[] } {
  const failures: string[] = [];
  const attempts = names.flatMap((name) => [name, ...dirs.map((dir) => join(dir, name)).filter((path) => existsSync(path))]);
  for (const path of attempts) {
    try {
      return { path, handle: koffi.load(path) };
    } catch (error) {
      failures.push(`${path}: ${(error as Error).message.split("\n")[0]}`);
    }
  }
  return { failures };
}

// ---------------------------------------------------------------------------------------------------------------
// CUDA runtime API (libcudart). cudaGetDeviceProperties is deliberately absent: CUDA 12's header renames it to
// cudaGetDeviceProperties_v2 with another struct layout; attributes come from cudaDeviceGetAttribute.

export interface CudaRuntimeApi {
  readonly library: LoadedLibrary;
  cudaRuntimeGetVersion: NativeFunction<[version: Out<number>], number>;
  cudaDriverGetVersion: NativeFunction<[version: Out<number>], number>;
  cudaGetDeviceCount: NativeFunction<[count: Out<number>], number>;
  cudaSetDevice: NativeFunction<[device: number], number>;
  cudaGetDevice: NativeFunction<[device: Out<number>], number>;
  cudaDeviceGetAttribute: NativeFunction<[value: Out<number>, attribute: number, device: number], number>;
  cudaMemGetInfo: NativeFunction<[free: Out<number | bigint>, total: Out<number | bigint>], number>;
  cudaDeviceSynchronize: NativeFunction<[], number>;
  cudaMalloc: NativeFunction<[address: Out<MaybePointer>, bytes: number], number>;
  cudaFree: NativeFunction<[address: MaybePointer], number>;
  cudaHostAlloc: NativeFunction<[address: Out<MaybePointer>, bytes: number, flags: number], number>;
  cudaFreeHost: NativeFunction<[address: MaybePointer], number>;
  cudaMemcpyAsync: NativeFunction<[dst: Pointer, src: Pointer, bytes: number, kind: number, stream: MaybePointer], number>;
  cudaMemsetAsync: NativeFunction<[dst: Pointer, value: number, bytes: number, stream: MaybePointer], number>;
  cudaStreamCreateWithFlags: NativeFunction<[stream: Out<MaybePointer>, flags: number], number>;
  cudaStreamDestroy: NativeFunction<[stream: MaybePointer], number>;
  cudaStreamSynchronize: NativeFunction<[stream: MaybePointer], number>;
  cudaStreamQuery: NativeFunction<[stream: MaybePointer], number>;
  cudaStreamWaitEvent: NativeFunction<[stream: MaybePointer, event: Pointer, flags: number], number>;
  cudaEventCreateWithFlags: NativeFunction<[event: Out<MaybePointer>, flags: number], number>;
  cudaEventDestroy: NativeFunction<[event: Pointer], number>;
  cudaEventRecord: NativeFunction<[event: Pointer, stream: MaybePointer], number>;
  cudaEventSynchronize: NativeFunction<[event: Pointer], number>;
  cudaEventQuery: NativeFunction<[event: Pointer], number>;
  cudaEventElapsedTime: NativeFunction<[ms: Out<number>, start: Pointer, end: Pointer], number>;
  cudaHostGetDevicePointer: NativeFunction<[device: Out<MaybePointer>, host: Pointer, flags: number], number>;
  cudaStreamBeginCapture: NativeFunction<[stream: MaybePointer, mode: number], number>;
  cudaStreamEndCapture: NativeFunction<[stream: MaybePointer, graph: Out<MaybePointer>], number>;
  cudaStreamIsCapturing: NativeFunction<[stream: MaybePointer, status: Out<number>], number>;
  cudaGraphInstantiateWithFlags: NativeFunction<[exec: Out<MaybePointer>, graph: Pointer, flags: number], number>;
  cudaGraphGetNodes: NativeFunction<[graph: Pointer, nodes: null, count: Out<number | bigint>], number>;
  cudaGraphLaunch: NativeFunction<[exec: Pointer, stream: MaybePointer], number>;
  cudaGraphExecDestroy: NativeFunction<[exec: Pointer], number>;
  cudaGraphDestroy: NativeFunction<[graph: Pointer], number>;
  cudaGetLastError: NativeFunction<[], number>;
  cudaGetErrorName: NativeFunction<[code: number], string>;
  cudaGetErrorString: NativeFunction<[code: number], string>;
}

/** The C declarations, one per CudaRuntimeApi member. */
export const CUDA_RUNTIME_DECLARATIONS: { readonly [K in Exclude<keyof CudaRuntimeApi, "library">]: string } = {
  cudaRuntimeGetVersion: "int cudaRuntimeGetVersion(_Out_ int *runtimeVersion)",
  cudaDriverGetVersion: "int cudaDriverGetVersion(_Out_ int *driverVersion)",
  cudaGetDeviceCount: "int cudaGetDeviceCount(_Out_ int *count)",
  cudaSetDevice: "int cudaSetDevice(int device)",
  cudaGetDevice: "int cudaGetDevice(_Out_ int *device)",
  cudaDeviceGetAttribute: "int cudaDeviceGetAttribute(_Out_ int *value, int attr, int device)",
  cudaMemGetInfo: "int cudaMemGetInfo(_Out_ size_t *free, _Out_ size_t *total)",
  cudaDeviceSynchronize: "int cudaDeviceSynchronize()",
  cudaMalloc: "int cudaMalloc(_Out_ void **devPtr, size_t size)",
  cudaFree: "int cudaFree(void *devPtr)",
  cudaHostAlloc: "int cudaHostAlloc(_Out_ void **pHost, size_t size, unsigned int flags)",
  cudaFreeHost: "int cudaFreeHost(void *ptr)",
  cudaMemcpyAsync: "int cudaMemcpyAsync(void *dst, const void *src, size_t count, int kind, void *stream)",
  cudaMemsetAsync: "int cudaMemsetAsync(void *devPtr, int value, size_t count, void *stream)",
  cudaStreamCreateWithFlags: "int cudaStreamCreateWithFlags(_Out_ void **pStream, unsigned int flags)",
  cudaStreamDestroy: "int cudaStreamDestroy(void *stream)",
  cudaStreamSynchronize: "int cudaStreamSynchronize(void *stream)",
  cudaStreamQuery: "int cudaStreamQuery(void *stream)",
  cudaStreamWaitEvent: "int cudaStreamWaitEvent(void *stream, void *event, unsigned int flags)",
  cudaEventCreateWithFlags: "int cudaEventCreateWithFlags(_Out_ void **event, unsigned int flags)",
  cudaEventDestroy: "int cudaEventDestroy(void *event)",
  cudaEventRecord: "int cudaEventRecord(void *event, void *stream)",
  cudaEventSynchronize: "int cudaEventSynchronize(void *event)",
  cudaEventQuery: "int cudaEventQuery(void *event)",
  cudaEventElapsedTime: "int cudaEventElapsedTime(_Out_ float *ms, void *start, void *end)",
  cudaHostGetDevicePointer: "int cudaHostGetDevicePointer(_Out_ void **pDevice, void *pHost, unsigned int flags)",
  cudaStreamBeginCapture: "int cudaStreamBeginCapture(void *stream, int mode)",
  cudaStreamEndCapture: "int cudaStreamEndCapture(void *stream, _Out_ void **pGraph)",
  cudaStreamIsCapturing: "int cudaStreamIsCapturing(void *stream, _Out_ int *pCaptureStatus)",
  // CUDA 11.4+; cudaGraphInstantiate itself changed its signature in CUDA 12
  cudaGraphInstantiateWithFlags: "int cudaGraphInstantiateWithFlags(_Out_ void **pGraphExec, void *graph, unsigned long long flags)",
  cudaGraphGetNodes: "int cudaGraphGetNodes(void *graph, void **nodes, _Out_ size_t *numNodes)",
  cudaGraphLaunch: "int cudaGraphLaunch(void *graphExec, void *stream)",
  cudaGraphExecDestroy: "int cudaGraphExecDestroy(void *graphExec)",
  cudaGraphDestroy: "int cudaGraphDestroy(void *graph)",
  cudaGetLastError: "int cudaGetLastError()",
  cudaGetErrorName: "const char *cudaGetErrorName(int error)",
  cudaGetErrorString: "const char *cudaGetErrorString(int error)",
};

/** CUDA enum and flag values used (stable since CUDA 11). */
export const CUDA = {
  success: 0,
  errorNotReady: 600,
  errorInsufficientDriver: 35,
  errorNoDevice: 100,
  memcpyHostToDevice: 1,
  memcpyDeviceToHost: 2,
  memcpyDeviceToDevice: 3,
  streamNonBlocking: 0x01,
  eventDefault: 0x00,
  eventBlockingSync: 0x01,
  eventDisableTiming: 0x02,
  hostAllocDefault: 0x00,
  hostAllocPortable: 0x01,
  hostAllocMapped: 0x02,
  /** cudaStreamCaptureModeThreadLocal: other threads' unsafe CUDA calls do not break this thread's capture. */
  captureModeThreadLocal: 1,
  captureStatusNone: 0,
  captureStatusActive: 1,
  captureStatusInvalidated: 2,
  attrMultiProcessorCount: 16,
  attrIntegrated: 18,
  attrCanMapHostMemory: 19,
  attrComputeCapabilityMajor: 75,
  attrComputeCapabilityMinor: 76,
} as const;

function bindAll<T>(library: LoadedLibrary, declarations: Readonly<Record<string, string>>): T {
  const api: Record<string, unknown> = { library };
  for (const [name, declaration] of Object.entries(declarations)) api[name] = library.handle.func(declaration);
  return api as T;
}

export function bindCudaRuntime(library: LoadedLibrary): CudaRuntimeApi {
  return bindAll<CudaRuntimeApi>(library, CUDA_RUNTIME_DECLARATIONS);
}

// ---------------------------------------------------------------------------------------------------------------
// CUDA driver API (libcuda): only the device name, which the runtime API gives only through cudaGetDeviceProperties.

export interface CudaDriverApi {
  readonly library: LoadedLibrary;
  cuInit: NativeFunction<[flags: number], number>;
  cuDeviceGet: NativeFunction<[device: Out<number>, ordinal: number], number>;
  cuDeviceGetName: NativeFunction<[name: Uint8Array, length: number, device: number], number>;
}

export const CUDA_DRIVER_DECLARATIONS: { readonly [K in Exclude<keyof CudaDriverApi, "library">]: string } = {
  cuInit: "int cuInit(unsigned int flags)",
  cuDeviceGet: "int cuDeviceGet(_Out_ int *device, int ordinal)",
  cuDeviceGetName: "int cuDeviceGetName(_Inout_ uint8_t *name, int len, int dev)",
};

export function bindCudaDriver(library: LoadedLibrary): CudaDriverApi {
  return bindAll<CudaDriverApi>(library, CUDA_DRIVER_DECLARATIONS);
}

// ---------------------------------------------------------------------------------------------------------------
// TensorRT: the two extern "C" entry points of libnvinfer, then the apiv vtable methods.

export interface NvInferApi {
  readonly library: LoadedLibrary;
  getInferLibVersion: NativeFunction<[], number>;
  createInferRuntime_INTERNAL: NativeFunction<[logger: Pointer, version: number], MaybePointer>;
}

export const NVINFER_DECLARATIONS: { readonly [K in Exclude<keyof NvInferApi, "library">]: string } = {
  getInferLibVersion: "int32_t getInferLibVersion()",
  createInferRuntime_INTERNAL: "void *createInferRuntime_INTERNAL(void *logger, int32_t version)",
};

export function bindNvInfer(library: LoadedLibrary): NvInferApi {
  return bindAll<NvInferApi>(library, NVINFER_DECLARATIONS);
}

/**
 * The apiv methods' C signatures as called through koffi: `self` first (the apiv object), then the C++ parameters.
 * Enums are int32_t; references are pointers; Dims64 comes back by value (trivially copyable, so it travels like a
 * C struct: x86-64 through a hidden pointer before `self`, aarch64 through x8). Keys mirror abi.ts's APIV_METHODS.
 */
export const VTABLE_SIGNATURES = {
  VRuntime: {
    getPImpl: ["void *", ["void *"]],
    deserializeCudaEngine: ["void *", ["void *", "const void *", "size_t"]],
    getLogger: ["void *", ["void *"]],
  },
  VCudaEngine: {
    getPImpl: ["void *", ["void *"]],
    createExecutionContext: ["void *", ["void *", "int32_t"]],
    getNbOptimizationProfiles: ["int32_t", ["void *"]],
    getTensorShape: ["Dims64", ["void *", "const char *"]],
    getTensorDataType: ["int32_t", ["void *", "const char *"]],
    isShapeInferenceIO: ["bool", ["void *", "const char *"]],
    getTensorIOMode: ["int32_t", ["void *", "const char *"]],
    getTensorFormat: ["int32_t", ["void *", "const char *"]],
    getProfileShape: ["Dims64", ["void *", "const char *", "int32_t", "int32_t"]],
    getNbIOTensors: ["int32_t", ["void *"]],
    getIOTensorName: ["const char *", ["void *", "int32_t"]],
    getDeviceMemorySizeV2: ["int64_t", ["void *"]],
  },
  VExecutionContext: {
    getPImpl: ["void *", ["void *"]],
    getEngine: ["void *", ["void *"]],
    allInputDimensionsSpecified: ["bool", ["void *"]],
    setOptimizationProfileAsync: ["bool", ["void *", "int32_t", "void *"]],
    setInputShape: ["bool", ["void *", "const char *", "const void *"]],
    getTensorShape: ["Dims64", ["void *", "const char *"]],
    setTensorAddress: ["bool", ["void *", "const char *", "void *"]],
    enqueueV3: ["bool", ["void *", "void *"]],
    setDeviceMemoryV2: ["void", ["void *", "void *", "int64_t"]],
  },
} as const satisfies { readonly [C in ApivClass]: { readonly [M in ApivMethod<C>]: readonly [string, readonly string[]] } };

/** The TypeScript side of each vtable method. */
export interface ApivMethods {
  VRuntime: {
    getPImpl: NativeFunction<[self: Pointer], MaybePointer>;
    deserializeCudaEngine: NativeFunction<[self: Pointer, blob: Pointer, bytes: number], MaybePointer>;
    getLogger: NativeFunction<[self: Pointer], MaybePointer>;
  };
  VCudaEngine: {
    getPImpl: NativeFunction<[self: Pointer], MaybePointer>;
    createExecutionContext: NativeFunction<[self: Pointer, strategy: number], MaybePointer>;
    getNbOptimizationProfiles: NativeFunction<[self: Pointer], number>;
    getTensorShape: NativeFunction<[self: Pointer, name: string], DimsValue>;
    getTensorDataType: NativeFunction<[self: Pointer, name: string], number>;
    isShapeInferenceIO: NativeFunction<[self: Pointer, name: string], boolean>;
    getTensorIOMode: NativeFunction<[self: Pointer, name: string], number>;
    getTensorFormat: NativeFunction<[self: Pointer, name: string], number>;
    getProfileShape: NativeFunction<[self: Pointer, name: string, profile: number, selector: number], DimsValue>;
    getNbIOTensors: NativeFunction<[self: Pointer], number>;
    getIOTensorName: NativeFunction<[self: Pointer, index: number], string | null>;
    getDeviceMemorySizeV2: NativeFunction<[self: Pointer], number | bigint>;
  };
  VExecutionContext: {
    getPImpl: NativeFunction<[self: Pointer], MaybePointer>;
    getEngine: NativeFunction<[self: Pointer], MaybePointer>;
    allInputDimensionsSpecified: NativeFunction<[self: Pointer], boolean>;
    setOptimizationProfileAsync: NativeFunction<[self: Pointer, profile: number, stream: MaybePointer], boolean>;
    setInputShape: NativeFunction<[self: Pointer, name: string, dims: Pointer], boolean>;
    getTensorShape: NativeFunction<[self: Pointer, name: string], DimsValue>;
    setTensorAddress: NativeFunction<[self: Pointer, name: string, address: Pointer], boolean>;
    enqueueV3: NativeFunction<[self: Pointer, stream: MaybePointer], boolean>;
    setDeviceMemoryV2: NativeFunction<[self: Pointer, memory: Pointer, bytes: number], void>;
  };
}

function koffiType(name: string): string | TypeObject {
  return name === "Dims64" ? DIMS64 : name === "InterfaceInfo" ? INTERFACE_INFO : name;
}

function methodProto(cls: string, method: string, [result, args]: readonly [string, readonly string[]]): TypeObject {
  return namedProto(`florence_trt_${cls}_${method}`, koffiType(result), args.map(koffiType));
}

/** The koffi prototype the runtime calls an apiv method through (a stand-in library registers its callbacks with it). */
export function apivProto<C extends ApivClass>(cls: C, method: ApivMethod<C>): TypeObject {
  const signatures = VTABLE_SIGNATURES[cls] as Record<string, readonly [string, readonly string[]]>;
  return methodProto(cls, method as string, signatures[method as string]!);
}

/** The prototype of a public wrapper's destructors (`void (*)(self)`). */
export function destructorProto(): TypeObject {
  return namedProto("florence_trt_delete", "void", ["void *"]);
}

export function readPointer(address: Pointer, offset = 0): MaybePointer {
  return koffi.decode(address, offset, "void *") as MaybePointer;
}

export function writePointer(address: Pointer, offset: number, value: MaybePointer): void {
  koffi.encode(address, offset, "void *", value);
}

/**
 * Binds an apiv object's methods through its vtable, by the slots in `table`. Methods the table marks absent
 * for this major are left out (calling them is a bug the types cannot see; the runtime uses none of them).
 */
export function bindApivObject<C extends ApivClass>(cls: C, object: Pointer, table: AbiTable): ApivMethods[C] {
  const vtable = readPointer(object);
  if (vtable === null) throw new Error(`${cls} object ${object} has no vtable`);
  const methods: Record<string, unknown> = {};
  const signatures = VTABLE_SIGNATURES[cls] as Record<string, readonly [string, readonly string[]]>;
  const slots = table.slots[cls] as Record<string, number | null>;
  for (const [method, signature] of Object.entries(signatures)) {
    const slot = slots[method];
    if (slot === null || slot === undefined) continue;
    const entry = readPointer(vtable, slot * POINTER_BYTES);
    if (entry === null) throw new Error(`${cls}.${method}: vtable slot ${slot} is null`);
    methods[method] = koffi.decode(entry, methodProto(cls, method, signature));
  }
  return methods as unknown as ApivMethods[C];
}

/** Calls a public wrapper's (IRuntime, ICudaEngine, IExecutionContext) deleting destructor: `delete object`. */
export function wrapperDeleter(object: Pointer, slot: number): NativeFunction<[self: Pointer], void> {
  const vtable = readPointer(object);
  if (vtable === null) throw new Error(`object ${object} has no vtable`);
  const entry = readPointer(vtable, slot * POINTER_BYTES);
  if (entry === null) throw new Error(`object ${object}: destructor slot ${slot} is null`);
  return koffi.decode(entry, destructorProto()) as NativeFunction<[self: Pointer], void>;
}

// ---------------------------------------------------------------------------------------------------------------
// The logger: an ILogger built from JS callbacks, laid out as the table's ILogger vtable says.

/** ILogger's callbacks as TensorRT calls them (`self` is the logger object). */
export const LOGGER_SIGNATURES = {
  log: ["void", ["void *", "int32_t", "const char *"]],
  getInterfaceInfo: ["InterfaceInfo", ["void *"]],
  getAPILanguage: ["int32_t", ["void *"]],
  "~complete": ["void", ["void *"]],
  "~deleting": ["void", ["void *"]],
} as const satisfies { readonly [E in LoggerEntry]: readonly [string, readonly string[]] };

export interface NativeLogger {
  /** The ILogger* to hand to TensorRT. */
  readonly object: Pointer;
  /** Unregisters the callbacks and frees the object: only once TensorRT no longer holds the logger. */
  dispose(): void;
}

/**
 * Builds an ILogger whose `log` calls `onLog(severity, message)`. Messages logged from TensorRT's own threads are
 * queued to the JS thread by koffi: only safe while that thread is free, i.e. during `callAsync` calls.
 * The destructor entries do nothing: TensorRT never owns the logger.
 */
export function createNativeLogger(table: AbiTable, onLog: (severity: number, message: string) => void): NativeLogger {
  const layout = table.logger.vtable;
  const registered: Pointer[] = [];
  // offset-to-top and typeinfo precede the entries, as in a compiler-made vtable
  const vtableBytes = (2 + layout.length) * POINTER_BYTES;
  const vtableMemory = koffi.alloc("uint8_t", vtableBytes) as Pointer;
  const object = koffi.alloc("uint8_t", 2 * POINTER_BYTES) as Pointer;
  const kind = koffi.alloc("uint8_t", 8) as Pointer;
  new Uint8Array(koffi.view(kind, 8)).set(new TextEncoder().encode("ILogger\0"));
  const implementations: { readonly [E in LoggerEntry]: (...args: never[]) => unknown } = {
    log: (_self: Pointer, severity: number, message: string | null) => {
      try {
        onLog(severity, message ?? "");
      } catch {
        // a throwing log sink must not unwind into TensorRT
      }
    },
    getInterfaceInfo: () => ({ kind, major: 1, minor: 0 }),
    getAPILanguage: () => 0,
    "~complete": () => undefined,
    "~deleting": () => undefined,
  };
  new Uint8Array(koffi.view(vtableMemory, vtableBytes)).fill(0);
  layout.forEach((entry, index) => {
    const proto = namedProto(`florence_trt_ILogger_${entry.replace("~", "dtor_")}`, koffiType(LOGGER_SIGNATURES[entry][0]), LOGGER_SIGNATURES[entry][1].map(koffiType));
    const callback = koffi.register(implementations[entry] as (...args: unknown[]) => unknown, koffi.pointer(proto));
    registered.push(callback);
    writePointer(vtableMemory, (2 + index) * POINTER_BYTES, callback);
  });
  writePointer(object, 0, vtableMemory + BigInt(2 * POINTER_BYTES));
  writePointer(object, POINTER_BYTES, null);
  let disposed = false;
  return {
    object,
    dispose() {
      if (disposed) return;
      disposed = true;
      for (const callback of registered) koffi.unregister(callback);
      koffi.free(object);
      koffi.free(vtableMemory);
      koffi.free(kind);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Plain native memory (malloc'd, not CUDA): plan blobs, Dims arguments.

export interface NativeMemory {
  readonly address: Pointer;
  readonly bytes: number;
  /** A view of the memory; invalid after free(). */
  readonly view: Uint8Array;
  free(): void;
}

export function allocNative(bytes: number): NativeMemory {
  const size = Math.max(1, bytes);
  const address = koffi.alloc("uint8_t", size) as Pointer;
  let freed = false;
  return {
    address,
    bytes,
    view: new Uint8Array(koffi.view(address, size), 0, bytes),
    free() {
      if (freed) return;
      freed = true;
      koffi.free(address);
    },
  };
}

/** An ArrayBuffer over native memory (pinned host buffers); it must not outlive the memory. */
export function hostView(address: Pointer, bytes: number): ArrayBuffer {
  return koffi.view(address, bytes);
}

/** A Dims64 in native memory, to pass by pointer (setInputShape) without building an object per call. */
export interface NativeDims {
  readonly address: Pointer;
  /** Writes the dimensions; returns the same address. */
  set(dims: ArrayLike<number>): Pointer;
  free(): void;
}

export function allocDims(table: AbiTable): NativeDims {
  const layout = table.structs.Dims64;
  const memory = allocNative(layout.size);
  const nbDims = new Int32Array(memory.view.buffer, memory.view.byteOffset + layout.offsets["nbDims"]!, 1);
  const d = new BigInt64Array(memory.view.buffer, memory.view.byteOffset + layout.offsets["d"]!, layout.maxDims);
  return {
    address: memory.address,
    set(dims) {
      if (dims.length > layout.maxDims) throw new RangeError(`TensorRT shapes have at most ${layout.maxDims} dimensions, got ${dims.length}`);
      nbDims[0] = dims.length;
      for (let i = 0; i < layout.maxDims; i++) d[i] = i < dims.length ? BigInt(dims[i]!) : 0n;
      return memory.address;
    },
    free: () => memory.free(),
  };
}

/** Dims64 → numbers (TensorRT uses -1 for dimensions fixed only at run time). */
export function dimsToArray(dims: DimsValue): number[] {
  const out: number[] = [];
  for (let i = 0; i < dims.nbDims && i < dims.d.length; i++) out.push(Number(dims.d[i]!));
  return out;
}
