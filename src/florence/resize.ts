/**
 * Pure, bit-exact re-implementations of the two uint8 resamplers Hugging Face's Florence-2 image processor can use:
 *
 * - "pil": Pillow's `ImagingResample` (src/libImaging/Resample.c) on an 8-bit RGB image, what `CLIPImageProcessorPil`
 *   (and transformers 4.x) call through `PIL.Image.resize(size, resample, reducing_gap=None)`: double-precision
 *   filter coefficients normalised per output pixel, then fixed point with 22 fractional bits, a rounding offset,
 *   horizontal pass first (only over the rows the vertical pass reads), clip to uint8, then the vertical pass.
 * - "torchvision": `torchvision.transforms.v2.functional.resize(uint8 tensor, BICUBIC, antialias=True)` on CPU, i.e.
 *   ATen's `_upsample_bicubic2d_aa` uint8 kernel (UpSampleKernel.cpp / UpSampleKernelAVXAntialias.h, Pillow-SIMD
 *   style): the same double coefficients (a = -0.5), stored as int16 with a precision chosen from the largest
 *   weight, horizontal then vertical, each pass rounding and saturating to uint8. The AVX2 kernel and the scalar
 *   fallback do the same integer arithmetic, so channel order (CHW or channels-last) does not change the result.
 *
 * Images are HWC RGB uint8. Coefficient tables depend only on (input size, output size, filter, arithmetic) and are
 * kept in a `ResizeCache` the caller owns, together with scratch buffers, so camera frames of a repeating size do
 * no per-frame table work or allocation.
 *
 * Both passes run as WebAssembly SIMD kernels (assembled below, no build step) doing the same integer arithmetic
 * four to sixteen bytes at a time; the JS loops are the fallback where WebAssembly is unavailable.
 */

import { FlorenceError } from "../errors.ts";
import { type AxisCoefficients, FILTERS, pilCoefficients, type ResampleFilter, torchvisionCoefficients } from "./resize_filters.ts";
import { KERNEL_MODULE, type KernelExports, type SimdKernels } from "./resize_wasm.ts";

export type { ResampleFilter } from "./resize_filters.ts";
export type { SimdKernels } from "./resize_wasm.ts";

/** An 8-bit RGB image, rows top to bottom, pixels interleaved R, G, B (HWC). */
export type RgbImage = { width: number; height: number; data: Uint8Array };

/** Whose integer arithmetic to reproduce. */
export type ResizeArithmetic = "pil" | "torchvision";

/** Coefficient tables and scratch memory reused across calls; create one per stream of frames. */
export type ResizeCache = {
  readonly tables: Map<string, AxisCoefficients>;
  /** Output of the horizontal pass. */
  horizontal: Uint8Array;
  /** Resized image when the caller gives no output buffer (used by pixelValues). */
  resized: Uint8Array;
  /** One output row of vertical-pass sums. */
  accumulator: Int32Array;
  /** "simd": the WebAssembly kernels when this runtime has them (default); "js": the JS loops only. */
  readonly kernels: "simd" | "js";
  /** The WebAssembly kernels' instance and memory, made on first use; null once they proved unavailable. */
  simd: SimdKernels | null | undefined;
};

/** Keeps a handful of sizes; a camera stream needs two entries. */
const MAX_CACHED_TABLES = 16;

export function createResizeCache(options: { kernels?: "simd" | "js" } = {}): ResizeCache {
  const kernels = options.kernels ?? "simd";
  if (kernels !== "simd" && kernels !== "js") {
    throw invalid(`kernels must be "simd" or "js", got ${String(kernels)}`, 'leave it out (the fastest available) or pass "js"');
  }
  return { tables: new Map(), horizontal: new Uint8Array(0), resized: new Uint8Array(0), accumulator: new Int32Array(0), kernels, simd: undefined };
}

function axisCoefficients(
  cache: ResizeCache,
  arithmetic: ResizeArithmetic,
  filterName: ResampleFilter,
  inSize: number,
  outSize: number,
): AxisCoefficients {
  const key = `${arithmetic}/${filterName}/${inSize}/${outSize}`;
  const cached = cache.tables.get(key);
  if (cached) return cached;
  const filter = FILTERS[filterName];
  const table =
    arithmetic === "pil" ? pilCoefficients(inSize, outSize, filter) : torchvisionCoefficients(inSize, outSize, filter);
  if (cache.tables.size >= MAX_CACHED_TABLES) {
    const oldest = cache.tables.keys().next().value;
    if (oldest !== undefined) cache.tables.delete(oldest);
  }
  cache.tables.set(key, table);
  return table;
}

/** Horizontal pass over source rows [firstRow, firstRow + rows) into `out` (dst width × rows). */
function resampleRows(
  src: Uint8Array,
  srcWidth: number,
  firstRow: number,
  rows: number,
  axis: AxisCoefficients,
  out: Uint8Array,
): void {
  const { outSize, stride, start, count, weights, precision } = axis;
  const half = 2 ** (precision - 1);
  const shift = precision;
  let o = 0;
  for (let y = 0; y < rows; y++) {
    const rowBase = (firstRow + y) * srcWidth * 3;
    for (let xx = 0; xx < outSize; xx++) {
      const n = count[xx]!;
      let k = xx * stride;
      let p = rowBase + start[xx]! * 3;
      let r = half;
      let g = half;
      let b = half;
      if (n === 4) {
        // The common upscaling window, unrolled.
        const w0 = weights[k]!;
        const w1 = weights[k + 1]!;
        const w2 = weights[k + 2]!;
        const w3 = weights[k + 3]!;
        r += src[p]! * w0 + src[p + 3]! * w1 + src[p + 6]! * w2 + src[p + 9]! * w3;
        g += src[p + 1]! * w0 + src[p + 4]! * w1 + src[p + 7]! * w2 + src[p + 10]! * w3;
        b += src[p + 2]! * w0 + src[p + 5]! * w1 + src[p + 8]! * w2 + src[p + 11]! * w3;
      } else {
        for (let i = 0; i < n; i++, k++, p += 3) {
          const w = weights[k]!;
          r += src[p]! * w;
          g += src[p + 1]! * w;
          b += src[p + 2]! * w;
        }
      }
      r >>= shift;
      g >>= shift;
      b >>= shift;
      out[o++] = r < 0 ? 0 : r > 255 ? 255 : r;
      out[o++] = g < 0 ? 0 : g > 255 ? 255 : g;
      out[o++] = b < 0 ? 0 : b > 255 ? 255 : b;
    }
  }
}

/**
 * Vertical pass; `rowOffset` is subtracted from the table's start rows (Pillow shifts them by ybox_first). Sums a
 * whole output row tap by tap into `accumulator` (sequential reads instead of a column walk per byte).
 */
function resampleColumns(
  src: Uint8Array,
  width: number,
  rowOffset: number,
  axis: AxisCoefficients,
  out: Uint8Array,
  accumulator: Int32Array,
): void {
  const { outSize, stride, start, count, weights, precision } = axis;
  const half = 2 ** (precision - 1);
  const shift = precision;
  const rowBytes = width * 3;
  let o = 0;
  for (let yy = 0; yy < outSize; yy++) {
    const n = count[yy]!;
    const k0 = yy * stride;
    const base = (start[yy]! - rowOffset) * rowBytes;
    if (n === 4) {
      // The common upscaling window, unrolled.
      const w0 = weights[k0]!;
      const w1 = weights[k0 + 1]!;
      const w2 = weights[k0 + 2]!;
      const w3 = weights[k0 + 3]!;
      const r1 = base + rowBytes;
      const r2 = r1 + rowBytes;
      const r3 = r2 + rowBytes;
      for (let x = 0; x < rowBytes; x++) {
        const v = (half + src[base + x]! * w0 + src[r1 + x]! * w1 + src[r2 + x]! * w2 + src[r3 + x]! * w3) >> shift;
        out[o++] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
      continue;
    }
    accumulator.fill(half, 0, rowBytes);
    for (let i = 0; i < n; i++) {
      const w = weights[k0 + i]!;
      const row = base + i * rowBytes;
      // The exact sum fits in int32 (as in Pillow's and ATen's C), so Int32Array storage loses nothing.
      for (let x = 0; x < rowBytes; x++) accumulator[x] += src[row + x]! * w;
    }
    for (let x = 0; x < rowBytes; x++) {
      const v = accumulator[x]! >> shift;
      out[o++] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
}


const SLACK = 16;
const PAGE = 65536;

function simdKernels(cache: ResizeCache): SimdKernels | null {
  if (cache.simd !== undefined) return cache.simd;
  if (cache.kernels !== "simd" || !KERNEL_MODULE) return (cache.simd = null);
  const memory = new WebAssembly.Memory({ initial: 1 });
  const instance = new WebAssembly.Instance(KERNEL_MODULE, { env: { memory } });
  return (cache.simd = { memory, run: instance.exports as unknown as KernelExports, resized: undefined });
}

/**
 * Byte offsets of consecutive regions (16-byte aligned, with slack), growing the memory to hold them; undefined
 * when it cannot grow that far (the caller falls back to the JS loops).
 */
function layout(kernels: SimdKernels, sizes: readonly number[]): number[] | undefined {
  const offsets: number[] = [];
  let end = 0;
  for (const size of sizes) {
    offsets.push(end);
    end += (size + SLACK + 15) & ~15;
  }
  const have = kernels.memory.buffer.byteLength;
  if (end > have) {
    try {
      kernels.memory.grow(Math.ceil((end - have) / PAGE));
    } catch {
      return undefined;
    }
  }
  return offsets;
}

/** Copies an axis' tables into memory at `at`: start, count, weights (int32). */
function writeAxis(memory: Int32Array, at: number, axis: AxisCoefficients): { start: number; count: number; weights: number } {
  const start = at;
  const count = start + axis.outSize * 4;
  const weights = count + axis.outSize * 4;
  memory.set(axis.start, start >> 2);
  memory.set(axis.count, count >> 2);
  memory.set(axis.weights, weights >> 2);
  return { start, count, weights };
}

function axisBytes(axis: AxisCoefficients | undefined): number {
  return axis ? (2 * axis.outSize + axis.weights.length) * 4 : 0;
}

/**
 * The resampled image at offset 0 of the kernels' memory (valid until their next use): resampleRows on the source
 * rows the vertical pass reads, then resampleColumns, exactly as the JS path. Undefined when memory runs out.
 */
function resampleSimd(
  kernels: SimdKernels,
  src: RgbImage,
  width: number,
  height: number,
  horizontal: AxisCoefficients | undefined,
  vertical: AxisCoefficients | undefined,
): Uint8Array | undefined {
  const outBytes = width * height * 3;
  const srcBytes = src.width * src.height * 3;
  const firstRow = vertical ? vertical.start[0]! : 0;
  const lastRow = vertical ? vertical.start[height - 1]! + vertical.count[height - 1]! : src.height;
  const middleBytes = horizontal && vertical ? width * (lastRow - firstRow) * 3 : 0;
  kernels.resized = undefined;
  const offsets = layout(kernels, [outBytes, srcBytes, middleBytes, axisBytes(horizontal) + axisBytes(vertical)]);
  if (!offsets) return undefined;
  const [outAt, srcAt, middleAt, tablesAt] = offsets as [number, number, number, number];
  const bytes = new Uint8Array(kernels.memory.buffer);
  const words = new Int32Array(kernels.memory.buffer);
  bytes.set(src.data.subarray(0, srcBytes), srcAt);
  const hTables = horizontal ? writeAxis(words, tablesAt, horizontal) : undefined;
  const vTables = vertical ? writeAxis(words, tablesAt + axisBytes(horizontal), vertical) : undefined;
  const srcRowBytes = src.width * 3;
  let rows = srcAt;
  let rowOffset = 0;
  if (hTables) {
    const to = vertical ? middleAt : outAt;
    kernels.run.rows(srcAt + firstRow * srcRowBytes, srcRowBytes, lastRow - firstRow, width, hTables.start, hTables.count, hTables.weights, horizontal!.stride * 4, to, horizontal!.precision);
    rows = to;
    rowOffset = firstRow;
  }
  if (vTables) {
    kernels.run.columns(rows, width * 3, height, vTables.start, vTables.count, vTables.weights, vertical!.stride * 4, rowOffset, outAt, vertical!.precision);
  }
  kernels.resized = { width, height };
  return bytes.subarray(outAt, outAt + outBytes);
}

/**
 * `out[c·H·W + i] = levels[c·256 + image[3i + c]]` for the `region` of `image`: uint8 HWC → float32 CHW through a
 * per-channel table of 3 × 256 values. Reads the last resampled image in place when it is that image. Returns `out`;
 * with `out` null and a cache whose kernels run, it returns a view into the kernels' memory instead (no 3 × H × W
 * float copy; valid until the cache is next used), else a new array.
 */
export function levelsToPlanes(
  image: RgbImage,
  region: { top: number; left: number; width: number; height: number },
  levels: Float32Array,
  out: Float32Array | null,
  cache?: ResizeCache,
): Float32Array {
  const { top, left, width, height } = region;
  const floats = 3 * width * height;
  if (levels.length !== 3 * 256 || (out !== null && out.length !== floats) || top < 0 || left < 0 || top + height > image.height || left + width > image.width) {
    throw invalid(`levelsToPlanes: region ${width}x${height}+${left}+${top} of a ${image.width}x${image.height} image into ${out?.length ?? floats} floats`, "pass a region inside the image, 768 levels and 3 × width × height floats");
  }
  const kernels = cache ? simdKernels(cache) : null;
  const rowBytes = image.width * 3;
  const imageBytes = image.width * image.height * 3;
  const last = kernels?.resized;
  const inPlace = kernels && last !== undefined && last.width === image.width && last.height === image.height &&
    image.data.buffer === kernels.memory.buffer && image.data.byteOffset === 0;
  const offsets = kernels ? layout(kernels, [imageBytes, levels.length * 4, floats * 4]) : undefined;
  if (kernels && offsets) {
    const [imageAt, levelsAt, outAt] = offsets as [number, number, number];
    if (!inPlace) {
      kernels.resized = undefined;
      new Uint8Array(kernels.memory.buffer).set(image.data.subarray(0, imageBytes), imageAt);
    }
    new Float32Array(kernels.memory.buffer, levelsAt, levels.length).set(levels);
    kernels.run.planes(imageAt + top * rowBytes + left * 3, rowBytes, width, height, levelsAt, outAt);
    const planes = new Float32Array(kernels.memory.buffer, outAt, floats);
    if (out === null) return planes;
    out.set(planes);
    return out;
  }
  const target = out ?? new Float32Array(floats);
  const plane = width * height;
  const data = image.data;
  let o = 0;
  for (let y = 0; y < height; y++) {
    let p = (top + y) * rowBytes + left * 3;
    for (let x = 0; x < width; x++, p += 3, o++) {
      target[o] = levels[data[p]!]!;
      target[plane + o] = levels[256 + data[p + 1]!]!;
      target[2 * plane + o] = levels[512 + data[p + 2]!]!;
    }
  }
  return target;
}

const MAX_SIDE = 1 << 20;

function invalid(message: string, fix: string): FlorenceError {
  return new FlorenceError("INVALID_ARGUMENT", `resize: ${message}`, { fix });
}

function checkSize(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1 || value > MAX_SIDE) {
    throw invalid(`${name} must be an integer from 1 to ${MAX_SIDE}, got ${String(value)}`, `pass a positive integer ${name}`);
  }
}

/**
 * Resamples `src` to width × height with the chosen filter and integer arithmetic. Writes into `out` when given
 * (it must hold width × height × 3 bytes) and returns an RgbImage over it.
 */
export function resampleRgb(
  src: RgbImage,
  width: number,
  height: number,
  arithmetic: ResizeArithmetic,
  filter: ResampleFilter = "bicubic",
  cache: ResizeCache = createResizeCache(),
  out?: Uint8Array,
): RgbImage {
  const target = out ?? new Uint8Array(checkResample(src, width, height, arithmetic, filter));
  return { width, height, data: resample(src, width, height, arithmetic, filter, cache, target) };
}

/**
 * resampleRgb into the cache's scratch memory, without a copy: the image is valid until the cache's next use.
 * pixelValues reads it straight from there.
 */
export function resampleRgbInCache(
  src: RgbImage,
  width: number,
  height: number,
  arithmetic: ResizeArithmetic,
  filter: ResampleFilter,
  cache: ResizeCache,
): RgbImage {
  return { width, height, data: resample(src, width, height, arithmetic, filter, cache, undefined) };
}

/** Validates a resample request; returns the output size in bytes. */
function checkResample(src: RgbImage, width: number, height: number, arithmetic: ResizeArithmetic, filter: ResampleFilter): number {
  checkSize("source width", src.width);
  checkSize("source height", src.height);
  checkSize("width", width);
  checkSize("height", height);
  if (src.data.length < src.width * src.height * 3) {
    throw invalid(
      `source data has ${src.data.length} bytes, expected ${src.width * src.height * 3} for ${src.width}x${src.height} RGB`,
      "pass HWC RGB data of width × height × 3 bytes (decodeImage returns that)",
    );
  }
  if (arithmetic === "torchvision" && filter !== "bicubic" && filter !== "bilinear") {
    throw invalid(`torchvision arithmetic supports bicubic and bilinear, not ${filter}`, 'use the "pil" arithmetic');
  }
  return width * height * 3;
}

/** The resampled bytes: in `target` when given, else in the cache's scratch memory. */
function resample(
  src: RgbImage,
  width: number,
  height: number,
  arithmetic: ResizeArithmetic,
  filter: ResampleFilter,
  cache: ResizeCache,
  target: Uint8Array | undefined,
): Uint8Array {
  const outBytes = checkResample(src, width, height, arithmetic, filter);
  if (target && target.length < outBytes) {
    throw invalid(`output buffer has ${target.length} bytes, needs ${outBytes}`, "pass a buffer of width × height × 3 bytes");
  }
  const needHorizontal = width !== src.width;
  const needVertical = height !== src.height;
  const vertical = needVertical ? axisCoefficients(cache, arithmetic, filter, src.height, height) : undefined;
  const horizontal = needHorizontal ? axisCoefficients(cache, arithmetic, filter, src.width, width) : undefined;
  const kernels = simdKernels(cache);
  const resized = kernels && (horizontal || vertical) ? resampleSimd(kernels, src, width, height, horizontal, vertical) : undefined;
  if (resized) {
    if (!target) return resized;
    target.set(resized);
    return target;
  }
  if (!target) {
    if (cache.resized.length < outBytes) cache.resized = new Uint8Array(outBytes);
    target = cache.resized;
  }
  if (!horizontal && !vertical) {
    target.set(src.data.subarray(0, outBytes));
    return target;
  }
  let rows: Uint8Array = src.data;
  let rowOffset = 0;
  if (horizontal) {
    // Pillow only resamples the source rows the vertical pass reads; for torchvision's arithmetic (which does all
    // rows) the result is the same.
    let firstRow = 0;
    let lastRow = src.height;
    if (vertical) {
      firstRow = vertical.start[0]!;
      lastRow = vertical.start[height - 1]! + vertical.count[height - 1]!;
    }
    const count = lastRow - firstRow;
    const bytes = width * count * 3;
    if (!vertical) {
      resampleRows(src.data, src.width, firstRow, count, horizontal, target);
      return target;
    }
    if (cache.horizontal.length < bytes) cache.horizontal = new Uint8Array(bytes);
    resampleRows(src.data, src.width, firstRow, count, horizontal, cache.horizontal);
    rows = cache.horizontal;
    rowOffset = firstRow;
  }
  if (cache.accumulator.length < width * 3) cache.accumulator = new Int32Array(width * 3);
  resampleColumns(rows, width, rowOffset, vertical!, target, cache.accumulator);
  return target;
}

/** `PIL.Image.resize((width, height), Image.BICUBIC)` on an RGB image, byte for byte. */
export function resizeBicubicPil(
  src: RgbImage,
  width: number,
  height: number,
  cache?: ResizeCache,
  out?: Uint8Array,
): RgbImage {
  return resampleRgb(src, width, height, "pil", "bicubic", cache, out);
}

/** `torchvision.transforms.v2.functional.resize(uint8, [height, width], BICUBIC, antialias=True)` on CPU. */
export function resizeBicubicTorchvision(
  src: RgbImage,
  width: number,
  height: number,
  cache?: ResizeCache,
  out?: Uint8Array,
): RgbImage {
  return resampleRgb(src, width, height, "torchvision", "bicubic", cache, out);
}
