/** TensorRT optimization profiles: the [min, opt, max] range of every dynamic input dimension of each graph. */
import { type ModelProto, tensorTypeOf } from "../engine/onnx/proto.ts";
import type { ShapeRange } from "../engine/tensorrt/manifest.ts";
import { FlorenceError } from "../errors.ts";
import type { EngineGraph } from "./graphs.ts";

export interface Limits {
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

export function shapeFlag(flag: string, profiles: Record<string, ShapeRange>, pick: keyof ShapeRange): string {
  const parts = Object.entries(profiles).map(([name, r]) => `${name.includes(":") ? `'${name}'` : name}:${r[pick].join("x")}`);
  return `--${flag}=${parts.join(",")}`;
}
