/**
 * Florence-2's text tokenizer: byte-level BPE (BART/RoBERTa) plus added tokens, with no dependencies.
 *
 * It reproduces what transformers 5.17 builds for Florence-2 (`RobertaTokenizer`, which `BartTokenizer` aliases):
 * the BPE vocabulary and merges and the post-processor come from tokenizer.json; the pre-tokenizer is always
 * ByteLevel (GPT-2 regex) with `add_prefix_space` from tokenizer_config.json, the decoder always ByteLevel, and no
 * normalizer; added tokens come from tokenizer_config.json's `added_tokens_decoder` when it has one, else from
 * tokenizer.json, plus the special tokens tokenizer_config.json names. Splitting out added tokens, BPE merge order
 * and UTF-8 repair follow the Rust `tokenizers` library that transformers calls.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { FlorenceError, describeValue } from "../errors.ts";
import { isRecord } from "../validate.ts";
import { BYTE_LEVEL_PATTERN, MergeQueue, WORD_CHAR_AT_END, WORD_CHAR_AT_START, byteToCharTable, cleanUpTokenization, isWhiteSpace, writeUtf8 } from "./byte_level.ts";


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

/** One added token with the flags the tokenizers library gives it. */
interface AddedToken {
  content: string;
  singleWord: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

interface TrieNode {
  next: Map<number, TrieNode>;
  /** Id of the added token ending here, or -1. */
  id: number;
}

/** A piece of the input: an added token (id >= 0) or text still to pre-tokenize (id = -1). */
interface Piece {
  text: string;
  id: number;
}

/** Ids a post-processor puts around one sequence when special tokens are added. */
interface SequenceTemplate {
  prefix: number[];
  suffix: number[];
}

const NAMED_SPECIAL_TOKENS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] as const;
type NamedSpecialToken = (typeof NAMED_SPECIAL_TOKENS)[number];

/** RobertaTokenizer's defaults for named special tokens a tokenizer_config.json leaves out. */
const ROBERTA_DEFAULTS: Record<NamedSpecialToken, string> = {
  bos_token: "<s>",
  eos_token: "</s>",
  unk_token: "<unk>",
  sep_token: "</s>",
  pad_token: "<pad>",
  cls_token: "<s>",
  mask_token: "<mask>",
};

/** Rust's BPE cache holds at most this many words; past that, words are merged again each time. */
const BPE_CACHE_CAPACITY = 10_000;


/** Reads a JSON file; a missing file is `undefined` when `optional`, else MODEL_FILE_MISSING. */
async function readJson(path: string, what: string, optional: boolean): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (cause) {
    if (optional && (cause as { code?: string }).code === "ENOENT") return undefined;
    throw new FlorenceError("MODEL_FILE_MISSING", `${what} not found: ${path}`, {
      fix: "download tokenizer.json and tokenizer_config.json with the model (e.g. from onnx-community/Florence-2-base-ft)",
      cause,
    });
  }
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new FlorenceError("MODEL_FILE_INVALID", `${path} is not valid JSON (${(cause as Error).message})`, {
      fix: `expected ${what}; download the file again`,
      cause,
    });
  }
}

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

  readonly #source: string;
  readonly #vocab: Map<string, number>;
  /** Token text by id: BPE vocabulary overlaid by added tokens. */
  readonly #idToToken: (string | undefined)[];
  readonly #addedByContent: Map<string, number>;
  readonly #addedById: Map<number, AddedToken>;
  /** Contents the Rust tokenizer treats as special (dropped by skip_special_tokens). */
  readonly #specialContents: Set<string>;
  /** Python's `all_special_tokens`: tokens that decode_with_spans writes literally. */
  readonly #allSpecialTokens: Set<string>;
  readonly #rawTrie: TrieNode | undefined;
  readonly #normalizedTrie: TrieNode | undefined;
  readonly #encodeSpecialTokens: boolean;
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

  private constructor(tokenizerJson: unknown, tokenizerConfig: unknown, source: string) {
    this.#source = source;
    if (!isRecord(tokenizerJson)) {
      throw this.#invalid(`expected a tokenizers-library tokenizer.json object, got ${describeValue(tokenizerJson)}`);
    }
    const config = tokenizerConfig === undefined || tokenizerConfig === null ? {} : tokenizerConfig;
    if (!isRecord(config)) {
      throw this.#invalid(`tokenizer_config.json must hold a JSON object, got ${describeValue(tokenizerConfig)}`);
    }

    const model = tokenizerJson["model"];
    if (!isRecord(model)) throw this.#invalid(`no "model" object (expected a byte-level BPE model like Florence-2's)`);
    const type = model["type"];
    if (type !== undefined && type !== "BPE") {
      throw this.#invalid(`model.type is ${describeValue(type)}, expected "BPE" (Florence-2 uses BART's byte-level BPE)`);
    }

    // BPE vocabulary.
    const vocabJson = model["vocab"];
    if (!isRecord(vocabJson)) throw this.#invalid(`model.vocab must be an object mapping tokens to ids, got ${describeValue(vocabJson)}`);
    this.#vocab = new Map();
    let maxModelId = -1;
    for (const [token, id] of Object.entries(vocabJson)) {
      // Merge lookups pack two ids into one exact double, which bounds ids well above any real vocabulary.
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= 0x4000000) {
        throw this.#invalid(`model.vocab[${describeValue(token)}] must be an integer id from 0 to ${0x4000000 - 1}, got ${describeValue(id)}`);
      }
      this.#vocab.set(token, id);
      if (id > maxModelId) maxModelId = id;
    }
    const modelVocabSize = this.#vocab.size;

    // Merges, as "a b" strings or ["a", "b"] pairs; a later duplicate overrides an earlier one, as in Rust.
    const mergesJson = model["merges"];
    if (!Array.isArray(mergesJson)) throw this.#invalid(`model.merges must be an array, got ${describeValue(mergesJson)}`);
    this.#pairStride = maxModelId + 1;
    this.#mergeRank = new Map();
    this.#mergeNewId = new Int32Array(mergesJson.length);
    for (let rank = 0; rank < mergesJson.length; rank++) {
      const merge: unknown = mergesJson[rank];
      let left: unknown;
      let right: unknown;
      if (typeof merge === "string") {
        const parts = merge.split(" ");
        if (parts.length !== 2) {
          throw this.#invalid(`model.merges[${rank}] is ${describeValue(merge)}, expected two tokens separated by one space`);
        }
        [left, right] = parts;
      } else if (Array.isArray(merge) && merge.length === 2) {
        [left, right] = merge;
      }
      if (typeof left !== "string" || typeof right !== "string") {
        throw this.#invalid(`model.merges[${rank}] is ${describeValue(merge)}, expected "a b" or ["a", "b"]`);
      }
      const leftId = this.#vocab.get(left);
      const rightId = this.#vocab.get(right);
      const newId = this.#vocab.get(left + right);
      if (leftId === undefined || rightId === undefined || newId === undefined) {
        const missing = leftId === undefined ? left : rightId === undefined ? right : left + right;
        throw this.#invalid(`model.merges[${rank}] ${describeValue(merge)} uses ${describeValue(missing)}, which is not in model.vocab`);
      }
      this.#mergeRank.set(leftId * this.#pairStride + rightId, rank);
      this.#mergeNewId[rank] = newId;
    }

    const byteChars = byteToCharTable();
    this.#byteToId = new Int32Array(256);
    this.#charToByte = new Int16Array(512).fill(-1);
    for (let b = 0; b < 256; b++) {
      this.#byteToId[b] = this.#vocab.get(String.fromCharCode(byteChars[b]!)) ?? -1;
      this.#charToByte[byteChars[b]!] = b;
    }

    // Named special tokens as transformers resolves them: tokenizer_config.json values, RobertaTokenizer's defaults
    // for absent keys, other "*_token" strings and a dict-valued extra_special_tokens as model-specific named tokens.
    const named = new Map<string, AddedToken | string>();
    for (const key of NAMED_SPECIAL_TOKENS) {
      const value = key in config ? config[key] : ROBERTA_DEFAULTS[key];
      if (value === null || value === undefined) continue;
      named.set(key, this.#specialTokenValue(value, key));
    }
    for (const [key, value] of Object.entries(config)) {
      if (key.endsWith("_token") && !named.has(key) && !(NAMED_SPECIAL_TOKENS as readonly string[]).includes(key)) {
        if (typeof value === "string" || (isRecord(value) && value["__type"] === "AddedToken")) named.set(key, this.#specialTokenValue(value, key));
      }
    }
    const extrasJson = config["extra_special_tokens"] ?? config["additional_special_tokens"];
    const extras: (AddedToken | string)[] = [];
    if (isRecord(extrasJson)) {
      for (const [key, value] of Object.entries(extrasJson)) named.set(key, this.#specialTokenValue(value, `extra_special_tokens.${key}`));
    } else if (Array.isArray(extrasJson)) {
      extrasJson.forEach((value, i) => extras.push(this.#specialTokenValue(value, `extra_special_tokens[${i}]`)));
    } else if (extrasJson !== undefined && extrasJson !== null) {
      throw this.#invalid(`tokenizer_config.json extra_special_tokens must be a list or an object, got ${describeValue(extrasJson)}`);
    }

    // Added tokens, in the order and with the ids transformers' TokenizersBackend.__init__ gives them.
    // Named special tokens are always special; tokens already listed keep their other flags.
    const namedContents = new Set([...named.values()].map((value) => (typeof value === "string" ? value : value.content)));
    const toAdd: AddedToken[] = [];
    const queued = new Set<string>();
    const asAdded = (value: AddedToken | string): AddedToken =>
      typeof value === "string" ? { content: value, singleWord: false, lstrip: false, rstrip: false, normalized: false, special: true } : value;
    for (const value of [...this.#readAddedTokens(tokenizerJson, config), ...named.values(), ...extras]) {
      const token = asAdded(value);
      if (queued.has(token.content)) continue;
      toAdd.push(namedContents.has(token.content) && !token.special ? { ...token, special: true } : token);
      queued.add(token.content);
    }

    this.#addedByContent = new Map();
    this.#addedById = new Map();
    this.#specialContents = new Set();
    let nextId = modelVocabSize;
    for (const token of toAdd) {
      if (token.content === "") continue;
      let id = this.#addedByContent.get(token.content) ?? this.#vocab.get(token.content);
      if (id === undefined) id = nextId++;
      this.#addedByContent.set(token.content, id);
      this.#addedById.set(id, token);
      if (token.special) this.#specialContents.add(token.content);
    }

    let overlapping = 0;
    for (const content of this.#addedByContent.keys()) if (this.#vocab.has(content)) overlapping++;
    this.vocabSize = modelVocabSize + this.#addedByContent.size - overlapping;

    this.#idToToken = [];
    for (const [token, id] of this.#vocab) this.#idToToken[id] = token;
    for (const [id, token] of this.#addedById) this.#idToToken[id] = token.content;

    this.#allSpecialTokens = new Set([...namedContents, ...extras.map((value) => (typeof value === "string" ? value : value.content))]);

    const specialIds = new Set<number>();
    for (const content of this.#specialContents) {
      const id = this.tokenToId(content);
      if (id !== undefined) specialIds.add(id);
    }
    this.specialTokenIds = specialIds;

    const namedId = (key: string): number | undefined => {
      const value = named.get(key);
      return value === undefined ? undefined : this.tokenToId(typeof value === "string" ? value : value.content);
    };
    const requiredId = (key: NamedSpecialToken): number => {
      const id = namedId(key);
      if (id === undefined) {
        const value = named.get(key);
        const problem = value === undefined ? `tokenizer_config.json sets no ${key}` : `the ${key} ${describeValue(typeof value === "string" ? value : value.content)} is not in the vocabulary`;
        throw this.#invalid(problem, "a Florence-2 tokenizer needs <s>, </s> and <pad>; download tokenizer.json and tokenizer_config.json again");
      }
      return id;
    };
    this.bosTokenId = requiredId("bos_token");
    this.eosTokenId = requiredId("eos_token");
    this.padTokenId = requiredId("pad_token");
    this.unkTokenId = namedId("unk_token");
    this.imageTokenId = namedId("image_token") ?? this.tokenToId("<image>");

    this.#rawTrie = this.#buildTrie(false);
    this.#normalizedTrie = this.#buildTrie(true);
    this.#encodeSpecialTokens = config["split_special_tokens"] === true;
    this.#addPrefixSpace = config["add_prefix_space"] === true;
    this.#cleanUpSpaces = config["clean_up_tokenization_spaces"] === true && config["clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"] === true;
    this.#template = this.#sequenceTemplate(tokenizerJson["post_processor"], config, named);
    this.#pattern = new RegExp(BYTE_LEVEL_PATTERN, "gu");
  }

  /**
   * Builds a tokenizer from parsed tokenizer.json (and tokenizer_config.json) contents.
   * `source` names the files in error messages.
   */
  static fromJSON(tokenizerJson: unknown, tokenizerConfig?: unknown, source = "tokenizer.json"): Tokenizer {
    return new Tokenizer(tokenizerJson, tokenizerConfig, source);
  }

  /** Reads tokenizer.json and, when present, tokenizer_config.json and special_tokens_map.json from a model folder. */
  static async fromFiles(dir: string): Promise<Tokenizer> {
    const tokenizerPath = join(dir, "tokenizer.json");
    const configPath = join(dir, "tokenizer_config.json");
    const mapPath = join(dir, "special_tokens_map.json");
    const [tokenizerJson, configJson, mapJson] = await Promise.all([
      readJson(tokenizerPath, "tokenizer.json (a tokenizers-library BPE tokenizer)", false),
      readJson(configPath, "tokenizer_config.json", true),
      readJson(mapPath, "special_tokens_map.json", true),
    ]);
    let config = configJson;
    // transformers merges the legacy special_tokens_map.json only when tokenizer_config.json lacks added_tokens_decoder.
    if (isRecord(mapJson) && !(isRecord(config) && "added_tokens_decoder" in config)) {
      const merged: Record<string, unknown> = isRecord(config) ? { ...config } : {};
      const asSpecial = (value: unknown): unknown => (isRecord(value) ? { ...value, __type: "AddedToken", special: true } : value);
      for (const [key, value] of Object.entries(mapJson)) {
        if (key === "extra_special_tokens" && Array.isArray(value)) {
          const existing = Array.isArray(merged[key]) ? [...(merged[key] as unknown[])] : [];
          const contents = new Set(existing.map((item) => (isRecord(item) ? item["content"] : item)));
          for (const item of value) if (!contents.has(isRecord(item) ? item["content"] : item)) existing.push(asSpecial(item));
          merged[key] = existing;
        } else {
          merged[key] = key === "extra_special_tokens" ? value : asSpecial(value);
        }
      }
      config = merged;
    }
    const source = config === undefined ? tokenizerPath : `${tokenizerPath} (with ${configPath})`;
    return Tokenizer.fromJSON(tokenizerJson, config, source);
  }

  /** HF `tokenizer(text, add_special_tokens=False)["input_ids"]`. */
  encode(text: string): number[] {
    if (typeof text !== "string") {
      throw new FlorenceError("INVALID_ARGUMENT", `Tokenizer.encode takes a string, got ${describeValue(text)}`, { fix: "pass the prompt text" });
    }
    const ids: number[] = [];
    for (const piece of this.#splitAddedTokens(text)) {
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

  #invalid(message: string, fix = "use the tokenizer.json and tokenizer_config.json that come with the Florence-2 model"): FlorenceError {
    return new FlorenceError("TOKENIZER_INVALID", `${this.#source}: ${message}`, { fix });
  }

  #checkedId(id: number, caller: string): number {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || this.#idToToken[id] === undefined) {
      throw new FlorenceError("INVALID_ARGUMENT", `Tokenizer.${caller}: token id ${describeValue(id)} is not in the vocabulary (vocab size ${this.vocabSize})`, {
        fix: `pass integer ids from 0 to ${this.vocabSize - 1} that this model's tokenizer produced`,
      });
    }
    return id;
  }

  /** A special-token value from tokenizer_config.json: a string or a serialized AddedToken. */
  #specialTokenValue(value: unknown, key: string): AddedToken | string {
    if (typeof value === "string") return value;
    if (isRecord(value) && typeof value["content"] === "string") return this.#addedToken(value, true, `tokenizer_config.json ${key}`);
    throw this.#invalid(`tokenizer_config.json ${key} must be a token string or an AddedToken object, got ${describeValue(value)}`);
  }

  #addedToken(json: Record<string, unknown>, defaultSpecial: boolean, where: string): AddedToken {
    const content = json["content"];
    if (typeof content !== "string") throw this.#invalid(`${where}: "content" must be a string, got ${describeValue(content)}`);
    const flag = (name: string, fallback: boolean): boolean => {
      const value = json[name];
      if (value === undefined || value === null) return fallback;
      if (typeof value !== "boolean") throw this.#invalid(`${where}: "${name}" must be true or false, got ${describeValue(value)}`);
      return value;
    };
    const special = flag("special", defaultSpecial);
    return {
      content,
      singleWord: flag("single_word", false),
      lstrip: flag("lstrip", false),
      rstrip: flag("rstrip", false),
      normalized: flag("normalized", !special),
      special,
    };
  }

  /** The added tokens transformers starts from, sorted by id: tokenizer_config.json's added_tokens_decoder, else tokenizer.json's added_tokens. */
  #readAddedTokens(tokenizerJson: Record<string, unknown>, config: Record<string, unknown>): AddedToken[] {
    const entries: [number, AddedToken][] = [];
    const decoder = config["added_tokens_decoder"];
    if (decoder !== undefined && decoder !== null) {
      if (!isRecord(decoder)) throw this.#invalid(`tokenizer_config.json added_tokens_decoder must be an object, got ${describeValue(decoder)}`);
      for (const [key, value] of Object.entries(decoder)) {
        const id = Number(key);
        if (!Number.isInteger(id) || id < 0 || !isRecord(value)) {
          throw this.#invalid(`tokenizer_config.json added_tokens_decoder[${describeValue(key)}] must map an id to an AddedToken object`);
        }
        entries.push([id, this.#addedToken(value, false, `tokenizer_config.json added_tokens_decoder[${key}]`)]);
      }
    } else {
      const list = tokenizerJson["added_tokens"] ?? [];
      if (!Array.isArray(list)) throw this.#invalid(`added_tokens must be an array, got ${describeValue(list)}`);
      list.forEach((value: unknown, i: number) => {
        if (!isRecord(value)) throw this.#invalid(`added_tokens[${i}] must be an object, got ${describeValue(value)}`);
        const id = value["id"];
        if (typeof id !== "number" || !Number.isInteger(id) || id < 0) throw this.#invalid(`added_tokens[${i}].id must be a non-negative integer, got ${describeValue(id)}`);
        entries.push([id, this.#addedToken(value, false, `added_tokens[${i}]`)]);
      });
    }
    entries.sort((a, b) => a[0] - b[0]);
    return entries.map(([, token]) => token);
  }

  #buildTrie(normalized: boolean): TrieNode | undefined {
    let root: TrieNode | undefined;
    for (const [id, token] of this.#addedById) {
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

  /** Splits out added tokens: first those matched on raw text, then the "normalized" ones (there is no normalizer). */
  #splitAddedTokens(text: string): Piece[] {
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
      if (this.#encodeSpecialTokens && this.#specialContents.has(token.content)) continue;
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

  /** The ids a post-processor adds around one sequence, as transformers sets it up for RobertaTokenizer. */
  #sequenceTemplate(postProcessor: unknown, config: Record<string, unknown>, named: Map<string, AddedToken | string>): SequenceTemplate {
    const contentOf = (key: string): string | undefined => {
      const value = named.get(key);
      return value === undefined ? undefined : typeof value === "string" ? value : value.content;
    };
    // Explicit add_bos_token/add_eos_token make transformers replace the post-processor by a bos/eos template.
    if ("add_bos_token" in config || "add_eos_token" in config) {
      const prefix: number[] = [];
      const suffix: number[] = [];
      const bos = contentOf("bos_token");
      const eos = contentOf("eos_token");
      if (config["add_bos_token"] === true && bos !== undefined) prefix.push(this.#requireToken(bos, "bos_token"));
      if (config["add_eos_token"] === true && eos !== undefined) suffix.push(this.#requireToken(eos, "eos_token"));
      return { prefix, suffix };
    }
    if (postProcessor === null || postProcessor === undefined) {
      // RobertaTokenizer's own RobertaProcessing stays when tokenizer.json has none.
      const cls = contentOf("cls_token") ?? "<s>";
      const sep = contentOf("sep_token") ?? "</s>";
      return { prefix: [this.#vocab.get(cls) ?? 2], suffix: [this.#vocab.get(sep) ?? 3] };
    }
    return this.#parsePostProcessor(postProcessor, "post_processor");
  }

  #requireToken(content: string, what: string): number {
    const id = this.tokenToId(content);
    if (id === undefined) throw this.#invalid(`${what} ${describeValue(content)} is not in the vocabulary`);
    return id;
  }

  #parsePostProcessor(json: unknown, where: string): SequenceTemplate {
    if (!isRecord(json)) throw this.#invalid(`${where} must be an object, got ${describeValue(json)}`);
    const pairId = (value: unknown, name: string): number => {
      if (Array.isArray(value) && value.length === 2 && typeof value[1] === "number" && Number.isInteger(value[1])) return value[1];
      throw this.#invalid(`${where}.${name} must be [token, id], got ${describeValue(value)}`);
    };
    switch (json["type"]) {
      case "RobertaProcessing":
      case "BertProcessing":
        return { prefix: [pairId(json["cls"], "cls")], suffix: [pairId(json["sep"], "sep")] };
      case "ByteLevel":
        return { prefix: [], suffix: [] };
      case "Sequence": {
        const processors = json["processors"];
        if (!Array.isArray(processors)) throw this.#invalid(`${where}.processors must be an array`);
        let prefix: number[] = [];
        let suffix: number[] = [];
        processors.forEach((inner: unknown, i: number) => {
          const step = this.#parsePostProcessor(inner, `${where}.processors[${i}]`);
          prefix = [...step.prefix, ...prefix];
          suffix = [...suffix, ...step.suffix];
        });
        return { prefix, suffix };
      }
      case "TemplateProcessing": {
        const single = json["single"];
        const specials = json["special_tokens"];
        if (!Array.isArray(single) || !isRecord(specials)) throw this.#invalid(`${where} must have "single" (array) and "special_tokens" (object)`);
        const prefix: number[] = [];
        const suffix: number[] = [];
        let seenSequence = false;
        single.forEach((item: unknown, i: number) => {
          if (isRecord(item) && isRecord(item["Sequence"])) {
            seenSequence = true;
            return;
          }
          const special = isRecord(item) ? item["SpecialToken"] : undefined;
          const name = isRecord(special) ? special["id"] : undefined;
          const entry = typeof name === "string" ? specials[name] : undefined;
          const ids = isRecord(entry) ? entry["ids"] : undefined;
          if (!Array.isArray(ids) || !ids.every((id) => typeof id === "number" && Number.isInteger(id))) {
            throw this.#invalid(`${where}.single[${i}] is ${describeValue(item)}, not a Sequence or a SpecialToken listed in special_tokens`);
          }
          (seenSequence ? suffix : prefix).push(...(ids as number[]));
        });
        return { prefix, suffix };
      }
      default:
        throw this.#invalid(`${where}.type ${describeValue(json["type"])} is not supported`, "expected RobertaProcessing, BertProcessing, TemplateProcessing, ByteLevel or Sequence, as Florence-2 tokenizers use");
    }
  }
}
