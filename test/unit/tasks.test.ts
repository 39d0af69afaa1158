import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  TASKS,
  TASK_TOKENS,
  constructPrompt,
  constructPromptLenient,
  isTaskToken,
  parseRegionInput,
  pyStrip,
  quantizeBox,
  regionToLocTokens,
  taskBySlug,
  taskSpec,
} from "../../src/florence/tasks.ts";
import { readReference } from "../support/paths.ts";
import { throwsCode } from "../support/errors.ts";

// Copied from transformers 5.17 models/florence2/processing_florence2.py (Florence2Processor.__init__).
const HF_POST_PROCESSING_TYPE: Record<string, string> = {
  "<OCR>": "pure_text",
  "<OCR_WITH_REGION>": "ocr",
  "<CAPTION>": "pure_text",
  "<DETAILED_CAPTION>": "pure_text",
  "<MORE_DETAILED_CAPTION>": "pure_text",
  "<OD>": "description_with_bboxes",
  "<DENSE_REGION_CAPTION>": "description_with_bboxes",
  "<CAPTION_TO_PHRASE_GROUNDING>": "phrase_grounding",
  "<REFERRING_EXPRESSION_SEGMENTATION>": "polygons",
  "<REGION_TO_SEGMENTATION>": "polygons",
  "<OPEN_VOCABULARY_DETECTION>": "description_with_bboxes_or_polygons",
  "<REGION_TO_CATEGORY>": "pure_text",
  "<REGION_TO_DESCRIPTION>": "pure_text",
  "<REGION_TO_OCR>": "pure_text",
  "<REGION_PROPOSAL>": "bboxes",
};
const HF_PROMPTS_WITHOUT_INPUTS: Record<string, string> = {
  "<OCR>": "What is the text in the image?",
  "<OCR_WITH_REGION>": "What is the text in the image, with regions?",
  "<CAPTION>": "What does the image describe?",
  "<DETAILED_CAPTION>": "Describe in detail what is shown in the image.",
  "<MORE_DETAILED_CAPTION>": "Describe with a paragraph what is shown in the image.",
  "<OD>": "Locate the objects with category name in the image.",
  "<DENSE_REGION_CAPTION>": "Locate the objects in the image, with their descriptions.",
  "<REGION_PROPOSAL>": "Locate the region proposals in the image.",
};
const HF_PROMPTS_WITH_INPUT: Record<string, string> = {
  "<CAPTION_TO_PHRASE_GROUNDING>": "Locate the phrases in the caption: {input}",
  "<REFERRING_EXPRESSION_SEGMENTATION>": "Locate {input} in the image with mask",
  "<REGION_TO_SEGMENTATION>": "What is the polygon mask of region {input}",
  "<OPEN_VOCABULARY_DETECTION>": "Locate {input} in the image.",
  "<REGION_TO_CATEGORY>": "What is the region {input}?",
  "<REGION_TO_DESCRIPTION>": "What does the region {input} describe?",
  "<REGION_TO_OCR>": "What text is in the region {input}?",
};
const HF_ONLY_CONTENT = (token: string): string => `Task token ${token} should be the only content in the prompt.`;


test("the task table is HF's: 15 tokens, parse types, prompts, which take text", () => {
  assert.equal([...TASK_TOKENS].sort(), Object.keys(HF_POST_PROCESSING_TYPE).sort());
  for (const token of TASK_TOKENS) {
    const spec = TASKS[token];
    assert.is(spec.token, token);
    assert.is(spec.parseType, HF_POST_PROCESSING_TYPE[token], token);
    assert.is(spec.takesText, token in HF_PROMPTS_WITH_INPUT, token);
    assert.is(spec.prompt, HF_PROMPTS_WITH_INPUT[token] ?? HF_PROMPTS_WITHOUT_INPUTS[token], token);
    assert.is(spec.regionInput, token.startsWith("<REGION_TO_"), token);
    assert.is(spec.slug, token.slice(1, -1).toLowerCase());
    assert.is(taskBySlug(spec.slug), token);
    assert.ok(isTaskToken(token));
  }
  assert.is(TASKS["<OD>"].slug, "od");
  assert.is(TASKS["<OCR_WITH_REGION>"].slug, "ocr_with_region");
  assert.is(taskBySlug("nope"), undefined);
  assert.not.ok(isTaskToken("<od>"));
  assert.not.ok(isTaskToken("toString"));
});

test("constructPrompt: every task against HF's templates", () => {
  for (const [token, prompt] of Object.entries(HF_PROMPTS_WITHOUT_INPUTS)) {
    assert.is(constructPrompt(token), prompt);
    assert.is(constructPrompt(token, ""), prompt);
  }
  const inputs: Record<string, string> = {
    "<CAPTION_TO_PHRASE_GROUNDING>": "A red car parks beside a green tree",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "the red car",
    "<OPEN_VOCABULARY_DETECTION>": "car",
    "<REGION_TO_SEGMENTATION>": "<loc_100><loc_200><loc_500><loc_700>",
    "<REGION_TO_CATEGORY>": "<loc_52><loc_332><loc_932><loc_774>",
    "<REGION_TO_DESCRIPTION>": "<loc_0><loc_0><loc_999><loc_999>",
    "<REGION_TO_OCR>": "<loc_10><loc_20><loc_600><loc_300>",
  };
  for (const [token, template] of Object.entries(HF_PROMPTS_WITH_INPUT)) {
    const input = inputs[token]!;
    assert.is(constructPrompt(token, input), template.replace("{input}", input), token);
    // HF strips the input with Python's whitespace set
    assert.is(constructPrompt(token, `\u3000 ${input}\x1c\n`), template.replace("{input}", input), token);
  }
});

test("constructPrompt equals HF's prompt for every generate case of the fixture", () => {
  const cases = readReference<Array<{ id: string; prompt: string | string[]; task: string; text_input: string | null }>>("generate.json");
  let checked = 0;
  for (const c of cases) {
    const prompts = Array.isArray(c.prompt) ? c.prompt : [c.prompt];
    for (const prompt of prompts) {
      const task = c.task ?? prompt;
      const input = c.text_input ?? undefined;
      const template = HF_PROMPTS_WITH_INPUT[task] ?? HF_PROMPTS_WITHOUT_INPUTS[task]!;
      const expected = input === undefined ? template : template.replace("{input}", input);
      assert.is(constructPrompt(task, input), expected, c.id);
      assert.is(constructPromptLenient(prompt), expected, c.id);
      checked++;
    }
  }
  assert.ok(checked >= 100, `only ${checked} prompts checked`);
});

test("constructPromptLenient is HF's _construct_prompts (outputs confirmed with transformers 5.17)", () => {
  const ok: Array<[string, string]> = [
    ["", ""],
    ["hello", "hello"],
    ["<CAPTION_TO_PHRASE_GROUNDING>", "Locate the phrases in the caption: "],
    ["<REFERRING_EXPRESSION_SEGMENTATION>", "Locate  in the image with mask"],
    ["<CAPTION_TO_PHRASE_GROUNDING> car ", "Locate the phrases in the caption: car"],
    ["<CAPTION_TO_PHRASE_GROUNDING>\u3000x\x1c", "Locate the phrases in the caption: x"],
    ["<CAPTION_TO_PHRASE_GROUNDING>a <CAPTION_TO_PHRASE_GROUNDING> b", "Locate the phrases in the caption: a  b"],
    ["<REFERRING_EXPRESSION_SEGMENTATION>a <CAPTION_TO_PHRASE_GROUNDING> b", "Locate the phrases in the caption: <REFERRING_EXPRESSION_SEGMENTATION>a  b"],
    ["<OPEN_VOCABULARY_DETECTION>{x}", "Locate {x} in the image."],
    ["<REGION_TO_OCR>$&", "What text is in the region $&?"],
    ["<REGION_TO_OCR><REGION_TO_OCR>a", "What text is in the region a?"],
    ["<CAPTION_TO_PHRASE_GROUNDING><loc_1><loc_2><loc_3><loc_4>", "Locate the phrases in the caption: <loc_1><loc_2><loc_3><loc_4>"],
  ];
  for (const [prompt, expected] of ok) assert.is(constructPromptLenient(prompt), expected, JSON.stringify(prompt));
  const errors: Array<[string, string]> = [
    ["<CAPTION> car ", "<CAPTION>"],
    ["<OD><OD>", "<OD>"],
    ["<OCR><OCR_WITH_REGION>", "<OCR>"],
    ["x<CAPTION>", "<CAPTION>"],
    ["<DENSE_REGION_CAPTION><OD>", "<OD>"],
    ["<REGION_PROPOSAL><OD>", "<OD>"],
    ["<CAPTION_TO_PHRASE_GROUNDING><OD>", "<OD>"],
    ["<OCR_WITH_REGION><OD>", "<OCR_WITH_REGION>"],
  ];
  for (const [prompt, token] of errors) throwsCode(() => constructPromptLenient(prompt), "TASK_INPUT_INVALID", HF_ONLY_CONTENT(token));
});

test("constructPrompt errors: unknown task, extra text, missing text, task tokens in the text", () => {
  throwsCode(() => constructPrompt("<FOO>"), "UNKNOWN_TASK", /<FOO>[\s\S]*<CAPTION>[\s\S]*<OCR_WITH_REGION>/);
  throwsCode(() => constructPrompt("od"), "UNKNOWN_TASK", "<OD>");
  throwsCode(() => constructPrompt(""), "UNKNOWN_TASK");
  throwsCode(() => constructPrompt("<OD>", "car"), "TASK_INPUT_INVALID", HF_ONLY_CONTENT("<OD>"));
  throwsCode(() => constructPrompt("<CAPTION>", " "), "TASK_INPUT_INVALID", HF_ONLY_CONTENT("<CAPTION>"));
  // HF checks its no-input tokens in dict order: <OCR> comes before <OD>
  throwsCode(() => constructPrompt("<OD>", "<OCR>"), "TASK_INPUT_INVALID", HF_ONLY_CONTENT("<OCR>"));
  throwsCode(() => constructPrompt("<OPEN_VOCABULARY_DETECTION>", "a <OD>"), "TASK_INPUT_INVALID", HF_ONLY_CONTENT("<OD>"));
  for (const token of TASK_TOKENS.filter((t) => TASKS[t].takesText)) {
    throwsCode(() => constructPrompt(token), "TASK_INPUT_INVALID", /needs a text input/);
    throwsCode(() => constructPrompt(token, " \u3000\n"), "TASK_INPUT_INVALID", /needs a text input/);
  }
  throwsCode(() => constructPrompt("<REFERRING_EXPRESSION_SEGMENTATION>", "a <CAPTION_TO_PHRASE_GROUNDING> b"), "TASK_INPUT_INVALID", "<CAPTION_TO_PHRASE_GROUNDING>");
});

test("region inputs: exactly four <loc_N>, N in 0..999, or pixels with the image size", () => {
  const bad = [
    "<loc_1><loc_2><loc_3>",
    "<loc_1><loc_2><loc_3><loc_4><loc_5>",
    "<loc_1000><loc_2><loc_3><loc_4>",
    "<loc_01><loc_2><loc_3><loc_4>",
    "<loc_-1><loc_2><loc_3><loc_4>",
    "<loc_\u0661><loc_2><loc_3><loc_4>",
    "car",
    "1,2,3",
    "1,2,3,x",
    "<loc_1> <loc_2><loc_3><loc_4>",
  ];
  for (const text of bad) {
    throwsCode(() => constructPrompt("<REGION_TO_CATEGORY>", text, { width: 640, height: 480 }), "TASK_INPUT_INVALID", "<REGION_TO_CATEGORY>");
  }
  assert.is(constructPrompt("<REGION_TO_CATEGORY>", " <loc_0><loc_0><loc_999><loc_999> "), "What is the region <loc_0><loc_0><loc_999><loc_999>?");
  throwsCode(() => constructPrompt("<REGION_TO_OCR>", "10,20,30,40"), "TASK_INPUT_INVALID", /image size/);
  // floor(x / (W/1000)): 33.5/0.64 = 52.3, 160/0.48 = 333.3, 597/0.64 = 932.8, 372/0.48 = 775
  assert.is(constructPrompt("<REGION_TO_SEGMENTATION>", "33.5, 160, 597, 372", { width: 640, height: 480 }), "What is the polygon mask of region <loc_52><loc_333><loc_932><loc_775>");
  assert.equal(parseRegionInput("<loc_52><loc_332><loc_932><loc_774>"), [52, 332, 932, 774]);
  assert.equal(parseRegionInput("0,0,640,480", { width: 640, height: 480 }), [0, 0, 999, 999]);
  assert.equal(parseRegionInput("-5,-0.1,1e9,+7", { width: 640, height: 480 }), [0, 0, 999, 14]);
});

test("quantisation as HF Florence2PostProcessor.quantize (float32; values confirmed with torch 2.11)", () => {
  const size = { width: 640, height: 480 };
  assert.equal(quantizeBox([640, 480, -1, -0.5], size), [999, 999, 0, 0]);
  assert.equal(quantizeBox([0, 0, 0.64, 0.48], size), [0, 0, 1, 1]);
  // float32 division lands on the bin these exact boundaries name; float64 would give 28, 46, 56, 57
  assert.equal(quantizeBox([18.56, 30.08, 36.48, 37.12], size), [29, 62, 57, 77]);
  assert.equal(quantizeBox([60.16, 72.32, 128.64, 135.04], size), [94, 150, 201, 281]);
  assert.equal(quantizeBox([516.999, 332.9, 0.517, 0.333], { width: 517, height: 333 }), [999, 999, 1, 1]);
  assert.is(regionToLocTokens([0, 0, 640, 480], size), "<loc_0><loc_0><loc_999><loc_999>");
  assert.is(regionToLocTokens([33.5, 160, 597, 372], size), "<loc_52><loc_333><loc_932><loc_775>");
  throwsCode(() => quantizeBox([0, 0, 1, 1], { width: 0, height: 480 }), "INVALID_ARGUMENT", /image size/);
  throwsCode(() => quantizeBox([0, 0, Number.NaN, 1], size), "INVALID_ARGUMENT", /four finite numbers/);
  throwsCode(() => quantizeBox([0, 0, 1] as unknown as [number, number, number, number], size), "INVALID_ARGUMENT");
});

test("taskSpec and Python str.strip", () => {
  assert.is(taskSpec("<OD>").parseType, "description_with_bboxes");
  throwsCode(() => taskSpec("<od>"), "UNKNOWN_TASK");
  assert.is(pyStrip("\x1c\x1d\x1e\x1f\x85\xa0\u3000 x \u2028\u2029\t"), "x");
  // U+FEFF is not Python whitespace (JS trim would remove it)
  assert.is(pyStrip("\ufeffx\ufeff"), "\ufeffx\ufeff");
  assert.is(pyStrip("\u180ex"), "\u180ex");
});

test.run();
