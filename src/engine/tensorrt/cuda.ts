/**
 * The CUDA layer under the TensorRT backend: device buffers, pinned (optionally mapped) host buffers, streams,
 * events, async copies and CUDA graphs captured from streams,
 * over libcudart (found by soname: .so.13, .so.12, .so.11.0) through the FFI contract in ffi.ts.
 *
 * Buffers are allocated up front and reused: nothing here allocates on a hot path. Every CUDA error becomes a
 * FlorenceError naming the call, the CUDA error and what to do. One device per process (device 0 of what
 * CUDA_VISIBLE_DEVICES shows): koffi's worker threads, which run the async calls, start on device 0.
 */
import { FlorenceError } from "../../errors.ts";
import {
  bindCudaDriver,
  bindCudaRuntime,
  CUDA,
  type CudaDriverApi,
  type CudaRuntimeApi,
  callAsync,
  hostView,
  LIBRARY_DIRS,
  type MaybePointer,
  openLibrary,
  type Out,
  type Pointer,
  SONAMES,
} from "./ffi.ts";

export interface CudaOpenOptions {
  /** Library files or sonames to try first (e.g. "/usr/local/cuda-12.6/lib64/libcudart.so.12"). */
  libraries?: readonly string[];
  /** More directories to look for the sonames in, before the usual CUDA locations. */
  searchDirs?: readonly string[];
}

export interface ComputeCapability {
  major: number;
  minor: number;
}

/** A CUDA version as the runtime encodes it (12060) → "12.6". */
export function formatCudaVersion(version: number): string {
  return `${Math.floor(version / 1000)}.${Math.floor((version % 1000) / 10)}`;
}

function cudaFailure(api: CudaRuntimeApi, code: number, what: string): FlorenceError {
  let name = `error ${code}`;
  let text = "";
  try {
    name = api.cudaGetErrorName(code);
    text = api.cudaGetErrorString(code);
  } catch {
    // the names are a courtesy; the code is what matters
  }
  const fix =
    code === 2
      ? "the GPU is out of memory: close other GPU programs, or use smaller batches / fewer beams"
      : code === CUDA.errorInsufficientDriver
        ? "the NVIDIA driver is older than this CUDA runtime: update the driver, or install a CUDA runtime the driver supports"
        : code === CUDA.errorNoDevice
          ? "no CUDA GPU is visible: check nvidia-smi, CUDA_VISIBLE_DEVICES and the container's GPU access"
          : "check nvidia-smi and the driver; run with --backend onnxruntime to use the CPU";
  return new FlorenceError("ENGINE_FAILED", `${what} failed: ${name} (${code})${text ? `: ${text}` : ""}`, { fix });
}

/** One CUDA allocation: its address until free(), which returns it to the runtime once. */
abstract class Allocation {
  readonly bytes: number;
  readonly #cuda: CudaRuntime;
  readonly #kind: "device" | "pinned";
  #address: Pointer | null;

  constructor(cuda: CudaRuntime, kind: "device" | "pinned", address: Pointer, bytes: number) {
    this.#cuda = cuda;
    this.#kind = kind;
    this.#address = address;
    this.bytes = bytes;
  }

  get address(): Pointer {
    if (this.#address === null) throw this.freedError();
    return this.#address;
  }

  get freed(): boolean {
    return this.#address === null;
  }

  protected freedError(): FlorenceError {
    return new FlorenceError("DISPOSED", `${this.#kind} buffer of ${this.bytes} bytes was freed`);
  }

  free(): void {
    const address = this.#address;
    if (address === null) return;
    this.#address = null;
    this.#cuda.release(address, this.#kind);
  }
}

/** A device allocation (cudaMalloc). */
export class DeviceBuffer extends Allocation {
  constructor(cuda: CudaRuntime, address: Pointer, bytes: number) {
    super(cuda, "device", address, bytes);
  }
}

/**
 * A pinned (page-locked) host allocation (cudaHostAlloc): copies from and to it run asynchronously.
 * `buffer` is an ArrayBuffer over it; views of it must not be used after free(). A mapped one also has a device
 * address: the GPU reads and writes it in place (zero-copy; on Jetson the same DRAM, so no copy at all).
 */
export class PinnedBuffer extends Allocation {
  readonly #deviceAddress: Pointer | undefined;
  readonly #buffer: ArrayBuffer;

  constructor(cuda: CudaRuntime, address: Pointer, bytes: number, deviceAddress?: Pointer) {
    super(cuda, "pinned", address, bytes);
    this.#deviceAddress = deviceAddress;
    this.#buffer = hostView(address, Math.max(bytes, 1));
  }

  /** Mapped buffers (zero-copy): the address kernels and TensorRT use to read and write this memory directly. */
  get deviceAddress(): Pointer {
    if (this.#deviceAddress === undefined) throw new FlorenceError("INVALID_ARGUMENT", `pinned buffer of ${this.bytes} bytes is not mapped into the GPU's address space`, { fix: "allocate it with allocPinned(bytes, { mapped: true })" });
    if (this.freed) throw this.freedError();
    return this.#deviceAddress;
  }

  get mapped(): boolean {
    return this.#deviceAddress !== undefined;
  }

  get buffer(): ArrayBuffer {
    if (this.freed) throw this.freedError();
    return this.#buffer;
  }
}

type AnyBuffer = DeviceBuffer | PinnedBuffer;

function checkRange(buffer: AnyBuffer, offset: number, bytes: number, role: string): void {
  if (!Number.isInteger(offset) || !Number.isInteger(bytes) || offset < 0 || bytes < 0 || offset + bytes > buffer.bytes) {
    throw new FlorenceError("INVALID_ARGUMENT", `copy ${role}: ${bytes} bytes at offset ${offset} do not fit a buffer of ${buffer.bytes} bytes`, {
      fix: "allocate a larger buffer or copy fewer bytes",
    });
  }
}

/** A CUDA event (cudaEventCreateWithFlags). */
export class CudaEvent {
  readonly timing: boolean;
  readonly #cuda: CudaRuntime;
  #handle: Pointer | null;

  constructor(cuda: CudaRuntime, handle: Pointer, timing: boolean) {
    this.#cuda = cuda;
    this.#handle = handle;
    this.timing = timing;
  }

  get handle(): Pointer {
    if (this.#handle === null) throw new FlorenceError("DISPOSED", "CUDA event was destroyed");
    return this.#handle;
  }

  record(stream: CudaStream): void {
    this.#cuda.check(this.#cuda.api.cudaEventRecord(this.handle, stream.handle), "cudaEventRecord");
  }

  /** Blocks this thread until the event has happened. */
  synchronize(): void {
    this.#cuda.check(this.#cuda.api.cudaEventSynchronize(this.handle), "cudaEventSynchronize");
  }

  /** Waits on a worker thread; the event loop keeps running. */
  async synchronizeAsync(): Promise<void> {
    this.#cuda.check(await callAsync(this.#cuda.api.cudaEventSynchronize, this.handle), "cudaEventSynchronize");
  }

  isComplete(): boolean {
    const code = this.#cuda.api.cudaEventQuery(this.handle);
    if (code === CUDA.errorNotReady) return false;
    this.#cuda.check(code, "cudaEventQuery");
    return true;
  }

  /** Milliseconds from `start` to this event (both recorded, both with timing). */
  elapsedSince(start: CudaEvent): number {
    const ms: Out<number> = [0];
    this.#cuda.check(this.#cuda.api.cudaEventElapsedTime(ms, start.handle, this.handle), "cudaEventElapsedTime");
    return ms[0];
  }

  destroy(): void {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    this.#cuda.check(this.#cuda.api.cudaEventDestroy(handle), "cudaEventDestroy");
  }
}

/**
 * An instantiated CUDA graph (cudaGraphExec_t): work captured once from a stream, replayed with one launch. It
 * replays the same operations on the same addresses with the same sizes; what it reads is read at launch time.
 */
export class CudaGraphExec {
  /** Operations (kernels, copies, memsets) the graph holds. */
  readonly nodes: number;
  readonly #cuda: CudaRuntime;
  #handle: Pointer | null;

  constructor(cuda: CudaRuntime, handle: Pointer, nodes: number) {
    this.#cuda = cuda;
    this.#handle = handle;
    this.nodes = nodes;
  }

  get destroyed(): boolean {
    return this.#handle === null;
  }

  launch(stream: CudaStream): void {
    if (this.#handle === null) throw new FlorenceError("DISPOSED", "CUDA graph was destroyed");
    this.#cuda.check(this.#cuda.api.cudaGraphLaunch(this.#handle, stream.handle), "cudaGraphLaunch");
  }

  destroy(): void {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    this.#cuda.releaseGraph(handle);
  }
}

/** A CUDA stream (non-blocking with respect to the legacy default stream). */
export class CudaStream {
  readonly #cuda: CudaRuntime;
  #handle: Pointer | null;

  constructor(cuda: CudaRuntime, handle: Pointer) {
    this.#cuda = cuda;
    this.#handle = handle;
  }

  get handle(): Pointer {
    if (this.#handle === null) throw new FlorenceError("DISPOSED", "CUDA stream was destroyed");
    return this.#handle;
  }

  copyHostToDevice(dst: DeviceBuffer, src: PinnedBuffer, bytes: number, dstOffset = 0, srcOffset = 0): void {
    this.#copy(dst, src, bytes, dstOffset, srcOffset, CUDA.memcpyHostToDevice, "cudaMemcpyAsync(host → device)");
  }

  copyDeviceToHost(dst: PinnedBuffer, src: DeviceBuffer, bytes: number, dstOffset = 0, srcOffset = 0): void {
    this.#copy(dst, src, bytes, dstOffset, srcOffset, CUDA.memcpyDeviceToHost, "cudaMemcpyAsync(device → host)");
  }

  copyDeviceToDevice(dst: DeviceBuffer, src: DeviceBuffer, bytes: number, dstOffset = 0, srcOffset = 0): void {
    this.#copy(dst, src, bytes, dstOffset, srcOffset, CUDA.memcpyDeviceToDevice, "cudaMemcpyAsync(device → device)");
  }

  #copy(dst: AnyBuffer, src: AnyBuffer, bytes: number, dstOffset: number, srcOffset: number, kind: number, what: string): void {
    checkRange(dst, dstOffset, bytes, `${what} destination`);
    checkRange(src, srcOffset, bytes, `${what} source`);
    if (bytes === 0) return;
    const to = dstOffset === 0 ? dst.address : dst.address + BigInt(dstOffset);
    const from = srcOffset === 0 ? src.address : src.address + BigInt(srcOffset);
    this.#cuda.check(this.#cuda.api.cudaMemcpyAsync(to, from, bytes, kind, this.handle), what);
  }

  /** Sets `bytes` bytes of `dst` from `offset` to `value` (0..255). */
  fill(dst: DeviceBuffer, value: number, bytes = dst.bytes, offset = 0): void {
    checkRange(dst, offset, bytes, "cudaMemsetAsync");
    if (bytes === 0) return;
    this.#cuda.check(this.#cuda.api.cudaMemsetAsync(dst.address + BigInt(offset), value & 0xff, bytes, this.handle), "cudaMemsetAsync");
  }

  /** Later work on this stream waits for `event`. */
  waitFor(event: CudaEvent): void {
    this.#cuda.check(this.#cuda.api.cudaStreamWaitEvent(this.handle, event.handle, 0), "cudaStreamWaitEvent");
  }

  record(event: CudaEvent): void {
    event.record(this);
  }

  /** Blocks this thread until the stream's work is done (lowest latency: decoder steps). */
  synchronize(): void {
    this.#cuda.check(this.#cuda.api.cudaStreamSynchronize(this.handle), "cudaStreamSynchronize");
  }

  /** Waits on a worker thread; the event loop keeps running (long graphs). */
  async synchronizeAsync(): Promise<void> {
    this.#cuda.check(await callAsync(this.#cuda.api.cudaStreamSynchronize, this.handle), "cudaStreamSynchronize");
  }

  /**
   * Records the work `enqueue` puts on this stream into a CUDA graph instead of running it, and instantiates it.
   * Nothing runs until the graph is launched. Work that cannot be captured (a synchronisation, a synchronous copy,
   * the legacy default stream) fails the capture: the error names the call, and the stream is usable afterwards.
   */
  capture(enqueue: () => void): CudaGraphExec {
    const api = this.#cuda.api;
    this.#cuda.check(api.cudaStreamBeginCapture(this.handle, CUDA.captureModeThreadLocal), "cudaStreamBeginCapture");
    let thrown: unknown;
    try {
      enqueue();
    } catch (error) {
      thrown = error;
    }
    const graph: Out<MaybePointer> = [null];
    const ended = api.cudaStreamEndCapture(this.handle, graph);
    // a failed call inside the capture leaves its error as the last error: clear it, the stream stays usable
    if (ended !== CUDA.success || thrown !== undefined) api.cudaGetLastError();
    if (thrown !== undefined) {
      if (graph[0] !== null) api.cudaGraphDestroy(graph[0]);
      throw thrown;
    }
    this.#cuda.check(ended, "cudaStreamEndCapture (the captured work was invalid: it synchronised, or used another stream without an event)");
    if (graph[0] === null) throw new FlorenceError("ENGINE_FAILED", "cudaStreamEndCapture returned no graph");
    try {
      const count: Out<number | bigint> = [0];
      this.#cuda.check(api.cudaGraphGetNodes(graph[0], null, count), "cudaGraphGetNodes");
      const exec: Out<MaybePointer> = [null];
      this.#cuda.check(api.cudaGraphInstantiateWithFlags(exec, graph[0], 0), "cudaGraphInstantiateWithFlags");
      return this.#cuda.trackGraph(exec[0]!, Number(count[0]));
    } finally {
      api.cudaGraphDestroy(graph[0]);
    }
  }

  /** Whether a capture is under way on this stream. */
  isCapturing(): boolean {
    const status: Out<number> = [0];
    this.#cuda.check(this.#cuda.api.cudaStreamIsCapturing(this.handle, status), "cudaStreamIsCapturing");
    return status[0] !== CUDA.captureStatusNone;
  }

  isIdle(): boolean {
    const code = this.#cuda.api.cudaStreamQuery(this.handle);
    if (code === CUDA.errorNotReady) return false;
    this.#cuda.check(code, "cudaStreamQuery");
    return true;
  }

  destroy(): void {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    this.#cuda.check(this.#cuda.api.cudaStreamDestroy(handle), "cudaStreamDestroy");
  }
}

export interface DeviceInfo {
  /** The device index (0: the first device CUDA_VISIBLE_DEVICES shows). */
  index: number;
  /** From the driver (cuDeviceGetName); undefined when libcuda.so.1 cannot be opened. */
  name: string | undefined;
  computeCapability: ComputeCapability;
  multiprocessors: number;
  /** Shares memory with the CPU (Jetson). */
  integrated: boolean;
}

/** Why CUDA cannot be used here, for skip messages and the `auto` backend choice. */
export type CudaAvailability = { ok: true; cuda: CudaRuntime } | { ok: false; reason: string };

export class CudaRuntime {
  readonly api: CudaRuntimeApi;
  readonly libraryPath: string;
  readonly runtimeVersion: number;
  readonly driverVersion: number;
  readonly device = 0;
  readonly #driver: CudaDriverApi | undefined;
  #live = { device: 0, pinned: 0, deviceBytes: 0, pinnedBytes: 0, graphs: 0 };
  readonly #sizes = new Map<Pointer, number>();

  private constructor(api: CudaRuntimeApi, driver: CudaDriverApi | undefined, runtimeVersion: number, driverVersion: number) {
    this.api = api;
    this.#driver = driver;
    this.libraryPath = api.library.path;
    this.runtimeVersion = runtimeVersion;
    this.driverVersion = driverVersion;
  }

  /**
   * Opens libcudart (newest soname first, moving on when the driver is too old for it) and checks that a GPU
   * is visible. Never throws: says why not instead.
   */
  static tryOpen(options: CudaOpenOptions = {}): CudaAvailability {
    const dirs = [...(options.searchDirs ?? []), ...LIBRARY_DIRS.cudart];
    const candidates = [...(options.libraries ?? []), ...SONAMES.cudart];
    const reasons: string[] = [];
    for (const candidate of candidates) {
      const library = openLibrary([candidate], candidate.includes("/") ? [] : dirs);
      if ("failures" in library) {
        reasons.push(...library.failures);
        continue;
      }
      const api = bindCudaRuntime(library);
      const runtime: Out<number> = [0];
      const driver: Out<number> = [0];
      const count: Out<number> = [0];
      api.cudaRuntimeGetVersion(runtime);
      api.cudaDriverGetVersion(driver);
      const code = api.cudaGetDeviceCount(count);
      if (code === CUDA.errorInsufficientDriver) {
        reasons.push(`${library.path}: CUDA runtime ${formatCudaVersion(runtime[0])} needs a newer driver than ${driver[0] ? formatCudaVersion(driver[0]) : "the installed one (none found)"}`);
        continue;
      }
      if (code !== CUDA.success || count[0] < 1) {
        const name = code === CUDA.success ? "no devices" : `${safeErrorName(api, code)} (${code})`;
        return { ok: false, reason: `no CUDA GPU visible to ${library.path} (CUDA runtime ${formatCudaVersion(runtime[0])}, driver ${driver[0] ? formatCudaVersion(driver[0]) : "none"}): cudaGetDeviceCount → ${name}` };
      }
      const driverLibrary = openLibrary(SONAMES.cuda, LIBRARY_DIRS.cuda);
      const driverApi = "failures" in driverLibrary ? undefined : bindCudaDriver(driverLibrary);
      return { ok: true, cuda: new CudaRuntime(api, driverApi, runtime[0], driver[0]) };
    }
    return { ok: false, reason: `no usable CUDA runtime (tried ${candidates.join(", ")}): ${reasons.join("; ") || "not found"}` };
  }

  static open(options: CudaOpenOptions = {}): CudaRuntime {
    const result = CudaRuntime.tryOpen(options);
    if (!result.ok) {
      throw new FlorenceError("ENGINE_UNAVAILABLE", result.reason, {
        fix: "install the NVIDIA driver and a CUDA runtime (JetPack includes both), or use --backend onnxruntime",
      });
    }
    return result.cuda;
  }

  check(code: number, what: string): void {
    if (code !== CUDA.success) throw cudaFailure(this.api, code, what);
  }

  attribute(attribute: number): number {
    const value: Out<number> = [0];
    this.check(this.api.cudaDeviceGetAttribute(value, attribute, this.device), `cudaDeviceGetAttribute(${attribute})`);
    return value[0];
  }

  computeCapability(): ComputeCapability {
    return { major: this.attribute(CUDA.attrComputeCapabilityMajor), minor: this.attribute(CUDA.attrComputeCapabilityMinor) };
  }

  /** The GPU's name from the driver API, or undefined where libcuda.so.1 is not available. */
  deviceName(): string | undefined {
    const driver = this.#driver;
    if (!driver) return undefined;
    const device: Out<number> = [0];
    if (driver.cuInit(0) !== 0 || driver.cuDeviceGet(device, this.device) !== 0) return undefined;
    const name = new Uint8Array(256);
    if (driver.cuDeviceGetName(name, name.length, device[0]) !== 0) return undefined;
    const end = name.indexOf(0);
    return new TextDecoder().decode(name.subarray(0, end < 0 ? name.length : end));
  }

  deviceInfo(): DeviceInfo {
    return {
      index: this.device,
      name: this.deviceName(),
      computeCapability: this.computeCapability(),
      multiprocessors: this.attribute(CUDA.attrMultiProcessorCount),
      integrated: this.attribute(CUDA.attrIntegrated) !== 0,
    };
  }

  memoryInfo(): { freeBytes: number; totalBytes: number } {
    const free: Out<number | bigint> = [0];
    const total: Out<number | bigint> = [0];
    this.check(this.api.cudaMemGetInfo(free, total), "cudaMemGetInfo");
    return { freeBytes: Number(free[0]), totalBytes: Number(total[0]) };
  }

  /** Allocations not yet freed, for leak checks. */
  liveAllocations(): { device: number; pinned: number; deviceBytes: number; pinnedBytes: number; graphs: number } {
    return { ...this.#live };
  }

  allocDevice(bytes: number): DeviceBuffer {
    checkSize(bytes, "device");
    const out: Out<MaybePointer> = [null];
    // cudaMalloc(0) gives no pointer; TensorRT needs a non-null address even for empty tensors
    this.check(this.api.cudaMalloc(out, Math.max(bytes, 1)), `cudaMalloc(${bytes} bytes)`);
    const address = out[0];
    if (address === null) throw cudaFailure(this.api, 2, `cudaMalloc(${bytes} bytes)`);
    this.#track(address, bytes, "device");
    return new DeviceBuffer(this, address, bytes);
  }

  /**
   * Page-locked host memory. `mapped: true` also maps it into the GPU's address space (zero-copy): the GPU then
   * reads and writes it in place through `deviceAddress` — on Jetson the same DRAM, on a desktop GPU over PCIe.
   */
  allocPinned(bytes: number, options: { mapped?: boolean } = {}): PinnedBuffer {
    checkSize(bytes, "pinned");
    const out: Out<MaybePointer> = [null];
    const flags = CUDA.hostAllocPortable | (options.mapped ? CUDA.hostAllocMapped : 0);
    this.check(this.api.cudaHostAlloc(out, Math.max(bytes, 1), flags), `cudaHostAlloc(${bytes} bytes${options.mapped ? ", mapped" : ""})`);
    const address = out[0];
    if (address === null) throw cudaFailure(this.api, 2, `cudaHostAlloc(${bytes} bytes)`);
    let deviceAddress: Pointer | undefined;
    if (options.mapped) {
      const device: Out<MaybePointer> = [null];
      const code = this.api.cudaHostGetDevicePointer(device, address, 0);
      if (code !== CUDA.success || device[0] === null) {
        this.api.cudaFreeHost(address);
        throw cudaFailure(this.api, code === CUDA.success ? 1 : code, "cudaHostGetDevicePointer");
      }
      deviceAddress = device[0];
    }
    this.#track(address, bytes, "pinned");
    return new PinnedBuffer(this, address, bytes, deviceAddress);
  }

  /** Whether the GPU can work on mapped host memory in place (every GPU CUDA 11+ supports; checked anyway). */
  canMapHostMemory(): boolean {
    return this.attribute(CUDA.attrCanMapHostMemory) !== 0;
  }

  /** @internal counts a graph made by CudaStream.capture */
  trackGraph(handle: Pointer, nodes: number): CudaGraphExec {
    this.#live.graphs++;
    return new CudaGraphExec(this, handle, nodes);
  }

  /** @internal called by CudaGraphExec.destroy() */
  releaseGraph(handle: Pointer): void {
    this.#live.graphs--;
    this.check(this.api.cudaGraphExecDestroy(handle), "cudaGraphExecDestroy");
  }

  #track(address: Pointer, bytes: number, kind: "device" | "pinned"): void {
    this.#sizes.set(address, bytes);
    this.#live[kind]++;
    this.#live[kind === "device" ? "deviceBytes" : "pinnedBytes"] += bytes;
  }

  /** Frees an allocation made by this runtime (called by the buffers' free()). */
  release(address: Pointer, kind: "device" | "pinned"): void {
    const bytes = this.#sizes.get(address) ?? 0;
    this.#sizes.delete(address);
    this.#live[kind]--;
    this.#live[kind === "device" ? "deviceBytes" : "pinnedBytes"] -= bytes;
    this.check(kind === "device" ? this.api.cudaFree(address) : this.api.cudaFreeHost(address), kind === "device" ? "cudaFree" : "cudaFreeHost");
  }

  createStream(): CudaStream {
    const out: Out<MaybePointer> = [null];
    this.check(this.api.cudaStreamCreateWithFlags(out, CUDA.streamNonBlocking), "cudaStreamCreateWithFlags");
    return new CudaStream(this, out[0]!);
  }

  /** `timing: false` (default) makes cheaper events for ordering only; `blockingSync` lets synchronize() sleep instead of spin. */
  createEvent(options: { timing?: boolean; blockingSync?: boolean } = {}): CudaEvent {
    const flags = (options.timing ? 0 : CUDA.eventDisableTiming) | (options.blockingSync ? CUDA.eventBlockingSync : 0);
    const out: Out<MaybePointer> = [null];
    this.check(this.api.cudaEventCreateWithFlags(out, flags), "cudaEventCreateWithFlags");
    return new CudaEvent(this, out[0]!, options.timing === true);
  }

  synchronizeDevice(): void {
    this.check(this.api.cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }

  describe(): string {
    return `CUDA runtime ${formatCudaVersion(this.runtimeVersion)} (${this.libraryPath}), driver ${formatCudaVersion(this.driverVersion)}`;
  }
}

function safeErrorName(api: CudaRuntimeApi, code: number): string {
  try {
    return api.cudaGetErrorName(code);
  } catch {
    return `error ${code}`;
  }
}

function checkSize(bytes: number, kind: string): void {
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new FlorenceError("INVALID_ARGUMENT", `${kind} allocation size must be a non-negative integer, got ${bytes}`);
  }
}
