import { test } from "uvu";
import * as assert from "uvu/assert";
import { existsSync, lstatSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { quantile } from "../../src/timing.ts";
import { TASKS } from "../../src/florence/tasks.ts";
import { florenceProcessorTables, parseBenchArgs, prepareTransformersJsFolder, stageMedians, summarise } from "../../scripts/bench-vs-transformersjs.ts";
import { firstDifference } from "../../src/hardware/parity.ts";
import { REFERENCE, REPO_ROOT, TINY_MODEL, readReference } from "../support/paths.ts";
import { throwsCode } from "../support/errors.ts";

type GenerateCase = { id: string; task: string; text_input: string | null; input_ids: number[] };


test("parseBenchArgs: defaults are the fixture, street.jpg, <OD>, 24 greedy tokens, all cores", () => {
  const options = parseBenchArgs([], () => REPO_ROOT, 6);
  if (options === "help") return assert.unreachable("no --help given");
  assert.is(options.model, join(REPO_ROOT, "test", "fixtures", "tiny-seed0"));
  assert.is(options.image, join(REPO_ROOT, "test", "fixtures", "tiny-seed0", "reference", "images", "street.jpg"));
  assert.is(options.task, "<OD>");
  assert.is(options.secondTask, "<CAPTION>");
  assert.is(options.maxNewTokens, 24);
  assert.is(options.threads, 6);
  assert.is(options.side, "both");
  assert.ok(options.multi && options.gcBetween && !options.json);
  const set = parseBenchArgs(["--task", "<OCR>", "--runs", "3", "--threads", "1", "--json", "--no-gc", "--side", "ours"], () => REPO_ROOT);
  assert.ok(set !== "help" && set.task === "<OCR>" && set.runs === 3 && set.threads === 1 && set.json && !set.gcBetween && set.side === "ours");
  assert.is(parseBenchArgs(["--help"], () => REPO_ROOT), "help");
});

test("parseBenchArgs: bad values are FlorenceErrors naming the value", () => {
  throwsCode(() => parseBenchArgs(["--task", "<FOO>"], () => REPO_ROOT), "UNKNOWN_TASK", /<FOO>/);
  throwsCode(() => parseBenchArgs(["--task", "<OPEN_VOCABULARY_DETECTION>"], () => REPO_ROOT), "TASK_INPUT_INVALID", /OPEN_VOCABULARY_DETECTION/);
  throwsCode(() => parseBenchArgs(["--model", "/no/such/model"], () => REPO_ROOT), "INVALID_ARGUMENT", /\/no\/such\/model/);
  throwsCode(() => parseBenchArgs(["--runs", "0"], () => REPO_ROOT), "INVALID_ARGUMENT", /--runs/);
  throwsCode(() => parseBenchArgs(["--side", "theirs"], () => REPO_ROOT), "INVALID_ARGUMENT", /theirs/);
  throwsCode(() => parseBenchArgs(["extra"], () => REPO_ROOT), "INVALID_ARGUMENT", /extra/);
});

test("statistics: summarise, stageMedians and firstDifference", () => {
  const times = [5, 1, 4, 2, 3];
  assert.equal(summarise(times), { median_ms: 3, p90_ms: quantile(times, 0.9), min_ms: 1, runs: 5 });
  assert.equal(stageMedians([{ a: 1, b: 10 }, { a: 3 }, { a: 2, b: 30 }]), { a: 2, b: 20 });
  assert.is(firstDifference([2, 0, 5], [2, 0, 5]), -1);
  assert.is(firstDifference([2, 0, 5], [2, 0, 7]), 2);
  assert.is(firstDifference([2, 0], [2, 0, 7]), 2);
});

test("the transformers.js folder: remote-code config, onnx-community preprocessor config with the task tables, graphs linked", () => {
  const folder = prepareTransformersJsFolder(TINY_MODEL);
  const dir = join(folder.root, folder.id);
  try {
    assert.equal(readFileSync(join(dir, "config.json"), "utf8"), readFileSync(join(REFERENCE, "variants", "config.remote_code.json"), "utf8"));
    const processor = JSON.parse(readFileSync(join(dir, "preprocessor_config.json"), "utf8")) as Record<string, unknown>;
    const variant = JSON.parse(readFileSync(join(REFERENCE, "variants", "preprocessor_config.json"), "utf8")) as Record<string, unknown>;
    for (const [key, value] of Object.entries(variant)) assert.equal(processor[key], value, key);
    assert.equal(processor["task_prompts_without_inputs"], florenceProcessorTables().task_prompts_without_inputs);
    for (const name of readdirSync(join(TINY_MODEL, "onnx"))) assert.ok(lstatSync(join(dir, "onnx", name)).isSymbolicLink(), name);
    assert.ok(existsSync(join(dir, "generation_config.json")) && existsSync(join(dir, "tokenizer.json")));
  } finally {
    folder.cleanup();
  }
  assert.not.ok(existsSync(folder.root), "cleanup removes the temporary folder");
});

test("transformers.js on that folder builds HF's prompt ids for every task without text input", async () => {
  const tjs = (await import("@huggingface/transformers")) as unknown as {
    env: Record<string, unknown>;
    AutoProcessor: { from_pretrained(id: string): Promise<{ tokenizer: (text: string) => { input_ids: { tolist(): unknown[] } }; construct_prompts(task: string): string[] }> };
  };
  const folder = prepareTransformersJsFolder(TINY_MODEL);
  try {
    tjs.env["allowRemoteModels"] = false;
    tjs.env["useFSCache"] = false;
    tjs.env["localModelPath"] = `${folder.root}/`;
    const processor = await tjs.AutoProcessor.from_pretrained(folder.id);
    const imageToken = (readReference<Record<string, unknown>>("meta.json"))["image_token_id"] as number;
    const cases = readReference<GenerateCase[]>("generate.json").filter((c) => c.text_input === null && c.task in TASKS);
    assert.ok(cases.length >= 8, `${cases.length} cases`);
    for (const c of cases) {
      const hfPrompt = c.input_ids.filter((id) => id !== imageToken);
      const ids = (processor.tokenizer(processor.construct_prompts(c.task)[0]!).input_ids.tolist()[0] as (bigint | number)[]).map(Number);
      assert.equal(ids, hfPrompt, c.id);
    }
  } finally {
    folder.cleanup();
  }
});

test.run();
