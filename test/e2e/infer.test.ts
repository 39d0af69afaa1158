/**
 * End to end against Hugging Face: the library and the CLI, from image files to HF's exact generate ids, decoded
 * text and post_process_generation result, for every recorded case (all 15 tasks, greedy and beam search, batches).
 * FLORENCE_EDGE_FIXTURE=/path/to/another/fixture runs the same checks on a model the suite has never seen.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { promisify } from "node:util";
import { OnnxRuntimeEngine } from "../../src/engine/onnxruntime/onnxruntime.ts";
import { Florence2 } from "../../src/florence/florence2.ts";
import type { ReferenceCase } from "../../src/hardware/parity.ts";
import { REFERENCE, REPO_ROOT, TINY_MODEL, readReference } from "../support/paths.ts";

const run = promisify(execFile);
const cases = readReference<ReferenceCase[]>("generate.json");
const casesPil = existsSync(join(REFERENCE, "generate_pil.json")) ? readReference<ReferenceCase[]>("generate_pil.json") : [];
const image = (name: string) => join(REFERENCE, "images", name);

async function checkCases(model: Florence2, list: ReferenceCase[]): Promise<string[]> {
  const failures: string[] = [];
  for (const c of list) {
    const visions = await model.encodeImages(c.images.map(image));
    const results = await model.runTaskBatch(visions, { task: c.task, text: c.text_input ?? undefined }, { generation: c.generate_kwargs, postprocess: { coordinates: "int" } });
    results.forEach((r, i) => {
      if (JSON.stringify(r.generated_ids) !== JSON.stringify(c.generated_ids[i])) failures.push(`${c.id}[${i}] ids\n  ours ${JSON.stringify(r.generated_ids)}\n  HF   ${JSON.stringify(c.generated_ids[i])}`);
      else if (r.text !== c.text[i]) failures.push(`${c.id}[${i}] text ${JSON.stringify(r.text)} != ${JSON.stringify(c.text[i])}`);
      else if (JSON.stringify(r.result) !== JSON.stringify(c.result[i])) failures.push(`${c.id}[${i}] result ${JSON.stringify(r.result)} != ${JSON.stringify(c.result[i])}`);
    });
  }
  return failures;
}

test(`every recorded case equals HF (torchvision image backend, transformers 5 default): ${cases.length} cases`, async () => {
  const engine = new OnnxRuntimeEngine();
  const model = await Florence2.load(TINY_MODEL, { engine, resize: "torchvision" });
  try {
    const failures = await checkCases(model, cases);
    assert.is(failures.length, 0, `${failures.length}/${cases.length} cases differ from HF:\n${failures.slice(0, 5).join("\n")}`);
  } finally {
    await model.dispose();
    await engine.dispose();
  }
});

test("every recorded case equals HF with the PIL image backend (the default resize)", async () => {
  if (casesPil.length === 0) {
    console.log("  (skipped: this fixture has no generate_pil.json)");
    return;
  }
  const engine = new OnnxRuntimeEngine();
  const model = await Florence2.load(TINY_MODEL, { engine });
  try {
    const failures = await checkCases(model, casesPil);
    assert.is(failures.length, 0, `${failures.length}/${casesPil.length} cases differ from HF:\n${failures.slice(0, 5).join("\n")}`);
  } finally {
    await model.dispose();
    await engine.dispose();
  }
});

test("several tasks on one image share one vision pass and give the same answers as separate runs", async () => {
  const engine = new OnnxRuntimeEngine();
  const model = await Florence2.load(TINY_MODEL, { engine, resize: "torchvision" });
  try {
    const od = cases.find((c) => c.id === "street.jpg|<OD>|greedy")!;
    const cap = cases.find((c) => c.id === "street.jpg|<CAPTION>|greedy")!;
    const results = await model.infer(image("street.jpg"), [{ task: "<OD>" }, { task: "<CAPTION>" }], { numBeams: 1, maxNewTokens: 24, postprocess: { coordinates: "int" } });
    assert.equal(results[0]!.generated_ids, od.generated_ids[0]);
    assert.equal(results[1]!.generated_ids, cap.generated_ids[0]);
    assert.is(results[1]!.timings_ms.vision_ms, results[0]!.timings_ms.vision_ms, "the second task reuses the first task's vision pass");
  } finally {
    await model.dispose();
    await engine.dispose();
  }
});

test("a disposed model refuses work with a named error", async () => {
  const engine = new OnnxRuntimeEngine();
  const model = await Florence2.load(TINY_MODEL, { engine });
  await model.dispose();
  await engine.dispose();
  try {
    await model.encodeImage(image("street.jpg"));
    assert.unreachable();
  } catch (error) {
    assert.is((error as { code?: string }).code, "DISPOSED");
  }
});

const bin = join(REPO_ROOT, "dist", "src", "bin.js");

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], { maxBuffer: 1 << 24 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test("CLI infer --json prints task, text, generated_ids, result and timings exactly as HF", async () => {
  const c = cases.find((x) => x.id === "street.jpg|<OD>|beam3")!;
  const out = await cli(["infer", "--model", TINY_MODEL, "--image", image("street.jpg"), "--task", "<OD>", "--num-beams", "3", "--max-new-tokens", "24", "--coordinates", "int", "--resize", "torchvision", "--json"]);
  assert.is(out.code, 0, out.stderr);
  const json = JSON.parse(out.stdout);
  assert.is(json.task, "<OD>");
  assert.equal(json.generated_ids, c.generated_ids[0]);
  assert.is(json.text, c.text[0]);
  assert.equal(json.result, c.result[0]);
  for (const key of ["preprocess_ms", "vision_ms", "encoder_ms", "decoder_ms", "parse_ms", "total_ms"]) assert.type(json.timings_ms[key], "number", key);
});

test("CLI infer: a region task with a text input, default float coordinates", async () => {
  const c = cases.find((x) => x.id === "street.jpg|<REGION_TO_SEGMENTATION>|greedy")!;
  const out = await cli(["infer", "--model", TINY_MODEL, "--image", image("street.jpg"), "--task", "<REGION_TO_SEGMENTATION>", "--text", c.text_input!, "--num-beams", "1", "--max-new-tokens", "24", "--resize", "torchvision", "--json"]);
  assert.is(out.code, 0, out.stderr);
  const json = JSON.parse(out.stdout);
  assert.equal(json.generated_ids, c.generated_ids[0]);
  const hf = c.result[0]!["<REGION_TO_SEGMENTATION>"] as { polygons: number[][][] };
  const ours = json.result["<REGION_TO_SEGMENTATION>"] as { polygons: number[][][] };
  assert.equal(ours.polygons.map((p) => p.map((q) => q.map(Math.trunc))), hf.polygons, "float coordinates truncate to HF's ints");
});

test("CLI parse prints the post-processed result of a raw text", async () => {
  const out = await cli(["parse", "--task", "<OD>", "--text", "car<loc_52><loc_332><loc_932><loc_774>", "--image-size", "640x480", "--json", "--coordinates", "int"]);
  assert.is(out.code, 0, out.stderr);
  assert.equal(JSON.parse(out.stdout), { "<OD>": { bboxes: [[33, 159, 596, 371]], labels: ["car"] } });
});

test("CLI errors: exit code and a message that names the problem and the fix", async () => {
  const missing = await cli(["infer", "--model", TINY_MODEL, "--image", "/nonexistent.jpg", "--task", "<OD>"]);
  assert.is(missing.code, 1);
  assert.match(missing.stderr, /IMAGE_UNREADABLE.*\/nonexistent\.jpg/);
  const task = await cli(["infer", "--model", TINY_MODEL, "--image", image("street.jpg"), "--task", "<DETECT>"]);
  assert.is(task.code, 1);
  assert.match(task.stderr, /UNKNOWN_TASK.*<DETECT>/);
  const flag = await cli(["infer", "--model", TINY_MODEL, "--num-beams", "zero"]);
  assert.is(flag.code, 2);
  assert.match(flag.stderr, /--num-beams must be an integer/);
  const model = await cli(["infer", "--model", "/nonexistent/model", "--image", image("street.jpg"), "--task", "<OD>"]);
  assert.is(model.code, 1);
  assert.match(model.stderr, /MODEL_FILE_MISSING.*\/nonexistent\/model/);
  const size = await cli(["parse", "--task", "<OD>", "--text", "x", "--image-size", "640"]);
  assert.is(size.code, 2);
  assert.match(size.stderr, /WIDTHxHEIGHT/);
});

test.run();
