/**
 * NVIDIA's hosted Florence-2 API (`https://ai.api.nvidia.com/v1/vlm/microsoft/florence-2`), served locally so that
 * clients written for it work unchanged. The request is `{"messages": [{"role": "user", "content":
 * "<TASK><text input if any><img src=\"data:image/jpeg;base64,…\" />"}]}` (region inputs as
 * `<loc_x1><loc_y1><loc_x2><loc_y2>`). The answer, like the hosted API's, is a ZIP holding `<id>.response` — JSON
 * with `choices[0].message.content` (the task token and the answer: `"<CAPTION>A red circle…"`, the raw text with
 * `<loc_N>` tokens for the tasks that locate things) and `choices[0].message.entities` (`bboxes`, `quad_boxes`,
 * `labels`, `bboxes_labels`, `polygons`; null where the task gives none) — and `overlay.png`, the image with the
 * boxes or masks drawn, when there are any. NVIDIA's own sample client sends `Accept: application/json` and unzips
 * what comes back, so the ZIP is the answer whatever the Accept header says; `?format=json` gets the JSON alone.
 * The only module that imports fflate.
 */
import { zipSync } from "fflate";
import type { TaskResult } from "../../florence/florence2.ts";
import { TASK_TOKENS, TASKS, isTaskToken } from "../../florence/tasks.ts";
import { isRecord } from "../../validate.ts";
import { badRequest, HttpError } from "./http_errors.ts";
import type { Usage } from "./openai_api.ts";

export interface NvidiaPlan {
  task: string;
  text: string | undefined;
  imageUrl: string;
  param: string;
}

const IMG_TAG = /<img\s+src\s*=\s*"([^"]*)"\s*\/?>/i;
const LEADING_TOKEN = /^\s*<([A-Z][A-Z0-9_]*)>/;

/** Checks a request body in the hosted API's shape and says what to run. */
export function parseNvidiaRequest(body: unknown): NvidiaPlan {
  if (!isRecord(body)) throw badRequest("body", "must be a JSON object", '{"messages": [{"role": "user", "content": "<CAPTION><img src=\\"data:image/jpeg;base64,…\\" />"}]}');
  const messages = body["messages"];
  if (!Array.isArray(messages) || messages.length === 0) throw badRequest("messages", "must be a list with one user message");
  const index = messages.findIndex((m) => isRecord(m) && m["role"] === "user");
  if (index < 0) throw badRequest("messages", "has no message with role \"user\"");
  const param = `messages[${index}].content`;
  const content = (messages[index] as Record<string, unknown>)["content"];
  if (typeof content !== "string") throw badRequest(param, "must be a string: the task token, its text input and an <img> tag", '"<OD><img src=\\"data:image/jpeg;base64,…\\" />"');
  const token = LEADING_TOKEN.exec(content);
  if (!token) throw badRequest(param, "does not start with a task token", `start it with one of ${TASK_TOKENS.join(" ")}`);
  if (!isTaskToken(`<${token[1]}>`)) throw new HttpError(400, "UNKNOWN_TASK", `${param}: unknown Florence-2 task <${token[1]}>`, { param, fix: `use one of ${TASK_TOKENS.join(" ")}` });
  const task = `<${token[1]}>`;
  const rest = content.slice(token[0].length);
  const img = IMG_TAG.exec(rest);
  if (!img) throw badRequest(param, "has no image", 'add <img src="data:image/jpeg;base64,…" /> after the task token (and its text input)');
  if (/;asset_id,/i.test(img[1]!)) throw badRequest(param, "NVCF asset ids are not available here", 'send the image inline: <img src="data:image/jpeg;base64,…" />');
  // the text input sits between the token and the image (NVIDIA's documentation also allows it after the image)
  const text = `${rest.slice(0, img.index)}${rest.slice(img.index + img[0].length)}`.trim();
  return { task, text: TASKS[task as keyof typeof TASKS].takesText && text !== "" ? text : undefined, imageUrl: img[1]!, param };
}

interface NvidiaAnswer {
  content: string;
  entities: { bboxes: number[][]; quad_boxes: number[][]; labels: string[]; polygons: number[][][] };
}

function orNull<T>(list: T[] | undefined): T[] | null {
  return list !== undefined && list.length > 0 ? list : null;
}

/** The `.response` JSON for a result post-processed in NVIDIA's shape (`format: "nvidia"`). */
export function nvidiaResponse(id: string, result: TaskResult, usage: Usage): Record<string, unknown> {
  const answer = result.result[result.task];
  if (!isRecord(answer) || !isRecord(answer["entities"])) throw new HttpError(500, "internal_error", `the ${result.task} answer is not in NVIDIA's shape`);
  const { content, entities } = answer as unknown as NvidiaAnswer;
  const boxes = entities.bboxes ?? [];
  // HF's <OPEN_VOCABULARY_DETECTION> labels its boxes and its polygons apart; NVIDIA's labels run over both
  const boxLabels = result.task === "<OPEN_VOCABULARY_DETECTION>" ? entities.labels.slice(0, boxes.length) : undefined;
  return {
    id,
    choices: [
      {
        index: 0,
        message: {
          role: "assistant",
          content: `${result.task}${content}`,
          entities: {
            bboxes: orNull(boxes),
            quad_boxes: orNull(entities.quad_boxes),
            labels: orNull(entities.labels),
            bboxes_labels: orNull(boxLabels),
            polygons: orNull(entities.polygons),
          },
        },
        finish_reason: "stop",
      },
    ],
    usage,
  };
}

/** The ZIP the hosted API answers with: `<id>.response`, and `overlay.png` when given. */
export function nvidiaZip(id: string, response: Record<string, unknown>, overlayPng: Uint8Array | undefined): Uint8Array<ArrayBuffer> {
  const files: Record<string, Uint8Array> = { [`${id}.response`]: new TextEncoder().encode(JSON.stringify(response)) };
  if (overlayPng !== undefined) files["overlay.png"] = overlayPng;
  // fflate allocates its output: a plain ArrayBuffer
  return zipSync(files, { level: 6 }) as Uint8Array<ArrayBuffer>;
}
