/**
 * tokenizer.json / tokenizer_config.json / special_tokens_map.json → the plain tables Tokenizer runs on, as
 * transformers 5.17 builds them for Florence-2 (`RobertaTokenizer`): the BPE vocabulary and merges, the added
 * tokens with the ids and flags `TokenizersBackend.__init__` gives them, the named special tokens and the
 * post-processor's template. Every malformed value is a TOKENIZER_INVALID error naming the file and the key.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { FlorenceError, describeValue } from "../errors.ts";
import { isRecord } from "../validate.ts";

/** One added token with the flags the tokenizers library gives it. */
export interface AddedToken {
  content: string;
  singleWord: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** Ids a post-processor puts around one sequence when special tokens are added. */
export interface SequenceTemplate {
  prefix: number[];
  suffix: number[];
}

/** BPE merges: (left id, right id) packed as `left * pairStride + right` → rank; the merged id is `newId[rank]`. */
export interface MergeTable {
  rank: Map<number, number>;
  newId: Int32Array;
  pairStride: number;
}

/** Everything a Tokenizer needs, read and checked from its files. */
export interface TokenizerTables {
  vocab: Map<string, number>;
  merges: MergeTable;
  /** len(tokenizer) in HF: the BPE vocabulary plus the added tokens that are not in it. */
  vocabSize: number;
  /** Token text by id: BPE vocabulary overlaid by added tokens. */
  idToToken: (string | undefined)[];
  addedByContent: Map<string, number>;
  addedById: Map<number, AddedToken>;
  /** Contents the Rust tokenizer treats as special (dropped by skip_special_tokens). */
  specialContents: Set<string>;
  /** Python's `all_special_tokens`: tokens that decode_with_spans writes literally. */
  allSpecialTokens: Set<string>;
  specialTokenIds: Set<number>;
  bosTokenId: number;
  eosTokenId: number;
  padTokenId: number;
  unkTokenId: number | undefined;
  imageTokenId: number | undefined;
  /** tokenizer_config.json's split_special_tokens: special tokens in the text are encoded as text. */
  splitSpecialTokens: boolean;
  addPrefixSpace: boolean;
  cleanUpSpaces: boolean;
  template: SequenceTemplate;
}

/** The three files of a model folder, parsed, with special_tokens_map.json merged in as transformers does. */
export interface TokenizerFiles {
  tokenizerJson: unknown;
  config: unknown;
  /** Names the files in error messages. */
  source: string;
}

type Invalid = (message: string, fix?: string) => FlorenceError;

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

/** Merge lookups pack two ids into one exact double, which bounds ids well above any real vocabulary. */
const MAX_TOKEN_ID = 0x4000000 - 1;

const contentOf = (value: AddedToken | string): string => (typeof value === "string" ? value : value.content);

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

/** Reads tokenizer.json and, when present, tokenizer_config.json and special_tokens_map.json from a model folder. */
export async function readTokenizerFiles(dir: string): Promise<TokenizerFiles> {
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
  return { tokenizerJson, config, source };
}

/** Parsed tokenizer.json (and tokenizer_config.json) contents → the tables; `source` names the files in errors. */
export function parseTokenizerFiles(tokenizerJson: unknown, tokenizerConfig: unknown, source: string): TokenizerTables {
  const invalid: Invalid = (message, fix = "use the tokenizer.json and tokenizer_config.json that come with the Florence-2 model") =>
    new FlorenceError("TOKENIZER_INVALID", `${source}: ${message}`, { fix });
  if (!isRecord(tokenizerJson)) {
    throw invalid(`expected a tokenizers-library tokenizer.json object, got ${describeValue(tokenizerJson)}`);
  }
  const config = tokenizerConfig === undefined || tokenizerConfig === null ? {} : tokenizerConfig;
  if (!isRecord(config)) {
    throw invalid(`tokenizer_config.json must hold a JSON object, got ${describeValue(tokenizerConfig)}`);
  }

  const model = tokenizerJson["model"];
  if (!isRecord(model)) throw invalid(`no "model" object (expected a byte-level BPE model like Florence-2's)`);
  const type = model["type"];
  if (type !== undefined && type !== "BPE") {
    throw invalid(`model.type is ${describeValue(type)}, expected "BPE" (Florence-2 uses BART's byte-level BPE)`);
  }
  const { vocab, maxModelId } = parseVocab(model["vocab"], invalid);
  const merges = parseMerges(model["merges"], vocab, maxModelId + 1, invalid);

  const { named, extras } = namedSpecialTokens(config, invalid);
  // Named special tokens are always special; tokens already listed keep their other flags.
  const namedContents = new Set([...named.values()].map(contentOf));
  const added = assignAddedIds([...readAddedTokens(tokenizerJson, config, invalid), ...named.values(), ...extras], namedContents, vocab);
  const { addedByContent, addedById, specialContents } = added;

  let overlapping = 0;
  for (const content of addedByContent.keys()) if (vocab.has(content)) overlapping++;
  const idToToken: (string | undefined)[] = [];
  for (const [token, id] of vocab) idToToken[id] = token;
  for (const [id, token] of addedById) idToToken[id] = token.content;

  const tokenToId = (token: string): number | undefined => addedByContent.get(token) ?? vocab.get(token);
  const specialTokenIds = new Set<number>();
  for (const content of specialContents) {
    const id = tokenToId(content);
    if (id !== undefined) specialTokenIds.add(id);
  }
  const namedId = (key: string): number | undefined => {
    const value = named.get(key);
    return value === undefined ? undefined : tokenToId(contentOf(value));
  };
  const requiredId = (key: NamedSpecialToken): number => {
    const id = namedId(key);
    if (id === undefined) {
      const value = named.get(key);
      const problem = value === undefined ? `tokenizer_config.json sets no ${key}` : `the ${key} ${describeValue(contentOf(value))} is not in the vocabulary`;
      throw invalid(problem, "a Florence-2 tokenizer needs <s>, </s> and <pad>; download tokenizer.json and tokenizer_config.json again");
    }
    return id;
  };
  const bosTokenId = requiredId("bos_token");
  const eosTokenId = requiredId("eos_token");
  const padTokenId = requiredId("pad_token");
  return {
    vocab,
    merges,
    vocabSize: vocab.size + addedByContent.size - overlapping,
    idToToken,
    addedByContent,
    addedById,
    specialContents,
    allSpecialTokens: new Set([...namedContents, ...extras.map(contentOf)]),
    specialTokenIds,
    bosTokenId,
    eosTokenId,
    padTokenId,
    unkTokenId: namedId("unk_token"),
    imageTokenId: namedId("image_token") ?? tokenToId("<image>"),
    splitSpecialTokens: config["split_special_tokens"] === true,
    addPrefixSpace: config["add_prefix_space"] === true,
    cleanUpSpaces: config["clean_up_tokenization_spaces"] === true && config["clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"] === true,
    template: sequenceTemplate(tokenizerJson["post_processor"], config, named, vocab, tokenToId, invalid),
  };
}

/** model.vocab: token → id, each id an integer the merge table can pack. */
function parseVocab(vocabJson: unknown, invalid: Invalid): { vocab: Map<string, number>; maxModelId: number } {
  if (!isRecord(vocabJson)) throw invalid(`model.vocab must be an object mapping tokens to ids, got ${describeValue(vocabJson)}`);
  const vocab = new Map<string, number>();
  let maxModelId = -1;
  for (const [token, id] of Object.entries(vocabJson)) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id > MAX_TOKEN_ID) {
      throw invalid(`model.vocab[${describeValue(token)}] must be an integer id from 0 to ${MAX_TOKEN_ID}, got ${describeValue(id)}`);
    }
    vocab.set(token, id);
    if (id > maxModelId) maxModelId = id;
  }
  return { vocab, maxModelId };
}

/** Merges, as "a b" strings or ["a", "b"] pairs; a later duplicate overrides an earlier one, as in Rust. */
function parseMerges(mergesJson: unknown, vocab: Map<string, number>, pairStride: number, invalid: Invalid): MergeTable {
  if (!Array.isArray(mergesJson)) throw invalid(`model.merges must be an array, got ${describeValue(mergesJson)}`);
  const rank = new Map<number, number>();
  const newId = new Int32Array(mergesJson.length);
  for (let r = 0; r < mergesJson.length; r++) {
    const merge: unknown = mergesJson[r];
    let left: unknown;
    let right: unknown;
    if (typeof merge === "string") {
      const parts = merge.split(" ");
      if (parts.length !== 2) {
        throw invalid(`model.merges[${r}] is ${describeValue(merge)}, expected two tokens separated by one space`);
      }
      [left, right] = parts;
    } else if (Array.isArray(merge) && merge.length === 2) {
      [left, right] = merge;
    }
    if (typeof left !== "string" || typeof right !== "string") {
      throw invalid(`model.merges[${r}] is ${describeValue(merge)}, expected "a b" or ["a", "b"]`);
    }
    const leftId = vocab.get(left);
    const rightId = vocab.get(right);
    const mergedId = vocab.get(left + right);
    if (leftId === undefined || rightId === undefined || mergedId === undefined) {
      const missing = leftId === undefined ? left : rightId === undefined ? right : left + right;
      throw invalid(`model.merges[${r}] ${describeValue(merge)} uses ${describeValue(missing)}, which is not in model.vocab`);
    }
    rank.set(leftId * pairStride + rightId, r);
    newId[r] = mergedId;
  }
  return { rank, newId, pairStride };
}

/**
 * Named special tokens as transformers resolves them: tokenizer_config.json values, RobertaTokenizer's defaults for
 * absent keys, other "*_token" strings and a dict-valued extra_special_tokens as model-specific named tokens; a
 * list-valued extra_special_tokens gives the unnamed extras.
 */
function namedSpecialTokens(config: Record<string, unknown>, invalid: Invalid): { named: Map<string, AddedToken | string>; extras: (AddedToken | string)[] } {
  const named = new Map<string, AddedToken | string>();
  for (const key of NAMED_SPECIAL_TOKENS) {
    const value = key in config ? config[key] : ROBERTA_DEFAULTS[key];
    if (value === null || value === undefined) continue;
    named.set(key, specialTokenValue(value, key, invalid));
  }
  for (const [key, value] of Object.entries(config)) {
    if (key.endsWith("_token") && !named.has(key) && !(NAMED_SPECIAL_TOKENS as readonly string[]).includes(key)) {
      if (typeof value === "string" || (isRecord(value) && value["__type"] === "AddedToken")) named.set(key, specialTokenValue(value, key, invalid));
    }
  }
  const extrasJson = config["extra_special_tokens"] ?? config["additional_special_tokens"];
  const extras: (AddedToken | string)[] = [];
  if (isRecord(extrasJson)) {
    for (const [key, value] of Object.entries(extrasJson)) named.set(key, specialTokenValue(value, `extra_special_tokens.${key}`, invalid));
  } else if (Array.isArray(extrasJson)) {
    extrasJson.forEach((value, i) => extras.push(specialTokenValue(value, `extra_special_tokens[${i}]`, invalid)));
  } else if (extrasJson !== undefined && extrasJson !== null) {
    throw invalid(`tokenizer_config.json extra_special_tokens must be a list or an object, got ${describeValue(extrasJson)}`);
  }
  return { named, extras };
}

/** Added tokens, in the order and with the ids transformers' TokenizersBackend.__init__ gives them. */
function assignAddedIds(values: (AddedToken | string)[], namedContents: Set<string>, vocab: Map<string, number>) {
  const toAdd: AddedToken[] = [];
  const queued = new Set<string>();
  for (const value of values) {
    const token: AddedToken = typeof value === "string" ? { content: value, singleWord: false, lstrip: false, rstrip: false, normalized: false, special: true } : value;
    if (queued.has(token.content)) continue;
    toAdd.push(namedContents.has(token.content) && !token.special ? { ...token, special: true } : token);
    queued.add(token.content);
  }
  const addedByContent = new Map<string, number>();
  const addedById = new Map<number, AddedToken>();
  const specialContents = new Set<string>();
  let nextId = vocab.size;
  for (const token of toAdd) {
    if (token.content === "") continue;
    let id = addedByContent.get(token.content) ?? vocab.get(token.content);
    if (id === undefined) id = nextId++;
    addedByContent.set(token.content, id);
    addedById.set(id, token);
    if (token.special) specialContents.add(token.content);
  }
  return { addedByContent, addedById, specialContents };
}

/** A special-token value from tokenizer_config.json: a string or a serialized AddedToken. */
function specialTokenValue(value: unknown, key: string, invalid: Invalid): AddedToken | string {
  if (typeof value === "string") return value;
  if (isRecord(value) && typeof value["content"] === "string") return addedToken(value, true, `tokenizer_config.json ${key}`, invalid);
  throw invalid(`tokenizer_config.json ${key} must be a token string or an AddedToken object, got ${describeValue(value)}`);
}

function addedToken(json: Record<string, unknown>, defaultSpecial: boolean, where: string, invalid: Invalid): AddedToken {
  const content = json["content"];
  if (typeof content !== "string") throw invalid(`${where}: "content" must be a string, got ${describeValue(content)}`);
  const flag = (name: string, fallback: boolean): boolean => {
    const value = json[name];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== "boolean") throw invalid(`${where}: "${name}" must be true or false, got ${describeValue(value)}`);
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
function readAddedTokens(tokenizerJson: Record<string, unknown>, config: Record<string, unknown>, invalid: Invalid): AddedToken[] {
  const entries: [number, AddedToken][] = [];
  const decoder = config["added_tokens_decoder"];
  if (decoder !== undefined && decoder !== null) {
    if (!isRecord(decoder)) throw invalid(`tokenizer_config.json added_tokens_decoder must be an object, got ${describeValue(decoder)}`);
    for (const [key, value] of Object.entries(decoder)) {
      const id = Number(key);
      if (!Number.isInteger(id) || id < 0 || !isRecord(value)) {
        throw invalid(`tokenizer_config.json added_tokens_decoder[${describeValue(key)}] must map an id to an AddedToken object`);
      }
      entries.push([id, addedToken(value, false, `tokenizer_config.json added_tokens_decoder[${key}]`, invalid)]);
    }
  } else {
    const list = tokenizerJson["added_tokens"] ?? [];
    if (!Array.isArray(list)) throw invalid(`added_tokens must be an array, got ${describeValue(list)}`);
    list.forEach((value: unknown, i: number) => {
      if (!isRecord(value)) throw invalid(`added_tokens[${i}] must be an object, got ${describeValue(value)}`);
      const id = value["id"];
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0) throw invalid(`added_tokens[${i}].id must be a non-negative integer, got ${describeValue(id)}`);
      entries.push([id, addedToken(value, false, `added_tokens[${i}]`, invalid)]);
    });
  }
  entries.sort((a, b) => a[0] - b[0]);
  return entries.map(([, token]) => token);
}

/** The ids a post-processor adds around one sequence, as transformers sets it up for RobertaTokenizer. */
function sequenceTemplate(
  postProcessor: unknown,
  config: Record<string, unknown>,
  named: Map<string, AddedToken | string>,
  vocab: Map<string, number>,
  tokenToId: (token: string) => number | undefined,
  invalid: Invalid,
): SequenceTemplate {
  const namedContent = (key: string): string | undefined => {
    const value = named.get(key);
    return value === undefined ? undefined : contentOf(value);
  };
  const requireToken = (content: string, what: string): number => {
    const id = tokenToId(content);
    if (id === undefined) throw invalid(`${what} ${describeValue(content)} is not in the vocabulary`);
    return id;
  };
  // Explicit add_bos_token/add_eos_token make transformers replace the post-processor by a bos/eos template.
  if ("add_bos_token" in config || "add_eos_token" in config) {
    const prefix: number[] = [];
    const suffix: number[] = [];
    const bos = namedContent("bos_token");
    const eos = namedContent("eos_token");
    if (config["add_bos_token"] === true && bos !== undefined) prefix.push(requireToken(bos, "bos_token"));
    if (config["add_eos_token"] === true && eos !== undefined) suffix.push(requireToken(eos, "eos_token"));
    return { prefix, suffix };
  }
  if (postProcessor === null || postProcessor === undefined) {
    // RobertaTokenizer's own RobertaProcessing stays when tokenizer.json has none.
    const cls = namedContent("cls_token") ?? "<s>";
    const sep = namedContent("sep_token") ?? "</s>";
    return { prefix: [vocab.get(cls) ?? 2], suffix: [vocab.get(sep) ?? 3] };
  }
  return parsePostProcessor(postProcessor, "post_processor", invalid);
}

function parsePostProcessor(json: unknown, where: string, invalid: Invalid): SequenceTemplate {
  if (!isRecord(json)) throw invalid(`${where} must be an object, got ${describeValue(json)}`);
  const pairId = (value: unknown, name: string): number => {
    if (Array.isArray(value) && value.length === 2 && typeof value[1] === "number" && Number.isInteger(value[1])) return value[1];
    throw invalid(`${where}.${name} must be [token, id], got ${describeValue(value)}`);
  };
  switch (json["type"]) {
    case "RobertaProcessing":
    case "BertProcessing":
      return { prefix: [pairId(json["cls"], "cls")], suffix: [pairId(json["sep"], "sep")] };
    case "ByteLevel":
      return { prefix: [], suffix: [] };
    case "Sequence": {
      const processors = json["processors"];
      if (!Array.isArray(processors)) throw invalid(`${where}.processors must be an array`);
      let prefix: number[] = [];
      let suffix: number[] = [];
      processors.forEach((inner: unknown, i: number) => {
        const step = parsePostProcessor(inner, `${where}.processors[${i}]`, invalid);
        prefix = [...step.prefix, ...prefix];
        suffix = [...suffix, ...step.suffix];
      });
      return { prefix, suffix };
    }
    case "TemplateProcessing":
      return templateProcessing(json, where, invalid);
    default:
      throw invalid(`${where}.type ${describeValue(json["type"])} is not supported`, "expected RobertaProcessing, BertProcessing, TemplateProcessing, ByteLevel or Sequence, as Florence-2 tokenizers use");
  }
}

/** A TemplateProcessing's `single` template: special-token ids before the Sequence piece, then after it. */
function templateProcessing(json: Record<string, unknown>, where: string, invalid: Invalid): SequenceTemplate {
  const single = json["single"];
  const specials = json["special_tokens"];
  if (!Array.isArray(single) || !isRecord(specials)) throw invalid(`${where} must have "single" (array) and "special_tokens" (object)`);
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
      throw invalid(`${where}.single[${i}] is ${describeValue(item)}, not a Sequence or a SpecialToken listed in special_tokens`);
    }
    (seenSequence ? suffix : prefix).push(...(ids as number[]));
  });
  return { prefix, suffix };
}
