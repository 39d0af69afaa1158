/**
 * The MQTT link: the only module that imports `mqtt`. It keeps one connection to the broker, knows nothing of what
 * travels over it, and reports connects, incoming messages and losses to its owner.
 *
 * mqtt.js's own offline queue and reconnect are disabled: each connection is a fresh client (a session), and
 * reconnects back off exponentially with jitter. Protocol "auto" asks for MQTT 5 and falls back to 3.1.1 when the
 * broker refuses the protocol version (aedes, old brokers).
 */
import { Buffer } from "node:buffer";
import { connect, type IClientOptions, type IClientPublishOptions, type IConnackPacket, type IPublishPacket, type MqttClient } from "mqtt";
import { jitteredBackoffDelay } from "./backoff.ts";
import type { MessageProperties, QoS } from "./outbox.ts";
import { maskUrl } from "./redact.ts";

export type MqttProtocolChoice = "auto" | 4 | 5;
export type MqttLinkState = "idle" | "connecting" | "online" | "offline" | "stopping" | "stopped";
export type LogLevel = "debug" | "info" | "warn" | "error";

/** One connection (one mqtt.js client) and what its broker allows. */
export interface LinkSession {
  readonly id: number;
  readonly protocol: 4 | 5;
  /** CONNACK received and the connection not (known to be) lost. */
  connected: boolean;
  receiveMaximum: number;
  maximumQoS: QoS;
  retainAvailable: boolean;
  maximumPacketSize: number | undefined;
}

interface Session extends LinkSession {
  client: MqttClient;
  refusedProtocol: boolean;
}

/** An incoming message as the command router needs it. */
export interface IncomingMessage {
  topic: string;
  payload: Buffer;
  retain: boolean;
  responseTopic: string | undefined;
  correlationData: Buffer | undefined;
  protocol: 4 | 5;
}

/** How a publish ended: written or acknowledged, refused for the message itself, or cut off with its connection. */
export type PublishOutcome = { ok: true } | { ok: false; connectionLost: true } | { ok: false; connectionLost: false; error: Error };

export interface MqttLinkOptions {
  url: string;
  clientId: string;
  protocol: MqttProtocolChoice;
  keepaliveS: number;
  connectTimeoutMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  username?: string | undefined;
  password?: Buffer | undefined;
  tls: { ca?: Buffer[] | undefined; cert?: Buffer | undefined; key?: Buffer | undefined; rejectUnauthorized: boolean };
  /** Published by the broker when the connection dies (retained). */
  will: { topic: string; payload: string };
  /** Subscribed (QoS 1) on every connect. */
  subscriptions: readonly string[];
  /** For the "connection lost" line: how many messages wait. */
  queued: () => number;
  log: (level: LogLevel, message: string) => void;
}

export interface MqttLinkEvents {
  connected(session: LinkSession): void;
  message(session: LinkSession, message: IncomingMessage): void;
  /** The connection closed; what it had in flight is the owner's to requeue. */
  closed(session: LinkSession): void;
}

// MQTT 5 reason codes (and the 3.1.1 return code 1) that mean "I do not speak this protocol version"
const UNSUPPORTED_PROTOCOL = new Set([1, 0x84]);
// how mqtt.js fails the callbacks of publishes cut off by a lost connection (as opposed to a refused message)
const CONNECTION_ERROR = /connection closed|no connection|disconnecting/i;

export class MqttLink {
  readonly #options: MqttLinkOptions;
  readonly #events: MqttLinkEvents;
  readonly #clientOptions: IClientOptions;
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
  #stopping = false;
  readonly #onlineWaiters = new Set<() => void>();

  readonly counts = { connect_attempts: 0, reconnects: 0, disconnects: 0 };

  constructor(options: MqttLinkOptions, events: MqttLinkEvents) {
    this.#options = options;
    this.#events = events;
    this.#protocol = options.protocol === 4 ? 4 : 5;
    const tls = options.tls;
    this.#clientOptions = {
      clientId: options.clientId,
      keepalive: options.keepaliveS,
      connectTimeout: options.connectTimeoutMs,
      // reconnects, offline queueing and resubscription are done by the publisher, bounded
      reconnectPeriod: 0,
      queueQoSZero: false,
      resubscribe: false,
      clean: true,
      ...(options.username !== undefined ? { username: options.username } : {}),
      ...(options.password !== undefined ? { password: options.password } : {}),
      ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
      ...(tls.cert !== undefined ? { cert: tls.cert } : {}),
      ...(tls.key !== undefined ? { key: tls.key } : {}),
      rejectUnauthorized: tls.rejectUnauthorized,
      will: { topic: options.will.topic, payload: Buffer.from(options.will.payload), qos: 1, retain: true },
    };
  }

  get state(): MqttLinkState {
    return this.#state;
  }

  /** The protocol of the current or last connection (4 = MQTT 3.1.1, 5 = MQTT 5), null before the first. */
  get protocolVersion(): 4 | 5 | null {
    return this.#negotiated;
  }

  /** The delay before the next connection attempt while offline, else null. */
  get nextRetryMs(): number | null {
    return this.#nextRetryMs;
  }

  /** The connection messages may be sent on now, if any. */
  get session(): LinkSession | undefined {
    return this.#session?.connected ? this.#session : undefined;
  }

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

  /** Writes one message on `session`; `done` tells how it ended. */
  publish(session: LinkSession, topic: string, payload: Buffer, qos: QoS, retain: boolean, properties: MessageProperties | undefined, done: (outcome: PublishOutcome) => void): void {
    const s = session as Session;
    const options: IClientPublishOptions = { qos, retain: retain && s.retainAvailable };
    if (s.protocol === 5 && properties !== undefined) options.properties = properties;
    s.client.publish(topic, payload, options, (error) => {
      if (!error) return done({ ok: true });
      const code = (error as { code?: unknown }).code;
      if (typeof code !== "number" && (CONNECTION_ERROR.test(error.message) || !s.client.connected)) {
        // the connection is going: the close handler hands back what is still in flight, in order
        s.connected = false;
        return done({ ok: false, connectionLost: true });
      }
      done({ ok: false, connectionLost: false, error });
    });
  }

  /** No more reconnects; returns the connection to close with `end` (after a last word on it), if connected. */
  beginStop(): LinkSession | undefined {
    this.#stopping = true;
    this.#state = "stopping";
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#nextRetryMs = null;
    return this.#session?.connected ? this.#session : undefined;
  }

  /** Publishes `payload` (retained, QoS 1) and resolves when acknowledged or failed: the clean shutdown's last word. */
  lastWord(session: LinkSession, topic: string, payload: string): Promise<void> {
    return new Promise<void>((resolve) => (session as Session).client.publish(topic, Buffer.from(payload), { qos: 1, retain: true }, () => resolve()));
  }

  /** Disconnects cleanly (the broker discards the Last Will), waiting at most `timeoutMs`, then closes the socket. */
  async end(timeoutMs: number): Promise<void> {
    const session = this.#session;
    // from here on its close is not a connection loss
    this.#session = undefined;
    if (session) {
      const ended = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), timeoutMs);
        session.client.end(!session.connected, { reasonCode: 0 }, () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      if (!ended) this.#options.log("warn", "the broker did not complete the disconnect in time; closed the socket");
      this.#dispose(session);
    }
    this.#state = "stopped";
  }

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
    this.counts.connect_attempts++;
    this.#nextRetryMs = null;
    const options: IClientOptions = {
      ...this.#clientOptions,
      protocolVersion: protocol,
      // commands are at most 16 KiB: a broker must not push anything much larger at us
      ...(protocol === 5 ? { properties: { maximumPacketSize: 256 * 1024, sessionExpiryInterval: 0 } } : {}),
    };
    const url = maskUrl(this.#options.url);
    this.#options.log("debug", `connecting to ${url} with MQTT ${protocol === 5 ? "5" : "3.1.1"}`);
    this.#session = session;
    try {
      session.client = connect(this.#options.url, options);
    } catch (error) {
      this.#session = undefined;
      this.#lastError = (error as Error).message;
      this.#options.log("error", `cannot connect to ${url}: ${this.#lastError}`);
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
    const choice = this.#options.protocol;
    const url = maskUrl(this.#options.url);
    if (session.protocol === 5 && choice === "auto" && typeof code === "number" && UNSUPPORTED_PROTOCOL.has(code)) {
      session.refusedProtocol = true;
      this.#protocol = 4;
      this.#options.log("info", `${url} does not speak MQTT 5; using MQTT 3.1.1 (MQTT 5 request/response unavailable: infer requests must carry response_topic in their JSON)`);
      return;
    }
    const text = typeof code === "number" && UNSUPPORTED_PROTOCOL.has(code) && choice === 5
      ? `${error.message} — this broker does not speak MQTT 5: set the protocol to "auto" or 4`
      : error.message;
    // the first failure of a streak is a warning, its repetitions are debug noise
    this.#options.log(this.#lastError === text ? "debug" : "warn", `MQTT ${url}: ${text}`);
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
    if (this.#everConnected) this.counts.reconnects++;
    this.#everConnected = true;
    this.#state = "online";
    const log = this.#options.log;
    log("info", `MQTT connected to ${maskUrl(this.#options.url)} (MQTT ${session.protocol === 5 ? "5" : "3.1.1"}, client id ${this.#options.clientId})`);
    if (session.protocol === 4 && !this.#warnedV4) {
      this.#warnedV4 = true;
      log("warn", "MQTT 5 request/response is unavailable on this broker: infer requests must name their reply topic in a response_topic field");
    }
    const subscriptions: Record<string, { qos: QoS }> = {};
    for (const filter of this.#options.subscriptions) subscriptions[filter] = { qos: 1 };
    session.client.subscribe(subscriptions, (error) => {
      if (error && session === this.#session) log("error", `cannot subscribe to the command topics: ${error.message}`);
    });
    this.#events.connected(session);
    for (const waiter of [...this.#onlineWaiters]) waiter();
  }

  #onMessage(session: Session, topic: string, payload: Buffer, packet: IPublishPacket): void {
    if (session !== this.#session || this.#stopping) return;
    const props = packet.properties;
    this.#events.message(session, { topic, payload, retain: packet.retain, responseTopic: props?.responseTopic, correlationData: props?.correlationData, protocol: session.protocol });
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
    this.#events.closed(session);
    if (this.#stopping) return;
    if (wasConnected) {
      this.counts.disconnects++;
      this.#options.log("warn", `MQTT connection to ${maskUrl(this.#options.url)} lost; ${this.#options.queued()} messages queued`);
    }
    this.#state = "offline";
    this.#scheduleReconnect(session.refusedProtocol);
  }

  #scheduleReconnect(immediately: boolean): void {
    if (this.#stopping || this.#retryTimer !== undefined) return;
    const delay = immediately ? 0 : jitteredBackoffDelay(this.#attempt++, this.#options.reconnectMinMs, this.#options.reconnectMaxMs);
    this.#nextRetryMs = delay;
    if (!immediately) this.#options.log("debug", `MQTT reconnecting in ${delay} ms`);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      if (!this.#stopping) this.#connect();
    }, delay);
  }
}
