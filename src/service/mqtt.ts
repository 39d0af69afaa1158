/**
 * The service's MQTT side: publishes results, snapshots, camera status and stats; answers `set` commands and
 * one-off inference requests; announces availability and Home Assistant discovery. The only module that talks to
 * the `mqtt` package.
 *
 * Topics (`<prefix>` defaults to `florence-edge`):
 *   <prefix>/available                   `online` (retained, QoS 1) on every connect; Last Will `offline`;
 *                                        `stopped` on a clean shutdown
 *   <prefix>/<camera>/<task_slug>        one JSON ResultMessage per task result (QoS/retain configurable)
 *   <prefix>/<camera>/<task_slug>/snapshot  JPEG bytes
 *   <prefix>/<camera>/status             SourceStatus JSON, retained
 *   <prefix>/stats                       the stats object, JSON
 *   <prefix>/<camera>/set                commands in; answered on …/set/result or …/error
 *   <prefix>/<camera>/infer, <prefix>/infer  inference requests in; answered on the request's response topic
 *
 * Delivery: every outgoing message goes through one bounded queue (messages and bytes; the oldest is dropped and
 * counted when full) and a bounded in-flight window (QoS 0 writes not yet flushed to the socket plus QoS 1/2
 * publishes not yet acknowledged, also capped by the broker's MQTT 5 receive maximum), so memory stays bounded
 * whether the broker is gone or merely slow. mqtt.js's own offline queue and reconnect are disabled: each
 * connection is a fresh client, QoS ≥ 1 messages in flight when a connection drops are queued again at the front
 * (at-least-once), and reconnects back off exponentially (1 s doubling to 60 s, with jitter).
 *
 * Protocol: "auto" asks for MQTT 5 and falls back to 3.1.1 when the broker refuses the protocol version (aedes, old
 * brokers). MQTT 5 request/response (response topic + correlation data properties) needs MQTT 5; on 3.1.1 an infer
 * request names its reply topic in its JSON body (`response_topic`), which MQTT 5 clients may use too.
 */
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { connect, type IClientOptions, type IClientPublishOptions, type IConnackPacket, type IPublishPacket, type MqttClient } from "mqtt";
import { FlorenceError, describeValue } from "../errors.ts";
import { isTaskToken, TASKS } from "../florence/tasks.ts";
import { checkResponseTopic, decodeCommandPayload, describeCommandError, parseInferRequest, parseSetCommand, type SetCommand } from "./commands.ts";
import type { MqttConfig, TaskSchedule } from "./service_config.ts";
import { jitteredBackoffDelay } from "./backoff.ts";
import { maskUrl } from "./redact.ts";
import { cameraDiscovery, removeCameraDiscovery, type DiscoveryOptions } from "./discovery.ts";
import type { ResultMessage, SourceStatus } from "./types.ts";

export type QoS = 0 | 1 | 2;
export type MqttProtocolChoice = "auto" | 4 | 5;
export type MqttLinkState = "idle" | "connecting" | "online" | "offline" | "stopping" | "stopped";
export type LogLevel = "debug" | "info" | "warn" | "error";

/** What the service does with validated commands. */
export interface MqttCommandHandlers {
  /**
   * Applies a validated `set` command and returns the camera's new schedule (acknowledged on `…/set/result`).
   * Typically `const next = applySetCommand(loop.tasksOf(c.camera) ?? [], c); loop.setTasks(c.camera, next); return next;`.
   * A throw is answered on `…/error` and changes nothing.
   */
  setTasks?(command: SetCommand): TaskSchedule[] | Promise<TaskSchedule[]>;
  /** Runs one task on the camera's newest frame (CameraLoop.request). */
  infer?(request: { camera: string; task: string; text: string | undefined }): Promise<ResultMessage>;
}

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
  qos?: Partial<Record<"results" | "snapshot" | "status" | "stats", QoS>>;
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

/** The JSON answer to a rejected command or failed request. */
export interface CommandErrorMessage {
  ok: false;
  command: "set" | "infer";
  camera: string | null;
  code: string;
  message: string;
  key: string;
  correlation_id?: string;
  received_at: string;
}

interface Outgoing {
  topic: string;
  payload: Buffer;
  qos: QoS;
  retain: boolean;
  bytes: number;
  /** Messages with a key supersede the queued one with the same key (the newest state wins). */
  key: string | undefined;
  /** Connect-time messages (availability, discovery, state): regenerated on every connect, never requeued. */
  control: boolean;
  properties: IClientPublishOptions["properties"];
}

interface InFlight {
  message: Outgoing;
  session: number;
  qos: QoS;
}

interface Session {
  id: number;
  client: MqttClient;
  protocol: 4 | 5;
  /** CONNACK received and the connection not (known to be) lost. */
  connected: boolean;
  refusedProtocol: boolean;
  receiveMaximum: number;
  maximumQoS: QoS;
  retainAvailable: boolean;
  maximumPacketSize: number | undefined;
}

/** A FIFO with O(1) shift and unshift: a growable array with a moving head. */
class MessageQueue {
  #items: Outgoing[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  peek(): Outgoing | undefined {
    return this.#items[this.#head];
  }

  push(message: Outgoing): void {
    this.#items.push(message);
  }

  unshift(message: Outgoing): void {
    if (this.#head > 0) this.#items[--this.#head] = message;
    else this.#items.unshift(message);
  }

  shift(): Outgoing | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const message = this.#items[this.#head]!;
    this.#items[this.#head] = undefined as unknown as Outgoing;
    this.#head++;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return message;
  }

  clear(): void {
    this.#items = [];
    this.#head = 0;
  }
}

const JSON_PROPERTIES = { contentType: "application/json" } as const;
const JPEG_PROPERTIES = { contentType: "image/jpeg" } as const;
const SEGMENT = /^[^/+#\u0000]+$/;
// MQTT 5 reason codes (and the 3.1.1 return code 1) that mean "I do not speak this protocol version"
const UNSUPPORTED_PROTOCOL = new Set([1, 0x84]);
// how mqtt.js fails the callbacks of publishes cut off by a lost connection (as opposed to a refused message)
const CONNECTION_ERROR = /connection closed|no connection|disconnecting/i;

/**
 * Publisher options from the validated `mqtt` config section. `url` is the configured broker or the embedded one's;
 * the TLS files named in the config are read by the caller and passed as bytes.
 */
export function publisherOptionsFromConfig(
  config: MqttConfig,
  context: {
    url: string;
    cameras: readonly string[];
    tls?: { ca?: Uint8Array; cert?: Uint8Array; key?: Uint8Array };
    handlers?: MqttCommandHandlers;
    log?: (level: LogLevel, message: string) => void;
    swVersion?: string;
    model?: string;
  },
): MqttPublisherOptions {
  return {
    url: context.url,
    cameras: context.cameras,
    topicPrefix: config.topicPrefix,
    ...(config.clientId !== undefined ? { clientId: config.clientId } : {}),
    ...(config.username !== undefined ? { username: config.username } : {}),
    ...(config.password !== undefined ? { password: config.password } : {}),
    tls: { ...context.tls, rejectUnauthorized: config.tls.rejectUnauthorized },
    protocol: config.protocol,
    qos: config.qos,
    retain: config.retain,
    offlineQueue: config.offlineQueue,
    discovery: {
      enabled: config.discovery.enabled,
      prefix: config.discovery.prefix,
      ...(context.swVersion !== undefined ? { swVersion: context.swVersion } : {}),
      ...(context.model !== undefined ? { model: context.model } : {}),
    },
    ...(context.handlers !== undefined ? { handlers: context.handlers } : {}),
    ...(context.log !== undefined ? { log: context.log } : {}),
  };
}

export { jitteredBackoffDelay as reconnectDelayMs } from "./backoff.ts";

function option(name: string, value: number | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    throw new FlorenceError("CONFIG_INVALID", `mqtt ${name} must be a number in ${min}..${max}, got ${describeValue(value)}`);
  }
  return value;
}

function qosOption(name: string, value: QoS | undefined, fallback: QoS): QoS {
  if (value === undefined) return fallback;
  if (value !== 0 && value !== 1 && value !== 2) throw new FlorenceError("CONFIG_INVALID", `mqtt qos.${name} must be 0, 1 or 2, got ${describeValue(value)}`);
  return value;
}

function toBuffer(value: string | Uint8Array): Buffer {
  return typeof value === "string" ? Buffer.from(value, "utf8") : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

export class MqttPublisher {
  readonly topicPrefix: string;
  readonly cameras: readonly string[];
  readonly #url: string;
  readonly #clientId: string;
  readonly #protocolChoice: MqttProtocolChoice;
  readonly #clientOptions: IClientOptions;
  readonly #reconnectMinMs: number;
  readonly #reconnectMaxMs: number;
  readonly #qos: Record<"results" | "snapshot" | "status" | "stats", QoS>;
  readonly #retain: Record<"results" | "snapshot", boolean>;
  readonly #queueMax: { messages: number; bytes: number };
  readonly #inflightMax: { messages: number; bytes: number };
  readonly #discovery: DiscoveryOptions | undefined;
  readonly #handlers: MqttCommandHandlers;
  readonly #handlerTimeoutMs: number;
  readonly #maxPendingInfers: number;
  readonly #log: (level: LogLevel, message: string) => void;
  readonly #subscriptions: string[];
  readonly #forbiddenReplyFilters: string[];
  readonly #cameraSet: Set<string>;

  #state: MqttLinkState = "idle";
  #protocol: 4 | 5;
  #negotiated: 4 | 5 | null = null;
  #session: Session | undefined;
  #sessionSeq = 0;
  #attempt = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #nextRetryMs: number | null = null;
  #everConnected = false;
  #warnedV4 = false;
  #lastError = "";

  readonly #queue = new MessageQueue();
  #control: Outgoing[] = [];
  #queuedBytes = 0;
  #queuedReliable = 0;
  readonly #superseded = new Map<string, Outgoing>();
  readonly #inflight = new Map<number, InFlight>();
  #inflightSeq = 0;
  #inflightBytes = 0;
  #inflightReliable = 0;
  readonly #latestStatus = new Map<string, Outgoing>();
  readonly #discoveryRemoved = new Set<string>();
  readonly #flushWaiters = new Set<() => void>();
  readonly #onlineWaiters = new Set<() => void>();

  #commandChain: Promise<void> = Promise.resolve();
  #pendingCommands = 0;
  #pendingInfers = 0;
  #stopping: Promise<void> | undefined;

  readonly #counts = {
    published: 0,
    dropped_offline: 0,
    dropped_backpressure: 0,
    dropped_too_large: 0,
    publish_failed: 0,
    connect_attempts: 0,
    reconnects: 0,
    disconnects: 0,
    commands_ok: 0,
    commands_rejected: 0,
  };

  constructor(options: MqttPublisherOptions) {
    let parsed: URL;
    try {
      parsed = new URL(options.url);
    } catch {
      throw new FlorenceError("CONFIG_INVALID", `mqtt url ${describeValue(maskUrl(String(options.url)))} is not a URL`, { fix: "e.g. mqtt://homeassistant.local:1883 or mqtts://broker:8883" });
    }
    if (!["mqtt:", "mqtts:", "ws:", "wss:", "tcp:", "ssl:"].includes(parsed.protocol)) {
      throw new FlorenceError("CONFIG_INVALID", `mqtt url ${describeValue(maskUrl(options.url))} has the scheme ${parsed.protocol}`, { fix: "use mqtt://, mqtts://, ws:// or wss://" });
    }
    this.#url = options.url;
    this.topicPrefix = options.topicPrefix ?? "florence-edge";
    if (this.topicPrefix === "" || /[+#\u0000]/.test(this.topicPrefix) || this.topicPrefix.startsWith("/") || this.topicPrefix.endsWith("/") || this.topicPrefix.startsWith("$")) {
      throw new FlorenceError("CONFIG_INVALID", `mqtt topic prefix ${describeValue(this.topicPrefix)} may not be empty, contain # + or NUL, start with $, or start or end with /`);
    }
    for (const camera of options.cameras) {
      if (typeof camera !== "string" || !SEGMENT.test(camera)) {
        throw new FlorenceError("CONFIG_INVALID", `camera name ${describeValue(camera)} cannot be an MQTT topic segment`, { fix: "use letters, digits, _ and -" });
      }
    }
    this.cameras = [...options.cameras];
    this.#cameraSet = new Set(this.cameras);
    this.#protocolChoice = options.protocol ?? "auto";
    if (!["auto", 4, 5].includes(this.#protocolChoice)) throw new FlorenceError("CONFIG_INVALID", `mqtt protocol ${describeValue(this.#protocolChoice)} must be "auto", 4 or 5`);
    this.#protocol = this.#protocolChoice === 4 ? 4 : 5;
    this.#reconnectMinMs = option("reconnectMinMs", options.reconnectMinMs, 1000, 1, 3_600_000);
    this.#reconnectMaxMs = option("reconnectMaxMs", options.reconnectMaxMs, 60_000, this.#reconnectMinMs, 3_600_000);
    this.#qos = {
      results: qosOption("results", options.qos?.results, 0),
      snapshot: qosOption("snapshot", options.qos?.snapshot, 0),
      status: qosOption("status", options.qos?.status, 1),
      stats: qosOption("stats", options.qos?.stats, 0),
    };
    this.#retain = { results: options.retain?.results ?? false, snapshot: options.retain?.snapshot ?? false };
    this.#queueMax = {
      messages: option("offlineQueue.maxMessages", options.offlineQueue?.maxMessages, 1000, 0, 10_000_000),
      bytes: option("offlineQueue.maxBytes", options.offlineQueue?.maxBytes, 16 << 20, 0, 2 ** 40),
    };
    this.#inflightMax = {
      messages: option("inflight.maxMessages", options.inflight?.maxMessages, 100, 1, 65_535),
      bytes: option("inflight.maxBytes", options.inflight?.maxBytes, 4 << 20, 1, 2 ** 40),
    };
    this.#handlerTimeoutMs = option("handlerTimeoutMs", options.handlerTimeoutMs, 60_000, 1, 3_600_000);
    this.#maxPendingInfers = option("maxPendingInfers", options.maxPendingInfers, 8, 0, 10_000);
    this.#handlers = options.handlers ?? {};
    this.#log = options.log ?? (() => undefined);
    // at most 23 characters: the length every MQTT 3.1.1 broker must accept
    this.#clientId = options.clientId ?? `${this.topicPrefix.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 14)}-${randomBytes(4).toString("hex")}`;
    if (options.discovery?.enabled) {
      const prefix = options.discovery.prefix ?? "homeassistant";
      if (prefix === "" || /[+#\u0000]/.test(prefix)) throw new FlorenceError("CONFIG_INVALID", `discovery prefix ${describeValue(prefix)} may not be empty or contain # + NUL`);
      this.#discovery = {
        discoveryPrefix: prefix,
        topicPrefix: this.topicPrefix,
        ...(options.discovery.nodeId !== undefined ? { nodeId: options.discovery.nodeId } : {}),
        ...(options.discovery.swVersion !== undefined ? { swVersion: options.discovery.swVersion } : {}),
        ...(options.discovery.model !== undefined ? { model: options.discovery.model } : {}),
      };
      // builds (and so validates) every camera's config now rather than on the first connect
      for (const camera of this.cameras) cameraDiscovery(this.#discovery, camera);
    }
    this.#subscriptions = [`${this.topicPrefix}/infer`];
    for (const camera of this.cameras) this.#subscriptions.push(`${this.topicPrefix}/${camera}/set`, `${this.topicPrefix}/${camera}/infer`);
    if (this.#discovery) this.#subscriptions.push(`${this.#discovery.discoveryPrefix}/status`);
    // replies must neither loop back as commands nor impersonate the service's state or Home Assistant's config
    this.#forbiddenReplyFilters = [`${this.topicPrefix}/#`, ...(this.#discovery ? [`${this.#discovery.discoveryPrefix}/#`] : [])];

    const keepalive = option("keepaliveS", options.keepaliveS, 30, 0, 65_535);
    const tls = options.tls ?? {};
    this.#clientOptions = {
      clientId: this.#clientId,
      keepalive,
      connectTimeout: option("connectTimeoutMs", options.connectTimeoutMs, 10_000, 1, 3_600_000),
      // reconnects, offline queueing and resubscription are done here, bounded
      reconnectPeriod: 0,
      queueQoSZero: false,
      resubscribe: false,
      clean: true,
      ...(options.username !== undefined ? { username: options.username } : {}),
      ...(options.password !== undefined ? { password: toBuffer(options.password) } : {}),
      ...(tls.ca !== undefined ? { ca: (Array.isArray(tls.ca) ? tls.ca : [tls.ca]).map((c: string | Uint8Array) => toBuffer(c)) } : {}),
      ...(tls.cert !== undefined ? { cert: toBuffer(tls.cert) } : {}),
      ...(tls.key !== undefined ? { key: toBuffer(tls.key) } : {}),
      rejectUnauthorized: tls.rejectUnauthorized ?? true,
      will: { topic: this.availabilityTopic, payload: Buffer.from("offline"), qos: 1, retain: true },
    };
  }

  get availabilityTopic(): string {
    return `${this.topicPrefix}/available`;
  }

  get state(): MqttLinkState {
    return this.#state;
  }

  /** The protocol of the current or last connection (4 = MQTT 3.1.1, 5 = MQTT 5), null before the first. */
  get protocolVersion(): 4 | 5 | null {
    return this.#negotiated;
  }

  /** Starts connecting (in the background; reconnects until stop()). Messages published before are queued. */
  start(): void {
    if (this.#state !== "idle") return;
    this.#state = "connecting";
    this.#connect();
  }

  /** Resolves true once online, false after `timeoutMs`. */
  waitOnline(timeoutMs: number): Promise<boolean> {
    if (this.#state === "online") return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (value: boolean) => {
        clearTimeout(timer);
        this.#onlineWaiters.delete(onOnline);
        resolve(value);
      };
      const onOnline = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      this.#onlineWaiters.add(onOnline);
    });
  }

  counters(): MqttCounters {
    return {
      state: this.#state,
      protocol_version: this.#negotiated,
      request_response: this.#negotiated === 5 ? "mqtt5" : this.#negotiated === 4 ? "body-field" : "unknown",
      ...this.#counts,
      queued: this.#queue.length,
      queued_bytes: this.#queuedBytes,
      in_flight: this.#inflight.size,
      in_flight_bytes: this.#inflightBytes,
      next_retry_ms: this.#nextRetryMs,
    };
  }

  // ---- publishing ----

  #checkCamera(camera: string): void {
    if (typeof camera !== "string" || !SEGMENT.test(camera)) {
      throw new FlorenceError("INVALID_ARGUMENT", `camera name ${describeValue(camera)} cannot be an MQTT topic segment`, { fix: "use letters, digits, _ and -" });
    }
  }

  #slug(task: string): string {
    if (!isTaskToken(task)) throw new FlorenceError("UNKNOWN_TASK", `cannot publish a result of the unknown task ${describeValue(task)}`);
    return TASKS[task].slug;
  }

  /** Topic of a task's results: `<prefix>/<camera>/<slug>`. */
  resultTopic(camera: string, task: string): string {
    this.#checkCamera(camera);
    return `${this.topicPrefix}/${camera}/${this.#slug(task)}`;
  }

  /** Queues one result (with `model`) on `<prefix>/<camera>/<task_slug>`. False when stopped. */
  publishResult(message: ResultMessage): boolean {
    const topic = this.resultTopic(message.camera, message.task);
    return this.#enqueue(this.#message(topic, JSON.stringify(message), this.#qos.results, this.#retain.results, undefined, JSON_PROPERTIES));
  }

  /**
   * Queues a JPEG on `<prefix>/<camera>/<task_slug>/snapshot` (the bytes are copied). Only the newest snapshot
   * per topic waits in the queue: an older one still queued is replaced.
   */
  publishSnapshot(camera: string, task: string, jpeg: Uint8Array): boolean {
    const topic = `${this.resultTopic(camera, task)}/snapshot`;
    return this.#enqueue(this.#message(topic, Buffer.from(jpeg), this.#qos.snapshot, this.#retain.snapshot, topic, JPEG_PROPERTIES));
  }

  /** Queues the camera's status on `<prefix>/<camera>/status` (retained; republished on every connect). */
  publishStatus(status: SourceStatus): boolean {
    this.#checkCamera(status.camera);
    const topic = `${this.topicPrefix}/${status.camera}/status`;
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
    const message = this.#message(topic, JSON.stringify(body), this.#qos.status, true, topic, JSON_PROPERTIES);
    if (this.#stopping === undefined) this.#latestStatus.set(status.camera, message);
    return this.#enqueue(message);
  }

  /** Queues the stats object on `<prefix>/stats` (only the newest waits in the queue). */
  publishStats(stats: object): boolean {
    const topic = `${this.topicPrefix}/stats`;
    return this.#enqueue(this.#message(topic, JSON.stringify(stats), this.#qos.stats, false, topic, JSON_PROPERTIES));
  }

  /** Removes the Home Assistant devices of `cameras` (default: all): empty retained configs, and no more configs
   * for them on later connects. */
  removeDiscovery(cameras: readonly string[] = this.cameras): boolean {
    if (!this.#discovery) return false;
    let ok = true;
    for (const camera of cameras) {
      this.#discoveryRemoved.add(camera);
      const removal = removeCameraDiscovery(this.#discovery, camera);
      ok = this.#enqueue(this.#message(removal.topic, "", 1, true, removal.topic, undefined)) && ok;
    }
    return ok;
  }

  #message(topic: string, payload: string | Buffer, qos: QoS, retain: boolean, key: string | undefined, properties: IClientPublishOptions["properties"], control = false): Outgoing {
    const bytes = typeof payload === "string" ? Buffer.from(payload, "utf8") : payload;
    return { topic, payload: bytes, qos, retain, bytes: bytes.length + Buffer.byteLength(topic), key, control, properties };
  }

  #enqueue(message: Outgoing): boolean {
    if (this.#stopping !== undefined) return false;
    if (message.key !== undefined) {
      const queued = this.#superseded.get(message.key);
      if (queued !== undefined) {
        // the newest state replaces the queued one in place
        this.#queuedBytes += message.bytes - queued.bytes;
        queued.payload = message.payload;
        queued.bytes = message.bytes;
        this.#trim();
        return true;
      }
    }
    const session = this.#session;
    if (session?.connected && this.#control.length === 0 && this.#queue.length === 0 && this.#hasRoom(message, session)) {
      this.#send(message, session);
      return true;
    }
    this.#queue.push(message);
    this.#queuedBytes += message.bytes;
    if (message.qos > 0) this.#queuedReliable++;
    if (message.key !== undefined) this.#superseded.set(message.key, message);
    this.#trim();
    this.#pump();
    return true;
  }

  #takeFromQueue(): Outgoing | undefined {
    const message = this.#queue.shift();
    if (message === undefined) return undefined;
    this.#queuedBytes -= message.bytes;
    if (message.qos > 0) this.#queuedReliable--;
    if (message.key !== undefined && this.#superseded.get(message.key) === message) this.#superseded.delete(message.key);
    return message;
  }

  /** Drops the oldest queued messages until the queue is within its bounds. */
  #trim(): void {
    let dropped = 0;
    while (this.#queue.length > 0 && (this.#queue.length > this.#queueMax.messages || this.#queuedBytes > this.#queueMax.bytes)) {
      this.#takeFromQueue();
      dropped++;
    }
    if (dropped > 0) {
      if (this.#session?.connected) this.#counts.dropped_backpressure += dropped;
      else this.#counts.dropped_offline += dropped;
      this.#checkFlushed();
    }
  }

  #hasRoom(message: Outgoing, session: Session): boolean {
    if (this.#inflight.size === 0) return true;
    if (this.#inflight.size >= this.#inflightMax.messages) return false;
    if (this.#inflightBytes + message.bytes > this.#inflightMax.bytes) return false;
    return Math.min(message.qos, session.maximumQoS) === 0 || this.#inflightReliable < session.receiveMaximum;
  }

  #pump(): void {
    const session = this.#session;
    if (!session?.connected) return;
    for (;;) {
      const next = this.#control[0] ?? this.#queue.peek();
      if (next === undefined || !this.#hasRoom(next, session)) break;
      if (this.#control.length > 0) this.#control.shift();
      else this.#takeFromQueue();
      this.#send(next, session);
      if (!session.connected) break;
    }
    this.#checkFlushed();
  }

  #send(message: Outgoing, session: Session): void {
    if (session.maximumPacketSize !== undefined && message.bytes + 16 > session.maximumPacketSize) {
      this.#counts.dropped_too_large++;
      this.#log("warn", `dropped a ${message.bytes}-byte message to ${message.topic}: the broker accepts at most ${session.maximumPacketSize} bytes per packet`);
      return;
    }
    const qos = Math.min(message.qos, session.maximumQoS) as QoS;
    const id = ++this.#inflightSeq;
    this.#inflight.set(id, { message, session: session.id, qos });
    this.#inflightBytes += message.bytes;
    if (qos > 0) this.#inflightReliable++;
    const options: IClientPublishOptions = { qos, retain: message.retain && session.retainAvailable };
    if (session.protocol === 5 && message.properties !== undefined) options.properties = message.properties;
    session.client.publish(message.topic, message.payload, options, (error) => this.#onPublished(id, session, error));
  }

  #release(id: number, entry: InFlight): void {
    this.#inflight.delete(id);
    this.#inflightBytes -= entry.message.bytes;
    if (entry.qos > 0) this.#inflightReliable--;
  }

  #onPublished(id: number, session: Session, error: Error | null | undefined): void {
    const entry = this.#inflight.get(id);
    // a message already handed back to the queue when its connection dropped
    if (entry === undefined || entry.session !== session.id) return;
    if (error) {
      const code = (error as { code?: unknown }).code;
      const connectionTrouble = typeof code !== "number" && (CONNECTION_ERROR.test(error.message) || !session.client.connected);
      if (connectionTrouble) {
        // the connection is going: the close handler requeues what is still in flight, in order
        session.connected = false;
        return;
      }
      this.#release(id, entry);
      this.#counts.publish_failed++;
      this.#log("warn", `publishing to ${entry.message.topic} failed: ${error.message}`);
      this.#pump();
      return;
    }
    this.#release(id, entry);
    this.#counts.published++;
    this.#pump();
  }

  // ---- flush and stop ----

  #reliablePending(): number {
    let control = 0;
    for (const message of this.#control) if (message.qos > 0) control++;
    return this.#queuedReliable + this.#inflightReliable + control;
  }

  #checkFlushed(): void {
    if (this.#flushWaiters.size === 0 || this.#reliablePending() > 0) return;
    for (const waiter of [...this.#flushWaiters]) waiter();
  }

  /**
   * Waits until every queued QoS ≥ 1 message has been acknowledged (QoS 0 ones are not waited for), at most
   * `timeoutMs`. Resolves true when all were, false on timeout.
   */
  flush(timeoutMs: number): Promise<boolean> {
    if (this.#reliablePending() === 0) return Promise.resolve(true);
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
    this.#state = "stopping";
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#nextRetryMs = null;
    const session = this.#session;
    if (session?.connected) {
      await withTimeout(this.#commandChain, remaining());
      await this.flush(remaining());
      await withTimeout(
        new Promise<void>((resolve) => session.client.publish(this.availabilityTopic, Buffer.from("stopped"), { qos: 1, retain: true }, () => resolve())),
        remaining(),
      );
    }
    // from here on its close is not a connection loss
    this.#session = undefined;
    if (session) {
      const ended = await withTimeout(
        new Promise<boolean>((resolve) => session.client.end(!session.connected, { reasonCode: 0 }, () => resolve(true))),
        Math.max(remaining(), 100),
      );
      if (ended !== true) this.#log("warn", "the broker did not complete the disconnect in time; closed the socket");
      this.#dispose(session);
    }
    this.#queue.clear();
    this.#control = [];
    this.#superseded.clear();
    this.#queuedBytes = 0;
    this.#queuedReliable = 0;
    this.#inflight.clear();
    this.#inflightBytes = 0;
    this.#inflightReliable = 0;
    this.#state = "stopped";
    for (const waiter of [...this.#flushWaiters]) waiter();
    this.#log("info", "MQTT stopped");
  }

  // ---- connection ----

  #connect(): void {
    const protocol = this.#protocol;
    const session: Session = {
      id: ++this.#sessionSeq,
      client: undefined as unknown as MqttClient,
      protocol,
      connected: false,
      refusedProtocol: false,
      receiveMaximum: 65_535,
      maximumQoS: 2,
      retainAvailable: true,
      maximumPacketSize: undefined,
    };
    this.#counts.connect_attempts++;
    this.#nextRetryMs = null;
    const options: IClientOptions = {
      ...this.#clientOptions,
      protocolVersion: protocol,
      // commands are at most 16 KiB: a broker must not push anything much larger at us
      ...(protocol === 5 ? { properties: { maximumPacketSize: 256 * 1024, sessionExpiryInterval: 0 } } : {}),
    };
    this.#log("debug", `connecting to ${maskUrl(this.#url)} with MQTT ${protocol === 5 ? "5" : "3.1.1"}`);
    this.#session = session;
    try {
      session.client = connect(this.#url, options);
    } catch (error) {
      this.#session = undefined;
      this.#lastError = (error as Error).message;
      this.#log("error", `cannot connect to ${maskUrl(this.#url)}: ${this.#lastError}`);
      this.#scheduleReconnect(false);
      return;
    }
    session.client.on("connect", (connack) => this.#onConnected(session, connack));
    session.client.on("message", (topic, payload, packet) => this.#onMessage(session, topic, payload, packet));
    session.client.on("error", (error) => this.#onClientError(session, error));
    session.client.on("close", () => this.#onClosed(session));
  }

  #onClientError(session: Session, error: Error): void {
    if (session !== this.#session) return;
    const code = (error as { code?: unknown }).code;
    if (session.protocol === 5 && this.#protocolChoice === "auto" && typeof code === "number" && UNSUPPORTED_PROTOCOL.has(code)) {
      session.refusedProtocol = true;
      this.#protocol = 4;
      this.#log("info", `${maskUrl(this.#url)} does not speak MQTT 5; using MQTT 3.1.1 (MQTT 5 request/response unavailable: infer requests must carry response_topic in their JSON)`);
      return;
    }
    const text = typeof code === "number" && UNSUPPORTED_PROTOCOL.has(code) && this.#protocolChoice === 5
      ? `${error.message} — this broker does not speak MQTT 5: set the protocol to "auto" or 4`
      : error.message;
    // the first failure of a streak is a warning, its repetitions are debug noise
    this.#log(this.#lastError === text ? "debug" : "warn", `MQTT ${maskUrl(this.#url)}: ${text}`);
    this.#lastError = text;
  }

  #onConnected(session: Session, connack: IConnackPacket): void {
    if (session !== this.#session) return;
    session.connected = true;
    const props = connack.properties;
    if (session.protocol === 5 && props) {
      if (typeof props.receiveMaximum === "number" && props.receiveMaximum > 0) session.receiveMaximum = props.receiveMaximum;
      if (props.maximumQoS === 0 || props.maximumQoS === 1) session.maximumQoS = props.maximumQoS;
      if (props.retainAvailable === false) session.retainAvailable = false;
      if (typeof props.maximumPacketSize === "number") session.maximumPacketSize = props.maximumPacketSize;
    }
    this.#negotiated = session.protocol;
    this.#attempt = 0;
    this.#lastError = "";
    if (this.#everConnected) this.#counts.reconnects++;
    this.#everConnected = true;
    this.#state = "online";
    this.#log("info", `MQTT connected to ${maskUrl(this.#url)} (MQTT ${session.protocol === 5 ? "5" : "3.1.1"}, client id ${this.#clientId})`);
    if (session.protocol === 4 && !this.#warnedV4) {
      this.#warnedV4 = true;
      this.#log("warn", "MQTT 5 request/response is unavailable on this broker: infer requests must name their reply topic in a response_topic field");
    }
    const subscriptions: Record<string, { qos: QoS }> = {};
    for (const filter of this.#subscriptions) subscriptions[filter] = { qos: 1 };
    session.client.subscribe(subscriptions, (error) => {
      if (error && session === this.#session) this.#log("error", `cannot subscribe to the command topics: ${error.message}`);
    });
    this.#control = [this.#message(this.availabilityTopic, "online", 1, true, undefined, undefined, true)];
    this.#queueDiscovery();
    // retained state may be gone (a broker restarted without persistence): send the newest again unless queued
    for (const status of this.#latestStatus.values()) {
      if (status.key === undefined || !this.#superseded.has(status.key)) this.#control.push({ ...status, control: true });
    }
    for (const waiter of [...this.#onlineWaiters]) waiter();
    this.#pump();
  }

  #queueDiscovery(): void {
    if (!this.#discovery) return;
    for (const camera of this.cameras) {
      if (this.#discoveryRemoved.has(camera)) continue;
      const config = cameraDiscovery(this.#discovery, camera);
      this.#control.push(this.#message(config.topic, config.payload, 1, true, undefined, JSON_PROPERTIES, true));
    }
  }

  #dispose(session: Session): void {
    const client = session.client;
    if (client === undefined) return;
    client.removeAllListeners();
    // late errors of a discarded client must not become unhandled 'error' events
    client.on("error", () => undefined);
    if (!client.disconnecting) client.end(true);
    // end() is a no-op while a graceful end is pending: cut the socket itself
    client.stream?.destroy();
  }

  #onClosed(session: Session): void {
    if (session !== this.#session) return;
    const wasConnected = session.connected || this.#state === "online";
    session.connected = false;
    this.#session = undefined;
    this.#dispose(session);
    // what was in flight goes back to the front of the queue, oldest first; QoS 0 and control messages are lost
    const back: Outgoing[] = [];
    let lost = 0;
    for (const [id, entry] of this.#inflight) {
      if (entry.session !== session.id) continue;
      this.#release(id, entry);
      if (entry.message.control) continue;
      if (entry.qos > 0) back.push(entry.message);
      else lost++;
    }
    for (let i = back.length - 1; i >= 0; i--) {
      const message = back[i]!;
      // a newer state for the same key is already queued
      if (message.key !== undefined && this.#superseded.has(message.key)) continue;
      this.#queue.unshift(message);
      this.#queuedBytes += message.bytes;
      if (message.qos > 0) this.#queuedReliable++;
      if (message.key !== undefined) this.#superseded.set(message.key, message);
    }
    this.#counts.dropped_offline += lost;
    this.#control = [];
    this.#trim();
    if (this.#stopping !== undefined) return;
    if (wasConnected) {
      this.#counts.disconnects++;
      this.#log("warn", `MQTT connection to ${maskUrl(this.#url)} lost; ${this.#queue.length} messages queued`);
    }
    this.#state = "offline";
    this.#scheduleReconnect(session.refusedProtocol);
  }

  #scheduleReconnect(immediately: boolean): void {
    if (this.#stopping !== undefined || this.#retryTimer !== undefined) return;
    const delay = immediately ? 0 : jitteredBackoffDelay(this.#attempt++, this.#reconnectMinMs, this.#reconnectMaxMs);
    this.#nextRetryMs = delay;
    if (!immediately) this.#log("debug", `MQTT reconnecting in ${delay} ms`);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      if (this.#stopping === undefined) this.#connect();
    }, delay);
  }

  // ---- commands ----

  #onMessage(session: Session, topic: string, payload: Buffer, packet: IPublishPacket): void {
    if (session !== this.#session || this.#stopping !== undefined) return;
    if (this.#discovery && topic === `${this.#discovery.discoveryPrefix}/status`) {
      // Home Assistant's birth message: it (re)started and needs the configs again
      if (payload.toString("utf8") === "online" && session.connected) {
        this.#queueDiscovery();
        this.#pump();
      }
      return;
    }
    // an empty payload is how a retained message is cleared, not a command
    if (!topic.startsWith(`${this.topicPrefix}/`) || payload.length === 0) return;
    const parts = topic.slice(this.topicPrefix.length + 1).split("/");
    if (parts.length === 1 && parts[0] === "infer") this.#onInfer(session, undefined, payload, packet);
    else if (parts.length === 2 && this.#cameraSet.has(parts[0]!)) {
      if (parts[1] === "set") this.#onSet(parts[0]!, payload, packet);
      else if (parts[1] === "infer") this.#onInfer(session, parts[0]!, payload, packet);
    }
  }

  #receivedAt(): string {
    return new Date().toISOString();
  }

  #reject(command: "set" | "infer", camera: string | undefined, error: unknown, reply?: { topic: string; correlationData: Buffer | undefined; correlationId: string | undefined }): void {
    this.#counts.commands_rejected++;
    const { code, key, message } = describeCommandError(error);
    const body: CommandErrorMessage = {
      ok: false,
      command,
      camera: camera ?? null,
      code,
      message,
      key,
      ...(reply?.correlationId !== undefined ? { correlation_id: reply.correlationId } : {}),
      received_at: this.#receivedAt(),
    };
    this.#log("warn", `${command} command${camera ? ` for ${camera}` : ""} rejected: ${code}: ${message}`);
    const topic = reply?.topic ?? (camera !== undefined ? `${this.topicPrefix}/${camera}/error` : `${this.topicPrefix}/error`);
    const properties = reply?.correlationData !== undefined ? { ...JSON_PROPERTIES, correlationData: reply.correlationData } : JSON_PROPERTIES;
    this.#enqueue(this.#message(topic, JSON.stringify(body), 1, false, undefined, properties));
  }

  #onSet(camera: string, payload: Buffer, packet: IPublishPacket): void {
    if (packet.retain) {
      this.#reject("set", camera, new FlorenceError("INVALID_ARGUMENT", "retained commands are ignored (they would run again on every reconnect)", { fix: "publish the command with retain=false, and clear the retained one with an empty retained message" }));
      return;
    }
    const setTasks = this.#handlers.setTasks;
    if (setTasks === undefined) {
      this.#reject("set", camera, new FlorenceError("ENGINE_UNAVAILABLE", "this service does not take set commands"));
      return;
    }
    let command: SetCommand;
    try {
      command = parseSetCommand(payload, camera);
    } catch (error) {
      this.#reject("set", camera, error);
      return;
    }
    if (this.#pendingCommands >= 16) {
      this.#reject("set", camera, new FlorenceError("ENGINE_UNAVAILABLE", `${this.#pendingCommands} commands are waiting`, { fix: "send commands more slowly" }));
      return;
    }
    this.#pendingCommands++;
    // commands take effect one at a time, in arrival order
    this.#commandChain = this.#commandChain.then(async () => {
      try {
        const schedule = await withTimeout(Promise.resolve().then(() => setTasks(command)), this.#handlerTimeoutMs);
        if (schedule === undefined) throw new FlorenceError("ENGINE_UNAVAILABLE", `the command was not applied within ${this.#handlerTimeoutMs} ms`);
        this.#counts.commands_ok++;
        const ack = {
          ok: true,
          command: "set",
          camera,
          tasks: schedule.map((t) => ({ task: t.task, ...(t.text !== undefined ? { text: t.text } : {}), interval_s: t.intervalS, snapshot: t.snapshot })),
          received_at: this.#receivedAt(),
        };
        this.#enqueue(this.#message(`${this.topicPrefix}/${camera}/set/result`, JSON.stringify(ack), 1, false, undefined, JSON_PROPERTIES));
      } catch (error) {
        this.#reject("set", camera, error);
      } finally {
        this.#pendingCommands--;
      }
    });
  }

  /** The known camera a rejected request's body names, so that its error goes to that camera's error topic. */
  #namedCamera(payload: Buffer): string | undefined {
    try {
      const camera = decodeCommandPayload(payload)["camera"];
      return typeof camera === "string" && this.#cameraSet.has(camera) ? camera : undefined;
    } catch {
      return undefined;
    }
  }

  #onInfer(session: Session, topicCamera: string | undefined, payload: Buffer, packet: IPublishPacket): void {
    const props = packet.properties;
    const correlationData = props?.correlationData;
    let reply: { topic: string; correlationData: Buffer | undefined; correlationId: string | undefined } | undefined;
    if (packet.retain) {
      this.#reject("infer", topicCamera, new FlorenceError("INVALID_ARGUMENT", "retained inference requests are ignored", { fix: "publish requests with retain=false" }));
      return;
    }
    if (correlationData !== undefined && correlationData.length > 1024) {
      this.#reject("infer", topicCamera, new FlorenceError("INVALID_ARGUMENT", `the correlation data is ${correlationData.length} bytes; at most 1024`));
      return;
    }
    if (props?.responseTopic !== undefined) {
      try {
        reply = { topic: checkResponseTopic(props.responseTopic, "responseTopic", this.#forbiddenReplyFilters), correlationData, correlationId: undefined };
      } catch (error) {
        this.#reject("infer", topicCamera, error);
        return;
      }
    }
    let request;
    try {
      request = parseInferRequest(payload, { topicCamera, cameras: this.cameras, forbiddenResponseFilters: this.#forbiddenReplyFilters });
    } catch (error) {
      this.#reject("infer", topicCamera ?? this.#namedCamera(payload), error, reply);
      return;
    }
    reply ??= request.responseTopic !== undefined ? { topic: request.responseTopic, correlationData, correlationId: undefined } : undefined;
    if (reply === undefined) {
      this.#reject(
        "infer",
        request.camera,
        new FlorenceError("INVALID_ARGUMENT", "the request names no reply topic", {
          fix: session.protocol === 5 ? "set the MQTT 5 response topic property, or a response_topic field" : "this broker speaks MQTT 3.1.1: add a response_topic field to the JSON request",
        }),
      );
      return;
    }
    reply.correlationId = request.correlationId;
    const infer = this.#handlers.infer;
    if (infer === undefined) {
      this.#reject("infer", request.camera, new FlorenceError("ENGINE_UNAVAILABLE", "this service does not take inference requests"), reply);
      return;
    }
    if (this.#pendingInfers >= this.#maxPendingInfers) {
      this.#reject("infer", request.camera, new FlorenceError("ENGINE_UNAVAILABLE", `${this.#pendingInfers} inference requests are waiting`, { fix: "retry later" }), reply);
      return;
    }
    this.#pendingInfers++;
    const answer = reply;
    withTimeout(infer({ camera: request.camera, task: request.task, text: request.text }), this.#handlerTimeoutMs)
      .then((result) => {
        if (result === undefined) throw new FlorenceError("ENGINE_UNAVAILABLE", `no result within ${this.#handlerTimeoutMs} ms`, { fix: "retry later" });
        this.#counts.commands_ok++;
        const body = { ok: true, ...(answer.correlationId !== undefined ? { correlation_id: answer.correlationId } : {}), result };
        const properties = answer.correlationData !== undefined ? { ...JSON_PROPERTIES, correlationData: answer.correlationData } : JSON_PROPERTIES;
        this.#enqueue(this.#message(answer.topic, JSON.stringify(body), 1, false, undefined, properties));
      })
      .catch((error: unknown) => this.#reject("infer", request.camera, error, answer))
      .finally(() => {
        this.#pendingInfers--;
      });
  }
}

/** The promise's value, or undefined once `ms` have passed. */
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
