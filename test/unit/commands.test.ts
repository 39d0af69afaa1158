/**
 * MQTT commands: a table of valid and invalid `set` commands (each invalid one must be a CommandError naming the
 * offending key, with the right code), inference requests, response-topic rules, the schedule a command leads to,
 * and the UTF-8 check against the WHATWG decoder. Valid commands must also validate against
 * schemas/command.schema.json, and the invalid ones the schema can express must fail it.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  applySetCommand,
  COMMAND_LIMITS,
  CommandError,
  checkResponseTopic,
  decodeCommandPayload,
  firstInvalidUtf8,
  parseInferRequest,
  parseSetCommand,
  topicMatchesFilter,
  type SetCommand,
} from "../../src/service/commands.ts";
import type { TaskSchedule } from "../../src/service/service_config.ts";
import { loadSchemas } from "../support/json_schema.ts";

const schemas = loadSchemas();
const utf8 = new TextEncoder();

function rejection(fn: () => unknown): CommandError {
  try {
    fn();
  } catch (error) {
    assert.instance(error, CommandError, `expected a CommandError, got ${String(error)}`);
    return error as CommandError;
  }
  assert.unreachable("expected the command to be rejected");
  throw new Error("unreachable");
}

interface Valid {
  name: string;
  payload: string;
  expect: Omit<SetCommand, "camera">;
}

const valid: Valid[] = [
  { name: "one token", payload: '{"tasks": ["<OD>"]}', expect: { tasks: [{ task: "<OD>", text: undefined, intervalS: undefined }], text: undefined, intervalS: undefined } },
  {
    name: "tokens and an interval for all",
    payload: '{"tasks": ["<OD>", "<CAPTION>"], "interval_s": 5}',
    expect: { tasks: [{ task: "<OD>", text: undefined, intervalS: undefined }, { task: "<CAPTION>", text: undefined, intervalS: undefined }], text: undefined, intervalS: 5 },
  },
  {
    name: "an object entry with text and interval",
    payload: '{"tasks": [{"task": "<CAPTION_TO_PHRASE_GROUNDING>", "text": "a dog", "interval_s": 2.5}]}',
    expect: { tasks: [{ task: "<CAPTION_TO_PHRASE_GROUNDING>", text: "a dog", intervalS: 2.5 }], text: undefined, intervalS: undefined },
  },
  {
    name: "a region as loc tokens",
    payload: '{"tasks": [{"task": "<REGION_TO_CATEGORY>", "text": "<loc_52><loc_332><loc_932><loc_774>"}]}',
    expect: { tasks: [{ task: "<REGION_TO_CATEGORY>", text: "<loc_52><loc_332><loc_932><loc_774>", intervalS: undefined }], text: undefined, intervalS: undefined },
  },
  {
    name: "a region as pixels",
    payload: '{"tasks": [{"task": "<REGION_TO_OCR>", "text": "33.5,160,597,372"}]}',
    expect: { tasks: [{ task: "<REGION_TO_OCR>", text: "33.5,160,597,372", intervalS: undefined }], text: undefined, intervalS: undefined },
  },
  {
    name: "top-level text goes to the text task only",
    payload: '{"tasks": ["<OPEN_VOCABULARY_DETECTION>", "<OD>"], "text": "a cat"}',
    expect: { tasks: [{ task: "<OPEN_VOCABULARY_DETECTION>", text: "a cat", intervalS: undefined }, { task: "<OD>", text: undefined, intervalS: undefined }], text: "a cat", intervalS: undefined },
  },
  {
    name: "an entry's own text wins over the top level",
    payload: '{"tasks": [{"task": "<OPEN_VOCABULARY_DETECTION>", "text": "a dog"}, "<CAPTION_TO_PHRASE_GROUNDING>"], "text": "a cat"}',
    expect: {
      tasks: [{ task: "<OPEN_VOCABULARY_DETECTION>", text: "a dog", intervalS: undefined }, { task: "<CAPTION_TO_PHRASE_GROUNDING>", text: "a cat", intervalS: undefined }],
      text: "a cat",
      intervalS: undefined,
    },
  },
  { name: "the same task with two texts", payload: '{"tasks": [{"task": "<OPEN_VOCABULARY_DETECTION>", "text": "a"}, {"task": "<OPEN_VOCABULARY_DETECTION>", "text": "b"}]}', expect: { tasks: [{ task: "<OPEN_VOCABULARY_DETECTION>", text: "a", intervalS: undefined }, { task: "<OPEN_VOCABULARY_DETECTION>", text: "b", intervalS: undefined }], text: undefined, intervalS: undefined } },
  { name: "interval only", payload: '{"interval_s": 0}', expect: { tasks: undefined, text: undefined, intervalS: 0 } },
  { name: "the longest interval", payload: '{"interval_s": 86400}', expect: { tasks: undefined, text: undefined, intervalS: 86400 } },
  { name: "text only", payload: '{"text": "a red car"}', expect: { tasks: undefined, text: "a red car", intervalS: undefined } },
  { name: "an empty list pauses the camera", payload: '{"tasks": []}', expect: { tasks: [], text: undefined, intervalS: undefined } },
  { name: "512 characters of text", payload: JSON.stringify({ text: "x".repeat(512) }), expect: { tasks: undefined, text: "x".repeat(512), intervalS: undefined } },
  { name: "non-ASCII text, astral characters included", payload: '{"text": "ein größerer Hund 🐕 près du café"}', expect: { tasks: undefined, text: "ein größerer Hund 🐕 près du café", intervalS: undefined } },
  { name: "JSON escapes of printable characters", payload: '{"text": "caf\\u00e9 \\ud83d\\udc15"}', expect: { tasks: undefined, text: "café 🐕", intervalS: undefined } },
  { name: "sixteen tasks", payload: JSON.stringify({ tasks: Array.from({ length: 16 }, (_, i) => ({ task: "<OPEN_VOCABULARY_DETECTION>", text: `thing ${i}` })) }), expect: { tasks: Array.from({ length: 16 }, (_, i) => ({ task: "<OPEN_VOCABULARY_DETECTION>" as const, text: `thing ${i}`, intervalS: undefined })), text: undefined, intervalS: undefined } },
];

for (const row of valid) {
  test(`valid set command: ${row.name}`, () => {
    for (const payload of [row.payload, utf8.encode(row.payload)]) {
      const command = parseSetCommand(payload, "front");
      assert.equal(command, { camera: "front", ...row.expect });
    }
    assert.equal(schemas.errors("command", JSON.parse(row.payload)), []);
  });
}

interface Invalid {
  name: string;
  payload: string | Uint8Array;
  code: string;
  key: string;
  /** A fragment the message must contain. */
  says?: string;
  /** Whether schemas/command.schema.json can tell (undefined: not JSON, nothing to validate). */
  schemaRejects?: boolean;
}

const long = "x".repeat(513);
const invalid: Invalid[] = [
  { name: "not JSON", payload: "tasks: [<OD>]", code: "INVALID_ARGUMENT", key: "$", says: "not valid JSON" },
  { name: "truncated JSON", payload: '{"tasks": ["<OD>"', code: "INVALID_ARGUMENT", key: "$", says: "not valid JSON" },
  { name: "empty", payload: "", code: "INVALID_ARGUMENT", key: "$", says: "empty" },
  { name: "whitespace", payload: " \n ", code: "INVALID_ARGUMENT", key: "$", says: "empty" },
  { name: "a list", payload: '["<OD>"]', code: "INVALID_ARGUMENT", key: "$", says: "JSON object", schemaRejects: true },
  { name: "null", payload: "null", code: "INVALID_ARGUMENT", key: "$", schemaRejects: true },
  { name: "a string", payload: '"<OD>"', code: "INVALID_ARGUMENT", key: "$", schemaRejects: true },
  { name: "an empty object", payload: "{}", code: "INVALID_ARGUMENT", key: "$", says: "changes nothing", schemaRejects: true },
  { name: "an unknown task", payload: '{"tasks": ["<XX>"]}', code: "UNKNOWN_TASK", key: "tasks[0]", says: "<OCR_WITH_REGION>", schemaRejects: true },
  { name: "a slug instead of a token", payload: '{"tasks": ["od"]}', code: "UNKNOWN_TASK", key: "tasks[0]", schemaRejects: true },
  { name: "a token in the wrong case", payload: '{"tasks": [{"task": "<od>"}]}', code: "UNKNOWN_TASK", key: "tasks[0].task", schemaRejects: true },
  { name: "tasks not a list", payload: '{"tasks": "<OD>"}', code: "INVALID_ARGUMENT", key: "tasks", schemaRejects: true },
  { name: "a number as task", payload: '{"tasks": [42]}', code: "INVALID_ARGUMENT", key: "tasks[0]", schemaRejects: true },
  { name: "an entry without task", payload: '{"tasks": [{"text": "a dog"}]}', code: "INVALID_ARGUMENT", key: "tasks[0].task", schemaRejects: true },
  { name: "text for a task that takes none", payload: '{"tasks": [{"task": "<OD>", "text": "a dog"}]}', code: "TASK_INPUT_INVALID", key: "tasks[0].text", says: "takes no text" },
  { name: "a text task without text", payload: '{"tasks": [{"task": "<CAPTION_TO_PHRASE_GROUNDING>"}]}', code: "TASK_INPUT_INVALID", key: "tasks[0]", says: "needs a text input" },
  { name: "a blank text", payload: '{"tasks": [{"task": "<OPEN_VOCABULARY_DETECTION>", "text": "   "}]}', code: "TASK_INPUT_INVALID", key: "tasks[0].text", says: "needs a text input" },
  { name: "a region that is words", payload: '{"tasks": [{"task": "<REGION_TO_CATEGORY>", "text": "the car"}]}', code: "TASK_INPUT_INVALID", key: "tasks[0].text", says: "four <loc_N>" },
  { name: "a region bin out of range", payload: '{"tasks": [{"task": "<REGION_TO_CATEGORY>", "text": "<loc_1000><loc_2><loc_3><loc_4>"}]}', code: "TASK_INPUT_INVALID", key: "tasks[0].text" },
  { name: "a task token inside the text", payload: '{"tasks": [{"task": "<CAPTION_TO_PHRASE_GROUNDING>", "text": "a <OD> dog"}]}', code: "TASK_INPUT_INVALID", key: "tasks[0].text", says: "<OD>" },
  { name: "another text task's token inside the text", payload: '{"tasks": [{"task": "<OPEN_VOCABULARY_DETECTION>", "text": "a <REGION_TO_OCR>"}]}', code: "TASK_INPUT_INVALID", key: "tasks[0].text", says: "contains the task token <REGION_TO_OCR>" },
  { name: "top-level text no task takes", payload: '{"tasks": ["<OD>"], "text": "a cat"}', code: "TASK_INPUT_INVALID", key: "text" },
  { name: "a bad top-level text for a region task", payload: '{"tasks": ["<REGION_TO_CATEGORY>"], "text": "a cat"}', code: "TASK_INPUT_INVALID", key: "text" },
  { name: "text too long", payload: JSON.stringify({ tasks: [{ task: "<OPEN_VOCABULARY_DETECTION>", text: long }] }), code: "INVALID_ARGUMENT", key: "tasks[0].text", says: "513 characters", schemaRejects: true },
  { name: "top-level text too long", payload: JSON.stringify({ text: long }), code: "INVALID_ARGUMENT", key: "text", schemaRejects: true },
  { name: "text not a string", payload: '{"text": ["a"]}', code: "INVALID_ARGUMENT", key: "text", schemaRejects: true },
  { name: "a newline in the text", payload: '{"text": "a\\nb"}', code: "TASK_INPUT_INVALID", key: "text", says: "U+000A", schemaRejects: true },
  { name: "a tab in the text", payload: '{"text": "a\\tb"}', code: "TASK_INPUT_INVALID", key: "text", says: "U+0009", schemaRejects: true },
  { name: "NUL in the text", payload: '{"text": "a\\u0000b"}', code: "TASK_INPUT_INVALID", key: "text", says: "U+0000", schemaRejects: true },
  { name: "ESC (terminal escape) in the text", payload: '{"text": "\\u001b[31mred"}', code: "TASK_INPUT_INVALID", key: "text", says: "U+001B", schemaRejects: true },
  { name: "DEL in the text", payload: '{"text": "a\\u007f"}', code: "TASK_INPUT_INVALID", key: "text", says: "U+007F", schemaRejects: true },
  { name: "a C1 control in the text", payload: '{"text": "a\\u0085b"}', code: "TASK_INPUT_INVALID", key: "text", says: "U+0085", schemaRejects: true },
  { name: "a right-to-left override in the text", payload: '{"text": "abc\\u202edcba"}', code: "TASK_INPUT_INVALID", key: "text", says: "U+202E", schemaRejects: true },
  { name: "a raw control byte in the JSON text", payload: utf8.encode('{"text": "a\u0007b"}'), code: "INVALID_ARGUMENT", key: "$", says: "not valid JSON" },
  { name: "an unpaired high surrogate", payload: '{"text": "a\\ud800b"}', code: "INVALID_UTF8", key: "text", says: "unpaired surrogate" },
  { name: "an unpaired low surrogate", payload: '{"tasks": [{"task": "<OPEN_VOCABULARY_DETECTION>", "text": "\\udc00"}]}', code: "INVALID_UTF8", key: "tasks[0].text" },
  { name: "a negative interval", payload: '{"interval_s": -1}', code: "INVALID_ARGUMENT", key: "interval_s", says: "0..86400", schemaRejects: true },
  { name: "an interval too long", payload: '{"interval_s": 86401}', code: "INVALID_ARGUMENT", key: "interval_s", schemaRejects: true },
  { name: "an interval as a string", payload: '{"interval_s": "5"}', code: "INVALID_ARGUMENT", key: "interval_s", schemaRejects: true },
  { name: "an interval that overflows to Infinity", payload: '{"interval_s": 1e400}', code: "INVALID_ARGUMENT", key: "interval_s", schemaRejects: true },
  { name: "a null interval", payload: '{"interval_s": null}', code: "INVALID_ARGUMENT", key: "interval_s", schemaRejects: true },
  { name: "a bad entry interval", payload: '{"tasks": [{"task": "<OD>", "interval_s": -0.5}]}', code: "INVALID_ARGUMENT", key: "tasks[0].interval_s", schemaRejects: true },
  { name: "a repeated task", payload: '{"tasks": ["<OD>", {"task": "<OD>", "interval_s": 3}]}', code: "INVALID_ARGUMENT", key: "tasks[1]", says: "repeats" },
  { name: "seventeen tasks", payload: JSON.stringify({ tasks: Array.from({ length: 17 }, (_, i) => ({ task: "<OPEN_VOCABULARY_DETECTION>", text: `t${i}` })) }), code: "INVALID_ARGUMENT", key: "tasks", says: "at most 16", schemaRejects: true },
  { name: "an unknown key", payload: '{"tasks": ["<OD>"], "command": "rm -rf /"}', code: "INVALID_ARGUMENT", key: "command", says: "unknown key", schemaRejects: true },
  { name: "an unknown key in an entry", payload: '{"tasks": [{"task": "<OD>", "exec": "true"}]}', code: "INVALID_ARGUMENT", key: "tasks[0].exec", schemaRejects: true },
  { name: "__proto__ at the top", payload: '{"__proto__": {"polluted": true}, "tasks": ["<OD>"]}', code: "INVALID_ARGUMENT", key: "__proto__", schemaRejects: true },
  { name: "__proto__ in an entry", payload: '{"tasks": [{"task": "<OD>", "__proto__": {"polluted": true}}]}', code: "INVALID_ARGUMENT", key: "tasks[0].__proto__", schemaRejects: true },
  { name: "constructor.prototype", payload: '{"constructor": {"prototype": {"polluted": true}}}', code: "INVALID_ARGUMENT", key: "constructor", schemaRejects: true },
  { name: "a key with control characters is quoted", payload: '{"a\\u001bb": 1}', code: "INVALID_ARGUMENT", key: '"a\\u001bb"', schemaRejects: true },
  { name: "a payload over 16 KiB", payload: JSON.stringify({ text: "x", pad: "y".repeat(COMMAND_LIMITS.maxPayloadBytes) }), code: "INVALID_ARGUMENT", key: "$", says: "at most 16384" },
  { name: "16 KiB of multi-byte characters as bytes", payload: utf8.encode(JSON.stringify({ text: "é".repeat(8200) })), code: "INVALID_ARGUMENT", key: "$", says: "bytes" },
  { name: "deeply nested JSON", payload: "[".repeat(5000) + "]".repeat(5000), code: "INVALID_ARGUMENT", key: "$" },
  { name: "a deeply nested interval", payload: `{"interval_s": ${"[".repeat(5000)}${"]".repeat(5000)}}`, code: "INVALID_ARGUMENT", key: "interval_s" },
  { name: "a deeply nested task entry", payload: `{"tasks": [${"[".repeat(5000)}${"]".repeat(5000)}]}`, code: "INVALID_ARGUMENT", key: "tasks[0]" },
  { name: "a deeply nested object as text", payload: `{"text": ${'{"a":'.repeat(2500)}1${"}".repeat(2500)}}`, code: "INVALID_ARGUMENT", key: "text" },
  { name: "an invalid byte 0xFF", payload: Uint8Array.from([0x7b, 0x22, 0x74, 0x65, 0x78, 0x74, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]), code: "INVALID_UTF8", key: "$", says: "at byte 9 (ff" },
  { name: "an overlong encoding of /", payload: Uint8Array.from([0x7b, 0xc0, 0xaf, 0x7d]), code: "INVALID_UTF8", key: "$", says: "at byte 1" },
  { name: "an encoded surrogate", payload: Uint8Array.from([0x7b, 0x20, 0xed, 0xa0, 0x80, 0x7d]), code: "INVALID_UTF8", key: "$", says: "at byte 2" },
  { name: "a truncated sequence at the end", payload: Uint8Array.from([0x7b, 0x7d, 0xe2, 0x82]), code: "INVALID_UTF8", key: "$", says: "at byte 2" },
  { name: "a code point above U+10FFFF", payload: Uint8Array.from([0xf4, 0x90, 0x80, 0x80]), code: "INVALID_UTF8", key: "$", says: "at byte 0" },
  { name: "a lone continuation byte", payload: Uint8Array.from([0x7b, 0x80, 0x7d]), code: "INVALID_UTF8", key: "$", says: "at byte 1" },
];

for (const row of invalid) {
  test(`invalid set command: ${row.name}`, () => {
    const error = rejection(() => parseSetCommand(row.payload, "front"));
    assert.is(error.code, row.code, error.message);
    assert.is(error.key, row.key, error.message);
    if (row.says) assert.ok(error.message.includes(row.says), `message ${JSON.stringify(error.message)} should say ${JSON.stringify(row.says)}`);
    assert.ok(!/[\u0000-\u001f]/.test(error.message), "the message carries no control characters");
    if (row.schemaRejects !== undefined) {
      const text = typeof row.payload === "string" ? row.payload : new TextDecoder().decode(row.payload);
      assert.is(schemas.errors("command", JSON.parse(text)).length > 0, row.schemaRejects, `schema verdict for ${row.name}`);
    }
  });
}

test("no command pollutes Object.prototype", () => {
  for (const row of invalid) {
    try {
      parseSetCommand(row.payload, "front");
    } catch {
      // rejected, as the table says
    }
  }
  const probe: Record<string, unknown> = {};
  assert.is(probe["polluted"], undefined);
  assert.is((Object.prototype as Record<string, unknown>)["polluted"], undefined);
});

test("well-formed UTF-8 check agrees with the WHATWG fatal decoder on random and edge byte strings", () => {
  const fatal = new TextDecoder("utf-8", { fatal: true });
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 16;
  const samples: Uint8Array[] = [];
  for (let n = 0; n < 4000; n++) {
    const length = next() % 8;
    // bias towards the bytes where UTF-8's rules live
    samples.push(Uint8Array.from({ length }, () => [0x41, 0x80, 0xbf, 0xc0, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff, 0x9f, 0xa0, 0x8f, 0x90][next() % 17]!));
  }
  for (const s of ["", "a", "é", "€", "🐕", "\u{10FFFF}", "\uFFFF"]) samples.push(utf8.encode(s));
  for (const bytes of samples) {
    let decodes = true;
    try {
      fatal.decode(bytes);
    } catch {
      decodes = false;
    }
    assert.is(firstInvalidUtf8(bytes) === -1, decodes, `bytes ${Array.from(bytes, (b) => b.toString(16)).join(" ")}`);
  }
});

test("decodeCommandPayload accepts a leading byte-order mark and returns a plain object", () => {
  const value = decodeCommandPayload(Uint8Array.from([0xef, 0xbb, 0xbf, ...utf8.encode('{"a": 1}')]));
  assert.equal(value, { a: 1 });
});

// ---- the schedule a command leads to ----

const current: TaskSchedule[] = [
  { task: "<OD>", text: undefined, intervalS: 0, snapshot: true },
  { task: "<OPEN_VOCABULARY_DETECTION>", text: "a cat", intervalS: 5, snapshot: false },
];

test("applySetCommand: new tasks replace the list, keeping snapshot and interval of the same task", () => {
  const next = applySetCommand(current, parseSetCommand('{"tasks": ["<OD>", "<CAPTION>"]}', "front"));
  assert.equal(next, [
    { task: "<OD>", text: undefined, intervalS: 0, snapshot: true },
    { task: "<CAPTION>", text: undefined, intervalS: 0, snapshot: false },
  ]);
  const timed = applySetCommand(current, parseSetCommand('{"tasks": ["<OD>", {"task": "<CAPTION>", "interval_s": 60}], "interval_s": 2}', "front"));
  assert.equal(timed.map((t) => t.intervalS), [2, 60]);
});

test("applySetCommand: text alone goes to the text tasks, interval alone to all", () => {
  assert.equal(applySetCommand(current, parseSetCommand('{"text": "a dog"}', "front")), [
    { task: "<OD>", text: undefined, intervalS: 0, snapshot: true },
    { task: "<OPEN_VOCABULARY_DETECTION>", text: "a dog", intervalS: 5, snapshot: false },
  ]);
  assert.equal(applySetCommand(current, parseSetCommand('{"interval_s": 30}', "front")).map((t) => t.intervalS), [30, 30]);
  assert.equal(applySetCommand(current, parseSetCommand('{"tasks": []}', "front")), []);
});

test("applySetCommand: text that fits no current task is rejected", () => {
  const none = rejection(() => applySetCommand([current[0]!], parseSetCommand('{"text": "a dog"}', "front")));
  assert.is(none.key, "text");
  assert.is(none.code, "TASK_INPUT_INVALID");
  const region = rejection(() => applySetCommand([{ task: "<REGION_TO_CATEGORY>", text: "<loc_1><loc_2><loc_3><loc_4>", intervalS: 0, snapshot: false }], parseSetCommand('{"text": "a dog"}', "front")));
  assert.is(region.key, "text");
  assert.ok(region.message.includes("four <loc_N>"));
});

// ---- inference requests ----

const inferOptions = { cameras: ["front", "back"], forbiddenResponseFilters: ["florence-edge/#", "homeassistant/#"] };

test("parseInferRequest: per-camera and shared topics", () => {
  assert.equal(parseInferRequest('{"task": "<CAPTION>"}', { ...inferOptions, topicCamera: "front" }), {
    camera: "front",
    task: "<CAPTION>",
    text: undefined,
    responseTopic: undefined,
    correlationId: undefined,
  });
  assert.equal(
    parseInferRequest('{"task": "<OPEN_VOCABULARY_DETECTION>", "text": "a bike", "camera": "back", "response_topic": "clients/7/reply", "correlation_id": "req-1"}', { ...inferOptions, topicCamera: undefined }),
    { camera: "back", task: "<OPEN_VOCABULARY_DETECTION>", text: "a bike", responseTopic: "clients/7/reply", correlationId: "req-1" },
  );
  const ok = { task: "<OPEN_VOCABULARY_DETECTION>", text: "a bike", camera: "back", response_topic: "clients/7/reply", correlation_id: "req-1" };
  assert.equal(schemas.errors("infer_request", ok), []);
});

const badInfers: { name: string; payload: string; topicCamera: string | undefined; key: string; code: string }[] = [
  { name: "no camera on the shared topic", payload: '{"task": "<OD>"}', topicCamera: undefined, key: "camera", code: "INVALID_ARGUMENT" },
  { name: "an unknown camera", payload: '{"task": "<OD>", "camera": "garage"}', topicCamera: undefined, key: "camera", code: "INVALID_ARGUMENT" },
  { name: "a camera other than the topic's", payload: '{"task": "<OD>", "camera": "back"}', topicCamera: "front", key: "camera", code: "INVALID_ARGUMENT" },
  { name: "no task", payload: '{"text": "x"}', topicCamera: "front", key: "task", code: "INVALID_ARGUMENT" },
  { name: "an unknown task", payload: '{"task": "<SEGMENT>"}', topicCamera: "front", key: "task", code: "UNKNOWN_TASK" },
  { name: "text for a task without text", payload: '{"task": "<OD>", "text": "x"}', topicCamera: "front", key: "text", code: "TASK_INPUT_INVALID" },
  { name: "a wildcard reply topic", payload: '{"task": "<OD>", "response_topic": "clients/#"}', topicCamera: "front", key: "response_topic", code: "INVALID_ARGUMENT" },
  { name: "a $SYS reply topic", payload: '{"task": "<OD>", "response_topic": "$SYS/broker"}', topicCamera: "front", key: "response_topic", code: "INVALID_ARGUMENT" },
  { name: "a reply into the service's own topics", payload: '{"task": "<OD>", "response_topic": "florence-edge/front/set"}', topicCamera: "front", key: "response_topic", code: "INVALID_ARGUMENT" },
  { name: "a reply into Home Assistant's discovery", payload: '{"task": "<OD>", "response_topic": "homeassistant/device/x/config"}', topicCamera: "front", key: "response_topic", code: "INVALID_ARGUMENT" },
  { name: "an empty reply topic", payload: '{"task": "<OD>", "response_topic": ""}', topicCamera: "front", key: "response_topic", code: "INVALID_ARGUMENT" },
  { name: "a reply topic with a newline", payload: '{"task": "<OD>", "response_topic": "a\\nb"}', topicCamera: "front", key: "response_topic", code: "TASK_INPUT_INVALID" },
  { name: "a correlation id too long", payload: JSON.stringify({ task: "<OD>", correlation_id: "c".repeat(129) }), topicCamera: "front", key: "correlation_id", code: "INVALID_ARGUMENT" },
  { name: "an unknown key", payload: '{"task": "<OD>", "shell": "ls"}', topicCamera: "front", key: "shell", code: "INVALID_ARGUMENT" },
];

for (const row of badInfers) {
  test(`invalid inference request: ${row.name}`, () => {
    const error = rejection(() => parseInferRequest(row.payload, { ...inferOptions, topicCamera: row.topicCamera }));
    assert.is(error.key, row.key, error.message);
    assert.is(error.code, row.code, error.message);
  });
}

test("topicMatchesFilter follows MQTT's wildcard rules", () => {
  const cases: [string, string, boolean][] = [
    ["sport/tennis/#", "sport/tennis", true],
    ["sport/tennis/#", "sport/tennis/player1/ranking", true],
    ["sport/#", "sport", true],
    ["#", "a/b/c", true],
    ["#", "$SYS/uptime", false],
    ["+/monitor", "$SYS/monitor", false],
    ["$SYS/#", "$SYS/monitor", true],
    ["sport/+", "sport/tennis", true],
    ["sport/+", "sport/tennis/x", false],
    ["sport/+", "sport/", true],
    ["+/+", "/finance", true],
    ["/+", "/finance", true],
    ["+", "/finance", false],
    ["a/b", "a/b", true],
    ["a/b", "a/b/c", false],
  ];
  for (const [filter, topic, expected] of cases) assert.is(topicMatchesFilter(filter, topic), expected, `${filter} vs ${topic}`);
});

test("checkResponseTopic accepts ordinary topics", () => {
  assert.is(checkResponseTopic("clients/42/replies", "responseTopic", ["florence-edge/#"]), "clients/42/replies");
  assert.is(checkResponseTopic("florence-edge-other/x", "responseTopic", ["florence-edge/#"]), "florence-edge-other/x");
});

test.run();
