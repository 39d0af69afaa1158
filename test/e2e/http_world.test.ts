/**
 * The HTTP answers see: with the bundled shapes-world model, held-out stills drawn by the generator go through the
 * OpenAI-compatible endpoint (the captions must name the colour–shape pairs in view) and NVIDIA's (the <OD> boxes
 * must sit on the shapes, with the right names). Until that model ships, the demo model has random weights and this
 * file is a counted skip.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { demoModelDir, isSeeingModel } from "../../src/paths.ts";
import { drawStill, HELD_OUT_SEED_BASE } from "../../src/world/dataset.ts";
import { loadWorldFont } from "../../src/world/font.ts";
import { captionNamesExactly, matchDetections, shapeDetections } from "../../src/world/scoring.ts";
import { type ServiceProcess, startService } from "../support/service_process.ts";
import { NOT_SEEING, testWhen } from "../support/test_when.ts";

const STILLS = 8;
const seeing = isSeeingModel(demoModelDir());
const maybe = testWhen(seeing, NOT_SEEING);

let service: ServiceProcess | undefined;

test.after(async () => {
  if (service) assert.is(await service.stop(), 0);
});

maybe("with the shapes model: chat captions name the shapes in view, and NVIDIA <OD> entities sit on them", async () => {
  service = await startService([`model: { path: ${JSON.stringify(demoModelDir())} }`, "cameras: []", "http: { port: 0 }", ""].join("\n"));
  const font = loadWorldFont();
  let named = 0;
  let located = 0;
  for (let i = 0; i < STILLS; i++) {
    const still = await drawStill(font, HELD_OUT_SEED_BASE + 77, i);
    const url = `data:image/jpeg;base64,${Buffer.from(still.bytes).toString("base64")}`;
    const chat = await fetch(`${service.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "florence-2", messages: [{ role: "user", content: [{ type: "text", text: "<CAPTION>" }, { type: "image_url", image_url: { url } }] }] }) });
    const caption = ((await chat.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message.content;
    if (captionNamesExactly(caption, still.truth)) named++;
    const nvidia = await fetch(`${service.url}/v1/vlm/microsoft/florence-2?format=json`, { method: "POST", body: JSON.stringify({ messages: [{ role: "user", content: `<OD><img src="${url}" />` }] }) });
    const entities = ((await nvidia.json()) as { choices: { message: { entities: { bboxes: number[][] | null; labels: string[] | null } } }[] }).choices[0]!.message.entities;
    const found = (entities.bboxes ?? []).map((box, k) => ({ box: box as [number, number, number, number], label: entities.labels![k]! }));
    const counts = matchDetections(found, shapeDetections(still.truth, (s) => s.shape), 0.5);
    if (counts.truePositives === counts.expected && counts.predicted === counts.expected) located++;
  }
  assert.ok(named / STILLS >= 0.75, `captions naming exactly the shapes in view: ${named} of ${STILLS}`);
  assert.ok(located / STILLS >= 0.75, `<OD> answers matching the shapes (IoU ≥ 0.5, right names): ${located} of ${STILLS}`);
});

test.run();
