import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtemp, readFile, rm, writeFile, cp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tokenizer } from "../../src/florence/tokenizer.ts";
import { REFERENCE, TINY_MODEL, readReference } from "../support/paths.ts";
import { rejectsCode as rejects } from "../support/errors.ts";

interface TokenizerReference {
  vocab_size: number;
  encode: { text: string; ids: number[]; ids_with_special: number[] }[];
  decode: { ids: number[]; text: string; text_skip_special: string }[];
}

interface GenerateCase {
  id: string;
  task: string;
  text_input: string | null;
  prompt_ids: number[];
  generated_ids: number[][];
  text: string[];
}

const reference = readReference<TokenizerReference>("tokenizer.json");
const cases = readReference<GenerateCase[]>("generate.json");
const tokenizer = await Tokenizer.fromFiles(TINY_MODEL);

// Florence2Processor's task prompts (transformers 5.17, models/florence2/processing_florence2.py).
const PROMPTS_WITHOUT_INPUT: Record<string, string> = {
  "<OCR>": "What is the text in the image?",
  "<OCR_WITH_REGION>": "What is the text in the image, with regions?",
  "<CAPTION>": "What does the image describe?",
  "<DETAILED_CAPTION>": "Describe in detail what is shown in the image.",
  "<MORE_DETAILED_CAPTION>": "Describe with a paragraph what is shown in the image.",
  "<OD>": "Locate the objects with category name in the image.",
  "<DENSE_REGION_CAPTION>": "Locate the objects in the image, with their descriptions.",
  "<REGION_PROPOSAL>": "Locate the region proposals in the image.",
};
const PROMPTS_WITH_INPUT: Record<string, string> = {
  "<CAPTION_TO_PHRASE_GROUNDING>": "Locate the phrases in the caption: {input}",
  "<REFERRING_EXPRESSION_SEGMENTATION>": "Locate {input} in the image with mask",
  "<REGION_TO_SEGMENTATION>": "What is the polygon mask of region {input}",
  "<OPEN_VOCABULARY_DETECTION>": "Locate {input} in the image.",
  "<REGION_TO_CATEGORY>": "What is the region {input}?",
  "<REGION_TO_DESCRIPTION>": "What does the region {input} describe?",
  "<REGION_TO_OCR>": "What text is in the region {input}?",
};

function promptFor(task: string, input: string | null): string {
  const plain = PROMPTS_WITHOUT_INPUT[task];
  if (plain !== undefined) return plain;
  const template = PROMPTS_WITH_INPUT[task];
  if (template === undefined) throw new Error(`no prompt for ${task}`);
  return template.replace("{input}", (input ?? "").trim());
}


test("vocabulary size, named ids and special tokens as HF reports them", () => {
  assert.is(tokenizer.vocabSize, reference.vocab_size);
  assert.is(tokenizer.bosTokenId, 0);
  assert.is(tokenizer.padTokenId, 1);
  assert.is(tokenizer.eosTokenId, 2);
  assert.is(tokenizer.unkTokenId, 3);
  assert.is(tokenizer.imageTokenId, tokenizer.tokenToId("<image>"));
  assert.is(tokenizer.tokenToId("<loc_0>"), 605);
  assert.is(tokenizer.tokenToId("<loc_999>"), 1604);
  assert.is(tokenizer.idToToken(1622), "<poly>");
  assert.is(tokenizer.tokenToId("no such token"), undefined);
  assert.is(tokenizer.idToToken(reference.vocab_size), undefined);
  for (const id of [0, 1, 2, 3, 600, 605, 1604, 1625]) assert.ok(tokenizer.isSpecial(id), `id ${id} is special`);
  for (const id of [4, 263, 599]) assert.not.ok(tokenizer.isSpecial(id), `id ${id} is not special`);
  assert.equal(tokenizer.convertIdsToTokens([263, 605, 17]), ["Ġthe", "<loc_0>", "."]);
});

test("encode and encodeWithSpecial match HF on every reference string", () => {
  for (const entry of reference.encode) {
    assert.equal(tokenizer.encode(entry.text), entry.ids, `encode ${JSON.stringify(entry.text)}`);
    assert.equal(tokenizer.encodeWithSpecial(entry.text), entry.ids_with_special, `with special ${JSON.stringify(entry.text)}`);
  }
  assert.ok(reference.encode.length >= 50);
});

test("decode matches HF with and without special tokens, including broken UTF-8", () => {
  for (const entry of reference.decode) {
    assert.is(tokenizer.decode(entry.ids), entry.text, `decode ${JSON.stringify(entry.ids)}`);
    assert.is(tokenizer.decode(entry.ids, { skipSpecialTokens: true }), entry.text_skip_special, `skip ${JSON.stringify(entry.ids)}`);
    assert.is(tokenizer.decode(Int32Array.from(entry.ids)), entry.text, "typed arrays decode the same");
  }
  assert.ok(reference.decode.some((entry) => entry.text.includes("\uFFFD")), "the reference exercises invalid byte sequences");
});

test("merges written as 'a b' strings give the same ids as [a, b] pairs", async () => {
  const json = JSON.parse(await readFile(join(REFERENCE, "variants", "tokenizer.string_merges.json"), "utf8")) as { model: { merges: unknown[] } };
  assert.type(json.model.merges[0], "string");
  const config = JSON.parse(await readFile(join(TINY_MODEL, "tokenizer_config.json"), "utf8")) as unknown;
  const stringMerges = Tokenizer.fromJSON(json, config, "tokenizer.string_merges.json");
  for (const entry of reference.encode) {
    assert.equal(stringMerges.encode(entry.text), entry.ids, `encode ${JSON.stringify(entry.text)}`);
  }
  assert.is(stringMerges.vocabSize, reference.vocab_size);
});

test("generate cases: prompts encode to HF's prompt_ids and generated ids decode to HF's text", () => {
  let rows = 0;
  for (const entry of cases) {
    const prompt = promptFor(entry.task, entry.text_input);
    assert.equal(tokenizer.encodeWithSpecial(prompt), entry.prompt_ids, `${entry.id}: prompt ${JSON.stringify(prompt)}`);
    assert.equal(tokenizer.encode(`<s>${prompt}</s>`), entry.prompt_ids, `${entry.id}: <s>prompt</s> as the processor writes it`);
    assert.equal(tokenizer.encode(tokenizer.decode(entry.prompt_ids)), entry.prompt_ids, `${entry.id}: prompt round trip`);
    entry.generated_ids.forEach((ids, i) => {
      assert.is(tokenizer.decode(ids), entry.text[i], `${entry.id}[${i}]`);
      rows++;
    });
  }
  assert.ok(rows >= cases.length);
});

test("decodeTokenSpans builds the text token by token with contiguous spans", () => {
  for (const entry of cases) {
    for (const ids of entry.generated_ids) {
      const { text, spans } = tokenizer.decodeTokenSpans(ids);
      assert.is(spans.length, ids.length);
      let at = 0;
      spans.forEach(([start, end], i) => {
        assert.is(start, at);
        assert.is(text.slice(start, end), tokenizer.tokenToString(ids[i]!));
        at = end;
      });
      assert.is(at, text.length);
      // Each generated token is valid UTF-8 on its own here, so the per-token text equals HF's decode.
      if (!text.includes("\uFFFD")) assert.is(text, entry.text[entry.generated_ids.indexOf(ids)]);
    }
  }
  // Special tokens contribute their literal text; a lone byte of a multi-byte character becomes U+FFFD.
  assert.is(tokenizer.tokenToString(2), "</s>");
  assert.is(tokenizer.tokenToString(605), "<loc_0>");
  assert.is(tokenizer.tokenToString(263), " the");
  const lone = reference.decode.find((entry) => entry.ids.length === 2 && entry.ids[1] === 1230)!;
  assert.is(tokenizer.tokenToString(lone.ids[0]!) + tokenizer.tokenToString(1230), lone.text);
});

test("ids outside the vocabulary are INVALID_ARGUMENT naming the id and the vocabulary size", async () => {
  await rejects(() => tokenizer.decode([0, reference.vocab_size]), "INVALID_ARGUMENT", new RegExp(`${reference.vocab_size}.*vocab size ${reference.vocab_size}`));
  await rejects(() => tokenizer.decode([-1]), "INVALID_ARGUMENT", /-1/);
  await rejects(() => tokenizer.decode([1.5]), "INVALID_ARGUMENT", /1\.5/);
  await rejects(() => tokenizer.decodeTokenSpans([99999]), "INVALID_ARGUMENT", /99999/);
  await rejects(() => tokenizer.convertIdsToTokens([99999]), "INVALID_ARGUMENT", /99999/);
});

test("missing, malformed and wrong-type tokenizer files are reported with the file and what was expected", async () => {
  const dir = await mkdtemp(join(tmpdir(), "fe-tokenizer-"));
  try {
    await rejects(() => Tokenizer.fromFiles(dir), "MODEL_FILE_MISSING", /tokenizer\.json/);

    await writeFile(join(dir, "tokenizer.json"), "{ not json");
    await rejects(() => Tokenizer.fromFiles(dir), "MODEL_FILE_INVALID", new RegExp(`${join(dir, "tokenizer.json").replaceAll("\\", "\\\\")}.*not valid JSON`));

    const json = JSON.parse(await readFile(join(TINY_MODEL, "tokenizer.json"), "utf8")) as { model: Record<string, unknown> };
    await writeFile(join(dir, "tokenizer.json"), JSON.stringify({ ...json, model: { ...json.model, type: "WordPiece" } }));
    await rejects(() => Tokenizer.fromFiles(dir), "TOKENIZER_INVALID", /tokenizer\.json.*"WordPiece".*expected "BPE"/);

    await writeFile(join(dir, "tokenizer.json"), JSON.stringify(json));
    await writeFile(join(dir, "tokenizer_config.json"), "[1, 2");
    await rejects(() => Tokenizer.fromFiles(dir), "MODEL_FILE_INVALID", /tokenizer_config\.json/);

    // Without tokenizer_config.json, RobertaTokenizer's default special tokens still resolve.
    await rm(join(dir, "tokenizer_config.json"));
    const bare = await Tokenizer.fromFiles(dir);
    assert.equal(bare.encodeWithSpecial("a car"), tokenizer.encodeWithSpecial("a car"));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  await rejects(() => Tokenizer.fromJSON("nope", undefined, "x/tokenizer.json"), "TOKENIZER_INVALID", /x\/tokenizer\.json/);
  await rejects(() => Tokenizer.fromJSON({ model: { type: "BPE", vocab: { a: 0 }, merges: ["a b"] } }), "TOKENIZER_INVALID", /merges\[0\].*"b"/);
  await rejects(() => Tokenizer.fromJSON({ model: { type: "BPE", vocab: { a: 0 }, merges: ["a a a"] } }), "TOKENIZER_INVALID", /merges\[0\]/);
  const json = JSON.parse(await readFile(join(TINY_MODEL, "tokenizer.json"), "utf8")) as unknown;
  await rejects(() => Tokenizer.fromJSON(json, { bos_token: null }, "t.json"), "TOKENIZER_INVALID", /t\.json.*bos_token/);
  await rejects(() => Tokenizer.fromJSON(json, { added_tokens_decoder: { "7": "x" } }, "t.json"), "TOKENIZER_INVALID", /added_tokens_decoder\["7"\]/);
});

test("the model folder copied elsewhere loads identically (fromFiles reads the config too)", async () => {
  const dir = await mkdtemp(join(tmpdir(), "fe-tokenizer-"));
  try {
    await cp(join(TINY_MODEL, "tokenizer.json"), join(dir, "tokenizer.json"));
    await cp(join(TINY_MODEL, "tokenizer_config.json"), join(dir, "tokenizer_config.json"));
    const copy = await Tokenizer.fromFiles(dir);
    assert.is(copy.vocabSize, tokenizer.vocabSize);
    assert.equal([...copy.specialTokenIds].sort((a, b) => a - b), [...tokenizer.specialTokenIds].sort((a, b) => a - b));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test.run();
