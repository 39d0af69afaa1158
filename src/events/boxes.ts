/**
 * Boxes as the detection results give them, [x1, y1, x2, y2] in pixels, and the few measures the events need: area,
 * overlap, centres and where a box stands. Pure.
 */

/** [x1, y1, x2, y2] in pixels, (0, 0) the frame's top-left corner. */
export type Box = readonly [number, number, number, number];

export interface FrameSize {
  readonly width: number;
  readonly height: number;
}

export function boxArea(b: Box): number {
  return Math.max(0, b[2] - b[0]) * Math.max(0, b[3] - b[1]);
}

/** Intersection over union; 0 when either box is empty. */
export function boxIoU(a: Box, b: Box): number {
  const w = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
  const h = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  const union = boxArea(a) + boxArea(b) - inter;
  return union > 0 ? inter / union : 0;
}

export function boxCenter(b: Box): [number, number] {
  return [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2];
}

/** Where an object stands: the middle of its box's bottom edge (what a zone tests, as Frigate does). */
export function boxFoot(b: Box): [number, number] {
  return [(b[0] + b[2]) / 2, b[3]];
}

export function boxDiagonal(b: Box): number {
  return Math.hypot(b[2] - b[0], b[3] - b[1]);
}

export function shiftBox(b: Box, dx: number, dy: number): Box {
  return [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy];
}

/** Whether the box reaches within `margin` pixels of the frame's edge (the object may be cut off). */
export function touchesEdge(b: Box, frame: FrameSize, margin = 2): boolean {
  return b[0] <= margin || b[1] <= margin || b[2] >= frame.width - margin || b[3] >= frame.height - margin;
}

/** Whether no part of the box lies inside the frame. */
export function outsideFrame(b: Box, frame: FrameSize): boolean {
  return b[2] <= 0 || b[3] <= 0 || b[0] >= frame.width || b[1] >= frame.height;
}

/** Coordinates rounded to 0.1 px, for payloads. */
export function roundBox(b: Box): [number, number, number, number] {
  return [round1(b[0]), round1(b[1]), round1(b[2]), round1(b[3])];
}

function round1(v: number): number {
  return Math.round(v * 10) / 10;
}
