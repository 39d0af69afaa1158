/**
 * Scenes of the shapes world: what is in an image, where, and how it is drawn — everything the ground truth, the
 * training targets and the renderers need. `sampleStill` draws one by the spec's rules from a seed.
 */
import { type Box, boxGap, boxQuad, type Polygon, shapeBox, shapeOutline, translatePolygon } from "./geometry.ts";
import type { WorldFont } from "./font.ts";
import { WorldRandom } from "./random.ts";
import {
  COLOUR_NAMES, type ColourName, FONT_SIZE, GREY_RANGE, IMAGE_SIZES, JPEG_QUALITY, MIN_GAP, MIN_MARGIN, NOISE_SIGMA,
  SHAPE_NAMES, SHAPE_SIZE, SHAPES_PER_IMAGE, type ShapeName, WORD_INK_THRESHOLD, WORDS, WORDS_PER_IMAGE,
} from "./world_spec.ts";

export type Background =
  | { kind: "flat"; grey: number }
  | { kind: "gradient"; top: number; bottom: number }
  | { kind: "noisy"; grey: number; sigma: number };

export interface ShapeObject {
  /** Stable within a clip; the index in a still. */
  id: number;
  shape: ShapeName;
  colour: ColourName;
  /** Top-left corner and size as the spec's table defines them. */
  x: number;
  y: number;
  d: number;
}

export interface WordObject {
  text: string;
  fontSize: number;
  /** Baseline origin of the first glyph. */
  originX: number;
  originY: number;
  ink: "black" | "white";
}

/** How the pixels are made: which rasteriser and settings, and how the file is encoded. */
export interface DrawStyle {
  rasteriser: "coverage" | "svg";
  /** Coverage rasteriser: sub-scanlines per pixel row (1 = aliased vertically). */
  samples: number;
  encoding: { format: "jpeg"; quality: number; chroma: "4:2:0" | "4:4:4" } | { format: "png" };
}

export interface Scene {
  width: number;
  height: number;
  background: Background;
  shapes: ShapeObject[];
  words: WordObject[];
  style: DrawStyle;
  /** Seed of the background noise. */
  noiseSeed: number;
}

export interface ShapeTruth {
  id: number;
  shape: ShapeName;
  colour: ColourName;
  label: string;
  box: Box;
  polygon: Polygon;
  /** Size d over min(W, H). */
  relativeSize: number;
}

export interface WordTruth {
  text: string;
  box: Box;
  quad: number[];
}

export interface Truth {
  width: number;
  height: number;
  background: Background["kind"];
  shapes: ShapeTruth[];
  /** In reading order: top to bottom, then left to right. */
  words: WordTruth[];
}

export function shapeTruth(s: ShapeObject, minSide: number): ShapeTruth {
  return {
    id: s.id, shape: s.shape, colour: s.colour, label: `${s.colour} ${s.shape}`,
    box: shapeBox(s.shape, s.x, s.y, s.d), polygon: shapeOutline(s.shape, s.x, s.y, s.d), relativeSize: s.d / minSide,
  };
}

export function wordBox(font: WorldFont, w: WordObject): Box {
  const ink = font.outline(w.text, w.fontSize).ink;
  return [w.originX + ink[0], w.originY + ink[1], w.originX + ink[2], w.originY + ink[3]];
}

export function wordContours(font: WorldFont, w: WordObject): Polygon[] {
  return font.outline(w.text, w.fontSize).contours.map((c) => translatePolygon(c, w.originX, w.originY));
}

/** Ground truth of a scene; shapes and words cut by the image's edges (in clips) are clipped to it. */
export function sceneTruth(scene: Scene, font: WorldFont): Truth {
  const minSide = Math.min(scene.width, scene.height);
  const words = scene.words.map((w) => {
    const box = wordBox(font, w);
    return { text: w.text, box, quad: boxQuad(box) };
  });
  words.sort((a, b) => a.box[1] - b.box[1] || a.box[0] - b.box[0]);
  return { width: scene.width, height: scene.height, background: scene.background.kind, shapes: scene.shapes.map((s) => shapeTruth(s, minSide)), words };
}

/** The background's grey (without noise) at row y. */
export function backgroundGrey(bg: Background, y: number, height: number): number {
  if (bg.kind !== "gradient") return bg.grey;
  return bg.top + ((bg.bottom - bg.top) * y) / Math.max(1, height - 1);
}

export function sampleBackground(rng: WorldRandom): Background {
  const grey = () => rng.int(GREY_RANGE[0], GREY_RANGE[1]);
  switch (rng.int(0, 2)) {
    case 0:
      return { kind: "flat", grey: grey() };
    case 1:
      return { kind: "gradient", top: grey(), bottom: grey() };
    default:
      return { kind: "noisy", grey: grey(), sigma: NOISE_SIGMA };
  }
}

export function sampleStyle(rng: WorldRandom): DrawStyle {
  const rasteriser = rng.chance(0.5) ? "svg" : "coverage";
  const samples = rng.pick([2, 3, 4, 5, 8, 16]);
  const encoding: DrawStyle["encoding"] = rng.chance(0.75)
    ? { format: "jpeg", quality: rng.int(JPEG_QUALITY[0], JPEG_QUALITY[1]), chroma: rng.chance(0.7) ? "4:2:0" : "4:4:4" }
    : { format: "png" };
  return { rasteriser, samples, encoding };
}

export interface StillOptions {
  size?: readonly [number, number];
  shapes?: number;
  words?: number;
}

/** One still image's scene, drawn by the spec's rules from (seed, index). */
export function sampleStill(font: WorldFont, seed: number, index: number, options: StillOptions = {}): Scene {
  const rng = new WorldRandom(seed, index);
  const [width, height] = options.size ?? rng.pick(IMAGE_SIZES);
  const background = sampleBackground(rng);
  const style = sampleStyle(rng);
  const minSide = Math.min(width, height);
  const wantShapes = options.shapes ?? rng.int(SHAPES_PER_IMAGE[0], SHAPES_PER_IMAGE[1]);
  const wantWords = options.words ?? rng.int(WORDS_PER_IMAGE[0], WORDS_PER_IMAGE[1]);
  const taken: Box[] = [];
  const fits = (box: Box) =>
    box[0] >= MIN_MARGIN && box[1] >= MIN_MARGIN && box[2] <= width - MIN_MARGIN && box[3] <= height - MIN_MARGIN &&
    taken.every((other) => boxGap(box, other) >= MIN_GAP);

  const shapes: ShapeObject[] = [];
  for (let tries = 0; shapes.length < wantShapes && tries < 400; tries++) {
    const shape = rng.pick(SHAPE_NAMES);
    const d = rng.uniform(SHAPE_SIZE[0], SHAPE_SIZE[1]) * minSide;
    const x = rng.uniform(MIN_MARGIN, width - MIN_MARGIN - d);
    const y = rng.uniform(MIN_MARGIN, height - MIN_MARGIN - d);
    const box = shapeBox(shape, x, y, d);
    if (!fits(box)) continue;
    taken.push(box);
    shapes.push({ id: shapes.length, shape, colour: rng.pick(COLOUR_NAMES), x, y, d });
  }
  const words: WordObject[] = [];
  for (let tries = 0; words.length < wantWords && tries < 400; tries++) {
    const text = rng.pick(WORDS);
    const fontSize = rng.uniform(FONT_SIZE[0], FONT_SIZE[1]) * height;
    const ink = font.outline(text, fontSize).ink;
    const inkW = ink[2] - ink[0];
    const inkH = ink[3] - ink[1];
    if (inkW > width - 2 * MIN_MARGIN) continue;
    const left = rng.uniform(MIN_MARGIN, width - MIN_MARGIN - inkW);
    const top = rng.uniform(MIN_MARGIN, height - MIN_MARGIN - inkH);
    const box: Box = [left, top, left + inkW, top + inkH];
    if (!fits(box)) continue;
    taken.push(box);
    const grey = meanGrey(background, top, top + inkH, height);
    words.push({ text, fontSize, originX: left - ink[0], originY: top - ink[1], ink: grey > WORD_INK_THRESHOLD ? "black" : "white" });
  }
  return { width, height, background, shapes, words, style, noiseSeed: rng.int(0, 2 ** 31 - 1) };
}

/** The mean noiseless background grey over rows [y1, y2]. */
export function meanGrey(bg: Background, y1: number, y2: number, height: number): number {
  return (backgroundGrey(bg, y1, height) + backgroundGrey(bg, y2, height)) / 2;
}
