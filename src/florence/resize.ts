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

// ---------------------------------------------------------------------------------------------------------------
// WebAssembly SIMD kernels: resampleRows, resampleColumns and the uint8 → float planes lookup of pixelValues, with
// the same integer arithmetic (i32 sums of uint8 × fixed-point weight, arithmetic shift, saturation to 0..255 by
// the narrowing instructions). The module is assembled from opcodes so there is no build step and no binary blob.

type Code = number[];

function uleb(value: number): Code {
  const out: Code = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value !== 0) byte |= 0x80;
    out.push(byte);
  } while (value !== 0);
  return out;
}

function sleb(value: number): Code {
  const out: Code = [];
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    if ((value === 0 && (byte & 0x40) === 0) || (value === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const I32 = 0x7f;
const V128 = 0x7b;
const VOID = 0x40;
const OP = {
  block: 0x02, loop: 0x03, if: 0x04, else: 0x05, end: 0x0b, br: 0x0c, brIf: 0x0d, localGet: 0x20, localSet: 0x21,
  i32Load: 0x28, f32Load: 0x2a, i32Load8U: 0x2d, f32Store: 0x38, i32Const: 0x41, i32Eq: 0x46, i32GeS: 0x4e,
  i32Add: 0x6a, i32Sub: 0x6b, i32Mul: 0x6c, i32And: 0x71, i32Shl: 0x74, i32ShrS: 0x75,
} as const;
// 0xfd-prefixed opcodes (WebAssembly SIMD, https://github.com/WebAssembly/simd BinarySIMD.md)
const SIMD = {
  load: 0x00, load32Splat: 0x09, store: 0x0b, i32x4Splat: 0x11, f32x4Splat: 0x13, f32x4ReplaceLane: 0x20, i8x16NarrowI16x8U: 0x66, load32Zero: 0x5c,
  store32Lane: 0x5a, i16x8NarrowI32x4S: 0x85, i16x8ExtendLowI8x16U: 0x89, i16x8ExtendHighI8x16U: 0x8a,
  i32x4ExtendLowI16x8U: 0xa9, i32x4ExtendHighI16x8U: 0xaa, i32x4ShrS: 0xac, i32x4Add: 0xae, i32x4Mul: 0xb5,
} as const;

const get = (local: number): Code => [OP.localGet, ...uleb(local)];
const set = (local: number): Code => [OP.localSet, ...uleb(local)];
const i32 = (value: number): Code => [OP.i32Const, ...sleb(value)];
const simd = (op: number, ...immediates: number[]): Code => [0xfd, ...uleb(op), ...immediates];
/** A memory access: alignment exponent and byte offset. */
const mem = (op: number, align: number, offset = 0): Code => [op, align, ...uleb(offset)];
const simdMem = (op: number, align: number, offset = 0): Code => simd(op, align, ...uleb(offset));
const addTo = (local: number, amount: Code): Code => [...get(local), ...amount, OP.i32Add, ...set(local)];
/** `for (counter = 0; counter < limit; counter++) body` over i32 locals. */
const count = (counter: number, limit: number, body: Code): Code => [
  ...i32(0), ...set(counter),
  OP.block, VOID, OP.loop, VOID,
  ...get(counter), ...get(limit), OP.i32GeS, OP.brIf, 1,
  ...body,
  ...addTo(counter, i32(1)),
  OP.br, 0, OP.end, OP.end,
];
/** i32 array element `base[index]`. */
const element = (base: number, index: number): Code => [...get(base), ...get(index), ...i32(2), OP.i32Shl, OP.i32Add, ...mem(OP.i32Load, 2)];
/** i32x4.splat(1 << (shift - 1)), the rounding offset. */
const halfOf = (shift: number): Code => [...i32(1), ...get(shift), ...i32(1), OP.i32Sub, OP.i32Shl, ...simd(SIMD.i32x4Splat)];
/** (acc >> shift), one i32x4. */
const shifted = (acc: number, shift: number): Code => [...get(acc), ...get(shift), ...simd(SIMD.i32x4ShrS)];
/** acc += widen(lanes) × weight, i32x4. */
const multiplyAdd = (acc: number, lanes: Code, weight: number): Code => [...get(acc), ...lanes, ...get(weight), ...simd(SIMD.i32x4Mul), ...simd(SIMD.i32x4Add), ...set(acc)];

interface KernelFunction {
  name: string;
  params: number;
  locals: [number, number][];
  body: Code;
}

/**
 * rows(src, srcRowBytes, rowCount, outWidth, start, count, weights, strideBytes, out, shift): the horizontal pass,
 * one output pixel (R, G, B and a spare lane) per i32x4. Reads one byte past a row's last pixel and writes one byte
 * past each output pixel (the next pixel's first byte, written next), so both buffers need 16 bytes of slack.
 */
function rowsKernel(): KernelFunction {
  const [src, srcRowBytes, rowCount, outWidth, start, counts, weights, strideBytes, out, shift] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const [y, x, tap, taps, p, w] = [10, 11, 12, 13, 14, 15];
  const [half, acc, weight] = [16, 17, 18];
  const pixel = (offset: number): Code => [...get(p), ...simdMem(SIMD.load32Zero, 0, offset), ...simd(SIMD.i16x8ExtendLowI8x16U), ...simd(SIMD.i32x4ExtendLowI16x8U)];
  const tapAt = (k: number): Code => [...get(w), ...simdMem(SIMD.load32Splat, 2, 4 * k), ...set(weight), ...multiplyAdd(acc, pixel(3 * k), weight)];
  const body = [
    ...halfOf(shift), ...set(half),
    ...count(y, rowCount, [
      ...count(x, outWidth, [
        ...element(counts, x), ...set(taps),
        ...get(src), ...element(start, x), ...i32(3), OP.i32Mul, OP.i32Add, ...set(p),
        ...get(weights), ...get(x), ...get(strideBytes), OP.i32Mul, OP.i32Add, ...set(w),
        ...get(half), ...set(acc),
        // four taps (any upscale) unrolled; other windows loop
        ...get(taps), ...i32(4), OP.i32Eq, OP.if, VOID,
        ...tapAt(0), ...tapAt(1), ...tapAt(2), ...tapAt(3),
        OP.else,
        ...count(tap, taps, [...tapAt(0), ...addTo(p, i32(3)), ...addTo(w, i32(4))]),
        OP.end,
        // saturating narrows i32 → i16 → u8 clip to 0..255; only lanes 0-3 are stored, so acc is just a filler operand
        ...get(out), ...shifted(acc, shift), ...get(acc), ...simd(SIMD.i16x8NarrowI32x4S), ...get(acc), ...simd(SIMD.i8x16NarrowI16x8U),
        ...simdMem(SIMD.store32Lane, 0), 0,
        ...addTo(out, i32(3)),
      ]),
      ...addTo(src, get(srcRowBytes)),
    ]),
  ];
  return { name: "rows", params: 10, locals: [[6, I32], [3, V128]], body };
}

/**
 * columns(src, rowBytes, outHeight, start, count, weights, strideBytes, rowOffset, out, shift): the vertical pass,
 * sixteen bytes of a row per step. Rows are padded to 16 bytes: reads and writes run up to 15 bytes past a row (the
 * next row's start, written after it), so both buffers need 16 bytes of slack.
 */
function columnsKernel(): KernelFunction {
  const [src, rowBytes, outHeight, start, counts, weights, strideBytes, rowOffset, out, shift] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const [y, x, tap, taps, base, p, w, chunks] = [10, 11, 12, 13, 14, 15, 16, 17];
  const [half, a0, a1, a2, a3, bytes, low, high, weight] = [18, 19, 20, 21, 22, 23, 24, 25, 26];
  const body = [
    ...halfOf(shift), ...set(half),
    ...get(rowBytes), ...i32(15), OP.i32Add, ...i32(4), OP.i32ShrS, ...set(chunks),
    ...count(y, outHeight, [
      ...element(counts, y), ...set(taps),
      ...get(src), ...element(start, y), ...get(rowOffset), OP.i32Sub, ...get(rowBytes), OP.i32Mul, OP.i32Add, ...set(base),
      ...count(x, chunks, [
        ...get(half), ...set(a0), ...get(half), ...set(a1), ...get(half), ...set(a2), ...get(half), ...set(a3),
        ...get(base), ...get(x), ...i32(4), OP.i32Shl, OP.i32Add, ...set(p),
        ...get(weights), ...get(y), ...get(strideBytes), OP.i32Mul, OP.i32Add, ...set(w),
        ...count(tap, taps, [
          ...get(p), ...simdMem(SIMD.load, 0), ...set(bytes),
          ...get(w), ...simdMem(SIMD.load32Splat, 2), ...set(weight),
          ...get(bytes), ...simd(SIMD.i16x8ExtendLowI8x16U), ...set(low),
          ...get(bytes), ...simd(SIMD.i16x8ExtendHighI8x16U), ...set(high),
          ...multiplyAdd(a0, [...get(low), ...simd(SIMD.i32x4ExtendLowI16x8U)], weight),
          ...multiplyAdd(a1, [...get(low), ...simd(SIMD.i32x4ExtendHighI16x8U)], weight),
          ...multiplyAdd(a2, [...get(high), ...simd(SIMD.i32x4ExtendLowI16x8U)], weight),
          ...multiplyAdd(a3, [...get(high), ...simd(SIMD.i32x4ExtendHighI16x8U)], weight),
          ...addTo(p, get(rowBytes)), ...addTo(w, i32(4)),
        ]),
        ...get(out), ...get(x), ...i32(4), OP.i32Shl, OP.i32Add,
        ...shifted(a0, shift), ...shifted(a1, shift), ...simd(SIMD.i16x8NarrowI32x4S),
        ...shifted(a2, shift), ...shifted(a3, shift), ...simd(SIMD.i16x8NarrowI32x4S),
        ...simd(SIMD.i8x16NarrowI16x8U), ...simdMem(SIMD.store, 0),
      ]),
      ...addTo(out, get(rowBytes)),
    ]),
  ];
  return { name: "columns", params: 10, locals: [[8, I32], [9, V128]], body };
}

/**
 * planes(src, rowBytes, width, height, levels, out): out[c·H·W + y·W + x] = levels[c·256 + src[y·rowBytes + 3x + c]]
 * in float32, uint8 HWC → CHW through a per-channel table (pixelValues' rescale + normalise).
 */
function planesKernel(): KernelFunction {
  const [src, rowBytes, width, height, levels, out] = [0, 1, 2, 3, 4, 5];
  const [y, x, p, planeBytes, twoPlanes, groups, tail] = [6, 7, 8, 9, 10, 11, 12];
  const planeOffset = (c: number): Code => (c === 0 ? [] : [...get(c === 1 ? planeBytes : twoPlanes), OP.i32Add]);
  /** levels[c·256 + src[p + at]] as f32 on the stack. */
  const level = (c: number, at: number): Code => [
    ...get(levels), ...get(p), ...mem(OP.i32Load8U, 0, at), ...i32(2), OP.i32Shl, OP.i32Add, ...mem(OP.f32Load, 2, c * 1024),
  ];
  // four pixels per step: each plane gets one 16-byte store of four looked-up floats
  const group = (c: number): Code => [
    ...get(out), ...planeOffset(c),
    ...level(c, c), ...simd(SIMD.f32x4Splat),
    ...level(c, 3 + c), ...simd(SIMD.f32x4ReplaceLane, 1),
    ...level(c, 6 + c), ...simd(SIMD.f32x4ReplaceLane, 2),
    ...level(c, 9 + c), ...simd(SIMD.f32x4ReplaceLane, 3),
    ...simdMem(SIMD.store, 2),
  ];
  const single = (c: number): Code => [...get(out), ...planeOffset(c), ...level(c, c), ...mem(OP.f32Store, 2)];
  const body = [
    ...get(width), ...get(height), OP.i32Mul, ...i32(2), OP.i32Shl, ...set(planeBytes),
    ...get(planeBytes), ...i32(1), OP.i32Shl, ...set(twoPlanes),
    ...get(width), ...i32(2), OP.i32ShrS, ...set(groups),
    ...get(width), ...i32(3), OP.i32And, ...set(tail),
    ...count(y, height, [
      ...get(src), ...get(y), ...get(rowBytes), OP.i32Mul, OP.i32Add, ...set(p),
      ...count(x, groups, [...group(0), ...group(1), ...group(2), ...addTo(p, i32(12)), ...addTo(out, i32(16))]),
      ...count(x, tail, [...single(0), ...single(1), ...single(2), ...addTo(p, i32(3)), ...addTo(out, i32(4))]),
    ]),
  ];
  return { name: "planes", params: 6, locals: [[7, I32]], body };
}

function assembleKernels(): Uint8Array<ArrayBuffer> {
  const functions = [rowsKernel(), columnsKernel(), planesKernel()];
  const vector = (items: Code[]): Code => [...uleb(items.length), ...items.flat()];
  const name = (text: string): Code => vector([...text].map((ch) => [ch.charCodeAt(0)]));
  const section = (id: number, body: Code): Code => [id, ...uleb(body.length), ...body];
  const bodies = functions.map((f) => {
    const code = [...vector(f.locals.map(([n, type]) => [...uleb(n), type])), ...f.body, OP.end];
    return [...uleb(code.length), ...code];
  });
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vector(functions.map((f) => [0x60, ...vector(new Array<Code>(f.params).fill([I32])), 0]))),
    ...section(2, vector([[...name("env"), ...name("memory"), 0x02, 0x00, 0x01]])),
    ...section(3, vector(functions.map((_, index) => uleb(index)))),
    ...section(7, vector(functions.map((f, index) => [...name(f.name), 0x00, ...uleb(index)]))),
    ...section(10, vector(bodies)),
  ]);
}

/** The compiled module, or undefined where WebAssembly (or its SIMD) is unavailable (e.g. node --jitless). */
const KERNEL_MODULE: WebAssembly.Module | undefined = (() => {
  try {
    const bytes = assembleKernels();
    return typeof WebAssembly === "object" && WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : undefined;
  } catch {
    return undefined;
  }
})();

type KernelExports = {
  rows(src: number, srcRowBytes: number, rowCount: number, outWidth: number, start: number, count: number, weights: number, strideBytes: number, out: number, shift: number): void;
  columns(src: number, rowBytes: number, outHeight: number, start: number, count: number, weights: number, strideBytes: number, rowOffset: number, out: number, shift: number): void;
  planes(src: number, rowBytes: number, width: number, height: number, levels: number, out: number): void;
};

/** One instance of the kernels and its memory, owned by one ResizeCache. */
export type SimdKernels = {
  readonly memory: WebAssembly.Memory;
  readonly run: KernelExports;
  /** The size of the resampled image last written, at offset 0 of memory (pixelValues reads it in place). */
  resized: { width: number; height: number } | undefined;
};

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
