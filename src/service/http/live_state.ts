/**
 * What the live view shows, kept as results arrive: per camera its newest processed frame, its latest result per
 * task and its source's state; the newest frame annotated with every task's answer on it (rendered once per frame,
 * when someone asks); and the stream of results and state changes to the browsers subscribed to it (each with a
 * bounded backlog: a subscriber that stops reading is dropped, not buffered without end).
 */
import type { SnapshotOverlay } from "../../florence/image.ts";
import { describeAnswer } from "../console_view.ts";
import { mergeOverlays, overlayFromResult } from "../overlay.ts";
import type { Frame, ResultMessage, SourceStatus } from "../types.ts";

/** Draws an overlay on a frame: a JPEG (renderSnapshot). */
export type Renderer = (frame: Frame, overlay: SnapshotOverlay) => Promise<Uint8Array>;

interface CameraRecord {
  frame: Frame | undefined;
  results: Map<string, { message: ResultMessage; overlay: SnapshotOverlay }>;
  status: SourceStatus | undefined;
  annotated: { seq: number; jpeg: Promise<Uint8Array> } | undefined;
}

/** A result as the page and the event stream carry it: the published message and a line a person reads. */
export type ResultEvent = ResultMessage & { summary: string };

export interface Subscriber {
  /** Sends one event; false when the subscriber cannot keep up (it is then dropped). */
  send(event: string, data: unknown): boolean;
  close(): void;
}

export class LiveState {
  readonly #cameras = new Map<string, CameraRecord>();
  readonly #subscribers = new Set<Subscriber>();
  readonly #render: Renderer;
  readonly maxSubscribers: number;

  constructor(cameras: readonly string[], render: Renderer, maxSubscribers = 32) {
    for (const name of cameras) this.#cameras.set(name, { frame: undefined, results: new Map(), status: undefined, annotated: undefined });
    this.#render = render;
    this.maxSubscribers = maxSubscribers;
  }

  get cameraNames(): string[] {
    return [...this.#cameras.keys()];
  }

  has(camera: string): boolean {
    return this.#cameras.has(camera);
  }

  /** A published result with the frame it was computed on. */
  result(message: ResultMessage, frame: Frame): void {
    const record = this.#cameras.get(message.camera);
    if (!record) return;
    let overlay: SnapshotOverlay = {};
    try {
      overlay = overlayFromResult(message.result, { task: message.task });
    } catch {
      // a result the overlay cannot draw still shows as text
    }
    if (!record.frame || frame.seq >= record.frame.seq) record.frame = frame;
    record.results.set(message.task, { message, overlay });
    this.#broadcast("result", this.#event(message));
  }

  status(status: SourceStatus): void {
    const record = this.#cameras.get(status.camera);
    if (!record) return;
    record.status = status;
    this.#broadcast("status", status);
  }

  statusOf(camera: string): SourceStatus | undefined {
    return this.#cameras.get(camera)?.status;
  }

  /** The latest result of each task on the camera, newest frame first. */
  results(camera: string): ResultEvent[] {
    const record = this.#cameras.get(camera);
    if (!record) return [];
    return [...record.results.values()].map((r) => this.#event(r.message)).sort((a, b) => b.frame - a.frame);
  }

  /** The newest frame with the boxes of the tasks run on it and the latest caption; undefined before any result. */
  annotatedFrame(camera: string): { seq: number; jpeg: Promise<Uint8Array> } | undefined {
    const record = this.#cameras.get(camera);
    const frame = record?.frame;
    if (!record || !frame) return undefined;
    if (record.annotated?.seq !== frame.seq) {
      // boxes belong to their frame; a caption (which may run every few seconds) stays up until the next one
      const overlays = [...record.results.values()].filter((r) => r.message.frame === frame.seq || (r.overlay.caption !== undefined && !r.overlay.boxes && !r.overlay.polygons && !r.overlay.quads)).map((r) => r.overlay);
      const jpeg = this.#render(frame, mergeOverlays(overlays));
      jpeg.catch(() => undefined);
      record.annotated = { seq: frame.seq, jpeg };
    }
    return record.annotated;
  }

  /** Adds a subscriber to the stream of `result` and `status` events; false when there are too many already. */
  subscribe(subscriber: Subscriber): boolean {
    if (this.#subscribers.size >= this.maxSubscribers) return false;
    this.#subscribers.add(subscriber);
    return true;
  }

  unsubscribe(subscriber: Subscriber): void {
    this.#subscribers.delete(subscriber);
  }

  get subscribers(): number {
    return this.#subscribers.size;
  }

  /** Ends every subscriber's stream (the service is stopping). */
  close(): void {
    for (const subscriber of this.#subscribers) subscriber.close();
    this.#subscribers.clear();
  }

  #event(message: ResultMessage): ResultEvent {
    return { ...message, summary: describeAnswer(message.result[message.task]) };
  }

  #broadcast(event: string, data: unknown): void {
    for (const subscriber of [...this.#subscribers]) {
      if (!subscriber.send(event, data)) {
        this.#subscribers.delete(subscriber);
        subscriber.close();
      }
    }
  }
}
