/**
 * The world's geometry: shape outlines and boxes as the spec defines them, box spacing, and the measures the
 * evaluation uses (box IoU, polygon area). Coordinates are continuous pixels, (0, 0) the image's top-left corner.
 */
import { CIRCLE_POLYGON_POINTS, type ShapeName, STAR_INNER } from "./world_spec.ts";

/** [x1, y1, x2, y2]. */
export type Box = [number, number, number, number];
/** Flat [x0, y0, x1, y1, …], clockwise on screen (y down). */
export type Polygon = number[];

/** The outline of a shape of size d whose top-left corner is (x, y). A circle gets `circlePoints` points. */
export function shapeOutline(shape: ShapeName, x: number, y: number, d: number, circlePoints = CIRCLE_POLYGON_POINTS): Polygon {
  const cx = x + d / 2;
  const cy = y + d / 2;
  switch (shape) {
    case "square":
      return [x, y, x + d, y, x + d, y + d, x, y + d];
    case "triangle":
      return [x + d / 2, y, x + d, y + d, x, y + d];
    case "circle":
      return regularPoints(cx, cy, d / 2, d / 2, circlePoints);
    case "star":
      return regularPoints(cx, cy, d / 2, STAR_INNER * d, 10);
  }
}

/** `count` points from straight up, clockwise, alternating radii `outer` and `inner`. */
function regularPoints(cx: number, cy: number, outer: number, inner: number, count: number): Polygon {
  const out: Polygon = [];
  for (let k = 0; k < count; k++) {
    const angle = -Math.PI / 2 + (2 * Math.PI * k) / count;
    const r = k % 2 === 0 ? outer : inner;
    out.push(cx + r * Math.cos(angle), cy + r * Math.sin(angle));
  }
  return out;
}

/** A shape's box: (x, y, x + d, y + d), except a star's, the extent of its ten vertices. */
export function shapeBox(shape: ShapeName, x: number, y: number, d: number): Box {
  return shape === "star" ? polygonBox(shapeOutline("star", x, y, d)) : [x, y, x + d, y + d];
}

export function polygonBox(points: readonly number[]): Box {
  let x1 = Infinity, y1 = Infinity, x2 = -Infinity, y2 = -Infinity;
  for (let i = 0; i < points.length; i += 2) {
    x1 = Math.min(x1, points[i]!);
    x2 = Math.max(x2, points[i]!);
    y1 = Math.min(y1, points[i + 1]!);
    y2 = Math.max(y2, points[i + 1]!);
  }
  return [x1, y1, x2, y2];
}

/** The distance between two boxes along the axis that separates them most (0 when they overlap). */
export function boxGap(a: Box, b: Box): number {
  const dx = Math.max(b[0] - a[2], a[0] - b[2]);
  const dy = Math.max(b[1] - a[3], a[1] - b[3]);
  return Math.max(0, dx, dy);
}

export function boxArea(b: Box): number {
  return Math.max(0, b[2] - b[0]) * Math.max(0, b[3] - b[1]);
}

export function boxIoU(a: Box, b: Box): number {
  const inter = boxArea([Math.max(a[0], b[0]), Math.max(a[1], b[1]), Math.min(a[2], b[2]), Math.min(a[3], b[3])]);
  const union = boxArea(a) + boxArea(b) - inter;
  return union > 0 ? inter / union : 0;
}

export function boxCentre(b: Box): [number, number] {
  return [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2];
}

/** The four corners of a box, clockwise from the top left: [x1, y1, x2, y1, x2, y2, x1, y2]. */
export function boxQuad(b: Box): number[] {
  return [b[0], b[1], b[2], b[1], b[2], b[3], b[0], b[3]];
}

/** Signed shoelace area (positive for clockwise on screen). */
export function polygonArea(points: readonly number[]): number {
  let sum = 0;
  const n = points.length / 2;
  for (let i = 0; i < n; i++) {
    const j = (i + 1) % n;
    sum += points[2 * i]! * points[2 * j + 1]! - points[2 * j]! * points[2 * i + 1]!;
  }
  return sum / 2;
}

export function translatePolygon(points: readonly number[], dx: number, dy: number): Polygon {
  return points.map((v, i) => (i % 2 === 0 ? v + dx : v + dy));
}
