/**
 * Pixels of a scene: the background, then every shape and word composited by its coverage, drawn either by our
 * own coverage rasteriser or by librsvg (through sharp) from an SVG of the same geometry; then JPEG or PNG.
 */
import { encodeRgb, rasteriseSvg, type RgbImage } from "../florence/image.ts";
import type { WorldFont } from "./font.ts";
import { type Polygon, shapeBox, shapeOutline, translatePolygon } from "./geometry.ts";
import { WorldRandom } from "./random.ts";
import { polygonCoverage } from "./raster.ts";
import { backgroundGrey, type Scene, wordBox, wordContours } from "./scene.ts";
import { COLOURS } from "./world_spec.ts";

/** Points on a circle when our own rasteriser draws it (the outline is then within 0.01 px of the disc for d ≤ 450). */
const RENDER_CIRCLE_POINTS = 256;

export async function renderScene(scene: Scene, font: WorldFont): Promise<RgbImage> {
  const image = paintBackground(scene);
  if (scene.style.rasteriser === "svg") await drawWithSvg(scene, font, image);
  else drawWithCoverage(scene, font, image);
  return image;
}

/** The scene as the file the world saves: JPEG or PNG as its style says. */
export async function drawScene(scene: Scene, font: WorldFont): Promise<Uint8Array> {
  return encodeRgb(await renderScene(scene, font), scene.style.encoding);
}

function paintBackground(scene: Scene): RgbImage {
  const { width, height, background } = scene;
  const data = new Uint8Array(width * height * 3);
  const noise = background.kind === "noisy" ? noiseSource(scene.noiseSeed, background.sigma) : undefined;
  for (let y = 0; y < height; y++) {
    const grey = backgroundGrey(background, y, height);
    const row = y * width * 3;
    if (!noise) {
      data.fill(Math.round(grey), row, row + width * 3);
      continue;
    }
    for (let i = row; i < row + width * 3; i++) data[i] = Math.min(255, Math.max(0, Math.round(grey + noise())));
  }
  return { width, height, data };
}

/**
 * Gaussian noise of deviation `sigma`: draws from a seeded table of 65,536 normal samples, indexed by xorshift32
 * (a normal deviate per pixel and channel of a 1280 × 720 image would cost more than the rest of the drawing).
 */
function noiseSource(seed: number, sigma: number): () => number {
  const rng = new WorldRandom(seed, 1);
  const table = new Float32Array(65536);
  for (let i = 0; i < table.length; i++) table[i] = sigma * rng.normal();
  let state = (seed | 1) >>> 0;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return table[(state >>> 0) & 0xffff]!;
  };
}

interface Ink {
  contours: Polygon[];
  rgb: readonly [number, number, number];
  /** Integer pixel region that holds the ink. */
  left: number;
  top: number;
  right: number;
  bottom: number;
}

function inks(scene: Scene, font: WorldFont, circlePoints: number): Ink[] {
  const out: Ink[] = [];
  const region = (b: readonly number[]) => ({
    left: Math.max(0, Math.floor(b[0]!) - 1), top: Math.max(0, Math.floor(b[1]!) - 1),
    right: Math.min(scene.width, Math.ceil(b[2]!) + 1), bottom: Math.min(scene.height, Math.ceil(b[3]!) + 1),
  });
  for (const s of scene.shapes) {
    out.push({ contours: [shapeOutline(s.shape, s.x, s.y, s.d, circlePoints)], rgb: COLOURS[s.colour], ...region(shapeBox(s.shape, s.x, s.y, s.d)) });
  }
  for (const w of scene.words) {
    const v = w.ink === "black" ? 0 : 255;
    out.push({ contours: wordContours(font, w), rgb: [v, v, v], ...region(wordBox(font, w)) });
  }
  return out;
}

function drawWithCoverage(scene: Scene, font: WorldFont, image: RgbImage): void {
  for (const ink of inks(scene, font, RENDER_CIRCLE_POINTS)) {
    const w = ink.right - ink.left;
    const h = ink.bottom - ink.top;
    if (w <= 0 || h <= 0) continue;
    const local = ink.contours.map((c) => translatePolygon(c, -ink.left, -ink.top));
    const cov = polygonCoverage(local, w, h, scene.style.samples);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const a = Math.min(1, cov[y * w + x]!);
        if (a <= 0) continue;
        const p = ((ink.top + y) * image.width + ink.left + x) * 3;
        for (let ch = 0; ch < 3; ch++) image.data[p + ch] = Math.round(image.data[p + ch]! * (1 - a) + ink.rgb[ch]! * a);
      }
    }
  }
}

/** The scene's shapes and words as an SVG document on a transparent background. */
export function sceneSvg(scene: Scene, font: WorldFont): string {
  const n = (v: number) => Number(v.toFixed(3));
  const parts: string[] = [];
  for (const s of scene.shapes) {
    const fill = `rgb(${COLOURS[s.colour].join(",")})`;
    if (s.shape === "circle") {
      parts.push(`<circle cx="${n(s.x + s.d / 2)}" cy="${n(s.y + s.d / 2)}" r="${n(s.d / 2)}" fill="${fill}"/>`);
    } else {
      const pts = shapeOutline(s.shape, s.x, s.y, s.d);
      const d = pts.reduce((acc, v, i) => acc + (i % 2 === 0 ? `${i === 0 ? "M" : "L"}${n(v)}` : ` ${n(v)}`), "") + "Z";
      parts.push(`<path d="${d}" fill="${fill}"/>`);
    }
  }
  for (const w of scene.words) {
    const fill = w.ink === "black" ? "#000" : "#fff";
    parts.push(`<path transform="translate(${n(w.originX)} ${n(w.originY)})" d="${font.outline(w.text, w.fontSize).pathData}" fill="${fill}" fill-rule="nonzero"/>`);
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${scene.width}" height="${scene.height}" viewBox="0 0 ${scene.width} ${scene.height}">${parts.join("")}</svg>`;
}

async function drawWithSvg(scene: Scene, font: WorldFont, image: RgbImage): Promise<void> {
  const rgba = await rasteriseSvg(sceneSvg(scene, font), scene.width, scene.height);
  const px = scene.width * scene.height;
  for (let i = 0; i < px; i++) {
    const alpha = rgba[i * 4 + 3]!;
    if (alpha === 0) continue;
    const a = alpha / 255;
    for (let ch = 0; ch < 3; ch++) image.data[i * 3 + ch] = Math.round(image.data[i * 3 + ch]! * (1 - a) + rgba[i * 4 + ch]! * a);
  }
}
