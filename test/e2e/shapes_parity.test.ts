/**
 * The shipped shapes-world model against Hugging Face: ONNX Runtime on the fp32 graphs must reproduce HF PyTorch's
 * greedy and beam-3 ids, text and post-processed result on held-out stills (recorded by
 * scripts/train/finish_shapes.py into test/fixtures/shapes-reference). The fp16 and int8 graphs are measured, not
 * required to be exact: the share of cases whose ids equal HF's is printed and must stay above a floor that a
 * broken conversion would not reach.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { OnnxRuntimeEngine } from "../../src/engine/onnxruntime/onnxruntime.ts";
import type { Precision } from "../../src/florence/model_files.ts";
import { Florence2 } from "../../src/florence/florence2.ts";
import type { ReferenceCase } from "../../src/hardware/parity.ts";
import { REPO_ROOT } from "../support/paths.ts";
import { testWhen } from "../support/test_when.ts";

const MODEL = join(REPO_ROOT, "assets", "florence-2-shapes");
const REFERENCE = join(REPO_ROOT, "test", "fixtures", "shapes-reference", "reference");
const present = existsSync(join(REFERENCE, "generate.json")) && existsSync(join(MODEL, "world.json"));
const maybe = testWhen(present, "no shapes model in assets/florence-2-shapes with its HF reference yet");
const cases: ReferenceCase[] = present ? JSON.parse(readFileSync(join(REFERENCE, "generate.json"), "utf8")) : [];

interface Comparison {
  idsEqual: number;
  failures: string[];
}

async function compare(precision: Precision, list: ReferenceCase[]): Promise<Comparison> {
  const engine = new OnnxRuntimeEngine({ intraOpThreads: 2 });
  const model = await Florence2.load(MODEL, { engine, precision, resize: "torchvision" });
  let idsEqual = 0;
  const failures: string[] = [];
  try {
    for (const c of list) {
      const visions = await model.encodeImages(c.images.map((name) => join(REFERENCE, "images", name)));
      const [r] = await model.runTaskBatch(visions, { task: c.task, text: c.text_input ?? undefined }, { generation: c.generate_kwargs, postprocess: { coordinates: "int" } });
      if (JSON.stringify(r!.generated_ids) !== JSON.stringify(c.generated_ids[0])) {
        failures.push(`${c.id} ids\n  ours ${JSON.stringify(r!.generated_ids)}\n  HF   ${JSON.stringify(c.generated_ids[0])}`);
        continue;
      }
      idsEqual++;
      if (r!.text !== c.text[0]) failures.push(`${c.id} text ${JSON.stringify(r!.text)} != ${JSON.stringify(c.text[0])}`);
      else if (JSON.stringify(r!.result) !== JSON.stringify(c.result[0])) failures.push(`${c.id} result ${JSON.stringify(r!.result)} != ${JSON.stringify(c.result[0])}`);
    }
  } finally {
    await model.dispose();
  }
  return { idsEqual, failures };
}

maybe(`fp32 graphs: every held-out case (all 15 tasks, greedy and beam 3) equals HF PyTorch: ${cases.length} cases`, async () => {
  const { failures } = await compare("fp32", cases);
  assert.is(failures.length, 0, `${failures.length}/${cases.length} cases differ from HF:\n${failures.slice(0, 5).join("\n")}`);
});

for (const precision of ["fp16", "quantized"] as const) {
  maybe(`${precision} graphs: most held-out cases still give HF's fp32 ids (the share is printed)`, async () => {
    const { idsEqual } = await compare(precision, cases);
    const share = idsEqual / cases.length;
    console.log(`  ${precision}: ${idsEqual}/${cases.length} cases (${(100 * share).toFixed(1)} %) give HF's fp32 ids token for token`);
    assert.ok(share >= 0.5, `${precision}: only ${idsEqual}/${cases.length} cases agree with HF fp32; the conversion is broken`);
  });
}

test.run();
