/**
 * What a model of the shapes world answers, as the text it generates (the trainer's choice, read back by HF's
 * `post_process_generation` into the spec's results), and the training examples of a still: every task, with the
 * text inputs a user would give.
 */
import { constructPrompt, quantizeBox, regionToLocTokens, type TaskToken } from "../florence/tasks.ts";
import { type Box, boxCentre, type Polygon, shapeOutline } from "./geometry.ts";
import type { WorldRandom } from "./random.ts";
import type { ShapeTruth, Truth } from "./scene.ts";
import { COLOUR_NAMES, SHAPE_NAMES } from "./world_spec.ts";

/** Points on a circle's polygon in the model's answers (a 16-gon covers 97 % of the disc). */
export const ANSWER_CIRCLE_POINTS = 16;

export interface TrainingExample {
  task: TaskToken;
  /** The task's text input ("" for tasks without one). */
  input: string;
  /** HF's prompt for task + input (what the encoder reads after the image). */
  prompt: string;
  /** The generated text the model should produce (without <s> and </s>). */
  target: string;
}

const loc = (bin: number) => `<loc_${bin}>`;

function pointLocs(points: Polygon, truth: Truth): string {
  let out = "";
  for (let i = 0; i < points.length; i += 2) {
    const [bx, by] = quantizeBox([points[i]!, points[i + 1]!, points[i]!, points[i + 1]!], truth);
    out += loc(bx) + loc(by);
  }
  return out;
}

/** Shapes left to right by box centre (top to bottom on ties). */
export function leftToRight(shapes: readonly ShapeTruth[]): ShapeTruth[] {
  return [...shapes].sort((a, b) => boxCentre(a.box)[0] - boxCentre(b.box)[0] || boxCentre(a.box)[1] - boxCentre(b.box)[1]);
}

/** "a", "a and b", "a, b and c". */
export function listPhrase(items: readonly string[]): string {
  if (items.length <= 1) return items.join("");
  return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

const sentence = (text: string) => `${text[0]!.toUpperCase()}${text.slice(1)}.`;

export function where(shape: ShapeTruth, truth: Truth): string {
  const [cx, cy] = boxCentre(shape.box);
  const h = cx < truth.width / 3 ? "left" : cx < (2 * truth.width) / 3 ? "centre" : "right";
  const v = cy < truth.height / 3 ? "top" : cy < (2 * truth.height) / 3 ? "middle" : "bottom";
  return `at the ${v} ${h}`;
}

export function sizeWord(shape: ShapeTruth): "small" | "medium" | "large" {
  return shape.relativeSize < 0.17 ? "small" : shape.relativeSize < 0.26 ? "medium" : "large";
}

function wordsClause(truth: Truth): string {
  const words = truth.words.map((w) => w.text);
  if (words.length === 0) return "";
  return `, with the word${words.length > 1 ? "s" : ""} ${listPhrase(words)}`;
}

/** The model's polygon for a shape: its outline, a circle as a 16-gon. */
export function answerPolygon(shape: ShapeTruth): Polygon {
  if (shape.shape !== "circle") return shape.polygon;
  const d = shape.box[2] - shape.box[0];
  return shapeOutline("circle", shape.box[0], shape.box[1], d, ANSWER_CIRCLE_POINTS);
}

/** Shapes a query names: a shape name (`circle`) or `colour shape`. */
export function shapesMatching(truth: Truth, query: string): ShapeTruth[] {
  const q = query.trim().toLowerCase();
  return leftToRight(truth.shapes.filter((s) => s.shape === q || s.label === q));
}

/** The answer text for `task` with `input` (a region input is the four bins of the box it names). */
export function targetText(task: TaskToken, truth: Truth, input = "", region?: { shape?: ShapeTruth; word?: string }): string {
  const shapes = leftToRight(truth.shapes);
  switch (task) {
    case "<OD>":
      return shapes.map((s) => s.shape + regionToLocTokens(s.box, truth)).join("");
    case "<DENSE_REGION_CAPTION>":
      return shapes.map((s) => s.label + regionToLocTokens(s.box, truth)).join("");
    case "<REGION_PROPOSAL>":
      return shapes.map((s) => regionToLocTokens(s.box, truth)).join("");
    case "<OPEN_VOCABULARY_DETECTION>": {
      const hits = shapesMatching(truth, input);
      return hits.length ? input + hits.map((s) => regionToLocTokens(s.box, truth)).join("") : "";
    }
    case "<CAPTION_TO_PHRASE_GROUNDING>":
      return groundingTarget(truth, input);
    case "<REFERRING_EXPRESSION_SEGMENTATION>":
      return shapesMatching(truth, input).map((s) => pointLocs(answerPolygon(s), truth)).join("<sep>");
    case "<REGION_TO_SEGMENTATION>":
      return region?.shape ? pointLocs(answerPolygon(region.shape), truth) : "";
    case "<REGION_TO_CATEGORY>":
      return region?.shape?.shape ?? "";
    case "<REGION_TO_DESCRIPTION>":
      return region?.shape?.label ?? "";
    case "<REGION_TO_OCR>":
      return region?.word ?? "";
    case "<CAPTION>":
      return sentence(listPhrase(shapes.map((s) => `a ${s.label}`)));
    case "<DETAILED_CAPTION>":
      return sentence(listPhrase(shapes.map((s) => `a ${s.label} ${where(s, truth)}`)) + wordsClause(truth));
    case "<MORE_DETAILED_CAPTION>": {
      const bg = truth.background === "flat" ? "plain" : truth.background === "gradient" ? "gradient" : "noisy";
      return sentence(`${listPhrase(shapes.map((s) => `a ${sizeWord(s)} ${s.label} ${where(s, truth)}`))} on a ${bg} background${wordsClause(truth)}`);
    }
    case "<OCR>":
      return truth.words.map((w) => w.text).join(" ");
    case "<OCR_WITH_REGION>":
      return truth.words.map((w) => w.text + pointLocs(w.quad, truth)).join("");
  }
}

/** The phrases of a grounding sentence ("a red circle and a blue square") that name present shapes, with boxes. */
function groundingTarget(truth: Truth, input: string): string {
  const phrases = input.split(/,\s*|\s+and\s+/).map((p) => p.trim().replace(/^(a|an|the)\s+/i, "")).filter(Boolean);
  let out = "";
  for (const phrase of phrases) {
    const hits = shapesMatching(truth, phrase);
    if (hits.length) out += phrase + hits.map((s) => regionToLocTokens(s.box, truth)).join("");
  }
  return out;
}

function jitterBox(box: Box, truth: Truth, rng: WorldRandom): Box {
  if (rng.chance(0.5)) return box;
  const jx = 0.01 * truth.width;
  const jy = 0.01 * truth.height;
  const j = (v: number, s: number, max: number) => Math.min(max - 1, Math.max(0, v + rng.uniform(-s, s)));
  return [j(box[0], jx, truth.width), j(box[1], jy, truth.height), j(box[2], jx, truth.width), j(box[3], jy, truth.height)];
}

/** A query for open-vocabulary detection or segmentation: mostly a present shape, sometimes anything. */
function sampleQuery(truth: Truth, rng: WorldRandom, colourShape: boolean): string {
  if (rng.chance(0.8)) {
    const s = rng.pick(truth.shapes);
    return colourShape ? s.label : s.shape;
  }
  return colourShape ? `${rng.pick(COLOUR_NAMES)} ${rng.pick(SHAPE_NAMES)}` : rng.pick(SHAPE_NAMES);
}

/** Every task once (open-vocabulary detection twice: a shape name and a colour–shape pair) for a still. */
export function trainingExamples(truth: Truth, rng: WorldRandom): TrainingExample[] {
  const out: TrainingExample[] = [];
  const add = (task: TaskToken, input: string, target: string) =>
    out.push({ task, input, prompt: constructPrompt(task, input || undefined, truth), target });
  for (const task of ["<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>", "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OCR>", "<OCR_WITH_REGION>"] as const) {
    add(task, "", targetText(task, truth));
  }
  for (const colourShape of [false, true]) {
    const query = sampleQuery(truth, rng, colourShape);
    add("<OPEN_VOCABULARY_DETECTION>", query, targetText("<OPEN_VOCABULARY_DETECTION>", truth, query));
  }
  const resQuery = sampleQuery(truth, rng, true);
  add("<REFERRING_EXPRESSION_SEGMENTATION>", resQuery, targetText("<REFERRING_EXPRESSION_SEGMENTATION>", truth, resQuery));
  const named = rng.shuffle([...truth.shapes]).slice(0, rng.int(1, Math.min(3, truth.shapes.length))).map((s) => s.label);
  if (rng.chance(0.3)) named.push(`${rng.pick(COLOUR_NAMES)} ${rng.pick(SHAPE_NAMES)}`);
  const groundingInput = listPhrase(named.map((n) => `a ${n}`));
  add("<CAPTION_TO_PHRASE_GROUNDING>", groundingInput, targetText("<CAPTION_TO_PHRASE_GROUNDING>", truth, groundingInput));
  for (const task of ["<REGION_TO_SEGMENTATION>", "<REGION_TO_CATEGORY>", "<REGION_TO_DESCRIPTION>"] as const) {
    const shape = rng.pick(truth.shapes);
    add(task, regionToLocTokens(jitterBox(shape.box, truth, rng), truth), targetText(task, truth, "", { shape }));
  }
  if (truth.words.length) {
    const word = rng.pick(truth.words);
    add("<REGION_TO_OCR>", regionToLocTokens(jitterBox(word.box, truth, rng), truth), word.text);
  }
  return out;
}
