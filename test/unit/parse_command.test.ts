/**
 * Fidelity with HF's own post-processor tests: text tasks need no image size (HF returns the text with
 * image_size=None), and `florence-edge parse` takes the post-processor's settings (processor_config.json, OCR area
 * threshold, banned grounding phrases) and --coordinates float32. Tables of {arguments, expected}.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { main } from "../../src/cli.ts";
import { postProcessGeneration } from "../../src/florence/postprocess.ts";
import { TASKS, TASK_TOKENS } from "../../src/florence/tasks.ts";
import { throwsCode } from "../support/errors.ts";
import { TINY_MODEL } from "../support/paths.ts";

/** Runs `florence-edge ARGS` in this process; stdout and stderr are captured. */
async function florenceEdge(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = process.stdout.write;
  const err = process.stderr.write;
  let stdout = "";
  let stderr = "";
  process.stdout.write = ((chunk: string) => ((stdout += chunk), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string) => ((stderr += chunk), true)) as typeof process.stderr.write;
  try {
    return { code: await main(args), stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}

const TEXT_TASKS = TASK_TOKENS.filter((t) => TASKS[t].parseType === "pure_text");
const LOCATION_TASKS = TASK_TOKENS.filter((t) => TASKS[t].parseType !== "pure_text");

test("text tasks without an image size: HF's text, the same as with one", () => {
  const table: { text: string; expected: string }[] = [
    { text: "</s><s>A green car parked in front of a yellow building.</s>", expected: "A green car parked in front of a yellow building." },
    { text: "<s>  two <loc_1> words </s><pad><pad>", expected: "two <loc_1> words </s><pad><pad>" },
    { text: "", expected: "" },
  ];
  assert.equal(TEXT_TASKS.length, 7);
  for (const task of TEXT_TASKS) {
    for (const row of table) {
      const withSize = postProcessGeneration(row.text, task, { width: 640, height: 480 });
      assert.equal(postProcessGeneration(row.text, task), withSize, `${task} ${JSON.stringify(row.text)}`);
      assert.equal(postProcessGeneration(row.text, task, undefined, { format: "nvidia" }), postProcessGeneration(row.text, task, { width: 640, height: 480 }, { format: "nvidia" }));
    }
  }
  assert.equal(postProcessGeneration("</s><s>A car.</s>", "<CAPTION>"), { "<CAPTION>": "A car." });
});

test("tasks with coordinates without an image size: INVALID_ARGUMENT naming the task", () => {
  assert.equal(LOCATION_TASKS.length, 8);
  for (const task of LOCATION_TASKS) throwsCode(() => postProcessGeneration("car<loc_1><loc_2><loc_3><loc_4>", task), "INVALID_ARGUMENT", new RegExp(`${task}.*needs the original image's size`));
});

test("florence-edge parse: the post-processor's settings and --coordinates, table", async () => {
  const dir = await mkdtemp(join(tmpdir(), "fe-parse-"));
  try {
    const banDog = join(dir, "processor_config.json");
    await writeFile(banDog, JSON.stringify({ processor_class: "Florence2Processor", post_processor_config: { phrase_grounding: { banned_grounding_tokens: ["dog"] }, ocr: { AREA_THRESHOLD: 0.00051 } } }));
    const bare = join(dir, "post_processor_config.json");
    await writeFile(bare, JSON.stringify({ phrase_grounding: { banned_grounding_tokens: ["it"] } }));
    const grounding = ["--task", "<CAPTION_TO_PHRASE_GROUNDING>", "--text", "it<loc_1><loc_2><loc_3><loc_4>dog<loc_5><loc_6><loc_7><loc_8>", "--image-size", "1000x1000", "--coordinates", "int"];
    // quad (10,20) (30,20) (30,40) (10,40) on 1000×1000: HF's three-term shoelace sum gives 500 = 0.0005 of the image
    const ocr = ["--task", "<OCR_WITH_REGION>", "--text", "EXIT<loc_10><loc_20><loc_30><loc_20><loc_30><loc_40><loc_10><loc_40>", "--image-size", "1000x1000", "--coordinates", "int"];
    const od = ["--task", "<OD>", "--text", "car<loc_52><loc_332><loc_932><loc_774>", "--image-size", "640x480"];
    const table: { args: string[]; expected: unknown }[] = [
      { args: ["--task", "<CAPTION>", "--text", "</s><s>A car.</s>"], expected: { "<CAPTION>": "A car." } },
      { args: ["--task", "<OCR>", "--text", "<s>EXIT</s>", "--format", "nvidia"], expected: { "<OCR>": { content: "EXIT", entities: { bboxes: [], quad_boxes: [], labels: [], polygons: [] } } } },
      { args: [...od, "--coordinates", "int"], expected: { "<OD>": { bboxes: [[33, 159, 596, 371]], labels: ["car"] } } },
      { args: od, expected: { "<OD>": { bboxes: [[33.6, 159.6, 596.8, 371.76]], labels: ["car"] } } },
      { args: [...od, "--coordinates", "float32"], expected: postProcessGeneration("car<loc_52><loc_332><loc_932><loc_774>", "<OD>", { width: 640, height: 480 }, { coordinates: "float32" }) },
      { args: grounding, expected: { "<CAPTION_TO_PHRASE_GROUNDING>": { bboxes: [[5, 6, 7, 8]], labels: ["dog"] } } },
      { args: [...grounding, "--no-banned-grounding-phrases"], expected: { "<CAPTION_TO_PHRASE_GROUNDING>": { bboxes: [[1, 2, 3, 4], [5, 6, 7, 8]], labels: ["it", "dog"] } } },
      { args: [...grounding, "--banned-grounding-phrase", "dog"], expected: { "<CAPTION_TO_PHRASE_GROUNDING>": { bboxes: [[1, 2, 3, 4]], labels: ["it"] } } },
      { args: [...grounding, "--processor-config", banDog], expected: { "<CAPTION_TO_PHRASE_GROUNDING>": { bboxes: [[1, 2, 3, 4]], labels: ["it"] } } },
      { args: [...grounding, "--processor-config", bare], expected: { "<CAPTION_TO_PHRASE_GROUNDING>": { bboxes: [[5, 6, 7, 8]], labels: ["dog"] } } },
      { args: [...grounding, "--processor-config", join(TINY_MODEL, "processor_config.json")], expected: { "<CAPTION_TO_PHRASE_GROUNDING>": { bboxes: [[5, 6, 7, 8]], labels: ["dog"] } } },
      // a bare threshold keeps HF's default banned list (a config file would replace it)
      { args: [...grounding, "--ocr-area-threshold", "0.1"], expected: { "<CAPTION_TO_PHRASE_GROUNDING>": { bboxes: [[5, 6, 7, 8]], labels: ["dog"] } } },
      { args: ocr, expected: { "<OCR_WITH_REGION>": { quad_boxes: [[10, 20, 30, 20, 30, 40, 10, 40]], labels: ["EXIT"] } } },
      { args: [...ocr, "--ocr-area-threshold", "0.0005"], expected: { "<OCR_WITH_REGION>": { quad_boxes: [[10, 20, 30, 20, 30, 40, 10, 40]], labels: ["EXIT"] } } },
      { args: [...ocr, "--ocr-area-threshold", "0.00051"], expected: { "<OCR_WITH_REGION>": { quad_boxes: [], labels: [] } } },
      { args: [...ocr, "--processor-config", banDog], expected: { "<OCR_WITH_REGION>": { quad_boxes: [], labels: [] } } },
      { args: [...ocr, "--processor-config", banDog, "--ocr-area-threshold", "0"], expected: { "<OCR_WITH_REGION>": { quad_boxes: [[10, 20, 30, 20, 30, 40, 10, 40]], labels: ["EXIT"] } } },
    ];
    for (const row of table) {
      const out = await florenceEdge(["parse", ...row.args, "--json"]);
      assert.is(out.code, 0, `${row.args.join(" ")}: ${out.stderr}`);
      assert.equal(JSON.parse(out.stdout), row.expected, row.args.join(" "));
    }

    const errors: { args: string[]; message: RegExp }[] = [
      { args: ["--task", "<OD>", "--text", "car<loc_1><loc_2><loc_3><loc_4>"], message: /<OD> gives coordinates, so it needs the original image's size/ },
      { args: [...grounding, "--banned-grounding-phrase", "dog", "--no-banned-grounding-phrases"], message: /contradict/ },
      { args: [...ocr, "--ocr-area-threshold", "2"], message: /--ocr-area-threshold must be a number in 0\.\.1/ },
      { args: [...grounding, "--processor-config", join(dir, "missing.json")], message: /--processor-config .*missing\.json is not a readable JSON file/ },
      { args: [...od, "--coordinates", "double"], message: /--coordinates must be one of float, int, float32/ },
    ];
    for (const row of errors) {
      const out = await florenceEdge(["parse", ...row.args]);
      assert.is(out.code, 2, row.args.join(" "));
      assert.match(out.stderr, row.message);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test.run();
