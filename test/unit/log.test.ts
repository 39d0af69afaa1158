import { test } from "uvu";
import * as assert from "uvu/assert";
import { FlorenceError } from "../../src/errors.ts";
import { Logger, createLogger, isSecretKey, maskSecrets } from "../../src/service/log.ts";

interface Line {
  ts: string;
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
  suppressed?: number;
  window_s?: number;
}

function capture(options: ConstructorParameters<typeof Logger>[0] = {}) {
  const raw: string[] = [];
  let clock = Date.UTC(2025, 0, 2, 3, 4, 5, 678);
  const logger = createLogger({ journalPriorityPrefix: false, ...options, write: (line) => raw.push(line), now: () => clock });
  return {
    logger,
    raw,
    lines: () => raw.map((l) => JSON.parse(l) as Line),
    advance: (ms: number) => {
      clock += ms;
    },
  };
}

test("one JSON object per line: ts, level, msg, fields", () => {
  const { logger, raw, lines } = capture();
  logger.info("camera started", { camera: "front", fps: 15 });
  logger.warn("no fields");
  assert.is(raw.length, 2);
  for (const line of raw) {
    assert.ok(line.endsWith("\n"));
    assert.is(line.indexOf("\n"), line.length - 1, "exactly one line each");
  }
  const [a, b] = lines();
  assert.equal(a, { ts: "2025-01-02T03:04:05.678Z", level: "info", msg: "camera started", fields: { camera: "front", fps: 15 } });
  assert.equal(b, { ts: "2025-01-02T03:04:05.678Z", level: "warn", msg: "no fields" });
});

test("level filter drops lower levels", () => {
  const { logger, lines } = capture({ level: "warn" });
  logger.debug("d");
  logger.info("i");
  logger.warn("w");
  logger.error("e");
  logger.log("info", "i2");
  logger.log("error", "e2");
  assert.equal(lines().map((l) => l.msg), ["w", "e", "e2"]);
  assert.ok(logger.enabled("error"));
  assert.not.ok(logger.enabled("info"));
});

test("a bad level names the value", () => {
  try {
    createLogger({ level: "verbose" as never });
    assert.unreachable();
  } catch (error) {
    assert.instance(error, FlorenceError);
    assert.is((error as FlorenceError).code, "INVALID_ARGUMENT");
    assert.match((error as Error).message, /"verbose"/);
  }
});

test("passwords in URLs are masked in messages, fields and errors", () => {
  const { logger, raw, lines } = capture();
  const url = "rtsp://admin:hunter2@10.0.0.5:554/stream1";
  logger.error(`cannot open ${url}`, {
    source: { url, nested: ["mqtts://u:p%40ss@broker:8883", { deeper: "http://cam/snap.jpg?user=a&password=s3cr3t&x=1" }] },
    password: "hunter2",
    mqtt_password: "pw2",
    token: "abc",
    error: new Error(`connect failed for ${url}`),
  });
  logger.warn("unencoded at-sign rtsp://admin:p@ss@cam/stream and a token-only url https://ghp_T0KEN@github.com/x");
  const text = raw.join("");
  for (const secret of ["hunter2", "p%40ss", "s3cr3t", "pw2", "\"abc\"", "p@ss", "ghp_T0KEN"]) assert.not.ok(text.includes(secret), `leaked ${secret}`);
  const [first, second] = lines();
  assert.is(first!.msg, "cannot open rtsp://admin:***@10.0.0.5:554/stream1");
  const fields = first!.fields as Record<string, any>;
  assert.is(fields["source"].url, "rtsp://admin:***@10.0.0.5:554/stream1");
  assert.is(fields["source"].nested[0], "mqtts://u:***@broker:8883");
  assert.is(fields["source"].nested[1].deeper, "http://cam/snap.jpg?user=a&password=***&x=1");
  assert.is(fields["password"], "***");
  assert.is(fields["mqtt_password"], "***");
  assert.is(fields["error"].message, "connect failed for rtsp://admin:***@10.0.0.5:554/stream1");
  assert.not.ok(String(fields["error"].stack).includes("hunter2"));
  assert.is(second!.msg, "unencoded at-sign rtsp://admin:***@cam/stream and a token-only url https://***@github.com/x");
  // secret field names are matched by word, so ordinary counters are not masked
  assert.ok(isSecretKey("hf_token") && isSecretKey("mqttPassword") && isSecretKey("x-api-key") && isSecretKey("private_key") && isSecretKey("Authorization"));
  assert.not.ok(isSecretKey("max_new_tokens") || isSecretKey("frames_passed") || isSecretKey("key") || isSecretKey("tokenizer"));
  // a URL without credentials is left alone
  assert.is(maskSecrets("rtsp://10.0.0.5/stream?channel=1"), "rtsp://10.0.0.5/stream?channel=1");
});

test("FlorenceErrors keep code and fix-bearing message, no stack", () => {
  const { logger, lines } = capture();
  logger.error("task failed", { error: new FlorenceError("UNKNOWN_TASK", "unknown task \"<X>\"", { fix: "use <OD>" }) });
  const error = lines()[0]!.fields!["error"] as Record<string, unknown>;
  assert.is(error["code"], "UNKNOWN_TASK");
  assert.is(error["message"], 'unknown task "<X>" — use <OD>');
  assert.is(error["stack"], undefined);
});

test("odd field values do not break the line", () => {
  const { logger, lines } = capture();
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic["self"] = cyclic;
  logger.info("odd", { cyclic, big: 12345678901234567890n, bytes: new Uint8Array(10), nan: Number.NaN, when: new Date(0), nothing: undefined, fn: () => 1 });
  const fields = lines()[0]!.fields!;
  assert.equal(fields["cyclic"], { a: 1, self: "[circular]" });
  assert.is(fields["big"], "12345678901234567890");
  assert.is(fields["bytes"], "[Uint8Array 10 bytes]");
  assert.is(fields["nan"], "NaN");
  assert.is(fields["when"], "1970-01-01T00:00:00.000Z");
  assert.not.ok("nothing" in fields);
});

test("the same error every frame is written once per window, with the count", () => {
  const { logger, lines, advance } = capture({ repeatWindowMs: 10_000 });
  for (let i = 0; i < 300; i++) {
    logger.error("decode failed", { camera: "front", frame: i });
    advance(33); // 30 fps for 9.9 s
  }
  assert.is(lines().length, 1, "only the first within the window");
  advance(200); // the window has passed
  logger.error("decode failed", { camera: "front", frame: 300 });
  const all = lines();
  assert.is(all.length, 2);
  assert.is(all[1]!.suppressed, 299);
  assert.is(all[1]!.window_s, 10);
  assert.is(all[1]!.fields!["frame"], 300);
});

test("repeats are counted per camera and level; other messages pass", () => {
  const { logger, lines } = capture();
  logger.warn("stalled", { camera: "a" });
  logger.warn("stalled", { camera: "b" });
  logger.error("stalled", { camera: "a" });
  logger.warn("stalled", { camera: "a" });
  logger.info("something else");
  assert.equal(lines().map((l) => `${l.level}:${l.msg}:${l.fields?.["camera"] ?? ""}`), ["warn:stalled:a", "warn:stalled:b", "error:stalled:a", "info:something else:"]);
});

test("held-back counts come out when the window ends (on the next line) or on flush", () => {
  const { logger, lines, advance } = capture({ repeatWindowMs: 1000 });
  logger.error("broker unreachable", { camera: "x" });
  logger.error("broker unreachable", { camera: "x" });
  logger.error("broker unreachable", { camera: "x" });
  advance(1500);
  logger.info("other"); // sweeps expired windows
  let all = lines();
  assert.is(all.length, 3);
  assert.is(all[1]!.msg, "broker unreachable");
  assert.is(all[1]!.suppressed, 2);
  assert.is(all[2]!.msg, "other");

  logger.warn("w");
  logger.warn("w");
  logger.flush();
  all = lines();
  assert.is(all.at(-1)!.msg, "w");
  assert.is(all.at(-1)!.suppressed, 1);
  logger.flush();
  assert.is(lines().length, all.length, "nothing pending after a flush");
});

test("rate-limit memory is bounded; an evicted message reports its count", () => {
  const { logger, lines } = capture({ maxTrackedMessages: 3 });
  logger.error("m0");
  logger.error("m0");
  for (let i = 1; i <= 3; i++) logger.error(`m${i}`);
  const all = lines();
  const evicted = all.find((l) => l.msg === "m0" && l.suppressed === 1);
  assert.ok(evicted, "m0's held-back repeat was reported when it was forgotten");
  logger.error("m0");
  assert.is(lines().at(-1)!.msg, "m0", "a forgotten message is written again");
});

test("repeatWindowMs 0 writes every line", () => {
  const { logger, lines } = capture({ repeatWindowMs: 0 });
  for (let i = 0; i < 5; i++) logger.error("same");
  assert.is(lines().length, 5);
});

test("child loggers add fields and share rate limiting", () => {
  const { logger, lines } = capture();
  const child = logger.child({ component: "mqtt" });
  child.warn("reconnecting", { attempt: 1 });
  logger.child({ component: "mqtt" }).warn("reconnecting", { attempt: 2 });
  assert.equal(lines(), [{ ts: "2025-01-02T03:04:05.678Z", level: "warn", msg: "reconnecting", fields: { component: "mqtt", attempt: 1 } }]);
});

test("journald priority prefixes under systemd", () => {
  const raw: string[] = [];
  const logger = createLogger({ env: { JOURNAL_STREAM: "8:12345" }, write: (l) => raw.push(l), level: "debug" });
  logger.error("e");
  logger.warn("w");
  logger.info("i");
  logger.debug("d");
  assert.equal(raw.map((l) => l.slice(0, 3)), ["<3>", "<4>", "<6>", "<7>"]);
  assert.is(JSON.parse(raw[0]!.slice(3)).msg, "e");
  const plain: string[] = [];
  createLogger({ env: {}, write: (l) => plain.push(l) }).info("x");
  assert.is(plain[0]![0], "{");
});

test.run();
