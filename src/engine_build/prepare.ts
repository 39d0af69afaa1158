/** The model's graphs made ready for trtexec, one at a time: external data inlined, the merged decoder split, FP32 islands, profiles and flags. */
import { readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { DATA_LOCATION_EXTERNAL, type ModelProto, type TensorProto, parseModel } from "../engine/onnx/proto.ts";
import { serializeModel } from "../engine/onnx/proto_writer.ts";
import { forEachTensor, splitMergedDecoderModel } from "../engine/onnx/split.ts";
import type { BuildMode, EngineEntry, ShapeRange } from "../engine/tensorrt/manifest.ts";
import { FlorenceError } from "../errors.ts";
import type { ModelFiles } from "../florence/model_files.ts";
import { describeValues, type EngineGraph, PROTOBUF_LIMIT, sha256, sha256File } from "./graphs.ts";
import { assignLayerNames, fp32Nodes, toMixedPrecision } from "./mixed_precision.ts";
import { type Limits, profilesFor, shapeFlag } from "./profiles.ts";

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

export interface PreparedGraph {
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

export interface BuildContext {
  files: ModelFiles;
  mode: BuildMode;
  limits: Limits;
  log: (line: string) => void;
}

/** Reads, splits and rewrites the model's graphs one at a time, so that only one large graph is in memory. */
export async function* prepareGraphs(ctx: BuildContext): AsyncGenerator<PreparedGraph> {
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
