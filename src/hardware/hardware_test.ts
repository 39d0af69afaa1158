/**
 * The TensorRT hardware test (`florence-edge test-hardware`): run it on a Jetson (Orin Nano / NX / AGX, JetPack 6 or
 * 7) or a desktop NVIDIA GPU to check that TensorRT engines build there, match Hugging Face and how fast they are.
 *
 * 1. environment: the GPU (nvidia-smi, or the Jetson device tree), the CUDA runtime and TensorRT's libnvinfer as the
 *    TensorRT backend loads them, and trtexec for building. Anything missing: one line saying what and how to get it,
 *    exit 3.
 * 2. engines: build-engines into the package's engines/ (--skip-build uses what is there), then the same lookup the
 *    TensorRT backend does, so a hand-over problem shows here and not as a load failure.
 * 3. parity with HF on the model's reference/generate.json (scripts/python/make_fixtures.py run_generation), run like
 *    test/e2e/infer.test.ts: torchvision resize, int coordinates. FP16 engines cannot reproduce float32 token choices
 *    where the reference's top-2 logit margin is tiny, so only greedy cases with min_top2_margin ≥ --margin are
 *    checked (ids, text and result exactly); beam cases record no margins and are skipped too, unless --all.
 * 4. timings: src/bench.ts's runBench on <CAPTION>, greedy, exactly --max-new-tokens tokens (min_new_tokens too).
 * 5. targets, reported and not asserted: Florence-2-base, <CAPTION>, greedy, 20 tokens end to end ≤ 150 ms on an
 *    Orin Nano 8 GB, ≤ 50 ms on an AGX Orin; on a desktop GPU ≥ 3× faster than HF PyTorch FP16 on the same GPU
 *    (--hf-baseline-ms: HF's median, measured by you with generate(num_beams=1, max_new_tokens=20, min_new_tokens=20)).
 *
 * Exit: 0 everything that ran passed, 1 parity differences or failures, 2 bad flags, 3 skipped (no GPU, CUDA runtime
 * or TensorRT here). The default model is the bundled demo model: its timings say nothing about the targets.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import process from "node:process";
import { type BenchOptions, type BenchReport, runBench } from "../bench.ts";
import { type RuntimeEnvironment, readEnvironment } from "../config.ts";
import { type BuildEnginesResult, buildEngines } from "../engine_build/build_engines.ts";
import type { MachineInfo } from "../engine/tensorrt/runtime.ts";
import { isFlorenceError } from "../errors.ts";
import type { Florence2 } from "../florence/florence2.ts";
import { loadFlorence } from "../mod.ts";
import { demoModelDir, packageRoot } from "../paths.ts";
import { type Availability, detectEnvironment, type EnvironmentReport, missingParts, PART_NAMES, skipLine } from "./environment.ts";
import { usage } from "../cli_args.ts";
import { FLAGS, type HardwareTestOptions, parseHardwareTestArgs } from "./options.ts";
import { type EvalReport, evaluateWorld } from "../world/evaluate.ts";
import { loadWorldFont } from "../world/font.ts";
import { type CaseOutcome, classifyCases, describeDifference, errorText, type ParitySummary, type ReferenceCase, runParity, type Selection, type SkipReason, summarizeParity } from "./parity.ts";
import { judgeTarget, type ModelSize, modelSizeOf, TARGETS, type TargetSelection, selectTarget, type Verdict } from "./performance_targets.ts";

export const TEST_HARDWARE_SUMMARY = "check the TensorRT path on this GPU: environment, engines, parity with HF, timings, targets";

export const EXIT = { passed: 0, failed: 1, badFlags: 2, skipped: 3 } as const;

const GiB = 2 ** 30;

export interface HardwareReport {
  schema: 1;
  startedAt: string;
  finishedAt: string;
  status: "passed" | "failed" | "skipped";
  exitCode: number;
  options: HardwareTestOptions;
  model: ModelSize & { dir: string };
  environment?: EnvironmentReport;
  skipped?: string;
  engines?: { built: string[]; upToDate: string[]; engineDir: string | null; skippedBuild: boolean };
  parity?: (ParitySummary & { margin: number; all: boolean; cases: { id: string; outcome: CaseOutcome | { status: "skipped"; reason: SkipReason } }[] }) | { notChecked: string };
  timings?: Omit<BenchReport, "summary">;
  /** The same timing runs with CUDA graphs off: what the graphs bring on this GPU. */
  cudaGraphs?: { offMedianMs: number; onMedianMs: number; offOverOn: number } | { notMeasured: string };
  target?: { selection: TargetSelection; verdict: Verdict };
  /** A shapes-world model's figures on held-out images: TensorRT's engines beside ONNX Runtime on the CPU. */
  world?: { onnxruntime: EvalReport; tensorrt: EvalReport } | { notChecked: string };
  failures: string[];
  /** An unexpected error's stack: in the JSON report, never on the console. */
  stack?: string;
}

export function exitCodeFor(report: Pick<HardwareReport, "skipped" | "failures">): number {
  if (report.failures.length > 0) return EXIT.failed;
  return report.skipped ? EXIT.skipped : EXIT.passed;
}

function shorten(text: string, max = 220): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The first of a list of "; "-separated reasons (every attempt is in the JSON report). */
function firstReason(reason: string): string {
  const parts = reason.split("; ");
  return shorten(parts.length > 1 ? `${parts[0]}; …` : reason);
}


const STEPS = 5;

/** What every step reads and writes: the options, the report so far, and where its lines go. */
interface RunContext {
  options: HardwareTestOptions;
  report: HardwareReport;
  runtimeEnv: RuntimeEnvironment;
  say: (line: string) => void;
  fail: (line: string) => void;
}

/** The model's reference cases, if it has them, and which of them FP16 engines are held to. */
interface References {
  path: string;
  cases: ReferenceCase[] | undefined;
  selection: Selection | undefined;
  defaultNumBeams: number;
}

function readReferences(options: HardwareTestOptions): References {
  const path = join(options.model, "reference", "generate.json");
  const cases = existsSync(path) ? (JSON.parse(readFileSync(path, "utf8")) as ReferenceCase[]) : undefined;
  const generationConfigPath = join(options.model, "generation_config.json");
  const generationConfig = existsSync(generationConfigPath) ? (JSON.parse(readFileSync(generationConfigPath, "utf8")) as Record<string, unknown>) : {};
  const defaultNumBeams = typeof generationConfig["num_beams"] === "number" ? (generationConfig["num_beams"] as number) : 1;
  const selection = cases ? classifyCases(cases, { margin: options.margin, all: options.all, defaultNumBeams }) : undefined;
  return { path, cases, selection, defaultNumBeams };
}

/** Step 1; resolves with what the TensorRT backend will see and trtexec, or undefined when the machine cannot run the test. */
async function checkEnvironment(ctx: RunContext): Promise<{ machine: MachineInfo; trtexec: string | undefined } | undefined> {
  const { say, report } = ctx;
  say(`[1/${STEPS}] environment`);
  const detected = await detectEnvironment(ctx.options);
  const env = detected.env;
  report.environment = env;
  const show = (label: string, state: Availability<object> | { ok: "not needed" }, ok: string) =>
    say(`  ${label.padEnd(14)}${state.ok === true ? ok : state.ok === false ? `missing: ${firstReason(state.reason)}` : "not needed (--skip-build)"}`);
  show("GPU", env.gpu, env.gpu.ok ? `${env.gpu.name}, sm${env.gpu.computeCapability.replace(".", "")}${env.gpu.driver ? `, driver ${env.gpu.driver}` : ""}${env.memoryBytes ? `, ${(env.memoryBytes / GiB).toFixed(1)} GiB` : ""}` : "");
  show("CUDA runtime", env.cuda, env.cuda.ok ? `${env.cuda.runtime} (${env.cuda.library}), driver supports ${env.cuda.driver}` : "");
  show("TensorRT", env.tensorrt, env.tensorrt.ok ? `${env.tensorrt.version} (libnvinfer)` : "");
  show("trtexec", env.trtexec, env.trtexec.ok === true ? `${env.trtexec.path} (TensorRT ${env.trtexec.version})` : "");
  const missing = missingParts(env);
  if (missing.length > 0) {
    report.skipped = skipLine(missing, env.platform);
    say(report.skipped);
    return undefined;
  }
  if (env.trtexec.ok === true && env.tensorrt.ok && env.trtexec.version !== env.tensorrt.version) {
    say(`  warning: trtexec is TensorRT ${env.trtexec.version} but the runtime loads libnvinfer ${env.tensorrt.version}: engines load only in the version that built them (fix PATH or LD_LIBRARY_PATH)`);
  }
  return { machine: detected.machine!, trtexec: detected.trtexec };
}

/** Step 2: builds the engines (unless --skip-build) and finds them the way `--backend tensorrt` does; false stops the run. */
async function prepareEngines(ctx: RunContext, found: { machine: MachineInfo; trtexec: string | undefined }, refs: References): Promise<boolean> {
  const { machine, trtexec } = found;
  const { options, report, say, fail } = ctx;
  say(`[2/${STEPS}] engines`);
  const enginesRoot = join(packageRoot(), "engines");
  let built: BuildEnginesResult | undefined;
  if (options.skipBuild) {
    say(`  build skipped (--skip-build): looking for engines under ${enginesRoot} and ${join(ctx.runtimeEnv.cacheDir, "engines")}`);
    report.engines = { built: [], upToDate: [], engineDir: null, skippedBuild: true };
  } else {
    // profiles wide enough for the checked cases; otherwise build-engines' defaults, so the engines are the usual ones
    const checked = refs.selection?.cases.filter((c) => c.check) ?? [];
    const maxBatch = Math.max(1, ...checked.map((c) => c.case.images.length));
    const maxBeams = Math.max(refs.defaultNumBeams, ...checked.map((c) => c.numBeams));
    // Ctrl-C stops trtexec and leaves no half-built engine folder (build-engines cleans up on abort)
    const controller = new AbortController();
    const onSignal = () => controller.abort();
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    try {
      built = await buildEngines({
        model: options.model,
        out: enginesRoot,
        ...(trtexec ? { trtexec } : {}),
        ...(maxBatch > 1 ? { maxBatch } : {}),
        ...(maxBeams > refs.defaultNumBeams ? { maxBeams } : {}),
        log: (line) => say(`  ${line}`),
        signal: controller.signal,
      });
      report.engines = { built: built.built, upToDate: built.skipped, engineDir: built.engineDir, skippedBuild: false };
    } catch (error) {
      fail(`building the engines: ${errorText(error)}`);
      return false;
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
  }
  // the lookup `--backend tensorrt` does: build-engines' folder and manifest must be what the runtime reads
  const { findEngines } = await import("../engine/tensorrt/runtime.ts");
  const lookup = await findEngines([join(ctx.runtimeEnv.cacheDir, "engines"), enginesRoot], basename(options.model), { machine });
  if (!lookup.ok) {
    fail(`the TensorRT backend cannot use the engines: ${lookup.reason}`);
    return false;
  }
  say(`  the TensorRT backend loads ${lookup.engineDir}`);
  if (built && resolve(lookup.engineDir) !== resolve(built.engineDir)) say(`  warning: that is not the folder just built (${built.engineDir}): the cache's engines/ is searched first`);
  if (report.engines) report.engines.engineDir = lookup.engineDir;
  return true;
}

/** Step 3: the checked reference cases on TensorRT; false when the model did not load. */
async function checkParity(ctx: RunContext, refs: References): Promise<boolean> {
  const { options, report, say, fail } = ctx;
  say(`[3/${STEPS}] parity with Hugging Face (reference/generate.json)`);
  const { cases: references, selection } = refs;
  if (!references || !selection) {
    const why = `no ${refs.path}: parity not checked (references come from scripts/python/make_fixtures.py or make_sized_model.py)`;
    report.parity = { notChecked: why };
    say(`  ${why}`);
    return true;
  }
  const s = selection.skipped;
  say(`  ${references.length} cases: ${selection.checked} checked${options.all ? " (--all)" : ` (greedy, top-2 margin ≥ ${options.margin})`}, skipped ${s.margin} (margin < ${options.margin}), ${s.beam} (beam search)${s["no-margin"] ? `, ${s["no-margin"]} (no margin recorded)` : ""}`);
  const outcomes: { id: string; outcome: CaseOutcome }[] = [];
  let loaded = true;
  if (selection.checked > 0) {
    let model: Florence2 | undefined;
    try {
      model = await loadFlorence(options.model, { env: ctx.runtimeEnv, backend: "tensorrt", resize: "torchvision", log: (line) => say(`  ${line}`) });
    } catch (error) {
      fail(`loading the model on TensorRT: ${errorText(error)}`);
      loaded = false;
    }
    if (model) {
      try {
        outcomes.push(...(await runParity(model, options.model, selection, (id, outcome) => say(`  ${caseLine(id, outcome)}`))));
      } finally {
        await model.dispose(); // and the engine it owns
      }
    }
  }
  const summary = summarizeParity(selection, outcomes);
  report.parity = {
    ...summary,
    margin: options.margin,
    all: options.all,
    cases: selection.cases.map((c) => ({ id: c.case.id, outcome: c.skip ? { status: "skipped" as const, reason: c.skip } : (outcomes.find((o) => o.id === c.case.id)?.outcome ?? { status: "failed" as const, error: "not run: the model did not load" }) })),
  };
  if (!loaded) return false;
  say(`  parity: ${summary.exact} exact, ${summary.differ} differ, ${summary.failed} failed; ${references.length - summary.checked} skipped`);
  if (summary.firstDifference) for (const line of describeDifference(summary.firstDifference)) say(`  ${line}`);
  if (summary.differ > 0) report.failures.push(`${summary.differ} of ${summary.checked} checked cases differ from HF (first: ${summary.firstDifference!.id})`);
  if (summary.failed > 0) report.failures.push(`${summary.failed} of ${summary.checked} checked cases failed (first: ${summary.firstFailure!.id}: ${summary.firstFailure!.error})`);
  return true;
}

/**
 * Step 3b, for a model of the shapes world (its folder holds world.json): every task on fresh held-out images, on
 * TensorRT and on ONNX Runtime (fp32, CPU), figure beside figure. The first check of FP16 engines that needs no
 * download: reported, and a failure where TensorRT falls short of a goal that ONNX Runtime meets.
 */
async function checkWorld(ctx: RunContext): Promise<void> {
  const { options, report, say } = ctx;
  if (!existsSync(join(options.model, "world.json"))) {
    report.world = { notChecked: "not a shapes-world model (no world.json)" };
    return;
  }
  say(`[3b/${STEPS}] shapes-world accuracy: ${options.worldImages} held-out images, TensorRT beside ONNX Runtime`);
  const evaluate = async (backend: "tensorrt" | "onnxruntime") => {
    const model = await loadFlorence(options.model, { env: ctx.runtimeEnv, backend, precision: "fp32" });
    try {
      return await evaluateWorld(model, loadWorldFont(), { images: options.worldImages, seed: 0 });
    } finally {
      await model.dispose();
    }
  };
  try {
    const tensorrt = await evaluate("tensorrt");
    const onnxruntime = await evaluate("onnxruntime");
    report.world = { onnxruntime, tensorrt };
    for (const line of compareReports(onnxruntime, tensorrt)) say(`  ${line}`);
    for (const f of tensorrt.figures) {
      const cpu = onnxruntime.figures.find((o) => o.task === f.task && o.metric === f.metric);
      if (f.goal !== undefined && f.value < f.goal && cpu && cpu.value >= f.goal) ctx.fail(`TensorRT ${f.task} ${f.metric} ${f.value.toFixed(3)} is below the goal ${f.goal} that ONNX Runtime meets (${cpu.value.toFixed(3)})`);
    }
  } catch (error) {
    ctx.fail(`shapes-world accuracy: ${errorText(error)}`);
  }
}

/** One line per figure: task, metric, ONNX Runtime, TensorRT, goal. */
export function compareReports(cpu: EvalReport, gpu: EvalReport): string[] {
  const lines = [`${"task".padEnd(38)} ${"metric".padEnd(16)} ${"onnxruntime".padStart(11)} ${"tensorrt".padStart(9)}  goal`];
  for (const f of gpu.figures) {
    const other = cpu.figures.find((o) => o.task === f.task && o.metric === f.metric);
    lines.push(`${f.task.padEnd(38)} ${f.metric.padEnd(16)} ${(other ? other.value.toFixed(3) : "-").padStart(11)} ${f.value.toFixed(3).padStart(9)}  ${f.goal ?? ""}`);
  }
  lines.push(`ms per image, all tasks: onnxruntime ${cpu.msPerImage.toFixed(0)}, tensorrt ${gpu.msPerImage.toFixed(0)}`);
  return lines;
}

function caseLine(id: string, outcome: CaseOutcome): string {
  const mark = outcome.status === "exact" ? "exact " : outcome.status === "differ" ? "DIFFER" : "FAILED";
  const detail = outcome.status === "differ" ? ` (${outcome.field}${outcome.tokenIndex !== null ? ` from token ${outcome.tokenIndex}` : ""})` : outcome.status === "failed" ? `: ${shorten(outcome.error)}` : "";
  return `${mark} ${id}${detail}`;
}

/** Step 4: <CAPTION> timings with CUDA graphs on, then off for comparison. */
async function timeCaption(ctx: RunContext): Promise<BenchReport | undefined> {
  const { options, report, say, fail } = ctx;
  say(`[4/${STEPS}] timings: <CAPTION>, greedy, ${options.maxNewTokens} tokens, ${options.runs} runs after ${options.warmup} warm-up, ${options.image}`);
  const captionBench = (load: Omit<BenchOptions["load"], "env" | "backend">) =>
    runBench({
      model: options.model,
      image: options.image,
      tasks: ["<CAPTION>"],
      text: undefined,
      runs: options.runs,
      warmup: options.warmup,
      // exactly this many tokens, like an HF baseline run with min_new_tokens = max_new_tokens
      generate: { numBeams: 1, maxNewTokens: options.maxNewTokens, generation: { min_new_tokens: options.maxNewTokens } },
      load: { env: ctx.runtimeEnv, backend: "tensorrt", ...load },
    });
  let bench: BenchReport;
  try {
    bench = await captionBench({ log: (line) => say(`  ${line}`) });
  } catch (error) {
    fail(`timing runs: ${errorText(error)}`);
    return undefined;
  }
  const { summary: _summary, ...timings } = bench;
  report.timings = timings;
  say(`  end to end: median ${bench.median_ms} ms, p90 ${bench.p90_ms} ms (min ${bench.min_ms} ms); ${bench.generated_tokens[0] ?? 0} tokens generated`);
  say(`  stages (median ms): ${["decode", "preprocess", "vision", "encoder", "decoder", "parse"].map((k) => `${k} ${bench.stages_median_ms[k] ?? "–"}`).join(", ")}`);
  say(`  inside TensorRT: median ${bench.engine_median_ms} ms (end to end ÷ engine = ${bench.overhead_ratio})`);
  if (bench.backend_stats) say(`  backend: ${JSON.stringify(bench.backend_stats)}`);
  try {
    const eager = await captionBench({ tensorrt: { cudaGraphs: false } });
    report.cudaGraphs = { onMedianMs: bench.median_ms, offMedianMs: eager.median_ms, offOverOn: Math.round((eager.median_ms / bench.median_ms) * 1000) / 1000 };
    say(`  CUDA graphs off: median ${eager.median_ms} ms (${report.cudaGraphs.offOverOn}× the time with graphs)`);
  } catch (error) {
    report.cudaGraphs = { notMeasured: errorText(error) };
    say(`  CUDA graphs off: not measured: ${errorText(error)}`);
  }
  return bench;
}

/** Step 5: the target for this GPU and the verdict, reported and not asserted. */
function judge(ctx: RunContext, machine: MachineInfo, bench: BenchReport): void {
  const { options, report, say } = ctx;
  say(`[5/${STEPS}] performance target (reported, not asserted)`);
  const env = report.environment!;
  const target = selectTarget({ name: env.gpu.ok ? env.gpu.name : machine.gpuName, memoryBytes: env.memoryBytes }, options.target);
  const verdict = judgeTarget(target, { medianMs: bench.median_ms, tokens: bench.generated_tokens[0] ?? 0, model: report.model, hfBaselineMs: options.hfBaselineMs });
  report.target = { selection: target, verdict };
  if (target.id) say(`  ${TARGETS[target.id].text}: ${target.reason}`);
  say(`  ${verdict.line}`);
}

async function run(options: HardwareTestOptions, startedAt: string, say: (line: string) => void): Promise<HardwareReport> {
  const config = JSON.parse(readFileSync(join(options.model, "config.json"), "utf8")) as Record<string, unknown>;
  const modelSize = modelSizeOf(config, {
    bundledDemo: resolve(options.model) === resolve(demoModelDir()),
    // fixtures made by scripts/python/make_fixtures.py record how in reference/meta.json
    bundledFixture: existsSync(join(options.model, "reference", "meta.json")),
  });
  const report: HardwareReport = { schema: 1, startedAt, finishedAt: "", status: "passed", exitCode: 0, options, model: { dir: options.model, ...modelSize }, failures: [] };
  const ctx: RunContext = {
    options,
    report,
    runtimeEnv: readEnvironment(),
    say,
    fail: (line) => {
      report.failures.push(line);
      say(`  FAILED: ${line}`);
    },
  };
  say(`florence-edge hardware test: ${options.model} (${modelSize.label})`);
  const found = await checkEnvironment(ctx);
  if (!found) return report;
  const refs = readReferences(options);
  if (!(await prepareEngines(ctx, found, refs))) return report;
  if (!(await checkParity(ctx, refs))) return report;
  await checkWorld(ctx);
  const bench = await timeCaption(ctx);
  if (bench) judge(ctx, found.machine, bench);
  return report;
}

function printSummary(report: HardwareReport, say: (line: string) => void): void {
  say("summary");
  const env = report.environment;
  if (env) {
    const missing = missingParts(env);
    say(`  environment   ${missing.length ? `missing ${missing.map((p) => PART_NAMES[p]).join(", ")}` : `${env.gpu.ok ? env.gpu.name : "GPU"}, TensorRT ${env.tensorrt.ok ? env.tensorrt.version : "?"}, CUDA ${env.cuda.ok ? env.cuda.runtime : "?"}`}`);
  }
  if (report.engines) say(`  engines       ${report.engines.skippedBuild ? "build skipped" : `built ${report.engines.built.length}, up to date ${report.engines.upToDate.length}`}${report.engines.engineDir ? ` (${report.engines.engineDir})` : ""}`);
  if (report.parity) {
    const p = report.parity;
    say(`  parity        ${"notChecked" in p ? "not checked (no references)" : `${p.exact} exact, ${p.differ} differ, ${p.failed} failed of ${p.checked} checked; skipped ${p.skipped.margin} (margin), ${p.skipped.beam} (beam)${p.skipped["no-margin"] ? `, ${p.skipped["no-margin"]} (no margin)` : ""}`}`);
  }
  if (report.timings) say(`  timings       median ${report.timings.median_ms} ms, p90 ${report.timings.p90_ms} ms end to end`);
  if (report.cudaGraphs && "offOverOn" in report.cudaGraphs) say(`  cuda graphs   off: ${report.cudaGraphs.offMedianMs} ms (${report.cudaGraphs.offOverOn}× on)`);
  if (report.target) say(`  target        ${report.target.verdict.status}`);
  for (const failure of report.failures) say(`  failure       ${shorten(failure, 400)}`);
  say(report.status === "passed" ? "PASSED" : report.status === "skipped" ? "SKIPPED (exit 3): this machine cannot run the TensorRT path" : `FAILED (exit ${report.exitCode})`);
}

export const EXIT_CODES_HELP = "exit codes: 0 passed, 1 parity differences or failures, 2 bad flags, 3 skipped (no GPU, CUDA runtime or TensorRT here)";

/** The whole test from its arguments: prints as it goes and a summary, writes --json; resolves with the exit code (EXIT). */
export async function testHardware(argv: readonly string[], say: (line: string) => void = (line) => process.stdout.write(`${line}\n`)): Promise<number> {
  let options: HardwareTestOptions | "help";
  try {
    options = parseHardwareTestArgs(argv);
  } catch (error) {
    process.stderr.write(`${errorText(error)}\n`);
    return isFlorenceError(error, "INVALID_ARGUMENT") ? EXIT.badFlags : EXIT.failed;
  }
  if (options === "help") {
    say(usage("test-hardware", TEST_HARDWARE_SUMMARY, FLAGS));
    say(`\n${EXIT_CODES_HELP}`);
    return EXIT.passed;
  }
  const startedAt = new Date().toISOString();
  let report: HardwareReport;
  try {
    report = await run(options, startedAt, say);
  } catch (error) {
    // a bug or an unexpected native failure: say what, keep the stack for the JSON report only
    say(`FAILED: ${errorText(error)}`);
    report = {
      schema: 1,
      startedAt,
      finishedAt: "",
      status: "failed",
      exitCode: EXIT.failed,
      options,
      model: { dir: options.model, ...modelSizeOf({}) },
      failures: [errorText(error)],
      ...(error instanceof Error && error.stack ? { stack: error.stack } : {}),
    };
  }
  report.exitCode = exitCodeFor(report);
  report.status = report.exitCode === EXIT.passed ? "passed" : report.exitCode === EXIT.skipped ? "skipped" : "failed";
  report.finishedAt = new Date().toISOString();
  printSummary(report, say);
  if (options.json) {
    try {
      await mkdir(dirname(resolve(options.json)), { recursive: true });
      await writeFile(options.json, `${JSON.stringify(report, null, 2)}\n`);
      say(`report: ${resolve(options.json)}`);
    } catch (error) {
      say(`could not write --json ${options.json}: ${errorText(error)}`);
      return EXIT.failed;
    }
  }
  return report.exitCode;
}
