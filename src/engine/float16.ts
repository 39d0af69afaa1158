/** IEEE 754 half-precision conversion for graphs exported with float16 inputs and outputs (the _fp16 files). */
const floatView = new Float32Array(1);
const int32View = new Int32Array(floatView.buffer);

/** Rounds to nearest even, as numpy's astype(float16) does. */
export function toHalf(value: number): number {
  floatView[0] = value;
  const x = int32View[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  let e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mantissa & ((1 << shift) - 1);
    let m = mantissa >> shift;
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m;
  }
  const rest = mantissa & 0x1fff;
  let result = sign | (e << 10) | (mantissa >> 13);
  if (rest > 0x1000 || (rest === 0x1000 && (result & 1))) result++;
  return result;
}

export function fromHalf(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

export function float32ToFloat16(values: Float32Array, out = new Uint16Array(values.length)): Uint16Array {
  for (let i = 0; i < values.length; i++) out[i] = toHalf(values[i]!);
  return out;
}

export function float16ToFloat32(values: Uint16Array, out = new Float32Array(values.length)): Float32Array {
  for (let i = 0; i < values.length; i++) out[i] = fromHalf(values[i]!);
  return out;
}
