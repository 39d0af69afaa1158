/**
 * A task's result → what a snapshot draws (renderSnapshot in src/florence/image.ts). Pure: no I/O, no sharp.
 *
 * Accepts every shape `post_process_generation` gives (src/florence/postprocess.ts), keyed by the task token:
 *   - text (`<CAPTION>`, `<OCR>`, `<REGION_TO_CATEGORY>` …)            → caption
 *   - `{ bboxes, labels, scores? }` (`<OD>`, dense captions, grounding) → boxes
 *   - `{ quad_boxes, labels, scores? }` (`<OCR_WITH_REGION>`)          → quads (8 numbers → 4 corners)
 *   - `{ polygons, labels, scores? }` (segmentation)                    → polygons; each instance holds one or more
 *     flat outlines [x1, y1, x2, y2, …], all drawn with the instance's label (written once)
 *   - `{ bboxes, bboxes_labels, polygons, polygons_labels, … }` (`<OPEN_VOCABULARY_DETECTION>`) → boxes and polygons
 *   - NVIDIA's `{ content, entities: { bboxes, quad_boxes, labels, polygons, scores? } }`, whose labels (and
 *     scores) run over the bboxes, then the quad boxes, then the polygons; `content` is the caption of text tasks
 * A malformed result gives a FlorenceError naming the offending path and value.
 */
import { FlorenceError, describeValue } from "../errors.ts";
import { isRecord } from "../validate.ts";
import type { SnapshotBox, SnapshotOverlay, SnapshotShape } from "../florence/image.ts";
import { TASKS, isTaskToken } from "../florence/tasks.ts";

export type { SnapshotBox, SnapshotOverlay, SnapshotShape } from "../florence/image.ts";

export interface OverlayOptions {
  /** The task token whose answer to draw; default: the result's first key that is a task token ("<…>"). */
  task?: string;
  /** Leave out instances whose score is below this (instances without a score are kept). */
  minScore?: number;
}

type Obj = Record<string, unknown>;

function bad(path: string, value: unknown, expected: string): FlorenceError {
  return new FlorenceError("INVALID_ARGUMENT", `overlay: ${path} must be ${expected}, got ${describeValue(value)}`, {
    fix: "pass the `result` of a florence-edge task (post_process_generation's shape)",
  });
}


function list(value: unknown, path: string): readonly unknown[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw bad(path, value, "a list");
  return value;
}

function coordinates(value: unknown, path: string, count?: number): number[] {
  if (!Array.isArray(value) || (count !== undefined && value.length !== count) || !value.every((v) => typeof v === "number")) {
    throw bad(path, value, count !== undefined ? `a list of ${count} numbers` : "a list of numbers");
  }
  return value as number[];
}

function optionalLabel(labels: readonly unknown[], index: number, path: string): string | undefined {
  const label = labels[index];
  if (label === undefined || label === null) return undefined;
  if (typeof label !== "string") throw bad(`${path}[${index}]`, label, "a string");
  return label;
}

function optionalScore(scores: readonly unknown[], index: number, path: string): number | null | undefined {
  const score = scores[index];
  if (score === undefined) return undefined;
  if (score !== null && typeof score !== "number") throw bad(`${path}[${index}]`, score, "a number or null");
  return score;
}

function pairs(flat: readonly number[]): number[][] {
  const points: number[][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) points.push([flat[i]!, flat[i + 1]!]);
  return points;
}

/** One instance's outlines: HF nests them ([[x, y, …], …]); a single flat list is accepted too. */
function outlines(value: unknown, path: string): number[][][] {
  if (!Array.isArray(value)) throw bad(path, value, "a list of outlines [[x1, y1, x2, y2, …], …]");
  if (value.length > 0 && typeof value[0] === "number") return [pairs(coordinates(value, path))];
  return value.map((outline, j) => pairs(coordinates(outline, `${path}[${j}]`)));
}

interface Collector {
  overlay: { boxes: SnapshotBox[]; polygons: SnapshotShape[]; quads: SnapshotShape[]; caption?: string };
  minScore: number | undefined;
}

function keep(collector: Collector, score: number | null | undefined): boolean {
  return collector.minScore === undefined || typeof score !== "number" || score >= collector.minScore;
}

function withLabel<T extends object>(item: T, label: string | undefined, score: number | null | undefined): T & { label?: string; score?: number | null } {
  const out: T & { label?: string; score?: number | null } = item;
  if (label !== undefined) out.label = label;
  if (score !== undefined) out.score = score;
  return out;
}

function addBoxes(c: Collector, boxes: readonly unknown[], labels: readonly unknown[], scores: readonly unknown[], path: string, labelPath: string, scorePath: string, offset = 0): void {
  boxes.forEach((box, i) => {
    const score = optionalScore(scores, offset + i, scorePath);
    if (!keep(c, score)) return;
    c.overlay.boxes.push(withLabel({ box: coordinates(box, `${path}[${i}]`, 4) }, optionalLabel(labels, offset + i, labelPath), score));
  });
}

function addQuads(c: Collector, quads: readonly unknown[], labels: readonly unknown[], scores: readonly unknown[], path: string, labelPath: string, scorePath: string, offset = 0): void {
  quads.forEach((quad, i) => {
    const score = optionalScore(scores, offset + i, scorePath);
    if (!keep(c, score)) return;
    c.overlay.quads.push(withLabel({ points: pairs(coordinates(quad, `${path}[${i}]`, 8)) }, optionalLabel(labels, offset + i, labelPath), score));
  });
}

function addPolygons(c: Collector, polygons: readonly unknown[], labels: readonly unknown[], scores: readonly unknown[], path: string, labelPath: string, scorePath: string, offset = 0): void {
  polygons.forEach((instance, i) => {
    const score = optionalScore(scores, offset + i, scorePath);
    if (!keep(c, score)) return;
    const label = optionalLabel(labels, offset + i, labelPath);
    outlines(instance, `${path}[${i}]`).forEach((points, j) => {
      if (points.length >= 2) c.overlay.polygons.push(j === 0 ? withLabel({ points }, label, score) : { points });
    });
  });
}

function answerKey(result: Obj, task: string | undefined): string {
  if (task !== undefined) {
    if (!(task in result)) {
      throw new FlorenceError("INVALID_ARGUMENT", `overlay: the result has no answer for task ${describeValue(task)} (keys: ${Object.keys(result).join(", ") || "none"})`, {
        fix: "pass the task the result was produced for, or leave task out",
      });
    }
    return task;
  }
  const key = Object.keys(result).find((k) => k.startsWith("<") && k.endsWith(">"));
  if (key === undefined) {
    throw new FlorenceError("INVALID_ARGUMENT", `overlay: the result has no task answer (keys: ${Object.keys(result).join(", ") || "none"})`, {
      fix: 'pass a result such as { "<OD>": { bboxes, labels } }',
    });
  }
  return key;
}

/** The overlay for one task's result (`{ "<OD>": … }`, as TaskResult.result and the MQTT result payload hold it). */
export function overlayFromResult(result: Record<string, unknown>, options: OverlayOptions = {}): SnapshotOverlay {
  if (!isRecord(result)) throw bad("result", result, 'an object such as { "<OD>": { bboxes, labels } }');
  const minScore = options.minScore;
  if (minScore !== undefined && (typeof minScore !== "number" || !Number.isFinite(minScore))) throw bad("minScore", minScore, "a finite number");
  const key = answerKey(result, options.task);
  const answer = result[key];
  const c: Collector = { overlay: { boxes: [], polygons: [], quads: [] }, minScore };

  if (typeof answer === "string") {
    c.overlay.caption = answer;
  } else if (isRecord(answer) && isRecord(answer["entities"])) {
    const e = answer["entities"];
    const path = `${key}.entities`;
    const labels = list(e["labels"], `${path}.labels`);
    const scores = list(e["scores"], `${path}.scores`);
    const boxes = list(e["bboxes"], `${path}.bboxes`);
    const quads = list(e["quad_boxes"], `${path}.quad_boxes`);
    addBoxes(c, boxes, labels, scores, `${path}.bboxes`, `${path}.labels`, `${path}.scores`);
    addQuads(c, quads, labels, scores, `${path}.quad_boxes`, `${path}.labels`, `${path}.scores`, boxes.length);
    const polygons = list(e["polygons"], `${path}.polygons`);
    addPolygons(c, polygons, labels, scores, `${path}.polygons`, `${path}.labels`, `${path}.scores`, boxes.length + quads.length);
    // a geometric task's content is its raw text with <loc_N> tokens: only a text task's content is a caption
    const textTask = isTaskToken(key) ? TASKS[key].parseType === "pure_text" : !/<loc_\d+>/.test(String(answer["content"]));
    if (textTask && boxes.length + quads.length + polygons.length === 0 && typeof answer["content"] === "string") {
      c.overlay.caption = answer["content"];
    }
  } else if (isRecord(answer) && ("bboxes_labels" in answer || "polygons_labels" in answer)) {
    addBoxes(c, list(answer["bboxes"], `${key}.bboxes`), list(answer["bboxes_labels"], `${key}.bboxes_labels`), list(answer["bboxes_scores"], `${key}.bboxes_scores`), `${key}.bboxes`, `${key}.bboxes_labels`, `${key}.bboxes_scores`);
    addPolygons(c, list(answer["polygons"], `${key}.polygons`), list(answer["polygons_labels"], `${key}.polygons_labels`), list(answer["polygons_scores"], `${key}.polygons_scores`), `${key}.polygons`, `${key}.polygons_labels`, `${key}.polygons_scores`);
  } else if (isRecord(answer) && "quad_boxes" in answer) {
    addQuads(c, list(answer["quad_boxes"], `${key}.quad_boxes`), list(answer["labels"], `${key}.labels`), list(answer["scores"], `${key}.scores`), `${key}.quad_boxes`, `${key}.labels`, `${key}.scores`);
  } else if (isRecord(answer) && "polygons" in answer) {
    addPolygons(c, list(answer["polygons"], `${key}.polygons`), list(answer["labels"], `${key}.labels`), list(answer["scores"], `${key}.scores`), `${key}.polygons`, `${key}.labels`, `${key}.scores`);
  } else if (isRecord(answer) && "bboxes" in answer) {
    addBoxes(c, list(answer["bboxes"], `${key}.bboxes`), list(answer["labels"], `${key}.labels`), list(answer["scores"], `${key}.scores`), `${key}.bboxes`, `${key}.labels`, `${key}.scores`);
  } else {
    throw bad(key, answer, "a text, or an object with bboxes, quad_boxes, polygons or entities");
  }

  const out: SnapshotOverlay = {};
  if (c.overlay.boxes.length) out.boxes = c.overlay.boxes;
  if (c.overlay.polygons.length) out.polygons = c.overlay.polygons;
  if (c.overlay.quads.length) out.quads = c.overlay.quads;
  if (c.overlay.caption !== undefined && c.overlay.caption !== "") out.caption = c.overlay.caption;
  return out;
}

/** Several overlays drawn together (the tasks run on one frame); captions are joined with " | ". */
export function mergeOverlays(overlays: readonly SnapshotOverlay[]): SnapshotOverlay {
  const boxes: SnapshotBox[] = [];
  const polygons: SnapshotShape[] = [];
  const quads: SnapshotShape[] = [];
  const captions: string[] = [];
  for (const o of overlays) {
    if (o.boxes) boxes.push(...o.boxes);
    if (o.polygons) polygons.push(...o.polygons);
    if (o.quads) quads.push(...o.quads);
    if (o.caption) captions.push(o.caption);
  }
  const out: SnapshotOverlay = {};
  if (boxes.length) out.boxes = boxes;
  if (polygons.length) out.polygons = polygons;
  if (quads.length) out.quads = quads;
  if (captions.length) out.caption = captions.join(" | ");
  return out;
}
