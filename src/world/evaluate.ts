/**
 * The world evaluation: fresh held-out stills (seeds never used in training), every task run with the model's
 * own generation settings, figures per task against the goals of the shapes-world model.
 */
import type { Florence2, TaskResult } from "../florence/florence2.ts";
import { regionToLocTokens, TASK_TOKENS, type TaskToken } from "../florence/tasks.ts";
import { HELD_OUT_SEED_BASE, drawStill } from "./dataset.ts";
import type { WorldFont } from "./font.ts";
import {
  NO_COUNTS, type MatchCounts, addCounts, captionNamesExactly, detectionsOf, matchDetections, median, polygonIoU,
  polygonsOf, precision, recall, shapeDetections, wordDetectionsOf,
} from "./scoring.ts";
import { WorldRandom } from "./random.ts";
import type { Truth } from "./scene.ts";

export interface TaskFigure {
  task: TaskToken;
  /** What is measured, e.g. "precision@0.5". */
  metric: string;
  value: number;
  /** The goal it must reach, where the model has one. */
  goal?: number;
  /** How many answers (or instances) it is computed over. */
  count: number;
}

export interface EvalReport {
  images: number;
  /** The world seed the stills were drawn from (held out from training). */
  worldSeed: number;
  figures: TaskFigure[];
  /** Mean wall time per image for all tasks, and per task run. */
  msPerImage: number;
  msPerTask: number;
  passed: boolean;
}

export interface EvalOptions {
  images: number;
  seed: number;
  onProgress?: (done: number, total: number) => void;
}

interface Tally {
  counts: Map<string, MatchCounts>;
  hits: Map<string, [number, number]>;
  ious: Map<string, number[]>;
}

const count = (t: Tally, key: string, c: MatchCounts) => t.counts.set(key, addCounts(t.counts.get(key) ?? NO_COUNTS, c));
const hit = (t: Tally, key: string, ok: boolean) => {
  const [a, n] = t.hits.get(key) ?? [0, 0];
  t.hits.set(key, [a + (ok ? 1 : 0), n + 1]);
};
const iou = (t: Tally, key: string, v: number) => t.ious.set(key, [...(t.ious.get(key) ?? []), v]);

function answer(r: TaskResult): unknown {
  return r.result[r.task];
}

/** Runs every task on one still and adds what it found to the tally; returns the number of task runs. */
async function evaluateStill(model: Florence2, bytes: Uint8Array, truth: Truth, rng: WorldRandom, tally: Tally): Promise<number> {
  const vision = await model.encodeImage(bytes);
  let runs = 0;
  const run = async (task: TaskToken, text?: string) => {
    runs++;
    return answer(await model.runTask(vision, { task, ...(text !== undefined ? { text } : {}) }));
  };
  const shapes = shapeDetections(truth, (s) => s.shape);
  const labelled = shapeDetections(truth, (s) => s.label);
  count(tally, "<OD>", matchDetections(detectionsOf(await run("<OD>")), shapes));
  count(tally, "<DENSE_REGION_CAPTION>", matchDetections(detectionsOf(await run("<DENSE_REGION_CAPTION>")), labelled));
  const proposals = detectionsOf(await run("<REGION_PROPOSAL>")).map((d) => ({ ...d, label: "" }));
  count(tally, "<REGION_PROPOSAL>", matchDetections(proposals, shapeDetections(truth, () => "")));
  for (const task of ["<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"] as const) {
    hit(tally, task, captionNamesExactly(String(await run(task)), truth));
  }
  const target = rng.pick(truth.shapes);
  const ovd = detectionsOf(await run("<OPEN_VOCABULARY_DETECTION>", target.label));
  count(tally, "<OPEN_VOCABULARY_DETECTION>", matchDetections(ovd, labelled.filter((d) => d.label === target.label)));
  const grounding = detectionsOf(await run("<CAPTION_TO_PHRASE_GROUNDING>", `a ${target.label}`));
  count(tally, "<CAPTION_TO_PHRASE_GROUNDING>", matchDetections(grounding, labelled.filter((d) => d.label === target.label)));
  const unique = truth.shapes.filter((s) => truth.shapes.filter((o) => o.label === s.label).length === 1);
  if (unique.length) {
    const s = rng.pick(unique);
    iou(tally, "<REFERRING_EXPRESSION_SEGMENTATION>", polygonIoU(polygonsOf(await run("<REFERRING_EXPRESSION_SEGMENTATION>", s.label)), s.polygon, truth.width, truth.height));
  }
  const region = rng.pick(truth.shapes);
  const loc = regionToLocTokens(region.box, truth);
  iou(tally, "<REGION_TO_SEGMENTATION>", polygonIoU(polygonsOf(await run("<REGION_TO_SEGMENTATION>", loc)), region.polygon, truth.width, truth.height));
  hit(tally, "<REGION_TO_CATEGORY>", String(await run("<REGION_TO_CATEGORY>", loc)).trim() === region.shape);
  hit(tally, "<REGION_TO_DESCRIPTION>", String(await run("<REGION_TO_DESCRIPTION>", loc)).trim() === region.label);
  hit(tally, "<OCR>", String(await run("<OCR>")).trim() === truth.words.map((w) => w.text).join(" "));
  const words = truth.words.map((w) => ({ box: w.box, label: w.text }));
  count(tally, "<OCR_WITH_REGION>", matchDetections(wordDetectionsOf(await run("<OCR_WITH_REGION>")), words));
  if (truth.words.length) {
    const w = rng.pick(truth.words);
    hit(tally, "<REGION_TO_OCR>", String(await run("<REGION_TO_OCR>", regionToLocTokens(w.box, truth))).trim() === w.text);
  }
  return runs;
}

/** The goals of the shapes-world model (issue "A model that sees"). */
const GOALS: Partial<Record<TaskToken, number>> = {
  "<OD>": 0.9, "<DENSE_REGION_CAPTION>": 0.85, "<CAPTION>": 0.85, "<OPEN_VOCABULARY_DETECTION>": 0.85,
  "<REFERRING_EXPRESSION_SEGMENTATION>": 0.75, "<REGION_TO_CATEGORY>": 0.9, "<OCR>": 0.8, "<REGION_TO_OCR>": 0.8,
};

function figures(t: Tally): TaskFigure[] {
  const out: TaskFigure[] = [];
  const goal = (task: TaskToken) => (GOALS[task] !== undefined ? { goal: GOALS[task]! } : {});
  for (const [task, c] of t.counts) {
    const k = task as TaskToken;
    out.push({ task: k, metric: "precision@0.5", value: precision(c), count: c.predicted, ...goal(k) });
    out.push({ task: k, metric: "recall@0.5", value: recall(c), count: c.expected, ...goal(k) });
  }
  for (const [task, [a, n]] of t.hits) out.push({ task: task as TaskToken, metric: task.includes("CAPTION") ? "exact pairs" : "accuracy", value: n ? a / n : 0, count: n, ...goal(task as TaskToken) });
  for (const [task, v] of t.ious) out.push({ task: task as TaskToken, metric: "median mask IoU", value: median(v), count: v.length, ...goal(task as TaskToken) });
  // in the order of the task table, so reports line up run after run
  return out.sort((a, b) => TASK_TOKENS.indexOf(a.task) - TASK_TOKENS.indexOf(b.task));
}

export async function evaluateWorld(model: Florence2, font: WorldFont, options: EvalOptions): Promise<EvalReport> {
  const worldSeed = HELD_OUT_SEED_BASE + options.seed;
  const tally: Tally = { counts: new Map(), hits: new Map(), ious: new Map() };
  const rng = new WorldRandom(worldSeed, 99);
  let runs = 0;
  let inferenceMs = 0;
  for (let i = 0; i < options.images; i++) {
    const still = await drawStill(font, worldSeed, i);
    const t0 = performance.now();
    runs += await evaluateStill(model, still.bytes, still.truth, rng, tally);
    inferenceMs += performance.now() - t0;
    options.onProgress?.(i + 1, options.images);
  }
  const list = figures(tally);
  return {
    images: options.images, worldSeed, figures: list, msPerImage: inferenceMs / Math.max(1, options.images),
    msPerTask: inferenceMs / Math.max(1, runs), passed: list.every((f) => f.goal === undefined || f.value >= f.goal),
  };
}

/** The report as a table for a terminal. */
export function formatReport(report: EvalReport, title: string): string {
  const lines = [`${title}: ${report.images} held-out images (world seed ${report.worldSeed}), ${report.msPerImage.toFixed(0)} ms per image for all 15 tasks (${report.msPerTask.toFixed(1)} ms per task)`];
  for (const f of report.figures) {
    const status = f.goal === undefined ? "" : f.value >= f.goal ? `  ok (goal ≥ ${f.goal})` : `  BELOW goal ${f.goal}`;
    lines.push(`  ${f.task.padEnd(38)} ${f.metric.padEnd(16)} ${f.value.toFixed(3)}  (n=${f.count})${status}`);
  }
  lines.push(report.passed ? "all goals met" : "some goals not met");
  return lines.join("\n");
}

/** The goal figures of several precisions of one model side by side (a Markdown table, as the README has it), with
 * the wall time per image relative to the first precision's. */
export function compareReports(reports: readonly { precision: string; report: EvalReport }[]): string {
  const goals = reports[0]!.report.figures.filter((f) => f.goal !== undefined);
  const head = ["precision", ...goals.map((f) => `${f.task} ${f.metric}`), "ms per image (15 tasks)", "time vs " + reports[0]!.precision];
  const rows = reports.map(({ precision, report }) => {
    const value = (task: string, metric: string) => report.figures.find((f) => f.task === task && f.metric === metric)?.value;
    return [
      precision,
      ...goals.map((g) => {
        const v = value(g.task, g.metric);
        return v === undefined ? "–" : `${v.toFixed(3)}${v >= g.goal! ? "" : " ✗"}`;
      }),
      report.msPerImage.toFixed(0),
      `${(report.msPerImage / reports[0]!.report.msPerImage).toFixed(2)}×`,
    ];
  });
  const goalRow = ["goal", ...goals.map((g) => `≥ ${g.goal}`), "", ""];
  return [head, head.map(() => "---"), goalRow, ...rows].map((cells) => `| ${cells.join(" | ")} |`).join("\n");
}
