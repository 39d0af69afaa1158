/** The graphs an engine folder holds and what the build records about each: hashes and tensor signatures. */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { DataType, type GraphProto, tensorTypeOf } from "../engine/onnx/proto.ts";
import type { EngineEntry } from "../engine/tensorrt/manifest.ts";

/** The graphs an engine folder holds, by their onnx-community names. */
export const ENGINE_GRAPHS = ["vision_encoder", "embed_tokens", "encoder_model", "decoder_model", "decoder_with_past_model"] as const;
export type EngineGraph = (typeof ENGINE_GRAPHS)[number];

/** ONNX files are protobufs: one message cannot exceed 2 GiB. */
export const PROTOBUF_LIMIT = 2 ** 31 - 1;

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

export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

export function describeValues(values: GraphProto["input"]): EngineEntry["inputs"] {
  return values.map((v) => {
    const t = tensorTypeOf(v);
    return { name: v.name ?? "", type: TYPE_NAMES[t?.elemType ?? 0] ?? `onnx-type-${t?.elemType ?? "?"}`, shape: (t?.shape ?? []).map((d) => d ?? "?") };
  });
}
