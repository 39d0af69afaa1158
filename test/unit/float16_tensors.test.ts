/**
 * float16 graphs (the _fp16 files) through ONNX Runtime on every runtime: inputs and outputs are IEEE half bit
 * patterns in a Uint16Array (the engine contract), also where the JS runtime has a Float16Array (Deno 2, whose
 * N-API panicked when one reached onnxruntime-node), and the fp16 encoder agrees with the fp32 one.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { OnnxRuntimeEngine } from "../../src/engine/onnxruntime/onnxruntime.ts";
import { tensor } from "../../src/engine/engine.ts";
import { float16ToFloat32, float32ToFloat16 } from "../../src/engine/float16.ts";
import { TINY_MODEL } from "../support/paths.ts";

test("an fp16 encoder takes and gives Uint16Array half floats and agrees with the fp32 encoder", async () => {
  const engine = new OnnxRuntimeEngine({ intraOpThreads: 1 });
  try {
    const fp32 = await engine.loadGraph("encoder_model", join(TINY_MODEL, "onnx", "encoder_model.onnx"));
    const fp16 = await engine.loadGraph("encoder_model", join(TINY_MODEL, "onnx", "encoder_model_fp16.onnx"));
    const hidden = fp32.inputs.find((i) => i.name === "inputs_embeds")!.shape.at(-1) as number;
    const length = 5;
    const embeds = Float32Array.from({ length: length * hidden }, (_, i) => Math.sin(i * 0.37) * 0.5);
    const mask = tensor("int64", [1, length], BigInt64Array.from({ length }, () => 1n));
    const want = (await fp32.run({ inputs_embeds: tensor("float32", [1, length, hidden], embeds), attention_mask: mask }))["last_hidden_state"]!;
    const got = (await fp16.run({ inputs_embeds: tensor("float16", [1, length, hidden], float32ToFloat16(embeds)), attention_mask: mask }))["last_hidden_state"]!;
    assert.is(got.type, "float16");
    assert.ok(got.data instanceof Uint16Array, `float16 data is a Uint16Array, got ${got.data.constructor.name}`);
    const halves = float16ToFloat32(got.data as Uint16Array);
    const ref = want.data as Float32Array;
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(halves[i]! - ref[i]!));
    assert.ok(worst < 0.05, `fp16 vs fp32 encoder: largest difference ${worst}`);
  } finally {
    await engine.dispose();
  }
});

test.run();
