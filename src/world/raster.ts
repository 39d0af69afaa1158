/**
 * A coverage rasteriser of our own (the world's second, beside librsvg): polygons filled with the non-zero rule,
 * anti-aliased with `samples` sub-scanlines per pixel row and exact horizontal coverage along each sub-scanline.
 * Also used by the evaluation to turn polygons into masks.
 */

/** Coverage in [0, 1] of every pixel of a width × height grid by the union of `contours` (non-zero winding). */
export function polygonCoverage(contours: readonly (readonly number[])[], width: number, height: number, samples: number): Float32Array {
  const cov = new Float32Array(width * height);
  let yMin = Infinity;
  let yMax = -Infinity;
  for (const c of contours) {
    for (let i = 1; i < c.length; i += 2) {
      yMin = Math.min(yMin, c[i]!);
      yMax = Math.max(yMax, c[i]!);
    }
  }
  if (!(yMax > yMin)) return cov;
  const rowFrom = Math.max(0, Math.floor(yMin));
  const rowTo = Math.min(height - 1, Math.ceil(yMax));
  const crossings: number[] = [];
  const weight = 1 / samples;
  for (let row = rowFrom; row <= rowTo; row++) {
    for (let s = 0; s < samples; s++) {
      const sy = row + (s + 0.5) / samples;
      crossings.length = 0;
      for (const c of contours) {
        const n = c.length / 2;
        for (let i = 0; i < n; i++) {
          const j = (i + 1) % n;
          const y0 = c[2 * i + 1]!;
          const y1 = c[2 * j + 1]!;
          if ((y0 <= sy && y1 > sy) || (y1 <= sy && y0 > sy)) {
            const x0 = c[2 * i]!;
            const x1 = c[2 * j]!;
            crossings.push(x0 + ((sy - y0) * (x1 - x0)) / (y1 - y0), y1 > y0 ? 1 : -1);
          }
        }
      }
      if (crossings.length === 0) continue;
      spans(crossings, (xa, xb) => addSpan(cov, row * width, width, xa, xb, weight));
    }
  }
  return cov;
}

/** Calls `fill(xa, xb)` for every span where the winding number is non-zero. `pairs` is [x, dir, x, dir, …]. */
function spans(pairs: number[], fill: (xa: number, xb: number) => void): void {
  const order: number[] = [];
  for (let i = 0; i < pairs.length; i += 2) order.push(i);
  order.sort((a, b) => pairs[a]! - pairs[b]!);
  let winding = 0;
  let start = 0;
  for (const i of order) {
    const before = winding;
    winding += pairs[i + 1]!;
    if (before === 0 && winding !== 0) start = pairs[i]!;
    else if (before !== 0 && winding === 0) fill(start, pairs[i]!);
  }
}

function addSpan(cov: Float32Array, rowStart: number, width: number, xa: number, xb: number, weight: number): void {
  xa = Math.max(0, xa);
  xb = Math.min(width, xb);
  if (xb <= xa) return;
  const pa = Math.floor(xa);
  const pb = Math.floor(xb);
  if (pa === pb) {
    cov[rowStart + pa]! += (xb - xa) * weight;
    return;
  }
  cov[rowStart + pa]! += (pa + 1 - xa) * weight;
  for (let p = pa + 1; p < pb; p++) cov[rowStart + p]! += weight;
  if (pb < width) cov[rowStart + pb]! += (xb - pb) * weight;
}

/** The pixels a polygon covers by at least half, as a 0/1 mask. */
export function polygonMask(polygon: readonly number[], width: number, height: number): Uint8Array {
  const cov = polygonCoverage([polygon], width, height, 4);
  const mask = new Uint8Array(width * height);
  for (let i = 0; i < cov.length; i++) mask[i] = cov[i]! >= 0.5 ? 1 : 0;
  return mask;
}

export function maskIoU(a: Uint8Array, b: Uint8Array): number {
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    inter += a[i]! & b[i]!;
    union += a[i]! | b[i]!;
  }
  return union > 0 ? inter / union : 0;
}
