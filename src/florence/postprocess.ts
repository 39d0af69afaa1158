/**
 * Florence-2 generated text → structured results, as Hugging Face transformers 5.17
 * `Florence2Processor.post_process_generation` (and its `Florence2PostProcessor`) returns them.
 *
 * HF parses with Python `re`; here each pattern is a hand-written linear scanner with the same semantics:
 *   - `\d` is any Unicode decimal digit (category Nd, Unicode 15 as in Python 3.12) and `int()` reads its value;
 *   - `\s` and `str.strip()` use Python's whitespace set (not JS's);
 *   - `.` matches anything but "\n"; `$` matches at the end or before a final "\n";
 *   - `findall`/`finditer` restart positions, greedy/lazy quantifiers and backtracking are reproduced exactly
 *     (see each scanner), without Python's quadratic worst cases.
 * Coordinates: "int" is HF-native (float32 bin centres truncated by `.int()`), "float32" the same values
 * untruncated (Microsoft's remote-code processor), "float" the exact bin centre (bin + 0.5) * W / 1000.
 *
 * Optional confidence scores come from the decoder's per-token log-probabilities: the score of an instance is
 * exp(mean log-prob) of the tokens whose text overlaps the instance's matched text (its label and its <loc_N>s).
 */
import { FlorenceError, describeValue } from "../errors.ts";
import { isRecord } from "../validate.ts";
import { type ImageSizeLike, type ParseType, type TaskToken, TASKS, pyStripBounds, taskSpec } from "./tasks.ts";
import { hfIntCoordinate, parseBoxes, parseOcr, parsePolygons } from "./instance_parsers.ts";
import { type CleanedText, PARSER_REMOVED, PURE_TEXT_REMOVED, cleanGeneratedText, removeTokensFast, removeTokensWithOffsets } from "./python_text.ts";
export { cleanGeneratedText, type CleanedText, removeTokensWithOffsets } from "./python_text.ts";

export type CoordinateMode = "float" | "int" | "float32";
export type ResultFormat = "hf" | "nvidia";

/**
 * The generated sequence's tokens. Give `spans` (each token's [start, end) in the raw text, UTF-16 units) or
 * `texts` (each token's text; concatenated they are the raw text). `logprobs` are natural-log probabilities of the
 * generated tokens, aligned with the LAST `logprobs.length` tokens (the decoder start token has none).
 * Typed-array spans are flat pairs [s0, e0, s1, e1, …].
 */
export interface GeneratedTokens {
  spans?: ReadonlyArray<readonly [number, number]> | Int32Array | Uint32Array;
  texts?: readonly string[];
  logprobs: ArrayLike<number>;
}

export interface PostProcessOptions {
  /** Default "float". */
  coordinates?: CoordinateMode;
  /** Default "hf" (HF's shapes); "nvidia" gives NVIDIA's hosted-API message shape `{ content, entities }`. */
  format?: ResultFormat;
  /** Add scores (needs `tokens`); default: scores whenever `tokens` is given. */
  scores?: boolean;
  tokens?: GeneratedTokens;
  /** The model's processor_config.json `post_processor_config` (banned grounding phrases, OCR AREA_THRESHOLD). */
  postProcessorConfig?: Record<string, unknown>;
  /** Overrides the banned grounding phrases of `postProcessorConfig`. */
  bannedGroundingPhrases?: readonly string[];
}

export type Score = number | null;

export interface BoxesAnswer {
  bboxes: number[][];
  labels: string[];
  scores?: Score[];
}
export interface OcrAnswer {
  quad_boxes: number[][];
  labels: string[];
  scores?: Score[];
}
export interface PolygonsAnswer {
  polygons: number[][][];
  labels: string[];
  scores?: Score[];
}
export interface BoxesOrPolygonsAnswer {
  bboxes: number[][];
  bboxes_labels: string[];
  polygons: number[][][];
  polygons_labels: string[];
  bboxes_scores?: Score[];
  polygons_scores?: Score[];
}
export type HfAnswer = string | BoxesAnswer | OcrAnswer | PolygonsAnswer | BoxesOrPolygonsAnswer;

export interface NvidiaEntities {
  bboxes: number[][];
  quad_boxes: number[][];
  labels: string[];
  polygons: number[][][];
  scores?: Score[];
}
export interface NvidiaAnswer {
  content: string;
  entities: NvidiaEntities;
  score?: Score;
}

/** `{ [task]: answer }`; a pure-text task's score (when asked for) sits beside it under `score`. */
export type PostProcessResult = Record<string, HfAnswer | NvidiaAnswer | Score>;

/** The banned grounding phrases of Florence-2's processor_config.json (Microsoft's original list). */
export const DEFAULT_BANNED_GROUNDING_PHRASES: readonly string[] = [
  "it", "I", "me", "mine", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "they", "them", "their",
  "theirs", "one", "oneself", "we", "us", "our", "ours", "its", "myself", "yourself", "himself", "herself", "itself",
  "ourselves", "yourselves", "themselves", "this", "that", "these", "those", "who", "whom", "whose", "which", "what",
  "all", "another", "any", "anybody", "anyone", "anything", "each", "everybody", "everyone", "everything", "few",
  "many", "nobody", "none", "several", "some", "somebody", "someone", "something", "each other", "one another",
  "the image", "image", "images", "the", "a", "an", "a group", "other objects", "lots", "a set",
];
const DEFAULT_BANNED_SET: ReadonlySet<string> = new Set(DEFAULT_BANNED_GROUNDING_PHRASES);

// ---------------------------------------------------------------------------------------------------------------
// Coordinates

interface Dequantizer {
  x(bin: number): number;
  y(bin: number): number;
}

function dequantizer(mode: CoordinateMode, size: ImageSizeLike): Dequantizer {
  const w = size.width;
  const h = size.height;
  if (mode === "float") return { x: (bin) => ((bin + 0.5) * w) / 1000, y: (bin) => ((bin + 0.5) * h) / 1000 };
  const perW = Math.fround(w / 1000);
  const perH = Math.fround(h / 1000);
  if (mode === "int") return { x: (bin) => hfIntCoordinate(bin, perW), y: (bin) => hfIntCoordinate(bin, perH) };
  return {
    x: (bin) => Math.fround(Math.fround(Math.fround(bin) + 0.5) * perW),
    y: (bin) => Math.fround(Math.fround(Math.fround(bin) + 0.5) * perH),
  };
}

/** Even positions are x (width), odd are y (height): boxes [x1,y1,x2,y2], quads and polygons (x,y) pairs. */
function toCoordinates(bins: readonly number[], dq: Dequantizer): number[] {
  const out = new Array<number>(bins.length);
  for (let i = 0; i < bins.length; i++) out[i] = (i & 1) === 0 ? dq.x(bins[i]!) : dq.y(bins[i]!);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Scores

interface TokenScorer {
  /** exp(mean log-prob) of the tokens overlapping any of the ascending cleaned-text ranges; null if none. */
  score(ranges: readonly number[]): Score;
}

function makeTokenScorer(raw: string, cleaned: CleanedText, tokens: GeneratedTokens): TokenScorer {
  const rawSpans = tokenRawSpans(raw, tokens);
  const count = rawSpans.length >> 1;
  const logprobs = tokens.logprobs;
  const shift = count - logprobs.length;
  const starts = new Int32Array(count);
  const ends = new Int32Array(count);
  const offsets = cleaned.offsets;
  const cleanLength = cleaned.text.length;
  // cleaned position of a raw position: how many kept chars lie before it
  const toClean = (rawPos: number): number => {
    let lo = 0;
    let hi = cleanLength;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (offsets[mid]! < rawPos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  let monotonic = true;
  for (let t = 0; t < count; t++) {
    starts[t] = toClean(rawSpans[2 * t]!);
    ends[t] = toClean(rawSpans[2 * t + 1]!);
    if (t > 0 && (starts[t]! < starts[t - 1]! || ends[t]! < ends[t - 1]!)) monotonic = false;
  }
  return {
    score(unordered) {
      const ranges = ascendingRanges(unordered);
      let sum = 0;
      let n = 0;
      let last = -1;
      for (let r = 0; r < ranges.length; r += 2) {
        const a = ranges[r]!;
        const b = ranges[r + 1]!;
        if (b <= a) continue;
        let t = 0;
        if (monotonic) {
          let lo = 0;
          let hi = count;
          while (lo < hi) {
            const mid = (lo + hi) >> 1;
            if (ends[mid]! <= a) lo = mid + 1;
            else hi = mid;
          }
          t = Math.max(lo, last + 1);
        }
        for (; t < count; t++) {
          const s = starts[t]!;
          const e = ends[t]!;
          if (monotonic && s >= b) break;
          if (e <= s || e <= a || s >= b) continue;
          if (monotonic) last = t;
          const li = t - shift;
          if (li < 0 || li >= logprobs.length) continue;
          sum += logprobs[li]!;
          n++;
        }
      }
      return n === 0 ? null : Math.exp(sum / n);
    },
  };
}

// A polygon label can follow its first <loc_N> run ("<loc_1><sep>label<loc_2>…"), so ranges may come unordered.
function ascendingRanges(ranges: readonly number[]): readonly number[] {
  let ordered = true;
  for (let r = 2; r < ranges.length; r += 2) if (ranges[r]! < ranges[r - 2]!) ordered = false;
  if (ordered) return ranges;
  const pairs: [number, number][] = [];
  for (let r = 0; r < ranges.length; r += 2) pairs.push([ranges[r]!, ranges[r + 1]!]);
  pairs.sort((p, q) => p[0] - q[0]);
  return pairs.flat();
}

function tokenRawSpans(raw: string, tokens: GeneratedTokens): Int32Array {
  const clamp = (v: number): number => (v < 0 ? 0 : v > raw.length ? raw.length : v | 0);
  if (tokens.spans !== undefined) {
    const spans = tokens.spans;
    if (spans instanceof Int32Array || spans instanceof Uint32Array) {
      const out = new Int32Array(spans.length & ~1);
      for (let i = 0; i < out.length; i++) out[i] = clamp(spans[i]!);
      return out;
    }
    const out = new Int32Array(spans.length * 2);
    for (let t = 0; t < spans.length; t++) {
      const span = spans[t]!;
      out[2 * t] = clamp(span[0]);
      out[2 * t + 1] = clamp(span[1]);
    }
    return out;
  }
  const texts = tokens.texts ?? [];
  const out = new Int32Array(texts.length * 2);
  let at = 0;
  for (let t = 0; t < texts.length; t++) {
    out[2 * t] = clamp(at);
    at += texts[t]!.length;
    out[2 * t + 1] = clamp(at);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// post_process_generation

function readOptions(options: PostProcessOptions): { coordinates: CoordinateMode; format: ResultFormat } {
  const coordinates = options.coordinates ?? "float";
  if (coordinates !== "float" && coordinates !== "int" && coordinates !== "float32") {
    throw new FlorenceError("INVALID_ARGUMENT", `postprocess: coordinates must be "float", "int" or "float32", got ${describeValue(coordinates)}`, {
      fix: 'use coordinates: "float" (bin centres) or "int" (HF-native)',
    });
  }
  const format = options.format ?? "hf";
  if (format !== "hf" && format !== "nvidia") {
    throw new FlorenceError("INVALID_ARGUMENT", `postprocess: format must be "hf" or "nvidia", got ${describeValue(format)}`, {
      fix: 'use format: "hf" or "nvidia"',
    });
  }
  return { coordinates, format };
}

function checkImageSize(imageSize: ImageSizeLike): void {
  const ok = imageSize !== null && typeof imageSize === "object" &&
    Number.isFinite(imageSize.width) && Number.isFinite(imageSize.height) && imageSize.width >= 0 && imageSize.height >= 0;
  if (!ok) {
    throw new FlorenceError("INVALID_ARGUMENT", `postprocess: image size must be finite non-negative {width, height}, got ${describeValue(imageSize)}`, {
      fix: "pass the original image's { width, height } in pixels",
    });
  }
}


// HF: config.get("phrase_grounding", {}).get("banned_grounding_tokens", []); with no config, Microsoft's list.
function bannedPhrases(options: PostProcessOptions): ReadonlySet<string> {
  if (options.bannedGroundingPhrases !== undefined) return new Set(options.bannedGroundingPhrases);
  const config = options.postProcessorConfig;
  if (config === undefined) return DEFAULT_BANNED_SET;
  const grounding = config["phrase_grounding"];
  const list = isRecord(grounding) ? grounding["banned_grounding_tokens"] : undefined;
  return new Set(Array.isArray(list) ? list.filter((v): v is string => typeof v === "string") : []);
}

// HF reads config["ocr"].get("AREA_THRESHOLD", 0.0) — upper case; the lower-case keys HF writes are ignored by HF too.
function ocrAreaThreshold(options: PostProcessOptions): number {
  const ocr = options.postProcessorConfig?.["ocr"];
  const value = isRecord(ocr) ? ocr["AREA_THRESHOLD"] : undefined;
  return typeof value === "number" && Number.isFinite(value) ? value : 0;
}

/** The image size a task with coordinates needs; text tasks take none, like HF's `image_size=None`. */
function requireImageSize(imageSize: ImageSizeLike | undefined, task: string): ImageSizeLike {
  if (imageSize === undefined) {
    throw new FlorenceError("INVALID_ARGUMENT", `postprocess: ${task} gives coordinates, so it needs the original image's size`, {
      fix: "pass the image's { width, height } in pixels (only text tasks such as <CAPTION> and <OCR> work without it)",
    });
  }
  return imageSize;
}

/**
 * HF `Florence2Processor.post_process_generation(text, task=task, image_size=(width, height))`. Text tasks need no
 * image size (HF returns the text with image_size=None); tasks with coordinates do.
 * Never throws for any `text`; an unknown task is FlorenceError UNKNOWN_TASK, bad options INVALID_ARGUMENT.
 */
export function postProcessGeneration(text: string, task: string, imageSize?: ImageSizeLike, options: PostProcessOptions = {}): PostProcessResult {
  const spec = taskSpec(task);
  const { coordinates, format } = readOptions(options);
  if (imageSize !== undefined) checkImageSize(imageSize);
  const raw = typeof text === "string" ? text : String(text ?? "");
  const wantScores = options.scores ?? options.tokens !== undefined;
  if (wantScores && options.tokens === undefined) {
    throw new FlorenceError("INVALID_ARGUMENT", `postprocess: scores were asked for ${task} but no token log-probabilities were given`, {
      fix: "pass options.tokens = { spans or texts, logprobs } of the generated sequence, or leave scores off",
    });
  }
  const tokens = wantScores ? options.tokens! : undefined;
  const token = spec.token as TaskToken;
  const parseType = TASKS[token].parseType as ParseType;

  if (parseType === "pure_text") {
    const cleaned = tokens ? removeTokensWithOffsets(raw, PURE_TEXT_REMOVED) : null;
    const body = cleaned ? cleaned.text : removeTokensFast(raw, PURE_TEXT_REMOVED);
    const [a, b] = pyStripBounds(body, 0, body.length);
    const answer = body.slice(a, b);
    let score: Score | undefined;
    if (tokens && cleaned) {
      const scorer = makeTokenScorer(raw, cleaned, tokens);
      score = b > a ? scorer.score([a, b]) : scorer.score([0, body.length]);
      if (score === null) score = wholeSequenceScore(tokens);
    }
    if (format === "nvidia") {
      const nvidia: NvidiaAnswer = { content: answer, entities: emptyEntities(score !== undefined) };
      if (score !== undefined) nvidia.score = score;
      return { [token]: nvidia };
    }
    return score === undefined ? { [token]: answer } : { [token]: answer, score };
  }

  const size = requireImageSize(imageSize, token);
  const dq = dequantizer(coordinates, size);
  const cleaned = tokens ? cleanGeneratedText(raw) : { text: removeTokensFast(raw, PARSER_REMOVED), offsets: new Int32Array(0) };
  const s = cleaned.text;
  const scorer = tokens ? makeTokenScorer(raw, cleaned, tokens) : null;
  const content = format === "nvidia" ? hfPureText(raw) : "";

  switch (parseType) {
    case "description_with_bboxes":
    case "bboxes":
    case "phrase_grounding": {
      const grounded = parseBoxes(s, parseType === "bboxes", parseType === "phrase_grounding" ? bannedPhrases(options) : null);
      const answer: BoxesAnswer = { bboxes: [], labels: [] };
      const scores: Score[] = [];
      for (const inst of grounded) {
        for (const box of inst.boxes) {
          answer.bboxes.push(toCoordinates(box.bins, dq));
          answer.labels.push(inst.label);
          if (scorer) scores.push(scorer.score(box.ranges));
        }
      }
      if (scorer) answer.scores = scores;
      if (format === "nvidia") return { [token]: nvidiaAnswer(content, answer.bboxes, [], answer.labels, [], scorer ? scores : undefined) };
      return { [token]: answer };
    }
    case "ocr": {
      const instances = parseOcr(s, ocrAreaThreshold(options), size);
      const answer: OcrAnswer = { quad_boxes: instances.map((i) => toCoordinates(i.bins, dq)), labels: instances.map((i) => i.label) };
      if (scorer) answer.scores = instances.map((i) => scorer.score(i.ranges));
      if (format === "nvidia") return { [token]: nvidiaAnswer(content, [], answer.quad_boxes, answer.labels, [], answer.scores) };
      return { [token]: answer };
    }
    case "polygons":
    case "description_with_polygons": {
      const instances = parsePolygons(s, parseType === "polygons");
      const answer: PolygonsAnswer = {
        polygons: instances.map((i) => i.polygons.map((p) => toCoordinates(p, dq))),
        labels: instances.map((i) => i.label),
      };
      if (scorer) answer.scores = instances.map((i) => scorer.score(i.ranges));
      if (format === "nvidia") return { [token]: nvidiaAnswer(content, [], [], answer.labels, answer.polygons, answer.scores) };
      return { [token]: answer };
    }
    case "description_with_bboxes_or_polygons": {
      const answer: BoxesOrPolygonsAnswer = { bboxes: [], bboxes_labels: [], polygons: [], polygons_labels: [] };
      const boxScores: Score[] = [];
      const polygonScores: Score[] = [];
      // HF looks for "<poly>" in the text before removing special tokens
      if (raw.includes("<poly>")) {
        for (const inst of parsePolygons(s, false)) {
          answer.polygons.push(inst.polygons.map((p) => toCoordinates(p, dq)));
          answer.polygons_labels.push(inst.label);
          if (scorer) polygonScores.push(scorer.score(inst.ranges));
        }
      } else {
        for (const inst of parseBoxes(s, false, null)) {
          for (const box of inst.boxes) {
            answer.bboxes.push(toCoordinates(box.bins, dq));
            answer.bboxes_labels.push(inst.label);
            if (scorer) boxScores.push(scorer.score(box.ranges));
          }
        }
      }
      if (scorer) {
        answer.bboxes_scores = boxScores;
        answer.polygons_scores = polygonScores;
      }
      if (format === "nvidia") {
        return {
          [token]: nvidiaAnswer(content, answer.bboxes, [], [...answer.bboxes_labels, ...answer.polygons_labels], answer.polygons,
            scorer ? [...boxScores, ...polygonScores] : undefined),
        };
      }
      return { [token]: answer };
    }
    default:
      return { [token]: hfPureText(raw) };
  }
}

/** HF's pure-text answer: `text.replace("<s>", "").replace("</s>", "").strip()`. */
function hfPureText(raw: string): string {
  const body = removeTokensFast(raw, PURE_TEXT_REMOVED);
  const [a, b] = pyStripBounds(body, 0, body.length);
  return body.slice(a, b);
}

function wholeSequenceScore(tokens: GeneratedTokens): Score {
  const lp = tokens.logprobs;
  if (lp.length === 0) return null;
  let sum = 0;
  for (let i = 0; i < lp.length; i++) sum += lp[i]!;
  return Math.exp(sum / lp.length);
}

function emptyEntities(withScores: boolean): NvidiaEntities {
  const entities: NvidiaEntities = { bboxes: [], quad_boxes: [], labels: [], polygons: [] };
  if (withScores) entities.scores = [];
  return entities;
}

function nvidiaAnswer(
  content: string,
  bboxes: number[][],
  quadBoxes: number[][],
  labels: string[],
  polygons: number[][][],
  scores: Score[] | undefined,
): NvidiaAnswer {
  const entities: NvidiaEntities = { bboxes, quad_boxes: quadBoxes, labels, polygons };
  if (scores !== undefined) entities.scores = scores;
  return { content, entities };
}
