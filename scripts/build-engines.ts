/**
 * Builds FP16 TensorRT engines for the local GPU from a Florence-2 model folder's ONNX graphs, with trtexec.
 *
 *   npm run build:engines -- --model DIR [--precision fp32] [--out engines/] [--max-batch N] [--max-beams N]
 *       [--max-prompt N] [--max-new-tokens N] [--trtexec PATH] [--strongly-typed] [--force] [--dry-run]
 *
 * Output: engines/<model-id>/<gpu>-sm<cc>-trt<version>/<graph>.plan and manifest.json. The merged decoder is split
 * first (src/engine/onnx/split.ts): TensorRT cannot build its If node. TensorRT 10 builds with --fp16 and precision
 * constraints that keep LayerNorm, Softmax and Pow (and a decomposed LayerNorm's variance chain) in FP32; TensorRT 11
 * has only strongly typed networks, so it gets a mixed-precision ONNX (FP16 everywhere else) and --stronglyTyped.
 * Engines whose ONNX and flags are unchanged are skipped; everything is built in a temporary folder that replaces the
 * engine folder only when every graph succeeded.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync } from "node:fs";
import { access, constants, copyFile, link, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, delimiter, dirname, join, resolve } from "node:path";
import process from "node:process";
import { parseFlags, requireFlag, type FlagSpec, usage, runAsScript } from "../src/cli_args.ts";
import { float32ToFloat16 } from "../src/engine/float16.ts";
import {
  AttributeType,
  DATA_LOCATION_EXTERNAL,
  DataType,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  floatValues,
  intAttribute,
  newNode,
  newTensor,
  parseModel,
  tensorAttribute,
  tensorTypeOf,
} from "../src/engine/onnx/proto.ts";
import { serializeModel } from "../src/engine/onnx/proto_writer.ts";
import { forEachTensor, splitMergedDecoderModel } from "../src/engine/onnx/split.ts";
import { FlorenceError, isFlorenceError } from "../src/errors.ts";
import { locateModelFiles, type ModelFiles } from "../src/florence/model_files.ts";

/** The graphs an engine folder holds, by their onnx-community names. */
export const ENGINE_GRAPHS = ["vision_encoder", "embed_tokens", "encoder_model", "decoder_model", "decoder_with_past_model"] as const;
export type EngineGraph = (typeof ENGINE_GRAPHS)[number];

export const JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec";
/** ONNX files are protobufs: one message cannot exceed 2 GiB. */
const PROTOBUF_LIMIT = 2 ** 31 - 1;

export interface BuildEnginesOptions {
  /** The model folder (onnx-community layout). */
  model: string;
  /** Which ONNX graphs to build from: fp32 (default) or fp16. The engines are FP16 either way. */
  precision?: "fp32" | "fp16";
  /** The engines root; default "engines". */
  out?: string;
  /** Images per call; default 1. */
  maxBatch?: number;
  /** Beams per image; decoder rows go up to maxBatch × maxBeams. Default: generation_config num_beams, else 1. */
  maxBeams?: number;
  /** Prompt tokens after the image tokens; default 256. */
  maxPrompt?: number;
  /** Generated tokens; the with-past decoder takes past lengths 0..maxNewTokens−1. Default 1024. */
  maxNewTokens?: number;
  /** trtexec's path; default JetPack's /usr/src/tensorrt/bin/trtexec, then trtexec on PATH. */
  trtexec?: string;
  /** nvidia-smi's path; default nvidia-smi on PATH. */
  nvidiaSmi?: string;
  /** Build TensorRT 10 engines from the mixed-precision ONNX with --stronglyTyped too (TensorRT 11 always does). */
  stronglyTyped?: boolean;
  /** Rebuild engines that are up to date. */
  force?: boolean;
  /** Print what would be built, with the trtexec command lines; write nothing. */
  dryRun?: boolean;
  /** Progress lines; default stderr. */
  log?: (line: string) => void;
  /** Seconds between progress lines while trtexec runs; default 15. */
  heartbeatSeconds?: number;
  /** Stops a build: trtexec is killed and nothing is left half-written. */
  signal?: AbortSignal;
}

import { type BuildMode, type EngineEntry, type EngineManifest, MANIFEST_SCHEMA, type ShapeRange, engineDirName } from "../src/engine/tensorrt/manifest.ts";
export type { BuildMode, EngineEntry, EngineManifest, ShapeRange };
export { engineDirName };

export interface BuildEnginesResult {
  engineDir: string;
  built: EngineGraph[];
  skipped: EngineGraph[];
  /** trtexec argv per graph built (or, for a dry run, that would be built). */
  commands: { graph: EngineGraph; argv: string[] }[];
  manifest: EngineManifest | undefined;
  dryRun: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// TensorRT, GPU and CUDA detection

export interface TensorRTVersion {
  version: string;
  major: number;
  minor: number;
  patch: number;
}

/** Reads the TensorRT version from trtexec's banner: "[TensorRT v100300]", "[TensorRT v8601]", "[TensorRT v11.1.0.106]". */
export function parseTensorRTVersion(text: string): TensorRTVersion | undefined {
  const dotted = /TensorRT(?:\.trtexec)?\s*\[?TensorRT v(\d+)\.(\d+)\.(\d+)/.exec(text) ?? /TensorRT version:?\s*(\d+)\.(\d+)\.(\d+)/i.exec(text) ?? /\bTensorRT v(\d+)\.(\d+)\.(\d+)/.exec(text);
  if (dotted) return version(Number(dotted[1]), Number(dotted[2]), Number(dotted[3]));
  const packed = /\[TensorRT v(\d{4,6})\]/.exec(text);
  if (!packed) return undefined;
  const n = Number(packed[1]);
  // NV_TENSORRT_VERSION: major*1000 + minor*100 + patch before TensorRT 10, major*10000 + minor*100 + patch since
  return n >= 100000 ? version(Math.floor(n / 10000), Math.floor(n / 100) % 100, n % 100) : version(Math.floor(n / 1000), Math.floor(n / 100) % 10, n % 100);
}

function version(major: number, minor: number, patch: number): TensorRTVersion {
  return { version: `${major}.${minor}.${patch}`, major, minor, patch };
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** trtexec: the given path, else JetPack's location, else the first on `pathEnv`. */
export async function findTrtexec(explicit: string | undefined, pathEnv = process.env["PATH"] ?? ""): Promise<string> {
  if (explicit !== undefined) {
    if (await isExecutable(explicit)) return explicit;
    throw new FlorenceError("ENGINE_UNAVAILABLE", `--trtexec ${explicit} is not an executable file`, {
      fix: `pass the path of TensorRT's trtexec (JetPack: ${JETPACK_TRTEXEC}; desktop TensorRT tar/deb: <TensorRT>/bin/trtexec)`,
    });
  }
  const candidates = [JETPACK_TRTEXEC, ...pathEnv.split(delimiter).filter(Boolean).map((d) => join(d, "trtexec"))];
  for (const candidate of candidates) if (await isExecutable(candidate)) return candidate;
  throw new FlorenceError("ENGINE_UNAVAILABLE", `TensorRT's trtexec was not found (looked at ${JETPACK_TRTEXEC} and on PATH)`, {
    fix: "install TensorRT (JetPack: sudo apt install nvidia-jetpack, or tensorrt; desktop: NVIDIA's TensorRT deb/tar, then add its bin/ to PATH), or pass --trtexec PATH",
  });
}

interface CommandOutput {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

function runCapture(command: string, args: string[], timeoutMs = 60_000): Promise<CommandOutput> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    // our own timer, cleared however the child ends (spawn's `timeout` outlives a command that fails to start)
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString()));
    child.stderr.on("data", (c: Buffer) => (output += c.toString()));
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, output });
    });
  });
}

export async function detectTensorRT(trtexec: string): Promise<TensorRTVersion> {
  let result: CommandOutput;
  try {
    result = await runCapture(trtexec, ["--version"]);
  } catch (cause) {
    throw new FlorenceError("ENGINE_UNAVAILABLE", `cannot run ${trtexec}: ${(cause as Error).message}`, {
      fix: "check that TensorRT is installed completely (trtexec needs libnvinfer and the CUDA runtime on the library path)",
      cause,
    });
  }
  const found = parseTensorRTVersion(result.output);
  if (!found) {
    throw new FlorenceError("ENGINE_UNAVAILABLE", `cannot tell the TensorRT version from "${trtexec} --version": ${result.output.trim().split("\n").slice(0, 3).join(" | ") || "(no output)"}`, {
      fix: "run it by hand; a trtexec that fails to start usually misses libnvinfer or libcudart on LD_LIBRARY_PATH",
    });
  }
  if (found.major < 10) {
    throw new FlorenceError("ENGINE_UNAVAILABLE", `TensorRT ${found.version} is too old: the decoder's profiles need zero-length past inputs (TensorRT 10 or newer)`, {
      fix: "upgrade to TensorRT 10 or 11 (JetPack 6.1+ ships TensorRT 10.3)",
    });
  }
  return found;
}

export interface GpuInfo {
  name: string;
  computeCapability: string;
  driver: string | null;
  cudaDriver: string | null;
}

/** Jetson modules, whose nvidia-smi may not report a compute capability, by their device-tree SoC. */
const JETSON_SOCS: [RegExp, string, string][] = [
  [/nvidia,tegra264/, "Jetson Thor", "11.0"],
  [/nvidia,tegra234/, "Jetson Orin", "8.7"],
  [/nvidia,tegra194/, "Jetson Xavier", "7.2"],
];

export async function detectGpu(nvidiaSmi = "nvidia-smi"): Promise<GpuInfo> {
  let name: string | undefined;
  let cc: string | undefined;
  let driver: string | null = null;
  let cudaDriver: string | null = null;
  let smiError = "";
  try {
    const query = await runCapture(nvidiaSmi, ["--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]);
    const line = query.code === 0 ? query.output.split("\n").find((l) => l.trim() !== "") : undefined;
    if (line) {
      const [n, c, d] = line.split(",").map((s) => s.trim());
      name = n || undefined;
      if (c && /^\d+\.\d+$/.test(c)) cc = c;
      if (d && /^[\d.]+$/.test(d)) driver = d;
    } else smiError = query.output.trim().split("\n")[0] ?? "";
    const banner = await runCapture(nvidiaSmi, []);
    cudaDriver = /CUDA Version:\s*([\d.]+)/.exec(banner.output)?.[1] ?? null;
    driver ??= /Driver Version:\s*([\d.]+)/.exec(banner.output)?.[1] ?? null;
  } catch (cause) {
    smiError = (cause as Error).message;
  }
  if (!name || !cc) {
    try {
      const compatible = (await readFile("/proc/device-tree/compatible", "latin1")).replaceAll("\0", " ");
      const soc = JETSON_SOCS.find(([pattern]) => pattern.test(compatible));
      if (soc) {
        const model = (await readFile("/proc/device-tree/model", "utf8").catch(() => "")).replaceAll("\0", "").trim();
        name = name ?? (model || soc[1]);
        cc = cc ?? soc[2];
      }
    } catch {
      // not a Jetson
    }
  }
  if (!name || !cc) {
    throw new FlorenceError("ENGINE_UNAVAILABLE", `cannot identify the NVIDIA GPU: ${nvidiaSmi} ${smiError ? `failed (${smiError})` : "reported no name and compute capability"}`, {
      fix: "run this on the machine with the GPU, with the NVIDIA driver installed (nvidia-smi --query-gpu=name,compute_cap must work)",
    });
  }
  return { name, computeCapability: cc, driver, cudaDriver };
}

async function detectCudaToolkit(): Promise<string | null> {
  for (const home of [process.env["CUDA_HOME"], process.env["CUDA_PATH"], "/usr/local/cuda"]) {
    if (!home) continue;
    try {
      const info = JSON.parse(await readFile(join(home, "version.json"), "utf8")) as { cuda?: { version?: string } };
      if (info.cuda?.version) return info.cuda.version;
    } catch {
      // try the next
    }
  }
  return null;
}


// ---------------------------------------------------------------------------------------------------------------
// Graph preparation: FP32 islands, layer names, mixed precision

const ALWAYS_FP32 = new Set(["LayerNormalization", "Softmax", "LogSoftmax", "Pow"]);
/** Ops that misbehave on FP16 data (index math, float32-only inputs); kept FP32 in the mixed graph when fed floats. */
const FP32_WHEN_FLOAT = new Set(["Range", "CumSum", "Resize", "Upsample", "TopK", "NonMaxSuppression", "RoiAlign"]);
const UNSUPPORTED_IN_MIXED = new Set(["RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial", "EyeLike"]);

function isDefaultDomain(node: NodeProto): boolean {
  return (node.domain ?? "") === "" || node.domain === "ai.onnx";
}

function readersOf(graph: GraphProto): Map<string, NodeProto[]> {
  const readers = new Map<string, NodeProto[]>();
  for (const node of graph.node) {
    for (const name of new Set(node.input)) {
      if (!name) continue;
      const list = readers.get(name);
      if (list) list.push(node);
      else readers.set(name, [node]);
    }
  }
  return readers;
}

/**
 * Nodes whose arithmetic overflows or loses too much in FP16: LayerNormalization, Softmax, Pow, and for a
 * LayerNorm written out in primitives (opset < 17 exports) the variance chain after Pow(x − mean, 2):
 * ReduceMean → Add(ε) → Sqrt → Div (or Reciprocal → Mul).
 */
export function fp32Nodes(graph: GraphProto): Set<NodeProto> {
  const keep = new Set<NodeProto>();
  const readers = readersOf(graph);
  const next = (node: NodeProto, ops: string[]): NodeProto[] => (readers.get(node.output[0] ?? "") ?? []).filter((r) => isDefaultDomain(r) && ops.includes(r.opType ?? ""));
  for (const node of graph.node) {
    if (!isDefaultDomain(node) || !ALWAYS_FP32.has(node.opType ?? "")) continue;
    keep.add(node);
    if (node.opType !== "Pow") continue;
    for (const mean of next(node, ["ReduceMean"])) {
      keep.add(mean);
      for (const add of next(mean, ["Add"])) {
        keep.add(add);
        for (const sqrt of next(add, ["Sqrt"])) {
          keep.add(sqrt);
          for (const div of next(sqrt, ["Div", "Reciprocal"])) {
            keep.add(div);
            if (div.opType === "Reciprocal") for (const mul of next(div, ["Mul"])) keep.add(mul);
          }
        }
      }
    }
  }
  return keep;
}

/**
 * Gives every node a unique name trtexec can address (no commas, quotes or '*'), and each FP32 node a name ending
 * in ".fp32" that no other node's name starts with, so that "<name>*" catches exactly the layers TensorRT makes
 * from it (its first layer is named after the node, later ones get "_<n>" suffixes). Returns the FP32 names.
 */
export function assignLayerNames(graph: GraphProto, keep: ReadonlySet<NodeProto>): string[] {
  const used = new Set<string>();
  const unique = (base: string): string => {
    let name = base;
    for (let k = 1; used.has(name); k++) name = `${base}_${k}`;
    used.add(name);
    return name;
  };
  const clean = (name: string) => name.replace(/[,'"*\s]/g, "_");
  graph.node.forEach((node, index) => {
    if (keep.has(node)) return;
    node.name = unique(clean(node.name ?? "") || `${node.opType ?? "node"}_${index}`);
  });
  const fp32: string[] = [];
  graph.node.forEach((node, index) => {
    if (!keep.has(node)) return;
    let name = unique(`${clean(node.name ?? "") || `${node.opType ?? "node"}_${index}`}.fp32`);
    while ([...used].some((other) => other !== name && other.startsWith(name))) {
      used.delete(name);
      name = unique(`${name}_`);
    }
    node.name = name;
    fp32.push(name);
  });
  return fp32;
}

const TYPE_NAMES: Record<number, string> = {
  [DataType.FLOAT]: "float32",
  [DataType.FLOAT16]: "float16",
  [DataType.INT64]: "int64",
  [DataType.INT32]: "int32",
  [DataType.BOOL]: "bool",
  [DataType.UINT8]: "uint8",
  [DataType.INT8]: "int8",
  [DataType.DOUBLE]: "float64",
  [DataType.BFLOAT16]: "bfloat16",
};

function attr(node: NodeProto, name: string) {
  return node.attribute.find((a) => a.name === name);
}

/** Element types of a graph's values, from its inputs, initializers and per-op rules (value_info fills gaps). */
export function inferElementTypes(graph: GraphProto): Map<string, number> {
  const types = new Map<string, number>();
  for (const i of graph.input) if (i.name && i.type?.tensorType?.elemType) types.set(i.name, i.type.tensorType.elemType);
  for (const t of graph.initializer) if (t.name && t.dataType) types.set(t.name, t.dataType);
  const declared = new Map<string, number>();
  for (const v of [...graph.valueInfo, ...graph.output]) if (v.name && v.type?.tensorType?.elemType) declared.set(v.name, v.type.tensorType.elemType);
  const typeOf = (name: string | undefined) => (name ? types.get(name) : undefined);
  for (const node of graph.node) {
    const first = node.input.map(typeOf).find((t) => t !== undefined);
    let out: (number | undefined)[] = [];
    switch (node.opType) {
      case "Cast":
        out = [attr(node, "to")?.i !== undefined ? Number(attr(node, "to")!.i) : undefined];
        break;
      case "CastLike":
        out = [typeOf(node.input[1])];
        break;
      case "Shape":
      case "Size":
      case "NonZero":
      case "ArgMax":
      case "ArgMin":
        out = [DataType.INT64];
        break;
      case "Equal":
      case "Less":
      case "LessOrEqual":
      case "Greater":
      case "GreaterOrEqual":
      case "Not":
      case "And":
      case "Or":
      case "Xor":
      case "IsNaN":
      case "IsInf":
        out = [DataType.BOOL];
        break;
      case "Constant": {
        const a = node.attribute[0];
        if (a?.t) out = [a.t.dataType];
        else if (a?.name === "value_float" || a?.name === "value_floats") out = [DataType.FLOAT];
        else if (a?.name === "value_int" || a?.name === "value_ints") out = [DataType.INT64];
        else if (a?.name === "value_string" || a?.name === "value_strings") out = [DataType.STRING];
        break;
      }
      case "ConstantOfShape":
        out = [attr(node, "value")?.t?.dataType ?? DataType.FLOAT];
        break;
      case "Where":
        out = [typeOf(node.input[1]) ?? typeOf(node.input[2])];
        break;
      case "TopK":
      case "MaxPool":
        out = [typeOf(node.input[0]), DataType.INT64];
        break;
      case "LayerNormalization":
        out = [typeOf(node.input[0]), DataType.FLOAT, DataType.FLOAT];
        break;
      case "DequantizeLinear":
        out = [typeOf(node.input[1])];
        break;
      case "DynamicQuantizeLinear":
        out = [DataType.UINT8, DataType.FLOAT, DataType.UINT8];
        break;
      case "MatMulInteger":
      case "ConvInteger":
        out = [DataType.INT32];
        break;
      default:
        out = node.output.map(() => first);
    }
    node.output.forEach((name, k) => {
      const t = out[k] ?? declared.get(name);
      if (name && t !== undefined) types.set(name, t);
    });
  }
  return types;
}

/** Inputs of FP32 nodes that are floats by the op's definition, even where inference found no type. */
function floatByDefinition(node: NodeProto, index: number): boolean {
  switch (node.opType) {
    case "LayerNormalization":
      return index <= 2;
    case "Softmax":
    case "LogSoftmax":
    case "Sqrt":
    case "Reciprocal":
    case "ReduceMean":
    case "Pow":
      return index === 0;
    case "Add":
    case "Sub":
    case "Mul":
    case "Div":
      return index <= 1;
    default:
      return false;
  }
}

function toHalfTensor(t: TensorProto, name: string | undefined): TensorProto {
  const values = floatValues(t);
  if (!values) throw new FlorenceError("MODEL_FILE_INVALID", `tensor ${t.name ?? "(constant)"} has no readable float data`);
  // beyond ±65504 a cast would give ±inf: clamp like onnxconverter-common's float16 converter
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v > 65504) values[i] = 65504;
    else if (v < -65504) values[i] = -65504;
  }
  const half = float32ToFloat16(values);
  const out = newTensor(name, DataType.FLOAT16, [...t.dims], new Uint8Array(half.buffer, half.byteOffset, half.byteLength));
  out.unknownFields = t.unknownFields.filter((f) => ![4, 5, 6, 7, 10, 11].includes(f.fieldNumber));
  out.fieldOrder = [];
  return out;
}

/**
 * The mixed-precision graph TensorRT 11 builds strongly typed: float tensors become FP16, except that `keep` nodes
 * compute in FP32 (Casts around them), initializers only they read stay FP32, and the graph's float inputs and
 * outputs stay FP32 so that the engine's interface does not change. Changes `model` in place.
 */
export function toMixedPrecision(model: ModelProto, keepIn: ReadonlySet<NodeProto>): { fp32Nodes: number; casts: number } {
  const graph = model.graph!;
  for (const node of graph.node) {
    if (node.attribute.some((a) => a.g || a.graphs.length > 0)) {
      throw new FlorenceError("MODEL_FILE_INVALID", `node ${node.name ?? node.opType} (${node.opType}) has subgraphs; the mixed-precision conversion handles flat graphs only`, {
        fix: "split merged decoders first (src/engine/onnx/split.ts)",
      });
    }
    if (UNSUPPORTED_IN_MIXED.has(node.opType ?? "")) {
      throw new FlorenceError("MODEL_FILE_INVALID", `node ${node.name ?? ""} (${node.opType}) picks its output type by attribute; the mixed-precision conversion does not handle it`);
    }
  }
  const types = inferElementTypes(graph);
  const isFloat = (name: string) => types.get(name) === DataType.FLOAT;
  const readers = readersOf(graph);
  const keep = new Set(keepIn);
  for (const node of graph.node) {
    if (isDefaultDomain(node) && FP32_WHEN_FLOAT.has(node.opType ?? "") && node.input.some((i) => i && isFloat(i))) keep.add(node);
  }
  // a Cast to float that only feeds FP32 nodes (e.g. a shape turned into a scale for Pow) stays FP32
  for (const node of graph.node) {
    if (node.opType === "Cast" && Number(attr(node, "to")?.i) === DataType.FLOAT && (readers.get(node.output[0] ?? "") ?? []).every((r) => keep.has(r))) keep.add(node);
  }

  const taken = new Set<string>();
  for (const i of graph.input) if (i.name) taken.add(i.name);
  for (const t of graph.initializer) if (t.name) taken.add(t.name);
  for (const n of graph.node) for (const o of n.output) if (o) taken.add(o);
  const fresh = (base: string) => {
    let name = base;
    for (let k = 1; taken.has(name); k++) name = `${base}_${k}`;
    taken.add(name);
    return name;
  };
  const outputNames = new Set(graph.output.filter((o) => o.type?.tensorType?.elemType === DataType.FLOAT).map((o) => o.name ?? ""));
  /** Where each float value exists in FP16 and in FP32. */
  const asHalf = new Map<string, string>();
  const asFloat = new Map<string, string>();
  for (const i of graph.input) if (i.name && isFloat(i.name)) asFloat.set(i.name, i.name);

  const initializers: TensorProto[] = [];
  for (const t of graph.initializer) {
    const name = t.name ?? "";
    if (t.dataType !== DataType.FLOAT) {
      initializers.push(t);
      continue;
    }
    if (t.dataLocation === DATA_LOCATION_EXTERNAL) {
      throw new FlorenceError("MODEL_FILE_INVALID", `initializer ${name} is in external data; load it into the model before the conversion`);
    }
    const rs = readers.get(name) ?? [];
    const wantsHalf = rs.some((r) => !keep.has(r));
    const wantsFloat = rs.some((r) => keep.has(r)) || outputNames.has(name);
    if (wantsHalf) {
      initializers.push(toHalfTensor(t, name));
      asHalf.set(name, name);
      if (wantsFloat) {
        const twin = fresh(`${name}.fp32`);
        initializers.push({ ...t, name: twin });
        asFloat.set(name, twin);
      }
    } else {
      initializers.push(t);
      asFloat.set(name, name);
    }
  }

  const nodes: NodeProto[] = [];
  let casts = 0;
  const castTo = (name: string, to: number): string => {
    const have = to === DataType.FLOAT16 ? asHalf : asFloat;
    const from = (to === DataType.FLOAT16 ? asFloat : asHalf).get(name);
    const existing = have.get(name);
    if (existing) return existing;
    if (!from) {
      throw new FlorenceError("MODEL_FILE_INVALID", `cannot tell the element type of ${name}, read as ${to === DataType.FLOAT16 ? "FP16" : "FP32"}`, {
        fix: "run onnx shape inference on the model (onnx.shape_inference.infer_shapes) so that value_info records its type",
      });
    }
    const out = fresh(`${name}.${to === DataType.FLOAT16 ? "to_fp16" : "to_fp32"}`);
    nodes.push(newNode("Cast", [from], [out], out, [intAttribute("to", to)]));
    casts++;
    have.set(name, out);
    return out;
  };

  for (const node of graph.node) {
    if (keep.has(node)) {
      node.input = node.input.map((name, k) => (name && (isFloat(name) || (!types.has(name) && floatByDefinition(node, k))) ? castTo(name, DataType.FLOAT) : name));
      nodes.push(node);
      for (const o of node.output) if (o && isFloat(o)) asFloat.set(o, o);
      continue;
    }
    node.input = node.input.map((name) => (name && isFloat(name) ? castTo(name, DataType.FLOAT16) : name));
    convertAttributes(node);
    const finals: NodeProto[] = [];
    node.output = node.output.map((o) => {
      if (!o || !isFloat(o)) return o;
      if (!outputNames.has(o)) {
        asHalf.set(o, o);
        return o;
      }
      // a graph output stays FP32: the node writes an FP16 twin, cast back under the output's name
      const half = fresh(`${o}.fp16`);
      asHalf.set(o, half);
      asFloat.set(o, o);
      finals.push(newNode("Cast", [half], [o], `${o}.to_fp32`, [intAttribute("to", DataType.FLOAT)]));
      casts++;
      return half;
    });
    nodes.push(node, ...finals);
  }
  graph.node = nodes;
  graph.initializer = initializers;
  graph.valueInfo = []; // the types changed; TensorRT and ONNX Runtime infer shapes themselves
  return { fp32Nodes: keep.size, casts };
}

/** Constants and casts that make floats now make FP16. */
function convertAttributes(node: NodeProto): void {
  if (!isDefaultDomain(node)) return;
  if (node.opType === "Cast") {
    const to = attr(node, "to");
    if (to && Number(to.i) === DataType.FLOAT) to.i = BigInt(DataType.FLOAT16);
    return;
  }
  if (node.opType === "Constant" || node.opType === "ConstantOfShape") {
    const value = attr(node, "value");
    if (value?.t && value.t.dataType === DataType.FLOAT) value.t = toHalfTensor(value.t, value.t.name);
    else if (!value && node.opType === "ConstantOfShape") node.attribute.push(tensorAttribute("value", newTensor(undefined, DataType.FLOAT16, [1], new Uint8Array(2))));
    const scalar = attr(node, "value_float") ?? attr(node, "value_floats");
    if (scalar) {
      const values = attributeFloats(scalar);
      const half = float32ToFloat16(Float32Array.from(values));
      const t = newTensor(undefined, DataType.FLOAT16, scalar.name === "value_float" ? [] : [values.length], new Uint8Array(half.buffer));
      node.attribute = [tensorAttribute("value", t)];
    }
  }
}

/** An attribute's f / floats, which proto.ts keeps encoded. */
function attributeFloats(a: NodeProto["attribute"][number]): number[] {
  const values: number[] = [];
  for (const raw of a.unknownFields) {
    const view = new DataView(raw.bytes.buffer, raw.bytes.byteOffset, raw.bytes.byteLength);
    if (raw.fieldNumber === 2) values.push(view.getFloat32(raw.bytes.length - 4, true));
    else if (raw.fieldNumber === 7) {
      // tag (1 byte) then either one fixed32 or a packed run: length varint + floats
      if ((raw.bytes[0]! & 7) === 5) values.push(view.getFloat32(1, true));
      else {
        let at = 1;
        let length = 0;
        for (let shift = 0; ; shift += 7) {
          const b = raw.bytes[at++]!;
          length |= (b & 0x7f) << shift;
          if (!(b & 0x80)) break;
        }
        for (let end = at + length; at < end; at += 4) values.push(view.getFloat32(at, true));
      }
    }
  }
  if (a.type !== AttributeType.FLOAT && values.length === 0) {
    throw new FlorenceError("MODEL_FILE_INVALID", `attribute ${a.name} holds no floats`);
  }
  return values;
}

/** Reads external-data tensors into the model so it can be rewritten and saved as one file. */
export async function loadExternalData(model: ModelProto, modelDir: string): Promise<string[]> {
  const files = new Map<string, Uint8Array>();
  const used: string[] = [];
  const pending: TensorProto[] = [];
  forEachTensor(model.graph!, (t) => {
    if (t.dataLocation === DATA_LOCATION_EXTERNAL) pending.push(t);
  });
  let total = 0;
  for (const t of pending) {
    const entry = (key: string) => t.externalData.find((e) => e.key === key)?.value;
    const location = entry("location");
    if (!location || location.includes("..") || location.startsWith("/")) {
      throw new FlorenceError("MODEL_FILE_INVALID", `tensor ${t.name ?? ""}: external data location ${JSON.stringify(location)} is not a file name inside the model folder`);
    }
    let data = files.get(location);
    if (!data) {
      try {
        data = new Uint8Array(await readFile(join(modelDir, location)));
      } catch (cause) {
        throw new FlorenceError("MODEL_FILE_MISSING", `external data file ${join(modelDir, location)} (for tensor ${t.name ?? ""}) cannot be read`, {
          fix: "download the .onnx_data file that belongs next to the .onnx file",
          cause,
        });
      }
      files.set(location, data);
      used.push(location);
    }
    const offset = Number(entry("offset") ?? 0);
    const length = entry("length") !== undefined ? Number(entry("length")) : data.length - offset;
    if (!(offset >= 0 && length >= 0 && offset + length <= data.length)) {
      throw new FlorenceError("MODEL_FILE_INVALID", `tensor ${t.name ?? ""}: bytes ${offset}..${offset + length} are outside ${location} (${data.length} bytes)`);
    }
    t.rawData = data.subarray(offset, offset + length);
    t.externalData = [];
    delete t.dataLocation;
    total += length;
  }
  if (total > PROTOBUF_LIMIT) {
    throw new FlorenceError("MODEL_FILE_INVALID", `the graph's weights (${(total / 2 ** 30).toFixed(2)} GiB) do not fit in one ONNX protobuf (2 GiB)`, {
      fix: "build from the fp16 graphs (--precision fp16), which are half the size",
    });
  }
  return used;
}

// ---------------------------------------------------------------------------------------------------------------
// Optimization profiles

interface Limits {
  maxBatch: number;
  maxRows: number;
  maxPrompt: number;
  maxPast: number;
  imageTokens: number;
  heads: number;
  headDim: number;
  dModel: number;
}

type Range3 = [number, number, number];

/** The range of one input dimension: [min, opt, max]. */
function dimensionRange(graph: EngineGraph, input: string, axis: number, limits: Limits): Range3 | undefined {
  const encoderLength: Range3 = [limits.imageTokens + 1, limits.imageTokens + Math.min(16, limits.maxPrompt), limits.imageTokens + limits.maxPrompt];
  if (axis === 0) return graph === "vision_encoder" || graph === "encoder_model" ? [1, 1, limits.maxBatch] : [1, 1, limits.maxRows];
  switch (graph) {
    case "vision_encoder":
      return undefined;
    case "embed_tokens":
      return axis === 1 ? [1, 1, limits.maxPrompt] : undefined;
    case "encoder_model":
      return axis === 1 ? encoderLength : axis === 2 ? [limits.dModel, limits.dModel, limits.dModel] : undefined;
    default:
      if ((input === "encoder_attention_mask" || input === "encoder_hidden_states") && axis === 1) return encoderLength;
      if ((input === "inputs_embeds" || input === "input_ids") && axis === 1) return [1, 1, 1];
      if ((input === "encoder_hidden_states" || input === "inputs_embeds") && axis === 2) return [limits.dModel, limits.dModel, limits.dModel];
      if (/^past_key_values\.\d+\.encoder\./.test(input) && axis === 2) return encoderLength;
      if (/^past_key_values\.\d+\.decoder\./.test(input) && axis === 2) return [0, Math.min(32, limits.maxPast), limits.maxPast];
      if (input.startsWith("past_key_values.") && axis === 1) return [limits.heads, limits.heads, limits.heads];
      if (input.startsWith("past_key_values.") && axis === 3) return [limits.headDim, limits.headDim, limits.headDim];
      return undefined;
  }
}

export function profilesFor(graph: EngineGraph, model: ModelProto, limits: Limits): Record<string, ShapeRange> {
  const profiles: Record<string, ShapeRange> = {};
  for (const input of model.graph!.input) {
    const name = input.name ?? "";
    const shape = tensorTypeOf(input)?.shape;
    if (!shape) {
      throw new FlorenceError("MODEL_FILE_INVALID", `${graph}: input ${name} has no declared shape, so no optimization profile can be made for it`, {
        fix: "export the graph again (scripts/python/florence_export.py declares every input's shape)",
      });
    }
    if (shape.every((d) => typeof d === "number" && d > 0)) continue;
    const range: ShapeRange = { min: [], opt: [], max: [] };
    shape.forEach((d, axis) => {
      const r: Range3 | undefined = typeof d === "number" && d > 0 ? [d, d, d] : dimensionRange(graph, name, axis, limits);
      if (!r) {
        throw new FlorenceError("MODEL_FILE_INVALID", `${graph}: cannot tell what dimension ${axis} (${String(d ?? "?")}) of input ${name} is, to give it a range`, {
          fix: "this does not look like a Florence-2 graph in the onnx-community layout",
        });
      }
      range.min.push(r[0]);
      range.opt.push(r[1]);
      range.max.push(r[2]);
    });
    profiles[name] = range;
  }
  return profiles;
}

function shapeFlag(flag: string, profiles: Record<string, ShapeRange>, pick: keyof ShapeRange): string {
  const parts = Object.entries(profiles).map(([name, r]) => `${name.includes(":") ? `'${name}'` : name}:${r[pick].join("x")}`);
  return `--${flag}=${parts.join(",")}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Building

interface PreparedGraph {
  graph: EngineGraph;
  bytes: Uint8Array;
  onnxSha256: string;
  flags: string[];
  profiles: Record<string, ShapeRange>;
  fp32Layers: string[] | number;
  derivation: string;
  sources: EngineEntry["sources"];
  inputs: EngineEntry["inputs"];
  outputs: EngineEntry["outputs"];
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

function describeValues(values: GraphProto["input"]): EngineEntry["inputs"] {
  return values.map((v) => {
    const t = tensorTypeOf(v);
    return { name: v.name ?? "", type: TYPE_NAMES[t?.elemType ?? 0] ?? `onnx-type-${t?.elemType ?? "?"}`, shape: (t?.shape ?? []).map((d) => d ?? "?") };
  });
}

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < 1) {
    throw new FlorenceError("INVALID_ARGUMENT", `--${name} must be a positive integer, got ${JSON.stringify(value)}`, { fix: `e.g. --${name} ${fallback}` });
  }
  return v;
}

interface BuildContext {
  files: ModelFiles;
  mode: BuildMode;
  limits: Limits;
  log: (line: string) => void;
}

/** Reads, splits and rewrites the model's graphs one at a time, so that only one large graph is in memory. */
async function* prepareGraphs(ctx: BuildContext): AsyncGenerator<PreparedGraph> {
  const { files } = ctx;
  const load = async (path: string) => {
    const bytes = new Uint8Array(await readFile(path));
    const model = parseModel(bytes);
    const dataFiles = await loadExternalData(model, dirname(path));
    const sources = [{ file: join("onnx", basename(path)), sha256: sha256(bytes), bytes: bytes.length }];
    for (const f of dataFiles) {
      const dataPath = join(dirname(path), f);
      sources.push({ file: join("onnx", f), sha256: await sha256File(dataPath), bytes: (await stat(dataPath)).size });
    }
    return { model, sources };
  };
  const finish = (graph: EngineGraph, model: ModelProto, derivation: string, sources: PreparedGraph["sources"]): PreparedGraph => {
    const keep = fp32Nodes(model.graph!);
    let fp32Layers: string[] | number;
    const flags: string[] = [];
    if (ctx.mode === "strongly-typed-mixed-precision") {
      if (files.precision !== "fp32") {
        throw new FlorenceError("INVALID_ARGUMENT", `strongly typed builds convert the fp32 graphs to mixed precision; --precision ${files.precision} cannot be used`, {
          fix: "use --precision fp32 (the default)",
        });
      }
      fp32Layers = toMixedPrecision(model, keep).fp32Nodes;
      derivation += "; mixed precision (FP16, with LayerNorm/Softmax/Pow in FP32)";
      flags.push("--stronglyTyped");
    } else {
      fp32Layers = assignLayerNames(model.graph!, keep);
      flags.push("--fp16");
    }
    const profiles = profilesFor(graph, model, ctx.limits);
    if (Object.keys(profiles).length > 0) {
      for (const name of Object.keys(profiles)) {
        if (/[,']/.test(name)) throw new FlorenceError("MODEL_FILE_INVALID", `${graph}: input name ${JSON.stringify(name)} cannot be written in trtexec's shape flags (it holds a comma or quote)`);
      }
      flags.push(shapeFlag("minShapes", profiles, "min"), shapeFlag("optShapes", profiles, "opt"), shapeFlag("maxShapes", profiles, "max"));
    }
    if (Array.isArray(fp32Layers) && fp32Layers.length > 0) {
      // exact names for trtexec versions without wildcards, "<name>*" for the extra layers TensorRT names <name>_<n>
      const spec = fp32Layers.flatMap((n) => [`${n}:fp32`, `${n}*:fp32`]).join(",");
      flags.push("--precisionConstraints=obey", `--layerPrecisions=${spec}`, `--layerOutputTypes=${spec}`);
    }
    flags.push("--skipInference");
    const bytes = serializeModel(model);
    if (bytes.length > PROTOBUF_LIMIT) {
      throw new FlorenceError("MODEL_FILE_INVALID", `${graph}: the prepared graph is ${(bytes.length / 2 ** 30).toFixed(2)} GiB, over the 2 GiB ONNX protobuf limit`, { fix: "build from --precision fp16" });
    }
    return {
      graph,
      bytes,
      onnxSha256: sha256(bytes),
      flags,
      profiles,
      fp32Layers,
      derivation,
      sources,
      inputs: describeValues(model.graph!.input),
      outputs: describeValues(model.graph!.output),
    };
  };

  for (const graph of ["vision_encoder", "embed_tokens", "encoder_model"] as const) {
    const path = files.graphs[graph];
    if (!path) throw new FlorenceError("MODEL_FILE_MISSING", `onnx/${graph} (${files.precision}) is missing in ${files.dir}`, { fix: "download the model's onnx/ graphs" });
    const { model, sources } = await load(path);
    yield finish(graph, model, `onnx/${basename(path)} as exported`, sources);
  }
  const mergedPath = files.graphs.decoder_model_merged;
  if (mergedPath) {
    const { model, sources } = await load(mergedPath);
    const split = splitMergedDecoderModel(model);
    const from = `onnx/${basename(mergedPath)}`;
    yield finish("decoder_model", split.firstStep, `else branch (no past) of the If on ${split.condition} in ${from}`, sources);
    yield finish("decoder_with_past_model", split.withPast, `then branch (with past) of the If on ${split.condition} in ${from}, without present.*.encoder.*`, sources);
  } else {
    for (const graph of ["decoder_model", "decoder_with_past_model"] as const) {
      const path = files.graphs[graph];
      if (!path) throw new FlorenceError("MODEL_FILE_MISSING", `neither decoder_model_merged nor ${graph} (${files.precision}) is in ${join(files.dir, "onnx")}`, { fix: "download the decoder graphs" });
      const { model, sources } = await load(path);
      yield finish(graph, model, `onnx/${basename(path)} as exported`, sources);
    }
  }
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function formatCommand(argv: readonly string[]): string {
  return argv.map(shellQuote).join(" ");
}

async function readManifest(path: string): Promise<EngineManifest | undefined> {
  try {
    const value = JSON.parse(await readFile(path, "utf8")) as EngineManifest;
    return value.schema === MANIFEST_SCHEMA ? value : undefined;
  } catch {
    return undefined;
  }
}

async function isUpToDate(entry: EngineEntry | undefined, prepared: PreparedGraph, engineDir: string, mode: BuildMode, manifest: EngineManifest | undefined): Promise<boolean> {
  if (!entry || !manifest || manifest.mode !== mode) return false;
  if (entry.onnxSha256 !== prepared.onnxSha256 || JSON.stringify(entry.flags) !== JSON.stringify(prepared.flags)) return false;
  const plan = join(engineDir, entry.plan);
  if (!existsSync(plan)) return false;
  return (await sha256File(plan)) === entry.planSha256;
}

function trtexecFailure(graph: EngineGraph, code: number | null, signal: NodeJS.Signals | null, tail: string, logPath: string): FlorenceError {
  const where = `trtexec failed building ${graph} (${signal ? `killed by ${signal}` : `exit code ${code}`}); log: ${logPath}`;
  const last = tail.trim().split("\n").slice(-8).join("\n");
  if (signal === "SIGKILL" || /out of memory|OutOfMemory|cudaErrorMemoryAllocation|Requested amount of GPU memory|insufficient (?:device )?memory|std::bad_alloc|failed to allocate/i.test(tail)) {
    return new FlorenceError("ENGINE_FAILED", `${where}: the GPU (or, on a Jetson, shared system memory) ran out of memory${signal === "SIGKILL" ? " — a SIGKILL usually comes from the kernel's out-of-memory killer" : ""}\n${last}`, {
      fix: "lower --max-batch, --max-beams, --max-prompt or --max-new-tokens, close other GPU programs (on a Jetson: stop the desktop, add swap), then run again",
    });
  }
  const op = /No importer registered for op: ([\w.:-]*\w)/.exec(tail)?.[1] ?? /Unsupported ONNX (?:operator|data type)[^\n]*?(\w+)\s*$/m.exec(tail)?.[1];
  if (op || /UNSUPPORTED_NODE|INVALID_NODE|Could not find any implementation for node|Unsupported ONNX/i.test(tail)) {
    return new FlorenceError("ENGINE_FAILED", `${where}: TensorRT cannot build an operation of the graph${op ? ` (${op})` : ""}\n${last}`, {
      fix: "use a newer TensorRT, or re-export the graph with scripts/python/florence_export.py (opset 17, plain ONNX ops)",
    });
  }
  return new FlorenceError("ENGINE_FAILED", `${where}\n${last}`, { fix: "read the log; run the printed trtexec command by hand with --verbose for details" });
}

/** Runs trtexec, streaming its output to a log, with a progress line every few seconds. */
async function runTrtexec(
  trtexec: string,
  argv: string[],
  logPath: string,
  failedLogPath: string,
  graph: EngineGraph,
  ctx: { log: (l: string) => void; heartbeatSeconds: number; signal: AbortSignal | undefined },
): Promise<void> {
  const logFile = createWriteStream(logPath);
  let tail = "";
  let lastLine = "";
  const started = Date.now();
  const result = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolvePromise, reject) => {
    const child = spawn(trtexec, argv, { stdio: ["ignore", "pipe", "pipe"], ...(ctx.signal ? { signal: ctx.signal } : {}) });
    const onData = (chunk: Buffer) => {
      logFile.write(chunk);
      tail = (tail + chunk.toString()).slice(-16_000);
      const lines = tail.trimEnd().split("\n");
      lastLine = lines[lines.length - 1] ?? lastLine;
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    const timer = setInterval(() => {
      const seconds = Math.round((Date.now() - started) / 1000);
      ctx.log(`    ${graph}: ${seconds} s … ${lastLine.replace(/^\[[^\]]*\]\s*/, "").slice(0, 120)}`);
    }, ctx.heartbeatSeconds * 1000);
    child.on("error", (error) => {
      clearInterval(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearInterval(timer);
      resolvePromise({ code, signal });
    });
  }).catch((cause: Error) => {
    if (ctx.signal?.aborted) throw new FlorenceError("ENGINE_FAILED", `building ${graph} was interrupted`, { cause });
    throw new FlorenceError("ENGINE_UNAVAILABLE", `cannot run ${trtexec}: ${cause.message}`, { cause });
  });
  await new Promise<void>((r) => logFile.end(r));
  if (ctx.signal?.aborted) throw new FlorenceError("ENGINE_FAILED", `building ${graph} was interrupted; nothing was written`);
  if (result.code !== 0 || result.signal) {
    // the log outlives the temporary folder, which is removed
    await copyFile(logPath, failedLogPath).catch(() => undefined);
    throw trtexecFailure(graph, result.code, result.signal, tail, failedLogPath);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes temporary folders left by builds that died (their process is gone). */
async function removeStaleTemporaries(modelOut: string, dirName: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(modelOut);
  } catch {
    return;
  }
  for (const name of names) {
    const m = new RegExp(`^\\.${dirName.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.(?:partial|previous)-(\\d+)-`).exec(name);
    if (m && !processAlive(Number(m[1]))) await rm(join(modelOut, name), { recursive: true, force: true });
  }
}

async function replaceAtomically(tempDir: string, finalDir: string): Promise<void> {
  const previous = join(dirname(finalDir), `.${basename(finalDir)}.previous-${process.pid}-${Date.now()}`);
  const hadPrevious = existsSync(finalDir);
  if (hadPrevious) await rename(finalDir, previous);
  try {
    await rename(tempDir, finalDir);
  } catch (error) {
    if (hadPrevious) await rename(previous, finalDir).catch(() => undefined);
    throw error;
  }
  if (hadPrevious) await rm(previous, { recursive: true, force: true });
}

async function replaceFile(source: string, target: string): Promise<void> {
  const temp = `${target}.tmp-${process.pid}`;
  await copyFile(source, temp);
  await rename(temp, target);
}

/** Builds (or, with dryRun, plans) the engines; see the module comment. */
export async function buildEngines(options: BuildEnginesOptions): Promise<BuildEnginesResult> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const precision = options.precision ?? "fp32";
  if (precision !== "fp32" && precision !== "fp16") {
    throw new FlorenceError("INVALID_ARGUMENT", `--precision must be fp32 or fp16, got ${JSON.stringify(precision)}`, {
      fix: "TensorRT builds FP16 engines from the fp32 (default) or fp16 graphs; the quantized graphs use ONNX Runtime-only ops",
    });
  }
  const files = await locateModelFiles(options.model, precision);
  const maxBatch = positiveInteger("max-batch", options.maxBatch, 1);
  const numBeams = Number(files.generationConfig["num_beams"] ?? 1);
  const maxBeams = positiveInteger("max-beams", options.maxBeams, Number.isInteger(numBeams) && numBeams > 0 ? numBeams : 1);
  const maxPrompt = positiveInteger("max-prompt", options.maxPrompt, 256);
  const maxNewTokens = positiveInteger("max-new-tokens", options.maxNewTokens, 1024);
  const heartbeatSeconds = options.heartbeatSeconds ?? 15;

  const text = files.config.raw["text_config"] as Record<string, unknown>;
  const maxPositions = typeof text["max_position_embeddings"] === "number" ? (text["max_position_embeddings"] as number) : 1024;
  const imageTokens = await imageTokenCount(files);
  if (imageTokens + maxPrompt > maxPositions) {
    throw new FlorenceError("INVALID_ARGUMENT", `--max-prompt ${maxPrompt}: ${imageTokens} image tokens + ${maxPrompt} prompt tokens exceed the encoder's ${maxPositions} positions`, {
      fix: `use --max-prompt ${maxPositions - imageTokens} or less`,
    });
  }
  if (maxNewTokens > maxPositions) {
    throw new FlorenceError("INVALID_ARGUMENT", `--max-new-tokens ${maxNewTokens} exceeds the decoder's ${maxPositions} positions`, { fix: `use --max-new-tokens ${maxPositions} or less` });
  }
  const limits: Limits = {
    maxBatch,
    maxRows: maxBatch * maxBeams,
    maxPrompt,
    maxPast: maxNewTokens - 1,
    imageTokens,
    heads: files.config.text.decoderAttentionHeads,
    headDim: files.config.text.dModel / files.config.text.decoderAttentionHeads,
    dModel: files.config.text.dModel,
  };

  // TensorRT and the GPU; a dry run goes on without them
  let trtexec: string;
  let trt: TensorRTVersion;
  let gpu: GpuInfo;
  try {
    trtexec = await findTrtexec(options.trtexec);
    trt = await detectTensorRT(trtexec);
    gpu = await detectGpu(options.nvidiaSmi);
  } catch (error) {
    if (!options.dryRun || !isFlorenceError(error, "ENGINE_UNAVAILABLE")) throw error;
    log(`dry run without TensorRT or a GPU (${(error as Error).message.split(" — ")[0]}): assuming TensorRT 10 and an unknown GPU`);
    trtexec = options.trtexec ?? "trtexec";
    trt = version(10, 0, 0);
    gpu = { name: "unknown-gpu", computeCapability: "0.0", driver: null, cudaDriver: null };
  }
  const mode: BuildMode = trt.major >= 11 || options.stronglyTyped ? "strongly-typed-mixed-precision" : "fp16-precision-constraints";
  const out = resolve(options.out ?? "engines");
  const dirName = engineDirName(gpu.name, gpu.computeCapability, trt.version);
  const modelOut = join(out, files.id);
  const engineDir = join(modelOut, dirName);
  const sharedCache = join(out, "timing-cache", `${dirName}.cache`);
  log(`${files.id}: TensorRT ${trt.version} (${trtexec}), ${gpu.name} sm${gpu.computeCapability.replace(".", "")}, ${mode === "strongly-typed-mixed-precision" ? "strongly typed, mixed-precision ONNX" : "--fp16 with FP32 LayerNorm/Softmax/Pow"}`);
  log(`  profiles: batch 1..${maxBatch}, decoder rows 1..${limits.maxRows}, encoder length ${imageTokens + 1}..${imageTokens + maxPrompt}, past 0..${limits.maxPast}`);
  log(`  → ${engineDir}`);

  const oldManifest = await readManifest(join(engineDir, "manifest.json"));
  const ctx: BuildContext = { files, mode, limits, log };
  const result: BuildEnginesResult = { engineDir, built: [], skipped: [], commands: [], manifest: undefined, dryRun: Boolean(options.dryRun) };
  // a dry run shows a placeholder: a real build names its temporary folder after its process and start time
  const tempDir = join(modelOut, options.dryRun ? `.${dirName}.partial` : `.${dirName}.partial-${process.pid}-${Date.now()}`);
  const tempCache = join(tempDir, "timing.cache");
  const argvFor = (graph: EngineGraph, flags: string[]) => [`--onnx=${join(tempDir, "onnx", `${graph}.onnx`)}`, `--saveEngine=${join(tempDir, `${graph}.plan`)}`, ...flags, `--timingCacheFile=${tempCache}`];

  const entries: Partial<Record<EngineGraph, EngineEntry>> = {};
  let started = false;
  const startTemp = async () => {
    if (started) return;
    started = true;
    await mkdir(modelOut, { recursive: true });
    await removeStaleTemporaries(modelOut, dirName);
    await mkdir(join(tempDir, "onnx"), { recursive: true });
    if (existsSync(sharedCache)) await copyFile(sharedCache, tempCache);
  };
  const pendingCopies: EngineGraph[] = [];
  try {
    let index = 0;
    for await (const prepared of prepareGraphs(ctx)) {
      index++;
      const graph = prepared.graph;
      const step = `[${index}/${ENGINE_GRAPHS.length}] ${graph}`;
      const oldEntry = oldManifest?.graphs[graph];
      if (!options.force && (await isUpToDate(oldEntry, prepared, engineDir, mode, oldManifest))) {
        log(`${step}: up to date`);
        result.skipped.push(graph);
        entries[graph] = oldEntry!;
        pendingCopies.push(graph);
        continue;
      }
      const argv = argvFor(graph, prepared.flags);
      result.commands.push({ graph, argv });
      if (options.dryRun) {
        log(`${step}: would build — ${formatCommand([trtexec, ...argv])}`);
        continue;
      }
      await startTemp();
      const onnxPath = join(tempDir, "onnx", `${graph}.onnx`);
      await writeFile(onnxPath, prepared.bytes);
      const logPath = join(tempDir, `${graph}.build.log`);
      log(`${step}: building (${Array.isArray(prepared.fp32Layers) ? `${prepared.fp32Layers.length} FP32 nodes` : `${prepared.fp32Layers} FP32 nodes`}; ${formatCommand([trtexec, ...argv]).length} chars of trtexec arguments)`);
      const t0 = Date.now();
      await runTrtexec(trtexec, argv, logPath, join(modelOut, `${dirName}.${graph}.failed.log`), graph, { log, heartbeatSeconds, signal: options.signal });
      const planPath = join(tempDir, `${graph}.plan`);
      const planBytes = existsSync(planPath) ? (await stat(planPath)).size : 0;
      if (planBytes === 0) {
        throw new FlorenceError("ENGINE_FAILED", `trtexec exited successfully but wrote no engine for ${graph} (${planPath})`, { fix: "run the trtexec command by hand with --verbose" });
      }
      const seconds = (Date.now() - t0) / 1000;
      await rm(onnxPath, { force: true });
      if (existsSync(tempCache)) {
        await mkdir(dirname(sharedCache), { recursive: true });
        await replaceFile(tempCache, sharedCache);
      }
      entries[graph] = {
        plan: `${graph}.plan`,
        planSha256: await sha256File(planPath),
        planBytes,
        sources: prepared.sources,
        derivation: prepared.derivation,
        onnxSha256: prepared.onnxSha256,
        flags: prepared.flags,
        profiles: prepared.profiles,
        fp32Layers: prepared.fp32Layers,
        inputs: prepared.inputs,
        outputs: prepared.outputs,
        buildSeconds: Math.round(seconds * 10) / 10,
        builtAt: new Date().toISOString(),
      };
      result.built.push(graph);
      log(`${step}: built in ${seconds.toFixed(1)} s (${(planBytes / 2 ** 20).toFixed(1)} MiB)`);
    }

    if (options.dryRun || result.built.length === 0) {
      if (!options.dryRun) log(`all ${result.skipped.length} engines are up to date in ${engineDir}`);
      result.manifest = options.dryRun ? undefined : oldManifest;
      return result;
    }
    for (const graph of pendingCopies) {
      const from = join(engineDir, entries[graph]!.plan);
      const to = join(tempDir, entries[graph]!.plan);
      await link(from, to).catch(() => copyFile(from, to));
    }
    const manifest: EngineManifest = {
      schema: MANIFEST_SCHEMA,
      model: { id: files.id, dir: resolve(files.dir), precision },
      tensorrt: { version: trt.version, major: trt.major, trtexec },
      cuda: { driver: gpu.cudaDriver, toolkit: await detectCudaToolkit() },
      gpu: { name: gpu.name, computeCapability: gpu.computeCapability, driver: gpu.driver },
      mode,
      limits: { maxBatch, maxBeams, maxDecoderRows: limits.maxRows, maxPrompt, maxNewTokens, imageTokens },
      graphs: Object.fromEntries(ENGINE_GRAPHS.filter((g) => entries[g]).map((g) => [g, entries[g]!])) as EngineManifest["graphs"],
      timingCache: sharedCache,
      createdAt: new Date().toISOString(),
    };
    await rm(join(tempDir, "onnx"), { recursive: true, force: true });
    await rm(tempCache, { force: true });
    await writeFile(join(tempDir, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    await replaceAtomically(tempDir, engineDir);
    for (const name of await readdir(modelOut)) {
      if (name.startsWith(`${dirName}.`) && name.endsWith(".failed.log")) await rm(join(modelOut, name), { force: true });
    }
    result.manifest = manifest;
    log(`built ${result.built.join(", ")}${result.skipped.length ? `; kept ${result.skipped.join(", ")}` : ""} → ${engineDir}`);
    return result;
  } finally {
    if (started && existsSync(tempDir)) await rm(tempDir, { recursive: true, force: true });
  }
}

/** Image tokens per image: the vision encoder's output length, else the processor's image_seq_length. */
async function imageTokenCount(files: ModelFiles): Promise<number> {
  const path = files.graphs.vision_encoder;
  if (path) {
    const model = parseModel(new Uint8Array(await readFile(path)));
    const length = tensorTypeOf(model.graph!.output[0]!)?.shape?.[1];
    if (typeof length === "number" && length > 0) return length;
  }
  for (const key of ["image_seq_length", "num_image_tokens"]) {
    const value = files.imageProcessor[key];
    if (typeof value === "number" && Number.isInteger(value) && value > 0) return value;
  }
  throw new FlorenceError("MODEL_FILE_INVALID", `cannot tell how many tokens an image makes: the vision encoder's output length is symbolic and ${files.imageProcessorSource} has no image_seq_length`, {
    fix: "add \"image_seq_length\": 577 (Florence-2 at 768×768) to the image processor config",
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Command line

const FLAGS: Record<string, FlagSpec> = {
  model: { kind: "string", help: "model folder (config.json, onnx/*.onnx)" },
  precision: { kind: "string", choices: ["fp32", "fp16"], help: "ONNX graphs to build from (default fp32); the engines are FP16" },
  out: { kind: "string", help: "engines root (default engines/)" },
  "max-batch": { kind: "int", min: 1, help: "images per call (default 1)" },
  "max-beams": { kind: "int", min: 1, help: "beams per image (default: generation_config num_beams)" },
  "max-prompt": { kind: "int", min: 1, help: "prompt tokens after the image tokens (default 256)" },
  "max-new-tokens": { kind: "int", min: 1, help: "generated tokens (default 1024)" },
  trtexec: { kind: "string", help: `trtexec path (default ${JETPACK_TRTEXEC}, then PATH)` },
  "strongly-typed": { kind: "boolean", help: "TensorRT 10 too: mixed-precision ONNX + --stronglyTyped (TensorRT 11 always)" },
  force: { kind: "boolean", help: "rebuild up-to-date engines" },
  "dry-run": { kind: "boolean", help: "print the trtexec commands; build nothing" },
  help: { kind: "boolean", help: "this help" },
};

export async function main(argv: readonly string[]): Promise<number> {
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const { flags, positional } = parseFlags("build:engines", argv, FLAGS);
    if (flags["help"]) {
      process.stdout.write(`${usage("build:engines", "build FP16 TensorRT engines with trtexec", FLAGS)}\n`);
      return 0;
    }
    if (positional.length > 0) throw new FlorenceError("INVALID_ARGUMENT", `build:engines: unexpected argument ${JSON.stringify(positional[0])}`, { fix: "pass the model folder with --model DIR" });
    const result = await buildEngines({
      model: requireFlag<string>("build:engines", flags, "model", "--model models/Florence-2-base-ft"),
      ...(flags["precision"] ? { precision: flags["precision"] as "fp32" | "fp16" } : {}),
      ...(flags["out"] ? { out: flags["out"] as string } : {}),
      ...(flags["max-batch"] ? { maxBatch: flags["max-batch"] as number } : {}),
      ...(flags["max-beams"] ? { maxBeams: flags["max-beams"] as number } : {}),
      ...(flags["max-prompt"] ? { maxPrompt: flags["max-prompt"] as number } : {}),
      ...(flags["max-new-tokens"] ? { maxNewTokens: flags["max-new-tokens"] as number } : {}),
      ...(flags["trtexec"] ? { trtexec: flags["trtexec"] as string } : {}),
      stronglyTyped: Boolean(flags["strongly-typed"]),
      force: Boolean(flags["force"]),
      dryRun: Boolean(flags["dry-run"]),
      signal: controller.signal,
    });
    if (result.dryRun) for (const c of result.commands) process.stdout.write(`${formatCommand(["trtexec", ...c.argv])}\n`);
    else process.stdout.write(`${result.engineDir}\n`);
    return 0;
  } catch (error) {
    if (isFlorenceError(error)) {
      process.stderr.write(`${error.code}: ${error.message}\n`);
      return error.code === "INVALID_ARGUMENT" ? 2 : 1;
    }
    throw error;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

runAsScript(import.meta, main);
