/**
 * Graph surgery on merged decoders. `decoder_model_merged.onnx` (optimum's layout, and scripts/python/florence_export.py's)
 * is one graph whose If node on the boolean input `use_cache_branch` runs either the first-step decoder (else branch:
 * no past) or the step-with-past decoder (then branch). TensorRT cannot build that If ("dimensions not compatible for
 * if-conditional outputs"), so this takes each branch out into a standalone model:
 *
 * - the branch's nodes replace the If node; outer nodes stay where they were, and unused ones are dropped;
 * - outer-scope values the branch reads become graph inputs (only those used) or copied initializers;
 * - branch outputs are renamed back to the If outputs (logits, present.*);
 * - the with-past model leaves out present.*.encoder.*: that branch only passes the past cross-attention cache
 *   through, and runtimes keep the first step's.
 */
import { FlorenceError } from "../../errors.ts";
import { PAST_SELF_ATTENTION, PRESENT_CROSS_ATTENTION } from "../kv_cache.ts";
import {
  cloneGraph,
  cloneNode,
  cloneTensor,
  cloneValueInfo,
  DATA_LOCATION_EXTERNAL,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  newNode,
  parseModel,
  sparseTensorName,
  type TensorProto,
  type ValueInfo,
} from "./proto.ts";
import { serializeModel } from "./proto_writer.ts";

export interface SplitDecoderOptions {
  /**
   * Tensors stored in external data files (.onnx_data): "error" (default) refuses them, since the bytes of the
   * .onnx alone do not hold the weights; "keep" keeps the references, for split graphs written next to the data file.
   */
  externalData?: "error" | "keep";
}

export interface SplitDecoder {
  /** The first step: no past inputs; outputs logits and every present.* (self- and cross-attention). */
  firstStep: Uint8Array;
  /** A step with past: past_key_values.* in; logits and present.*.decoder.* out. */
  withPast: Uint8Array;
}

export interface SplitDecoderModels {
  firstStep: ModelProto;
  withPast: ModelProto;
  /** The If node's condition input (use_cache_branch). */
  condition: string;
}

/** Splits the bytes of a merged decoder into the bytes of a first-step model and a with-past model. */
export function splitMergedDecoder(mergedBytes: Uint8Array, options: SplitDecoderOptions = {}): SplitDecoder {
  const models = splitMergedDecoderModel(parseModel(mergedBytes), options);
  return { firstStep: serializeModel(models.firstStep), withPast: serializeModel(models.withPast) };
}

/** The same over a parsed model; the input model is not changed. */
export function splitMergedDecoderModel(merged: ModelProto, options: SplitDecoderOptions = {}): SplitDecoderModels {
  const mode = options.externalData ?? "error";
  if (mode !== "error" && mode !== "keep") {
    throw new FlorenceError("INVALID_ARGUMENT", `externalData must be "error" or "keep", got ${JSON.stringify(mode)}`);
  }
  if (mode === "error") refuseExternalData(merged, "decoder_model_merged");
  checkDefaultOpset(merged);
  const graph = merged.graph!;
  const condition = mergedCondition(graph);
  const firstStep = specialize(merged, condition, false, "decoder_model");
  const withPast = specialize(merged, condition, true, "decoder_with_past_model");

  // A merged graph whose branches are the wrong way round would silently swap the decoders: check what each reads.
  const hasPastInputs = graph.input.some((i) => PAST_SELF_ATTENTION.test(i.name ?? ""));
  if (hasPastInputs) {
    const firstReadsPast = firstStep.graph!.input.some((i) => PAST_SELF_ATTENTION.test(i.name ?? ""));
    const laterReadsPast = withPast.graph!.input.some((i) => PAST_SELF_ATTENTION.test(i.name ?? ""));
    if (firstReadsPast || !laterReadsPast) {
      throw new FlorenceError(
        "MODEL_FILE_INVALID",
        `decoder_model_merged: the If node on ${condition} does not have the no-past decoder in else_branch and the with-past decoder in then_branch (else branch reads past_key_values: ${firstReadsPast}; then branch reads them: ${laterReadsPast})`,
        { fix: "export the merged decoder with optimum or scripts/python/florence_export.py, or use decoder_model.onnx and decoder_with_past_model.onnx" },
      );
    }
  }
  return { firstStep, withPast, condition };
}

// ---------------------------------------------------------------------------------------------------------------
// Names and scopes

/** Every tensor in a model: initializers and Constant/attribute tensors, in subgraphs too. */
export function forEachTensor(graph: GraphProto, visit: (t: TensorProto, where: string) => void): void {
  for (const t of graph.initializer) visit(t, `initializer ${t.name ?? ""}`);
  for (const node of graph.node) {
    for (const a of node.attribute) {
      if (a.t) visit(a.t, `attribute ${a.name ?? ""} of node ${node.name ?? node.opType ?? ""}`);
      for (const g of subgraphsOf(a)) forEachTensor(g, visit);
    }
  }
}

/** The external data files a model's tensors point at (TensorProto.external_data "location"). */
export function externalDataFiles(model: ModelProto): string[] {
  const files = new Set<string>();
  forEachTensor(model.graph!, (t) => {
    if (t.dataLocation !== DATA_LOCATION_EXTERNAL) return;
    const location = t.externalData.find((e) => e.key === "location")?.value;
    files.add(location ?? "(no location)");
  });
  return [...files];
}

function refuseExternalData(model: ModelProto, what: string): void {
  const files = externalDataFiles(model);
  if (files.length === 0) return;
  throw new FlorenceError(
    "MODEL_FILE_INVALID",
    `${what} keeps its weights in external data (${files.join(", ")}); splitting from the .onnx bytes alone cannot carry them`,
    {
      fix: "pass { externalData: \"keep\" } and write the split graphs into the folder that holds the data file, or re-save the model with its weights inside (onnx.save_model(m, path, save_as_external_data=False), under 2 GB)",
    },
  );
}

function checkDefaultOpset(model: ModelProto): void {
  if (!model.opsetImport.some((o) => (o.domain ?? "") === "" || o.domain === "ai.onnx")) {
    throw new FlorenceError("MODEL_FILE_INVALID", `the model imports no default-domain opset (opset_import: ${model.opsetImport.map((o) => `${o.domain ?? ""}:${o.version ?? "?"}`).join(", ") || "none"})`, {
      fix: "the file is not a complete ONNX model; export it again",
    });
  }
}

function subgraphsOf(attribute: NodeProto["attribute"][number]): GraphProto[] {
  return attribute.g ? [attribute.g, ...attribute.graphs] : attribute.graphs;
}

/** Names a graph defines at its own level: inputs, initializers, sparse initializers, node outputs. */
export function definedNames(graph: GraphProto): Set<string> {
  const names = new Set<string>();
  for (const i of graph.input) if (i.name) names.add(i.name);
  for (const t of graph.initializer) if (t.name) names.add(t.name);
  for (const s of graph.sparseInitializer) {
    const name = sparseTensorName(s);
    if (name) names.add(name);
  }
  for (const node of graph.node) for (const o of node.output) if (o) names.add(o);
  return names;
}

/** Outer-scope values a graph reads: referenced by its nodes, subgraphs or outputs but not defined in it. */
export function freeVariables(graph: GraphProto): Set<string> {
  const defined = definedNames(graph);
  const free = new Set<string>();
  for (const node of graph.node) for (const name of nodeReferences(node)) if (!defined.has(name)) free.add(name);
  for (const o of graph.output) if (o.name && !defined.has(o.name)) free.add(o.name);
  return free;
}

/** Values a node reads: its inputs and its subgraphs' outer-scope references. */
export function nodeReferences(node: NodeProto): string[] {
  const names = node.input.filter((n) => n !== "");
  for (const a of node.attribute) for (const g of subgraphsOf(a)) names.push(...freeVariables(g));
  return names;
}

/** Renames values in a graph: definitions and references here, and references from subgraphs that do not redefine them. */
function renameValues(graph: GraphProto, rename: ReadonlyMap<string, string>): void {
  if (rename.size === 0) return;
  const to = (name: string): string => rename.get(name) ?? name;
  for (const i of graph.input) if (i.name) i.name = to(i.name);
  for (const t of graph.initializer) if (t.name) t.name = to(t.name);
  for (const v of graph.valueInfo) if (v.name) v.name = to(v.name);
  for (const o of graph.output) if (o.name) o.name = to(o.name);
  for (const node of graph.node) {
    node.input = node.input.map(to);
    node.output = node.output.map(to);
    for (const a of node.attribute) for (const g of subgraphsOf(a)) renameFreeReferences(g, rename);
  }
}

function renameFreeReferences(graph: GraphProto, rename: ReadonlyMap<string, string>): void {
  const local = definedNames(graph);
  const visible = new Map([...rename].filter(([from]) => !local.has(from)));
  if (visible.size === 0) return;
  const to = (name: string): string => visible.get(name) ?? name;
  for (const o of graph.output) if (o.name) o.name = to(o.name);
  for (const node of graph.node) {
    node.input = node.input.map(to);
    for (const a of node.attribute) for (const g of subgraphsOf(a)) renameFreeReferences(g, visible);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The split

/** The condition input of the merged decoder's If node(s): a boolean graph input. */
function mergedCondition(graph: GraphProto): string {
  const inputs = new Map(graph.input.map((i) => [i.name ?? "", i]));
  const conditions = new Set<string>();
  for (const node of graph.node) {
    if (node.opType !== "If" || (node.domain ?? "") !== "") continue;
    const cond = node.input[0] ?? "";
    if (inputs.get(cond)?.type?.tensorType?.elemType === 9) conditions.add(cond);
  }
  if (conditions.size === 0) {
    const ifs = graph.node.filter((n) => n.opType === "If").length;
    throw new FlorenceError(
      "MODEL_FILE_INVALID",
      `not a merged decoder: ${ifs === 0 ? "the graph has no If node" : `none of its ${ifs} If nodes branches on a boolean graph input`} (inputs: ${[...inputs.keys()].join(", ")})`,
      { fix: "pass decoder_model_merged.onnx (an If node on use_cache_branch), or use decoder_model.onnx and decoder_with_past_model.onnx as they are" },
    );
  }
  if (conditions.size > 1) {
    throw new FlorenceError("MODEL_FILE_INVALID", `the merged decoder branches on several inputs (${[...conditions].join(", ")}); expected one use_cache_branch`, {
      fix: "export the merged decoder with optimum or scripts/python/florence_export.py",
    });
  }
  return [...conditions][0]!;
}

interface InlinedBranch {
  nodes: NodeProto[];
  initializers: TensorProto[];
  sparse: Uint8Array[];
  valueInfo: ValueInfo[];
}

/** The branch's nodes, renamed so that they define the If node's outputs and clash with no outer name. */
function inlineBranch(ifNode: NodeProto, branchGraph: GraphProto, outerNames: ReadonlySet<string>, tag: string): InlinedBranch {
  const branch = cloneGraph(branchGraph);
  const branchName = `${ifNode.name ?? "If"}/${tag}`;
  if (branch.output.length !== ifNode.output.length) {
    throw new FlorenceError("MODEL_FILE_INVALID", `If node ${ifNode.name ?? ""}: its ${tag} branch has ${branch.output.length} outputs for ${ifNode.output.length} node outputs`, {
      fix: "the merged decoder is malformed; export it again",
    });
  }
  if (branch.input.length > 0) {
    throw new FlorenceError("MODEL_FILE_INVALID", `If node ${ifNode.name ?? ""}: its ${tag} branch declares inputs (${branch.input.map((i) => i.name).join(", ")}); If branches take none`);
  }

  // A branch value with an outer name (allowed by some writers as shadowing) gets a unique name first.
  const ifOutputs = new Set(ifNode.output.filter((o) => o !== ""));
  const local = definedNames(branch);
  const taken = new Set([...outerNames, ...local]);
  const clashes = new Map<string, string>();
  for (const name of local) {
    if (!outerNames.has(name) || ifOutputs.has(name)) continue;
    let fresh = `${branchName}/${name}`;
    for (let k = 1; taken.has(fresh); k++) fresh = `${branchName}/${name}_${k}`;
    taken.add(fresh);
    clashes.set(name, fresh);
  }
  renameValues(branch, clashes);

  // Branch outputs computed by branch nodes take the If output's name; anything else is copied by an Identity.
  const producedHere = new Set(branch.node.flatMap((n) => n.output));
  const localNow = definedNames(branch);
  const outputCounts = new Map<string, number>();
  for (const o of branch.output) outputCounts.set(o.name ?? "", (outputCounts.get(o.name ?? "") ?? 0) + 1);
  const toIfOutput = new Map<string, string>();
  const copies: NodeProto[] = [];
  branch.output.forEach((out, index) => {
    const source = out.name ?? "";
    const target = ifNode.output[index]!;
    if (target === "") return;
    const renamable = producedHere.has(source) && outputCounts.get(source) === 1 && !localNow.has(target) && !outerNames.has(source);
    if (renamable) toIfOutput.set(source, target);
    else copies.push(newNode("Identity", [source], [target], `${branchName}/output_${index}`));
  });
  renameValues(branch, toIfOutput);
  return { nodes: [...branch.node, ...copies], initializers: branch.initializer, sparse: branch.sparseInitializer, valueInfo: branch.valueInfo };
}

/** The merged model with every If on `condition` replaced by one branch, then pruned to the kept outputs. */
function specialize(merged: ModelProto, condition: string, useCache: boolean, graphName: string): ModelProto {
  const outer = merged.graph!;
  const outerNames = new Set<string>();
  for (const name of definedNames(outer)) outerNames.add(name);
  const tag = useCache ? "then_branch" : "else_branch";

  const nodes: NodeProto[] = [];
  const initializers = outer.initializer.map(cloneTensor);
  const sparse = [...outer.sparseInitializer];
  const valueInfo = outer.valueInfo.map(cloneValueInfo);
  for (const node of outer.node) {
    if (node.opType === "If" && (node.domain ?? "") === "" && node.input[0] === condition) {
      const branch = node.attribute.find((a) => a.name === tag)?.g;
      if (!branch) {
        throw new FlorenceError("MODEL_FILE_INVALID", `If node ${node.name ?? ""} has no ${tag} graph`, { fix: "the merged decoder is malformed; export it again" });
      }
      for (const o of node.output) outerNames.delete(o);
      const inlined = inlineBranch(node, branch, outerNames, tag);
      for (const n of inlined.nodes) for (const o of n.output) if (o) outerNames.add(o);
      for (const t of inlined.initializers) if (t.name) outerNames.add(t.name);
      nodes.push(...inlined.nodes);
      initializers.push(...inlined.initializers);
      sparse.push(...inlined.sparse);
      valueInfo.push(...inlined.valueInfo);
    } else {
      nodes.push(cloneNode(node));
    }
  }

  const outputs = outer.output.filter((o) => !(useCache && PRESENT_CROSS_ATTENTION.test(o.name ?? ""))).map(cloneValueInfo);
  const graph: GraphProto = {
    ...outer,
    unknownFields: [...outer.unknownFields],
    fieldOrder: [...outer.fieldOrder],
    name: graphName,
    node: nodes,
    initializer: initializers,
    sparseInitializer: sparse,
    input: outer.input.map(cloneValueInfo),
    output: outputs,
    valueInfo,
  };
  collapseOutputIdentities(graph);
  pruneGraph(graph);
  return {
    ...merged,
    unknownFields: [...merged.unknownFields],
    fieldOrder: [...merged.fieldOrder],
    opsetImport: merged.opsetImport.map((o) => ({ ...o, unknownFields: [...o.unknownFields], fieldOrder: [...o.fieldOrder] })),
    graph,
  };
}

/** `P -> x -> Identity -> output` becomes `P -> output` where x has no other reader. */
function collapseOutputIdentities(graph: GraphProto): void {
  const outputNames = new Set(graph.output.map((o) => o.name ?? ""));
  const outerDefined = new Set<string>();
  for (const i of graph.input) if (i.name) outerDefined.add(i.name);
  for (const t of graph.initializer) if (t.name) outerDefined.add(t.name);
  const readers = new Map<string, number>();
  for (const node of graph.node) for (const name of nodeReferences(node)) readers.set(name, (readers.get(name) ?? 0) + 1);
  for (const o of graph.output) if (o.name) readers.set(o.name, (readers.get(o.name) ?? 0) + 1);
  const producer = new Map<string, NodeProto>();
  for (const node of graph.node) for (const o of node.output) if (o) producer.set(o, node);

  const removed = new Set<NodeProto>();
  for (const node of graph.node) {
    if (node.opType !== "Identity" || (node.domain ?? "") !== "" || node.input.length !== 1 || node.output.length !== 1) continue;
    const source = node.input[0]!;
    const target = node.output[0]!;
    const from = producer.get(source);
    if (!outputNames.has(target) || !from || removed.has(from) || outputNames.has(source) || outerDefined.has(source) || readers.get(source) !== 1) continue;
    from.output = from.output.map((o) => (o === source ? target : o));
    producer.set(target, from);
    removed.add(node);
  }
  if (removed.size > 0) graph.node = graph.node.filter((n) => !removed.has(n));
}

/**
 * Drops nodes that no graph output needs, then inputs, initializers and value_info nobody reads. Throws when a
 * needed value is defined nowhere.
 */
export function pruneGraph(graph: GraphProto): void {
  const needed = new Set<string>();
  for (const o of graph.output) if (o.name) needed.add(o.name);
  const kept: NodeProto[] = [];
  for (let i = graph.node.length - 1; i >= 0; i--) {
    const node = graph.node[i]!;
    if (!node.output.some((o) => o !== "" && needed.has(o))) continue;
    kept.push(node);
    for (const name of nodeReferences(node)) needed.add(name);
  }
  kept.reverse();
  graph.node = kept;

  const produced = new Set(kept.flatMap((n) => n.output));
  graph.input = graph.input.filter((i) => needed.has(i.name ?? ""));
  graph.initializer = graph.initializer.filter((t) => needed.has(t.name ?? ""));
  graph.sparseInitializer = graph.sparseInitializer.filter((s) => needed.has(sparseTensorName(s) ?? ""));
  const io = new Set([...graph.input, ...graph.output].map((v) => v.name ?? ""));
  const seen = new Set<string>();
  graph.valueInfo = graph.valueInfo.filter((v) => {
    const name = v.name ?? "";
    if (!produced.has(name) || io.has(name) || seen.has(name)) return false;
    seen.add(name);
    return true;
  });

  const available = new Set([...produced, ...graph.input.map((i) => i.name ?? ""), ...graph.initializer.map((t) => t.name ?? "")]);
  for (const s of graph.sparseInitializer) available.add(sparseTensorName(s) ?? "");
  const dangling = [...needed].filter((n) => !available.has(n));
  if (dangling.length > 0) {
    throw new FlorenceError("MODEL_FILE_INVALID", `graph ${graph.name ?? ""}: ${dangling.length} value(s) are read but defined nowhere: ${dangling.slice(0, 5).join(", ")}`, {
      fix: "the merged decoder is malformed (a branch reads a value that is not in the outer graph); export it again",
    });
  }
}
