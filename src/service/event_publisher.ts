/**
 * The events of `florence-edge serve`: each camera's detection results go through its CameraEvents (src/events/,
 * pure) and what comes out is published — events on `<prefix>/events`, retained counts, the best view of each
 * label's object as a JPEG with its box drawn (overlay.ts), descriptions on `<prefix>/tracked_object_update` — and
 * the Home Assistant device learns each label as it is first seen. Descriptions are background jobs of the camera
 * loop: they wait in its bounded queue and never hold up detection (loop.ts).
 */
import { CameraEvents, type DescriptionRequest, type EventMessage, type EventsOutput, type SnapshotRequest } from "../events/camera_events.ts";
import { detectionsOf, type DetectionFilter, filterDetections } from "../events/detections.ts";
import type { TaskResult } from "../florence/florence2.ts";
import { decodeImage, type RgbImage, renderSnapshot } from "../florence/image.ts";
import { DESCRIPTION_TASKS, type EventsConfig } from "./events_config.ts";
import type { Logger } from "./log.ts";
import { type BackgroundJob, frameImage } from "./loop.ts";
import type { ServiceMetrics } from "./metrics.ts";
import type { MqttPublisher } from "./mqtt.ts";
import { overlayFromResult } from "./overlay.ts";
import type { CameraConfig } from "./service_config.ts";
import type { Frame } from "./types.ts";

/** Where the events go: the MQTT publisher's event methods (a narrower face for tests). */
export type EventSink = Pick<MqttPublisher, "publishEvent" | "publishCount" | "publishObjectSnapshot" | "publishObjectUpdate" | "setEventEntities">;

export interface EventPublisherOptions {
  cameras: readonly CameraConfig[];
  sink: EventSink;
  /** Queues a description (CameraLoop.enqueueBackground); false when its queue is full. */
  background(job: BackgroundJob): boolean;
  metrics?: ServiceMetrics;
  log?: Logger;
  /** Each event as it is published (the console view of `npm start`). */
  onEvent?: (event: EventMessage) => void;
}

interface CameraState {
  config: CameraConfig;
  events: CameraEvents;
  filter: DetectionFilter;
}

/** Characters of a description kept (a caption of a crop can run long). */
const MAX_DESCRIPTION = 1000;

/** The crop of `box` with a margin of a tenth of its size each side, clipped to the image. */
export function cropImage(image: RgbImage, box: readonly number[]): RgbImage {
  const mx = (box[2]! - box[0]!) / 10;
  const my = (box[3]! - box[1]!) / 10;
  const x0 = Math.max(0, Math.floor(box[0]! - mx));
  const y0 = Math.max(0, Math.floor(box[1]! - my));
  const x1 = Math.min(image.width, Math.ceil(box[2]! + mx));
  const y1 = Math.min(image.height, Math.ceil(box[3]! + my));
  const width = Math.max(1, x1 - x0);
  const height = Math.max(1, y1 - y0);
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const from = ((y0 + y) * image.width + x0) * 3;
    data.set(image.data.subarray(from, from + width * 3), y * width * 3);
  }
  return { width, height, data };
}

/** The text of a text task's result (`{ "<REGION_TO_DESCRIPTION>": "red circle" }`), trimmed; undefined if none. */
export function descriptionText(result: Record<string, unknown>, task: string): string | undefined {
  const answer = result[task];
  const text = typeof answer === "string" ? answer : typeof (answer as { content?: unknown } | undefined)?.content === "string" ? (answer as { content: string }).content : undefined;
  const trimmed = text?.replace(/<\/?s>|<pad>/g, "").trim();
  return trimmed ? trimmed.slice(0, MAX_DESCRIPTION) : undefined;
}

export class EventPublisher {
  readonly #options: EventPublisherOptions;
  readonly #cameras = new Map<string, CameraState>();

  constructor(options: EventPublisherOptions) {
    this.#options = options;
    for (const config of options.cameras) {
      if (!config.events.enabled) continue;
      const e: EventsConfig = config.events;
      const described = e.description?.labels ?? [];
      this.#cameras.set(config.name, {
        config,
        filter: { labels: e.labels, filters: e.filters },
        events: new CameraEvents({
          camera: config.name,
          tracker: { minHits: e.minHits, maxAgeS: e.maxAgeS, stationaryS: e.stationaryS },
          zones: config.zones,
          updateIntervalS: e.updateIntervalS,
          snapshots: e.snapshots,
          describe: e.description === undefined ? undefined : (label) => described.length === 0 || described.includes(label),
        }),
      });
    }
  }

  /** The cameras whose events are on. */
  get cameras(): string[] {
    return [...this.#cameras.keys()];
  }

  /** Per camera: objects in view, detections not tracked because the tracker was full, labels past the counted ones. */
  stats(): Record<string, { live_objects: number; dropped_detections: number; uncounted_labels: number }> {
    return Object.fromEntries([...this.#cameras].map(([name, s]) => [name, { live_objects: s.events.size, dropped_detections: s.events.tracker.droppedDetections, uncounted_labels: s.events.uncountedLabels }]));
  }

  /** Announces each camera's entities and publishes 0 for its known counts (a last run's retained counts go). */
  start(): void {
    for (const [name, state] of this.#cameras) {
      const out = state.events.initialCounts(state.config.events.labels);
      for (const c of out) this.#options.sink.publishCount(name, c.zone, c.label, c.count);
      this.#announce(state);
    }
  }

  /** A task's result on a camera's frame: tracked when it is the camera's detection task. */
  result(camera: string, frame: Frame, taskResult: TaskResult): void {
    const state = this.#cameras.get(camera);
    if (state === undefined || taskResult.task !== state.config.events.task) return;
    const size = taskResult.image_size;
    const detections = filterDetections(detectionsOf(taskResult.result, state.config.events.task), state.filter, size);
    this.#handle(state, state.events.observe(frame.capturedAt, detections, size), frame);
  }

  /** Ends the objects not seen for too long (no frame may have come). */
  tick(now: number): void {
    for (const state of this.#cameras.values()) this.#handle(state, state.events.tick(now), undefined);
  }

  /** Ends every object (the service stops): their `end` events and counts back to 0. */
  finish(): void {
    for (const state of this.#cameras.values()) this.#handle(state, state.events.finish(), undefined);
  }

  /** A message handed to MQTT, for the stats (published before counting: `metrics?.` would skip the call). */
  #count(kind: string, ok: boolean, bytes = 0): void {
    this.#options.metrics?.published(kind, bytes, ok);
  }

  #announce(state: CameraState): void {
    this.#options.sink.setEventEntities(state.config.name, {
      labels: state.events.labels(),
      zones: state.config.zones.map((z) => ({ name: z.name, labels: [...z.labels] })),
    });
  }

  #handle(state: CameraState, out: EventsOutput, frame: Frame | undefined): void {
    const { sink } = this.#options;
    const camera = state.config.name;
    for (const event of out.events) {
      this.#count("event", sink.publishEvent(event));
      this.#options.onEvent?.(event);
    }
    for (const c of out.counts) this.#count("count", sink.publishCount(camera, c.zone, c.label, c.count));
    for (const update of out.objectUpdates) this.#count("tracked_object_update", sink.publishObjectUpdate(update));
    if (out.labelsChanged) this.#announce(state);
    if (frame === undefined) return;
    for (const request of out.snapshots) void this.#snapshot(camera, frame, request);
    for (const request of out.descriptions) void this.#describe(state, frame, request);
  }

  async #snapshot(camera: string, frame: Frame, request: SnapshotRequest): Promise<void> {
    try {
      const overlay = overlayFromResult({ "<OD>": { bboxes: [request.box], labels: [request.label], scores: [request.score] } });
      const jpeg = await renderSnapshot(frameImage(frame), overlay, { quality: 80, maxWidth: 1280 });
      this.#count("object_snapshot", this.#options.sink.publishObjectSnapshot(camera, request.label, jpeg), jpeg.length);
    } catch (error) {
      this.#options.log?.warn("event snapshot failed", { camera, id: request.id, error: String((error as Error).message ?? error) });
    }
  }

  async #describe(state: CameraState, frame: Frame, request: DescriptionRequest): Promise<void> {
    const task = state.config.events.description!.task;
    const camera = state.config.name;
    const region = DESCRIPTION_TASKS[task] === "region";
    let image: RgbImage | Uint8Array;
    try {
      const whole = frameImage(frame);
      image = region ? whole : cropImage(whole instanceof Uint8Array ? await decodeImage(whole) : whole, request.box);
    } catch (error) {
      this.#options.log?.warn("description skipped: the frame could not be decoded", { camera, id: request.id, error: String((error as Error).message ?? error) });
      return;
    }
    const text = region ? request.box.map(Math.round).join(",") : undefined;
    const queued = this.#options.background({
      camera,
      image,
      task,
      text,
      done: (result) => {
        const description = descriptionText(result.result, task);
        if (description !== undefined) this.#handle(state, state.events.describe(request.id, request.label, description), undefined);
      },
      failed: (error) => {
        const stopping = (error as { code?: string }).code === "ENGINE_UNAVAILABLE";
        this.#options.log?.log(stopping ? "debug" : "warn", "description failed", { camera, id: request.id, error: String((error as Error).message ?? error) });
      },
    });
    if (!queued) this.#options.log?.debug("description dropped: the queue is full", { camera, id: request.id });
  }
}
