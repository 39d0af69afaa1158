/**
 * The service's MQTT publisher: publishes results, snapshots, camera status and stats; announces availability and
 * Home Assistant discovery; hands commands to the command router. It joins parts that each stand alone:
 *   mqtt_topics.ts     topic names (pure)
 *   outbox.ts          the bounded queue and in-flight window (pure)
 *   mqtt_link.ts       the connection: the only module that imports `mqtt`
 *   command_router.ts  what `set` and `infer` commands mean
 *   discovery.ts       Home Assistant discovery messages (pure)
 *
 * Availability: `<prefix>/available` is `online` (retained, QoS 1) on every connect, the Last Will `offline`, and
 * `stopped` on a clean shutdown. Delivery: every outgoing message goes through the outbox, so memory stays bounded
 * whether the broker is gone or merely slow; QoS ≥ 1 messages in flight when a connection drops are queued again at
 * the front (at-least-once), and reconnects back off exponentially (1 s doubling to 60 s, with jitter).
 */
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { FlorenceError, describeValue } from "../errors.ts";
import { readChoice, readNumber } from "../validate.ts";
import { CommandRouter, withTimeout, type MqttCommandHandlers } from "./command_router.ts";
import { cameraDiscovery, type DiscoveryOptions, type EventEntities, removeCameraDiscovery } from "./discovery.ts";
import { MqttLink, type IncomingMessage, type LinkSession, type LogLevel, type MqttLinkState, type MqttProtocolChoice, type PublishOutcome } from "./mqtt_link.ts";
import { checkCameraSegment, MqttTopics } from "./mqtt_topics.ts";
import { Outbox, outgoingMessage, type OutgoingMessage, type QoS } from "./outbox.ts";
import { maskUrl } from "./redact.ts";
import type { ResultMessage, SourceStatus } from "./types.ts";

export type { CommandErrorMessage, MqttCommandHandlers } from "./command_router.ts";
export type { LogLevel, MqttLinkState, MqttProtocolChoice } from "./mqtt_link.ts";
export type { QoS } from "./outbox.ts";
export { jitteredBackoffDelay as reconnectDelayMs } from "./backoff.ts";

export interface MqttPublisherOptions {
  /** mqtt://, mqtts://, ws://, wss:// (tcp:// and ssl:// too). */
  url: string;
  /** Camera names: topic segments, and the cameras commands may address. */
  cameras: readonly string[];
  topicPrefix?: string;
  clientId?: string;
  username?: string;
  password?: string | Uint8Array;
  /** PEM contents (the caller reads the files). */
  tls?: { ca?: string | Uint8Array | readonly (string | Uint8Array)[]; cert?: string | Uint8Array; key?: string | Uint8Array; rejectUnauthorized?: boolean };
  /** Default "auto": MQTT 5, falling back to 3.1.1 when the broker refuses it. */
  protocol?: MqttProtocolChoice;
  /** Seconds; default 30. */
  keepaliveS?: number;
  /** Milliseconds to wait for CONNACK; default 10 000. */
  connectTimeoutMs?: number;
  /** Reconnect backoff: the first delay and the ceiling, in ms (default 1 000 and 60 000). */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  qos?: Partial<Record<"results" | "snapshot" | "status" | "stats" | "events", QoS>>;
  retain?: Partial<Record<"results" | "snapshot", boolean>>;
  /** The outgoing queue (offline, or the broker too slow): default 1000 messages and 16 MiB. */
  offlineQueue?: { maxMessages?: number; maxBytes?: number };
  /** Publishes in flight (written, not yet flushed or acknowledged): default 100 messages and 4 MiB. */
  inflight?: { maxMessages?: number; maxBytes?: number };
  discovery?: { enabled: boolean; prefix?: string; nodeId?: string; swVersion?: string; model?: string };
  handlers?: MqttCommandHandlers;
  /** A command or inference handler that takes longer is answered with an error; default 60 000 ms. */
  handlerTimeoutMs?: number;
  /** Inference requests waiting at once; more are refused. Default 8. */
  maxPendingInfers?: number;
  log?: (level: LogLevel, message: string) => void;
}

export interface MqttCounters {
  state: MqttLinkState;
  protocol_version: 4 | 5 | null;
  /** How infer requests name their reply topic: MQTT 5 properties, or only the JSON body's response_topic. */
  request_response: "mqtt5" | "body-field" | "unknown";
  /** Messages written (QoS 0) or acknowledged (QoS 1/2). */
  published: number;
  /** Dropped from the full queue while disconnected (the oldest first). */
  dropped_offline: number;
  /** Dropped from the full queue while connected: the broker or network is slower than the results. */
  dropped_backpressure: number;
  /** Larger than the broker's maximum packet size. */
  dropped_too_large: number;
  /** Publishes that failed for the message itself and are not retried: an MQTT 5 error reason code from the
   * broker (not authorized, quota exceeded…) or a packet the client could not write. */
  publish_failed: number;
  queued: number;
  queued_bytes: number;
  in_flight: number;
  in_flight_bytes: number;
  connect_attempts: number;
  /** Successful connections after the first. */
  reconnects: number;
  disconnects: number;
  /** The delay before the next connection attempt while offline, else null. */
  next_retry_ms: number | null;
  commands_ok: number;
  commands_rejected: number;
}

const JSON_PROPERTIES = { contentType: "application/json" } as const;
const JPEG_PROPERTIES = { contentType: "image/jpeg" } as const;

// The publisher's wording on the shared checks (validate.ts): "mqtt reconnectMinMs must be …".
function option(name: string, value: number | undefined, fallback: number, min: number, max: number): number {
  return readNumber({ name: `mqtt ${name}`, code: "CONFIG_INVALID", separator: " " }, value, { min, max }, fallback);
}

function qosOption(name: string, value: QoS | undefined, fallback: QoS): QoS {
  return readChoice({ name: `mqtt qos.${name}`, code: "CONFIG_INVALID", separator: " " }, value, [0, 1, 2] as const, fallback, "0, 1 or 2");
}

function toBuffer(value: string | Uint8Array): Buffer {
  return typeof value === "string" ? Buffer.from(value, "utf8") : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

function checkUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new FlorenceError("CONFIG_INVALID", `mqtt url ${describeValue(maskUrl(String(url)))} is not a URL`, { fix: "e.g. mqtt://homeassistant.local:1883 or mqtts://broker:8883" });
  }
  if (!["mqtt:", "mqtts:", "ws:", "wss:", "tcp:", "ssl:"].includes(parsed.protocol)) {
    throw new FlorenceError("CONFIG_INVALID", `mqtt url ${describeValue(maskUrl(url))} has the scheme ${parsed.protocol}`, { fix: "use mqtt://, mqtts://, ws:// or wss://" });
  }
}

function discoveryOptions(options: MqttPublisherOptions["discovery"], topicPrefix: string, cameras: readonly string[]): DiscoveryOptions | undefined {
  if (!options?.enabled) return undefined;
  const prefix = options.prefix ?? "homeassistant";
  if (prefix === "" || /[+#\u0000]/.test(prefix)) throw new FlorenceError("CONFIG_INVALID", `discovery prefix ${describeValue(prefix)} may not be empty or contain # + NUL`);
  const discovery: DiscoveryOptions = {
    discoveryPrefix: prefix,
    topicPrefix,
    ...(options.nodeId !== undefined ? { nodeId: options.nodeId } : {}),
    ...(options.swVersion !== undefined ? { swVersion: options.swVersion } : {}),
    ...(options.model !== undefined ? { model: options.model } : {}),
  };
  // builds (and so validates) every camera's config now rather than on the first connect
  for (const camera of cameras) cameraDiscovery(discovery, camera);
  return discovery;
}

export class MqttPublisher {
  readonly topicPrefix: string;
  readonly cameras: readonly string[];
  readonly #topics: MqttTopics;
  readonly #qos: Record<"results" | "snapshot" | "status" | "stats" | "events", QoS>;
  readonly #retain: Record<"results" | "snapshot", boolean>;
  readonly #discovery: DiscoveryOptions | undefined;
  readonly #log: (level: LogLevel, message: string) => void;
  readonly #outbox: Outbox;
  readonly #link: MqttLink;
  readonly #router: CommandRouter;
  /** Retained state (camera status, object counts) by topic, sent again on every connect. */
  readonly #latestRetained = new Map<string, OutgoingMessage>();
  /** The events' entities of each camera's Home Assistant device. */
  readonly #eventEntities = new Map<string, EventEntities>();
  readonly #discoveryRemoved = new Set<string>();
  readonly #flushWaiters = new Set<() => void>();
  #stopping: Promise<void> | undefined;
  readonly #counts = { published: 0, dropped_too_large: 0, publish_failed: 0 };

  constructor(options: MqttPublisherOptions) {
    checkUrl(options.url);
    this.#topics = new MqttTopics(options.topicPrefix);
    this.topicPrefix = this.#topics.prefix;
    for (const camera of options.cameras) checkCameraSegment(camera, "CONFIG_INVALID");
    this.cameras = [...options.cameras];
    const protocol = options.protocol ?? "auto";
    if (!["auto", 4, 5].includes(protocol)) throw new FlorenceError("CONFIG_INVALID", `mqtt protocol ${describeValue(protocol)} must be "auto", 4 or 5`);
    const reconnectMinMs = option("reconnectMinMs", options.reconnectMinMs, 1000, 1, 3_600_000);
    const reconnectMaxMs = option("reconnectMaxMs", options.reconnectMaxMs, 60_000, reconnectMinMs, 3_600_000);
    this.#qos = {
      results: qosOption("results", options.qos?.results, 0),
      snapshot: qosOption("snapshot", options.qos?.snapshot, 0),
      status: qosOption("status", options.qos?.status, 1),
      stats: qosOption("stats", options.qos?.stats, 0),
      events: qosOption("events", options.qos?.events, 1),
    };
    this.#retain = { results: options.retain?.results ?? false, snapshot: options.retain?.snapshot ?? false };
    this.#outbox = new Outbox({
      queue: {
        messages: option("offlineQueue.maxMessages", options.offlineQueue?.maxMessages, 1000, 0, 10_000_000),
        bytes: option("offlineQueue.maxBytes", options.offlineQueue?.maxBytes, 16 << 20, 0, 2 ** 40),
      },
      inflight: {
        messages: option("inflight.maxMessages", options.inflight?.maxMessages, 100, 1, 65_535),
        bytes: option("inflight.maxBytes", options.inflight?.maxBytes, 4 << 20, 1, 2 ** 40),
      },
    });
    const handlerTimeoutMs = option("handlerTimeoutMs", options.handlerTimeoutMs, 60_000, 1, 3_600_000);
    const maxPendingInfers = option("maxPendingInfers", options.maxPendingInfers, 8, 0, 10_000);
    this.#log = options.log ?? (() => undefined);
    const clientId = options.clientId ?? this.#topics.clientId(randomBytes(4).toString("hex"));
    this.#discovery = discoveryOptions(options.discovery, this.topicPrefix, this.cameras);
    const subscriptions = this.#topics.commandFilters(this.cameras);
    if (this.#discovery) subscriptions.push(`${this.#discovery.discoveryPrefix}/status`);
    // replies must neither loop back as commands nor impersonate the service's state or Home Assistant's config
    const forbiddenReplyFilters = [`${this.topicPrefix}/#`, ...(this.#discovery ? [`${this.#discovery.discoveryPrefix}/#`] : [])];
    this.#router = new CommandRouter({
      topics: this.#topics,
      cameras: this.cameras,
      handlers: options.handlers ?? {},
      handlerTimeoutMs,
      maxPendingInfers,
      forbiddenReplyFilters,
      reply: (message) => this.#enqueue(message),
      log: this.#log,
    });
    const keepaliveS = option("keepaliveS", options.keepaliveS, 30, 0, 65_535);
    const connectTimeoutMs = option("connectTimeoutMs", options.connectTimeoutMs, 10_000, 1, 3_600_000);
    const tls = options.tls ?? {};
    this.#link = new MqttLink(
      {
        url: options.url,
        clientId,
        protocol,
        keepaliveS,
        connectTimeoutMs,
        reconnectMinMs,
        reconnectMaxMs,
        username: options.username,
        password: options.password !== undefined ? toBuffer(options.password) : undefined,
        tls: {
          ca: tls.ca !== undefined ? (Array.isArray(tls.ca) ? tls.ca : [tls.ca]).map((c: string | Uint8Array) => toBuffer(c)) : undefined,
          cert: tls.cert !== undefined ? toBuffer(tls.cert) : undefined,
          key: tls.key !== undefined ? toBuffer(tls.key) : undefined,
          rejectUnauthorized: tls.rejectUnauthorized ?? true,
        },
        will: { topic: this.availabilityTopic, payload: "offline" },
        subscriptions,
        queued: () => this.#outbox.queued,
        log: this.#log,
      },
      {
        connected: (session) => this.#onConnected(session),
        message: (session, message) => this.#onMessage(session, message),
        closed: (session) => this.#onClosed(session),
      },
    );
  }

  get availabilityTopic(): string {
    return this.#topics.availability;
  }

  get state(): MqttLinkState {
    return this.#link.state;
  }

  /** The protocol of the current or last connection (4 = MQTT 3.1.1, 5 = MQTT 5), null before the first. */
  get protocolVersion(): 4 | 5 | null {
    return this.#link.protocolVersion;
  }

  /** Starts connecting (in the background; reconnects until stop()). Messages published before are queued. */
  start(): void {
    this.#link.start();
  }

  /** Resolves true once online, false after `timeoutMs`. */
  waitOnline(timeoutMs: number): Promise<boolean> {
    return this.#link.waitOnline(timeoutMs);
  }

  counters(): MqttCounters {
    const negotiated = this.#link.protocolVersion;
    const link = this.#link.counts;
    return {
      state: this.#link.state,
      protocol_version: negotiated,
      request_response: negotiated === 5 ? "mqtt5" : negotiated === 4 ? "body-field" : "unknown",
      published: this.#counts.published,
      dropped_offline: this.#outbox.droppedOffline,
      dropped_backpressure: this.#outbox.droppedBackpressure,
      dropped_too_large: this.#counts.dropped_too_large,
      publish_failed: this.#counts.publish_failed,
      connect_attempts: link.connect_attempts,
      reconnects: link.reconnects,
      disconnects: link.disconnects,
      commands_ok: this.#router.counts.commands_ok,
      commands_rejected: this.#router.counts.commands_rejected,
      queued: this.#outbox.queued,
      queued_bytes: this.#outbox.queuedBytes,
      in_flight: this.#outbox.inFlight,
      in_flight_bytes: this.#outbox.inFlightBytes,
      next_retry_ms: this.#link.nextRetryMs,
    };
  }

  // ---- publishing ----

  /** Topic of a task's results: `<prefix>/<camera>/<slug>`. */
  resultTopic(camera: string, task: string): string {
    return this.#topics.result(camera, task);
  }

  /** Queues one result (with `model`) on `<prefix>/<camera>/<task_slug>`. False when stopped. */
  publishResult(message: ResultMessage): boolean {
    const topic = this.#topics.result(message.camera, message.task);
    return this.#enqueue(outgoingMessage(topic, JSON.stringify(message), this.#qos.results, this.#retain.results, undefined, JSON_PROPERTIES));
  }

  /**
   * Queues a JPEG on `<prefix>/<camera>/<task_slug>/snapshot` (the bytes are copied). Only the newest snapshot
   * per topic waits in the queue: an older one still queued is replaced.
   */
  publishSnapshot(camera: string, task: string, jpeg: Uint8Array): boolean {
    const topic = this.#topics.snapshot(camera, task);
    return this.#enqueue(outgoingMessage(topic, Buffer.from(jpeg), this.#qos.snapshot, this.#retain.snapshot, topic, JPEG_PROPERTIES));
  }

  /** Queues the camera's status on `<prefix>/<camera>/status` (retained; republished on every connect). */
  publishStatus(status: SourceStatus): boolean {
    const topic = this.#topics.status(status.camera);
    // exactly the SourceStatus fields (status.schema.json), whatever else the source's object carries
    const body = {
      camera: status.camera,
      state: status.state,
      ...(status.reason !== undefined ? { reason: status.reason } : {}),
      restarts: status.restarts,
      framesReceived: status.framesReceived,
      framesDropped: status.framesDropped,
      framesCorrupt: status.framesCorrupt,
      ...(status.lastFrameAt !== undefined ? { lastFrameAt: status.lastFrameAt } : {}),
    };
    const message = outgoingMessage(topic, JSON.stringify(body), this.#qos.status, true, topic, JSON_PROPERTIES);
    if (this.#stopping === undefined) this.#latestRetained.set(topic, message);
    return this.#enqueue(message);
  }

  /** Queues a tracked object's event (`{type, before, after}`) on `<prefix>/events`. */
  publishEvent(event: object): boolean {
    return this.#enqueue(outgoingMessage(this.#topics.events, JSON.stringify(event), this.#qos.events, false, undefined, JSON_PROPERTIES));
  }

  /** Queues a `{type: "description", id, …}` on `<prefix>/tracked_object_update`. */
  publishObjectUpdate(update: object): boolean {
    return this.#enqueue(outgoingMessage(this.#topics.trackedObjectUpdate, JSON.stringify(update), this.#qos.events, false, undefined, JSON_PROPERTIES));
  }

  /** Queues a count of live objects, retained (and sent again on every connect): a camera's or a zone's, of a label or all. */
  publishCount(camera: string, zone: string | undefined, label: string | undefined, count: number): boolean {
    const topic = this.#topics.count(camera, zone, label);
    const message = outgoingMessage(topic, String(count), this.#qos.events, true, topic, undefined);
    if (this.#stopping === undefined) this.#latestRetained.set(topic, message);
    return this.#enqueue(message);
  }

  /** Queues the best view of a label's latest object on `<prefix>/<camera>/<label>/snapshot`, retained. */
  publishObjectSnapshot(camera: string, label: string, jpeg: Uint8Array): boolean {
    const topic = this.#topics.objectSnapshot(camera, label);
    return this.#enqueue(outgoingMessage(topic, Buffer.from(jpeg), this.#qos.snapshot, true, topic, JPEG_PROPERTIES));
  }

  /** Sets the entities a camera's events add to its Home Assistant device, and publishes the config when they changed. */
  setEventEntities(camera: string, entities: EventEntities): void {
    const before = this.#eventEntities.get(camera);
    this.#eventEntities.set(camera, entities);
    // before the first connect, the connect sends the config with these entities
    if (!this.#discovery || this.#link.session === undefined || this.#discoveryRemoved.has(camera) || JSON.stringify(before) === JSON.stringify(entities)) return;
    const config = cameraDiscovery(this.#discovery, camera, entities);
    this.#enqueue(outgoingMessage(config.topic, config.payload, 1, true, config.topic, JSON_PROPERTIES));
  }

  /** Queues the stats object on `<prefix>/stats` (only the newest waits in the queue). */
  publishStats(stats: object): boolean {
    const topic = this.#topics.stats;
    return this.#enqueue(outgoingMessage(topic, JSON.stringify(stats), this.#qos.stats, false, topic, JSON_PROPERTIES));
  }

  /** Removes the Home Assistant devices of `cameras` (default: all): empty retained configs, and no more configs
   * for them on later connects. */
  removeDiscovery(cameras: readonly string[] = this.cameras): boolean {
    if (!this.#discovery) return false;
    let ok = true;
    for (const camera of cameras) {
      this.#discoveryRemoved.add(camera);
      const removal = removeCameraDiscovery(this.#discovery, camera);
      ok = this.#enqueue(outgoingMessage(removal.topic, "", 1, true, removal.topic, undefined)) && ok;
    }
    return ok;
  }

  #enqueue(message: OutgoingMessage): boolean {
    if (this.#stopping !== undefined) return false;
    const session = this.#link.session;
    if (session !== undefined && this.#outbox.idle && this.#outbox.hasRoom(message, session)) {
      this.#send(message, session);
      return true;
    }
    this.#outbox.enqueue(message, session !== undefined);
    this.#pump();
    return true;
  }

  #pump(): void {
    const session = this.#link.session;
    if (session !== undefined) {
      for (let next = this.#outbox.next(session); next !== undefined; next = this.#outbox.next(session)) {
        this.#send(next, session);
        if (!session.connected) break;
      }
    }
    this.#checkFlushed();
  }

  #send(message: OutgoingMessage, session: LinkSession): void {
    if (session.maximumPacketSize !== undefined && message.bytes + 16 > session.maximumPacketSize) {
      this.#counts.dropped_too_large++;
      this.#log("warn", `dropped a ${message.bytes}-byte message to ${message.topic}: the broker accepts at most ${session.maximumPacketSize} bytes per packet`);
      return;
    }
    const qos = Math.min(message.qos, session.maximumQoS) as QoS;
    const id = this.#outbox.track(message, session.id, qos);
    this.#link.publish(session, message.topic, message.payload, qos, message.retain, message.properties, (outcome) => this.#onPublished(id, session, outcome));
  }

  #onPublished(id: number, session: LinkSession, outcome: PublishOutcome): void {
    const entry = this.#outbox.inFlightEntry(id);
    // a message already handed back to the queue when its connection dropped
    if (entry === undefined || entry.session !== session.id) return;
    // the connection is going: the close handler requeues what is still in flight, in order
    if (!outcome.ok && outcome.connectionLost) return;
    this.#outbox.release(id);
    if (outcome.ok) this.#counts.published++;
    else {
      this.#counts.publish_failed++;
      this.#log("warn", `publishing to ${entry.message.topic} failed: ${outcome.error.message}`);
    }
    this.#pump();
  }

  // ---- connection events ----

  #onConnected(_session: LinkSession): void {
    this.#outbox.setControl([outgoingMessage(this.availabilityTopic, "online", 1, true, undefined, undefined, true)]);
    this.#queueDiscovery();
    // retained state may be gone (a broker restarted without persistence): send the newest again unless queued
    for (const status of this.#latestRetained.values()) {
      if (status.key === undefined || !this.#outbox.isQueued(status.key)) this.#outbox.addControl({ ...status, control: true });
    }
    this.#pump();
  }

  #queueDiscovery(): void {
    if (!this.#discovery) return;
    for (const camera of this.cameras) {
      if (this.#discoveryRemoved.has(camera)) continue;
      const config = cameraDiscovery(this.#discovery, camera, this.#eventEntities.get(camera));
      this.#outbox.addControl(outgoingMessage(config.topic, config.payload, 1, true, undefined, JSON_PROPERTIES, true));
    }
  }

  #onMessage(session: LinkSession, message: IncomingMessage): void {
    if (this.#stopping !== undefined) return;
    if (this.#discovery && message.topic === `${this.#discovery.discoveryPrefix}/status`) {
      // Home Assistant's birth message: it (re)started and needs the configs again
      if (message.payload.toString("utf8") === "online" && session.connected) {
        this.#queueDiscovery();
        this.#pump();
      }
      return;
    }
    this.#router.route(message);
  }

  #onClosed(session: LinkSession): void {
    this.#outbox.requeue(session.id);
    this.#checkFlushed();
  }

  // ---- flush and stop ----

  #checkFlushed(): void {
    if (this.#flushWaiters.size === 0 || this.#outbox.reliablePending() > 0) return;
    for (const waiter of [...this.#flushWaiters]) waiter();
  }

  /**
   * Waits until every queued QoS ≥ 1 message has been acknowledged (QoS 0 ones are not waited for), at most
   * `timeoutMs`. Resolves true when all were, false on timeout.
   */
  flush(timeoutMs: number): Promise<boolean> {
    if (this.#outbox.reliablePending() === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (value: boolean) => {
        clearTimeout(timer);
        this.#flushWaiters.delete(onFlushed);
        resolve(value);
      };
      const onFlushed = () => done(true);
      const timer = setTimeout(() => done(false), Math.max(0, timeoutMs));
      this.#flushWaiters.add(onFlushed);
    });
  }

  /**
   * Clean shutdown: stops taking messages and commands, flushes (bounded by `timeoutMs`), publishes `stopped`
   * (retained) and disconnects cleanly so that the broker discards the Last Will. Idempotent.
   */
  stop(timeoutMs = 5000): Promise<void> {
    this.#stopping ??= this.#stop(timeoutMs);
    return this.#stopping;
  }

  async #stop(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const remaining = () => Math.max(0, deadline - Date.now());
    const session = this.#link.beginStop();
    if (session !== undefined) {
      await this.#router.settled(remaining());
      await this.flush(remaining());
      await withTimeout(this.#link.lastWord(session, this.availabilityTopic, "stopped"), remaining());
    }
    await this.#link.end(Math.max(remaining(), 100));
    this.#outbox.clear();
    for (const waiter of [...this.#flushWaiters]) waiter();
    this.#log("info", "MQTT stopped");
  }
}
