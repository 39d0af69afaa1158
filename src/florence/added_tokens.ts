/**
 * Splitting added tokens out of a text before BPE, as the Rust `tokenizers` library's `AddedVocabulary` does:
 * a trie of the added tokens matched leftmost-longest, first on raw text, then for "normalized" tokens (Florence-2
 * has no normalizer), with single_word/lstrip/rstrip applied.
 */
import { WORD_CHAR_AT_END, WORD_CHAR_AT_START, isWhiteSpace } from "./byte_level.ts";
import type { AddedToken } from "./tokenizer_files.ts";

interface TrieNode {
  next: Map<number, TrieNode>;
  /** Id of the added token ending here, or -1. */
  id: number;
}

/** A piece of the input: an added token (id >= 0) or text still to pre-tokenize (id = -1). */
export interface Piece {
  text: string;
  id: number;
}

export class AddedTokenSplitter {
  readonly #addedById: ReadonlyMap<number, AddedToken>;
  readonly #specialContents: ReadonlySet<string>;
  /** split_special_tokens: special tokens are left in the text, to be encoded as text. */
  readonly #splitSpecialTokens: boolean;
  readonly #rawTrie: TrieNode | undefined;
  readonly #normalizedTrie: TrieNode | undefined;

  constructor(addedById: ReadonlyMap<number, AddedToken>, specialContents: ReadonlySet<string>, splitSpecialTokens: boolean) {
    this.#addedById = addedById;
    this.#specialContents = specialContents;
    this.#splitSpecialTokens = splitSpecialTokens;
    this.#rawTrie = buildTrie(addedById, false);
    this.#normalizedTrie = buildTrie(addedById, true);
  }

  /** Splits out added tokens: first those matched on raw text, then the "normalized" ones (there is no normalizer). */
  split(text: string): Piece[] {
    const first = this.#findAddedTokens(text, this.#rawTrie);
    if (this.#normalizedTrie === undefined) return first;
    const pieces: Piece[] = [];
    for (const piece of first) {
      if (piece.id >= 0) pieces.push(piece);
      else pieces.push(...this.#findAddedTokens(piece.text, this.#normalizedTrie));
    }
    return pieces;
  }

  /** Rust `AddedVocabulary::find_matches`: leftmost-longest matches with single_word/lstrip/rstrip applied; empty pieces dropped. */
  #findAddedTokens(sentence: string, trie: TrieNode | undefined): Piece[] {
    if (sentence.length === 0) return [];
    if (trie === undefined) return [{ text: sentence, id: -1 }];
    const pieces: Piece[] = [];
    let startOffset = 0;
    let i = 0;
    while (i < sentence.length) {
      let node: TrieNode | undefined = trie;
      let matchId = -1;
      let matchEnd = -1;
      for (let j = i; j < sentence.length; j++) {
        node = node.next.get(sentence.charCodeAt(j));
        if (node === undefined) break;
        if (node.id >= 0) {
          matchId = node.id;
          matchEnd = j + 1;
        }
      }
      if (matchId < 0) {
        i++;
        continue;
      }
      let start = i;
      let stop = matchEnd;
      i = matchEnd;
      const token = this.#addedById.get(matchId)!;
      if (this.#splitSpecialTokens && this.#specialContents.has(token.content)) continue;
      if (token.singleWord) {
        // Two code units hold the neighbouring character even when it is a surrogate pair.
        const startSpace = start === 0 || !WORD_CHAR_AT_END.test(sentence.slice(Math.max(0, start - 2), start));
        const stopSpace = stop === sentence.length || !WORD_CHAR_AT_START.test(sentence.slice(stop, stop + 2));
        if (!startSpace || !stopSpace) continue;
      }
      if (token.lstrip) {
        let newStart = start;
        while (newStart > 0 && isWhiteSpace(sentence.charCodeAt(newStart - 1))) newStart--;
        start = Math.max(newStart, startOffset);
      }
      if (token.rstrip) {
        while (stop < sentence.length && isWhiteSpace(sentence.charCodeAt(stop))) stop++;
      }
      if (startOffset < start) pieces.push({ text: sentence.slice(startOffset, start), id: -1 });
      pieces.push({ text: sentence.slice(start, stop), id: matchId });
      startOffset = stop;
    }
    if (startOffset < sentence.length) pieces.push({ text: sentence.slice(startOffset), id: -1 });
    return pieces.filter((piece) => piece.text.length > 0 || piece.id >= 0);
  }
}

/** The trie of the added tokens whose `normalized` flag is `normalized`, by UTF-16 code unit; undefined when none. */
function buildTrie(addedById: ReadonlyMap<number, AddedToken>, normalized: boolean): TrieNode | undefined {
  let root: TrieNode | undefined;
  for (const [id, token] of addedById) {
    if (token.normalized !== normalized) continue;
    root ??= { next: new Map(), id: -1 };
    let node = root;
    for (let i = 0; i < token.content.length; i++) {
      const unit = token.content.charCodeAt(i);
      let child = node.next.get(unit);
      if (child === undefined) {
        child = { next: new Map(), id: -1 };
        node.next.set(unit, child);
      }
      node = child;
    }
    node.id = id;
  }
  return root;
}
