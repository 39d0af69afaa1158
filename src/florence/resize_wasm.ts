/**
 * The WebAssembly SIMD kernels of resize.ts and preprocess: resampleRows, resampleColumns and the uint8 → float planes
 * lookup, with the same integer arithmetic as the JavaScript loops (i32 sums of uint8 × fixed-point weight, arithmetic
 * shift, saturation to 0..255 by the narrowing instructions). The module is assembled here from opcodes, so there is
 * no build step and no binary blob.
 */

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
export const KERNEL_MODULE: WebAssembly.Module | undefined = (() => {
  try {
    const bytes = assembleKernels();
    return typeof WebAssembly === "object" && WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : undefined;
  } catch {
    return undefined;
  }
})();

export type KernelExports = {
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
