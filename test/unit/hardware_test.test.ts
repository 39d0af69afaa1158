/**
 * `florence-edge test-hardware` (src/hardware/) on a machine without TensorRT: the command skips with exit 3 and names what is
 * missing, its flags, which reference cases FP16 engines are held to (on the real fixture's generate.json), how
 * outputs are compared (and, on ONNX Runtime, the same parity loop the GPU run uses), the model-size check, and the
 * choice of performance target and its verdicts. The TensorRT steps themselves need a GPU: `florence-edge test-hardware`.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { promisify } from "node:util";
import { detectGpu } from "../../src/engine_build/detect.ts";
import { missingParts, skipLine } from "../../src/hardware/environment.ts";
import { exitCodeFor } from "../../src/hardware/hardware_test.ts";
import { FLAGS, parseHardwareTestArgs } from "../../src/hardware/options.ts";
import { type CaseOutput, classifyCases, compareCase, type ReferenceCase, runParity, summarizeParity } from "../../src/hardware/parity.ts";
import { judgeTarget, type ModelSize, modelSizeOf, selectTarget, TARGET_TOKENS } from "../../src/hardware/performance_targets.ts";
import { demoImage, demoModelDir } from "../../src/paths.ts";
import { CudaRuntime } from "../../src/engine/tensorrt/cuda.ts";
import { tryLoadTensorRt } from "../../src/engine/tensorrt/runtime.ts";
import { OnnxRuntimeEngine } from "../../src/engine/onnxruntime/onnxruntime.ts";
import { Florence2 } from "../../src/florence/florence2.ts";
import { throwsCode } from "../support/errors.ts";
import { REPO_ROOT } from "../support/paths.ts";

// Node runs the compiled command (as the installed `florence-edge test-hardware` does); Deno runs it from source
const IN_DENO = "Deno" in globalThis;
const COMMAND = IN_DENO ? ["run", "--allow-all", join(REPO_ROOT, "src", "bin.ts"), "test-hardware"] : [join(REPO_ROOT, "dist", "src", "bin.js"), "test-hardware"];
const FIXTURE = join(REPO_ROOT, "test", "fixtures", "tiny-seed0");
const GiB = 2 ** 30;
const run = promisify(execFile);

async function script(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [...COMMAND, ...args], { maxBuffer: 1 << 24, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

// the fixture's own references: this file always reads tiny-seed0, whatever FLORENCE_EDGE_FIXTURE says
const cases = JSON.parse(readFileSync(join(FIXTURE, "reference", "generate.json"), "utf8")) as ReferenceCase[];
const defaultNumBeams = (JSON.parse(readFileSync(join(FIXTURE, "generation_config.json"), "utf8")) as { num_beams: number }).num_beams;
const clone = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;
const outputsOf = (c: ReferenceCase): CaseOutput[] => c.generated_ids.map((ids, i) => ({ generated_ids: [...ids], text: c.text[i]!, result: clone(c.result[i]!) }));

// ---------------------------------------------------------------------------------------------------------------
// The compiled script

test("on a machine without GPU or TensorRT the script exits 3 (skipped), names what is missing and how to get it", async () => {
  const cuda = CudaRuntime.tryOpen();
  const trt = tryLoadTensorRt();
  if (cuda.ok && trt.ok) {
    console.log("  (skipped: this machine has CUDA and TensorRT; run `florence-edge test-hardware` for the real thing)");
    return;
  }
  const hasGpu = cuda.ok || (await detectGpu().then(() => true, () => false));
  const dir = await mkdtemp(join(tmpdir(), "fe-hwtest-"));
  try {
    const jsonPath = join(dir, "report", "hardware.json");
    const out = await script(["--model", FIXTURE, "--json", jsonPath]);
    const text = out.stdout + out.stderr;
    assert.is(out.code, 3, text);
    assert.not.match(text, /\n\s+at .+:\d+:\d+/, "no stack trace");
    const skip = text.split("\n").find((line) => line.startsWith("SKIPPED, cannot run here"));
    assert.ok(skip, `one SKIPPED line in:\n${text}`);
    if (!hasGpu) {
      assert.match(skip!, /no NVIDIA GPU/);
      assert.match(skip!, /JetPack 6 or 7.*\/usr\/src\/tensorrt.*libnvinfer/);
      assert.match(skip!, /TensorRT 10\.x.*trtexec on PATH/);
    }
    if (!cuda.ok) assert.match(text, /CUDA runtime\s+missing: /);
    if (!trt.ok) assert.match(text, /TensorRT\s+missing: TensorRT not found/);
    assert.match(text, /SKIPPED \(exit 3\)/);
    assert.not.match(text, /\[2\/5\]/, "nothing after the environment step runs");

    const report = JSON.parse(readFileSync(jsonPath, "utf8"));
    assert.is(report.status, "skipped");
    assert.is(report.exitCode, 3);
    assert.is(report.skipped, skip);
    assert.is(report.environment.gpu.ok, hasGpu || cuda.ok);
    assert.is(report.environment.cuda.ok, cuda.ok);
    assert.is(report.environment.tensorrt.ok, false);
    assert.is(report.model.label, "the tiny fixture model");
    assert.equal(report.failures, []);

    // --skip-build does not look for trtexec, and still skips
    const skipBuild = await script(["--model", FIXTURE, "--skip-build"]);
    assert.is(skipBuild.code, 3, skipBuild.stdout + skipBuild.stderr);
    assert.match(skipBuild.stdout, /trtexec\s+not needed \(--skip-build\)/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("--help exits 0 and lists every flag; bad flags exit 2 and name the flag", async () => {
  const help = await script(["--help"]);
  assert.is(help.code, 0, help.stderr);
  for (const flag of Object.keys(FLAGS)) assert.match(help.stdout, new RegExp(`--${flag}\\b`), `--${flag} in the help`);
  assert.match(help.stdout, /orin-nano\|agx-orin\|desktop/);
  assert.match(help.stdout, /3 skipped/);

  const unknown = await script(["--bogus"]);
  assert.is(unknown.code, 2);
  assert.match(unknown.stderr, /unknown flag --bogus/);
  const target = await script(["--target", "xavier"]);
  assert.is(target.code, 2);
  assert.match(target.stderr, /--target must be one of orin-nano, agx-orin, desktop, got "xavier"/);
  const margin = await script(["--margin", "-1"]);
  assert.is(margin.code, 2);
  assert.match(margin.stderr, /--margin must be a number in 0\.\.∞/);
  const model = await script(["--model", "/no/such/model"]);
  assert.is(model.code, 2);
  assert.match(model.stderr, /--model \/no\/such\/model is not a model folder/);
  const positional = await script(["extra"]);
  assert.is(positional.code, 2);
  assert.match(positional.stderr, /unexpected argument "extra"/);
});

test("parseHardwareTestArgs: defaults are the bundled demo model and image, margin 0.1, 20 tokens, 20 runs", () => {
  const options = parseHardwareTestArgs([]);
  if (options === "help") return assert.unreachable("no --help given");
  assert.is(options.model, demoModelDir());
  assert.is(options.image, demoImage());
  const fixture = parseHardwareTestArgs(["--model", FIXTURE]);
  assert.ok(fixture !== "help" && fixture.image === join(FIXTURE, "reference", "images", "street.jpg"), "a model with reference images times its own street.jpg");
  assert.equal([options.margin, options.maxNewTokens, options.runs, options.warmup], [0.1, 20, 20, 3]);
  assert.ok(!options.all && !options.skipBuild);
  assert.is(options.target, undefined);
  assert.is(options.hfBaselineMs, undefined);
  const set = parseHardwareTestArgs(["--all", "--skip-build", "--margin", "0.5", "--target", "desktop", "--hf-baseline-ms", "310", "--json", "r.json"]);
  assert.ok(set !== "help" && set.all && set.skipBuild && set.margin === 0.5 && set.target === "desktop" && set.hfBaselineMs === 310 && set.json === "r.json");
  throwsCode(() => parseHardwareTestArgs(["--runs", "0"]), "INVALID_ARGUMENT", /--runs/);
  throwsCode(() => parseHardwareTestArgs(["--hf-baseline-ms", "0"]), "INVALID_ARGUMENT", /--hf-baseline-ms/);
  throwsCode(() => parseHardwareTestArgs(["--image", "/no/such.jpg"]), "INVALID_ARGUMENT", /\/no\/such\.jpg/);
});

// ---------------------------------------------------------------------------------------------------------------
// Which cases are checked, and how they compare

test("classifyCases on the fixture's generate.json: margin 0.1 checks the one wide-margin greedy case, beam cases are skipped", () => {
  assert.is(cases.length, 102);
  const at = classifyCases(cases, { margin: 0.1, all: false, defaultNumBeams });
  assert.is(at.checked, 1);
  assert.equal(at.cases.filter((c) => c.check).map((c) => c.case.id), ["extra|greedy-ngram0"]);
  assert.equal(at.skipped, { margin: 49, beam: 52, "no-margin": 0 });
  // a case without num_beams uses the model's generation_config (num_beams 3): beam search
  const defaults = at.cases.find((c) => c.case.id === "extra|default-config")!;
  assert.equal([defaults.numBeams, defaults.skip], [3, "beam"]);
  for (const c of at.cases) if (c.numBeams > 1) assert.is(c.skip, "beam", c.case.id);

  const smaller = classifyCases(cases, { margin: 0.01, all: false, defaultNumBeams });
  assert.equal([smaller.checked, smaller.skipped.margin, smaller.skipped.beam], [34, 16, 52]);
  for (const c of smaller.cases) if (c.check) assert.ok(c.case.min_top2_margin! >= 0.01, c.case.id);

  const huge = classifyCases(cases, { margin: 1e12, all: false, defaultNumBeams });
  assert.equal([huge.checked, huge.skipped.margin, huge.skipped.beam], [0, 50, 52]);

  const all = classifyCases(cases, { margin: 1e12, all: true, defaultNumBeams });
  assert.is(all.checked, 102);
  assert.equal(all.skipped, { margin: 0, beam: 0, "no-margin": 0 });
  assert.ok(all.cases.some((c) => c.check && c.numBeams === 5), "--all includes the beam-5 case");

  // a greedy case that recorded no margin cannot be judged
  const noMargin = clone(cases.find((c) => c.id === "extra|greedy-ngram0")!);
  delete noMargin.min_top2_margin;
  assert.equal(classifyCases([noMargin], { margin: 0, all: false, defaultNumBeams }).skipped, { margin: 0, beam: 0, "no-margin": 1 });
});

test("compareCase: every reference equals itself; a changed copy names the image, the field and the first differing token", () => {
  for (const c of cases) assert.equal(compareCase(c, outputsOf(c)), { status: "exact" }, c.id);

  const batch = cases.find((c) => c.id === "extra|batch-greedy")!;
  assert.is(batch.images.length, 3);
  const changed = outputsOf(batch);
  changed[1]!.generated_ids[5] = changed[1]!.generated_ids[5]! + 1;
  const diff = compareCase(batch, changed);
  if (diff.status !== "differ") return assert.unreachable("a changed id must differ");
  assert.equal([diff.image, diff.field, diff.tokenIndex], [1, "generated_ids", 5]);
  assert.equal(diff.reference, batch.generated_ids[1]);

  const short = outputsOf(batch);
  short[0]!.generated_ids.pop();
  const shortDiff = compareCase(batch, short);
  assert.ok(shortDiff.status === "differ" && shortDiff.tokenIndex === batch.generated_ids[0]!.length - 1, "a prefix differs where it ends");

  const text = outputsOf(batch);
  text[2]!.text += " ";
  const textDiff = compareCase(batch, text);
  assert.ok(textDiff.status === "differ" && textDiff.field === "text" && textDiff.image === 2 && textDiff.tokenIndex === null);

  const od = cases.find((c) => c.id === "street.jpg|<OD>|greedy")!;
  const result = outputsOf(od);
  const boxes = (result[0]!.result["<OD>"] as { bboxes: number[][] }).bboxes;
  assert.ok(boxes.length > 0, "the <OD> reference has boxes");
  boxes[0]![0] = boxes[0]![0]! + 1;
  const resultDiff = compareCase(od, result);
  assert.ok(resultDiff.status === "differ" && resultDiff.field === "result", "a box one pixel off differs");

  const missing = compareCase(batch, outputsOf(batch).slice(0, 2));
  assert.ok(missing.status === "differ" && missing.field === "count" && missing.ours === 2 && missing.reference === 3);
});

test("summarizeParity counts exact, differ and failed, and keeps the first differing case", () => {
  const selection = classifyCases(cases, { margin: 0.01, all: false, defaultNumBeams });
  const checked = selection.cases.filter((c) => c.check).map((c) => c.case);
  const outcomes = checked.map((c, i) => {
    const outputs = outputsOf(c);
    if (i === 3 || i === 7) outputs[0]!.generated_ids[2] = -1;
    return { id: c.id, outcome: i === 9 ? { status: "failed" as const, error: "ENGINE_FAILED: boom" } : compareCase(c, outputs) };
  });
  const summary = summarizeParity(selection, outcomes);
  assert.equal([summary.exact, summary.differ, summary.failed, summary.checked], [31, 2, 1, 34]);
  assert.equal(summary.skipped, { margin: 16, beam: 52, "no-margin": 0 });
  assert.is(summary.firstDifference!.id, checked[3]!.id);
  assert.is(summary.firstDifference!.tokenIndex, 2);
  assert.equal(summary.firstFailure, { id: checked[9]!.id, error: "ENGINE_FAILED: boom" });
  const clean = summarizeParity(selection, checked.map((c) => ({ id: c.id, outcome: compareCase(c, outputsOf(c)) })));
  assert.equal([clean.exact, clean.differ, clean.failed, clean.firstDifference], [34, 0, 0, null]);
});

test("runParity: the GPU run's case loop, on ONNX Runtime here, reproduces the checked cases exactly; a broken case fails alone", async () => {
  const engine = new OnnxRuntimeEngine();
  const model = await Florence2.load(FIXTURE, { engine, resize: "torchvision" });
  try {
    const selection = classifyCases(cases, { margin: 0.01, all: false, defaultNumBeams });
    const seen: string[] = [];
    const outcomes = await runParity(model, FIXTURE, selection, (id) => seen.push(id));
    const summary = summarizeParity(selection, outcomes);
    assert.equal([summary.exact, summary.differ, summary.failed], [34, 0, 0], JSON.stringify(summary.firstDifference ?? summary.firstFailure));
    assert.is(seen.length, 34);

    const broken = clone(cases.find((c) => c.id === "extra|greedy-ngram0")!);
    broken.id = "broken";
    broken.images = ["no-such-image.jpg"];
    const good = cases.find((c) => c.id === "extra|tiny")!;
    const mixed = await runParity(model, FIXTURE, classifyCases([broken, good], { margin: 0, all: false, defaultNumBeams }));
    assert.is(mixed[0]!.outcome.status, "failed");
    assert.match((mixed[0]!.outcome as { error: string }).error, /IMAGE_UNREADABLE.*no-such-image\.jpg/);
    assert.equal(mixed[1], { id: "extra|tiny", outcome: { status: "exact" } });
  } finally {
    await model.dispose();
    await engine.dispose();
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Targets

const BASE: ModelSize = modelSizeOf({ text_config: { d_model: 768, encoder_layers: 6, decoder_layers: 6 } });

test("modelSizeOf reads config.json: Florence-2-base, -large, and the tiny fixture", () => {
  assert.equal([BASE.size, BASE.label], ["base", "Florence-2-base"]);
  assert.is(modelSizeOf({ text_config: { d_model: 1024, encoder_layers: 12, decoder_layers: 12 } }).size, "large");
  const fixtureConfig = JSON.parse(readFileSync(join(FIXTURE, "config.json"), "utf8"));
  const tiny = modelSizeOf(fixtureConfig, { bundledFixture: true });
  assert.equal([tiny.size, tiny.dModel, tiny.encoderLayers, tiny.decoderLayers, tiny.label], ["other", 64, 2, 2, "the tiny fixture model"]);
  assert.match(modelSizeOf(fixtureConfig).label, /not Florence-2-base size \(d_model 64, 2\+2 layers\)/);
  assert.is(modelSizeOf({ text_config: { d_model: 768, encoder_layers: 6, decoder_layers: 12 } }).size, "other");
});

test("selectTarget: Jetsons by name or memory, any other GPU is a desktop one, --target overrides", () => {
  assert.is(selectTarget({ name: "Orin (nvgpu)", memoryBytes: 7.4 * GiB }).id, "orin-nano");
  assert.is(selectTarget({ name: "Orin", memoryBytes: 61 * GiB }).id, "agx-orin");
  assert.is(selectTarget({ name: "Orin (nvgpu)", memoryBytes: 30 * GiB }).id, "agx-orin");
  assert.is(selectTarget({ name: "NVIDIA GeForce RTX 4090", memoryBytes: 24 * GiB }).id, "desktop");
  assert.is(selectTarget({ name: "NVIDIA H100 80GB HBM3", memoryBytes: null }).id, "desktop");
  assert.is(selectTarget({ name: "NVIDIA Jetson Orin Nano Developer Kit", memoryBytes: null }).id, "orin-nano");
  assert.is(selectTarget({ name: "Jetson AGX Orin", memoryBytes: null }).id, "agx-orin");
  const nx = selectTarget({ name: "Orin (nvgpu)", memoryBytes: 15.3 * GiB });
  assert.is(nx.id, null);
  assert.match(nx.reason, /15\.3 GiB.*--target/);
  assert.is(selectTarget({ name: "NVIDIA Jetson Orin NX", memoryBytes: 7.4 * GiB }).id, null);
  assert.is(selectTarget({ name: "Xavier", memoryBytes: 31 * GiB }).id, null);
  assert.is(selectTarget({ name: "Orin", memoryBytes: null }).id, null, "a bare Orin with unknown memory is not guessed");
  assert.equal(selectTarget({ name: "NVIDIA GeForce RTX 4090", memoryBytes: 24 * GiB }, "agx-orin"), { id: "agx-orin", reason: "--target agx-orin" });
});

test("judgeTarget: met, not met, not compared, model not base size, no target", () => {
  const nano = selectTarget({ name: "Orin (nvgpu)", memoryBytes: 7.4 * GiB });
  const agx = selectTarget({ name: "Orin", memoryBytes: 61 * GiB });
  const desktop = selectTarget({ name: "NVIDIA GeForce RTX 4090", memoryBytes: 24 * GiB });
  const base = { tokens: TARGET_TOKENS, model: BASE };
  assert.is(TARGET_TOKENS, 20);

  assert.equal(judgeTarget(nano, { ...base, medianMs: 142.3 }), { status: "met", line: "met: median 142.3 ms ≤ 150 ms (Jetson Orin Nano 8 GB)" });
  assert.equal(judgeTarget(nano, { ...base, medianMs: 150 }).status, "met");
  assert.equal(judgeTarget(nano, { ...base, medianMs: 163.456 }), { status: "not met", line: "not met: median 163.46 ms > 150 ms (Jetson Orin Nano 8 GB)" });
  assert.is(judgeTarget(agx, { ...base, medianMs: 49.9 }).status, "met");
  assert.is(judgeTarget(agx, { ...base, medianMs: 61 }).status, "not met");

  const notCompared = judgeTarget(desktop, { ...base, medianMs: 40 });
  assert.is(notCompared.status, "not compared");
  assert.match(notCompared.line, /^not compared: pass --hf-baseline-ms/);
  const fast = judgeTarget(desktop, { ...base, medianMs: 90, hfBaselineMs: 300 });
  assert.equal([fast.status, fast.speedup], ["met", 3.33]);
  const slow = judgeTarget(desktop, { ...base, medianMs: 120, hfBaselineMs: 300 });
  assert.equal([slow.status, slow.speedup], ["not met", 2.5]);
  assert.match(slow.line, /2\.5× faster than HF \(300 ms ÷ 120 ms\), target ≥ 3×/);

  const tiny = modelSizeOf(JSON.parse(readFileSync(join(FIXTURE, "config.json"), "utf8")), { bundledFixture: true });
  const notBase = judgeTarget(nano, { tokens: 20, model: tiny, medianMs: 12 });
  assert.is(notBase.status, "model not base size");
  assert.match(notBase.line, /^timings of the tiny fixture model; the targets are for Florence-2-base/);
  assert.is(judgeTarget(desktop, { tokens: 20, model: modelSizeOf({ text_config: { d_model: 1024, encoder_layers: 12, decoder_layers: 12 } }), medianMs: 1, hfBaselineMs: 100 }).status, "model not base size");

  const fewer = judgeTarget(nano, { ...base, tokens: 12, medianMs: 10 });
  assert.is(fewer.status, "not compared");
  assert.match(fewer.line, /generated 12/);
  const none = judgeTarget(selectTarget({ name: "Xavier", memoryBytes: null }), { ...base, medianMs: 10 });
  assert.is(none.status, "no target");
});

// ---------------------------------------------------------------------------------------------------------------
// Skip line and exit codes

test("skipLine names the missing parts and says how to get them on a Jetson and on a desktop", () => {
  const nothing = { gpu: { ok: false as const, reason: "x" }, cuda: { ok: false as const, reason: "x" }, tensorrt: { ok: false as const, reason: "x" }, trtexec: { ok: false as const, reason: "x" } };
  assert.equal(missingParts(nothing), ["gpu", "cuda", "tensorrt", "trtexec"]);
  assert.equal(missingParts({ ...nothing, trtexec: { ok: "not needed" } }), ["gpu", "cuda", "tensorrt"]);
  assert.equal(missingParts({ gpu: { ok: true, name: "Orin", computeCapability: "8.7", driver: null, cudaDriver: null }, cuda: { ok: true, runtime: "12.6", driver: "12.6", library: "libcudart.so.12" }, tensorrt: { ok: true, version: "10.3.0" }, trtexec: { ok: true, path: "/usr/src/tensorrt/bin/trtexec", version: "10.3.0" } }), []);

  const jetson = skipLine(["tensorrt", "trtexec"], "jetson");
  assert.match(jetson, /^SKIPPED, cannot run here: missing TensorRT \(libnvinfer\), trtexec — /);
  assert.match(jetson, /JetPack ships TensorRT \(libnvinfer, \/usr\/src\/tensorrt\)/);
  assert.match(jetson, /\/usr\/src\/tensorrt\/bin\/trtexec/);
  const desktop = skipLine(["tensorrt"], "desktop");
  assert.match(desktop, /install TensorRT 10\.x/);
  assert.not.match(desktop, /JetPack/);
  assert.match(skipLine(["cuda"], "desktop"), /missing CUDA runtime \(libcudart\) — install the CUDA 12 or 13 runtime/);
  assert.match(skipLine(["gpu", "cuda"], "desktop"), /no NVIDIA GPU \(also missing: CUDA runtime \(libcudart\)\)/);
  assert.is(skipLine([], "desktop"), "");
  assert.ok(!skipLine(["gpu"], "desktop").includes("\n"), "one line");
});

test("exitCodeFor: failures win over a skip; a skip is 3; otherwise 0", () => {
  assert.is(exitCodeFor({ failures: [] }), 0);
  assert.is(exitCodeFor({ failures: [], skipped: "SKIPPED, cannot run here: …" }), 3);
  assert.is(exitCodeFor({ failures: ["2 of 34 checked cases differ from HF"] }), 1);
});

test.run();
