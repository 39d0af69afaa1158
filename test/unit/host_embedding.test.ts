/**
 * embed_tokens answered by table lookup (src/engine/host_embedding.ts) against ONNX Runtime running the same graph
 * files: the fixture's float32 graph, a variant with a non-trivial scale, and the graph shapes it must leave to the
 * engine (float16, quantized, anything with extra nodes).
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { int64Tensor, type Graph } from "../../src/engine/engine.ts";
import { loadHostEmbedding } from "../../src/engine/host_embedding.ts";
import { DataType, newNode, newTensor, parseModel } from "../../src/engine/onnx/proto.ts";
import { serializeModel } from "../../src/engine/onnx/proto_writer.ts";
import { OnnxRuntimeEngine } from "../../src/engine/onnxruntime/onnxruntime.ts";
import { Florence2 } from "../../src/florence/florence2.ts";
import { rejectsCode } from "../support/errors.ts";
import { TINY_MODEL } from "../support/paths.ts";

const EMBED = join(TINY_MODEL, "onnx", "embed_tokens.onnx");
const VOCAB = 1626;

async function bothAgree(path: string, ids: number[][]): Promise<void> {
  const host = await loadHostEmbedding("embed_tokens", path);
  assert.ok(host, `${path} should be answered on the host`);
  const engine = new OnnxRuntimeEngine({ intraOpThreads: 1 });
  try {
    const session = await engine.loadGraph("embed_tokens", path);
    assert.equal(host.inputs.map((i) => i.name), session.inputs.map((i) => i.name));
    assert.equal(host.outputs.map((o) => o.name), session.outputs.map((o) => o.name));
    const feeds = { input_ids: int64Tensor([ids.length, ids[0]!.length], ids.flat()) };
    const mine = (await host.run(feeds)).inputs_embeds!;
    const theirs = (await session.run(feeds)).inputs_embeds!;
    assert.equal(mine.dims, theirs.dims);
    assert.equal(mine.type, "float32");
    const a = mine.data as Float32Array;
    const b = theirs.data as Float32Array;
    assert.is(a.length, b.length);
    let differing = 0;
    for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) differing++;
    assert.is(differing, 0, "every value bit-equal to ONNX Runtime's");
  } finally {
    await engine.dispose();
  }
}

test("the fixture's float32 embed_tokens: every row equals ONNX Runtime's, batches and negative ids included", async () => {
  const all = Array.from({ length: VOCAB }, (_, i) => i);
  await bothAgree(EMBED, [all]);
  await bothAgree(EMBED, [[0, 5, VOCAB - 1], [-1, -VOCAB, 7]]);
});

test("a Mul by a scale that is not 1 is applied with float32 rounding, as ONNX Runtime does", async () => {
  const dir = await mkdtemp(join(tmpdir(), "fe-embed-"));
  try {
    const model = parseModel(await readFile(EMBED));
    const graph = model.graph!;
    const mul = graph.node.find((n) => n.opType === "Mul")!;
    const constant = graph.node.find((n) => n.opType === "Constant")!;
    // swap the Constant for an initializer holding an awkward scale (sqrt(768) is what scale_embedding uses)
    graph.node.splice(graph.node.indexOf(constant), 1);
    graph.initializer.push(newTensor(constant.output[0]!, DataType.FLOAT, [], new Uint8Array(new Float32Array([Math.sqrt(768)]).buffer)));
    assert.ok(mul.input.includes(constant.output[0]!));
    const path = join(dir, "scaled.onnx");
    await writeFile(path, serializeModel(model));
    await bothAgree(path, [Array.from({ length: VOCAB }, (_, i) => i)]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("float16, quantized and extended graphs, and unreadable files, are left to the engine", async () => {
  for (const name of ["embed_tokens_fp16.onnx", "embed_tokens_quantized.onnx"]) {
    assert.is(await loadHostEmbedding("embed_tokens", join(TINY_MODEL, "onnx", name)), undefined, name);
  }
  assert.is(await loadHostEmbedding("embed_tokens", join(TINY_MODEL, "onnx", "no-such-file.onnx")), undefined);
  const dir = await mkdtemp(join(tmpdir(), "fe-embed-"));
  try {
    const model = parseModel(await readFile(EMBED));
    const graph = model.graph!;
    const out = graph.output[0]!.name!;
    const mul = graph.node.find((n) => n.opType === "Mul")!;
    mul.output[0] = "scaled";
    graph.node.push(newNode("Relu", ["scaled"], [out], "extra_relu"));
    const path = join(dir, "relu.onnx");
    await writeFile(path, serializeModel(model));
    assert.is(await loadHostEmbedding("embed_tokens", path), undefined, "a graph with a Relu is not a lookup");
    const garbage = join(dir, "garbage.onnx");
    await writeFile(garbage, new Uint8Array([0xff, 0xff, 0xff, 0x01]));
    assert.is(await loadHostEmbedding("embed_tokens", garbage), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("ids outside the table are refused with a typed error naming the id; feeds are checked", async () => {
  const host = (await loadHostEmbedding("embed_tokens", EMBED)) as Graph;
  await rejectsCode(() => host.run({ input_ids: int64Tensor([1, 2], [3, VOCAB]) }), "ENGINE_INPUT_INVALID", /token id 1626 is outside the embedding table of 1626 rows/);
  await rejectsCode(() => host.run({ input_ids: int64Tensor([1, 1], [-VOCAB - 1]) }), "ENGINE_INPUT_INVALID", /token id -1627/);
  await rejectsCode(() => host.run({}), "ENGINE_INPUT_INVALID", /missing inputs input_ids/);
  await host.dispose();
  await rejectsCode(() => host.run({ input_ids: int64Tensor([1, 1], [0]) }), "DISPOSED", /disposed/);
});

test("Florence2 runs the same generation with the host lookup and with the embed_tokens session", async () => {
  const engine = new OnnxRuntimeEngine({ intraOpThreads: 1 });
  try {
    const image = join(TINY_MODEL, "reference", "images", "street.jpg");
    const withHost = await Florence2.load(TINY_MODEL, { engine });
    const withSession = await Florence2.load(TINY_MODEL, { engine, hostEmbedding: false });
    for (const task of ["<OD>", "<CAPTION>"]) {
      const [a] = await withHost.infer(image, { task }, { numBeams: 3 });
      const [b] = await withSession.infer(image, { task }, { numBeams: 3 });
      assert.equal(a!.generated_ids, b!.generated_ids, task);
      assert.equal(a!.result, b!.result, task);
    }
    await withHost.dispose();
    await withSession.dispose();
  } finally {
    await engine.dispose();
  }
});

test.run();
