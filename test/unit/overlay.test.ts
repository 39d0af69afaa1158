import { test } from "uvu";
import * as assert from "uvu/assert";
import { FlorenceError } from "../../src/errors.ts";
import { postProcessGeneration } from "../../src/florence/postprocess.ts";
import { mergeOverlays, overlayFromResult } from "../../src/service/overlay.ts";
import { readReference } from "../support/paths.ts";

type ParseCase = { task: string; text: string; image_size: [number, number]; expected?: Record<string, unknown> };
type GenerateCase = { id: string; task: string; text: string[]; image_sizes: [number, number][]; result: Record<string, unknown>[] };

const PARSE = readReference<ParseCase[]>("parse.json").filter((c) => c.expected !== undefined);
const GENERATE = readReference<GenerateCase[]>("generate.json");

/** Every HF result the fixtures hold: hand-written parse cases and the model's own outputs, all 15 tasks. */
const HF_RESULTS: Array<{ label: string; task: string; result: Record<string, unknown> }> = [
  ...PARSE.map((c, i) => ({ label: `parse.json[${i}] ${c.task}`, task: c.task, result: c.expected! })),
  ...GENERATE.flatMap((c) => c.result.map((result, i) => ({ label: `${c.id}#${i}`, task: c.task, result }))),
];

const pairsOf = (flat: number[]) => Array.from({ length: flat.length >> 1 }, (_, i) => [flat[2 * i]!, flat[2 * i + 1]!]);

test("every HF result shape becomes the matching overlay (all tasks, parse.json and generate.json)", () => {
  const tasksSeen = new Set<string>();
  for (const { label, task, result } of HF_RESULTS) {
    tasksSeen.add(task);
    const answer = result[task] as any;
    const overlay = overlayFromResult(result);
    assert.equal(overlayFromResult(result, { task }), overlay, label);
    if (typeof answer === "string") {
      assert.equal(overlay, answer === "" ? {} : { caption: answer }, label);
      continue;
    }
    const boxes: number[][] = answer.bboxes ?? [];
    const boxLabels: string[] = answer.labels ?? answer.bboxes_labels ?? [];
    assert.equal((overlay.boxes ?? []).map((b) => b.box), "quad_boxes" in answer ? [] : boxes, `${label} boxes`);
    (overlay.boxes ?? []).forEach((b, i) => assert.is(b.label, boxLabels[i], `${label} box label ${i}`));
    const quads: number[][] = answer.quad_boxes ?? [];
    assert.equal((overlay.quads ?? []).map((q) => q.points), quads.map(pairsOf), `${label} quads`);
    (overlay.quads ?? []).forEach((q, i) => assert.is(q.label, answer.labels[i], `${label} quad label ${i}`));
    const polygons: number[][][] = answer.polygons ?? [];
    const polygonLabels: string[] = answer.polygons_labels ?? answer.labels ?? [];
    const outlines = polygons.flatMap((instance, i) => instance.map((flat, j) => ({ points: pairsOf(flat), label: j === 0 ? polygonLabels[i] : undefined })));
    const drawn = outlines.filter((o) => o.points.length >= 2);
    assert.equal((overlay.polygons ?? []).map((p) => p.points), drawn.map((o) => o.points), `${label} polygons`);
    assert.equal((overlay.polygons ?? []).map((p) => p.label), drawn.map((o) => o.label), `${label} polygon labels`);
    assert.is(overlay.caption, undefined, label);
  }
  assert.is(tasksSeen.size, 15, "all 15 tasks are covered");
});

test("specific HF results: <OD>, <OCR_WITH_REGION>, <REFERRING_EXPRESSION_SEGMENTATION>, <OPEN_VOCABULARY_DETECTION>", () => {
  const od = PARSE.find((c) => c.task === "<OD>" && c.text.startsWith("</s><s>car"))!;
  assert.equal(overlayFromResult(od.expected!), {
    boxes: [{ box: [33, 159, 596, 371], label: "car" }, { box: [0, 1, 2, 2], label: "person" }],
  });
  const ocr = PARSE.find((c) => c.task === "<OCR_WITH_REGION>")!;
  assert.equal(overlayFromResult(ocr.expected!).quads![1], { points: [[64, 48], [128, 48], [128, 72], [64, 72]], label: "OPEN 24" });
  const seg = PARSE.find((c) => c.task === "<REFERRING_EXPRESSION_SEGMENTATION>")!;
  assert.equal(overlayFromResult(seg.expected!), { polygons: [{ points: [[64, 48], [128, 48], [128, 96], [64, 96]], label: "" }] });
  const ovd = PARSE.find((c) => c.task === "<OPEN_VOCABULARY_DETECTION>")!;
  assert.equal(overlayFromResult(ovd.expected!), { boxes: [{ box: [33, 159, 596, 371], label: "car" }] });
});

test("NVIDIA's shape gives the same overlay as HF's, scores included (labels run over boxes, quads, polygons)", () => {
  let compared = 0;
  for (const c of PARSE) {
    const size = { width: c.image_size[0], height: c.image_size[1] };
    // one token per character, each with its own log-probability: scores differ per instance
    const texts = [...c.text];
    const logprobs = texts.map((_, i) => -0.01 * ((i * 7) % 13) - 0.001);
    const tokens = { texts, logprobs };
    const hf = postProcessGeneration(c.text, c.task, size, { coordinates: "int", tokens });
    const nvidia = postProcessGeneration(c.text, c.task, size, { coordinates: "int", tokens, format: "nvidia" });
    const fromHf = overlayFromResult(hf);
    const fromNvidia = overlayFromResult(nvidia);
    if (typeof hf[c.task] === "string") {
      assert.equal(fromNvidia, fromHf, c.task);
      continue;
    }
    assert.equal(fromNvidia, fromHf, `${c.task} ${c.text}`);
    compared++;
  }
  assert.ok(compared >= 20, `compared ${compared} geometric results`);
});

test("scores are carried; minScore leaves out low ones but keeps unscored instances", () => {
  const result = { "<OD>": { bboxes: [[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]], labels: ["a", "b", "c"], scores: [0.9, 0.2, null] } };
  assert.equal(overlayFromResult(result).boxes!.map((b) => b.score), [0.9, 0.2, null]);
  assert.equal(overlayFromResult(result, { minScore: 0.5 }).boxes!.map((b) => b.label), ["a", "c"]);
  const ovd = { "<OPEN_VOCABULARY_DETECTION>": { bboxes: [[0, 0, 1, 1]], bboxes_labels: ["x"], polygons: [[[0, 0, 4, 0, 4, 4]]], polygons_labels: ["y"], bboxes_scores: [0.1], polygons_scores: [0.8] } };
  assert.equal(overlayFromResult(ovd, { minScore: 0.5 }), { polygons: [{ points: [[0, 0], [4, 0], [4, 4]], label: "y", score: 0.8 }] });
});

test("a pure-text score beside the answer does not confuse the task lookup", () => {
  assert.equal(overlayFromResult({ "<CAPTION>": "a car", score: 0.5 }), { caption: "a car" });
  assert.equal(overlayFromResult({ score: 0.5, "<OCR>": "EXIT" }), { caption: "EXIT" });
});

function expectError(fn: () => unknown, ...fragments: string[]): void {
  try {
    fn();
  } catch (error) {
    assert.instance(error, FlorenceError);
    assert.is((error as FlorenceError).code, "INVALID_ARGUMENT");
    for (const f of fragments) assert.ok((error as Error).message.includes(f), `${(error as Error).message} mentions ${f}`);
    return;
  }
  assert.unreachable("expected INVALID_ARGUMENT");
}

test("malformed results name the offending path and value", () => {
  expectError(() => overlayFromResult({ "<OD>": { bboxes: [[1, 2, 3, 4], [1, 2, "x", 4]], labels: ["a", "b"] } }), "<OD>.bboxes[1]", '"x"');
  expectError(() => overlayFromResult({ "<OD>": { bboxes: [[1, 2, 3]], labels: ["a"] } }), "<OD>.bboxes[0]", "4 numbers");
  expectError(() => overlayFromResult({ "<OCR_WITH_REGION>": { quad_boxes: [[1, 2, 3, 4]], labels: ["a"] } }), "quad_boxes[0]", "8 numbers");
  expectError(() => overlayFromResult({ "<OD>": { bboxes: [[1, 2, 3, 4]], labels: [7] } }), "<OD>.labels[0]", "7");
  expectError(() => overlayFromResult({ "<OD>": { bboxes: [[1, 2, 3, 4]], labels: ["a"], scores: ["high"] } }), "<OD>.scores[0]");
  expectError(() => overlayFromResult({ "<OD>": 42 }), "<OD>", "42");
  expectError(() => overlayFromResult({ "<OD>": { bboxes: "nope" } }), "<OD>.bboxes", "a list");
  expectError(() => overlayFromResult({ score: 1 }), "no task answer");
  expectError(() => overlayFromResult({ "<OD>": { bboxes: [], labels: [] } }, { task: "<OCR>" }), '"<OCR>"', "<OD>");
  expectError(() => overlayFromResult(null as never), "result");
  expectError(() => overlayFromResult({ "<OD>": { bboxes: [], labels: [] } }, { minScore: Number.NaN }), "minScore");
});

test("mergeOverlays draws several tasks together", () => {
  const merged = mergeOverlays([
    overlayFromResult({ "<OD>": { bboxes: [[0, 0, 1, 1]], labels: ["a"] } }),
    overlayFromResult({ "<CAPTION>": "a cat" }),
    overlayFromResult({ "<OCR>": "EXIT" }),
    overlayFromResult({ "<REGION_TO_SEGMENTATION>": { polygons: [[[0, 0, 2, 0, 2, 2]]], labels: [""] } }),
    {},
  ]);
  assert.equal(merged, {
    boxes: [{ box: [0, 0, 1, 1], label: "a" }],
    polygons: [{ points: [[0, 0], [2, 0], [2, 2]], label: "" }],
    caption: "a cat | EXIT",
  });
});

test.run();
