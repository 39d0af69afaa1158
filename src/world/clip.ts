/**
 * Moving scenes: shapes travel in straight lines, bounce off the image's edges or enter and leave through them;
 * words stay put. Each shape keeps its id for as long as it is in view; one that has left comes back later as a
 * new object with a new id. Shapes move in lanes of their own, so two boxes never come closer than the spec's gap.
 * A lane's shape may be told to stop for a while (`stops`): a parked object, for the events' stationary test.
 */
import type { WorldFont } from "./font.ts";
import { boxArea, shapeBox } from "./geometry.ts";
import { WorldRandom } from "./random.ts";
import { sampleBackground, sampleStill, type Scene, sceneTruth, type ShapeObject, type Truth, wordBox } from "./scene.ts";
import { COLOUR_NAMES, MIN_GAP, MIN_MARGIN, SHAPE_NAMES } from "./world_spec.ts";

export interface ClipOptions {
  seed: number;
  frames: number;
  width?: number;
  height?: number;
  /** Lanes, one moving shape each (default 3). */
  lanes?: number;
  /** Words at the top of the frame (default 1). */
  words?: number;
  /** JPEG quality of every frame (default 90). */
  quality?: number;
  /** true: every shape bounces off the side edges; false: every shape passes through them (default: each its own). */
  bounce?: boolean;
  /** Pauses: the shape in `lane` stands still from frame `from` for `frames` frames (parked, then moving on). */
  stops?: readonly ClipStop[];
}

export interface ClipStop {
  lane: number;
  from: number;
  frames: number;
}

export interface ClipShapeTruth {
  id: number;
  /** Share of the shape's box inside the image (1 when wholly in view). */
  visible: number;
}

export interface ClipFrame {
  index: number;
  scene: Scene;
  truth: Truth;
  /** Per shape of `truth.shapes` (same order): how much of it is in view. */
  visibility: ClipShapeTruth[];
}

interface Mover {
  shape: ShapeObject;
  vx: number;
  vy: number;
  /** Bounces off the side edges, or passes through them. */
  bounce: boolean;
  laneTop: number;
  laneBottom: number;
  /** Frames until a shape that left comes back. */
  away: number;
}

/** The frames of one clip; the same options always give the same frames. */
export function sampleClip(font: WorldFont, options: ClipOptions): ClipFrame[] {
  const width = options.width ?? 640;
  const height = options.height ?? 480;
  const lanes = options.lanes ?? 3;
  const rng = new WorldRandom(options.seed, 7);
  // words from a still of the same size, those that lie in its top third; the shapes' lanes are below them
  const base = sampleStill(font, options.seed, 0, { size: [width, height], shapes: 0, words: options.words ?? 1 });
  const words = base.words.filter((w) => wordBox(font, w)[3] < height / 3);
  const wordBand = Math.max(MIN_MARGIN, ...words.map((w) => wordBox(font, w)[3] + MIN_GAP));
  const laneHeight = (height - MIN_MARGIN - wordBand) / lanes;
  let nextId = 0;
  const spawn = (lane: number, enteringFrom: "left" | "right" | "inside"): Mover => {
    const laneTop = wordBand + lane * laneHeight;
    const laneBottom = laneTop + laneHeight - MIN_GAP;
    const d = Math.min(laneBottom - laneTop - 2, rng.uniform(0.09, 0.2) * Math.min(width, height));
    const speed = rng.uniform(0.006, 0.02) * width;
    const x = enteringFrom === "left" ? -d : enteringFrom === "right" ? width : rng.uniform(MIN_MARGIN, width - MIN_MARGIN - d);
    const vx = enteringFrom === "left" ? speed : enteringFrom === "right" ? -speed : rng.chance(0.5) ? speed : -speed;
    return {
      shape: { id: nextId++, shape: rng.pick(SHAPE_NAMES), colour: rng.pick(COLOUR_NAMES), x, y: rng.uniform(laneTop, laneBottom - d), d },
      vx, vy: rng.uniform(-0.3, 0.3) * speed, bounce: options.bounce ?? rng.chance(0.5), laneTop, laneBottom, away: 0,
    };
  };
  const movers = Array.from({ length: lanes }, (_, lane) => spawn(lane, "inside"));
  const background = sampleBackground(rng);
  const frames: ClipFrame[] = [];
  for (let index = 0; index < options.frames; index++) {
    const shapes = movers.filter((m) => m.away === 0).map((m) => ({ ...m.shape }));
    const scene: Scene = {
      width, height, background, shapes, words,
      style: { rasteriser: "coverage", samples: 4, encoding: { format: "jpeg", quality: options.quality ?? 90, chroma: "4:2:0" } },
      noiseSeed: options.seed + index,
    };
    const truth = sceneTruth(scene, font);
    const visibility = shapes.map((s) => {
      const full = shapeBox(s.shape, s.x, s.y, s.d);
      return { id: s.id, visible: boxArea(clipBox(full, width, height)) / boxArea(full) };
    });
    // a shape whose box has not yet entered (or has just left) is not in the frame
    truth.shapes = truth.shapes.map((s) => ({ ...s, box: clipBox(s.box, width, height) })).filter((_, k) => visibility[k]!.visible > 0);
    visibility.splice(0, visibility.length, ...visibility.filter((v) => v.visible > 0));
    frames.push({ index, scene, truth, visibility });
    movers.forEach((m, lane) => {
      if (m.away > 0) {
        if (--m.away === 0) movers[lane] = spawn(lane, rng.chance(0.5) ? "left" : "right");
        return;
      }
      // a stop draws no random numbers, so clips without stops stay as they were
      if (!(options.stops ?? []).some((s) => s.lane === lane && index >= s.from && index < s.from + s.frames)) step(m, width);
      if (m.shape.x > width || m.shape.x + m.shape.d < 0) m.away = rng.int(3, 12);
    });
  }
  return frames;
}

function step(m: Mover, width: number): void {
  const s = m.shape;
  s.x += m.vx;
  s.y += m.vy;
  if (s.y < m.laneTop || s.y + s.d > m.laneBottom) {
    m.vy = -m.vy;
    s.y = Math.min(Math.max(s.y, m.laneTop), m.laneBottom - s.d);
  }
  if (!m.bounce) return;
  if ((s.x < MIN_MARGIN && m.vx < 0) || (s.x + s.d > width - MIN_MARGIN && m.vx > 0)) m.vx = -m.vx;
}

function clipBox(b: readonly number[], width: number, height: number): [number, number, number, number] {
  return [Math.max(0, b[0]!), Math.max(0, b[1]!), Math.min(width, b[2]!), Math.min(height, b[3]!)];
}
