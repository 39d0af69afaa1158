/**
 * Florence-2's text tokenizer: byte-level BPE (BART/RoBERTa) plus added tokens, with no dependencies.
 *
 * It reproduces what transformers 5.17 builds for Florence-2 (`RobertaTokenizer`, which `BartTokenizer` aliases):
 * the BPE vocabulary and merges and the post-processor come from tokenizer.json; the pre-tokenizer is always
 * ByteLevel (GPT-2 regex) with `add_prefix_space` from tokenizer_config.json, the decoder always ByteLevel, and no
 * normalizer; added tokens come from tokenizer_config.json's `added_tokens_decoder` when it has one, else from
 * tokenizer.json, plus the special tokens tokenizer_config.json names. Splitting out added tokens, BPE merge order
 * and UTF-8 repair follow the Rust `tokenizers` library that transformers calls. Reading the files is
 * tokenizer_files.ts; splitting out added tokens is added_tokens.ts.
 */
import { FlorenceError, describeValue } from "../errors.ts";
import { AddedTokenSplitter } from "./added_tokens.ts";
import { BYTE_LEVEL_PATTERN, MergeQueue, byteToCharTable, cleanUpTokenization, writeUtf8 } from "./byte_level.ts";
import { parseTokenizerFiles, readTokenizerFiles, type SequenceTemplate, type TokenizerTables } from "./tokenizer_files.ts";


export interface DecodeOptions {
  /** Drop special tokens (`<s>`, `</s>`, `<pad>`, `<loc_N>`, …) as HF `skip_special_tokens=True` does. */
  skipSpecialTokens?: boolean;
}

/** Text built token by token, as HF `Florence2PostProcessor.decode_with_spans` builds it. */
export interface TokenSpans {
  text: string;
  /** Per id: [start, end) in `text`, in JavaScript string indices (UTF-16 code units). */
  spans: [number, number][];
}

/** Rust's BPE cache holds at most this many words; past that, words are merged again each time. */
const BPE_CACHE_CAPACITY = 10_000;


export class Tokenizer {
  /** len(tokenizer) in HF: the BPE vocabulary plus the added tokens that are not in it. */
  readonly vocabSize: number;
  /** Ids that `decode(…, { skipSpecialTokens: true })` drops. */
  readonly specialTokenIds: ReadonlySet<number>;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  readonly unkTokenId: number | undefined;
  /** The `<image>` placeholder token (tokenizer_config.json's `image_token`), if the tokenizer has one. */
  readonly imageTokenId: number | undefined;

  readonly #vocab: Map<string, number>;
  /** Token text by id: BPE vocabulary overlaid by added tokens. */
  readonly #idToToken: (string | undefined)[];
  readonly #addedByContent: Map<string, number>;
  /** Python's `all_special_tokens`: tokens that decode_with_spans writes literally. */
  readonly #allSpecialTokens: Set<string>;
  readonly #addedTokens: AddedTokenSplitter;
  readonly #addPrefixSpace: boolean;
  readonly #template: SequenceTemplate;
  readonly #cleanUpSpaces: boolean;

  /** Byte b's single-byte BPE token id, or -1 when the vocabulary lacks it (then the byte is dropped, as Rust does). */
  readonly #byteToId: Int32Array;
  /** Byte-level character code → byte value, or -1 for characters outside the table. */
  readonly #charToByte: Int16Array;
  /** (left id, right id) key → merge rank; the merged id is #mergeNewId[rank]. */
  readonly #mergeRank: Map<number, number>;
  readonly #mergeNewId: Int32Array;
  readonly #pairStride: number;
  readonly #pattern: RegExp;
  readonly #bpeCache = new Map<string, Int32Array>();
  readonly #tokenBytes: (Uint8Array | undefined)[] = [];
  readonly #tokenStrings: (string | undefined)[] = [];
  readonly #utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
  #scratch = new Uint8Array(256);

  private constructor(tables: TokenizerTables) {
    this.vocabSize = tables.vocabSize;
    this.specialTokenIds = tables.specialTokenIds;
    this.bosTokenId = tables.bosTokenId;
    this.eosTokenId = tables.eosTokenId;
    this.padTokenId = tables.padTokenId;
    this.unkTokenId = tables.unkTokenId;
    this.imageTokenId = tables.imageTokenId;
    this.#vocab = tables.vocab;
    this.#idToToken = tables.idToToken;
    this.#addedByContent = tables.addedByContent;
    this.#allSpecialTokens = tables.allSpecialTokens;
    this.#addedTokens = new AddedTokenSplitter(tables.addedById, tables.specialContents, tables.splitSpecialTokens);
    this.#addPrefixSpace = tables.addPrefixSpace;
    this.#template = tables.template;
    this.#cleanUpSpaces = tables.cleanUpSpaces;
    this.#mergeRank = tables.merges.rank;
    this.#mergeNewId = tables.merges.newId;
    this.#pairStride = tables.merges.pairStride;

    const byteChars = byteToCharTable();
    this.#byteToId = new Int32Array(256);
    this.#charToByte = new Int16Array(512).fill(-1);
    for (let b = 0; b < 256; b++) {
      this.#byteToId[b] = this.#vocab.get(String.fromCharCode(byteChars[b]!)) ?? -1;
      this.#charToByte[byteChars[b]!] = b;
    }
    this.#pattern = new RegExp(BYTE_LEVEL_PATTERN, "gu");
  }

  /**
   * Builds a tokenizer from parsed tokenizer.json (and tokenizer_config.json) contents.
   * `source` names the files in error messages.
   */
  static fromJSON(tokenizerJson: unknown, tokenizerConfig?: unknown, source = "tokenizer.json"): Tokenizer {
    return new Tokenizer(parseTokenizerFiles(tokenizerJson, tokenizerConfig, source));
  }

  /** Reads tokenizer.json and, when present, tokenizer_config.json and special_tokens_map.json from a model folder. */
  static async fromFiles(dir: string): Promise<Tokenizer> {
    const files = await readTokenizerFiles(dir);
    return Tokenizer.fromJSON(files.tokenizerJson, files.config, files.source);
  }

  /** HF `tokenizer(text, add_special_tokens=False)["input_ids"]`. */
  encode(text: string): number[] {
    if (typeof text !== "string") {
      throw new FlorenceError("INVALID_ARGUMENT", `Tokenizer.encode takes a string, got ${describeValue(text)}`, { fix: "pass the prompt text" });
    }
    const ids: number[] = [];
    for (const piece of this.#addedTokens.split(text)) {
      if (piece.id >= 0) ids.push(piece.id);
      else this.#encodeText(piece.text, ids);
    }
    return ids;
  }

  /** HF `tokenizer(text)["input_ids"]`: `encode` wrapped by the post-processor (`<s> … </s>` for Florence-2). */
  encodeWithSpecial(text: string): number[] {
    return [...this.#template.prefix, ...this.encode(text), ...this.#template.suffix];
  }

  /** HF `tokenizer.decode(ids, skip_special_tokens=…)`. */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const skipSpecial = options.skipSpecialTokens === true;
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = this.#checkedId(ids[i]!, "decode");
      if (skipSpecial && this.specialTokenIds.has(id)) continue;
      total += this.#bytesOf(id).length;
    }
    const bytes = new Uint8Array(total);
    let at = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (skipSpecial && this.specialTokenIds.has(id)) continue;
      const tokenBytes = this.#bytesOf(id);
      bytes.set(tokenBytes, at);
      at += tokenBytes.length;
    }
    const text = this.#utf8.decode(bytes);
    return this.#cleanUpSpaces ? cleanUpTokenization(text) : text;
  }

  /** The text one token adds in HF `decode_with_spans`: a special token's own text, else the token decoded alone. */
  tokenToString(id: number): string {
    const checked = this.#checkedId(id, "tokenToString");
    let text = this.#tokenStrings[checked];
    if (text === undefined) {
      const token = this.#idToToken[checked]!;
      text = this.#allSpecialTokens.has(token) ? token : this.#utf8.decode(this.#bytesOf(checked));
      this.#tokenStrings[checked] = text;
    }
    return text;
  }

  /** HF `Florence2PostProcessor.decode_with_spans`: the text token by token and where each token lies in it. */
  decodeTokenSpans(ids: ArrayLike<number>): TokenSpans {
    const parts: string[] = new Array(ids.length);
    const spans: [number, number][] = new Array(ids.length);
    let length = 0;
    for (let i = 0; i < ids.length; i++) {
      const part = this.tokenToString(ids[i]!);
      parts[i] = part;
      spans[i] = [length, length + part.length];
      length += part.length;
    }
    return { text: parts.join(""), spans };
  }

  /** HF `convert_ids_to_tokens(ids)`: byte-level token strings (e.g. "Ġcar"), added tokens as written. */
  convertIdsToTokens(ids: ArrayLike<number>): string[] {
    const tokens: string[] = new Array(ids.length);
    for (let i = 0; i < ids.length; i++) tokens[i] = this.#idToToken[this.#checkedId(ids[i]!, "convertIdsToTokens")]!;
    return tokens;
  }

  tokenToId(token: string): number | undefined {
    return this.#addedByContent.get(token) ?? this.#vocab.get(token);
  }

  idToToken(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 ? this.#idToToken[id] : undefined;
  }

  isSpecial(id: number): boolean {
    return this.specialTokenIds.has(id);
  }

  #checkedId(id: number, caller: string): number {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || this.#idToToken[id] === undefined) {
      throw new FlorenceError("INVALID_ARGUMENT", `Tokenizer.${caller}: token id ${describeValue(id)} is not in the vocabulary (vocab size ${this.vocabSize})`, {
        fix: `pass integer ids from 0 to ${this.vocabSize - 1} that this model's tokenizer produced`,
      });
    }
    return id;
  }


  /** ByteLevel pre-tokenizer (GPT-2 regex) then BPE on each word. */
  #encodeText(text: string, ids: number[]): void {
    const input = this.#addPrefixSpace && !text.startsWith(" ") ? ` ${text}` : text;
    let last = 0;
    for (const match of input.matchAll(this.#pattern)) {
      // The pattern matches every character, but Rust also keeps any unmatched gap as a word.
      if (match.index > last) this.#bpe(input.slice(last, match.index), ids);
      this.#bpe(match[0], ids);
      last = match.index + match[0].length;
    }
    if (last < input.length) this.#bpe(input.slice(last), ids);
  }

  /** Rust `BPE::merge_word` + `Word::merge_all` (no dropout, no unk token), with its word cache. */
  #bpe(word: string, ids: number[]): void {
    const cached = this.#bpeCache.get(word);
    if (cached !== undefined) {
      for (let i = 0; i < cached.length; i++) ids.push(cached[i]!);
      return;
    }
    if (this.#scratch.length < word.length * 3) this.#scratch = new Uint8Array(word.length * 3);
    const byteCount = writeUtf8(word, this.#scratch, 0);
    const symbols = new Int32Array(byteCount);
    let n = 0;
    for (let i = 0; i < byteCount; i++) {
      const id = this.#byteToId[this.#scratch[i]!]!;
      if (id >= 0) symbols[n++] = id;
    }
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const queue = new MergeQueue();
    for (let i = 0; i + 1 < n; i++) {
      const rank = this.#mergeRank.get(symbols[i]! * this.#pairStride + symbols[i + 1]!);
      if (rank !== undefined) queue.push(rank, i, this.#mergeNewId[rank]!);
    }
    const top = { pos: 0, newId: 0 };
    while (queue.size > 0) {
      queue.pop(top);
      const pos = top.pos;
      if (!alive[pos]) continue;
      const right = next[pos]!;
      if (right === -1) continue;
      // Skip entries that no longer describe the pair at this position.
      const currentRank = this.#mergeRank.get(symbols[pos]! * this.#pairStride + symbols[right]!);
      if (currentRank === undefined || this.#mergeNewId[currentRank] !== top.newId) continue;
      symbols[pos] = top.newId;
      alive[right] = 0;
      const after = next[right]!;
      next[pos] = after;
      if (after !== -1) prev[after] = pos;
      const before = prev[pos]!;
      if (before >= 0) {
        const rank = this.#mergeRank.get(symbols[before]! * this.#pairStride + symbols[pos]!);
        if (rank !== undefined) queue.push(rank, before, this.#mergeNewId[rank]!);
      }
      if (after !== -1) {
        const rank = this.#mergeRank.get(symbols[pos]! * this.#pairStride + symbols[after]!);
        if (rank !== undefined) queue.push(rank, pos, this.#mergeNewId[rank]!);
      }
    }
    let count = 0;
    for (let i = 0; i < n; i++) if (alive[i]) count++;
    const result = new Int32Array(count);
    count = 0;
    for (let i = 0; i < n; i++) {
      if (alive[i]) {
        result[count++] = symbols[i]!;
        ids.push(symbols[i]!);
      }
    }
    if (this.#bpeCache.size < BPE_CACHE_CAPACITY) this.#bpeCache.set(word, result);
  }

  /** The bytes the ByteLevel decoder turns a token into: its byte-level characters mapped back, or its UTF-8 if any character is outside the table. */
  #bytesOf(id: number): Uint8Array {
    let bytes = this.#tokenBytes[id];
    if (bytes === undefined) {
      const token = this.#idToToken[id]!;
      bytes = new Uint8Array(token.length);
      let byteLevel = true;
      for (let i = 0; i < token.length; i++) {
        const code = token.charCodeAt(i);
        const b = code < 512 ? this.#charToByte[code]! : -1;
        if (b < 0) {
          byteLevel = false;
          break;
        }
        bytes[i] = b;
      }
      if (!byteLevel) {
        const utf8 = new Uint8Array(token.length * 3);
        bytes = utf8.slice(0, writeUtf8(token, utf8, 0));
      }
      this.#tokenBytes[id] = bytes;
    }
    return bytes;
  }
}
