/**
 * Florence-2's answer parsers, as HF's Florence2PostProcessor runs them with Python `re`: boxes with their phrases,
 * OCR quad boxes (with HF's area threshold), polygons. Each finds instances as bins (HF's ints before dequantisation)
 * and the cleaned-text ranges it matched (for scores); postprocess.ts turns them into coordinates and answers.
 */
import { asciiOnly, findItemPhrases, locValue, LT, matchLoc, matchPolygonItem, NL, PHRASE_STOPS, POLYGON_PHRASE_STOPS, searchLeadingPhrase, startsWithAt } from "./python_text.ts";
import { type ImageSizeLike, pyStripBounds } from "./tasks.ts";

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
export function parseBoxes(s: string, allowEmptyPhrase: boolean, banned: ReadonlySet<string> | null): GroundedInstance[] {
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
export function parseOcr(s: string, areaThreshold: number, size: ImageSizeLike): OcrInstance[] {
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
export function parsePolygons(s: string, allowEmptyPhrase: boolean): PolygonInstance[] {
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

/** torch: int64 bin → float32, + 0.5, × float32(W / 1000), `.int()` (truncation; x86 gives INT_MIN out of range). */
export function hfIntCoordinate(bin: number, perBin32: number): number {
  const v = Math.fround(Math.fround(Math.fround(bin) + 0.5) * perBin32);
  return v > -2147483649 && v < 2147483648 ? Math.trunc(v) : -2147483648;
}
