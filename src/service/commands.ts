/**
 * Commands that arrive over MQTT, parsed and validated strictly before anything acts on them: a `set` command
 * replaces or adjusts a camera's task schedule, an `infer` request asks for one task on a camera's newest frame.
 *
 * Everything here is pure: bytes in, a typed command or a CommandError out. A payload is at most 16 KiB of
 * well-formed UTF-8 holding one JSON object; unknown keys (`__proto__` and `constructor` included) are errors,
 * task tokens must be in the task table, texts are bounded and free of control characters, numbers are in range.
 * Nothing in a command is ever evaluated, executed or used as a path: texts only ever become prompts.
 */
import { FlorenceError, describeValue, type ErrorCode } from "../errors.ts";
import { constructPrompt, isTaskToken, TASK_TOKENS, TASKS, type TaskToken } from "../florence/tasks.ts";
import { maskSecrets } from "./redact.ts";
import type { TaskSchedule } from "./service_config.ts";

export const COMMAND_LIMITS = {
  /** Bytes of one command payload. */
  maxPayloadBytes: 16 * 1024,
  /** UTF-16 code units of a text input (the config file's limit too). */
  maxTextLength: 512,
  maxTasks: 16,
  /** Seconds; the config file's range. */
  maxIntervalS: 86_400,
  maxCorrelationIdLength: 128,
  maxResponseTopicLength: 512,
} as const;

/** The error of a rejected command: a FlorenceError that also names the offending key (`$` is the whole payload). */
export class CommandError extends FlorenceError {
  /** Where in the payload: `$`, `tasks[1].text`, `interval_s`, an unknown key's name. */
  readonly key: string;

  constructor(code: ErrorCode, key: string, message: string, options: { fix?: string; cause?: unknown } = {}) {
    super(code, message, options);
    this.name = "CommandError";
    this.key = key;
  }
}

/** One task of a `set` command; undefined fields are filled from the command's top level, then the defaults. */
export interface CommandTask {
  task: TaskToken;
  text: string | undefined;
  intervalS: number | undefined;
}

/** A validated `set` command for one camera. */
export interface SetCommand {
  camera: string;
  /** The camera's new task list (`[]` pauses the camera); undefined: keep the tasks, change text/interval only. */
  tasks: CommandTask[] | undefined;
  /** With `tasks`: the text of entries that take text and give none. Without: the new text of every text task. */
  text: string | undefined;
  /** With `tasks`: the interval of entries that give none. Without: the new interval of every task. */
  intervalS: number | undefined;
}

/** A validated one-off inference request. */
export interface InferRequest {
  camera: string;
  task: TaskToken;
  text: string | undefined;
  /** From the JSON body (`response_topic`): the fallback for brokers without MQTT 5 request/response. */
  responseTopic: string | undefined;
  /** From the JSON body (`correlation_id`): echoed in the reply body. */
  correlationId: string | undefined;
}

type Json = Record<string, unknown>;

/** A value from a command, shown in a message: never serialised whole (it may be nested thousands deep). */
function shown(value: unknown): string {
  if (typeof value === "string") return describeValue(value);
  if (value === null || typeof value === "number" || typeof value === "boolean") return String(value);
  return Array.isArray(value) ? `a list of ${value.length}` : "an object";
}

const UTF8 = new TextDecoder("utf-8");

/**
 * Offset of the first byte that is not part of well-formed UTF-8 (Unicode table 3-7: no overlong forms, no
 * surrogates, nothing above U+10FFFF, no truncated sequence), or -1 when all of it is well formed.
 */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0; // overlong
      if (b === 0xed) hi = 0x9f; // surrogates
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90; // overlong
      if (b === 0xf4) hi = 0x8f; // above U+10FFFF
    } else return i;
    if (i + need > n - 1) return i; // truncated
    const second = bytes[i + 1]!;
    if (second < lo || second > hi) return i;
    for (let k = 2; k <= need; k++) {
      const c = bytes[i + k]!;
      if (c < 0x80 || c > 0xbf) return i;
    }
    i += need + 1;
  }
  return -1;
}

/** Bytes (or a string) → the payload's JSON object: size, UTF-8 and JSON checked, top level must be an object. */
export function decodeCommandPayload(payload: Uint8Array | string): Json {
  let text: string;
  if (typeof payload === "string") {
    // at most 3 UTF-8 bytes per UTF-16 unit: only long strings need encoding to be measured
    const bytes = payload.length * 3 > COMMAND_LIMITS.maxPayloadBytes ? new TextEncoder().encode(payload).length : 0;
    if (bytes > COMMAND_LIMITS.maxPayloadBytes) throw tooLarge(bytes);
    text = payload;
  } else {
    if (payload.length > COMMAND_LIMITS.maxPayloadBytes) throw tooLarge(payload.length);
    const bad = firstInvalidUtf8(payload);
    if (bad >= 0) {
      const shown = Array.from(payload.subarray(bad, Math.min(bad + 4, payload.length)), (b) => b.toString(16).padStart(2, "0")).join(" ");
      throw new CommandError("INVALID_UTF8", "$", `the command is not valid UTF-8: invalid byte sequence at byte ${bad} (${shown})`, {
        fix: "send the JSON command encoded as UTF-8",
      });
    }
    text = UTF8.decode(payload);
  }
  if (text.trim() === "") {
    throw new CommandError("INVALID_ARGUMENT", "$", "the command is empty", { fix: 'send a JSON object, e.g. {"tasks": ["<OD>"]}' });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new CommandError("INVALID_ARGUMENT", "$", `the command is not valid JSON: ${describeValue((cause as Error).message, 120)}`, {
      fix: 'send a JSON object, e.g. {"tasks": ["<OD>"]}',
      cause,
    });
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new CommandError("INVALID_ARGUMENT", "$", `the command must be a JSON object, got ${shown(value)}`, {
      fix: 'send a JSON object, e.g. {"tasks": ["<OD>"]}',
    });
  }
  return value as Json;
}

function tooLarge(bytes: number): CommandError {
  return new CommandError("INVALID_ARGUMENT", "$", `the command is ${bytes} bytes; at most ${COMMAND_LIMITS.maxPayloadBytes}`, {
    fix: "send a smaller command",
  });
}

/** A key as it may be shown in an error: plain names as they are, anything else quoted and shortened. */
function keyName(key: string): string {
  return /^[A-Za-z0-9_]{1,64}$/.test(key) ? key : describeValue(key, 40);
}

function child(path: string, key: string): string {
  const name = keyName(key);
  return path === "$" ? name : `${path}.${name}`;
}

function onlyKeys(obj: Json, path: string, allowed: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) {
      throw new CommandError("INVALID_ARGUMENT", child(path, key), `unknown key ${describeValue(key, 40)}${path === "$" ? "" : ` in ${path}`}`, {
        fix: `known keys here: ${allowed.join(", ")}`,
      });
    }
  }
}

function has(obj: Json, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

// C0, DEL, C1, and the bidirectional overrides/isolates (text that displays differently from what it is)
const FORBIDDEN_CHAR = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** A bounded, well-formed string without control characters (space is the only whitespace allowed). */
function boundedString(value: unknown, key: string, what: string, maxLength: number, fix: string): string {
  if (typeof value !== "string") {
    throw new CommandError("INVALID_ARGUMENT", key, `${key}: ${what} must be a string, got ${shown(value)}`, { fix });
  }
  if (value.length > maxLength) {
    throw new CommandError("INVALID_ARGUMENT", key, `${key}: ${what} is ${value.length} characters; at most ${maxLength}`, { fix: `shorten it to ${maxLength} characters` });
  }
  const lone = LONE_SURROGATE.exec(value);
  if (lone) {
    throw new CommandError("INVALID_UTF8", key, `${key}: ${what} has an unpaired surrogate (invalid Unicode) at character ${lone.index}`, {
      fix: "send the text as valid UTF-8",
    });
  }
  const control = FORBIDDEN_CHAR.exec(value);
  if (control) {
    const code = control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0");
    throw new CommandError("TASK_INPUT_INVALID", key, `${key}: ${what} contains the control character U+${code} at character ${control.index}`, {
      fix: "use printable text; spaces are the only whitespace allowed",
    });
  }
  return value;
}

function textInput(value: unknown, key: string): string {
  return boundedString(value, key, "the text input", COMMAND_LIMITS.maxTextLength, 'e.g. "a red car" or a region "<loc_100><loc_200><loc_500><loc_700>"');
}

function interval(value: unknown, key: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value > COMMAND_LIMITS.maxIntervalS) {
    throw new CommandError("INVALID_ARGUMENT", key, `${key} must be a number of seconds in 0..${COMMAND_LIMITS.maxIntervalS}, got ${shown(value)}`, {
      fix: "0 runs the task on every frame the loop can take; N runs it at most once every N seconds",
    });
  }
  return value;
}

function taskToken(value: unknown, key: string): TaskToken {
  if (typeof value !== "string" || !isTaskToken(value)) {
    throw new CommandError("UNKNOWN_TASK", key, `${key}: unknown Florence-2 task ${shown(value)}`, { fix: `use one of ${TASK_TOKENS.join(" ")}` });
  }
  return value;
}

/** HF's prompt rules and the region syntax, applied to one task and its text; errors are re-keyed to `key`. */
function checkTaskInput(task: TaskToken, text: string | undefined, key: string): void {
  const spec = TASKS[task];
  if (!spec.takesText && text !== undefined) {
    throw new CommandError("TASK_INPUT_INVALID", key, `${key}: ${task} takes no text input, got ${describeValue(text)}`, { fix: `remove the text, or pick a task that takes text` });
  }
  try {
    // the real frame size is unknown here; a placeholder size checks the syntax of pixel regions
    constructPrompt(task, text, { width: 1000, height: 1000 });
  } catch (error) {
    if (error instanceof FlorenceError) throw new CommandError(error.code, key, `${key}: ${error.message}`, { cause: error });
    throw error;
  }
}

function parseCommandTask(value: unknown, path: string): CommandTask {
  if (typeof value === "string") return { task: taskToken(value, path), text: undefined, intervalS: undefined };
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new CommandError("INVALID_ARGUMENT", path, `${path} must be a task token or {"task": …, "text"?: …, "interval_s"?: …}, got ${shown(value)}`, {
      fix: 'e.g. "<OD>" or {"task": "<CAPTION_TO_PHRASE_GROUNDING>", "text": "a dog"}',
    });
  }
  const obj = value as Json;
  onlyKeys(obj, path, ["task", "text", "interval_s"]);
  if (!has(obj, "task")) throw new CommandError("INVALID_ARGUMENT", `${path}.task`, `${path}.task is required`, { fix: 'e.g. {"task": "<OD>"}' });
  return {
    task: taskToken(obj["task"], `${path}.task`),
    text: has(obj, "text") ? textInput(obj["text"], `${path}.text`) : undefined,
    intervalS: has(obj, "interval_s") ? interval(obj["interval_s"], `${path}.interval_s`) : undefined,
  };
}

/**
 * Parses and validates a `set` command (`<prefix>/<camera>/set`):
 * `{"tasks"?: ["<OD>", …] | [{"task", "text"?, "interval_s"?}, …], "text"?: "…", "interval_s"?: n}`.
 * With `tasks`, each entry's text must fit its task (given for text tasks, absent for the others; the top-level
 * text fills in where an entry gives none). Throws CommandError naming the offending key.
 */
export function parseSetCommand(payload: Uint8Array | string, camera: string): SetCommand {
  const obj = decodeCommandPayload(payload);
  onlyKeys(obj, "$", ["tasks", "text", "interval_s"]);
  const text = has(obj, "text") ? textInput(obj["text"], "text") : undefined;
  const intervalS = has(obj, "interval_s") ? interval(obj["interval_s"], "interval_s") : undefined;
  if (!has(obj, "tasks")) {
    if (text === undefined && intervalS === undefined) {
      throw new CommandError("INVALID_ARGUMENT", "$", "the command changes nothing: give tasks, text or interval_s", { fix: 'e.g. {"tasks": ["<OD>"], "interval_s": 5}' });
    }
    return { camera, tasks: undefined, text, intervalS };
  }
  const list = obj["tasks"];
  if (!Array.isArray(list)) {
    throw new CommandError("INVALID_ARGUMENT", "tasks", `tasks must be a list, got ${shown(list)}`, { fix: 'e.g. "tasks": ["<OD>", "<CAPTION>"]' });
  }
  if (list.length > COMMAND_LIMITS.maxTasks) {
    throw new CommandError("INVALID_ARGUMENT", "tasks", `tasks has ${list.length} entries; at most ${COMMAND_LIMITS.maxTasks}`, { fix: "schedule fewer tasks" });
  }
  const tasks = list.map((entry, i) => parseCommandTask(entry, `tasks[${i}]`));
  let textUsed = false;
  const seen = new Set<string>();
  for (const [i, entry] of tasks.entries()) {
    const own = entry.text !== undefined;
    if (!own && text !== undefined && TASKS[entry.task].takesText) {
      entry.text = text;
      textUsed = true;
    }
    checkTaskInput(entry.task, entry.text, own ? `tasks[${i}].text` : TASKS[entry.task].takesText && text !== undefined ? "text" : `tasks[${i}]`);
    const id = `${entry.task}\u0000${entry.text ?? ""}`;
    if (seen.has(id)) {
      throw new CommandError("INVALID_ARGUMENT", `tasks[${i}]`, `tasks[${i}] repeats ${entry.task}${entry.text !== undefined ? ` with text ${describeValue(entry.text)}` : ""}`, {
        fix: "list each task (and text) once",
      });
    }
    seen.add(id);
  }
  if (text !== undefined && !textUsed) {
    throw new CommandError("TASK_INPUT_INVALID", "text", `text is given but none of the tasks without their own text takes a text input`, {
      fix: "remove the top-level text, or give it to a task that takes text",
    });
  }
  return { camera, tasks, text, intervalS };
}

/**
 * The schedule a validated `set` command leads to from the camera's current one. Given tasks replace the list
 * (an entry keeps `snapshot` of the current entry for the same task); without tasks, text goes to every task that
 * takes text and interval_s to every task. Throws CommandError when the text does not fit a current task.
 */
export function applySetCommand(current: readonly TaskSchedule[], command: SetCommand): TaskSchedule[] {
  if (command.tasks !== undefined) {
    return command.tasks.map((entry) => ({
      task: entry.task,
      text: entry.text,
      intervalS: entry.intervalS ?? command.intervalS ?? current.find((c) => c.task === entry.task)?.intervalS ?? 0,
      snapshot: current.find((c) => c.task === entry.task)?.snapshot ?? false,
    }));
  }
  if (command.text !== undefined && !current.some((c) => isTaskToken(c.task) && TASKS[c.task].takesText)) {
    throw new CommandError("TASK_INPUT_INVALID", "text", `camera ${command.camera} runs no task that takes a text input (${current.map((c) => c.task).join(" ") || "no tasks"})`, {
      fix: 'give the tasks too, e.g. {"tasks": [{"task": "<OPEN_VOCABULARY_DETECTION>", "text": "a cat"}]}',
    });
  }
  return current.map((entry) => {
    const takesText = isTaskToken(entry.task) && TASKS[entry.task].takesText;
    const text = takesText && command.text !== undefined ? command.text : entry.text;
    if (takesText && command.text !== undefined) checkTaskInput(entry.task as TaskToken, text, "text");
    return { task: entry.task, text, intervalS: command.intervalS ?? entry.intervalS, snapshot: entry.snapshot };
  });
}

// ---- topics ----

/** Whether an MQTT topic filter (`+` and `#` wildcards) matches a topic name. */
export function topicMatchesFilter(filter: string, topic: string): boolean {
  const f = filter.split("/");
  const t = topic.split("/");
  // [MQTT-4.7.2-1] wildcards at the first level do not match topics beginning with $
  if (topic.startsWith("$") && (f[0] === "+" || f[0] === "#")) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/**
 * Checks a response topic (MQTT 5 property or body field): a bounded topic name without wildcards, NUL, control
 * characters or a leading `$`, and matching none of `forbiddenFilters` (the service's own command topics: a reply
 * there would be read as another command).
 */
export function checkResponseTopic(value: unknown, key: string, forbiddenFilters: readonly string[]): string {
  const topic = boundedString(value, key, "the response topic", COMMAND_LIMITS.maxResponseTopicLength, "a topic name such as clients/42/replies");
  if (topic === "" || /[+#]/.test(topic) || topic.startsWith("$")) {
    throw new CommandError("INVALID_ARGUMENT", key, `${key}: ${describeValue(topic)} is not a topic name to publish to (empty, a wildcard or a $ topic)`, {
      fix: "use a plain topic name such as clients/42/replies",
    });
  }
  const clash = forbiddenFilters.find((filter) => topicMatchesFilter(filter, topic));
  if (clash !== undefined) {
    throw new CommandError("INVALID_ARGUMENT", key, `${key}: ${describeValue(topic)} is one of the service's own command topics (${clash})`, {
      fix: "reply topics must be outside the topics the service listens to",
    });
  }
  return topic;
}

/**
 * Parses and validates an inference request: `{"task": "<OD>", "text"?: "…", "camera"?: "…", "response_topic"?:
 * "…", "correlation_id"?: "…"}`. `camera` is required on `<prefix>/infer` (topicCamera undefined) and, on
 * `<prefix>/<camera>/infer`, must name that camera if given. `cameras` are the known cameras.
 */
export function parseInferRequest(
  payload: Uint8Array | string,
  options: { topicCamera: string | undefined; cameras: readonly string[]; forbiddenResponseFilters: readonly string[] },
): InferRequest {
  const obj = decodeCommandPayload(payload);
  onlyKeys(obj, "$", ["task", "text", "camera", "response_topic", "correlation_id"]);
  let camera = options.topicCamera;
  if (has(obj, "camera")) {
    const named = obj["camera"];
    if (typeof named !== "string" || !options.cameras.includes(named)) {
      throw new CommandError("INVALID_ARGUMENT", "camera", `unknown camera ${shown(named)}`, { fix: `cameras: ${options.cameras.join(", ")}` });
    }
    if (camera !== undefined && named !== camera) {
      throw new CommandError("INVALID_ARGUMENT", "camera", `camera ${describeValue(named)} differs from the topic's camera ${describeValue(camera)}`, {
        fix: "leave camera out on a camera's own infer topic",
      });
    }
    camera = named;
  }
  if (camera === undefined) {
    throw new CommandError("INVALID_ARGUMENT", "camera", "camera is required on the shared infer topic", { fix: `add "camera": one of ${options.cameras.join(", ")}` });
  }
  if (!has(obj, "task")) throw new CommandError("INVALID_ARGUMENT", "task", "task is required", { fix: 'e.g. {"task": "<CAPTION>"}' });
  const task = taskToken(obj["task"], "task");
  const text = has(obj, "text") ? textInput(obj["text"], "text") : undefined;
  checkTaskInput(task, text, "text");
  return {
    camera,
    task,
    text,
    responseTopic: has(obj, "response_topic") ? checkResponseTopic(obj["response_topic"], "response_topic", options.forbiddenResponseFilters) : undefined,
    correlationId: has(obj, "correlation_id")
      ? boundedString(obj["correlation_id"], "correlation_id", "the correlation id", COMMAND_LIMITS.maxCorrelationIdLength, "a short printable id")
      : undefined,
  };
}

/** The key and code of any error, for the JSON error answer (non-command errors count as the whole payload). */
export function describeCommandError(error: unknown): { code: ErrorCode; key: string; message: string } {
  // the answer goes out over MQTT: a handler's error may quote a camera URL
  if (error instanceof CommandError) return { code: error.code, key: error.key, message: maskSecrets(error.message) };
  if (error instanceof FlorenceError) return { code: error.code, key: "$", message: maskSecrets(error.message) };
  return { code: "ENGINE_FAILED", key: "$", message: maskSecrets(error instanceof Error ? error.message : String(error)) };
}
