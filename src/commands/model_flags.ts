/** Flags that infer, bench and serve share: which model and backend, which tasks, and how results are shaped. */
import process from "node:process";
import type { FlagSpec, FlagValues } from "../cli_args.ts";
import type { RuntimeEnvironment } from "../config.ts";
import type { GenerateOptions } from "../florence/florence2.ts";
import { PRECISIONS } from "../florence/model_files.ts";
import type { OpenOptions } from "../mod.ts";

export const MODEL_FLAGS: Record<string, FlagSpec> = {
  model: { kind: "string", help: "model folder (onnx-community layout) or a hub id such as onnx-community/Florence-2-base-ft" },
  precision: { kind: "string", choices: PRECISIONS, help: "which onnx/*.onnx files to use (default fp32)" },
  backend: { kind: "string", choices: ["auto", "onnxruntime", "tensorrt"], help: "inference backend (default auto: TensorRT when engines exist, else ONNX Runtime on the CPU)" },
  threads: { kind: "int", min: 1, max: 1024, help: "ONNX Runtime threads (default: all cores)" },
  resize: { kind: "string", choices: ["pil", "torchvision", "fast"], help: "resize arithmetic: pil (HF's PIL backend, default), torchvision (transformers 5 default backend), fast (approximate)" },
  "exif-orientation": { kind: "string", choices: ["ignore", "apply"], help: "ignore EXIF orientation like PIL.Image.open (default) or apply it" },
};

export const TASK_FLAGS: Record<string, FlagSpec> = {
  image: { kind: "string", help: "image file (JPEG, PNG, WebP, TIFF, …)" },
  task: { kind: "strings", help: 'task token, e.g. "<OD>"; repeat for several tasks on one vision pass' },
  text: { kind: "string", help: "text input for grounding/detection tasks, or a region <loc_a><loc_b><loc_c><loc_d> or x1,y1,x2,y2 in pixels" },
  "num-beams": { kind: "int", min: 1, max: 64, help: "beam width (default: the model's generation_config)" },
  "max-new-tokens": { kind: "int", min: 1, max: 4096, help: "generation limit (default: the model's generation_config)" },
  coordinates: { kind: "string", choices: ["float", "int", "float32"], help: "box coordinates at bin centres as floats (default), truncated to int like HF-native, or HF's float32 arithmetic before truncation" },
  format: { kind: "string", choices: ["hf", "nvidia"], help: "result shape: HF post_process_generation (default) or NVIDIA's hosted API entities" },
  scores: { kind: "boolean", help: "add a confidence score per box/phrase from the decoder's token probabilities" },
  json: { kind: "boolean", help: "print one JSON object" },
};

export type Coordinates = "float" | "int" | "float32";

export function generateOptions(flags: FlagValues): GenerateOptions {
  return {
    ...(flags["num-beams"] !== undefined ? { numBeams: flags["num-beams"] as number } : {}),
    ...(flags["max-new-tokens"] !== undefined ? { maxNewTokens: flags["max-new-tokens"] as number } : {}),
    postprocess: {
      coordinates: (flags["coordinates"] as Coordinates | undefined) ?? "float",
      format: (flags["format"] as "hf" | "nvidia" | undefined) ?? "hf",
      scores: flags["scores"] === true,
    },
  };
}

/** loadFlorence's options from the model flags; progress lines go to stderr. */
export function openOptions(flags: FlagValues, env: RuntimeEnvironment): OpenOptions {
  return {
    env,
    backend: (flags["backend"] as "auto" | "onnxruntime" | "tensorrt" | undefined) ?? "auto",
    ...(flags["precision"] ? { precision: flags["precision"] as (typeof PRECISIONS)[number] } : {}),
    ...(flags["threads"] ? { threads: flags["threads"] as number } : {}),
    ...(flags["resize"] ? { resize: flags["resize"] as "pil" | "torchvision" | "fast" } : {}),
    ...(flags["exif-orientation"] ? { exifOrientation: flags["exif-orientation"] as "ignore" | "apply" } : {}),
    log: (line: string) => process.stderr.write(`${line}\n`),
  };
}
