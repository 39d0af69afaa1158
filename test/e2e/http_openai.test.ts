/**
 * The OpenAI-compatible endpoint as clients use it: `florence-edge serve` (HTTP only, the bundled demo model) in a
 * child process, the official `openai` npm client as the client, and a request in exactly the shape Frigate's genai
 * `openai` provider builds (a text part with its prompt, then one `image_url` part per frame with a base64 JPEG data
 * URL and `detail: "low"`, optionally `response_format` json_schema with strict mode's `additionalProperties: false`).
 * Every answer is checked against what the library itself returns for the same image, task and generation settings,
 * which holds for any model; what a model that sees should say is checked in http_world.test.ts.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { parse as parseYaml } from "yaml";
import { readEnvironment } from "../../src/config.ts";
import type { Florence2, TaskResult } from "../../src/florence/florence2.ts";
import { loadFlorence } from "../../src/mod.ts";
import { demoImagesDir, demoModelDir } from "../../src/paths.ts";
import { generateOptionsFromConfig } from "../../src/service/serve_options.ts";
import { buildServiceConfig } from "../../src/service/service_config.ts";
import { loadSchemas } from "../support/json_schema.ts";
import { type ServiceProcess, startService } from "../support/service_process.ts";

const CONFIG = [`model: { path: ${JSON.stringify(demoModelDir())} }`, "cameras: []", "http: { port: 0 }", ""].join("\n");
const GENERATE = generateOptionsFromConfig(buildServiceConfig(parseYaml(CONFIG), {}, {}, "test"));
const frames = [0, 3, 5].map((i) => new Uint8Array(readFileSync(join(demoImagesDir(), `shapes-${i}.jpg`))));
const dataUrl = (jpeg: Uint8Array) => `data:image/jpeg;base64,${Buffer.from(jpeg).toString("base64")}`;

let service: ServiceProcess;
let client: OpenAI;
let library: Florence2;

/** What the library answers for these images and this task with the service's generation settings. */
async function expected(images: readonly Uint8Array[], task: string, text?: string): Promise<TaskResult[]> {
  const results: TaskResult[] = [];
  for (const image of images) results.push(...(await library.infer(image, { task, text }, GENERATE)));
  return results;
}

function imagePart(jpeg: Uint8Array) {
  return { type: "image_url" as const, image_url: { url: dataUrl(jpeg), detail: "low" as const } };
}

test.before(async () => {
  service = await startService(CONFIG);
  client = new OpenAI({ baseURL: `${service.url}/v1`, apiKey: "not-needed-on-loopback", maxRetries: 0 });
  library = await loadFlorence(demoModelDir(), { env: readEnvironment(), backend: "onnxruntime" });
});

test.after(async () => {
  await library?.dispose();
  const code = await service?.stop();
  assert.is(code, 0, `the service exits 0 on SIGTERM\n${service?.output().stderr.slice(-2000)}`);
});

test("GET /v1/models through the openai client lists the model that runs", async () => {
  const models = await client.models.list();
  assert.equal(models.data.map((m) => m.id), [library.files.id]);
  assert.is(models.data[0]!.object, "model");
});

test("a task token selects the task: <OD> answers HF's result for the image as JSON content, with token counts", async () => {
  const completion = await client.chat.completions.create({ model: "florence-2", messages: [{ role: "user", content: [{ type: "text", text: "<OD>" }, imagePart(frames[1]!)] }] });
  const [want] = await expected([frames[1]!], "<OD>");
  assert.is(completion.object, "chat.completion");
  assert.match(completion.id, /^chatcmpl-/);
  assert.is(completion.model, library.files.id);
  assert.is(completion.choices[0]!.finish_reason, "stop");
  assert.is(completion.choices[0]!.message.role, "assistant");
  assert.equal(JSON.parse(completion.choices[0]!.message.content!), want!.result);
  assert.equal(completion.usage, { prompt_tokens: want!.prompt_tokens, completion_tokens: want!.generated_ids.length - 1, total_tokens: want!.prompt_tokens + want!.generated_ids.length - 1 });
});

test("the text beside a token is the task's input: <OPEN_VOCABULARY_DETECTION> red circle", async () => {
  const completion = await client.chat.completions.create({ model: "florence-2", messages: [{ role: "user", content: [imagePart(frames[0]!), { type: "text", text: "<OPEN_VOCABULARY_DETECTION> red circle" }] }] });
  const [want] = await expected([frames[0]!], "<OPEN_VOCABULARY_DETECTION>", "red circle");
  assert.equal(JSON.parse(completion.choices[0]!.message.content!), want!.result);
});

test("without a token the default task (<MORE_DETAILED_CAPTION>) runs and its caption is the content", async () => {
  const completion = await client.chat.completions.create({ model: "florence-2", messages: [{ role: "user", content: [{ type: "text", text: "What is in this picture?" }, imagePart(frames[2]!)] }] });
  const [want] = await expected([frames[2]!], "<MORE_DETAILED_CAPTION>");
  assert.is(completion.choices[0]!.message.content, want!.result["<MORE_DETAILED_CAPTION>"]);
});

test("stream: true answers in OpenAI's chunk format; the deltas add up to the same content, usage last when asked", async () => {
  const request = { model: "florence-2", messages: [{ role: "user" as const, content: [{ type: "text" as const, text: "<CAPTION>" }, imagePart(frames[1]!)] }] };
  const whole = await client.chat.completions.create(request);
  const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
  const chunks: OpenAI.Chat.ChatCompletionChunk[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 3, `chunks: ${chunks.length}`);
  assert.ok(chunks.every((c) => c.object === "chat.completion.chunk" && c.id === chunks[0]!.id && c.model === library.files.id));
  assert.is(chunks[0]!.choices[0]!.delta.role, "assistant");
  const content = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
  assert.is(content, whole.choices[0]!.message.content);
  assert.ok(chunks.some((c) => c.choices[0]?.finish_reason === "stop"));
  assert.equal(chunks.at(-1)!.usage, whole.usage);
});

test("several images get one answer built from their captions", async () => {
  const completion = await client.chat.completions.create({ model: "florence-2", messages: [{ role: "user", content: [{ type: "text", text: "<CAPTION>" }, ...frames.map(imagePart)] }] });
  const captions = (await expected(frames, "<CAPTION>")).map((r) => r.result["<CAPTION>"] as string);
  const content = completion.choices[0]!.message.content!;
  if (new Set(captions).size === 1) assert.is(content, captions[0]);
  else assert.equal(content.split("\n"), captions.map((c, i) => `Image ${i + 1}: ${c}`));
  assert.is(completion.usage!.completion_tokens, (await expected(frames, "<CAPTION>")).reduce((n, r) => n + r.generated_ids.length - 1, 0));
});

test("response_format json_object gets a JSON object: the HF-shaped result", async () => {
  const completion = await client.chat.completions.create({ model: "florence-2", response_format: { type: "json_object" }, messages: [{ role: "user", content: [{ type: "text", text: "<CAPTION>" }, imagePart(frames[0]!)] }] });
  const [want] = await expected([frames[0]!], "<CAPTION>");
  assert.equal(JSON.parse(completion.choices[0]!.message.content!), { "<CAPTION>": want!.result["<CAPTION>"] });
});

// what Frigate asks for in a review description (its ReviewMetadata), with strict mode's additionalProperties: false
const REVIEW_SCHEMA = {
  type: "object",
  properties: {
    scene: { type: "string" },
    title: { type: "string", maxLength: 80 },
    shortSummary: { type: "string" },
    confidence: { type: "number", minimum: 0, maximum: 1 },
    potential_threat_level: { type: "integer", minimum: 0, maximum: 2 },
    other_concerns: { type: "array", items: { type: "string" } },
  },
  required: ["scene", "title", "shortSummary", "confidence", "potential_threat_level", "other_concerns"],
};

/** Frigate's OpenAIClient._send, step by step: the prompt as the first text part, then each image. */
function frigateRequest(prompt: string, images: readonly Uint8Array[], responseFormat?: Record<string, unknown>) {
  const messagesContent: Record<string, unknown>[] = [{ type: "text", text: prompt }];
  for (const image of images) messagesContent.push({ type: "image_url", image_url: { url: `data:image/jpeg;base64,${Buffer.from(image).toString("base64")}`, detail: "low" } });
  const params: Record<string, unknown> = { model: "florence-2-large", messages: [{ role: "user", content: messagesContent }] };
  if (responseFormat) {
    const format = structuredClone(responseFormat) as { type: string; json_schema?: { strict?: boolean; schema?: Record<string, unknown> } };
    if (format.type === "json_schema" && format.json_schema?.strict && format.json_schema.schema) format.json_schema.schema["additionalProperties"] = false;
    params["response_format"] = format;
  }
  return params as unknown as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming;
}

test("Frigate's request shape: an object description from several frames is the frames' default-task captions", async () => {
  const prompt = "Analyze the sequence of images containing the person. Describe what the person is doing.";
  const completion = await client.chat.completions.create(frigateRequest(prompt, frames), { timeout: 120_000 });
  const captions = (await expected(frames, "<MORE_DETAILED_CAPTION>")).map((r) => r.result["<MORE_DETAILED_CAPTION>"] as string);
  const content = completion.choices[0]!.message.content!;
  if (new Set(captions).size === 1) assert.is(content, captions[0]);
  else assert.equal(content.split("\n"), captions.map((c, i) => `Image ${i + 1}: ${c}`));
});

test("Frigate's request shape with a strict json_schema response_format gets JSON that validates, carrying the captions", async () => {
  const dir = mkdtempSync(join(tmpdir(), "fe-schema-"));
  writeFileSync(join(dir, "review.schema.json"), JSON.stringify({ ...REVIEW_SCHEMA, additionalProperties: false }));
  const format = { type: "json_schema", json_schema: { name: "review_metadata", strict: true, schema: REVIEW_SCHEMA } };
  const completion = await client.chat.completions.create(frigateRequest("Your response MUST be a flat JSON object.", frames.slice(0, 2), format), { timeout: 120_000 });
  const answer = JSON.parse(completion.choices[0]!.message.content!);
  loadSchemas(dir).assertValid("review", answer);
  const captions = (await expected(frames.slice(0, 2), "<MORE_DETAILED_CAPTION>")).map((r) => r.result["<MORE_DETAILED_CAPTION>"] as string);
  for (const caption of new Set(captions)) assert.ok(answer.scene.includes(caption), `the scene carries the caption ${JSON.stringify(caption).slice(0, 80)}`);
});

test("through the client, a bad request is a 400 whose message names the fault and the fix", async () => {
  try {
    await client.chat.completions.create({ model: "florence-2", messages: [{ role: "user", content: [{ type: "text", text: "<DETECT> cats" }, imagePart(frames[0]!)] }] });
    assert.unreachable("an unknown task must be refused");
  } catch (error) {
    assert.instance(error, OpenAI.BadRequestError);
    assert.match((error as Error).message, /unknown Florence-2 task <DETECT>.*one of <CAPTION>/);
  }
  try {
    await client.chat.completions.create({ model: "florence-2", messages: [{ role: "user", content: "<CAPTION> no image here" }] });
    assert.unreachable("a request without an image must be refused");
  } catch (error) {
    assert.instance(error, OpenAI.BadRequestError);
    assert.match((error as Error).message, /no image/);
  }
});

test.run();
