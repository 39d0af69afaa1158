/**
 * `florence-edge parse`: HF's post_process_generation on a raw generated text, with the post-processor's settings
 * (a processor_config.json, or the OCR area threshold and banned grounding phrases by flag). Text tasks need no
 * --image-size, as in HF.
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { type Command, type FlagSpec, type FlagValues, parseFlags, requireFlag } from "../cli_args.ts";
import { FlorenceError } from "../errors.ts";
import { DEFAULT_BANNED_GROUNDING_PHRASES, type PostProcessOptions, postProcessGeneration } from "../florence/postprocess.ts";
import { isRecord } from "../validate.ts";
import { type Coordinates, TASK_FLAGS } from "./model_flags.ts";

const FLAGS: Record<string, FlagSpec> = {
  task: { kind: "string", help: 'task token, e.g. "<OD>"' },
  text: { kind: "string", help: "raw generated text (special tokens kept)" },
  "image-size": { kind: "string", help: "WIDTHxHEIGHT of the original image (needed by tasks with coordinates)" },
  coordinates: TASK_FLAGS["coordinates"]!,
  format: TASK_FLAGS["format"]!,
  "processor-config": { kind: "string", help: "a model's processor_config.json (or a JSON file of its post_processor_config): banned grounding phrases, OCR AREA_THRESHOLD" },
  "ocr-area-threshold": { kind: "number", min: 0, max: 1, help: "<OCR_WITH_REGION>: drop quads smaller than this fraction of the image (HF's ocr AREA_THRESHOLD; default 0)" },
  "banned-grounding-phrase": { kind: "strings", help: "<CAPTION_TO_PHRASE_GROUNDING>: a phrase to drop; repeat for several (replaces the default list)" },
  "no-banned-grounding-phrases": { kind: "boolean", help: "<CAPTION_TO_PHRASE_GROUNDING>: drop no phrase (HF with a config that bans none)" },
  json: TASK_FLAGS["json"]!,
};

export function parseImageSize(value: string): { width: number; height: number } {
  const match = /^(\d+)x(\d+)$/.exec(value.trim());
  const width = match ? Number(match[1]) : NaN;
  const height = match ? Number(match[2]) : NaN;
  if (!match || width < 1 || height < 1 || width > 1_000_000 || height > 1_000_000) {
    throw new FlorenceError("INVALID_ARGUMENT", `parse: --image-size must be WIDTHxHEIGHT, got ${JSON.stringify(value)}`, { fix: "e.g. --image-size 640x480" });
  }
  return { width, height };
}


/** A processor_config.json's post_processor_config, or the file itself when it is one. */
function readPostProcessorConfig(path: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, "utf8"));
  } catch (cause) {
    throw new FlorenceError("INVALID_ARGUMENT", `parse: --processor-config ${path} is not a readable JSON file: ${(cause as Error).message}`, { fix: "pass the model's processor_config.json", cause });
  }
  if (!isRecord(value)) throw new FlorenceError("INVALID_ARGUMENT", `parse: --processor-config ${path} holds no JSON object`, { fix: "pass the model's processor_config.json" });
  const nested = value["post_processor_config"];
  return isRecord(nested) ? nested : value;
}

/** The post-processor settings from the flags: the config file first, then the flags that override parts of it. */
export function postProcessSettings(flags: FlagValues): Pick<PostProcessOptions, "postProcessorConfig" | "bannedGroundingPhrases"> {
  const path = flags["processor-config"] as string | undefined;
  let config = path !== undefined ? readPostProcessorConfig(path) : undefined;
  const threshold = flags["ocr-area-threshold"] as number | undefined;
  if (threshold !== undefined) {
    const ocr = isRecord(config?.["ocr"]) ? (config!["ocr"] as Record<string, unknown>) : {};
    config = { ...(config ?? {}), ocr: { ...ocr, AREA_THRESHOLD: threshold } };
  }
  const banned = flags["banned-grounding-phrase"] as string[] | undefined;
  if (banned !== undefined && flags["no-banned-grounding-phrases"] === true) {
    throw new FlorenceError("INVALID_ARGUMENT", "parse: --banned-grounding-phrase and --no-banned-grounding-phrases contradict each other", { fix: "pass one of them" });
  }
  // a config replaces HF's default banned list wholesale; a bare --ocr-area-threshold must not drop that list
  const phrases = flags["no-banned-grounding-phrases"] === true ? [] : (banned ?? (path === undefined && config !== undefined ? DEFAULT_BANNED_GROUNDING_PHRASES : undefined));
  return {
    ...(config !== undefined ? { postProcessorConfig: config } : {}),
    ...(phrases !== undefined ? { bannedGroundingPhrases: phrases } : {}),
  };
}

async function run(argv: readonly string[]): Promise<number> {
  const { flags } = parseFlags("parse", argv, FLAGS);
  const task = requireFlag<string>("parse", flags, "task", '--task "<OD>"');
  const text = requireFlag<string>("parse", flags, "text", '--text "car<loc_1><loc_2><loc_3><loc_4>"');
  const sizeFlag = flags["image-size"] as string | undefined;
  const result = postProcessGeneration(text, task, sizeFlag === undefined ? undefined : parseImageSize(sizeFlag), {
    coordinates: (flags["coordinates"] as Coordinates | undefined) ?? "float",
    format: (flags["format"] as "hf" | "nvidia" | undefined) ?? "hf",
    ...postProcessSettings(flags),
  });
  process.stdout.write(flags["json"] ? `${JSON.stringify(result)}\n` : `${JSON.stringify(result, null, 2)}\n`);
  return 0;
}

export const parseCommand: Command = { summary: "post-process a raw generated text (HF post_process_generation)", flags: FLAGS, run };
