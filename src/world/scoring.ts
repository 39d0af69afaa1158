/**
 * How well answers match the world's ground truth: the pure measures behind `florence-edge eval` and the
 * content checks of the service's tests. Inputs are HF-shaped results (post_process_generation) and Truth.
 */
import { type Box, boxIoU, polygonBox } from "./geometry.ts";
import { maskIoU, polygonMask } from "./raster.ts";
import type { ShapeTruth, Truth } from "./scene.ts";
import { COLOUR_NAMES, SHAPE_NAMES } from "./world_spec.ts";

export interface Detection {
  box: Box;
  label: string;
}

export interface MatchCounts {
  truePositives: number;
  predicted: number;
  expected: number;
}

/** One-to-one matching, best IoU first: a prediction counts when its IoU ≥ `minIoU` and its label is right. */
export function matchDetections(predicted: readonly Detection[], expected: readonly Detection[], minIoU = 0.5): MatchCounts {
  const pairs: [number, number, number][] = [];
  predicted.forEach((p, i) => expected.forEach((e, j) => {
    const iou = boxIoU(p.box, e.box);
    if (iou >= minIoU && p.label === e.label) pairs.push([iou, i, j]);
  }));
  pairs.sort((a, b) => b[0] - a[0]);
  const usedP = new Set<number>();
  const usedE = new Set<number>();
  for (const [, i, j] of pairs) {
    if (usedP.has(i) || usedE.has(j)) continue;
    usedP.add(i);
    usedE.add(j);
  }
  return { truePositives: usedP.size, predicted: predicted.length, expected: expected.length };
}

export function addCounts(a: MatchCounts, b: MatchCounts): MatchCounts {
  return { truePositives: a.truePositives + b.truePositives, predicted: a.predicted + b.predicted, expected: a.expected + b.expected };
}

export const NO_COUNTS: MatchCounts = { truePositives: 0, predicted: 0, expected: 0 };

export function precision(c: MatchCounts): number {
  return c.predicted === 0 ? (c.expected === 0 ? 1 : 0) : c.truePositives / c.predicted;
}

export function recall(c: MatchCounts): number {
  return c.expected === 0 ? 1 : c.truePositives / c.expected;
}

/** Boxes and labels of an HF `{bboxes, labels}` (or `bboxes_labels`) answer. */
export function detectionsOf(answer: unknown): Detection[] {
  const a = (answer ?? {}) as { bboxes?: number[][]; labels?: string[]; bboxes_labels?: string[] };
  const labels = a.labels ?? a.bboxes_labels ?? [];
  return (a.bboxes ?? []).map((b, i) => ({ box: [b[0]!, b[1]!, b[2]!, b[3]!], label: (labels[i] ?? "").trim() }));
}

/** Word quads of an HF OCR-with-region answer as boxes. */
export function wordDetectionsOf(answer: unknown): Detection[] {
  const a = (answer ?? {}) as { quad_boxes?: number[][]; labels?: string[] };
  return (a.quad_boxes ?? []).map((q, i) => ({ box: polygonBox(q), label: (a.labels?.[i] ?? "").replace(/<\/?s>/g, "").trim() }));
}

export function shapeDetections(truth: Truth, label: (s: ShapeTruth) => string): Detection[] {
  return truth.shapes.map((s) => ({ box: s.box, label: label(s) }));
}

const PAIR = new RegExp(`\\b(${COLOUR_NAMES.join("|")})\\s+(?:(?:small|medium|large)\\s+)?(${SHAPE_NAMES.join("|")})\\b`, "g");

/** The colour–shape pairs a caption names, sorted (a multiset). */
export function captionPairs(caption: string): string[] {
  return [...caption.toLowerCase().matchAll(PAIR)].map((m) => `${m[1]} ${m[2]}`).sort();
}

/** Whether a caption names exactly the scene's colour–shape pairs (as many of each as there are). */
export function captionNamesExactly(caption: string, truth: Truth): boolean {
  const want = truth.shapes.map((s) => s.label).sort();
  const got = captionPairs(caption);
  return want.length === got.length && want.every((p, i) => p === got[i]);
}

/** IoU of the union of predicted polygons with the expected polygon, as masks on the image's pixel grid. */
export function polygonIoU(predicted: readonly number[][], expected: readonly number[], width: number, height: number): number {
  const want = polygonMask(expected, width, height);
  const got = new Uint8Array(width * height);
  for (const p of predicted) {
    if (p.length < 6) continue;
    const m = polygonMask(p, width, height);
    for (let i = 0; i < m.length; i++) got[i] = got[i]! | m[i]!;
  }
  return maskIoU(got, want);
}

/** Flat polygons of an HF `{polygons: [[[x, y, …], …], …]}` answer. */
export function polygonsOf(answer: unknown): number[][] {
  const a = (answer ?? {}) as { polygons?: number[][][] };
  return (a.polygons ?? []).flat();
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return 0;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
