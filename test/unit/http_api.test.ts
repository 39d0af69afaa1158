/**
 * The pure parts of the HTTP face: how a chat request selects its task and what it is refused for, how answers are
 * built from results (captions of several images, JSON formats, a schema filled so that it validates, stream
 * pieces), NVIDIA's request format and its null entities, strict base64 and data URLs, and which addresses an image
 * URL may never resolve to.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TaskResult } from "../../src/florence/florence2.ts";
import { HttpError } from "../../src/service/http/http_errors.ts";
import { decodeBase64, decodeDataUrl, fetchImage, isPrivateAddress, loadImageUrl } from "../../src/service/http/image_input.ts";
import { fillSchema } from "../../src/service/http/json_schema_fill.ts";
import { nvidiaResponse, parseNvidiaRequest } from "../../src/service/http/nvidia_api.ts";
import { chatContent, combineCaptions, contentPieces, parseChatRequest, usageOf } from "../../src/service/http/openai_api.ts";
import { loadSchemas } from "../support/json_schema.ts";
import { REFERENCE } from "../support/paths.ts";

const OPTIONS = { defaultTask: "<MORE_DETAILED_CAPTION>", maxImages: 3 };
const IMAGE = { type: "image_url", image_url: { url: "data:image/jpeg;base64,AAAA", detail: "low" } };

function chat(content: unknown[], extra: Record<string, unknown> = {}) {
  return { model: "any", messages: [{ role: "user", content }], ...extra };
}

/** The error is the HTTP refusal expected: its status and a message naming what was wrong. */
function isRefusal(error: unknown, status: number, message: RegExp): void {
  assert.instance(error, HttpError);
  assert.is((error as HttpError).status, status);
  assert.match((error as Error).message, message);
}

function refused(fn: () => unknown, status: number, message: RegExp): void {
  try {
    fn();
  } catch (error) {
    isRefusal(error, status, message);
    return;
  }
  assert.unreachable(`expected ${status} ${message}`);
}

function result(task: string, answer: unknown, extra: Partial<TaskResult> = {}): TaskResult {
  return { task, text_input: undefined, text: "", generated_ids: [2, 0, 5, 6, 2], prompt_tokens: 590, result: { [task]: answer }, image_size: { width: 640, height: 480 }, timings_ms: { encoder_ms: 1, decoder_ms: 1, parse_ms: 0, total_ms: 2 }, ...extra };
}

test("a task token in the text selects the task and the rest is its input; without one the default runs", () => {
  const cases: [unknown[], string, string | undefined][] = [
    [[{ type: "text", text: "<OD>" }, IMAGE], "<OD>", undefined],
    [[IMAGE, { type: "text", text: "<CAPTION_TO_PHRASE_GROUNDING> a red circle" }], "<CAPTION_TO_PHRASE_GROUNDING>", "a red circle"],
    [[{ type: "text", text: "find it: <OPEN_VOCABULARY_DETECTION>" }, { type: "text", text: "star" }, IMAGE], "<OPEN_VOCABULARY_DETECTION>", "find it: star"],
    [[{ type: "text", text: "<REGION_TO_CATEGORY><loc_1><loc_2><loc_300><loc_400>" }, IMAGE], "<REGION_TO_CATEGORY>", "<loc_1><loc_2><loc_300><loc_400>"],
    [[{ type: "text", text: "<CAPTION> ignored words" }, IMAGE], "<CAPTION>", undefined],
    [[{ type: "text", text: "Describe this security camera frame. Objects: <person>" }, IMAGE], "<MORE_DETAILED_CAPTION>", undefined],
    [[IMAGE], "<MORE_DETAILED_CAPTION>", undefined],
  ];
  for (const [content, task, text] of cases) {
    const plan = parseChatRequest(chat(content), OPTIONS);
    assert.equal([plan.task, plan.text], [task, text], JSON.stringify(content).slice(0, 80));
  }
  // a system prompt may name the task; the user's message wins
  const system = { model: "m", messages: [{ role: "system", content: "<OCR>" }, { role: "user", content: [IMAGE] }] };
  assert.is(parseChatRequest(system, OPTIONS).task, "<OCR>");
  const both = { model: "m", messages: [{ role: "system", content: "<OCR>" }, { role: "user", content: [{ type: "text", text: "<OD>" }, IMAGE] }] };
  assert.is(parseChatRequest(both, OPTIONS).task, "<OD>");
  const plan = parseChatRequest(chat([IMAGE, IMAGE], { stream: true, stream_options: { include_usage: true }, max_tokens: 64, response_format: { type: "json_object" } }), OPTIONS);
  assert.equal([plan.images.length, plan.images[1]!.param, plan.stream, plan.includeUsage, plan.maxNewTokens, plan.format], [2, "messages[0].content[1].image_url.url", true, true, 64, { type: "json_object" }]);
});

test("what a chat request is refused for, and the words it is refused with", () => {
  refused(() => parseChatRequest([1, 2], OPTIONS), 400, /body: must be a JSON object/);
  refused(() => parseChatRequest({ model: "m" }, OPTIONS), 400, /messages: must be a non-empty list/);
  refused(() => parseChatRequest(chat([{ type: "text", text: "<DETECT> cats" }, IMAGE]), OPTIONS), 400, /unknown Florence-2 task <DETECT> — start the text with one of <CAPTION>/);
  refused(() => parseChatRequest(chat([{ type: "text", text: "hello" }]), OPTIONS), 400, /no image in the user's messages/);
  refused(() => parseChatRequest(chat([IMAGE, IMAGE, IMAGE, IMAGE]), OPTIONS), 400, /4 images; at most 3 per request — send fewer images, or raise http\.max_images/);
  refused(() => parseChatRequest(chat([{ type: "input_audio" }, IMAGE]), OPTIONS), 400, /content\[0\]: unsupported content part "input_audio"/);
  refused(() => parseChatRequest(chat([IMAGE], { n: 2 }), OPTIONS), 400, /n: must be an integer in 1\.\.1/);
  refused(() => parseChatRequest(chat([IMAGE], { tools: [{ type: "function" }] }), OPTIONS), 400, /tools: are not supported/);
  refused(() => parseChatRequest(chat([IMAGE], { response_format: { type: "xml" } }), OPTIONS), 400, /"xml" is not supported — use text, json_object or json_schema/);
  refused(() => parseChatRequest(chat([IMAGE], { response_format: { type: "json_schema", json_schema: { name: "x" } } }), OPTIONS), 400, /json_schema\.schema: must be a JSON Schema object/);
  refused(() => parseChatRequest(chat([IMAGE], { max_tokens: 0 }), OPTIONS), 400, /max_tokens: must be an integer in 1\.\.4096/);
  refused(() => parseChatRequest(chat([IMAGE], { stream: "yes" }), OPTIONS), 400, /stream: must be true or false/);
});

test("answers: several captions become one; structured tasks are HF's JSON; usage counts prompt and generated tokens", () => {
  assert.is(combineCaptions(["A red circle.", "A red circle. "]), "A red circle.");
  assert.is(combineCaptions(["A red circle.", "A blue star."]), "Image 1: A red circle.\nImage 2: A blue star.");
  const captions = [result("<CAPTION>", "A red circle."), result("<CAPTION>", "A blue star.")];
  assert.is(chatContent({ task: "<CAPTION>", format: { type: "text" } }, captions), "Image 1: A red circle.\nImage 2: A blue star.");
  assert.equal(JSON.parse(chatContent({ task: "<CAPTION>", format: { type: "json_object" } }, captions.slice(0, 1))), { "<CAPTION>": "A red circle." });
  const od = [result("<OD>", { bboxes: [[1, 2, 3, 4]], labels: ["circle"] })];
  assert.equal(JSON.parse(chatContent({ task: "<OD>", format: { type: "text" } }, od)), { "<OD>": { bboxes: [[1, 2, 3, 4]], labels: ["circle"] } });
  assert.equal(JSON.parse(chatContent({ task: "<OD>", format: { type: "json_object" } }, [...od, ...od])), { "<OD>": [{ bboxes: [[1, 2, 3, 4]], labels: ["circle"] }, { bboxes: [[1, 2, 3, 4]], labels: ["circle"] }] });
  assert.equal(usageOf(captions), { prompt_tokens: 1180, completion_tokens: 8, total_tokens: 1188 });
  for (const content of ["", "one", "A red circle and a blue star above a green square, next to the word NORTH in white letters."]) {
    const pieces = contentPieces(content);
    assert.is(pieces.join(""), content);
    assert.ok(pieces.every((p) => p.length <= 32 || !p.trim().includes(" ")), JSON.stringify(pieces));
  }
});

test("json_schema: the schema is filled so that it validates, with the description in its strings", () => {
  const dir = mkdtempSync(join(tmpdir(), "fe-fill-"));
  const schemas: Record<string, unknown> = {
    review: {
      type: "object",
      additionalProperties: false,
      required: ["scene", "title", "confidence", "potential_threat_level", "other_concerns"],
      properties: {
        scene: { type: "string" },
        title: { type: "string", maxLength: 30 },
        confidence: { type: "number", minimum: 0, maximum: 1 },
        potential_threat_level: { type: "integer", minimum: 0, maximum: 2 },
        other_concerns: { type: "array", items: { type: "string" } },
      },
    },
    nested: {
      $defs: { box: { type: "array", items: { type: "number", minimum: 1 }, minItems: 4, maxItems: 4 } },
      type: "object",
      required: ["kind", "where", "note", "flag", "level", "tag"],
      properties: {
        kind: { const: "detection" },
        where: { $ref: "#/$defs/box" },
        note: { anyOf: [{ type: "null" }, { type: "string", minLength: 200 }] },
        flag: { type: "boolean" },
        level: { enum: ["low", "high"] },
        tag: { type: ["string", "null"], pattern: "^[A-Z]" },
      },
    },
  };
  for (const [name, schema] of Object.entries(schemas)) writeFileSync(join(dir, `${name}.schema.json`), JSON.stringify(schema));
  const set = loadSchemas(dir);
  const source = { text: "A red circle sits above a blue star. The sky is grey.", confidence: 0.83 };
  const review = fillSchema(schemas["review"] as Record<string, unknown>, source) as Record<string, unknown>;
  set.assertValid("review", review);
  assert.equal(review, { scene: source.text, title: "A red circle sits above a blue", confidence: 0.83, potential_threat_level: 0, other_concerns: [] });
  const nested = fillSchema(schemas["nested"] as Record<string, unknown>, source) as Record<string, unknown>;
  assert.equal(nested["where"], [1, 1, 1, 1]);
  assert.is((nested["note"] as string).length, 200);
  assert.equal(set.errors("nested", nested), []);
});

test("NVIDIA's request format: the task token, its text, the inline image; refusals name the fault", () => {
  const img = '<img src="data:image/jpeg;base64,AAAA" />';
  const body = (content: unknown) => ({ messages: [{ role: "user", content }] });
  assert.equal(parseNvidiaRequest(body(`<CAPTION>${img}`)), { task: "<CAPTION>", text: undefined, imageUrl: "data:image/jpeg;base64,AAAA", param: "messages[0].content" });
  assert.equal(parseNvidiaRequest(body(`<CAPTION_TO_PHRASE_GROUNDING>A black dog${img}`)).text, "A black dog");
  assert.equal(parseNvidiaRequest(body(`<REGION_TO_SEGMENTATION>${img}<loc_2><loc_3><loc_998><loc_997>`)).text, "<loc_2><loc_3><loc_998><loc_997>");
  refused(() => parseNvidiaRequest(body("<OD>")), 400, /has no image/);
  refused(() => parseNvidiaRequest(body(`<FOO>${img}`)), 400, /unknown Florence-2 task <FOO>/);
  refused(() => parseNvidiaRequest(body(["<OD>"])), 400, /must be a string/);
  refused(() => parseNvidiaRequest({ messages: [{ role: "assistant", content: "x" }] }), 400, /no message with role "user"/);
  refused(() => parseNvidiaRequest(body('<OD><img src="data:image/jpeg;asset_id,1234" />')), 400, /asset ids are not available here/);
});

test("NVIDIA's answer: the task token before the content; null where the task gives no entity of a kind", () => {
  const usage = { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 };
  const caption = nvidiaResponse("id1", result("<CAPTION>", { content: "A red circle.", entities: { bboxes: [], quad_boxes: [], labels: [], polygons: [] } }), usage);
  const message = (caption["choices"] as { message: Record<string, unknown> }[])[0]!.message;
  assert.is(message["content"], "<CAPTION>A red circle.");
  assert.equal(message["entities"], { bboxes: null, quad_boxes: null, labels: null, bboxes_labels: null, polygons: null });
  const ovd = nvidiaResponse("id2", result("<OPEN_VOCABULARY_DETECTION>", { content: "star<loc_1><loc_2><loc_3><loc_4>", entities: { bboxes: [[1, 2, 3, 4]], quad_boxes: [], labels: ["star"], polygons: [] } }), usage);
  assert.equal((ovd["choices"] as { message: { entities: unknown } }[])[0]!.message.entities, { bboxes: [[1, 2, 3, 4]], quad_boxes: null, labels: ["star"], bboxes_labels: ["star"], polygons: null });
  assert.equal([ovd["id"], ovd["usage"]], ["id2", usage]);
});

test("base64 and data URLs are read strictly", () => {
  assert.equal([...decodeBase64("AQID\nBA==", "x")], [1, 2, 3, 4]);
  assert.equal([...decodeBase64("-_8", "x")], [251, 255]);
  refused(() => decodeBase64("AQ*D", "x"), 400, /x: the base64 image data is malformed \("\*" at character 2\)/);
  refused(() => decodeBase64("AQ=D", "x"), 400, /malformed \("=" at character 2\)/);
  refused(() => decodeBase64("AQIDB", "x"), 400, /truncated/);
  refused(() => decodeBase64("  ", "x"), 400, /empty/);
  assert.equal([...decodeDataUrl("data:image/png;base64,AQID", "u")], [1, 2, 3]);
  assert.equal([...decodeDataUrl("data:image/jpeg;charset=binary;base64,AQID", "u")], [1, 2, 3]);
  refused(() => decodeDataUrl("data:image/png,AQID", "u"), 400, /is not a base64 data URL/);
  refused(() => decodeDataUrl("data:;base64", "u"), 400, /is not a base64 data URL/);
});

test("an image URL may not resolve to loopback, private, link-local or special addresses", () => {
  const blocked = ["127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fd12:3456::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "not-an-address"];
  const allowed = ["8.8.8.8", "1.1.1.1", "172.32.0.1", "192.169.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"];
  for (const address of blocked) assert.ok(isPrivateAddress(address), address);
  for (const address of allowed) assert.not.ok(isPrivateAddress(address), address);
});

test("remote images: off by default; when on, fetched within the limits, no redirects, private addresses only when allowed", async () => {
  const jpeg = readFileSync(join(REFERENCE, "images", "street.jpg"));
  const server = createServer((req, res) => {
    if (req.url === "/frame.jpg") res.writeHead(200, { "Content-Type": "image/jpeg" }).end(jpeg);
    else if (req.url === "/moved") res.writeHead(302, { Location: "/frame.jpg" }).end();
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const limits = { maxPixels: 10_000_000, maxBytes: 1 << 20, remoteImages: true, privateAddresses: true, fetchTimeoutMs: 5000 };
  const rejects = async (action: Promise<unknown>, status: number, message: RegExp) => {
    try {
      await action;
    } catch (error) {
      isRefusal(error, status, message);
      return;
    }
    assert.unreachable(`expected ${status} ${message}`);
  };
  try {
    const image = await loadImageUrl(`${base}/frame.jpg`, "url", limits);
    assert.equal([image.width, image.height, image.format, image.bytes.length], [640, 480, "jpeg", jpeg.length]);
    await rejects(fetchImage(`${base}/frame.jpg`, "url", { ...limits, remoteImages: false }), 400, /image URLs are off here — send the image inline/);
    await rejects(fetchImage(`${base}/frame.jpg`, "url", { ...limits, privateAddresses: false }), 400, /resolves to 127\.0\.0\.1, a loopback, private or link-local address/);
    await rejects(fetchImage(`http://localhost:${new URL(base).port}/frame.jpg`, "url", { ...limits, privateAddresses: false }), 400, /a loopback, private or link-local address/);
    await rejects(fetchImage(`${base}/moved`, "url", limits), 400, /it redirects \(302\), and redirects are not followed/);
    await rejects(fetchImage(`${base}/missing.jpg`, "url", limits), 400, /it answered 404/);
    await rejects(fetchImage(`${base}/frame.jpg`, "url", { ...limits, maxBytes: 1000 }), 413, /more than 1000 bytes/);
    await rejects(loadImageUrl(`${base}/frame.jpg`, "url", { ...limits, maxPixels: 1000 }), 413, /640x480 \(307200 pixels\), more than the limit of 1000/);
  } finally {
    server.close();
  }
});

test.run();
