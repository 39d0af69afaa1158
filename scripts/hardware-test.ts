/**
 * The TensorRT hardware test: run it on a Jetson (Orin Nano / NX / AGX, JetPack 6 or 7) or a desktop NVIDIA GPU to
 * check that TensorRT engines build there, match Hugging Face and how fast they are.
 *
 *   npm run test:hardware -- [--model DIR] [--skip-build] [--margin 0.1] [--all] [--max-new-tokens 20] [--runs 20]
 *       [--target orin-nano|agx-orin|desktop] [--hf-baseline-ms N] [--json FILE]
 *
 * 1. environment: the GPU (nvidia-smi, or the Jetson device tree), the CUDA runtime and TensorRT's libnvinfer as the
 *    TensorRT backend loads them, and trtexec for building. Anything missing: one line saying what and how to get it,
 *    exit 3.
 * 2. engines: scripts/build-engines.ts into the package's engines/ (--skip-build uses what is there), then the same
 *    lookup the TensorRT backend does, so a hand-over problem shows here and not as a load failure.
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
 * or TensorRT here). The default model is the bundled tiny fixture: its timings say nothing about the targets.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { totalmem } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import process from "node:process";
import { type BenchOptions, type BenchReport, runBench } from "../src/bench.ts";
import { type FlagSpec, parseFlags, usage, runAsScript } from "../src/cli_args.ts";
import { readEnvironment } from "../src/config.ts";
import type { MachineInfo } from "../src/engine/tensorrt/runtime.ts";
import { FlorenceError, isFlorenceError } from "../src/errors.ts";
import type { Florence2, TaskResult } from "../src/florence/florence2.ts";
import { loadFlorence } from "../src/mod.ts";
import { demoModelDir, packageRoot } from "../src/paths.ts";
import { firstDifference, round } from "./bench-vs-transformersjs.ts";
import { type BuildEnginesResult, buildEngines, detectGpu, detectTensorRT, findTrtexec, type GpuInfo, JETPACK_TRTEXEC, type TensorRTVersion } from "./build-engines.ts";

export const EXIT = { passed: 0, failed: 1, badFlags: 2, skipped: 3 } as const;

// ---------------------------------------------------------------------------------------------------------------
// Flags

export const FLAGS: Record<string, FlagSpec> = {
  model: { kind: "string", help: "model folder with onnx/ and reference/generate.json (default the bundled test/fixtures/tiny-seed0)" },
  "skip-build": { kind: "boolean", help: "use the engines already built for this GPU and TensorRT instead of running build-engines" },
  margin: { kind: "number", min: 0, help: "check greedy cases whose reference top-2 logit margin is at least this (default 0.1)" },
  all: { kind: "boolean", help: "check every reference case, beam search and small margins included (FP16 may legitimately differ)" },
  "max-new-tokens": { kind: "int", min: 1, max: 1024, help: "tokens generated per timed run, exactly (default 20; the targets are for 20)" },
  runs: { kind: "int", min: 1, max: 10000, help: "timed runs (default 20)" },
  warmup: { kind: "int", min: 0, max: 1000, help: "untimed runs before them (default 3)" },
  image: { kind: "string", help: "image for the timings (default the model's reference/images/street.jpg, else the fixture's)" },
  target: { kind: "string", choices: ["orin-nano", "agx-orin", "desktop"], help: "performance target to compare with (default: picked from the GPU)" },
  "hf-baseline-ms": { kind: "number", min: 0.001, help: "HF PyTorch FP16 median on this GPU, ms (<CAPTION>, greedy, 20 tokens): for the desktop target" },
  trtexec: { kind: "string", help: `trtexec path for building (default ${JETPACK_TRTEXEC}, then PATH)` },
  json: { kind: "string", help: "also write the report as JSON to this file" },
  help: { kind: "boolean", help: "this help" },
};

export type TargetId = "orin-nano" | "agx-orin" | "desktop";

export interface HardwareTestOptions {
  model: string;
  image: string;
  skipBuild: boolean;
  margin: number;
  all: boolean;
  maxNewTokens: number;
  runs: number;
  warmup: number;
  target: TargetId | undefined;
  hfBaselineMs: number | undefined;
  trtexec: string | undefined;
  json: string | undefined;
}

const COMMAND = "test:hardware";

export function parseHardwareTestArgs(argv: readonly string[], root: string = packageRoot()): HardwareTestOptions | "help" {
  const { flags, positional } = parseFlags(COMMAND, argv, FLAGS);
  if (flags["help"]) return "help";
  if (positional.length > 0) {
    throw new FlorenceError("INVALID_ARGUMENT", `${COMMAND}: unexpected argument ${JSON.stringify(positional[0])}`, { fix: "pass everything as --flag value, e.g. --model DIR" });
  }
  const fixture = join(root, "test", "fixtures", "tiny-seed0");
  const model = resolve((flags["model"] as string | undefined) ?? fixture);
  if (!existsSync(join(model, "config.json"))) {
    throw new FlorenceError("INVALID_ARGUMENT", `${COMMAND}: --model ${model} is not a model folder (no config.json)`, {
      fix: "pass a Florence-2 folder in the onnx-community layout (config.json, onnx/*.onnx), e.g. --model models/Florence-2-base-ft",
    });
  }
  const ownImage = join(model, "reference", "images", "street.jpg");
  const image = resolve((flags["image"] as string | undefined) ?? (existsSync(ownImage) ? ownImage : join(fixture, "reference", "images", "street.jpg")));
  if (!existsSync(image)) throw new FlorenceError("INVALID_ARGUMENT", `${COMMAND}: --image ${image} does not exist`, { fix: "pass an existing image file" });
  return {
    model,
    image,
    skipBuild: flags["skip-build"] === true,
    margin: (flags["margin"] as number | undefined) ?? 0.1,
    all: flags["all"] === true,
    maxNewTokens: (flags["max-new-tokens"] as number | undefined) ?? 20,
    runs: (flags["runs"] as number | undefined) ?? 20,
    warmup: (flags["warmup"] as number | undefined) ?? 3,
    target: flags["target"] as TargetId | undefined,
    hfBaselineMs: flags["hf-baseline-ms"] as number | undefined,
    trtexec: flags["trtexec"] as string | undefined,
    json: flags["json"] as string | undefined,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Environment: what is missing and how to get it

export type Platform = "jetson" | "desktop";
export type Part = "gpu" | "cuda" | "tensorrt" | "trtexec";
export type Availability<T> = ({ ok: true } & T) | { ok: false; reason: string };

export interface EnvironmentReport {
  platform: Platform;
  gpu: Availability<{ name: string; computeCapability: string; driver: string | null; cudaDriver: string | null }>;
  cuda: Availability<{ runtime: string; driver: string; library: string }>;
  tensorrt: Availability<{ version: string }>;
  /** Not looked for with --skip-build. */
  trtexec: Availability<{ path: string; version: string }> | { ok: "not needed" };
  /** GPU memory as CUDA reports it (on a Jetson, the memory it shares with the CPU). */
  memoryBytes: number | null;
  integrated: boolean | null;
}

const PART_NAMES: Record<Part, string> = { gpu: "NVIDIA GPU", cuda: "CUDA runtime (libcudart)", tensorrt: "TensorRT (libnvinfer)", trtexec: "trtexec" };

export function missingParts(env: Pick<EnvironmentReport, "gpu" | "cuda" | "tensorrt" | "trtexec">): Part[] {
  return (["gpu", "cuda", "tensorrt", "trtexec"] as const).filter((part) => env[part].ok === false);
}

const HOW_TO_GET: Record<Platform, Record<Part, string>> = {
  jetson: {
    gpu: "the GPU driver comes with JetPack 6 or 7 (L4T): reflash or update with SDK Manager, and run as a user in the video group",
    cuda: "CUDA comes with JetPack: sudo apt install nvidia-jetpack",
    tensorrt: "JetPack ships TensorRT (libnvinfer, /usr/src/tensorrt): sudo apt install nvidia-jetpack (or tensorrt)",
    trtexec: `JetPack's TensorRT puts trtexec in ${JETPACK_TRTEXEC} (sudo apt install tensorrt); or pass --trtexec PATH, or --skip-build with engines built already`,
  },
  desktop: {
    gpu: "install the NVIDIA driver (nvidia-smi must list the GPU; in a container, run it with --gpus all)",
    cuda: "install the CUDA 12 or 13 runtime (libcudart) and put its lib64/ on LD_LIBRARY_PATH",
    tensorrt: "install TensorRT 10.x (NVIDIA's deb or tar) and put its lib/ on LD_LIBRARY_PATH",
    trtexec: "put TensorRT 10.x's bin/trtexec on PATH (or pass --trtexec PATH, or --skip-build with engines built already)",
  },
};

/** The one line printed when the machine cannot run the test: which parts are missing and how to get them. */
export function skipLine(missing: readonly Part[], platform: Platform): string {
  if (missing.length === 0) return "";
  const names = missing.map((p) => PART_NAMES[p]);
  if (missing.includes("gpu")) {
    const also = names.length > 1 ? ` (also missing: ${names.slice(1).join(", ")})` : "";
    const how =
      platform === "jetson"
        ? HOW_TO_GET.jetson.gpu
        : "run it on a Jetson with JetPack 6 or 7 (it ships TensorRT in /usr/src/tensorrt and libnvinfer) or on a desktop NVIDIA GPU with the driver, CUDA 12+ and TensorRT 10.x installed and trtexec on PATH";
    return `SKIPPED, cannot run here: no NVIDIA GPU${also} — ${how}`;
  }
  return `SKIPPED, cannot run here: missing ${names.join(", ")} — ${missing.map((p) => HOW_TO_GET[platform][p]).join("; ")}`;
}

function detectPlatform(): Platform {
  if (existsSync("/etc/nv_tegra_release")) return "jetson";
  try {
    if (/nvidia,tegra/.test(readFileSync("/proc/device-tree/compatible", "latin1"))) return "jetson";
  } catch {
    // no device tree: not a Jetson
  }
  return "desktop";
}

function firstClause(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split(" — ")[0]!;
}

interface Detected {
  env: EnvironmentReport;
  /** Set when CUDA and TensorRT both loaded: what the TensorRT backend will see. */
  machine: MachineInfo | undefined;
  trtexec: string | undefined;
}

async function detectEnvironment(options: HardwareTestOptions): Promise<Detected> {
  const platform = detectPlatform();
  let gpuInfo: GpuInfo | undefined;
  let gpuReason = "";
  try {
    gpuInfo = await detectGpu();
  } catch (error) {
    gpuReason = firstClause(error);
  }
  // loaded here and not at the top: --help and bad flags must work without koffi
  const { CudaRuntime, formatCudaVersion } = await import("../src/engine/tensorrt/cuda.ts");
  const { describeMachine, tryLoadTensorRt } = await import("../src/engine/tensorrt/runtime.ts");
  const cuda = CudaRuntime.tryOpen();
  const trt = tryLoadTensorRt();
  let machine: MachineInfo | undefined;
  let memoryBytes: number | null = null;
  if (cuda.ok) {
    try {
      memoryBytes = cuda.cuda.memoryInfo().totalBytes;
    } catch {
      memoryBytes = null;
    }
    if (trt.ok) machine = describeMachine(cuda.cuda, trt.trt);
  }
  if (memoryBytes === null && platform === "jetson") memoryBytes = totalmem();
  const deviceName = cuda.ok ? cuda.cuda.deviceName() : undefined;
  const gpu: EnvironmentReport["gpu"] = gpuInfo
    ? { ok: true, ...gpuInfo }
    : cuda.ok
      ? { ok: true, name: deviceName ?? "GPU", computeCapability: (({ major, minor }) => `${major}.${minor}`)(cuda.cuda.computeCapability()), driver: null, cudaDriver: formatCudaVersion(cuda.cuda.driverVersion) }
      : { ok: false, reason: gpuReason };

  let trtexecPath: string | undefined;
  let trtexec: EnvironmentReport["trtexec"] = { ok: "not needed" };
  if (!options.skipBuild) {
    try {
      trtexecPath = await findTrtexec(options.trtexec);
      const version: TensorRTVersion = await detectTensorRT(trtexecPath);
      trtexec = { ok: true, path: trtexecPath, version: version.version };
    } catch (error) {
      trtexec = { ok: false, reason: firstClause(error) };
      trtexecPath = undefined;
    }
  }
  return {
    env: {
      platform,
      gpu,
      cuda: cuda.ok ? { ok: true, runtime: formatCudaVersion(cuda.cuda.runtimeVersion), driver: formatCudaVersion(cuda.cuda.driverVersion), library: cuda.cuda.libraryPath } : { ok: false, reason: cuda.reason },
      tensorrt: trt.ok ? { ok: true, version: trt.trt.versionText } : { ok: false, reason: trt.reason },
      trtexec,
      memoryBytes,
      integrated: machine?.integrated ?? (platform === "jetson" ? true : null),
    },
    machine,
    trtexec: trtexecPath,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Parity: which reference cases are checked, and how outputs compare

/** One case of reference/generate.json (scripts/python/make_fixtures.py run_generation). */
export interface ReferenceCase {
  id: string;
  images: string[];
  task: string;
  text_input: string | null;
  generate_kwargs: Record<string, unknown>;
  generated_ids: number[][];
  text: string[];
  result: Record<string, unknown>[];
  /** Greedy cases: the smallest gap between the best and second-best processed logit over every step. */
  min_top2_margin?: number;
}

export type SkipReason = "margin" | "beam" | "no-margin";

export interface CaseSelection {
  case: ReferenceCase;
  check: boolean;
  /** Why it is skipped; undefined when checked. */
  skip: SkipReason | undefined;
  numBeams: number;
}

export interface Selection {
  cases: CaseSelection[];
  checked: number;
  skipped: Record<SkipReason, number>;
}

/**
 * Which cases FP16 engines can be held to: greedy ones whose reference top-2 margin is at least `margin` (float16
 * rounding moves logits by far less). Beam cases record no per-step margins; `all` checks every case anyway.
 * `defaultNumBeams` is the model's generation_config num_beams, for cases that do not set it.
 */
export function classifyCases(cases: readonly ReferenceCase[], options: { margin: number; all: boolean; defaultNumBeams: number }): Selection {
  const skipped: Record<SkipReason, number> = { margin: 0, beam: 0, "no-margin": 0 };
  let checked = 0;
  const out = cases.map((c): CaseSelection => {
    const beams = c.generate_kwargs["num_beams"];
    const numBeams = typeof beams === "number" ? beams : options.defaultNumBeams;
    let skip: SkipReason | undefined;
    if (!options.all) {
      if (numBeams > 1) skip = "beam";
      else if (typeof c.min_top2_margin !== "number") skip = "no-margin";
      else if (c.min_top2_margin < options.margin) skip = "margin";
    }
    if (skip) skipped[skip]++;
    else checked++;
    return { case: c, check: skip === undefined, skip, numBeams };
  });
  return { cases: out, checked, skipped };
}

export type CaseOutput = Pick<TaskResult, "generated_ids" | "text" | "result">;

export type CaseComparison =
  | { status: "exact" }
  | {
      status: "differ";
      /** Which image of the case's batch. */
      image: number;
      /** The first thing that differs, checked in this order. */
      field: "count" | "generated_ids" | "text" | "result";
      /** generated_ids: the first position that differs (the shorter length when one is a prefix). */
      tokenIndex: number | null;
      ours: unknown;
      reference: unknown;
    };

/** Ids, then text, then the parsed result, exactly, image by image. */
export function compareCase(reference: ReferenceCase, outputs: readonly CaseOutput[]): CaseComparison {
  if (outputs.length !== reference.generated_ids.length) {
    return { status: "differ", image: 0, field: "count", tokenIndex: null, ours: outputs.length, reference: reference.generated_ids.length };
  }
  for (let i = 0; i < outputs.length; i++) {
    const ours = outputs[i]!;
    const index = firstDifference(ours.generated_ids, reference.generated_ids[i]!);
    if (index >= 0) return { status: "differ", image: i, field: "generated_ids", tokenIndex: index, ours: ours.generated_ids, reference: reference.generated_ids[i] };
    if (ours.text !== reference.text[i]) return { status: "differ", image: i, field: "text", tokenIndex: null, ours: ours.text, reference: reference.text[i] };
    if (JSON.stringify(ours.result) !== JSON.stringify(reference.result[i])) return { status: "differ", image: i, field: "result", tokenIndex: null, ours: ours.result, reference: reference.result[i] };
  }
  return { status: "exact" };
}

export type CaseOutcome = CaseComparison | { status: "failed"; error: string };

export interface ParitySummary {
  exact: number;
  differ: number;
  failed: number;
  checked: number;
  skipped: Record<SkipReason, number>;
  firstDifference: ({ id: string } & Extract<CaseComparison, { status: "differ" }>) | null;
  firstFailure: { id: string; error: string } | null;
}

export function summarizeParity(selection: Selection, outcomes: readonly { id: string; outcome: CaseOutcome }[]): ParitySummary {
  const summary: ParitySummary = { exact: 0, differ: 0, failed: 0, checked: selection.checked, skipped: { ...selection.skipped }, firstDifference: null, firstFailure: null };
  for (const { id, outcome } of outcomes) {
    if (outcome.status === "exact") summary.exact++;
    else if (outcome.status === "differ") {
      summary.differ++;
      summary.firstDifference ??= { id, ...outcome };
    } else {
      summary.failed++;
      summary.firstFailure ??= { id, error: outcome.error };
    }
  }
  return summary;
}

/**
 * Runs the checked cases on a loaded model the way test/e2e/infer.test.ts does (the case's images from
 * reference/images, its generate kwargs, int coordinates) and compares each with the reference. Backend-agnostic:
 * a case that throws is a failure, and the next one still runs.
 */
export async function runParity(
  model: Pick<Florence2, "encodeImages" | "runTaskBatch">,
  modelDir: string,
  selection: Selection,
  onCase: (id: string, outcome: CaseOutcome) => void = () => {},
): Promise<{ id: string; outcome: CaseOutcome }[]> {
  const outcomes: { id: string; outcome: CaseOutcome }[] = [];
  for (const { case: c } of selection.cases.filter((x) => x.check)) {
    let outcome: CaseOutcome;
    try {
      const visions = await model.encodeImages(c.images.map((name) => join(modelDir, "reference", "images", name)));
      const results = await model.runTaskBatch(visions, { task: c.task, text: c.text_input ?? undefined }, { generation: c.generate_kwargs, postprocess: { coordinates: "int" } });
      outcome = compareCase(c, results);
    } catch (error) {
      outcome = { status: "failed", error: errorText(error) };
    }
    outcomes.push({ id: c.id, outcome });
    onCase(c.id, outcome);
  }
  return outcomes;
}

export function describeDifference(d: NonNullable<ParitySummary["firstDifference"]>): string[] {
  const where = `${d.id}${d.image > 0 ? ` image ${d.image}` : ""}`;
  if (d.field === "generated_ids") {
    return [`first difference: ${where}, generated ids from token ${d.tokenIndex}`, `    ours ${JSON.stringify(d.ours)}`, `    HF   ${JSON.stringify(d.reference)}`];
  }
  if (d.field === "count") return [`first difference: ${where}: ${String(d.ours)} results for ${String(d.reference)} images`];
  return [`first difference: ${where}, ${d.field} (the ids are equal)`, `    ours ${JSON.stringify(d.ours)}`, `    HF   ${JSON.stringify(d.reference)}`];
}

// ---------------------------------------------------------------------------------------------------------------
// Model size and performance targets

export interface ModelSize {
  size: "base" | "large" | "other";
  dModel: number | null;
  encoderLayers: number | null;
  decoderLayers: number | null;
  /** How the report names it: "Florence-2-base", "the tiny fixture model", … */
  label: string;
}

/** Florence-2-base is d_model 768 with 6 encoder and 6 decoder layers; -large is 1024 with 12 and 12. */
export function modelSizeOf(config: Record<string, unknown>, options: { bundledFixture?: boolean } = {}): ModelSize {
  const text = (typeof config["text_config"] === "object" && config["text_config"] !== null ? config["text_config"] : config) as Record<string, unknown>;
  const int = (key: string) => (typeof text[key] === "number" ? (text[key] as number) : null);
  const dModel = int("d_model");
  const encoderLayers = int("encoder_layers");
  const decoderLayers = int("decoder_layers");
  const size = dModel === 768 && encoderLayers === 6 && decoderLayers === 6 ? "base" : dModel === 1024 && encoderLayers === 12 && decoderLayers === 12 ? "large" : "other";
  const label =
    size === "base"
      ? "Florence-2-base"
      : size === "large"
        ? "Florence-2-large"
        : options.bundledFixture
          ? "the tiny fixture model"
          : `a model that is not Florence-2-base size (d_model ${dModel ?? "?"}, ${encoderLayers ?? "?"}+${decoderLayers ?? "?"} layers)`;
  return { size, dModel, encoderLayers, decoderLayers, label };
}

export const TARGET_TOKENS = 20;

export const TARGETS: Record<TargetId, { device: string; maxMs?: number; minSpeedupVsHf?: number; text: string }> = {
  "orin-nano": { device: "Jetson Orin Nano 8 GB", maxMs: 150, text: "≤ 150 ms end to end on a Jetson Orin Nano 8 GB" },
  "agx-orin": { device: "Jetson AGX Orin", maxMs: 50, text: "≤ 50 ms end to end on a Jetson AGX Orin" },
  desktop: { device: "desktop GPU", minSpeedupVsHf: 3, text: "≥ 3× faster than HF PyTorch FP16 on the same GPU" },
};

export interface TargetSelection {
  id: TargetId | null;
  reason: string;
}

const GiB = 2 ** 30;

/**
 * The target for a GPU: Jetsons by name ("Nano", "AGX") or, for nvidia-smi's bare "Orin (nvgpu)", by memory (an
 * Orin Nano 8 GB shows about 7.4 GiB, an AGX Orin 30 or 61 GiB); any other NVIDIA GPU is a desktop one.
 */
export function selectTarget(gpu: { name: string; memoryBytes: number | null }, override?: TargetId): TargetSelection {
  if (override) return { id: override, reason: `--target ${override}` };
  const name = gpu.name;
  const memory = gpu.memoryBytes === null ? "unknown memory" : `${(gpu.memoryBytes / GiB).toFixed(1)} GiB`;
  if (/orin/i.test(name)) {
    if (/nano/i.test(name)) return { id: "orin-nano", reason: `"${name}" is an Orin Nano` };
    if (/agx/i.test(name)) return { id: "agx-orin", reason: `"${name}" is an AGX Orin` };
    if (/\bnx\b/i.test(name)) return { id: null, reason: `no target for an Orin NX ("${name}"); pass --target to compare with one` };
    if (gpu.memoryBytes !== null && gpu.memoryBytes >= 6 * GiB && gpu.memoryBytes <= 8.5 * GiB) return { id: "orin-nano", reason: `"${name}" with ${memory}: taken for an Orin Nano 8 GB (an Orin NX 8 GB looks the same: pass --target)` };
    if (gpu.memoryBytes !== null && gpu.memoryBytes >= 28 * GiB) return { id: "agx-orin", reason: `"${name}" with ${memory}: an AGX Orin` };
    return { id: null, reason: `no target for "${name}" with ${memory} (targets: Orin Nano 8 GB, AGX Orin); pass --target to compare with one` };
  }
  if (/jetson|xavier|thor|tegra|nvgpu/i.test(name)) return { id: null, reason: `no target for "${name}" (targets: Orin Nano 8 GB, AGX Orin); pass --target to compare with one` };
  return { id: "desktop", reason: `"${name}" is a desktop GPU` };
}

export type VerdictStatus = "met" | "not met" | "not compared" | "model not base size" | "no target";

export interface Verdict {
  status: VerdictStatus;
  line: string;
  /** desktop: HF baseline ÷ our median. */
  speedup?: number;
}

export function judgeTarget(selection: TargetSelection, measured: { medianMs: number; tokens: number; model: ModelSize; hfBaselineMs?: number | undefined }): Verdict {
  if (selection.id === null) return { status: "no target", line: selection.reason };
  const target = TARGETS[selection.id];
  if (measured.model.size !== "base") {
    return { status: "model not base size", line: `timings of ${measured.model.label}; the targets are for Florence-2-base (${target.text})` };
  }
  if (measured.tokens !== TARGET_TOKENS) {
    return { status: "not compared", line: `not compared: the targets are for ${TARGET_TOKENS} generated tokens, this run generated ${measured.tokens} (--max-new-tokens ${TARGET_TOKENS})` };
  }
  const median = round(measured.medianMs);
  if (target.maxMs !== undefined) {
    const met = measured.medianMs <= target.maxMs;
    return { status: met ? "met" : "not met", line: `${met ? "met" : "not met"}: median ${median} ms ${met ? "≤" : ">"} ${target.maxMs} ms (${target.device})` };
  }
  if (measured.hfBaselineMs === undefined) {
    return { status: "not compared", line: `not compared: pass --hf-baseline-ms (HF PyTorch FP16 median on this GPU, <CAPTION>, greedy, ${TARGET_TOKENS} tokens) for the ${target.text} target` };
  }
  const speedup = round(measured.hfBaselineMs / measured.medianMs);
  const met = speedup >= target.minSpeedupVsHf!;
  return { status: met ? "met" : "not met", speedup, line: `${met ? "met" : "not met"}: ${speedup}× faster than HF (${measured.hfBaselineMs} ms ÷ ${median} ms), target ≥ ${target.minSpeedupVsHf}×` };
}

// ---------------------------------------------------------------------------------------------------------------
// The run

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

function errorText(error: unknown): string {
  return isFlorenceError(error) ? `${error.code}: ${error.message}` : error instanceof Error ? error.message : String(error);
}

const STEPS = 5;

async function run(options: HardwareTestOptions, startedAt: string, say: (line: string) => void): Promise<HardwareReport> {
  const runtimeEnv = readEnvironment();
  const config = JSON.parse(readFileSync(join(options.model, "config.json"), "utf8")) as Record<string, unknown>;
  const modelSize = modelSizeOf(config, { bundledFixture: resolve(options.model) === resolve(demoModelDir()) });
  const report: HardwareReport = {
    schema: 1,
    startedAt,
    finishedAt: "",
    status: "passed",
    exitCode: 0,
    options,
    model: { dir: options.model, ...modelSize },
    failures: [],
  };
  const fail = (line: string) => {
    report.failures.push(line);
    say(`  FAILED: ${line}`);
  };
  say(`florence-edge hardware test: ${options.model} (${modelSize.label})`);

  // 1. environment
  say(`[1/${STEPS}] environment`);
  const detected = await detectEnvironment(options);
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
    return report;
  }
  if (env.trtexec.ok === true && env.tensorrt.ok && env.trtexec.version !== env.tensorrt.version) {
    say(`  warning: trtexec is TensorRT ${env.trtexec.version} but the runtime loads libnvinfer ${env.tensorrt.version}: engines load only in the version that built them (fix PATH or LD_LIBRARY_PATH)`);
  }
  const machine = detected.machine!;

  // 2. engines
  say(`[2/${STEPS}] engines`);
  const enginesRoot = join(packageRoot(), "engines");
  const refsPath = join(options.model, "reference", "generate.json");
  const references = existsSync(refsPath) ? (JSON.parse(readFileSync(refsPath, "utf8")) as ReferenceCase[]) : undefined;
  const generationConfigPath = join(options.model, "generation_config.json");
  const generationConfig = existsSync(generationConfigPath) ? (JSON.parse(readFileSync(generationConfigPath, "utf8")) as Record<string, unknown>) : {};
  const defaultNumBeams = typeof generationConfig["num_beams"] === "number" ? (generationConfig["num_beams"] as number) : 1;
  const selection = references ? classifyCases(references, { margin: options.margin, all: options.all, defaultNumBeams }) : undefined;
  let built: BuildEnginesResult | undefined;
  if (options.skipBuild) {
    say(`  build skipped (--skip-build): looking for engines under ${enginesRoot} and ${join(runtimeEnv.cacheDir, "engines")}`);
    report.engines = { built: [], upToDate: [], engineDir: null, skippedBuild: true };
  } else {
    // profiles wide enough for the checked cases; otherwise build-engines' defaults, so the engines are the usual ones
    const checked = selection?.cases.filter((c) => c.check) ?? [];
    const maxBatch = Math.max(1, ...checked.map((c) => c.case.images.length));
    const maxBeams = Math.max(defaultNumBeams, ...checked.map((c) => c.numBeams));
    // Ctrl-C stops trtexec and leaves no half-built engine folder (build-engines cleans up on abort)
    const controller = new AbortController();
    const onSignal = () => controller.abort();
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    try {
      built = await buildEngines({
        model: options.model,
        out: enginesRoot,
        ...(detected.trtexec ? { trtexec: detected.trtexec } : {}),
        ...(maxBatch > 1 ? { maxBatch } : {}),
        ...(maxBeams > defaultNumBeams ? { maxBeams } : {}),
        log: (line) => say(`  ${line}`),
        signal: controller.signal,
      });
      report.engines = { built: built.built, upToDate: built.skipped, engineDir: built.engineDir, skippedBuild: false };
    } catch (error) {
      fail(`building the engines: ${errorText(error)}`);
      return report;
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
  }
  // the lookup `--backend tensorrt` does: build-engines' folder and manifest must be what the runtime reads
  const { findEngines } = await import("../src/engine/tensorrt/runtime.ts");
  const found = await findEngines([join(runtimeEnv.cacheDir, "engines"), enginesRoot], basename(options.model), { machine });
  if (!found.ok) {
    fail(`the TensorRT backend cannot use the engines: ${found.reason}`);
    return report;
  }
  say(`  the TensorRT backend loads ${found.engineDir}`);
  if (built && resolve(found.engineDir) !== resolve(built.engineDir)) say(`  warning: that is not the folder just built (${built.engineDir}): the cache's engines/ is searched first`);
  if (report.engines) report.engines.engineDir = found.engineDir;

  // 3. parity
  say(`[3/${STEPS}] parity with Hugging Face (reference/generate.json)`);
  if (!references || !selection) {
    const why = `no ${refsPath}: parity not checked (references come from scripts/python/make_fixtures.py or make_sized_model.py)`;
    report.parity = { notChecked: why };
    say(`  ${why}`);
  } else {
    const s = selection.skipped;
    say(
      `  ${references.length} cases: ${selection.checked} checked${options.all ? " (--all)" : ` (greedy, top-2 margin ≥ ${options.margin})`}, skipped ${s.margin} (margin < ${options.margin}), ${s.beam} (beam search)${s["no-margin"] ? `, ${s["no-margin"]} (no margin recorded)` : ""}`,
    );
    const outcomes: { id: string; outcome: CaseOutcome }[] = [];
    let loaded = true;
    if (selection.checked > 0) {
      let model: Florence2 | undefined;
      try {
        model = await loadFlorence(options.model, { env: runtimeEnv, backend: "tensorrt", resize: "torchvision", log: (line) => say(`  ${line}`) });
      } catch (error) {
        fail(`loading the model on TensorRT: ${errorText(error)}`);
        loaded = false;
      }
      if (model) {
        try {
          outcomes.push(
            ...(await runParity(model, options.model, selection, (id, outcome) => {
              const mark = outcome.status === "exact" ? "exact " : outcome.status === "differ" ? "DIFFER" : "FAILED";
              const detail = outcome.status === "differ" ? ` (${outcome.field}${outcome.tokenIndex !== null ? ` from token ${outcome.tokenIndex}` : ""})` : outcome.status === "failed" ? `: ${shorten(outcome.error)}` : "";
              say(`  ${mark} ${id}${detail}`);
            })),
          );
        } finally {
          await model.dispose();
          await model.engine.dispose();
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
    if (!loaded) return report;
    say(`  parity: ${summary.exact} exact, ${summary.differ} differ, ${summary.failed} failed; ${references.length - summary.checked} skipped`);
    if (summary.firstDifference) for (const line of describeDifference(summary.firstDifference)) say(`  ${line}`);
    if (summary.differ > 0) report.failures.push(`${summary.differ} of ${summary.checked} checked cases differ from HF (first: ${summary.firstDifference!.id})`);
    if (summary.failed > 0) report.failures.push(`${summary.failed} of ${summary.checked} checked cases failed (first: ${summary.firstFailure!.id}: ${summary.firstFailure!.error})`);
  }

  // 4. timings
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
      load: { env: runtimeEnv, backend: "tensorrt", ...load },
    });
  let bench: BenchReport;
  try {
    bench = await captionBench({ log: (line) => say(`  ${line}`) });
  } catch (error) {
    fail(`timing runs: ${errorText(error)}`);
    return report;
  }
  const { summary: _summary, ...timings } = bench;
  report.timings = timings;
  const tokens = bench.generated_tokens[0] ?? 0;
  say(`  end to end: median ${bench.median_ms} ms, p90 ${bench.p90_ms} ms (min ${bench.min_ms} ms); ${tokens} tokens generated`);
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

  // 5. targets
  say(`[5/${STEPS}] performance target (reported, not asserted)`);
  const target = selectTarget({ name: env.gpu.ok ? env.gpu.name : machine.gpuName, memoryBytes: env.memoryBytes }, options.target);
  const verdict = judgeTarget(target, { medianMs: bench.median_ms, tokens, model: modelSize, hfBaselineMs: options.hfBaselineMs });
  report.target = { selection: target, verdict };
  if (target.id) say(`  ${TARGETS[target.id].text}: ${target.reason}`);
  say(`  ${verdict.line}`);
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

export async function main(argv: readonly string[], say: (line: string) => void = (line) => process.stdout.write(`${line}\n`)): Promise<number> {
  let options: HardwareTestOptions | "help";
  try {
    options = parseHardwareTestArgs(argv);
  } catch (error) {
    process.stderr.write(`${errorText(error)}\n`);
    return isFlorenceError(error, "INVALID_ARGUMENT") ? EXIT.badFlags : EXIT.failed;
  }
  if (options === "help") {
    say(usage(COMMAND, "check the TensorRT path on this GPU: environment, engines, parity with HF, timings, targets", FLAGS));
    say("\nexit codes: 0 passed, 1 parity differences or failures, 2 bad flags, 3 skipped (no GPU, CUDA runtime or TensorRT here)");
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

runAsScript(import.meta, main);
