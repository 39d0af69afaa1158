/**
 * Text as HF's post-processor sees it: its special-token removal (with an offset map back to the raw text, for
 * scores) and the Python `re` building blocks the parsers are made of (Unicode `\d`, <loc_N> tokens, phrase search)
 * as linear scanners over UTF-16 strings.
 */
import { pyIsSpace } from "./tasks.ts";

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

export const PARSER_REMOVED = ["<s>", "</s>", "<pad>"] as const;
export const PURE_TEXT_REMOVED = ["<s>", "</s>"] as const;

export function removeTokensFast(raw: string, tokens: readonly string[]): string {
  let text = raw;
  for (const token of tokens) if (text.includes(token)) text = text.split(token).join("");
  return text;
}

// ---------------------------------------------------------------------------------------------------------------
// Python `re` building blocks on UTF-16 strings

export const LT = 0x3c; // <
const GT = 0x3e; // >
export const NL = 0x0a;

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

export function startsWithAt(s: string, token: string, at: number, end: number): boolean {
  return at + token.length <= end && s.startsWith(token, at);
}

/** End of `<loc_\d+>` at `at` (within `end`), or -1. */
export function matchLoc(s: string, at: number, end: number): number {
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
export function locValue(s: string, at: number): number {
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
export function matchPolygonItem(s: string, at: number, end: number): number {
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
export function findItemPhrases(s: string, withText: boolean, matchItem: ItemMatcher): number[] {
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

export const PHRASE_STOPS = ["<od>", "</od>", "<box>", "</box>", "<bbox>", "</bbox>", "<loc_"] as const;
export const POLYGON_PHRASE_STOPS = [...PHRASE_STOPS, "<poly>"] as const;

/**
 * `re.search(r"^\s*(.*?)(?=STOP|…)", s[start:end])`: the end of group 0, or -1. `^` anchors at the start; `\s*`
 * takes all leading whitespace (giving some back cannot help: a stop begins with '<'); `.*?` then runs to the
 * first stop, failing at a "\n".
 */
export function searchLeadingPhrase(s: string, start: number, end: number, stops: readonly string[]): number {
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
export function asciiOnly(s: string): string {
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
