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
 */

import { FlorenceError } from "../errors.ts";

/** An 8-bit RGB image, rows top to bottom, pixels interleaved R, G, B (HWC). */
export type RgbImage = { width: number; height: number; data: Uint8Array };

/** Whose integer arithmetic to reproduce. */
export type ResizeArithmetic = "pil" | "torchvision";

/** Pillow's resampling filters that ImagingResample implements (PIL.Image.Resampling minus NEAREST). */
export type ResampleFilter = "bicubic" | "bilinear" | "lanczos" | "box" | "hamming";

/** Coefficients for one axis: for output index i, input indices start[i] .. start[i]+count[i]-1. */
type AxisCoefficients = {
  readonly inSize: number;
  readonly outSize: number;
  /** Row stride of `weights` (Pillow's ksize). */
  readonly stride: number;
  readonly start: Int32Array;
  readonly count: Int32Array;
  /** Fixed-point weights, `stride` per output index (plus one row of slack, see pilCoefficients). */
  readonly weights: Int32Array;
  /** Number of fractional bits in `weights`. */
  readonly precision: number;
};

/** Coefficient tables and scratch memory reused across calls; create one per stream of frames. */
export type ResizeCache = {
  readonly tables: Map<string, AxisCoefficients>;
  /** Output of the horizontal pass. */
  horizontal: Uint8Array;
  /** Resized image when the caller gives no output buffer (used by pixelValues). */
  resized: Uint8Array;
  /** One output row of vertical-pass sums. */
  accumulator: Int32Array;
};

/** Keeps a handful of sizes; a camera stream needs two entries. */
const MAX_CACHED_TABLES = 16;

export function createResizeCache(): ResizeCache {
  return { tables: new Map(), horizontal: new Uint8Array(0), resized: new Uint8Array(0), accumulator: new Int32Array(0) };
}

const PIL_PRECISION_BITS = 32 - 8 - 2;

type Filter = { readonly support: number; readonly weight: (x: number) => number };

// Pillow's bicubic_filter with a = -0.5. ATen's cubic_convolution1/2 with A = -0.5 give the same doubles: every
// step differs from Pillow's only by an exact scaling with 0.5.
function bicubicWeight(x: number): number {
  if (x < 0) x = -x;
  if (x < 1) return (1.5 * x - 2.5) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * -0.5;
  return 0;
}

function bilinearWeight(x: number): number {
  if (x < 0) x = -x;
  return x < 1 ? 1 - x : 0;
}

function boxWeight(x: number): number {
  return x > -0.5 && x <= 0.5 ? 1 : 0;
}

// Pillow multiplies by the float literals 0.54f and 0.46f.
const HAMMING_A = Math.fround(0.54);
const HAMMING_B = Math.fround(0.46);

function hammingWeight(x: number): number {
  if (x < 0) x = -x;
  if (x === 0) return 1;
  if (x >= 1) return 0;
  x = x * Math.PI;
  return (Math.sin(x) / x) * (HAMMING_A + HAMMING_B * Math.cos(x));
}

function sinc(x: number): number {
  if (x === 0) return 1;
  x = x * Math.PI;
  return Math.sin(x) / x;
}

function lanczosWeight(x: number): number {
  return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

const FILTERS: Record<ResampleFilter, Filter> = {
  bicubic: { support: 2, weight: bicubicWeight },
  bilinear: { support: 1, weight: bilinearWeight },
  box: { support: 0.5, weight: boxWeight },
  hamming: { support: 1, weight: hammingWeight },
  lanczos: { support: 3, weight: lanczosWeight },
};

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for box (0, inSize), i.e. the whole image. */
function pilCoefficients(inSize: number, outSize: number, filter: Filter): AxisCoefficients {
  const scale = inSize / outSize;
  const filterScale = scale < 1 ? 1 : scale;
  const support = filter.support * filterScale;
  const stride = Math.ceil(support) * 2 + 1;
  // One extra row: if rounding ever made a window longer than `stride`, Pillow's row spills into the next row's
  // slots (and reads them back); the flat layout reproduces that.
  const doubles = new Float64Array((outSize + 1) * stride);
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const inverse = 1 / filterScale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const base = xx * stride;
    let total = 0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.weight((x + xmin - center + 0.5) * inverse);
      doubles[base + x] = w;
      total += w;
    }
    if (total !== 0) {
      for (let x = 0; x < xmax; x++) doubles[base + x] /= total;
    }
    for (let x = xmax; x < stride; x++) doubles[base + x] = 0;
    start[xx] = xmin;
    count[xx] = xmax;
  }
  const weights = new Int32Array(doubles.length);
  const one = 2 ** PIL_PRECISION_BITS;
  for (let i = 0; i < doubles.length; i++) {
    const v = doubles[i]!;
    weights[i] = v < 0 ? Math.trunc(-0.5 + v * one) : Math.trunc(0.5 + v * one);
  }
  return { inSize, outSize, stride, start, count, weights, precision: PIL_PRECISION_BITS };
}

/** ATen's _compute_index_ranges_int16_weights (antialias=True, align_corners=False, no explicit scale). */
function torchvisionCoefficients(inSize: number, outSize: number, filter: Filter): AxisCoefficients {
  const scale = inSize / outSize;
  const support = scale >= 1 ? filter.support * scale : filter.support;
  const stride = Math.ceil(support) * 2 + 1;
  const doubles = new Float64Array(outSize * stride);
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const inverse = scale >= 1 ? 1 / scale : 1;
  let maxWeight = 0;
  for (let i = 0; i < outSize; i++) {
    const center = scale * (i + 0.5);
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    let size = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    size = size < 0 ? 0 : size > stride ? stride : size;
    const base = i * stride;
    let total = 0;
    for (let j = 0; j < size; j++) {
      const w = filter.weight((j + xmin - center + 0.5) * inverse);
      doubles[base + j] = w;
      total += w;
    }
    if (total !== 0) {
      for (let j = 0; j < size; j++) {
        doubles[base + j] /= total;
        if (doubles[base + j]! > maxWeight) maxWeight = doubles[base + j]!;
      }
    }
    start[i] = xmin;
    count[i] = size;
  }
  // Largest precision (at most 22) for which the biggest weight still fits in int16.
  let precision = 0;
  for (precision = 0; precision < 22; precision++) {
    const next = Math.trunc(0.5 + maxWeight * 2 ** (precision + 1));
    if (next >= 1 << 15) break;
  }
  const weights = new Int32Array(doubles.length);
  const one = 2 ** precision;
  for (let i = 0; i < doubles.length; i++) {
    const v = doubles[i]! * one;
    // Stored as int16 in ATen.
    weights[i] = ((v < 0 ? Math.trunc(-0.5 + v) : Math.trunc(0.5 + v)) << 16) >> 16;
  }
  return { inSize, outSize, stride, start, count, weights, precision };
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
  const outBytes = width * height * 3;
  const target = out ?? new Uint8Array(outBytes);
  if (target.length < outBytes) {
    throw invalid(`output buffer has ${target.length} bytes, needs ${outBytes}`, "pass a buffer of width × height × 3 bytes");
  }
  const needHorizontal = width !== src.width;
  const needVertical = height !== src.height;
  if (!needHorizontal && !needVertical) {
    target.set(src.data.subarray(0, outBytes));
    return { width, height, data: target };
  }
  const vertical = needVertical ? axisCoefficients(cache, arithmetic, filter, src.height, height) : undefined;
  let rows: Uint8Array = src.data;
  let rowOffset = 0;
  if (needHorizontal) {
    const horizontal = axisCoefficients(cache, arithmetic, filter, src.width, width);
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
    if (!needVertical) {
      resampleRows(src.data, src.width, firstRow, count, horizontal, target);
      return { width, height, data: target };
    }
    if (cache.horizontal.length < bytes) cache.horizontal = new Uint8Array(bytes);
    resampleRows(src.data, src.width, firstRow, count, horizontal, cache.horizontal);
    rows = cache.horizontal;
    rowOffset = firstRow;
  }
  if (cache.accumulator.length < width * 3) cache.accumulator = new Int32Array(width * 3);
  resampleColumns(rows, width, rowOffset, vertical!, target, cache.accumulator);
  return { width, height, data: target };
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
