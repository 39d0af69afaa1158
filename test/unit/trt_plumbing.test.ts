/**
 * The TensorRT backend's native plumbing without a GPU, against the stand-in libnvinfer (test/support/
 * trt_standin.ts, built here with cc): libnvinfer found by path and soname, getInferLibVersion checked, the runtime
 * created through createInferRuntime_INTERNAL with our hand-made ILogger, engines deserialised and introspected
 * through the vtable slots of abi.ts (Dims64 returned by value, names as C strings), execution contexts created
 * both ways and self-checked, shapes set through a native Dims64 — all real koffi calls into native code; only the
 * CUDA work (tested on a GPU by test/e2e/tensorrt_standin.test.ts) is left out.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { ABI_TABLES, type AbiTable } from "../../src/engine/tensorrt/abi.ts";
import type { DeviceBuffer } from "../../src/engine/tensorrt/cuda.ts";
import { allocNative, bindApivObject, callAsync, dimsToArray, readPointer } from "../../src/engine/tensorrt/ffi.ts";
import { createContext, type EngineHandle, type EngineShared, TrtRuntime } from "../../src/engine/tensorrt/graph.ts";
import { MIN_TRT_VERSION, tryLoadTensorRt } from "../../src/engine/tensorrt/runtime.ts";
import { decoderPlans, StandinTensorRt, standinLibrary } from "../support/trt_standin.ts";

const library = standinLibrary();
const noCuda = () => {
  throw new Error("no CUDA in this test");
};
async function deserialize(runtime: TrtRuntime, text: string): Promise<EngineHandle | null> {
  const blob = allocNative(text.length);
  blob.view.set(new TextEncoder().encode(text));
  try {
    const wrapper = await callAsync(runtime.methods.deserializeCudaEngine, runtime.impl, blob.address, blob.bytes);
    if (wrapper === null) return null;
    const impl = readPointer(wrapper, runtime.trt.table.wrappers.ICudaEngine.implOffset)!;
    return { wrapper, impl, methods: bindApivObject("VCudaEngine", impl, runtime.trt.table) };
  } finally {
    blob.free();
  }
}

test("libnvinfer by path: version checked, TensorRT 10.0 and unknown majors refused with what to install", () => {
  new StandinTensorRt(library, 100300, noCuda);
  const ok = tryLoadTensorRt({ libraries: [library] });
  assert.ok(ok.ok, ok.ok ? "" : ok.reason);
  assert.is(MIN_TRT_VERSION, 100100, "10.1: the first with the *V2 memory calls abi.ts uses");
  if (ok.ok) assert.equal([ok.trt.versionText, ok.trt.table.major], ["10.3.0", 10]);
  const old = new StandinTensorRt(library, 100001, noCuda);
  const refused = tryLoadTensorRt({ libraries: [library] });
  assert.not.ok(refused.ok);
  if (!refused.ok) assert.match(refused.reason, /TensorRT 10\.0\.1; this runtime needs 10\.1\.0 or newer.*JetPack 6\.1/);
  old.dispose();
  const eight = new StandinTensorRt(library, 80601, noCuda);
  const unknown = tryLoadTensorRt({ libraries: [library] });
  assert.not.ok(unknown.ok);
  if (!unknown.ok) assert.match(unknown.reason, /TensorRT 8\.6\.1; this runtime supports TensorRT 10 and 11/);
  eight.dispose();
  // back to the stand-in the other tests use
  new StandinTensorRt(library, 100300, noCuda);
});

test("runtime, engine and contexts through the vtable slots: introspection, self-checks, shapes, user-managed memory", async () => {
  const fresh = new StandinTensorRt(library, 100300, noCuda);
  const loaded = tryLoadTensorRt({ libraries: [library] });
  if (!loaded.ok) throw new Error(loaded.reason);
  const lines: string[] = [];
  const runtime = await TrtRuntime.create(loaded.trt, (line) => lines.push(line), false);
  try {
    assert.is(await deserialize(runtime, "not a plan"), null, "a damaged plan gives no engine");
    const plan = decoderPlans({ maxRows: 4, maxEncoder: 8, maxPast: 15, vocab: 40, embed: true })["decoder_with_past_model"]!;
    const engine = (await deserialize(runtime, StandinTensorRt.plan(plan)))!;
    const m = engine.methods;
    assert.is(m.getPImpl(engine.impl), engine.wrapper);
    assert.is(m.getNbIOTensors(engine.impl), plan.tensors.length);
    const names = Array.from({ length: m.getNbIOTensors(engine.impl) }, (_, i) => m.getIOTensorName(engine.impl, i));
    assert.equal(names, plan.tensors.map((t) => t.name));
    assert.equal(dimsToArray(m.getTensorShape(engine.impl, "past_key_values.0.decoder.key")), [-1, 1, -1, 2]);
    assert.equal(dimsToArray(m.getProfileShape(engine.impl, "past_key_values.0.decoder.key", 0, 2)), [4, 1, 15, 2]);
    assert.is(m.getTensorDataType(engine.impl, "encoder_attention_mask"), ABI_TABLES[10].enums.DataType["kINT64"]);
    assert.is(Number(m.getDeviceMemorySizeV2(engine.impl)), 4 * 16 * 8);
    const shared = { runtime } as unknown as EngineShared;
    const memory = { address: 0x10000n, bytes: 512 } as unknown as DeviceBuffer;
    const context = await createContext(shared, engine, "stand-in.plan", memory);
    try {
      assert.ok(context.setShape("past_key_values.0.decoder.key", [2, 1, 3, 2]));
      assert.ok(context.setShape("inputs_embeds", [2, 1, 2]));
      assert.ok(context.setShape("encoder_hidden_states", [2, 7, 2]));
      assert.equal(context.shapeOf("present.0.decoder.key"), [2, 1, 4, 2], "the output shape follows the inputs");
      assert.equal(context.shapeOf("logits"), [2, 1, 40]);
      assert.not.ok(context.setShape("inputs_embeds", [9, 1, 2]), "outside the profile");
      assert.match(fresh.stats.refused.at(-1)!, /outside \[1,1,2\]\.\.\[4,1,2\]/);
      assert.is(fresh.stats.contexts.userManaged, 1, "created as kUSER_MANAGED");
    } finally {
      await runtime.destroyWrapper(context.wrapper, "IExecutionContext");
      context.free();
    }
    await runtime.destroyWrapper(engine.wrapper, "ICudaEngine");
  } finally {
    await runtime.dispose();
  }
  assert.is(fresh.liveObjects, 0, "runtime, engine and context destroyed through their deleting destructors");
  assert.equal(fresh.stats.contexts, { created: 1, destroyed: 1, userManaged: 1 });
  assert.equal(lines, []);
});

test("a vtable table that does not match the library is caught by the load-time self-check, naming the slot", async () => {
  new StandinTensorRt(library, 100300, noCuda);
  const loaded = tryLoadTensorRt({ libraries: [library] });
  if (!loaded.ok) throw new Error(loaded.reason);
  const real = loaded.trt.table;
  // getLogger on getPImpl's slot (same C signature, so the wrong call is harmless): it returns the wrapper, not the logger
  const wrong: AbiTable = { ...real, slots: { ...real.slots, VRuntime: { ...real.slots.VRuntime, getLogger: real.slots.VRuntime.getPImpl } } };
  let error: unknown;
  try {
    await TrtRuntime.create({ ...loaded.trt, table: wrong }, undefined, false);
  } catch (e) {
    error = e;
  }
  assert.match(String(error), /VRuntime\.getLogger\(\)/);
  assert.match(String(error), /does not match the TensorRT 10 vtable table/);
});

test.run();
