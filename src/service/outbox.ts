/**
 * The MQTT outbox, pure (no I/O, no timers): one bounded queue of outgoing messages (messages and bytes; the oldest
 * is dropped and counted when full), connect-time control messages sent before it, and the bounded in-flight window
 * (QoS 0 writes not yet flushed plus QoS 1/2 publishes not yet acknowledged, also capped by the broker's receive
 * maximum). Messages in flight when their connection drops go back to the front of the queue (QoS ≥ 1,
 * at-least-once) or are counted as dropped (QoS 0).
 */
import { Buffer } from "node:buffer";

export type QoS = 0 | 1 | 2;

/** The MQTT 5 properties the service sets (ignored on 3.1.1). */
export interface MessageProperties {
  contentType?: string;
  correlationData?: Buffer;
}

export interface OutgoingMessage {
  topic: string;
  payload: Buffer;
  qos: QoS;
  retain: boolean;
  /** Payload and topic bytes, what the bounds count. */
  bytes: number;
  /** Messages with a key supersede the queued one with the same key (the newest state wins). */
  key: string | undefined;
  /** Connect-time messages (availability, discovery, state): regenerated on every connect, never requeued. */
  control: boolean;
  properties: MessageProperties | undefined;
}

/** What the broker of the current connection allows. */
export interface BrokerLimits {
  receiveMaximum: number;
  maximumQoS: QoS;
}

export interface OutboxLimits {
  queue: { messages: number; bytes: number };
  inflight: { messages: number; bytes: number };
}

export interface InFlight {
  message: OutgoingMessage;
  session: number;
  qos: QoS;
}

export function outgoingMessage(topic: string, payload: string | Buffer, qos: QoS, retain: boolean, key: string | undefined, properties: MessageProperties | undefined, control = false): OutgoingMessage {
  const bytes = typeof payload === "string" ? Buffer.from(payload, "utf8") : payload;
  return { topic, payload: bytes, qos, retain, bytes: bytes.length + Buffer.byteLength(topic), key, control, properties };
}

/** A FIFO with O(1) shift and unshift: a growable array with a moving head. */
class MessageQueue {
  #items: OutgoingMessage[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  peek(): OutgoingMessage | undefined {
    return this.#items[this.#head];
  }

  push(message: OutgoingMessage): void {
    this.#items.push(message);
  }

  unshift(message: OutgoingMessage): void {
    if (this.#head > 0) this.#items[--this.#head] = message;
    else this.#items.unshift(message);
  }

  shift(): OutgoingMessage | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const message = this.#items[this.#head]!;
    this.#items[this.#head] = undefined as unknown as OutgoingMessage;
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

export class Outbox {
  readonly #limits: OutboxLimits;
  readonly #queue = new MessageQueue();
  #control: OutgoingMessage[] = [];
  #queuedBytes = 0;
  #queuedReliable = 0;
  readonly #superseded = new Map<string, OutgoingMessage>();
  readonly #inflight = new Map<number, InFlight>();
  #inflightSeq = 0;
  #inflightBytes = 0;
  #inflightReliable = 0;

  /** Dropped from the full queue (or lost in flight, QoS 0) while disconnected. */
  droppedOffline = 0;
  /** Dropped from the full queue while connected: the broker or network is slower than the results. */
  droppedBackpressure = 0;

  constructor(limits: OutboxLimits) {
    this.#limits = limits;
  }

  get queued(): number {
    return this.#queue.length;
  }

  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  get inFlight(): number {
    return this.#inflight.size;
  }

  get inFlightBytes(): number {
    return this.#inflightBytes;
  }

  /** Whether a message with this key waits in the queue. */
  isQueued(key: string): boolean {
    return this.#superseded.has(key);
  }

  /** True when nothing waits: a new message may go straight out if the window has room. */
  get idle(): boolean {
    return this.#control.length === 0 && this.#queue.length === 0;
  }

  /** Replaces the connect-time messages (sent before the queue). */
  setControl(messages: OutgoingMessage[]): void {
    this.#control = messages;
  }

  addControl(message: OutgoingMessage): void {
    this.#control.push(message);
  }

  /**
   * Queues a message; a queued one with the same key is replaced in place. Drops the oldest while over the bounds,
   * counted as backpressure when `connected`, else as offline drops. Returns how many were dropped.
   */
  enqueue(message: OutgoingMessage, connected: boolean): number {
    if (message.key !== undefined) {
      const queued = this.#superseded.get(message.key);
      if (queued !== undefined) {
        this.#queuedBytes += message.bytes - queued.bytes;
        queued.payload = message.payload;
        queued.bytes = message.bytes;
        return this.#trim(connected);
      }
    }
    this.#queue.push(message);
    this.#queuedBytes += message.bytes;
    if (message.qos > 0) this.#queuedReliable++;
    if (message.key !== undefined) this.#superseded.set(message.key, message);
    return this.#trim(connected);
  }

  #takeFromQueue(): OutgoingMessage | undefined {
    const message = this.#queue.shift();
    if (message === undefined) return undefined;
    this.#queuedBytes -= message.bytes;
    if (message.qos > 0) this.#queuedReliable--;
    if (message.key !== undefined && this.#superseded.get(message.key) === message) this.#superseded.delete(message.key);
    return message;
  }

  #trim(connected: boolean): number {
    let dropped = 0;
    while (this.#queue.length > 0 && (this.#queue.length > this.#limits.queue.messages || this.#queuedBytes > this.#limits.queue.bytes)) {
      this.#takeFromQueue();
      dropped++;
    }
    if (connected) this.droppedBackpressure += dropped;
    else this.droppedOffline += dropped;
    return dropped;
  }

  /** Whether the in-flight window takes this message now (an empty window always takes one). */
  hasRoom(message: OutgoingMessage, broker: BrokerLimits): boolean {
    if (this.#inflight.size === 0) return true;
    if (this.#inflight.size >= this.#limits.inflight.messages) return false;
    if (this.#inflightBytes + message.bytes > this.#limits.inflight.bytes) return false;
    return Math.min(message.qos, broker.maximumQoS) === 0 || this.#inflightReliable < broker.receiveMaximum;
  }

  /** The next message to send (control first), taken out, if the window has room for it. */
  next(broker: BrokerLimits): OutgoingMessage | undefined {
    const next = this.#control[0] ?? this.#queue.peek();
    if (next === undefined || !this.hasRoom(next, broker)) return undefined;
    if (this.#control.length > 0) this.#control.shift();
    else this.#takeFromQueue();
    return next;
  }

  /** Records a message written on connection `session` with the granted QoS; returns its in-flight id. */
  track(message: OutgoingMessage, session: number, qos: QoS): number {
    const id = ++this.#inflightSeq;
    this.#inflight.set(id, { message, session, qos });
    this.#inflightBytes += message.bytes;
    if (qos > 0) this.#inflightReliable++;
    return id;
  }

  inFlightEntry(id: number): InFlight | undefined {
    return this.#inflight.get(id);
  }

  /** The write or acknowledgement of in-flight message `id` is done (or failed for good). */
  release(id: number): void {
    const entry = this.#inflight.get(id);
    if (entry === undefined) return;
    this.#inflight.delete(id);
    this.#inflightBytes -= entry.message.bytes;
    if (entry.qos > 0) this.#inflightReliable--;
  }

  /**
   * Connection `session` is gone: what it had in flight goes back to the front of the queue, oldest first, unless a
   * newer state for the same key is queued; QoS 0 is counted as dropped, control messages are forgotten.
   */
  requeue(session: number): void {
    const back: OutgoingMessage[] = [];
    let lost = 0;
    for (const [id, entry] of this.#inflight) {
      if (entry.session !== session) continue;
      this.release(id);
      if (entry.message.control) continue;
      if (entry.qos > 0) back.push(entry.message);
      else lost++;
    }
    for (let i = back.length - 1; i >= 0; i--) {
      const message = back[i]!;
      if (message.key !== undefined && this.#superseded.has(message.key)) continue;
      this.#queue.unshift(message);
      this.#queuedBytes += message.bytes;
      if (message.qos > 0) this.#queuedReliable++;
      if (message.key !== undefined) this.#superseded.set(message.key, message);
    }
    this.droppedOffline += lost;
    this.#control = [];
    this.#trim(false);
  }

  /** QoS ≥ 1 messages not yet acknowledged: queued, control or in flight. */
  reliablePending(): number {
    let control = 0;
    for (const message of this.#control) if (message.qos > 0) control++;
    return this.#queuedReliable + this.#inflightReliable + control;
  }

  /** Forgets everything (on stop). */
  clear(): void {
    this.#queue.clear();
    this.#control = [];
    this.#superseded.clear();
    this.#queuedBytes = 0;
    this.#queuedReliable = 0;
    this.#inflight.clear();
    this.#inflightBytes = 0;
    this.#inflightReliable = 0;
  }
}
