/**
 * OpenAI's chat completions API, as far as a vision model can honour it (what Frigate's genai `openai` provider,
 * NVIDIA's live-vlm-webui and the openai clients send): `messages` whose content parts are `text` and `image_url`
 * (data URLs; http(s) URLs when the config allows), `stream`, `stream_options.include_usage`, `response_format`
 * (`text`, `json_object`, `json_schema`), `max_tokens`/`max_completion_tokens`, and `model` (any name is accepted; the
 * answer names the model that ran). A Florence-2 task token in the text selects the task and the rest of the text
 * is its input; otherwise the configured default task runs (a detailed caption) and the prompt is not used.
 * Several images get one answer: their captions, numbered. Pure: request JSON in, answer objects out.
 */
import type { TaskResult } from "../../florence/florence2.ts";
import { isTaskToken, TASK_TOKENS, TASKS } from "../../florence/tasks.ts";
import { isRecord } from "../../validate.ts";
import { describeAnswer } from "../console_view.ts";
import { badRequest, HttpError } from "./http_errors.ts";
import { fillSchema, type FillSource } from "./json_schema_fill.ts";

export type ResponseFormat = { type: "text" } | { type: "json_object" } | { type: "json_schema"; name: string; schema: Record<string, unknown> };

/** What a chat request asks for, checked. */
export interface ChatPlan {
  task: string;
  /** The task's text input (the text beside the task token), for the tasks that take one. */
  text: string | undefined;
  images: { url: unknown; param: string }[];
  stream: boolean;
  includeUsage: boolean;
  format: ResponseFormat;
  maxNewTokens: number | undefined;
}

export interface ChatOptions {
  defaultTask: string;
  maxImages: number;
}

const UNKNOWN_TOKEN = /^<([A-Z][A-Z0-9_]*)>/;
const TOKEN = /<([A-Z][A-Z0-9_]*)>/g;

/** The task named by a token in `text` (the rest becomes its input), else the default; an unknown leading token is an error. */
export function selectTask(text: string, defaultTask: string, param: string): { task: string; text: string | undefined; named: boolean } {
  const trimmed = text.trim();
  for (const match of trimmed.matchAll(TOKEN)) {
    const token = match[0];
    if (!isTaskToken(token)) continue;
    const rest = `${trimmed.slice(0, match.index)} ${trimmed.slice(match.index + token.length)}`.replace(/\s+/g, " ").trim();
    return { task: token, text: TASKS[token].takesText && rest !== "" ? rest : undefined, named: true };
  }
  const unknown = UNKNOWN_TOKEN.exec(trimmed);
  if (unknown) throw new HttpError(400, "UNKNOWN_TASK", `${param}: unknown Florence-2 task ${unknown[0]}`, { param, fix: `start the text with one of ${TASK_TOKENS.join(" ")}, or with none for ${defaultTask}` });
  return { task: defaultTask, text: undefined, named: false };
}

function integerField(body: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) throw badRequest(key, `must be an integer in ${min}..${max}, got ${JSON.stringify(value)}`);
  return value;
}

function parseFormat(value: unknown): ResponseFormat {
  if (value === undefined || value === null) return { type: "text" };
  if (!isRecord(value)) throw badRequest("response_format", "must be an object", '{"type": "json_object"} or {"type": "json_schema", "json_schema": {"name", "schema"}}');
  if (value["type"] === "text" || value["type"] === "json_object") return { type: value["type"] };
  if (value["type"] === "json_schema") {
    const spec = value["json_schema"];
    if (!isRecord(spec) || !isRecord(spec["schema"])) throw badRequest("response_format.json_schema.schema", "must be a JSON Schema object", '{"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object", …}}}');
    return { type: "json_schema", name: typeof spec["name"] === "string" ? spec["name"] : "response", schema: spec["schema"] };
  }
  throw badRequest("response_format.type", `${JSON.stringify(value["type"])} is not supported`, "use text, json_object or json_schema");
}

/** One message's text parts and image parts (string content is one text part). */
function messageParts(message: unknown, index: number): { role: string; texts: string[]; images: { url: unknown; param: string }[] } {
  const param = `messages[${index}]`;
  if (!isRecord(message) || typeof message["role"] !== "string") throw badRequest(param, "must be an object with a role and a content", '{"role": "user", "content": [...]}');
  const content = message["content"];
  if (typeof content === "string" || content === null || content === undefined) return { role: message["role"], texts: typeof content === "string" ? [content] : [], images: [] };
  if (!Array.isArray(content)) throw badRequest(`${param}.content`, "must be a string or a list of content parts");
  const texts: string[] = [];
  const images: { url: unknown; param: string }[] = [];
  content.forEach((part, j) => {
    const where = `${param}.content[${j}]`;
    if (isRecord(part) && part["type"] === "text" && typeof part["text"] === "string") texts.push(part["text"]);
    else if (isRecord(part) && part["type"] === "image_url") {
      const image = part["image_url"];
      images.push({ url: isRecord(image) ? image["url"] : image, param: isRecord(image) ? `${where}.image_url.url` : `${where}.image_url` });
    } else throw badRequest(where, `unsupported content part ${JSON.stringify(isRecord(part) ? part["type"] : part)?.slice(0, 40)}`, 'use {"type": "text", "text": …} or {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,…"}}');
  });
  return { role: message["role"], texts, images };
}

/** Checks a chat completions request body and says what to run. */
export function parseChatRequest(body: unknown, options: ChatOptions): ChatPlan {
  if (!isRecord(body)) throw badRequest("body", "must be a JSON object", '{"model": "florence-2", "messages": [...]}');
  const messages = body["messages"];
  if (!Array.isArray(messages) || messages.length === 0) throw badRequest("messages", "must be a non-empty list", '[{"role": "user", "content": [{"type": "text", "text": "<OD>"}, {"type": "image_url", …}]}]');
  integerField(body, "n", 1, 1); // one choice: greedy or beam search has one answer
  for (const key of ["tools", "functions"]) {
    if (Array.isArray(body[key]) && (body[key] as unknown[]).length > 0) throw badRequest(key, "are not supported: Florence-2 answers vision tasks, not function calls", `leave ${key} out`);
  }
  const parts = messages.map(messageParts);
  const images = parts.filter((p) => p.role === "user").flatMap((p) => p.images);
  if (images.length === 0) throw badRequest("messages", "no image in the user's messages", 'add a part {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,…"}}');
  if (images.length > options.maxImages) throw badRequest("messages", `${images.length} images; at most ${options.maxImages} per request`, "send fewer images, or raise http.max_images");
  // the task token is looked for in the last user message, then in the others (a system prompt, say)
  const lastUser = [...parts].reverse().find((p) => p.role === "user")!;
  const named = [lastUser, ...parts.filter((p) => p !== lastUser)]
    .map((p) => selectTask(p.texts.join(" "), options.defaultTask, `messages[${parts.indexOf(p)}].content`))
    .find((found) => found.named);
  const streamOptions = body["stream_options"];
  if (body["stream"] !== undefined && body["stream"] !== null && typeof body["stream"] !== "boolean") throw badRequest("stream", "must be true or false");
  return {
    task: named?.task ?? options.defaultTask,
    text: named?.text,
    images,
    stream: body["stream"] === true,
    includeUsage: isRecord(streamOptions) && streamOptions["include_usage"] === true,
    format: parseFormat(body["response_format"]),
    maxNewTokens: integerField(body, "max_completion_tokens", 1, 4096) ?? integerField(body, "max_tokens", 1, 4096),
  };
}

/** Captions of several images as one answer: one caption when they agree, else numbered lines. */
export function combineCaptions(captions: readonly string[]): string {
  const unique = [...new Set(captions.map((c) => c.trim()))];
  if (unique.length <= 1) return unique[0] ?? "";
  return captions.map((caption, i) => `Image ${i + 1}: ${caption.trim()}`).join("\n");
}

/** What the results of one task on the request's images say: as text, as a JSON object, and their confidence. */
export function answerOf(task: string, results: readonly TaskResult[]): FillSource & { structured: Record<string, unknown> } {
  const scores = results.map((r) => r.result["score"]).filter((s): s is number => typeof s === "number");
  const confidence = scores.length > 0 ? scores.reduce((a, b) => a + b, 0) / scores.length : undefined;
  if (isTaskToken(task) && TASKS[task].parseType === "pure_text") {
    const text = combineCaptions(results.map((r) => String(r.result[task] ?? "")));
    return { text, confidence, structured: { [task]: text } };
  }
  const text = combineCaptions(results.map((r) => describeAnswer(r.result[task])));
  return { text, confidence, structured: results.length === 1 ? results[0]!.result : { [task]: results.map((r) => r.result[task]) } };
}

/** The message content for a plan's format: text, HF-shaped JSON, or JSON filling the client's schema. */
export function chatContent(plan: Pick<ChatPlan, "task" | "format">, results: readonly TaskResult[]): string {
  const answer = answerOf(plan.task, results);
  const textTask = isTaskToken(plan.task) && TASKS[plan.task].parseType === "pure_text";
  switch (plan.format.type) {
    case "text":
      return textTask ? answer.text : JSON.stringify(answer.structured);
    case "json_object":
      return JSON.stringify(answer.structured);
    case "json_schema":
      return JSON.stringify(fillSchema(plan.format.schema, answer));
  }
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Token counts: the encoder's input (image features and prompt) and the generated tokens (not the start token). */
export function usageOf(results: readonly TaskResult[]): Usage {
  const prompt = results.reduce((n, r) => n + r.prompt_tokens, 0);
  const completion = results.reduce((n, r) => n + Math.max(0, r.generated_ids.length - 1), 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

export interface CompletionMeta {
  id: string;
  /** Unix seconds. */
  created: number;
  model: string;
}

/** A `chat.completion` object. */
export function chatCompletion(meta: CompletionMeta, content: string, usage: Usage): Record<string, unknown> {
  return {
    id: meta.id,
    object: "chat.completion",
    created: meta.created,
    model: meta.model,
    choices: [{ index: 0, message: { role: "assistant", content, refusal: null }, logprobs: null, finish_reason: "stop" }],
    usage,
  };
}

/** One server-sent event of a `chat.completion.chunk`. */
export function chunkEvent(meta: CompletionMeta, delta: Record<string, unknown> | undefined, finish: string | null, usage?: Usage): string {
  const chunk = {
    id: meta.id,
    object: "chat.completion.chunk",
    created: meta.created,
    model: meta.model,
    choices: delta === undefined ? [] : [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    ...(usage !== undefined ? { usage } : {}),
  };
  return `data: ${JSON.stringify(chunk)}\n\n`;
}

/** The content as streamed deltas of whole words (about 32 characters each); joined they are the content. */
export function contentPieces(content: string): string[] {
  const pieces: string[] = [];
  let current = "";
  for (const word of content.match(/\s*\S+|\s+$/g) ?? []) {
    if (current.length + word.length > 32 && current !== "") {
      pieces.push(current);
      current = "";
    }
    current += word;
  }
  if (current !== "" || pieces.length === 0) pieces.push(current);
  return pieces;
}

/** The answer to GET /v1/models. */
export function modelList(model: string, created: number): Record<string, unknown> {
  return { object: "list", data: [{ id: model, object: "model", created, owned_by: "florence-edge" }] };
}
