/** The hardware test's flags and the options they make (`florence-edge test-hardware --help`). */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { type FlagSpec, parseFlags } from "../cli_args.ts";
import { JETPACK_TRTEXEC } from "../engine_build/detect.ts";
import { FlorenceError } from "../errors.ts";
import { demoImage, demoModelDir } from "../paths.ts";
import type { TargetId } from "./performance_targets.ts";

export const FLAGS: Record<string, FlagSpec> = {
  model: { kind: "string", help: "model folder (onnx-community layout); parity is checked where it has reference/generate.json (default the bundled demo model)" },
  "skip-build": { kind: "boolean", help: "use the engines already built for this GPU and TensorRT instead of running build-engines" },
  margin: { kind: "number", min: 0, help: "check greedy cases whose reference top-2 logit margin is at least this (default 0.1)" },
  all: { kind: "boolean", help: "check every reference case, beam search and small margins included (FP16 may legitimately differ)" },
  "max-new-tokens": { kind: "int", min: 1, max: 1024, help: "tokens generated per timed run, exactly (default 20; the targets are for 20)" },
  runs: { kind: "int", min: 1, max: 10000, help: "timed runs (default 20)" },
  warmup: { kind: "int", min: 0, max: 1000, help: "untimed runs before them (default 3)" },
  image: { kind: "string", help: "image for the timings (default the model's reference/images/street.jpg, else the bundled demo image)" },
  target: { kind: "string", choices: ["orin-nano", "agx-orin", "desktop"], help: "performance target to compare with (default: picked from the GPU)" },
  "hf-baseline-ms": { kind: "number", min: 0.001, help: "HF PyTorch FP16 median on this GPU, ms (<CAPTION>, greedy, 20 tokens): for the desktop target" },
  trtexec: { kind: "string", help: `trtexec path for building (default ${JETPACK_TRTEXEC}, then PATH)` },
  json: { kind: "string", help: "also write the report as JSON to this file" },
  "world-images": { kind: "int", min: 1, max: 10000, help: "held-out images for a shapes-world model's accuracy check (default 20)" },
  help: { kind: "boolean", help: "this help" },
};

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
  worldImages: number;
}

const COMMAND = "test-hardware";

export function parseHardwareTestArgs(argv: readonly string[]): HardwareTestOptions | "help" {
  const { flags, positional } = parseFlags(COMMAND, argv, FLAGS);
  if (flags["help"]) return "help";
  if (positional.length > 0) {
    throw new FlorenceError("INVALID_ARGUMENT", `${COMMAND}: unexpected argument ${JSON.stringify(positional[0])}`, { fix: "pass everything as --flag value, e.g. --model DIR" });
  }
  const model = resolve((flags["model"] as string | undefined) ?? demoModelDir());
  if (!existsSync(join(model, "config.json"))) {
    throw new FlorenceError("INVALID_ARGUMENT", `${COMMAND}: --model ${model} is not a model folder (no config.json)`, {
      fix: "pass a Florence-2 folder in the onnx-community layout (config.json, onnx/*.onnx), e.g. --model models/Florence-2-base-ft",
    });
  }
  const ownImage = join(model, "reference", "images", "street.jpg");
  const image = resolve((flags["image"] as string | undefined) ?? (existsSync(ownImage) ? ownImage : demoImage()));
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
    worldImages: (flags["world-images"] as number | undefined) ?? 20,
  };
}
