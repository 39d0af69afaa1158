/**
 * Byte-level BPE building blocks as the Rust `tokenizers` library has them: the GPT-2 pre-tokenizer pattern with
 * Oniguruma's whitespace, the byte ↔ character table, UTF-8 writing, HF's clean_up_tokenization and the merge queue
 * (a binary heap ordered by merge rank, then position).
 */

// Whitespace as Oniguruma's Unicode `\s` (what the tokenizers library's GPT-2 regex uses): it includes U+0085 and
// excludes U+FEFF, unlike JavaScript's `\s`.
const WS = "\\t\\n\\v\\f\\r\\u0085\\p{Zs}\\u2028\\u2029";
export const BYTE_LEVEL_PATTERN = `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|[${WS}]+(?![^${WS}])|[${WS}]+`;

// Rust regex `\w` (Unicode), which decides where a single_word added token may match.
export const WORD_CHAR_AT_END = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]$/u;
export const WORD_CHAR_AT_START = /^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]/u;

/** Unicode White_Space (Rust regex `\s`), which lstrip/rstrip added tokens absorb. */
export function isWhiteSpace(code: number): boolean {
  return (
    (code >= 0x09 && code <= 0x0d) || code === 0x20 || code === 0x85 || code === 0xa0 || code === 0x1680 ||
    (code >= 0x2000 && code <= 0x200a) || code === 0x2028 || code === 0x2029 || code === 0x202f || code === 0x205f || code === 0x3000
  );
}

/** The GPT-2 byte → printable character table: byte b is written as String.fromCharCode(BYTE_TO_CHAR[b]). */
export function byteToCharTable(): Uint16Array {
  const table = new Uint16Array(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let shifted = 0;
  for (let b = 0; b < 256; b++) table[b] = printable(b) ? b : 256 + shifted++;
  return table;
}


/** Appends the UTF-8 bytes of `text` (lone surrogates as U+FFFD, as TextEncoder does) to `out` from `at`; returns the new end. */
export function writeUtf8(text: string, out: Uint8Array, at: number): number {
  let n = at;
  for (let i = 0; i < text.length; i++) {
    let cp = text.charCodeAt(i);
    if (cp >= 0xd800 && cp <= 0xdfff) {
      const low = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
      if (cp <= 0xdbff && low >= 0xdc00 && low <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        i++;
      } else {
        cp = 0xfffd;
      }
    }
    if (cp < 0x80) {
      out[n++] = cp;
    } else if (cp < 0x800) {
      out[n++] = 0xc0 | (cp >> 6);
      out[n++] = 0x80 | (cp & 0x3f);
    } else if (cp < 0x10000) {
      out[n++] = 0xe0 | (cp >> 12);
      out[n++] = 0x80 | ((cp >> 6) & 0x3f);
      out[n++] = 0x80 | (cp & 0x3f);
    } else {
      out[n++] = 0xf0 | (cp >> 18);
      out[n++] = 0x80 | ((cp >> 12) & 0x3f);
      out[n++] = 0x80 | ((cp >> 6) & 0x3f);
      out[n++] = 0x80 | (cp & 0x3f);
    }
  }
  return n;
}

/** What transformers' `clean_up_tokenization` does to decoded text. */
export function cleanUpTokenization(text: string): string {
  return text
    .replaceAll(" .", ".")
    .replaceAll(" ?", "?")
    .replaceAll(" !", "!")
    .replaceAll(" ,", ",")
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

/** A min-heap of pending merges ordered by (rank, position), as Rust's `Word::merge_all` pops them. */
export class MergeQueue {
  #rank: number[] = [];
  #pos: number[] = [];
  #newId: number[] = [];

  get size(): number {
    return this.#rank.length;
  }

  #less(a: number, b: number): boolean {
    const ra = this.#rank[a]!;
    const rb = this.#rank[b]!;
    return ra < rb || (ra === rb && this.#pos[a]! < this.#pos[b]!);
  }

  #swap(a: number, b: number): void {
    const r = this.#rank[a]!;
    this.#rank[a] = this.#rank[b]!;
    this.#rank[b] = r;
    const p = this.#pos[a]!;
    this.#pos[a] = this.#pos[b]!;
    this.#pos[b] = p;
    const d = this.#newId[a]!;
    this.#newId[a] = this.#newId[b]!;
    this.#newId[b] = d;
  }

  push(rank: number, pos: number, newId: number): void {
    this.#rank.push(rank);
    this.#pos.push(pos);
    this.#newId.push(newId);
    let i = this.#rank.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#less(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  /** Removes the smallest entry; its fields are left in `top`. */
  pop(top: { pos: number; newId: number }): void {
    top.pos = this.#pos[0]!;
    top.newId = this.#newId[0]!;
    const last = this.#rank.length - 1;
    this.#swap(0, last);
    this.#rank.pop();
    this.#pos.pop();
    this.#newId.pop();
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < last && this.#less(left, smallest)) smallest = left;
      if (right < last && this.#less(right, smallest)) smallest = right;
      if (smallest === i) break;
      this.#swap(i, smallest);
      i = smallest;
    }
  }
}
