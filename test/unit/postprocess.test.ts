import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  DEFAULT_BANNED_GROUNDING_PHRASES,
  cleanGeneratedText,
  postProcessGeneration,
  type BoxesAnswer,
  type NvidiaAnswer,
  type PostProcessOptions,
  type PostProcessResult,
} from "../../src/florence/postprocess.ts";
import { TASKS, TASK_TOKENS } from "../../src/florence/tasks.ts";
import { TINY_MODEL, readReference } from "../support/paths.ts";
import { throwsCode } from "../support/errors.ts";

type ParseCase = { task: string; text: string; image_size: [number, number]; expected?: Record<string, unknown>; error?: string };
type GenerateCase = {
  id: string;
  task: string;
  text: string[];
  image_sizes: [number, number][];
  result: Record<string, unknown>[];
  generated_ids: number[][];
  token_logprobs?: number[][];
};

const PARSE = readReference<ParseCase[]>("parse.json");
const GENERATE = readReference<GenerateCase[]>("generate.json");
const size = (wh: [number, number]) => ({ width: wh[0], height: wh[1] });


/** Every coordinate list of an answer, flat [x, y, x, y, …] (boxes, quads, each polygon). */
function coordinateLists(answer: unknown): number[][] {
  if (typeof answer !== "object" || answer === null) return [];
  const a = answer as Record<string, unknown>;
  const out: number[][] = [];
  for (const key of ["bboxes", "quad_boxes"]) if (Array.isArray(a[key])) out.push(...(a[key] as number[][]));
  if (Array.isArray(a["polygons"])) for (const inst of a["polygons"] as number[][][]) out.push(...inst);
  return out;
}

function withoutCoordinates(answer: unknown): unknown {
  if (typeof answer !== "object" || answer === null) return answer;
  const { bboxes: _b, quad_boxes: _q, polygons: _p, ...rest } = answer as Record<string, unknown>;
  return rest;
}

/** Float mode: same shape and labels as HF; each value truncates to HF's int and is a bin centre (bin + 0.5)·D/1000. */
function assertFloatMatchesHf(task: string, wh: [number, number], text: string, expected: Record<string, unknown>, label: string): void {
  const got = postProcessGeneration(text, task, size(wh)) as Record<string, unknown>;
  assert.equal(Object.keys(got), Object.keys(expected), label);
  assert.equal(withoutCoordinates(got[task]), withoutCoordinates(expected[task]), label);
  const floats = coordinateLists(got[task]);
  const ints = coordinateLists(expected[task]);
  assert.is(floats.length, ints.length, label);
  floats.forEach((list, i) => {
    assert.is(list.length, ints[i]!.length, label);
    list.forEach((v, j) => {
      const dim = j % 2 === 0 ? wh[0] : wh[1];
      assert.is(Math.trunc(v), ints[i]![j], `${label}: ${v} vs HF ${ints[i]![j]}`);
      const bin = Math.round((v * 1000) / dim - 0.5);
      assert.ok(bin >= 0 && v === ((bin + 0.5) * dim) / 1000, `${label}: ${v} is not a bin centre of ${dim}`);
    });
  });
}

test("parse.json: every entry equals HF with coordinates int, and bin centres with float", () => {
  assert.ok(PARSE.length >= 40);
  for (const [i, c] of PARSE.entries()) {
    const label = `parse.json[${i}] ${c.task} ${JSON.stringify(c.text)}`;
    if (c.expected === undefined) {
      // HF raised: we must still give a result (never throw) for any text
      const got = postProcessGeneration(c.text, c.task, size(c.image_size), { coordinates: "int" });
      assert.ok(c.task in got, label);
      continue;
    }
    assert.equal(postProcessGeneration(c.text, c.task, size(c.image_size), { coordinates: "int" }), c.expected, label);
    assertFloatMatchesHf(c.task, c.image_size, c.text, c.expected, label);
  }
});

test("generate.json: every generated text of every case gives HF's post_process_generation result", () => {
  let checked = 0;
  for (const c of GENERATE) {
    c.text.forEach((text, i) => {
      const wh = c.image_sizes[i]!;
      assert.equal(postProcessGeneration(text, c.task, size(wh), { coordinates: "int" }), c.result[i], c.id);
      assertFloatMatchesHf(c.task, wh, text, c.result[i] as Record<string, unknown>, c.id);
      checked++;
    });
  }
  assert.ok(checked >= 100, `only ${checked} generations`);
});

// Tricky inputs. Expectations were derived by reading HF's processing_florence2.py (Python `re`: \d is Unicode Nd,
// \s / strip() use Python's whitespace set, `.` excludes only "\n", findall restarts, sequential replace(), torch
// float32 and .int()), and confirmed by running transformers 5.17 + torch 2.11 on Python 3.12 (x86-64).
const TRICKY: Array<[string, string, [number, number], unknown]> = [
  ["<OD>", "car\nred<loc_1><loc_2><loc_3><loc_4>", [640, 480], { bboxes: [], labels: [] }],
  ["<OD>", "\ncar <loc_10><loc_20><loc_30><loc_40>", [640, 480], { bboxes: [[6, 9, 19, 19]], labels: ["car"] }],
  ["<OD>", "car\u3000<loc_10><loc_20><loc_30><loc_40>", [640, 480], { bboxes: [[6, 9, 19, 19]], labels: ["car"] }],
  ["<CAPTION_TO_PHRASE_GROUNDING>", "it\ufeff<loc_10><loc_20><loc_30><loc_40>it <loc_1><loc_2><loc_3><loc_4>", [640, 480], { bboxes: [[6, 9, 19, 19]], labels: ["it"] }],
  ["<CAPTION>", "\u001ctext\u0085", [640, 480], "text"],
  ["<CAPTION>", "\ufefftext\ufeff", [640, 480], "\ufefftext\ufeff"],
  ["<OD>", "car<loc_\u0661\u0662><loc_2><loc_3><loc_4>", [1000, 1000], { bboxes: [[12, 2, 3, 4]], labels: ["car"] }],
  ["<OD>", "car<loc_\ud835\udfcf\ud835\udfd0><loc_2><loc_3><loc_4>", [1000, 1000], { bboxes: [[12, 2, 3, 4]], labels: ["car"] }],
  ["<OD>", "car<loc_\uff15\uff10\uff10><loc_2><loc_3><loc_4>", [1000, 1000], { bboxes: [[500, 2, 3, 4]], labels: ["car"] }],
  ["<OCR_WITH_REGION>", "A\nB<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>", [1000, 1000], { quad_boxes: [[1, 2, 3, 4, 5, 6, 7, 8]], labels: ["B"] }],
  ["<OCR_WITH_REGION>", "<loc_9><loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>", [1000, 1000], { quad_boxes: [[1, 2, 3, 4, 5, 6, 7, 8]], labels: ["<loc_9>"] }],
  ["<OCR_WITH_REGION>", "x\r<loc_100><loc_100><loc_200><loc_100><loc_200><loc_150><loc_100><loc_150>\ny<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8><loc_9>", [640, 480], { quad_boxes: [[64, 48, 128, 48, 128, 72, 64, 72], [0, 1, 2, 2, 3, 3, 4, 4]], labels: ["x", "y"] }],
  ["<REFERRING_EXPRESSION_SEGMENTATION>", "<loc_5><sep><loc_1><loc_2><loc_3><loc_4>", [1000, 1000], { polygons: [[[], [1, 2, 3, 4]]], labels: ["<sep>"] }],
  ["<REFERRING_EXPRESSION_SEGMENTATION>", "<loc_7><sep>label<loc_1><loc_2><loc_3><loc_4><loc_5>", [1000, 1000], { polygons: [[[1, 2, 3, 4]]], labels: [""] }],
  ["<REFERRING_EXPRESSION_SEGMENTATION>", "<loc_1><loc_2><sep><sep><loc_3><loc_4><loc_5><loc_6><sep><loc_7>", [1000, 1000], { polygons: [[[1, 2], [3, 4, 5, 6], []]], labels: [""] }],
  ["<OPEN_VOCABULARY_DETECTION>", "car<po<s>ly><loc_1><loc_2><loc_3><loc_4><loc_5><loc_6></poly>", [1000, 1000], { bboxes: [[1, 2, 3, 4]], bboxes_labels: ["poly>"], polygons: [], polygons_labels: [] }],
  ["<OPEN_VOCABULARY_DETECTION>", "car<sep><loc_1><loc_2><loc_3><loc_4><poly><loc_5><loc_6><loc_7><loc_8></poly>", [1000, 1000], { bboxes: [], bboxes_labels: [], polygons: [[[5, 6, 7, 8]]], polygons_labels: ["car<sep>"] }],
  ["<REGION_PROPOSAL>", "<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8><loc_9>", [1000, 1000], { bboxes: [[1, 2, 3, 4], [5, 6, 7, 8]], labels: ["", ""] }],
  ["<CAPTION_TO_PHRASE_GROUNDING>", "a dog<loc_1><loc_2><loc_3><loc_4>it<loc_5><loc_6><loc_7><loc_8>The image<loc_9><loc_9><loc_9><loc_9>", [1000, 1000], { bboxes: [[1, 2, 3, 4], [9, 9, 9, 9]], labels: ["a dog", "The image"] }],
  ["<CAPTION>", "<</s>s>", [1, 1], "<s>"],
  ["<CAPTION>", "</<s>s> x </s>", [1, 1], "x"],
  ["<OD>", "\ud800car<loc_1><loc_2><loc_3><loc_4>", [1000, 1000], { bboxes: [[1, 2, 3, 4]], labels: ["car"] }],
  ["<DENSE_REGION_CAPTION>", "a\rb<loc_1><loc_2><loc_3><loc_4>c\u2028d<loc_5><loc_6><loc_7><loc_8>", [1000, 1000], { bboxes: [[1, 2, 3, 4], [5, 6, 7, 8]], labels: ["a\rb", "cd"] }],
  ["<OD>", "car<loc_999><loc_999><loc_999><loc_999>bus<loc_0><loc_0><loc_0><loc_0>", [7, 5], { bboxes: [[6, 4, 6, 4], [0, 0, 0, 0]], labels: ["car", "bus"] }],
  ["<OD>", "car<loc_500><loc_500><loc_500><loc_500>", [1500, 90], { bboxes: [[750, 45, 750, 45]], labels: ["car"] }],
  // float32 then .int(): out of int32 range gives INT_MIN on x86-64
  ["<OD>", "big<loc_1000000000000><loc_2147483648><loc_16777217><loc_1200>", [640, 480], { bboxes: [[-2147483648, 1030792128, 10737418, 576]], labels: ["big"] }],
  ["<REGION_TO_SEGMENTATION>", "<poly><loc_1><loc_2><loc_3><loc_4><loc_5><loc_6></poly><poly><loc_7><loc_8><loc_9></poly>", [640, 480], { polygons: [[[0, 1, 2, 2, 3, 3]], [[4, 4]]], labels: ["", ""] }],
  ["<OD>", "car<loc_1><loc_2><loc_3><loc_4><pad><loc_5><loc_6><loc_7><loc_8>", [640, 480], { bboxes: [[0, 1, 2, 2], [3, 3, 4, 4]], labels: ["car", "car"] }],
  ["<OD>", "car<loc_1><pad><loc_2><loc_3><loc_4>", [640, 480], { bboxes: [[0, 1, 2, 2]], labels: ["car"] }],
  ["<OCR_WITH_REGION>", "EXIT<loc_10><loc_20><loc_30><loc_20><loc_30><loc_40><loc_10><loc_40>", [0, 0], { quad_boxes: [[0, 0, 0, 0, 0, 0, 0, 0]], labels: ["EXIT"] }],
];

test("tricky inputs: Python re / str / torch semantics", () => {
  for (const [task, text, wh, expected] of TRICKY) {
    assert.equal(postProcessGeneration(text, task, size(wh), { coordinates: "int" }), { [task]: expected }, `${task} ${JSON.stringify(text)}`);
  }
});

test("float coordinates are bin centres; float32 is HF's value before .int()", () => {
  const text = "car<loc_52><loc_332><loc_932><loc_774>";
  const f = postProcessGeneration(text, "<OD>", { width: 640, height: 480 }) as { "<OD>": BoxesAnswer };
  assert.equal(f["<OD>"].bboxes, [[(52.5 * 640) / 1000, (332.5 * 480) / 1000, (932.5 * 640) / 1000, (774.5 * 480) / 1000]]);
  const f32 = postProcessGeneration(text, "<OD>", { width: 640, height: 480 }, { coordinates: "float32" }) as { "<OD>": BoxesAnswer };
  assert.equal(f32["<OD>"].bboxes[0]!.map((v) => Math.fround(v) === v), [true, true, true, true]);
  assert.equal(f32["<OD>"].bboxes[0]!.map(Math.trunc), [33, 159, 596, 371]);
});

test("banned grounding phrases: default list is processor_config.json's; config and option override it", () => {
  const config = JSON.parse(readFileSync(join(TINY_MODEL, "processor_config.json"), "utf8")) as { post_processor_config: Record<string, unknown> };
  const list = (config.post_processor_config["phrase_grounding"] as { banned_grounding_tokens: string[] }).banned_grounding_tokens;
  assert.equal([...DEFAULT_BANNED_GROUNDING_PHRASES], list);
  const text = "it<loc_1><loc_2><loc_3><loc_4>dog<loc_5><loc_6><loc_7><loc_8>";
  const task = "<CAPTION_TO_PHRASE_GROUNDING>";
  const labels = (options: PostProcessOptions) => ((postProcessGeneration(text, task, { width: 1000, height: 1000 }, options)[task]) as BoxesAnswer).labels;
  assert.equal(labels({}), ["dog"]);
  assert.equal(labels({ postProcessorConfig: config.post_processor_config }), ["dog"]);
  assert.equal(labels({ postProcessorConfig: { phrase_grounding: { banned_grounding_tokens: ["dog"] } } }), ["it"]);
  // HF: config.get("phrase_grounding", {}).get("banned_grounding_tokens", []) — nothing banned
  assert.equal(labels({ postProcessorConfig: { ocr: {} } }), ["it", "dog"]);
  assert.equal(labels({ bannedGroundingPhrases: [] }), ["it", "dog"]);
});

test("OCR AREA_THRESHOLD (HF's upper-case key) with HF's three-term shoelace sum", () => {
  // quad (10,20) (30,20) (30,40) (10,40) on 1000×1000: true area 400, HF's sum (no closing term) gives 500
  const text = "EXIT<loc_10><loc_20><loc_30><loc_20><loc_30><loc_40><loc_10><loc_40>";
  const count = (config: Record<string, unknown>) =>
    (postProcessGeneration(text, "<OCR_WITH_REGION>", { width: 1000, height: 1000 }, { postProcessorConfig: config })["<OCR_WITH_REGION>"] as { labels: string[] }).labels.length;
  assert.is(count({ ocr: { AREA_THRESHOLD: 0.00045 } }), 1);
  assert.is(count({ ocr: { AREA_THRESHOLD: 0.0005 } }), 1);
  assert.is(count({ ocr: { AREA_THRESHOLD: 0.00051 } }), 0);
  assert.is(count({ ocr: { area_threshold: 0.5 } }), 1);
});

test("cleanGeneratedText: HF's sequential replace with an offset map to the raw text", () => {
  const raw = "</<s>s>a<pad>b</s>";
  const cleaned = cleanGeneratedText(raw);
  assert.is(cleaned.text, "ab");
  assert.equal([...cleaned.offsets], [7, 13, raw.length]);
  assert.is(raw[cleaned.offsets[0]!], "a");
  assert.is(raw[cleaned.offsets[1]!], "b");
  const plain = cleanGeneratedText("car");
  assert.equal([...plain.offsets], [0, 1, 2, 3]);
});

// ---- scores ----

// GPT-2 byte-level alphabet, to turn the fixture's generated ids into each token's text (as HF decodes them).
function byteDecoder(): Map<string, number> {
  const bytes: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bytes.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bytes.push(b);
  for (let b = 0xae; b <= 0xff; b++) bytes.push(b);
  const chars = [...bytes];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bytes.includes(b)) {
      bytes.push(b);
      chars.push(256 + n++);
    }
  }
  return new Map(bytes.map((b, i) => [String.fromCharCode(chars[i]!), b]));
}

function tokenTexts(ids: number[]): string[] {
  const tok = JSON.parse(readFileSync(join(TINY_MODEL, "tokenizer.json"), "utf8")) as {
    model: { vocab: Record<string, number> };
    added_tokens: Array<{ id: number; content: string }>;
  };
  const added = new Map(tok.added_tokens.map((t) => [t.id, t.content]));
  const vocab = new Map(Object.entries(tok.model.vocab).map(([k, v]) => [v, k]));
  const decoder = byteDecoder();
  return ids.map((id) => {
    const special = added.get(id);
    if (special !== undefined) return special;
    const piece = vocab.get(id)!;
    return new TextDecoder().decode(new Uint8Array([...piece].map((c) => decoder.get(c)!)));
  });
}

const scoreOf = (logprobs: number[]) => Math.exp(logprobs.reduce((a, b) => a + b, 0) / logprobs.length);

test("scores: per box from the label and <loc_N> tokens it matched (street.jpg <OD> greedy, indices read off its text)", () => {
  const c = GENERATE.find((g) => g.id === "street.jpg|<OD>|greedy")!;
  const ids = c.generated_ids[0]!;
  const texts = tokenTexts(ids);
  assert.is(texts.join(""), c.text[0]);
  const lp = c.token_logprobs![0]!;
  assert.is(lp.length, ids.length - 1);
  // tokens: 0 </s> (decoder start, no log-prob), 1–3 <s>, 4–6 <loc_850>, 7–9 <loc_158>, 10–12 <loc_71>, …; token t ↔ lp[t - 1]
  // box 1 = label "loc_850>" (inside token 4) + tokens 5–8; box 2 = label + tokens 9–12
  const got = postProcessGeneration(c.text[0]!, c.task, size(c.image_sizes[0]!), { coordinates: "int", tokens: { texts, logprobs: lp } });
  const answer = got[c.task] as BoxesAnswer;
  assert.equal({ bboxes: answer.bboxes, labels: answer.labels }, c.result[0]![c.task]);
  assert.equal(Object.keys(answer), ["bboxes", "labels", "scores"]);
  const expected = [scoreOf([lp[3]!, lp[4]!, lp[5]!, lp[6]!, lp[7]!]), scoreOf([lp[3]!, lp[8]!, lp[9]!, lp[10]!, lp[11]!])];
  assert.is(answer.scores!.length, 2);
  answer.scores!.forEach((s, i) => assert.ok(Math.abs(s! - expected[i]!) < 1e-12, `${s} vs ${expected[i]}`));
  // the same through spans (Int32Array pairs and tuples)
  const spans: [number, number][] = [];
  let at = 0;
  for (const t of texts) spans.push([at, (at += t.length)]);
  const viaTuples = postProcessGeneration(c.text[0]!, c.task, size(c.image_sizes[0]!), { tokens: { spans, logprobs: lp } });
  const viaTyped = postProcessGeneration(c.text[0]!, c.task, size(c.image_sizes[0]!), { tokens: { spans: Int32Array.from(spans.flat()), logprobs: Float32Array.from(lp) } });
  assert.equal((viaTuples[c.task] as BoxesAnswer).scores, answer.scores);
  (viaTyped[c.task] as BoxesAnswer).scores!.forEach((s, i) => assert.ok(Math.abs(s! - expected[i]!) < 1e-6));
});

test("scores: pure-text tasks get one score beside the answer (street.jpg <CAPTION> greedy)", () => {
  const c = GENERATE.find((g) => g.id === "street.jpg|<CAPTION>|greedy")!;
  const texts = tokenTexts(c.generated_ids[0]!);
  assert.is(texts.join(""), c.text[0]);
  const lp = c.token_logprobs![0]!;
  const got = postProcessGeneration(c.text[0]!, c.task, size(c.image_sizes[0]!), { tokens: { texts, logprobs: lp } });
  assert.is(got[c.task], c.result[0]![c.task]);
  // the answer is tokens 4..23 (after </s><s><s><s>, before the final </s>) ↔ lp[3..22]
  assert.ok(Math.abs((got["score"] as number) - scoreOf(lp.slice(3, 23))) < 1e-12);
  assert.equal(Object.keys(got), [c.task, "score"]);
});

test("scores: every greedy fixture case keeps HF's result and adds scores in [0, 1] parallel to it", () => {
  let cases = 0;
  for (const c of GENERATE) {
    if (c.token_logprobs === undefined) continue;
    c.text.forEach((text, i) => {
      const texts = tokenTexts(c.generated_ids[i]!);
      if (texts.join("") !== text) return;
      const got = postProcessGeneration(text, c.task, size(c.image_sizes[i]!), { coordinates: "int", tokens: { texts, logprobs: c.token_logprobs![i]! } });
      const answer = got[c.task];
      const hf = c.result[i]![c.task];
      if (typeof hf === "string") {
        assert.is(answer, hf);
        const s = got["score"] as number;
        assert.ok(s > 0 && s <= 1, `${c.id}: ${s}`);
      } else {
        const a = answer as unknown as Record<string, unknown>;
        const { scores, bboxes_scores, polygons_scores, ...rest } = a;
        assert.equal(rest, hf, c.id);
        const pairs: Array<[unknown, unknown]> = [[scores, (hf as Record<string, unknown[]>)["labels"]], [bboxes_scores, (hf as Record<string, unknown[]>)["bboxes_labels"]], [polygons_scores, (hf as Record<string, unknown[]>)["polygons_labels"]]];
        for (const [list, labels] of pairs) {
          if (labels === undefined) continue;
          assert.is((list as unknown[]).length, (labels as unknown[]).length, c.id);
          for (const s of list as number[]) assert.ok(s > 0 && s <= 1, `${c.id}: ${s}`);
        }
      }
      cases++;
    });
  }
  assert.ok(cases >= 40, `only ${cases} cases`);
});

test("scores: asking without token log-probabilities is INVALID_ARGUMENT; scores:false leaves HF's keys", () => {
  throwsCode(() => postProcessGeneration("car", "<OD>", { width: 10, height: 10 }, { scores: true }), "INVALID_ARGUMENT", /log-probabilities/);
  const got = postProcessGeneration("car<loc_1><loc_2><loc_3><loc_4>", "<OD>", { width: 10, height: 10 }, { scores: false, tokens: { texts: ["car<loc_1><loc_2><loc_3><loc_4>"], logprobs: [0] } });
  assert.equal(Object.keys(got["<OD>"] as object), ["bboxes", "labels"]);
});

// ---- NVIDIA hosted-API shape ----

test("format nvidia: { content, entities: { bboxes, quad_boxes, labels, polygons } }", () => {
  const od = PARSE.find((c) => c.task === "<OD>" && c.text.startsWith("</s><s>car"))!;
  const gotOd = postProcessGeneration(od.text, od.task, size(od.image_size), { coordinates: "int", format: "nvidia" })["<OD>"] as NvidiaAnswer;
  const hfOd = od.expected!["<OD>"] as BoxesAnswer;
  assert.equal(gotOd, {
    content: "car<loc_52><loc_332><loc_932><loc_774>person<loc_1><loc_2><loc_3><loc_4>",
    entities: { bboxes: hfOd.bboxes, quad_boxes: [], labels: hfOd.labels, polygons: [] },
  });

  const ocr = PARSE.find((c) => c.task === "<OCR_WITH_REGION>" && c.text.includes("EXIT") && c.text.includes("OPEN"))!;
  const gotOcr = postProcessGeneration(ocr.text, ocr.task, size(ocr.image_size), { coordinates: "int", format: "nvidia" })[ocr.task] as NvidiaAnswer;
  const hfOcr = ocr.expected![ocr.task] as { quad_boxes: number[][]; labels: string[] };
  assert.equal(gotOcr.entities, { bboxes: [], quad_boxes: hfOcr.quad_boxes, labels: hfOcr.labels, polygons: [] });

  const seg = PARSE.find((c) => c.task === "<REFERRING_EXPRESSION_SEGMENTATION>" && c.text.startsWith("<poly>"))!;
  const gotSeg = postProcessGeneration(seg.text, seg.task, size(seg.image_size), { coordinates: "int", format: "nvidia" })[seg.task] as NvidiaAnswer;
  const hfSeg = seg.expected![seg.task] as { polygons: number[][][]; labels: string[] };
  assert.equal(gotSeg.entities, { bboxes: [], quad_boxes: [], labels: hfSeg.labels, polygons: hfSeg.polygons });

  const caption = postProcessGeneration("</s><s>A car parked.</s>", "<CAPTION>", { width: 640, height: 480 }, { format: "nvidia" });
  assert.equal(caption, { "<CAPTION>": { content: "A car parked.", entities: { bboxes: [], quad_boxes: [], labels: [], polygons: [] } } });

  // open-vocabulary detection: box labels first, then polygon labels
  const ovd = postProcessGeneration("car<loc_1><loc_2><loc_3><loc_4>", "<OPEN_VOCABULARY_DETECTION>", { width: 1000, height: 1000 }, { coordinates: "int", format: "nvidia" });
  assert.equal((ovd["<OPEN_VOCABULARY_DETECTION>"] as NvidiaAnswer).entities, { bboxes: [[1, 2, 3, 4]], quad_boxes: [], labels: ["car"], polygons: [] });

  const scored = postProcessGeneration("car<loc_1><loc_2><loc_3><loc_4>", "<OD>", { width: 1000, height: 1000 }, {
    format: "nvidia",
    tokens: { texts: ["car", "<loc_1>", "<loc_2>", "<loc_3>", "<loc_4>"], logprobs: [-0.5, -0.1, -0.1, -0.1, -0.2] },
  });
  assert.ok(Math.abs((scored["<OD>"] as NvidiaAnswer).entities.scores![0]! - Math.exp(-1 / 5)) < 1e-12);
});

// ---- robustness ----

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

test("any string gives a result: empty, truncated, malformed, non-ASCII, lone surrogates, random", () => {
  const pieces = ["<loc_", "<loc_1>", "<loc_999>", "<loc_12", ">", "<", "<s>", "</s>", "<pad>", "<poly>", "</poly>", "<sep>", "car", " ", "\n", "\ud800", "\udfff", "😀", "日本", "\u0000", "\ufeff", "<od>", "<loc_\u0663>"];
  const rand = lcg(7);
  const texts = ["", "<", "<loc_", "<loc_1><loc_2><loc_3>", "\ud800\udc00\ud800"];
  for (let i = 0; i < 400; i++) {
    let t = "";
    const n = Math.floor(rand() * 40);
    for (let k = 0; k < n; k++) t += pieces[Math.floor(rand() * pieces.length)];
    texts.push(t);
  }
  for (const text of texts) {
    for (const task of TASK_TOKENS) {
      for (const options of [{ coordinates: "int" as const }, { format: "nvidia" as const }, { tokens: { texts: [text], logprobs: [-1] } }]) {
        const got = postProcessGeneration(text, task, { width: 640, height: 480 }, options);
        assert.ok(task in got);
      }
    }
  }
});

test("huge inputs stay linear", () => {
  const huge = [
    "a".repeat(1_000_000),
    "<".repeat(1_000_000),
    "\n".repeat(500_000),
    "<loc_1>".repeat(150_000),
    "x<loc_1><loc_2><loc_3>".repeat(50_000),
    "<poly>".repeat(100_000) + "</poly>",
    "</poly>" + "<poly><loc_1>".repeat(80_000),
    "a".repeat(300_000) + "<loc_1>".repeat(7) + "b",
  ];
  const started = Date.now();
  for (const text of huge) {
    for (const task of ["<OD>", "<REGION_PROPOSAL>", "<OCR_WITH_REGION>", "<REFERRING_EXPRESSION_SEGMENTATION>", "<OPEN_VOCABULARY_DETECTION>", "<CAPTION_TO_PHRASE_GROUNDING>", "<CAPTION>"]) {
      assert.ok(task in postProcessGeneration(text, task, { width: 640, height: 480 }));
    }
  }
  // linear-time scanners: reported, not asserted (a loaded machine is no quadratic blow-up); `npm run bench` measures
  console.log(`  adversarial inputs parsed in ${Date.now() - started} ms`);
  const many = postProcessGeneration("<loc_1>".repeat(150_000), "<REGION_PROPOSAL>", { width: 640, height: 480 }, { coordinates: "int" });
  assert.is((many["<REGION_PROPOSAL>"] as BoxesAnswer).bboxes.length, 37_500);
});

test("unknown tasks and bad options are FlorenceErrors", () => {
  throwsCode(() => postProcessGeneration("x", "<FOO>", { width: 1, height: 1 }), "UNKNOWN_TASK", /<FOO>[\s\S]*<OD>/);
  throwsCode(() => postProcessGeneration("x", "od", { width: 1, height: 1 }), "UNKNOWN_TASK");
  throwsCode(() => postProcessGeneration("x", "<OD>", { width: Number.NaN, height: 1 }), "INVALID_ARGUMENT", /image size/);
  throwsCode(() => postProcessGeneration("x", "<OD>", { width: 1, height: 1 }, { coordinates: "px" as "int" }), "INVALID_ARGUMENT", /coordinates/);
  throwsCode(() => postProcessGeneration("x", "<OD>", { width: 1, height: 1 }, { format: "coco" as "hf" }), "INVALID_ARGUMENT", /format/);
  const keys = (r: PostProcessResult) => Object.keys(r);
  for (const token of TASK_TOKENS) assert.equal(keys(postProcessGeneration("", token, { width: 1, height: 1 })), [TASKS[token].token]);
});

test.run();
