/**
 * The MQTT publisher's pure parts alone, without a broker: topic names and command routing (mqtt_topics.ts) and
 * the bounded outbox (outbox.ts): drops counted by cause, newest state superseding, control first, the in-flight
 * window, requeue after a lost connection.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Buffer } from "node:buffer";
import { CommandRouter } from "../../src/service/command_router.ts";
import { MqttTopics } from "../../src/service/mqtt_topics.ts";
import { Outbox, outgoingMessage, type OutgoingMessage } from "../../src/service/outbox.ts";

const BROKER = { receiveMaximum: 65_535, maximumQoS: 2 } as const;

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return (error as { code?: string }).code;
  }
  return undefined;
}

test("topics: names under the prefix, checked segments and tasks", () => {
  const topics = new MqttTopics("home/florence");
  assert.is(topics.availability, "home/florence/available");
  assert.is(topics.stats, "home/florence/stats");
  assert.is(topics.result("porch", "<OD>"), "home/florence/porch/od");
  assert.is(topics.snapshot("porch", "<CAPTION>"), "home/florence/porch/caption/snapshot");
  assert.is(topics.status("porch"), "home/florence/porch/status");
  assert.is(topics.setResult("porch"), "home/florence/porch/set/result");
  assert.is(topics.error("porch"), "home/florence/porch/error");
  assert.is(topics.error(undefined), "home/florence/error");
  assert.equal(topics.commandFilters(["a", "b"]), ["home/florence/infer", "home/florence/a/set", "home/florence/a/infer", "home/florence/b/set", "home/florence/b/infer"]);
  assert.is(new MqttTopics().prefix, "florence-edge");
  assert.ok(/^florence-edge-[0-9a-f]{8}$/.test(new MqttTopics().clientId("0123abcd")));
  assert.ok(new MqttTopics("a-very-long/prefix/with/levels").clientId("0123abcd").length <= 23);
  assert.is(code(() => topics.result("../x/#", "<OD>")), "INVALID_ARGUMENT");
  assert.is(code(() => topics.result("porch", "<SEGMENT>")), "UNKNOWN_TASK");
  for (const bad of ["", "a/#", "a/+/b", "/a", "a/", "$SYS"]) assert.is(code(() => new MqttTopics(bad)), "CONFIG_INVALID", bad);
});

test("topics: routing finds set and infer for known cameras only", () => {
  const topics = new MqttTopics("fe");
  const cameras = new Set(["front"]);
  assert.equal(topics.route("fe/front/set", cameras), { command: "set", camera: "front" });
  assert.equal(topics.route("fe/front/infer", cameras), { command: "infer", camera: "front" });
  assert.equal(topics.route("fe/infer", cameras), { command: "infer", camera: undefined });
  for (const other of ["fe/back/set", "fe/front/set/result", "fe/front/od", "other/front/set", "fe", "fe/set"]) assert.is(topics.route(other, cameras), undefined, other);
});

function message(topic: string, bytes: number, qos: 0 | 1 | 2 = 0, key?: string): OutgoingMessage {
  return outgoingMessage(topic, "x".repeat(bytes - topic.length), qos, false, key, undefined);
}

test("outbox: bounded by messages and bytes, the oldest dropped and counted by cause", () => {
  const outbox = new Outbox({ queue: { messages: 3, bytes: 1000 }, inflight: { messages: 10, bytes: 10_000 } });
  for (let i = 0; i < 5; i++) outbox.enqueue(message(`t/${i}`, 100), false);
  assert.is(outbox.queued, 3);
  assert.is(outbox.queuedBytes, 300);
  assert.is(outbox.droppedOffline, 2);
  assert.is(outbox.enqueue(message("t/big", 900), true), 2, "bytes bound: two dropped while connected");
  assert.is(outbox.droppedBackpressure, 2);
  assert.equal([outbox.next(BROKER)?.topic, outbox.next(BROKER)?.topic], ["t/4", "t/big"]);
});

test("outbox: a keyed message supersedes the queued one in place; control goes first", () => {
  const outbox = new Outbox({ queue: { messages: 10, bytes: 10_000 }, inflight: { messages: 10, bytes: 10_000 } });
  outbox.enqueue(message("s/1", 50, 1, "status"), false);
  outbox.enqueue(message("r/1", 50), false);
  outbox.enqueue(outgoingMessage("s/1", "newer", 1, true, "status", undefined), false);
  assert.is(outbox.queued, 2);
  assert.ok(outbox.isQueued("status"));
  outbox.setControl([outgoingMessage("avail", "online", 1, true, undefined, undefined, true)]);
  assert.is(outbox.reliablePending(), 2, "the control message and the status");
  const order = [];
  for (let next = outbox.next(BROKER); next !== undefined; next = outbox.next(BROKER)) order.push(`${next.topic}=${next.payload.toString().slice(0, 6)}`);
  assert.equal(order, ["avail=online", "s/1=newer", `r/1=${"x".repeat(6)}`]);
  assert.ok(outbox.idle);
  assert.not.ok(outbox.isQueued("status"));
});

test("outbox: the in-flight window, and requeue at the front after a lost connection", () => {
  const outbox = new Outbox({ queue: { messages: 10, bytes: 10_000 }, inflight: { messages: 2, bytes: 10_000 } });
  const a = message("a", 10, 1);
  const b = message("b", 10, 0);
  const c = message("c", 10, 1);
  for (const m of [a, b, c]) outbox.enqueue(m, true);
  const ida = outbox.track(outbox.next(BROKER)!, 7, 1);
  outbox.track(outbox.next(BROKER)!, 7, 0);
  assert.is(outbox.next(BROKER), undefined, "the window holds two");
  assert.is(outbox.inFlight, 2);
  assert.ok(outbox.hasRoom(c, BROKER) === false);
  assert.is(outbox.next({ receiveMaximum: 1, maximumQoS: 2 }), undefined);
  outbox.release(ida);
  assert.is(outbox.inFlight, 1);
  outbox.track(a, 7, 1);
  outbox.requeue(7);
  assert.is(outbox.inFlight, 0);
  assert.is(outbox.droppedOffline, 1, "QoS 0 in flight is lost");
  assert.equal([outbox.next(BROKER)?.topic, outbox.next(BROKER)?.topic, outbox.next(BROKER)], ["a", "c", undefined], "QoS 1 goes back first");
  outbox.clear();
  assert.is(outbox.reliablePending(), 0);
});

test("command router: set is applied and acknowledged, infer without a reply topic is rejected, other topics pass", async () => {
  const sent: OutgoingMessage[] = [];
  const router = new CommandRouter({
    topics: new MqttTopics("fe"),
    cameras: ["front"],
    handlers: { setTasks: (c) => (c.tasks ?? []).map((t) => ({ task: t.task, text: undefined, intervalS: t.intervalS ?? 0, snapshot: false })) },
    handlerTimeoutMs: 1000,
    maxPendingInfers: 1,
    forbiddenReplyFilters: ["fe/#"],
    reply: (m) => sent.push(m),
    log: () => undefined,
  });
  const incoming = (topic: string, body: object, retain = false) => ({ topic, payload: Buffer.from(JSON.stringify(body)), retain, responseTopic: undefined, correlationData: undefined, protocol: 4 as const });
  assert.not.ok(router.route(incoming("fe/front/od", {})), "results are no commands");
  assert.ok(router.route(incoming("fe/front/set", { tasks: [{ task: "<OD>" }] })));
  await router.settled(1000);
  assert.is(sent[0]!.topic, "fe/front/set/result");
  assert.is(JSON.parse(sent[0]!.payload.toString()).ok, true);
  assert.ok(router.route(incoming("fe/front/infer", { task: "<OD>" })));
  assert.is(sent[1]!.topic, "fe/front/error");
  assert.is(JSON.parse(sent[1]!.payload.toString()).code, "INVALID_ARGUMENT");
  router.route(incoming("fe/front/set", { tasks: ["<OD>"] }, true));
  assert.match(JSON.parse(sent[2]!.payload.toString()).message, /retained/);
  assert.equal(router.counts, { commands_ok: 1, commands_rejected: 2 });
});

test.run();
