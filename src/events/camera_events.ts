/**
 * One camera's events, pure: detections in, what to publish out. Tracking (tracker.ts) gives objects; this adds
 * their zones (zones.ts), and turns their lives into Frigate-shaped messages:
 *   - events `{type: new | update | end, before, after}`: `new` once an object is confirmed, `end` once it is gone,
 *     `update` only on a meaningful change — zones, stationary, snapshot or description at once; a move or a better
 *     score no more often than `updateIntervalS`;
 *   - counts of live objects per label and per zone (and of all labels), only when they change;
 *   - snapshot requests (the best view so far: whole in the frame first, then a higher score or a larger box), at
 *     `new` and then at most every `updateIntervalS`;
 *   - description requests, one per object of the described labels, once it is wholly in view (or seen ten times);
 *     `describe()` brings the text back as an update and a `tracked_object_update`.
 * Memory is bounded: the tracker's `maxTracks` objects, and counts for at most `maxLabels` labels.
 */
import { type Box, boxArea, boxIoU, type FrameSize, roundBox, touchesEdge } from "./boxes.ts";
import { type Detection, ObjectTracker, type Track, type TrackerOptions } from "./tracker.ts";
import { CameraZones, ObjectZones, type ZoneSpec } from "./zones.ts";

export interface CameraEventsOptions {
  camera: string;
  tracker?: TrackerOptions;
  zones?: readonly ZoneSpec[];
  /** Least seconds between two updates of an object that only moved or scored better (default 5). */
  updateIntervalS?: number;
  /** Take snapshots (default true). */
  snapshots?: boolean;
  /** Which labels get a description (default none). */
  describe?: (label: string) => boolean;
  /** Labels with counts at most (default 32); labels past it are tracked but not counted. */
  maxLabels?: number;
}

/** A tracked object as the events carry it (Frigate's field names; times in seconds since the epoch). */
export interface TrackedObjectPayload {
  id: string;
  camera: string;
  label: string;
  score: number | null;
  top_score: number | null;
  box: [number, number, number, number];
  area: number;
  current_zones: string[];
  entered_zones: string[];
  start_time: number;
  end_time: number | null;
  frame_time: number;
  stationary: boolean;
  has_snapshot: boolean;
  description: string | null;
}

export interface EventMessage {
  type: "new" | "update" | "end";
  before: TrackedObjectPayload;
  after: TrackedObjectPayload;
}

/** A count that changed: of one label (undefined: all labels), on the whole camera or in one zone. */
export interface CountChange {
  zone: string | undefined;
  label: string | undefined;
  count: number;
}

export interface SnapshotRequest {
  id: string;
  label: string;
  box: [number, number, number, number];
  score: number | null;
}

export interface DescriptionRequest {
  id: string;
  label: string;
  box: [number, number, number, number];
}

export interface DescriptionUpdate {
  type: "description";
  id: string;
  camera: string;
  label: string;
  description: string;
}

export interface EventsOutput {
  events: EventMessage[];
  counts: CountChange[];
  snapshots: SnapshotRequest[];
  descriptions: DescriptionRequest[];
  objectUpdates: DescriptionUpdate[];
  /** The set of counted labels grew (discovery may want to know). */
  labelsChanged: boolean;
}

interface Shot {
  box: Box;
  score: number | null;
  edge: boolean;
  time: number;
}

interface ObjectRecord {
  track: Track;
  zones: ObjectZones;
  published: TrackedObjectPayload | undefined;
  publishedAt: number;
  shot: Shot | undefined;
  description: string | null;
  describeRequested: boolean;
  frameTime: number;
}

/** Updates that only moved need the box to overlap the last published one less than this. */
const MOVED_IOU = 0.5;
const BETTER_SCORE = 0.05;
/** Observations after which an object never wholly in view is described all the same. */
const DESCRIBE_AFTER_HITS = 10;

function emptyOutput(): EventsOutput {
  return { events: [], counts: [], snapshots: [], descriptions: [], objectUpdates: [], labelsChanged: false };
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function betterShot(candidate: Shot, current: Shot | undefined): boolean {
  if (current === undefined) return true;
  if (current.edge !== candidate.edge) return current.edge;
  const was = current.score ?? 0;
  const now = candidate.score ?? 0;
  return now > was + BETTER_SCORE || (now >= was - 0.02 && boxArea(candidate.box) > 1.2 * boxArea(current.box));
}

function countKey(zone: string | undefined, label: string | undefined): string {
  return `${zone ?? ""}\u0000${label ?? ""}`;
}

export class CameraEvents {
  readonly camera: string;
  readonly tracker: ObjectTracker;
  readonly #zones: CameraZones;
  readonly #updateMs: number;
  readonly #snapshots: boolean;
  readonly #describe: (label: string) => boolean;
  readonly #maxLabels: number;
  readonly #objects = new Map<string, ObjectRecord>();
  readonly #counts = new Map<string, CountChange>();
  readonly #labels = new Set<string>();
  #frame: FrameSize = { width: 0, height: 0 };
  /** Labels seen past `maxLabels`: tracked, not counted. */
  uncountedLabels = 0;

  constructor(options: CameraEventsOptions) {
    this.camera = options.camera;
    this.tracker = new ObjectTracker({ idSalt: options.camera, ...options.tracker });
    this.#zones = new CameraZones(options.zones ?? []);
    this.#updateMs = (options.updateIntervalS ?? 5) * 1000;
    this.#snapshots = options.snapshots ?? true;
    this.#describe = options.describe ?? (() => false);
    this.#maxLabels = options.maxLabels ?? 32;
  }

  /** The labels that have counts, in the order first seen. */
  labels(): string[] {
    return [...this.#labels];
  }

  /** Live objects (confirmed), for tests and the stats. */
  get size(): number {
    return this.#objects.size;
  }

  /** Counts to publish before any detection (0 for each known label and zone): clears what a last run retained. */
  initialCounts(labels: readonly string[]): CountChange[] {
    for (const label of labels) this.#countLabel(label);
    const out = emptyOutput();
    this.#publishCounts(out, true);
    return out.counts;
  }

  /** One frame's detections, taken at `time` (ms since the epoch). */
  observe(time: number, detections: readonly Detection[], frame: FrameSize): EventsOutput {
    this.#frame = frame;
    const out = emptyOutput();
    const update = this.tracker.update(time, detections, frame);
    for (const track of update.confirmed) {
      this.#objects.set(track.id, {
        track,
        zones: new ObjectZones(this.#zones.zones, track.label),
        published: undefined,
        publishedAt: 0,
        shot: undefined,
        description: null,
        describeRequested: false,
        frameTime: time,
      });
      if (this.#countLabel(track.label)) out.labelsChanged = true;
    }
    for (const track of update.matched) this.#observed(this.#objects.get(track.id)!, time, out);
    this.#end(update.ended, out);
    this.#publishCounts(out, false);
    return out;
  }

  /** Time passes without a frame: objects unseen for too long end. */
  tick(time: number): EventsOutput {
    const out = emptyOutput();
    if (this.#frame.width === 0) return out;
    this.#end(this.tracker.tick(time, this.#frame), out);
    this.#publishCounts(out, false);
    return out;
  }

  /** Ends every object (the service stops). */
  finish(): EventsOutput {
    const out = emptyOutput();
    this.#end(this.tracker.finish(), out);
    this.#publishCounts(out, false);
    return out;
  }

  /** A description is ready: a `tracked_object_update`, and an update of the object if it is still there. */
  describe(id: string, label: string, text: string): EventsOutput {
    const out = emptyOutput();
    out.objectUpdates.push({ type: "description", id, camera: this.camera, label, description: text });
    const record = this.#objects.get(id);
    if (record !== undefined) {
      record.description = text;
      this.#publishIfChanged(record, record.frameTime, out, false);
    }
    return out;
  }

  #observed(record: ObjectRecord, time: number, out: EventsOutput): void {
    const track = record.track;
    record.frameTime = time;
    record.zones.observe(track.box, this.#frame, (zone) => this.#zones.pixels(zone, this.#frame));
    let better = false;
    if (this.#snapshots) {
      const shot: Shot = { box: track.box, score: track.score, edge: touchesEdge(track.box, this.#frame), time };
      if (betterShot(shot, record.shot) && (record.shot === undefined || time - record.shot.time >= this.#updateMs)) {
        record.shot = shot;
        better = true;
        out.snapshots.push({ id: track.id, label: track.label, box: roundBox(track.box), score: track.score });
      }
    }
    if (!record.describeRequested && this.#describe(track.label) && (!touchesEdge(track.box, this.#frame) || track.hits >= DESCRIBE_AFTER_HITS)) {
      record.describeRequested = true;
      out.descriptions.push({ id: track.id, label: track.label, box: roundBox(track.box) });
    }
    if (record.published === undefined) {
      const payload = this.#payload(record, null);
      out.events.push({ type: "new", before: payload, after: payload });
      record.published = payload;
      record.publishedAt = time;
      return;
    }
    this.#publishIfChanged(record, time, out, better);
  }

  #publishIfChanged(record: ObjectRecord, time: number, out: EventsOutput, betterSnapshot: boolean): void {
    const before = record.published!;
    const after = this.#payload(record, null);
    const changed = !sameList(before.current_zones, after.current_zones) || !sameList(before.entered_zones, after.entered_zones) ||
      before.stationary !== after.stationary || before.has_snapshot !== after.has_snapshot || before.description !== after.description;
    const moved = boxIoU(before.box, after.box) < MOVED_IOU || (after.top_score ?? 0) >= (before.top_score ?? 0) + BETTER_SCORE || betterSnapshot;
    if (!changed && !(moved && time - record.publishedAt >= this.#updateMs)) return;
    out.events.push({ type: "update", before, after });
    record.published = after;
    record.publishedAt = time;
  }

  #end(tracks: readonly Track[], out: EventsOutput): void {
    for (const track of tracks) {
      const record = this.#objects.get(track.id);
      if (record === undefined) continue;
      this.#objects.delete(track.id);
      const after = this.#payload(record, track.lastSeen);
      out.events.push({ type: "end", before: record.published ?? after, after });
    }
  }

  #payload(record: ObjectRecord, endTime: number | null): TrackedObjectPayload {
    const t = record.track;
    return {
      id: t.id,
      camera: this.camera,
      label: t.label,
      score: t.score,
      top_score: t.topScore,
      box: roundBox(t.box),
      area: Math.round(boxArea(t.box)),
      current_zones: endTime === null ? record.zones.current() : [],
      entered_zones: [...record.zones.entered],
      start_time: t.startTime / 1000,
      end_time: endTime === null ? null : endTime / 1000,
      frame_time: t.lastSeen / 1000,
      stationary: t.stationary,
      has_snapshot: record.shot !== undefined,
      description: record.description,
    };
  }

  /** Adds a label to the counted ones; true when it is new. */
  #countLabel(label: string): boolean {
    if (this.#labels.has(label)) return false;
    if (this.#labels.size >= this.#maxLabels) {
      this.uncountedLabels++;
      return false;
    }
    this.#labels.add(label);
    return true;
  }

  #publishCounts(out: EventsOutput, all: boolean): void {
    const now = new Map<string, CountChange>();
    const add = (zone: string | undefined, label: string | undefined) => {
      const key = countKey(zone, label);
      const entry = now.get(key);
      if (entry) entry.count++;
      else now.set(key, { zone, label, count: 1 });
    };
    const zero = (zone: string | undefined, label: string | undefined) => {
      if (!now.has(countKey(zone, label))) now.set(countKey(zone, label), { zone, label, count: 0 });
    };
    zero(undefined, undefined);
    for (const zone of this.#zones.zones) zero(zone.name, undefined);
    for (const label of this.#labels) zero(undefined, label);
    for (const record of this.#objects.values()) {
      const label = this.#labels.has(record.track.label) ? record.track.label : undefined;
      add(undefined, undefined);
      if (label !== undefined) add(undefined, label);
      for (const zone of record.zones.current()) {
        add(zone, undefined);
        if (label !== undefined) add(zone, label);
      }
    }
    // a zone's label that emptied is in no list: it goes back to 0
    for (const [key, previous] of this.#counts) if (!now.has(key)) now.set(key, { ...previous, count: 0 });
    for (const [key, entry] of now) {
      const previous = this.#counts.get(key);
      if (!all && previous?.count === entry.count) continue;
      this.#counts.set(key, entry);
      out.counts.push(entry);
    }
  }
}
