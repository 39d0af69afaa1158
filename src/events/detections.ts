/**
 * A detection task's result → the detections the tracker takes, after the camera's label filters. Pure.
 *   - `<OD>`: HF's `{ bboxes, labels, scores? }`;
 *   - `<OPEN_VOCABULARY_DETECTION>`: `{ bboxes, bboxes_labels, bboxes_scores? }` (its polygons are not objects).
 * Scores are the decoder's (exp of the mean token log-probability, `postprocess.scores`); a detection without one
 * passes any `min_score`. Areas are pixels, or fractions of the frame when ≤ 1 (as Frigate reads `min_area`).
 */
import { type Box, boxArea, type FrameSize } from "./boxes.ts";
import type { Detection } from "./tracker.ts";

/** The tasks whose results the tracker takes. */
export const DETECTION_TASKS = ["<OD>", "<OPEN_VOCABULARY_DETECTION>"] as const;
export type DetectionTask = (typeof DETECTION_TASKS)[number];

export interface LabelFilter {
  /** Least score (0..1); default 0. */
  minScore?: number;
  /** Least and most box area: pixels, or a fraction of the frame when ≤ 1. */
  minArea?: number;
  maxArea?: number;
}

export interface DetectionFilter {
  /** Only these labels are tracked; empty: every label. */
  labels: readonly string[];
  /** Per label. */
  filters: Readonly<Record<string, LabelFilter>>;
}

function list(value: unknown): readonly unknown[] {
  return Array.isArray(value) ? value : [];
}

function isBox(value: unknown): value is Box {
  return Array.isArray(value) && value.length === 4 && value.every((v) => typeof v === "number" && Number.isFinite(v)) && value[2] > value[0] && value[3] > value[1];
}

/** The boxes, labels and scores of an `<OD>` or `<OPEN_VOCABULARY_DETECTION>` result (`{ "<OD>": … }`). */
export function detectionsOf(result: Record<string, unknown>, task: DetectionTask): Detection[] {
  const answer = result[task];
  if (answer === null || typeof answer !== "object" || Array.isArray(answer)) return [];
  const a = answer as Record<string, unknown>;
  const labels = list(task === "<OD>" ? a["labels"] : a["bboxes_labels"]);
  const scores = list(task === "<OD>" ? a["scores"] : a["bboxes_scores"]);
  const out: Detection[] = [];
  list(a["bboxes"]).forEach((box, i) => {
    const label = labels[i];
    if (!isBox(box) || typeof label !== "string" || label.trim() === "") return;
    const score = scores[i];
    out.push({ box: [box[0], box[1], box[2], box[3]], label: label.trim(), score: typeof score === "number" ? score : null });
  });
  return out;
}

/** An area bound in pixels for this frame (fractions ≤ 1 scale by the frame's area). */
export function areaInPixels(area: number, frame: FrameSize): number {
  return area <= 1 ? area * frame.width * frame.height : area;
}

/** The detections the camera tracks: its labels, and each label's score and area bounds. */
export function filterDetections(detections: readonly Detection[], filter: DetectionFilter, frame: FrameSize): Detection[] {
  return detections.filter((d) => {
    if (filter.labels.length > 0 && !filter.labels.includes(d.label)) return false;
    const f = filter.filters[d.label];
    if (f === undefined) return true;
    if (f.minScore !== undefined && d.score !== null && d.score < f.minScore) return false;
    const area = boxArea(d.box);
    if (f.minArea !== undefined && area < areaInPixels(f.minArea, frame)) return false;
    return f.maxArea === undefined || area <= areaInPixels(f.maxArea, frame);
  });
}
