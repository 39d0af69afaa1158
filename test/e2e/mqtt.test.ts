/**
 * The MQTT side end to end, with real parts only: the embedded aedes broker (MQTT 3.1.1) and a real mosquitto
 * (MQTT 5) spawned per test on a random port, an independent mqtt.js client as the observer, TCP proxies to cut
 * connections abruptly, SIGSTOP for a stalled broker, and the tiny Florence-2 model for a real inference request.
 * Every JSON payload the observer sees is validated against its schema in schemas/. Result payloads are Hugging
 * Face's own post_process_generation outputs from the fixtures' reference data.
 *
 * mosquitto missing: its tests are reported as skipped with a message saying how to install it.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { connect as tcpConnect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { connect, type IClientOptions, type IPublishPacket, type MqttClient } from "mqtt";
import { OnnxRuntimeEngine } from "../../src/engine/onnxruntime/onnxruntime.ts";
import { Florence2 } from "../../src/florence/florence2.ts";
import { TASKS, TASK_TOKENS, type TaskToken } from "../../src/florence/tasks.ts";
import { startBroker, type EmbeddedBroker } from "../../src/service/broker.ts";
import { applySetCommand } from "../../src/service/commands.ts";
import { buildServiceConfig, type TaskSchedule } from "../../src/service/service_config.ts";
import { discoveryUniqueId } from "../../src/service/discovery.ts";
import { CameraLoop } from "../../src/service/loop.ts";
import { MqttPublisher, reconnectDelayMs, type MqttPublisherOptions } from "../../src/service/mqtt.ts";
import { publisherOptionsFromConfig } from "../../src/service/serve_options.ts";
import type { Frame, ResultMessage, SourceStatus } from "../../src/service/types.ts";
import { loadSchemas } from "../support/json_schema.ts";
import { freePort, Mosquitto, MOSQUITTO_PATH } from "../support/mosquitto.ts";
import { REFERENCE, TINY_MODEL, readReference } from "../support/paths.ts";

const schemas = loadSchemas();
const PREFIX = "florence-edge";

// ---- fixtures: HF's own results ----

interface ParseCase {
  task: TaskToken;
  image_size: [number, number];
  expected: Record<string, unknown>;
}
const parseCases = readReference<ParseCase[]>("parse.json");

function resultMessage(camera: string, c: ParseCase, frame: number): ResultMessage {
  return {
    camera,
    task: c.task,
    frame,
    timestamp: new Date(1_760_000_000_000 + frame * 100).toISOString(),
    image_size: { width: c.image_size[0], height: c.image_size[1] },
    result: c.expected,
    latency_ms: { total: 41.5, capture_to_publish: 55.25, vision: 20, decoder: 18.5 },
    model: "tiny-seed0",
  };
}

const odCase = parseCases.find((c) => c.task === "<OD>" && (c.expected["<OD>"] as { bboxes: unknown[] }).bboxes.length > 0)!;
const captionCase = parseCases.find((c) => c.task === "<CAPTION>" && typeof c.expected["<CAPTION>"] === "string" && (c.expected["<CAPTION>"] as string).length > 0)!;

function status(camera: string, state: SourceStatus["state"], framesReceived: number): SourceStatus {
  return { camera, state, restarts: 1, framesReceived, framesDropped: 2, framesCorrupt: 0, lastFrameAt: 1_760_000_000_000 + framesReceived, reason: state === "stalled" ? "no frame for 10 s" : undefined };
}

// ---- bounded tests with cleanup ----

interface Ctx {
  defer(cleanup: () => unknown): void;
}

function within<T>(ms: number, what: string, body: () => Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([body(), timeout]).finally(() => clearTimeout(timer));
}

const MOSQUITTO = MOSQUITTO_PATH;
if (!MOSQUITTO) {
  console.log("\n  SKIP: mosquitto not found on PATH or in /usr/sbin: the MQTT tests against a real mosquitto broker are skipped " +
    "(install it with `apt-get install mosquitto`, or set MOSQUITTO=/path/to/mosquitto)\n");
}

function mqttTest(name: string, body: (ctx: Ctx) => Promise<void>, options: { mosquitto?: boolean; timeoutMs?: number } = {}): void {
  if (options.mosquitto && !MOSQUITTO) {
    test.skip(`${name} [SKIPPED: mosquitto not installed]`, () => undefined);
    return;
  }
  test(name, async () => {
    const cleanups: (() => unknown)[] = [];
    try {
      await within(options.timeoutMs ?? 20_000, name, () => body({ defer: (cleanup) => cleanups.push(cleanup) }));
    } finally {
      for (const cleanup of cleanups.reverse()) {
        await within(5000, `${name}: cleanup`, async () => {
          await cleanup();
        }).catch((error: unknown) => console.error(`  cleanup of "${name}" failed: ${String(error)}`));
      }
    }
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// ---- a TCP proxy: lets a test cut the client's connection abruptly or keep the broker "down" ----

interface Proxy {
  readonly port: number;
  /** Destroys every connection through the proxy at once (no DISCONNECT: the broker sends the Last Will). */
  drop(): void;
  close(): Promise<void>;
}

async function startProxy(targetPort: number, listenPort = 0): Promise<Proxy> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(targetPort, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    const kill = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", kill).on("close", kill);
    upstream.on("error", kill).on("close", kill);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listenPort, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  const drop = () => {
    for (const socket of [...sockets]) socket.destroy();
    sockets.clear();
  };
  return {
    port,
    drop,
    close: () =>
      new Promise<void>((resolve) => {
        drop();
        server.close(() => resolve());
      }),
  };
}

// ---- the observer: an independent mqtt.js client ----

interface Received {
  topic: string;
  payload: Buffer;
  retain: boolean;
  properties: IPublishPacket["properties"];
}

class Observer {
  readonly messages: Received[] = [];
  readonly client: MqttClient;
  readonly #waiters = new Set<() => void>();

  private constructor(client: MqttClient) {
    this.client = client;
    client.on("message", (topic, payload, packet) => {
      this.messages.push({ topic, payload, retain: packet.retain, properties: packet.properties });
      for (const waiter of [...this.#waiters]) waiter();
    });
  }

  static async open(url: string, filters: string[], options: IClientOptions = {}): Promise<Observer> {
    const client = connect(url, { protocolVersion: 4, reconnectPeriod: 100, connectTimeout: 3000, ...options });
    client.on("error", () => undefined);
    const observer = new Observer(client);
    await within(5000, `observer connecting to ${url}`, () => new Promise<void>((resolve) => client.once("connect", () => resolve())));
    if (filters.length > 0) await client.subscribeAsync(Object.fromEntries(filters.map((f) => [f, { qos: 1 as const }])));
    return observer;
  }

  texts(topic: string): string[] {
    return this.messages.filter((m) => m.topic === topic).map((m) => m.payload.toString());
  }

  json<T = Record<string, unknown>>(topic: string): T[] {
    return this.messages.filter((m) => m.topic === topic && m.payload.length > 0).map((m) => JSON.parse(m.payload.toString()) as T);
  }

  waitFor(predicate: (m: Received) => boolean, timeoutMs: number, what: string, from = 0): Promise<Received> {
    return new Promise((resolve, reject) => {
      const check = () => {
        for (let i = from; i < this.messages.length; i++) {
          if (predicate(this.messages[i]!)) {
            done();
            resolve(this.messages[i]!);
            return true;
          }
        }
        return false;
      };
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`observer: no ${what} within ${timeoutMs} ms; saw ${this.messages.slice(-12).map((m) => `${m.topic}=${m.payload.toString().slice(0, 60)}`).join(" | ")}`));
      }, timeoutMs);
      if (!check()) this.#waiters.add(check);
    });
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

// ---- schema check of everything seen ----

const SLUGS: ReadonlySet<string> = new Set<string>(TASK_TOKENS.map((t) => TASKS[t].slug));

/** Validates every payload the observer saw against the schema its topic implies; returns how many were checked. */
function checkPayloads(observer: Observer, replyTopics: readonly string[] = []): number {
  let checked = 0;
  for (const m of observer.messages) {
    const parts = m.topic.split("/");
    const text = m.payload.toString("utf8");
    if (m.topic === `${PREFIX}/available`) {
      assert.ok(["online", "offline", "stopped"].includes(text), `availability ${JSON.stringify(text)}`);
      checked++;
      continue;
    }
    let schema: string | undefined;
    if (replyTopics.includes(m.topic)) schema = JSON.parse(text).ok ? "infer_response" : "command_error";
    else if (parts[0] === "homeassistant" && parts[1] === "device") schema = m.payload.length === 0 ? undefined : "ha_discovery";
    else if (parts[0] !== PREFIX) continue;
    else if (m.topic === `${PREFIX}/stats`) schema = "stats";
    else if (m.topic === `${PREFIX}/error`) schema = "command_error";
    else if (parts.length === 3 && parts[2] === "status") schema = "status";
    else if (parts.length === 3 && parts[2] === "error") schema = "command_error";
    else if (parts.length === 4 && parts[2] === "set" && parts[3] === "result") schema = "command_result";
    else if (parts.length === 3 && SLUGS.has(parts[2]!)) schema = "result";
    if (schema === undefined) continue;
    schemas.assertValid(schema, JSON.parse(text));
    checked++;
  }
  return checked;
}

function publisher(ctx: Ctx, options: Partial<MqttPublisherOptions> & { url: string }, logs?: string[]): MqttPublisher {
  const pub = new MqttPublisher({
    cameras: ["front", "back"],
    reconnectMinMs: 100,
    reconnectMaxMs: 800,
    log: (level, message) => logs?.push(`${level} ${message}`),
    ...options,
  });
  ctx.defer(() => pub.stop(1000));
  return pub;
}

async function aedes(ctx: Ctx, port = 0): Promise<EmbeddedBroker> {
  const broker = await startBroker({ port });
  ctx.defer(() => broker.close());
  return broker;
}

async function observer(ctx: Ctx, url: string, filters: string[], options: IClientOptions = {}): Promise<Observer> {
  const obs = await Observer.open(url, filters, options);
  ctx.defer(() => obs.close());
  return obs;
}

// ======================================================================================================
// aedes (MQTT 3.1.1), in process
// ======================================================================================================

mqttTest("aedes: protocol auto falls back to MQTT 3.1.1; results of every task, snapshot, status and stats arrive on their topics and match their schemas", async (ctx) => {
  const broker = await aedes(ctx);
  const obs = await observer(ctx, broker.url, ["#"]);
  const logs: string[] = [];
  const pub = publisher(ctx, { url: broker.url, qos: { results: 1 } }, logs);
  pub.start();
  assert.ok(await pub.waitOnline(5000), "online");
  const counters = pub.counters();
  assert.is(counters.protocol_version, 4);
  assert.is(counters.request_response, "body-field");
  assert.ok(logs.some((l) => l.includes("does not speak MQTT 5")), "the fallback is logged");
  assert.ok(logs.some((l) => l.startsWith("warn") && l.includes("request/response is unavailable")), "the missing feature is reported");

  parseCases.forEach((c, i) => assert.ok(pub.publishResult(resultMessage("front", c, i))));
  const jpeg = readFileSync(join(REFERENCE, "images", "street.jpg"));
  pub.publishSnapshot("front", "<OD>", jpeg);
  pub.publishStatus(status("front", "running", 10));
  pub.publishStats({ uptime_s: 12, mqtt: pub.counters() });
  assert.ok(await pub.flush(5000), "flushed");
  await obs.waitFor((m) => m.topic === `${PREFIX}/stats`, 3000, "stats");
  // the broker forwards topics independently: wait for all of them, not for the last one sent
  const resultTopics = new Set(parseCases.map((c) => `${PREFIX}/front/${TASKS[c.task].slug}`));
  await until(() => obs.messages.filter((m) => resultTopics.has(m.topic)).length >= parseCases.length, 3000, "every result");

  for (const [i, c] of parseCases.entries()) {
    const topic = `${PREFIX}/front/${TASKS[c.task].slug}`;
    const got = obs.json<ResultMessage>(topic).find((m) => m.frame === i);
    assert.ok(got, `result ${i} on ${topic}`);
    assert.equal(got!.result, c.expected, `HF's result for case ${i} arrives unchanged`);
    assert.is(got!.model, "tiny-seed0");
  }
  const snapshot = obs.messages.find((m) => m.topic === `${PREFIX}/front/od/snapshot`);
  assert.ok(snapshot && Buffer.compare(snapshot.payload, jpeg) === 0, "the snapshot bytes arrive unchanged");
  assert.equal(obs.json(`${PREFIX}/front/status`)[0], { camera: "front", state: "running", restarts: 1, framesReceived: 10, framesDropped: 2, framesCorrupt: 0, lastFrameAt: 1_760_000_000_010 });

  // retained state for whoever subscribes later
  const late = await observer(ctx, broker.url, [`${PREFIX}/available`, `${PREFIX}/front/status`]);
  await late.waitFor((m) => m.topic === `${PREFIX}/available` && m.retain && m.payload.toString() === "online", 3000, "retained online");
  await late.waitFor((m) => m.topic === `${PREFIX}/front/status` && m.retain, 3000, "retained status");

  const checked = checkPayloads(obs);
  assert.ok(checked >= parseCases.length + 3, `validated ${checked} payloads`);
  assert.is(pub.counters().published, parseCases.length + 1 + 3, "results + snapshot + status, stats, online");
});

mqttTest("aedes: Last Will `offline` when the socket dies abruptly, `online` again after the reconnect, `stopped` on a clean shutdown", async (ctx) => {
  const broker = await aedes(ctx);
  const proxy = await startProxy(broker.port);
  ctx.defer(() => proxy.close());
  const obs = await observer(ctx, broker.url, [`${PREFIX}/available`]);
  const pub = publisher(ctx, { url: `mqtt://127.0.0.1:${proxy.port}` });
  pub.start();
  assert.ok(await pub.waitOnline(5000));
  await obs.waitFor((m) => m.payload.toString() === "online", 3000, "online");

  const mark = obs.messages.length;
  proxy.drop();
  await obs.waitFor((m) => m.payload.toString() === "offline", 5000, "the Last Will", mark);
  await obs.waitFor((m) => m.payload.toString() === "online", 5000, "online after the reconnect", mark);
  assert.is(pub.counters().reconnects, 1);
  assert.is(pub.counters().disconnects, 1);

  const beforeStop = obs.messages.length;
  await pub.stop(3000);
  await obs.waitFor((m) => m.payload.toString() === "stopped", 3000, "stopped", beforeStop);
  await sleep(300);
  assert.equal(obs.texts(`${PREFIX}/available`).slice(-1), ["stopped"], "no Last Will after a clean disconnect");
  const late = await observer(ctx, broker.url, [`${PREFIX}/available`]);
  const retained = await late.waitFor((m) => m.retain, 3000, "retained availability");
  assert.is(retained.payload.toString(), "stopped");
  assert.is(pub.state, "stopped");
  assert.is(pub.publishResult(resultMessage("front", odCase, 1)), false, "a stopped publisher takes nothing");
});

mqttTest("aedes: malformed and hostile commands are answered on …/error and change nothing; a good one is applied and acknowledged; the service carries on", async (ctx) => {
  const broker = await aedes(ctx);
  const obs = await observer(ctx, broker.url, ["#"]);
  let schedule: TaskSchedule[] = [{ task: "<OD>", text: undefined, intervalS: 0, snapshot: true }];
  const applied: unknown[] = [];
  const pub = publisher(ctx, {
    url: broker.url,
    handlers: {
      setTasks(command) {
        applied.push(command);
        schedule = applySetCommand(schedule, command);
        return schedule;
      },
      infer: async (request) => ({ ...resultMessage(request.camera, captionCase, 99), task: request.task }),
    },
  });
  // a command left retained on the broker must not run on every (re)connect
  const sender = await observer(ctx, broker.url, []);
  await sender.client.publishAsync(`${PREFIX}/front/set`, '{"tasks": ["<CAPTION>"]}', { qos: 1, retain: true });
  pub.start();
  assert.ok(await pub.waitOnline(5000));
  await obs.waitFor((m) => m.topic === `${PREFIX}/available`, 3000, "online");
  const retained = JSON.parse((await obs.waitFor((m) => m.topic === `${PREFIX}/front/error`, 3000, "the retained command's refusal")).payload.toString());
  assert.ok(retained.message.includes("retained"), retained.message);
  // clearing it (an empty retained message) is no command at all
  await sender.client.publishAsync(`${PREFIX}/front/set`, "", { qos: 1, retain: true });
  const send = (payload: string | Buffer) => sender.client.publishAsync(`${PREFIX}/front/set`, payload, { qos: 1 });

  const hostile: { payload: string | Buffer; code: string; key: string }[] = [
    { payload: "{not json", code: "INVALID_ARGUMENT", key: "$" },
    { payload: JSON.stringify({ tasks: ["<OD>"], pad: "x".repeat(20_000) }), code: "INVALID_ARGUMENT", key: "$" },
    { payload: '{"tasks": ["<MAKE_COFFEE>"]}', code: "UNKNOWN_TASK", key: "tasks[0]" },
    { payload: '{"tasks": [{"task": "<OPEN_VOCABULARY_DETECTION>", "text": "a\\u0000b\\u001b[2J"}]}', code: "TASK_INPUT_INVALID", key: "tasks[0].text" },
    { payload: Buffer.from([0x7b, 0x22, 0x74, 0x65, 0x78, 0x74, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d]), code: "INVALID_UTF8", key: "$" },
    { payload: '{"__proto__": {"polluted": true}, "tasks": ["<OD>"]}', code: "INVALID_ARGUMENT", key: "__proto__" },
    { payload: '{"tasks": [{"task": "<OD>", "constructor": {"prototype": {"polluted": true}}}]}', code: "INVALID_ARGUMENT", key: "tasks[0].constructor" },
    { payload: '{"tasks": ["<OD>"], "exec": "reboot"}', code: "INVALID_ARGUMENT", key: "exec" },
    { payload: '{"interval_s": -5}', code: "INVALID_ARGUMENT", key: "interval_s" },
  ];
  for (const [i, row] of hostile.entries()) {
    const mark = obs.messages.length;
    await send(row.payload);
    const answer = await obs.waitFor((m) => m.topic === `${PREFIX}/front/error`, 3000, `the error for hostile command ${i}`, mark);
    const body = JSON.parse(answer.payload.toString()) as { code: string; key: string; message: string; ok: boolean; camera: string };
    assert.is(body.code, row.code, `command ${i}: ${body.message}`);
    assert.is(body.key, row.key, `command ${i}: ${body.message}`);
    assert.is(body.ok, false);
    assert.is(body.camera, "front");
  }
  assert.is(applied.length, 0, "nothing reached the service");
  assert.equal(schedule, [{ task: "<OD>", text: undefined, intervalS: 0, snapshot: true }], "the schedule is unchanged");
  assert.is(({} as Record<string, unknown>)["polluted"], undefined, "no prototype pollution");

  const mark = obs.messages.length;
  await send('{"tasks": ["<OD>", {"task": "<OPEN_VOCABULARY_DETECTION>", "text": "a bicycle"}], "interval_s": 2}');
  const ack = await obs.waitFor((m) => m.topic === `${PREFIX}/front/set/result`, 3000, "the acknowledgement", mark);
  assert.equal(JSON.parse(ack.payload.toString()).tasks, [
    { task: "<OD>", interval_s: 2, snapshot: true },
    { task: "<OPEN_VOCABULARY_DETECTION>", text: "a bicycle", interval_s: 2, snapshot: false },
  ]);
  assert.is(applied.length, 1);

  // one-off inference on MQTT 3.1.1: the reply topic travels in the body
  const replyMark = obs.messages.length;
  await sender.client.publishAsync(`${PREFIX}/front/infer`, JSON.stringify({ task: "<CAPTION>", response_topic: "clients/7/reply", correlation_id: "q-1" }), { qos: 1 });
  const reply = JSON.parse((await obs.waitFor((m) => m.topic === "clients/7/reply", 3000, "the infer reply", replyMark)).payload.toString());
  assert.is(reply.ok, true);
  assert.is(reply.correlation_id, "q-1");
  assert.equal(reply.result.result, captionCase.expected);
  const noReply = obs.messages.length;
  await sender.client.publishAsync(`${PREFIX}/front/infer`, '{"task": "<CAPTION>"}', { qos: 1 });
  const missing = JSON.parse((await obs.waitFor((m) => m.topic === `${PREFIX}/front/error`, 3000, "the missing-reply-topic error", noReply)).payload.toString());
  assert.is(missing.key, "$");
  assert.ok(missing.message.includes("response_topic"), missing.message);
  const loop = obs.messages.length;
  await sender.client.publishAsync(`${PREFIX}/infer`, JSON.stringify({ task: "<OD>", camera: "back", response_topic: `${PREFIX}/back/infer` }), { qos: 1 });
  const refused = JSON.parse((await obs.waitFor((m) => m.topic === `${PREFIX}/back/error`, 3000, "the reply-loop refusal", loop)).payload.toString());
  assert.is(refused.key, "response_topic");

  // the service carries on
  const resultMark = obs.messages.length;
  pub.publishResult(resultMessage("front", odCase, 500));
  await obs.waitFor((m) => m.topic === `${PREFIX}/front/od`, 3000, "a result after the attack", resultMark);
  const counters = pub.counters();
  assert.is(counters.commands_rejected, 1 + hostile.length + 2, "the retained one, the hostile ones, two bad infer requests");
  assert.is(counters.commands_ok, 2);
  assert.is(pub.state, "online");
  checkPayloads(obs, ["clients/7/reply"]);
});

/** Evaluates the `value_json…` paths of a discovery template (the subset we write) against a payload. */
function templatePath(template: string, payload: unknown): unknown {
  const match = /^\{\{ value_json((?:\.[A-Za-z_]+|\['[^']+'\])+)(\[:(\d+)\])?( \| length)? \}\}$/.exec(template);
  if (!match) throw new Error(`unexpected template ${template}`);
  let value: unknown = payload;
  for (const step of match[1]!.matchAll(/\.([A-Za-z_]+)|\['([^']+)'\]/g)) {
    value = (value as Record<string, unknown>)[step[1] ?? step[2]!];
    if (value === undefined) throw new Error(`${template}: ${step[0]} is missing in ${JSON.stringify(payload).slice(0, 200)}`);
  }
  if (match[3] !== undefined) value = (value as string).slice(0, Number(match[3]));
  if (match[4] !== undefined) value = (value as unknown[]).length;
  return value;
}

mqttTest("aedes: Home Assistant device discovery — retained, wired to the result topics and availability, stable ids, refreshed on HA's birth, removable", async (ctx) => {
  const broker = await aedes(ctx);
  const obs = await observer(ctx, broker.url, ["#"]);
  const first = publisher(ctx, { url: broker.url, discovery: { enabled: true, swVersion: "0.1.0", model: "tiny-seed0" } });
  first.start();
  assert.ok(await first.waitOnline(5000));
  const topics = ["front", "back"].map((camera) => `homeassistant/device/florence-edge_${camera}/config`);
  const configs = await Promise.all(topics.map((t) => obs.waitFor((m) => m.topic === t, 3000, t)));
  const late = await observer(ctx, broker.url, ["homeassistant/device/+/config"]);
  await until(() => late.messages.filter((m) => m.retain).length === 2, 3000, "both configs retained");

  const uniqueIds = new Set<string>();
  for (const [i, camera] of ["front", "back"].entries()) {
    const config = JSON.parse(configs[i]!.payload.toString());
    schemas.assertValid("ha_discovery", config);
    assert.equal(config.device.identifiers, [`florence-edge_${camera}`]);
    assert.equal(config.availability, [{ topic: `${PREFIX}/available`, value_template: "{{ 'online' if value == 'online' else 'offline' }}" }]);
    assert.is(config.origin.name, "florence-edge");
    const { caption, object_count: objects, status: state } = config.components;
    assert.is(caption.state_topic, first.resultTopic(camera, "<CAPTION>"));
    assert.is(objects.state_topic, first.resultTopic(camera, "<OD>"));
    assert.is(state.state_topic, `${PREFIX}/${camera}/status`);
    assert.is(caption.unique_id, discoveryUniqueId({ discoveryPrefix: "homeassistant", topicPrefix: PREFIX }, camera, "caption"));
    for (const c of [caption, objects, state]) uniqueIds.add(c.unique_id);

    // the templates read real payloads: HF's caption, HF's boxes, the status
    const cap = resultMessage(camera, captionCase, 1);
    assert.is(templatePath(caption.value_template, cap), (captionCase.expected["<CAPTION>"] as string).slice(0, 255));
    assert.is(templatePath(objects.value_template, resultMessage(camera, odCase, 1)), (odCase.expected["<OD>"] as { bboxes: unknown[] }).bboxes.length);
    assert.is(templatePath(state.value_template, status(camera, "stalled", 3)), "stalled");
    assert.ok(state.options.includes("stalled"));
    for (const attributes of [caption.json_attributes_template, objects.json_attributes_template]) {
      for (const path of attributes.matchAll(/value_json(?:\.[A-Za-z_]+|\['[^']+'\])+/g)) templatePath(`{{ ${path[0]} }}`, path[0].includes("<OD>") ? resultMessage(camera, odCase, 1) : cap);
    }
  }
  assert.is(uniqueIds.size, 6, "unique ids are unique");

  // a restart (new client id, new process state) publishes the same configs
  await first.stop(2000);
  const mark = obs.messages.length;
  const second = publisher(ctx, { url: broker.url, discovery: { enabled: true, swVersion: "0.1.0", model: "tiny-seed0" } });
  second.start();
  assert.ok(await second.waitOnline(5000));
  for (const [i, topic] of topics.entries()) {
    const again = await obs.waitFor((m) => m.topic === topic, 3000, `${topic} after the restart`, mark);
    assert.is(again.payload.toString(), configs[i]!.payload.toString(), "identical config after a restart");
  }

  // Home Assistant restarted: its birth message asks for the configs again
  const birth = obs.messages.length;
  await obs.client.publishAsync("homeassistant/status", "online", { qos: 1 });
  await Promise.all(topics.map((t) => obs.waitFor((m) => m.topic === t, 3000, `${t} after HA's birth`, birth)));

  // removal: empty retained payloads
  const removal = obs.messages.length;
  second.removeDiscovery();
  await Promise.all(topics.map((t) => obs.waitFor((m) => m.topic === t && m.payload.length === 0, 3000, `${t} removal`, removal)));
  const afterRemoval = await observer(ctx, broker.url, ["homeassistant/device/+/config"]);
  await sleep(300);
  assert.is(afterRemoval.messages.length, 0, "no retained config is left");
  checkPayloads(obs);
});

mqttTest("aedes: while the broker is unreachable the queue keeps the newest N messages, counts the dropped oldest, and drains them in order", async (ctx) => {
  const broker = await aedes(ctx);
  const obs = await observer(ctx, broker.url, [`${PREFIX}/front/#`]);
  const port = await freePort();
  const pub = publisher(ctx, { url: `mqtt://127.0.0.1:${port}`, qos: { results: 1 }, offlineQueue: { maxMessages: 10 } });
  pub.start();
  for (let frame = 0; frame < 50; frame++) pub.publishResult(resultMessage("front", odCase, frame));
  await sleep(400);
  let counters = pub.counters();
  assert.is(counters.state, "offline");
  assert.is(counters.dropped_offline, 40);
  assert.is(counters.queued, 10);
  assert.ok(counters.connect_attempts >= 2, `kept retrying (${counters.connect_attempts} attempts)`);
  assert.is(await pub.flush(200), false, "flush gives up at its timeout while offline");

  const proxy = await startProxy(broker.port, port);
  ctx.defer(() => proxy.close());
  assert.ok(await pub.waitOnline(5000), "connects once the broker is reachable");
  assert.ok(await pub.flush(5000));
  await until(() => obs.json(`${PREFIX}/front/od`).length >= 10, 3000, "ten results");
  assert.equal(obs.json<ResultMessage>(`${PREFIX}/front/od`).map((m) => m.frame), [40, 41, 42, 43, 44, 45, 46, 47, 48, 49], "the newest ten, in order");
  counters = pub.counters();
  assert.is(counters.published, 11, "ten results and online");
  assert.is(counters.queued, 0);

  // the byte bound: ~1 KiB messages into a 4 KiB queue
  const small = publisher(ctx, { url: `mqtt://127.0.0.1:${await freePort()}`, offlineQueue: { maxMessages: 1000, maxBytes: 4096 } });
  small.start();
  for (let frame = 0; frame < 20; frame++) small.publishResult({ ...resultMessage("front", captionCase, frame), text_input: "x".repeat(500) });
  const bounded = small.counters();
  assert.ok(bounded.queued_bytes <= 4096, `queued ${bounded.queued_bytes} bytes`);
  assert.is(bounded.queued + bounded.dropped_offline, 20);
  assert.ok(bounded.queued >= 2 && bounded.queued <= 6, `${bounded.queued} messages of ~1 KiB fit in 4 KiB`);
  checkPayloads(obs);
});

mqttTest("the service config's mqtt section maps onto a working publisher (defaults: QoS 0 results, retained QoS 1 status, discovery on)", async (ctx) => {
  const broker = await aedes(ctx);
  const config = buildServiceConfig({ mqtt: { topic_prefix: "home/florence", offline_queue: { max_messages: 5 } }, cameras: [{ name: "porch", source: REFERENCE }] }, {}, {}, "test");
  const obs = await observer(ctx, broker.url, ["#"]);
  const pub = new MqttPublisher(publisherOptionsFromConfig(config.mqtt, { url: broker.url, cameras: config.cameras.map((c) => c.name), swVersion: "0.1.0" }));
  ctx.defer(() => pub.stop(1000));
  pub.start();
  assert.ok(await pub.waitOnline(5000));
  pub.publishResult(resultMessage("porch", odCase, 3));
  pub.publishStatus(status("porch", "running", 3));
  await obs.waitFor((m) => m.topic === "home/florence/porch/od", 3000, "the result under the configured prefix");
  await obs.waitFor((m) => m.topic === "homeassistant/device/home_florence_porch/config", 3000, "discovery");
  const late = await observer(ctx, broker.url, ["home/florence/porch/status"]);
  await late.waitFor((m) => m.retain, 3000, "the retained status");
});

mqttTest("the publisher refuses bad configuration and bad input with named errors", async () => {
  const error = (fn: () => unknown): { code: string; message: string } => {
    try {
      fn();
    } catch (e) {
      return e as { code: string; message: string };
    }
    throw new Error("expected an error");
  };
  const bad = error(() => new MqttPublisher({ url: "http://user:hunter2@broker:1883", cameras: ["front"] }));
  assert.is(bad.code, "CONFIG_INVALID");
  assert.ok(!bad.message.includes("hunter2"), "the password is masked");
  assert.is(error(() => new MqttPublisher({ url: "mqtt://broker", cameras: ["a/b"] })).code, "CONFIG_INVALID");
  assert.is(error(() => new MqttPublisher({ url: "mqtt://broker", cameras: ["front"], topicPrefix: "a/#" })).code, "CONFIG_INVALID");
  assert.is(error(() => new MqttPublisher({ url: "mqtt://broker", cameras: ["front"], qos: { results: 3 as 0 } })).code, "CONFIG_INVALID");
  const pub = new MqttPublisher({ url: "mqtt://127.0.0.1:1", cameras: ["front"] });
  assert.is(error(() => pub.publishResult({ ...resultMessage("front", odCase, 1), camera: "../x/#" })).code, "INVALID_ARGUMENT");
  assert.is(error(() => pub.publishResult({ ...resultMessage("front", odCase, 1), task: "<SEGMENT>" })).code, "UNKNOWN_TASK");
  await pub.stop(100);
});

mqttTest("reconnect backoff doubles from the minimum up to the ceiling, with jitter below the nominal delay", async () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const nominal = Math.min(60_000, 1000 * 2 ** attempt);
    assert.is(reconnectDelayMs(attempt, 1000, 60_000, () => 1), nominal);
    const low = reconnectDelayMs(attempt, 1000, 60_000, () => 0);
    assert.is(low, Math.max(1000, Math.round(nominal * 0.75)));
  }
  assert.is(reconnectDelayMs(1000, 1000, 60_000, () => 1), 60_000, "huge attempt counts stay at the ceiling");
});

// ======================================================================================================
// mosquitto (MQTT 5)
// ======================================================================================================

mqttTest("mosquitto: broker down at start — the client keeps retrying with growing delays, then connects with MQTT 5", async (ctx) => {
  const port = await freePort();
  const logs: string[] = [];
  const pub = publisher(ctx, { url: `mqtt://127.0.0.1:${port}`, reconnectMinMs: 100, reconnectMaxMs: 800 }, logs);
  pub.start();
  const retryDelays = () => logs.map((l) => /reconnecting in (\d+) ms/.exec(l)?.[1]).filter((d): d is string => d !== undefined).map(Number);
  await until(() => retryDelays().length >= 5, 8000, "five retries");
  const delays = retryDelays();
  for (const [i, delay] of delays.entries()) {
    const nominal = Math.min(800, 100 * 2 ** i);
    assert.ok(delay >= Math.max(100, nominal * 0.75) - 1 && delay <= nominal, `delay ${i} = ${delay} ms, nominal ${nominal}`);
  }
  assert.is(pub.state, "offline");
  assert.ok(pub.counters().next_retry_ms !== null);

  const broker = await Mosquitto.start(port);
  ctx.defer(() => broker.dispose());
  assert.ok(await pub.waitOnline(5000), `connects once mosquitto runs:\n${broker.output}`);
  assert.is(pub.counters().protocol_version, 5);
  assert.is(pub.counters().request_response, "mqtt5");
  const late = await observer(ctx, broker.url, [`${PREFIX}/available`], { protocolVersion: 5 });
  assert.is((await late.waitFor((m) => m.retain, 3000, "retained online")).payload.toString(), "online");
}, { mosquitto: true });

mqttTest("mosquitto: MQTT 5 request/response runs the real tiny Florence-2 on the camera's newest frame and echoes the correlation data", async (ctx) => {
  const broker = await Mosquitto.start(await freePort());
  ctx.defer(() => broker.dispose());
  const engine = new OnnxRuntimeEngine();
  const model = await Florence2.load(TINY_MODEL, { engine });
  ctx.defer(async () => {
    await model.dispose();
    await engine.dispose();
  });
  const jpeg = new Uint8Array(readFileSync(join(REFERENCE, "images", "street.jpg")));
  const frame: Frame = { camera: "front", seq: 7, capturedAt: Date.now(), capturedMono: performance.now(), format: "jpeg", width: 640, height: 480, data: jpeg };
  const loop = new CameraLoop({
    model,
    cameras: [{ name: "front", slot: { take: () => frame }, tasks: [] }, { name: "back", slot: { take: () => undefined }, tasks: [] }],
    events: { result: () => undefined, error: () => undefined, processed: () => undefined },
    generate: { numBeams: 1, maxNewTokens: 24, postprocess: { coordinates: "int" } },
    waitForFrame: (signal) => new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true })),
  });
  loop.start();
  ctx.defer(() => loop.stop());
  const pub = publisher(ctx, { url: broker.url, handlers: { infer: (request) => loop.request(request) } });
  pub.start();
  assert.ok(await pub.waitOnline(5000));
  assert.is(pub.counters().protocol_version, 5);

  const requester = await observer(ctx, broker.url, ["clients/req/#"], { protocolVersion: 5 });
  const correlationData = Buffer.from([0, 1, 2, 0xfe, 0xff]);
  await requester.client.publishAsync(`${PREFIX}/front/infer`, '{"task": "<CAPTION>"}', { qos: 1, properties: { responseTopic: "clients/req/1", correlationData } });
  const reply = await requester.waitFor((m) => m.topic === "clients/req/1", 15_000, "the inference reply");
  assert.ok(reply.properties?.correlationData && Buffer.compare(reply.properties.correlationData, correlationData) === 0, "correlation data echoed byte for byte");
  assert.is(reply.properties?.contentType, "application/json");
  const body = JSON.parse(reply.payload.toString());
  schemas.assertValid("infer_response", body);
  const hf = readReference<{ id: string; result: Record<string, unknown>[] }[]>("generate_pil.json").find((c) => c.id === "street.jpg|<CAPTION>|greedy")!;
  assert.equal(body.result.result, hf.result[0], "the reply carries HF's answer for this image and task");
  assert.is(body.result.frame, 7);
  assert.is(body.result.camera, "front");
  assert.is(body.result.model, model.files.id);

  // the shared topic with a camera field; a camera without frames; a bad request — all answered on the reply topic
  await requester.client.publishAsync(`${PREFIX}/infer`, '{"task": "<OD>", "camera": "front"}', { qos: 1, properties: { responseTopic: "clients/req/2", correlationData: Buffer.from("two") } });
  const od = JSON.parse((await requester.waitFor((m) => m.topic === "clients/req/2", 15_000, "the shared-topic reply")).payload.toString());
  const hfOd = readReference<{ id: string; result: Record<string, unknown>[] }[]>("generate_pil.json").find((c) => c.id === "street.jpg|<OD>|greedy")!;
  assert.equal(od.result.result, hfOd.result[0]);
  await requester.client.publishAsync(`${PREFIX}/back/infer`, '{"task": "<OD>"}', { qos: 1, properties: { responseTopic: "clients/req/3", correlationData: Buffer.from("three") } });
  const noFrame = await requester.waitFor((m) => m.topic === "clients/req/3", 5000, "the no-frame error");
  assert.is(JSON.parse(noFrame.payload.toString()).ok, false);
  assert.is(noFrame.properties?.correlationData?.toString(), "three");
  await requester.client.publishAsync(`${PREFIX}/front/infer`, '{"task": "<OD>", "text": "\\u0007"}', { qos: 1, properties: { responseTopic: "clients/req/4", correlationData: Buffer.from("four") } });
  const badReply = await requester.waitFor((m) => m.topic === "clients/req/4", 5000, "the bad-request error");
  const bad = JSON.parse(badReply.payload.toString());
  schemas.assertValid("command_error", bad);
  assert.is(bad.key, "text");
  assert.is(badReply.properties?.correlationData?.toString(), "four");
  checkPayloads(requester, ["clients/req/1", "clients/req/2", "clients/req/3", "clients/req/4"]);
}, { mosquitto: true, timeoutMs: 60_000 });

mqttTest("mosquitto: broker restart mid-stream — `online` is republished, queued results are delivered, the stream resumes", async (ctx) => {
  const port = await freePort();
  const broker = await Mosquitto.start(port, { persistence: true });
  ctx.defer(() => broker.dispose());
  // a persistent session: mosquitto keeps the observer's subscription and its messages across the restart
  const obs = await observer(ctx, broker.url, [`${PREFIX}/#`], { protocolVersion: 5, clean: false, clientId: `observer-${port}`, properties: { sessionExpiryInterval: 300 } });
  const pub = publisher(ctx, { url: broker.url, qos: { results: 1 }, reconnectMinMs: 200, reconnectMaxMs: 1000 });
  pub.start();
  assert.ok(await pub.waitOnline(5000));
  let frame = 0;
  const stream = setInterval(() => pub.publishResult(resultMessage("front", odCase, frame++)), 20);
  ctx.defer(() => clearInterval(stream));
  await until(() => obs.json(`${PREFIX}/front/od`).length >= 10, 5000, "ten results before the restart");

  const onlineBefore = obs.texts(`${PREFIX}/available`).filter((t) => t === "online").length;
  await broker.stop();
  await until(() => pub.state === "offline", 5000, "the publisher noticing");
  const framesAtStop = frame;
  await sleep(600);
  assert.ok(frame > framesAtStop + 10, "results kept coming while the broker was down");
  assert.ok(pub.counters().queued > 0, "and were queued");
  await broker.start();
  assert.ok(await pub.waitOnline(5000), `reconnects to the restarted broker:\n${broker.output.slice(-2000)}`);
  await until(() => obs.texts(`${PREFIX}/available`).filter((t) => t === "online").length > onlineBefore, 5000, "online republished");
  const resumedAt = frame;
  await until(() => obs.json<ResultMessage>(`${PREFIX}/front/od`).some((m) => m.frame > resumedAt + 5), 5000, "new results after the restart");
  clearInterval(stream);
  assert.ok(await pub.flush(5000));
  await sleep(300);

  const frames = obs.json<ResultMessage>(`${PREFIX}/front/od`).map((m) => m.frame);
  const seen = new Set(frames);
  const missing = Array.from({ length: frame }, (_, i) => i).filter((i) => !seen.has(i));
  assert.equal(missing, [], "every result arrived (QoS 1, queued while down)");
  const firsts = frames.filter((f, i) => frames.indexOf(f) === i);
  assert.equal(firsts, [...firsts].sort((a, b) => a - b), "in order");
  assert.is(pub.counters().dropped_offline, 0);
  assert.ok(pub.counters().reconnects >= 1);
  checkPayloads(obs);
}, { mosquitto: true, timeoutMs: 30_000 });

mqttTest("mosquitto: Last Will on abrupt loss, `stopped` on a clean shutdown", async (ctx) => {
  const broker = await Mosquitto.start(await freePort());
  ctx.defer(() => broker.dispose());
  const proxy = await startProxy(broker.port);
  ctx.defer(() => proxy.close());
  const obs = await observer(ctx, broker.url, [`${PREFIX}/available`], { protocolVersion: 5 });
  const pub = publisher(ctx, { url: `mqtt://127.0.0.1:${proxy.port}` });
  pub.start();
  assert.ok(await pub.waitOnline(5000));
  assert.is(pub.protocolVersion, 5);
  await obs.waitFor((m) => m.payload.toString() === "online", 3000, "online");
  const mark = obs.messages.length;
  proxy.drop();
  await obs.waitFor((m) => m.payload.toString() === "offline", 5000, "the Last Will", mark);
  await obs.waitFor((m) => m.payload.toString() === "online", 5000, "online again", mark);
  const beforeStop = obs.messages.length;
  await pub.stop(3000);
  await obs.waitFor((m) => m.payload.toString() === "stopped", 3000, "stopped", beforeStop);
  await sleep(300);
  assert.equal(obs.texts(`${PREFIX}/available`).slice(-1), ["stopped"], "no Last Will after a clean disconnect");
}, { mosquitto: true });

mqttTest("mosquitto: a stalled broker (SIGSTOP) — in-flight stays within the broker's receive maximum, the queue within its bound, and everything left drains in order after SIGCONT", async (ctx) => {
  const broker = await Mosquitto.start(await freePort());
  ctx.defer(() => broker.dispose());
  const obs = await observer(ctx, broker.url, [`${PREFIX}/front/od`], { protocolVersion: 5 });
  const pub = publisher(ctx, { url: broker.url, qos: { results: 1 }, keepaliveS: 60, inflight: { maxMessages: 100 }, offlineQueue: { maxMessages: 50 } });
  pub.start();
  assert.ok(await pub.waitOnline(5000));
  assert.ok(await pub.flush(2000));

  broker.pause();
  ctx.defer(() => broker.resume());
  let maxInFlight = 0;
  let maxQueued = 0;
  for (let frame = 0; frame < 400; frame++) {
    pub.publishResult({ ...resultMessage("front", odCase, frame), text_input: "y".repeat(400) });
    const c = pub.counters();
    maxInFlight = Math.max(maxInFlight, c.in_flight);
    maxQueued = Math.max(maxQueued, c.queued);
    if (frame % 50 === 0) await sleep(20);
  }
  await sleep(300);
  const stalled = pub.counters();
  assert.is(stalled.state, "online", "a stalled broker is not a lost connection (yet)");
  assert.ok(maxInFlight <= 20, `in flight ≤ mosquitto's receive maximum of 20 (max seen ${maxInFlight})`);
  assert.ok(maxQueued <= 50, `queued ≤ 50 (max seen ${maxQueued})`);
  assert.ok(stalled.dropped_backpressure >= 400 - 50 - 20, `dropped ${stalled.dropped_backpressure} oldest`);
  assert.is(stalled.dropped_offline, 0);

  broker.resume();
  assert.ok(await pub.flush(10_000), "drains after the broker resumes");
  const delivered = stalled.in_flight + stalled.queued;
  await until(() => obs.json(`${PREFIX}/front/od`).length >= delivered, 5000, `${delivered} results`);
  const frames = obs.json<ResultMessage>(`${PREFIX}/front/od`).map((m) => m.frame);
  assert.equal(frames, [...frames].sort((a, b) => a - b), "in order");
  assert.equal(frames.slice(-stalled.queued), Array.from({ length: stalled.queued }, (_, i) => 400 - stalled.queued + i), "the newest were kept");
  assert.is(pub.counters().published + pub.counters().dropped_backpressure, 400 + 1, "every result is either published or counted as dropped (+ online)");
}, { mosquitto: true, timeoutMs: 30_000 });

test.run();
