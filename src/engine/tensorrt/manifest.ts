/**
 * The engine folder contract between `florence-edge build-engines` (src/engine_build/ writes it) and the TensorRT
 * backend (runtime.ts reads it): the folder name a GPU and TensorRT version map to, and manifest.json. One type and
 * one validator, so that the two sides cannot drift apart.
 *
 *   engines/<model-id>/<gpu>-sm<cc>-trt<version>/<graph>.plan + manifest.json
 */
import { FlorenceError } from "../../errors.ts";
import { isRecord } from "../../validate.ts";

export const MANIFEST_SCHEMA = 1;

export interface ShapeRange {
  min: number[];
  opt: number[];
  max: number[];
}

export type BuildMode = "fp16-precision-constraints" | "strongly-typed-mixed-precision";

export interface EngineEntry {
  plan: string;
  planSha256: string;
  planBytes: number;
  /** The model file(s) it was made from, relative to the model folder, with their size and sha256. */
  sources: { file: string; sha256: string; bytes: number }[];
  /** How the ONNX given to trtexec was made from the sources. */
  derivation: string;
  /** sha256 of the ONNX given to trtexec. */
  onnxSha256: string;
  /** trtexec arguments other than file paths (--onnx, --saveEngine, --timingCacheFile). */
  flags: string[];
  /** The optimization profile: per input, its min / opt / max shapes. */
  profiles: Record<string, ShapeRange>;
  /** TensorRT 10: ONNX node names kept in FP32 through --layerPrecisions; strongly typed: the FP32 node count. */
  fp32Layers: string[] | number;
  inputs: { name: string; type: string; shape: (number | string)[] }[];
  outputs: { name: string; type: string; shape: (number | string)[] }[];
  buildSeconds: number;
  builtAt: string;
}

export interface EngineManifest {
  schema: number;
  model: { id: string; dir: string; precision: string };
  /** The plans load only with this TensorRT version ("10.3.0"). */
  tensorrt: { version: string; major: number; trtexec: string };
  cuda: { driver: string | null; toolkit: string | null };
  gpu: { name: string; computeCapability: string; driver: string | null };
  mode: BuildMode;
  limits: { maxBatch: number; maxBeams: number; maxDecoderRows: number; maxPrompt: number; maxNewTokens: number; imageTokens: number };
  graphs: Partial<Record<string, EngineEntry>>;
  timingCache: string;
  createdAt: string;
}

/**
 * The GPU part of a folder name, and what engines are matched on: lower case, without parenthesised notes, so
 * that nvidia-smi's "Orin (nvgpu)" on a Jetson and the driver's "Orin" are one GPU.
 */
export function gpuKey(name: string): string {
  return name.toLowerCase().replace(/\([^)]*\)/g, " ").replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "") || "gpu";
}

/** `<gpu>-sm<cc>-trt<version>`, e.g. `nvidia-geforce-rtx-4090-sm89-trt10.3.0`, `orin-sm87-trt10.3.0`. */
export function engineDirName(gpuName: string, computeCapability: string, trtVersion: string): string {
  return `${gpuKey(gpuName)}-sm${computeCapability.replace(".", "")}-trt${trtVersion}`;
}

function invalid(path: string, message: string, rebuild: string): FlorenceError {
  return new FlorenceError("MODEL_FILE_INVALID", `${path}: ${message}`, { fix: `rebuild the engines: ${rebuild}` });
}

/** Validates what the runtime relies on in a parsed manifest.json; errors name the offending field. */
export function parseManifest(value: unknown, path: string, rebuild = "florence-edge build-engines --model DIR"): EngineManifest {
  const fail = (message: string) => invalid(path, message, rebuild);
  if (!isRecord(value)) throw fail("must be a JSON object");
  if (value["schema"] !== MANIFEST_SCHEMA) throw fail(`schema must be ${MANIFEST_SCHEMA}, got ${JSON.stringify(value["schema"])} (written by another version of build-engines)`);
  const model = value["model"];
  if (!isRecord(model) || typeof model["id"] !== "string") throw fail(`model must be {"id": string, …}, got ${JSON.stringify(model)}`);
  const trt = value["tensorrt"];
  if (!isRecord(trt) || typeof trt["version"] !== "string" || !/^\d+\.\d+\.\d+$/.test(trt["version"])) {
    throw fail(`tensorrt.version must look like "10.3.0", got ${JSON.stringify(isRecord(trt) ? trt["version"] : trt)}`);
  }
  const gpu = value["gpu"];
  if (!isRecord(gpu) || typeof gpu["name"] !== "string" || typeof gpu["computeCapability"] !== "string" || !/^\d+\.\d+$/.test(gpu["computeCapability"])) {
    throw fail(`gpu must be {"name": string, "computeCapability": "8.7", …}, got ${JSON.stringify(gpu)}`);
  }
  const graphs = value["graphs"];
  if (!isRecord(graphs) || Object.keys(graphs).length === 0) throw fail("graphs must be an object with one entry per graph");
  for (const [name, record] of Object.entries(graphs)) {
    const where = `graphs.${name}`;
    if (!isRecord(record)) throw fail(`${where} must be an object`);
    if (typeof record["plan"] !== "string" || record["plan"].includes("/") || record["plan"].includes("..")) {
      throw fail(`${where}.plan must be a file name in the engine folder, got ${JSON.stringify(record["plan"])}`);
    }
    const sources = record["sources"];
    if (!Array.isArray(sources) || !sources.every((s) => isRecord(s) && typeof s["file"] === "string" && typeof s["sha256"] === "string" && Number.isSafeInteger(s["bytes"]))) {
      throw fail(`${where}.sources must be a list of {"file", "sha256", "bytes"}`);
    }
    const profiles = record["profiles"];
    if (!isRecord(profiles)) throw fail(`${where}.profiles must be an object of input shapes`);
    for (const [input, range] of Object.entries(profiles)) {
      const ok = isRecord(range) && ["min", "opt", "max"].every((k) => Array.isArray(range[k]) && (range[k] as unknown[]).every((d) => Number.isSafeInteger(d) && (d as number) >= 0));
      if (!ok) throw fail(`${where}.profiles.${input} must be {"min": [...], "opt": [...], "max": [...]} of non-negative integers`);
    }
  }
  return value as unknown as EngineManifest;
}
