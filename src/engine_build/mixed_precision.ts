/**
 * Graph preparation for FP16 engines: which nodes stay FP32 (LayerNorm, Softmax, Pow and a decomposed LayerNorm's
 * variance chain), layer names trtexec can address, and the mixed-precision graph TensorRT 11 builds strongly typed.
 */
import { float32ToFloat16 } from "../engine/float16.ts";
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
  tensorAttribute,
} from "../engine/onnx/proto.ts";
import { FlorenceError } from "../errors.ts";

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
