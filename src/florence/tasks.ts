/**
 * Florence-2's task table and prompts, as Hugging Face transformers 5.17 `Florence2Processor` defines them
 * (`tasks_answer_post_processing_type`, `task_prompts_without_inputs`, `task_prompts_with_input`,
 * `_construct_prompts`), plus the region quantisation of `Florence2PostProcessor.quantize`.
 *
 * `constructPrompt` is HF's prompt construction with stricter input checks; `constructPromptLenient` is HF's
 * `_construct_prompts` unchanged (any raw prompt passes through).
 */
import { FlorenceError, describeValue } from "../errors.ts";

/** How HF parses a task's generated text (`Florence2PostProcessor` parse task names). */
export type ParseType =
  | "pure_text"
  | "ocr"
  | "phrase_grounding"
  | "description_with_bboxes"
  | "bboxes"
  | "polygons"
  | "description_with_polygons"
  | "description_with_bboxes_or_polygons";

export interface TaskSpec {
  readonly token: string;
  /** Lower case without brackets, e.g. `od`, `ocr_with_region` (MQTT topic segments). */
  readonly slug: string;
  readonly parseType: ParseType;
  /** HF's prompt; for tasks that take text it contains `{input}`. */
  readonly prompt: string;
  /** Whether the task needs a text input after the token. */
  readonly takesText: boolean;
  /** Whether that input is a region: four `<loc_N>` tokens (or pixels `x1,y1,x2,y2` converted to them). */
  readonly regionInput: boolean;
}

export const TASKS = {
  "<CAPTION>": { token: "<CAPTION>", slug: "caption", parseType: "pure_text", prompt: "What does the image describe?", takesText: false, regionInput: false },
  "<DETAILED_CAPTION>": { token: "<DETAILED_CAPTION>", slug: "detailed_caption", parseType: "pure_text", prompt: "Describe in detail what is shown in the image.", takesText: false, regionInput: false },
  "<MORE_DETAILED_CAPTION>": { token: "<MORE_DETAILED_CAPTION>", slug: "more_detailed_caption", parseType: "pure_text", prompt: "Describe with a paragraph what is shown in the image.", takesText: false, regionInput: false },
  "<OD>": { token: "<OD>", slug: "od", parseType: "description_with_bboxes", prompt: "Locate the objects with category name in the image.", takesText: false, regionInput: false },
  "<DENSE_REGION_CAPTION>": { token: "<DENSE_REGION_CAPTION>", slug: "dense_region_caption", parseType: "description_with_bboxes", prompt: "Locate the objects in the image, with their descriptions.", takesText: false, regionInput: false },
  "<REGION_PROPOSAL>": { token: "<REGION_PROPOSAL>", slug: "region_proposal", parseType: "bboxes", prompt: "Locate the region proposals in the image.", takesText: false, regionInput: false },
  "<CAPTION_TO_PHRASE_GROUNDING>": { token: "<CAPTION_TO_PHRASE_GROUNDING>", slug: "caption_to_phrase_grounding", parseType: "phrase_grounding", prompt: "Locate the phrases in the caption: {input}", takesText: true, regionInput: false },
  "<REFERRING_EXPRESSION_SEGMENTATION>": { token: "<REFERRING_EXPRESSION_SEGMENTATION>", slug: "referring_expression_segmentation", parseType: "polygons", prompt: "Locate {input} in the image with mask", takesText: true, regionInput: false },
  "<REGION_TO_SEGMENTATION>": { token: "<REGION_TO_SEGMENTATION>", slug: "region_to_segmentation", parseType: "polygons", prompt: "What is the polygon mask of region {input}", takesText: true, regionInput: true },
  "<OPEN_VOCABULARY_DETECTION>": { token: "<OPEN_VOCABULARY_DETECTION>", slug: "open_vocabulary_detection", parseType: "description_with_bboxes_or_polygons", prompt: "Locate {input} in the image.", takesText: true, regionInput: false },
  "<REGION_TO_CATEGORY>": { token: "<REGION_TO_CATEGORY>", slug: "region_to_category", parseType: "pure_text", prompt: "What is the region {input}?", takesText: true, regionInput: true },
  "<REGION_TO_DESCRIPTION>": { token: "<REGION_TO_DESCRIPTION>", slug: "region_to_description", parseType: "pure_text", prompt: "What does the region {input} describe?", takesText: true, regionInput: true },
  "<REGION_TO_OCR>": { token: "<REGION_TO_OCR>", slug: "region_to_ocr", parseType: "pure_text", prompt: "What text is in the region {input}?", takesText: true, regionInput: true },
  "<OCR>": { token: "<OCR>", slug: "ocr", parseType: "pure_text", prompt: "What is the text in the image?", takesText: false, regionInput: false },
  "<OCR_WITH_REGION>": { token: "<OCR_WITH_REGION>", slug: "ocr_with_region", parseType: "ocr", prompt: "What is the text in the image, with regions?", takesText: false, regionInput: false },
} as const satisfies Record<string, TaskSpec>;

export type TaskToken = keyof typeof TASKS;

export const TASK_TOKENS: readonly TaskToken[] = Object.keys(TASKS) as TaskToken[];

// HF checks the prompt against its two dicts in their insertion order; the order decides which token wins.
const HF_NO_INPUT_ORDER: readonly TaskToken[] = [
  "<OCR>", "<OCR_WITH_REGION>", "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>",
];
const HF_WITH_INPUT_ORDER: readonly TaskToken[] = [
  "<CAPTION_TO_PHRASE_GROUNDING>", "<REFERRING_EXPRESSION_SEGMENTATION>", "<REGION_TO_SEGMENTATION>", "<OPEN_VOCABULARY_DETECTION>",
  "<REGION_TO_CATEGORY>", "<REGION_TO_DESCRIPTION>", "<REGION_TO_OCR>",
];

export interface ImageSizeLike {
  readonly width: number;
  readonly height: number;
}

export type PixelBox = readonly [number, number, number, number];

export function isTaskToken(task: string): task is TaskToken {
  return Object.prototype.hasOwnProperty.call(TASKS, task);
}

/** The table entry for a task token; anything else is a FlorenceError UNKNOWN_TASK listing the valid tokens. */
export function taskSpec(task: string): TaskSpec {
  if (typeof task === "string" && isTaskToken(task)) return TASKS[task];
  throw new FlorenceError("UNKNOWN_TASK", `unknown Florence-2 task ${describeValue(task)}`, {
    fix: `use one of ${TASK_TOKENS.join(" ")}`,
  });
}

/** The task whose slug (e.g. `ocr_with_region`) this is, or undefined. */
export function taskBySlug(slug: string): TaskToken | undefined {
  return TASK_TOKENS.find((token) => TASKS[token].slug === slug);
}

// ---- Python str semantics shared with postprocess.ts ----

/** Python `str.isspace()` (and `re`'s `\s` on str patterns) for one UTF-16 unit; every such char is in the BMP. */
export function pyIsSpace(code: number): boolean {
  if (code <= 0x20) return code === 0x20 || (code >= 0x09 && code <= 0x0d) || (code >= 0x1c && code <= 0x1f);
  if (code < 0x85) return false;
  return (
    code === 0x85 || code === 0xa0 || code === 0x1680 || (code >= 0x2000 && code <= 0x200a) ||
    code === 0x2028 || code === 0x2029 || code === 0x202f || code === 0x205f || code === 0x3000
  );
}

/** Bounds [start, end) of Python `s[from:to].strip()` within `s`. */
export function pyStripBounds(s: string, from: number, to: number): [number, number] {
  let a = from;
  let b = to;
  while (a < b && pyIsSpace(s.charCodeAt(a))) a++;
  while (b > a && pyIsSpace(s.charCodeAt(b - 1))) b--;
  return [a, b];
}

/** Python `str.strip()` (JS `trim` differs: it strips U+FEFF and keeps U+001C–U+001F and U+0085). */
export function pyStrip(s: string): string {
  const [a, b] = pyStripBounds(s, 0, s.length);
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

function hfOnlyContentError(token: string, prompt: string): FlorenceError {
  return new FlorenceError(
    "TASK_INPUT_INVALID",
    `Task token ${token} should be the only content in the prompt. (got ${describeValue(prompt)})`,
    { fix: `${token} takes no text input: pass the task token alone` },
  );
}

/**
 * HF's `_construct_prompts` for one raw prompt, unchanged: a task token without input must be the whole prompt
 * (else FlorenceError TASK_INPUT_INVALID carrying HF's ValueError text); the first task token with input found is
 * removed and the stripped rest fills its template; any other text passes through as the prompt.
 */
export function constructPromptLenient(prompt: string): string {
  let result = prompt;
  for (const token of HF_NO_INPUT_ORDER) {
    if (result.includes(token)) {
      if (result !== token) throw hfOnlyContentError(token, result);
      result = TASKS[token].prompt;
      break;
    }
  }
  for (const token of HF_WITH_INPUT_ORDER) {
    if (result.includes(token)) {
      const input = pyStrip(result.split(token).join(""));
      result = TASKS[token].prompt.replace("{input}", () => input);
      break;
    }
  }
  return result;
}

/**
 * The prompt HF builds from `task + textInput` (`_construct_prompts`), with stricter checks than HF:
 * an unknown task is UNKNOWN_TASK; a task that takes no text given some is HF's ValueError (TASK_INPUT_INVALID);
 * a text task given no text, text containing another task token, or a region task whose input is not exactly
 * four `<loc_N>` (N in 0..999) nor pixels `x1,y1,x2,y2` (converted with `imageSize`) is TASK_INPUT_INVALID.
 */
export function constructPrompt(task: string, textInput?: string, imageSize?: ImageSizeLike): string {
  const spec = taskSpec(task);
  if (textInput !== undefined && typeof textInput !== "string") {
    throw new FlorenceError("TASK_INPUT_INVALID", `${task}: text input must be a string, got ${describeValue(textInput)}`, {
      fix: "pass the text input as a string",
    });
  }
  const text = textInput ?? "";
  // a lone UTF-16 surrogate is what invalid UTF-8 becomes after lossy decoding upstream; the tokenizer cannot encode it
  const lone = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.exec(text);
  if (lone) {
    throw new FlorenceError("INVALID_UTF8", `${task}: the text input has an unpaired surrogate (invalid Unicode) at character ${lone.index}`, {
      fix: "send the text as valid UTF-8",
    });
  }
  // HF's own check first, so its error text is what the caller sees
  const hfPrompt = constructPromptLenient(spec.token + text);
  if (!spec.takesText) return hfPrompt;

  const foreign = TASK_TOKENS.find((token) => text.includes(token));
  if (foreign !== undefined) {
    throw new FlorenceError("TASK_INPUT_INVALID", `${task}: the text input ${describeValue(text)} contains the task token ${foreign}`, {
      fix: "pass one task token as the task and plain text as its input",
    });
  }
  const input = pyStrip(text);
  if (input === "") {
    throw new FlorenceError("TASK_INPUT_INVALID", `${task} needs a text input, got ${describeValue(textInput ?? null)}`, {
      fix: spec.regionInput
        ? 'pass a region: "<loc_x1><loc_y1><loc_x2><loc_y2>" (0..999) or pixels "x1,y1,x2,y2"'
        : `pass the text to look for, e.g. constructPrompt("${task}", "a red car")`,
    });
  }
  if (!spec.regionInput) return hfPrompt;
  const region = regionInputToLocTokens(input, imageSize, task);
  return spec.prompt.replace("{input}", () => region);
}

// ---- regions ----

const LOC_REGION = /^<loc_(0|[1-9]\d{0,2})><loc_(0|[1-9]\d{0,2})><loc_(0|[1-9]\d{0,2})><loc_(0|[1-9]\d{0,2})>$/;
const PIXEL_NUMBER = "\\s*([+-]?(?:\\d+(?:\\.\\d*)?|\\.\\d+)(?:[eE][+-]?\\d+)?)\\s*";
const PIXEL_REGION = new RegExp(`^${PIXEL_NUMBER},${PIXEL_NUMBER},${PIXEL_NUMBER},${PIXEL_NUMBER}$`);

function checkImageSize(imageSize: ImageSizeLike | undefined, what: string): ImageSizeLike {
  const ok = imageSize !== undefined && imageSize !== null &&
    Number.isFinite(imageSize.width) && Number.isFinite(imageSize.height) && imageSize.width > 0 && imageSize.height > 0;
  if (!ok) {
    throw new FlorenceError("INVALID_ARGUMENT", `${what}: image size must be positive finite {width, height}, got ${describeValue(imageSize ?? null)}`, {
      fix: "pass the original image's { width, height } in pixels",
    });
  }
  return imageSize!;
}

/**
 * HF `Florence2PostProcessor.quantize` of one pixel box: bin = floor(x / (W/1000)) clamped to 0..999, computed in
 * float32 as torch does for a tensor of Python numbers (x and W/1000 rounded to float32, float32 quotient).
 */
export function quantizeBox(box: PixelBox, imageSize: ImageSizeLike): [number, number, number, number] {
  const size = checkImageSize(imageSize, "quantizeBox");
  if (!Array.isArray(box) || box.length !== 4 || !box.every((v) => typeof v === "number" && Number.isFinite(v))) {
    throw new FlorenceError("INVALID_ARGUMENT", `quantizeBox: box must be four finite numbers [x1, y1, x2, y2], got ${describeValue(box)}`, {
      fix: "pass [x1, y1, x2, y2] in pixels of the original image",
    });
  }
  const perBinW = Math.fround(size.width / 1000);
  const perBinH = Math.fround(size.height / 1000);
  const q = (v: number, perBin: number): number => {
    const bin = Math.floor(Math.fround(Math.fround(v) / perBin));
    return bin < 0 ? 0 : bin > 999 ? 999 : bin;
  };
  return [q(box[0], perBinW), q(box[1], perBinH), q(box[2], perBinW), q(box[3], perBinH)];
}

/** `<loc_a><loc_b><loc_c><loc_d>` for a pixel box [x1, y1, x2, y2] of an image of `imageSize`. */
export function regionToLocTokens(box: PixelBox, imageSize: ImageSizeLike): string {
  const [a, b, c, d] = quantizeBox(box, imageSize);
  return `<loc_${a}><loc_${b}><loc_${c}><loc_${d}>`;
}

/**
 * The four bins of a region text input: `<loc_a><loc_b><loc_c><loc_d>` (each 0..999, no leading zeros, nothing
 * else) or pixel numbers `x1,y1,x2,y2` (quantised with `imageSize`). Anything else is TASK_INPUT_INVALID.
 */
export function parseRegionInput(text: string, imageSize?: ImageSizeLike, task = "region"): [number, number, number, number] {
  const input = pyStrip(String(text));
  const loc = LOC_REGION.exec(input);
  if (loc) {
    const bins = [Number(loc[1]), Number(loc[2]), Number(loc[3]), Number(loc[4])] as [number, number, number, number];
    if (bins.every((n) => n <= 999)) return bins;
  }
  const pixels = PIXEL_REGION.exec(input);
  if (pixels) {
    const box = [Number(pixels[1]), Number(pixels[2]), Number(pixels[3]), Number(pixels[4])] as const;
    if (box.every(Number.isFinite)) {
      if (imageSize === undefined) {
        throw new FlorenceError("TASK_INPUT_INVALID", `${task}: pixel region ${describeValue(input)} needs the image size to quantise`, {
          fix: "pass the image size, or give the region as <loc_x1><loc_y1><loc_x2><loc_y2> (0..999)",
        });
      }
      return quantizeBox(box, imageSize);
    }
  }
  throw new FlorenceError("TASK_INPUT_INVALID", `${task}: region must be exactly four <loc_N> tokens (N 0..999) or pixels "x1,y1,x2,y2", got ${describeValue(input)}`, {
    fix: 'e.g. "<loc_52><loc_332><loc_932><loc_774>" or "33.5,160,597,372"',
  });
}

function regionInputToLocTokens(input: string, imageSize: ImageSizeLike | undefined, task: string): string {
  const [a, b, c, d] = parseRegionInput(input, imageSize, task);
  return `<loc_${a}><loc_${b}><loc_${c}><loc_${d}>`;
}
