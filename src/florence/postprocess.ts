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
import { type ImageSizeLike, type ParseType, type TaskToken, TASKS, pyIsSpace, pyStripBounds, taskSpec } from "./tasks.ts";

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
// HF's special-token removal with an offset map

export interface CleanedText {
  text: string;
  /** offsets[i] = index in the raw text of cleaned char i; offsets[text.length] = raw length. */
  offsets: Int32Array;
}

function removeAllWithOffsets(text: string, offsets: Int32Array | null, needle: string, rawLength: number): CleanedText {
  let at = text.indexOf(needle);
  if (at < 0) return { text, offsets: offsets ?? identityOffsets(rawLength) };
  const parts: string[] = [];
  const kept: number[] = [];
  let from = 0;
  while (at >= 0) {
    parts.push(text.slice(from, at));
    kept.push(from, at);
    from = at + needle.length;
    at = text.indexOf(needle, from);
  }
  parts.push(text.slice(from));
  kept.push(from, text.length);
  const out = parts.join("");
  const map = new Int32Array(out.length + 1);
  let j = 0;
  for (let k = 0; k < kept.length; k += 2) {
    for (let i = kept[k]!; i < kept[k + 1]!; i++) map[j++] = offsets ? offsets[i]! : i;
  }
  map[out.length] = rawLength;
  return { text: out, offsets: map };
}

function identityOffsets(length: number): Int32Array {
  const map = new Int32Array(length + 1);
  for (let i = 0; i <= length; i++) map[i] = i;
  return map;
}

/** Python `text.replace(a, "").replace(b, "")…` in order (each pass can expose new matches), keeping offsets. */
export function removeTokensWithOffsets(raw: string, tokens: readonly string[]): CleanedText {
  let text = raw;
  let offsets: Int32Array | null = null;
  for (const token of tokens) {
    const next = removeAllWithOffsets(text, offsets, token, raw.length);
    text = next.text;
    offsets = next.offsets;
  }
  return { text, offsets: offsets ?? identityOffsets(raw.length) };
}

/** What HF's parsers see: `text.replace("<s>", "").replace("</s>", "").replace("<pad>", "")`, with offsets. */
export function cleanGeneratedText(raw: string): CleanedText {
  return removeTokensWithOffsets(raw, PARSER_REMOVED);
}

const PARSER_REMOVED = ["<s>", "</s>", "<pad>"] as const;
const PURE_TEXT_REMOVED = ["<s>", "</s>"] as const;

function removeTokensFast(raw: string, tokens: readonly string[]): string {
  let text = raw;
  for (const token of tokens) if (text.includes(token)) text = text.split(token).join("");
  return text;
}

// ---------------------------------------------------------------------------------------------------------------
// Python `re` building blocks on UTF-16 strings

const LT = 0x3c; // <
const GT = 0x3e; // >
const NL = 0x0a;

// First code point of every run of ten decimal digits (category Nd) in Unicode 15.0, Python 3.12's `\d`.
const DECIMAL_ZEROS = [
  0x30, 0x660, 0x6f0, 0x7c0, 0x966, 0x9e6, 0xa66, 0xae6, 0xb66, 0xbe6, 0xc66, 0xce6, 0xd66, 0xde6, 0xe50, 0xed0, 0xf20,
  0x1040, 0x1090, 0x17e0, 0x1810, 0x1946, 0x19d0, 0x1a80, 0x1a90, 0x1b50, 0x1bb0, 0x1c40, 0x1c50, 0xa620, 0xa8d0, 0xa900,
  0xa9d0, 0xa9f0, 0xaa50, 0xabf0, 0xff10, 0x104a0, 0x10d30, 0x11066, 0x110f0, 0x11136, 0x111d0, 0x112f0, 0x11450, 0x114d0,
  0x11650, 0x116c0, 0x11730, 0x118e0, 0x11950, 0x11c50, 0x11d50, 0x11da0, 0x11f50, 0x16a60, 0x16ac0, 0x16b50, 0x1d7ce,
  0x1d7d8, 0x1d7e2, 0x1d7ec, 0x1d7f6, 0x1e140, 0x1e2f0, 0x1e4f0, 0x1e950, 0x1fbf0,
];

/** Python `unicodedata.decimal(chr(cp))`, or -1 when `\d` does not match the code point. */
function decimalValue(cp: number): number {
  if (cp >= 0x30 && cp <= 0x39) return cp - 0x30;
  if (cp < 0x660) return -1;
  let lo = 0;
  let hi = DECIMAL_ZEROS.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (DECIMAL_ZEROS[mid]! <= cp) lo = mid;
    else hi = mid - 1;
  }
  const d = cp - DECIMAL_ZEROS[lo]!;
  return d >= 0 && d < 10 ? d : -1;
}

function startsWithAt(s: string, token: string, at: number, end: number): boolean {
  return at + token.length <= end && s.startsWith(token, at);
}

/** End of `<loc_\d+>` at `at` (within `end`), or -1. */
function matchLoc(s: string, at: number, end: number): number {
  if (!startsWithAt(s, "<loc_", at, end)) return -1;
  let j = at + 5;
  const digitsStart = j;
  while (j < end) {
    const cp = s.codePointAt(j)!;
    if (decimalValue(cp) < 0) break;
    j += cp > 0xffff ? 2 : 1;
  }
  if (j === digitsStart || j >= end || s.charCodeAt(j) !== GT) return -1;
  return j + 1;
}

/** Python `int()` of the digits of the `<loc_N>` token at `at` (a number; Infinity past ~308 digits). */
function locValue(s: string, at: number): number {
  let value = 0;
  let j = at + 5;
  for (;;) {
    const cp = s.codePointAt(j)!;
    const d = decimalValue(cp);
    if (d < 0) return value;
    value = value * 10 + d;
    j += cp > 0xffff ? 2 : 1;
  }
}

/** End of one alternative of `<loc_\d+>|<sep>|<poly>|</poly>` at `at`, or -1. */
function matchPolygonItem(s: string, at: number, end: number): number {
  if (s.charCodeAt(at) !== LT) return -1;
  const loc = matchLoc(s, at, end);
  if (loc >= 0) return loc;
  if (startsWithAt(s, "<sep>", at, end)) return at + 5;
  if (startsWithAt(s, "<poly>", at, end)) return at + 6;
  if (startsWithAt(s, "</poly>", at, end)) return at + 7;
  return -1;
}

type ItemMatcher = (s: string, at: number, end: number) => number;

/**
 * `re.findall` of `[^<]+(?:ITEM){4,}` (withText) or `(?:ITEM){4,}` over s, as flat [start, end) pairs.
 * With text: a match starting at p must take the whole run of non-'<' chars (giving any back leaves a non-'<'
 * where ITEM needs '<'), so every start inside one run fails alike and the scan jumps to the run's end.
 */
function findItemPhrases(s: string, withText: boolean, matchItem: ItemMatcher): number[] {
  const out: number[] = [];
  const n = s.length;
  /** The end of the run of items starting at `at` when it has four or more, else -1. */
  const itemsEnd = (at: number): number => {
    let e = at;
    let count = 0;
    for (let next = matchItem(s, e, n); next >= 0; next = matchItem(s, e, n)) {
      e = next;
      count++;
    }
    return count >= 4 ? e : -1;
  };
  let p = 0;
  while (p < n) {
    if (withText) {
      if (s.charCodeAt(p) === LT) {
        p++;
        continue;
      }
      const r = s.indexOf("<", p);
      if (r < 0) break;
      const e = itemsEnd(r);
      if (e >= 0) {
        out.push(p, e);
        p = e;
      } else {
        p = r;
      }
    } else {
      if (s.charCodeAt(p) !== LT) {
        p = s.indexOf("<", p);
        if (p < 0) break;
        continue;
      }
      const e = itemsEnd(p);
      if (e >= 0) {
        out.push(p, e);
        p = e;
      } else {
        p++;
      }
    }
  }
  return out;
}

const PHRASE_STOPS = ["<od>", "</od>", "<box>", "</box>", "<bbox>", "</bbox>", "<loc_"] as const;
const POLYGON_PHRASE_STOPS = [...PHRASE_STOPS, "<poly>"] as const;

/**
 * `re.search(r"^\s*(.*?)(?=STOP|…)", s[start:end])`: the end of group 0, or -1. `^` anchors at the start; `\s*`
 * takes all leading whitespace (giving some back cannot help: a stop begins with '<'); `.*?` then runs to the
 * first stop, failing at a "\n".
 */
function searchLeadingPhrase(s: string, start: number, end: number, stops: readonly string[]): number {
  let q = start;
  while (q < end && pyIsSpace(s.charCodeAt(q))) q++;
  for (; q < end; q++) {
    const c = s.charCodeAt(q);
    if (c === LT) {
      for (const stop of stops) if (startsWithAt(s, stop, q, end)) return q;
    }
    if (c === NL) return -1;
  }
  return -1;
}

/** Python `s.encode("ascii", "ignore").decode("ascii")`. */
function asciiOnly(s: string): string {
  let ascii = true;
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) > 0x7f) {
      ascii = false;
      break;
    }
  }
  if (ascii) return s;
  let out = "";
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) <= 0x7f) out += s[i];
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Parsers: instances hold bins (HF's ints before dequantisation) and the cleaned-text ranges they matched

interface BoxInstance {
  label: string;
  bins: number[];
  /** Flat [start, end) pairs in the cleaned text: the label, then its <loc_N> tokens. */
  ranges: number[];
}
interface GroundedInstance {
  label: string;
  boxes: BoxInstance[];
}
interface PolygonInstance {
  label: string;
  polygons: number[][];
  ranges: number[];
}

/** The 4-loc boxes of `re.finditer(r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>", s[start:end])`. */
function findBoxes(s: string, start: number, end: number, label: string, labelStart: number, labelEnd: number): BoxInstance[] {
  const boxes: BoxInstance[] = [];
  let i = start;
  while (i < end) {
    i = s.indexOf("<", i);
    if (i < 0 || i >= end) break;
    const e1 = matchLoc(s, i, end);
    const e2 = e1 < 0 ? -1 : matchLoc(s, e1, end);
    const e3 = e2 < 0 ? -1 : matchLoc(s, e2, end);
    const e4 = e3 < 0 ? -1 : matchLoc(s, e3, end);
    if (e4 < 0) {
      i++;
      continue;
    }
    const ranges = labelEnd > labelStart ? [labelStart, labelEnd, i, e4] : [i, e4];
    boxes.push({ label, bins: [locValue(s, i), locValue(s, e1), locValue(s, e2), locValue(s, e3)], ranges });
    i = e4;
  }
  return boxes;
}

/** HF `parse_description_with_bboxes_from_text_and_spans` (and, with `banned`, the phrase-grounding parser). */
function parseBoxes(s: string, allowEmptyPhrase: boolean, banned: ReadonlySet<string> | null): GroundedInstance[] {
  const phrases = findItemPhrases(s, !allowEmptyPhrase, matchLoc);
  const instances: GroundedInstance[] = [];
  for (let k = 0; k < phrases.length; k += 2) {
    const start = phrases[k]!;
    const end = phrases[k + 1]!;
    // `.replace("<ground>", "", 1).replace("<obj>", "", 1)` is a no-op: the phrase's only '<'s open <loc_N>s
    const q = searchLeadingPhrase(s, start, end, PHRASE_STOPS);
    if (q < 0) continue;
    const [ls, le] = pyStripBounds(s, start, q);
    const phrase = s.slice(ls, le);
    if (banned !== null && banned.has(phrase)) continue;
    const boxes = findBoxes(s, start, end, asciiOnly(phrase), ls, le);
    if (boxes.length === 0) continue;
    instances.push({ label: boxes[0]!.label, boxes });
  }
  return instances;
}

interface OcrInstance {
  label: string;
  bins: number[];
  ranges: number[];
}

/**
 * HF `parse_ocr_from_text_and_spans` with its default pattern `(.+?)<loc_(\d+)>{×8}` under `re.findall`: from p
 * the lazy `.+?` takes at least one char and stops at the first '<' that starts eight <loc_N>; a "\n" ends the
 * attempt, and every start before that "\n" fails alike.
 */
function parseOcr(s: string, areaThreshold: number, size: ImageSizeLike): OcrInstance[] {
  const out: OcrInstance[] = [];
  const n = s.length;
  const ends = new Int32Array(9);
  let p = 0;
  while (p < n) {
    if (s.charCodeAt(p) === NL) {
      p++;
      continue;
    }
    let q = p + 1;
    let found = false;
    for (; q < n; q++) {
      const c = s.charCodeAt(q);
      if (c === LT) {
        ends[0] = q;
        let k = 0;
        while (k < 8) {
          const e = matchLoc(s, ends[k]!, n);
          if (e < 0) break;
          ends[++k] = e;
        }
        if (k === 8) {
          found = true;
          break;
        }
      }
      if (c === NL) break;
    }
    if (!found) {
      p = q + 1;
      continue;
    }
    const bins: number[] = [];
    for (let k = 0; k < 8; k++) bins.push(locValue(s, ends[k]!));
    const end = ends[8]!;
    if (areaThreshold > 0 && !passesAreaThreshold(bins, size, areaThreshold)) {
      p = end;
      continue;
    }
    const [ls, le] = pyStripBounds(s, p, q);
    out.push({ label: s.slice(ls, le), bins, ranges: le > ls ? [ls, le, q, end] : [q, end] });
    p = end;
  }
  return out;
}

// HF's area test: its "Shoelace" sum stops at range(4 - 1), leaving out the closing term; uses its int coordinates.
function passesAreaThreshold(bins: number[], size: ImageSizeLike, threshold: number): boolean {
  const x: number[] = [];
  const y: number[] = [];
  const perW = Math.fround(size.width / 1000);
  const perH = Math.fround(size.height / 1000);
  for (let k = 0; k < 8; k += 2) {
    x.push(hfIntCoordinate(bins[k]!, perW));
    y.push(hfIntCoordinate(bins[k + 1]!, perH));
  }
  let sum = 0;
  for (let i = 0; i < 3; i++) sum += x[i]! * y[i + 1]! - x[i + 1]! * y[i]!;
  return !(0.5 * Math.abs(sum) < size.width * size.height * threshold);
}

/** HF `parse_description_with_polygons_from_text_and_spans` (with_box_at_start=False, as HF always calls it). */
function parsePolygons(s: string, allowEmptyPhrase: boolean): PolygonInstance[] {
  const phrases = findItemPhrases(s, !allowEmptyPhrase, matchPolygonItem);
  const out: PolygonInstance[] = [];
  for (let k = 0; k < phrases.length; k += 2) {
    const start = phrases[k]!;
    const end = phrases[k + 1]!;
    // re.sub(r"^<loc_\d+>", "", phrase_text, count=1)
    const firstLoc = matchLoc(s, start, end);
    const stripped = firstLoc >= 0 ? firstLoc : start;
    if (stripped === end && !allowEmptyPhrase) continue;
    const q = searchLeadingPhrase(s, stripped, end, POLYGON_PHRASE_STOPS);
    if (q < 0) continue;
    const [ls, le] = pyStripBounds(s, stripped, q);
    const label = s.slice(ls, le);

    const pieces: number[] = [];
    const phraseHasPoly = indexWithin(s, "<poly>", start, end) >= 0 && indexWithin(s, "</poly>", start, end) >= 0;
    if (phraseHasPoly) findPolyInstances(s, start, end, pieces);
    else pieces.push(start, end);

    for (let j = 0; j < pieces.length; j += 2) {
      const polygons: number[][] = [];
      const ranges: number[] = le > ls ? [ls, le] : [];
      findPolygonRuns(s, pieces[j]!, pieces[j + 1]!, polygons, ranges);
      if (polygons.length === 0) continue;
      out.push({ label, polygons, ranges });
    }
  }
  return out;
}

function indexWithin(s: string, token: string, start: number, end: number): number {
  const at = s.indexOf(token, start);
  return at >= 0 && at + token.length <= end ? at : -1;
}

/** Groups of `re.finditer(r"<poly>(.*?)</poly>", s[start:end])` as flat pairs. */
function findPolyInstances(s: string, start: number, end: number, out: number[]): void {
  let i = start;
  for (;;) {
    const open = indexWithin(s, "<poly>", i, end);
    if (open < 0) return;
    const close = indexWithin(s, "</poly>", open + 6, end);
    if (close < 0) return; // no later <poly> can close either
    const newline = s.indexOf("\n", open + 6);
    if (newline >= 0 && newline < close) {
      i = open + 1;
      continue;
    }
    out.push(open + 6, close);
    i = close + 7;
  }
}

/**
 * `re.finditer(r"((?:<loc_\d+>)+)(?:<sep>|$)", s[start:end])`: a maximal run of <loc_N> followed by <sep> or the
 * end (or a final "\n"). A run followed by anything else fails from every start inside it, so the scan skips it.
 * Each match's bins, cut to an even count, become one polygon.
 */
function findPolygonRuns(s: string, start: number, end: number, polygons: number[][], ranges: number[]): void {
  let i = start;
  while (i < end) {
    i = s.indexOf("<", i);
    if (i < 0 || i >= end) return;
    let e = i;
    for (let next = matchLoc(s, e, end); next >= 0; next = matchLoc(s, e, end)) e = next;
    if (e === i) {
      i++;
      continue;
    }
    let after: number;
    if (startsWithAt(s, "<sep>", e, end)) after = e + 5;
    else if (e === end || (e === end - 1 && s.charCodeAt(e) === NL)) after = e;
    else {
      i = e;
      continue;
    }
    const bins: number[] = [];
    for (let t = i; t < e; t = matchLoc(s, t, e)) bins.push(locValue(s, t));
    if (bins.length % 2 === 1) bins.pop();
    polygons.push(bins);
    ranges.push(i, e);
    i = after;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Coordinates

/** torch: int64 bin → float32, + 0.5, × float32(W / 1000), `.int()` (truncation; x86 gives INT_MIN out of range). */
function hfIntCoordinate(bin: number, perBin32: number): number {
  const v = Math.fround(Math.fround(Math.fround(bin) + 0.5) * perBin32);
  return v > -2147483649 && v < 2147483648 ? Math.trunc(v) : -2147483648;
}

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

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
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
