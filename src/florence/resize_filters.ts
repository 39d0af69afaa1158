/**
 * Pillow's resampling filters and the fixed-point coefficient tables of one axis, computed as Pillow
 * (ImagingResample's precompute_coeffs) and torchvision (antialiased bicubic) compute them.
 */

/** Pillow's resampling filters that ImagingResample implements (PIL.Image.Resampling minus NEAREST). */
export type ResampleFilter = "bicubic" | "bilinear" | "lanczos" | "box" | "hamming";

/** Coefficients for one axis: for output index i, input indices start[i] .. start[i]+count[i]-1. */
export type AxisCoefficients = {
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

export const FILTERS: Record<ResampleFilter, Filter> = {
  bicubic: { support: 2, weight: bicubicWeight },
  bilinear: { support: 1, weight: bilinearWeight },
  box: { support: 0.5, weight: boxWeight },
  hamming: { support: 1, weight: hammingWeight },
  lanczos: { support: 3, weight: lanczosWeight },
};

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for box (0, inSize), i.e. the whole image. */
export function pilCoefficients(inSize: number, outSize: number, filter: Filter): AxisCoefficients {
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
export function torchvisionCoefficients(inSize: number, outSize: number, filter: Filter): AxisCoefficients {
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
