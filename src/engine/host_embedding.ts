/**
 * embed_tokens as a table lookup on the host. The onnx-community `embed_tokens.onnx` is one Gather of a float32
 * embedding table (then, for some exports, a Mul by a constant scale): running it through an inference session costs
 * a session call per decoder step for what is a row copy. This module reads such a graph and answers it in
 * JavaScript with ONNX Runtime's exact arithmetic (the gather copies; the scale is one float32 multiply). Any other
 * graph shape (float16, quantized, external data, extra nodes) is left to the engine: `loadHostEmbedding` returns
 * undefined.
 */
import { readFile } from "node:fs/promises";
import { FlorenceError } from "../errors.ts";
import { checkFeeds, type Graph, type Tensor, tensor, type ValueInfo } from "./engine.ts";
import { DataType, type GraphProto, type NodeProto, type TensorProto, floatValues, parseModel, tensorTypeOf } from "./onnx/proto.ts";

/** Largest embed_tokens file read for the lookup (Florence-2-large's fp32 table is 210 MB). */
const MAX_FILE_BYTES = 1 << 30;

function scalarOf(graph: GraphProto, name: string): number | undefined {
  let t: TensorProto | undefined = graph.initializer.find((i) => i.name === name);
  if (!t) {
    const node = graph.node.find((n) => n.output[0] === name && n.opType === "Constant" && (n.domain ?? "") === "");
    t = node?.attribute.find((a) => a.name === "value")?.t;
  }
  const values = t ? floatValues(t) : undefined;
  return values && values.length === 1 && t!.dims.every((d) => d === 1) ? values[0] : undefined;
}

/** The table and scale when `graph` is Gather(table, ids) [→ Mul(·, scalar)], else undefined. */
function lookupPlan(graph: GraphProto): { table: Float32Array; rows: number; width: number; idsName: string; outName: string } | undefined {
  if (graph.input.length !== 1 || graph.output.length !== 1) return undefined;
  const idsName = graph.input[0]!.name!;
  const outName = graph.output[0]!.name!;
  const ids = tensorTypeOf(graph.input[0]!);
  if (!ids || ids.elemType !== DataType.INT64 || ids.shape?.length !== 2) return undefined;
  const compute = graph.node.filter((n) => n.opType !== "Constant");
  const gather = compute[0];
  if (!gather || gather.opType !== "Gather" || (gather.domain ?? "") !== "" || gather.input[1] !== idsName) return undefined;
  const axis = gather.attribute.find((a) => a.name === "axis")?.i ?? 0n;
  if (axis !== 0n) return undefined;
  const weights = graph.initializer.find((i) => i.name === gather.input[0]);
  if (!weights || weights.dataType !== DataType.FLOAT || weights.dims.length !== 2) return undefined;
  let scale = 1;
  let last: NodeProto = gather;
  if (compute.length === 2) {
    const mul = compute[1]!;
    if (mul.opType !== "Mul" || (mul.domain ?? "") !== "") return undefined;
    const other = mul.input[0] === gather.output[0] ? mul.input[1] : mul.input[1] === gather.output[0] ? mul.input[0] : undefined;
    const value = other === undefined ? undefined : scalarOf(graph, other);
    if (value === undefined) return undefined;
    scale = value;
    last = mul;
  } else if (compute.length !== 1) {
    return undefined;
  }
  if (last.output[0] !== outName) return undefined;
  const [rows, width] = weights.dims as [number, number];
  const table = floatValues(weights);
  if (!table || table.length !== rows * width) return undefined;
  if (scale !== 1) for (let i = 0; i < table.length; i++) table[i] = Math.fround(table[i]! * scale);
  return { table, rows, width, idsName, outName };
}

class HostEmbeddingGraph implements Graph {
  readonly name: string;
  readonly path: string;
  readonly inputs: readonly ValueInfo[];
  readonly outputs: readonly ValueInfo[];
  readonly #table: Float32Array;
  readonly #rows: number;
  readonly #width: number;
  #disposed = false;

  constructor(name: string, path: string, plan: NonNullable<ReturnType<typeof lookupPlan>>) {
    this.name = name;
    this.path = path;
    this.#table = plan.table;
    this.#rows = plan.rows;
    this.#width = plan.width;
    this.inputs = [{ name: plan.idsName, type: "int64", shape: ["batch_size", "sequence_length"] }];
    this.outputs = [{ name: plan.outName, type: "float32", shape: ["batch_size", "sequence_length", plan.width] }];
  }

  async run(feeds: Readonly<Record<string, Tensor>>): Promise<Record<string, Tensor>> {
    if (this.#disposed) throw new FlorenceError("DISPOSED", `graph ${this.name} was disposed`, { fix: "load the model again" });
    checkFeeds(this, feeds);
    const ids = feeds[this.inputs[0]!.name]!;
    const data = ids.data as BigInt64Array;
    const width = this.#width;
    const out = new Float32Array(data.length * width);
    for (let i = 0; i < data.length; i++) {
      // ONNX Gather: indices in [-rows, rows), negative ones count from the end
      let row = Number(data[i]!);
      if (row < 0) row += this.#rows;
      if (!(row >= 0 && row < this.#rows)) {
        throw new FlorenceError("ENGINE_INPUT_INVALID", `graph ${this.name}: token id ${String(data[i])} is outside the embedding table of ${this.#rows} rows`, {
          fix: "pass token ids from this model's tokenizer",
        });
      }
      out.set(this.#table.subarray(row * width, (row + 1) * width), i * width);
    }
    return { [this.outputs[0]!.name]: tensor("float32", [ids.dims[0]!, ids.dims[1]!, width], out) };
  }

  async dispose(): Promise<void> {
    this.#disposed = true;
  }
}

/**
 * embed_tokens answered on the host when the file at `path` is a plain float32 lookup (see the module comment);
 * undefined when it is anything else or cannot be read, and the caller loads it into its engine as usual.
 */
export async function loadHostEmbedding(name: string, path: string): Promise<Graph | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch {
    return undefined;
  }
  if (bytes.length > MAX_FILE_BYTES) return undefined;
  let plan;
  try {
    const graph = parseModel(bytes).graph;
    plan = graph ? lookupPlan(graph) : undefined;
  } catch {
    return undefined; // not parseable here: the engine reports what is wrong with the file
  }
  return plan ? new HostEmbeddingGraph(name, path, plan) : undefined;
}
