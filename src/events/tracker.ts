/**
 * Multi-object tracking over detection results, pure (no I/O, no clock): each call of `update` gives the
 * detections of one frame and its capture time; the tracker keeps one track per object and says which tracks were
 * confirmed, matched and ended.
 *
 * - Association: each track's box is predicted at the frame's time from its velocity (constant motion), then tracks
 *   and detections of the same label are paired by the Hungarian method (assignment.ts) on a cost of overlap (IoU
 *   with the predicted box) and closeness (centre distance over the box's diagonal); pairs that neither overlap nor
 *   lie close are never made.
 * - Frame gaps are normal (the camera loop takes the newest frame): prediction and ages run on time, not on frame
 *   counts, so a dropped frame only means a longer step.
 * - A track is confirmed after `minHits` matched detections; an unconfirmed one that goes unmatched for `maxAgeS`
 *   is forgotten silently. A confirmed track ends when unmatched for `maxAgeS` (at least three frame intervals, when
 *   frames come slower; three times that while stationary: a parked object may be missed for a while), or at once
 *   when its predicted box has left the frame.
 * - Stationary: the box has stayed within IoU 0.6 of where it stopped for `stationaryS`.
 * - Memory: at most `maxTracks` tracks; detections that would start more are counted and dropped.
 */
import { assignMinCost } from "./assignment.ts";
import { type Box, boxCenter, boxDiagonal, boxIoU, type FrameSize, outsideFrame, shiftBox } from "./boxes.ts";

export interface Detection {
  box: Box;
  label: string;
  /** The decoder's confidence (exp of the mean token log-probability), null where none could be computed. */
  score: number | null;
}

export interface TrackerOptions {
  /** Matched detections before a track counts as an object (default 2). */
  minHits?: number;
  /** Seconds unmatched before a track ends (default 2). */
  maxAgeS?: number;
  /** Seconds without moving before an object is stationary (default 10). */
  stationaryS?: number;
  /** Tracks at most (default 128). */
  maxTracks?: number;
  /** Makes the ids of this tracker unique among cameras (default ""). */
  idSalt?: string;
}

export interface Track {
  /** `<start time in s>-<6 characters>`, as Frigate's ids. */
  readonly id: string;
  readonly label: string;
  /** The last matched box. */
  box: Box;
  score: number | null;
  topScore: number | null;
  /** Capture time (ms since the epoch) of the first and the last matched detection. */
  readonly startTime: number;
  lastSeen: number;
  hits: number;
  confirmed: boolean;
  stationary: boolean;
  /** Centre velocity in px/s. */
  vx: number;
  vy: number;
  /** Where it stopped moving, and since when. */
  anchor: Box;
  anchorTime: number;
}

export interface TrackerUpdate {
  /** Tracks confirmed in this frame (a `new` event each). */
  confirmed: Track[];
  /** Confirmed tracks matched in this frame, `confirmed` ones included. */
  matched: Track[];
  /** Confirmed tracks that ended (an `end` event each). */
  ended: Track[];
}

const STATIONARY_IOU = 0.6;
const STATIONARY_AGE_FACTOR = 3;
/** An object may go unseen for this many frame intervals at least, however short max_age is. */
const FRAMES_OF_AGE = 3;
/** A pair is possible when the predicted box overlaps at least this much … */
const GATE_IOU = 0.05;
/** … or the centres lie within this share of the larger diagonal. */
const GATE_DISTANCE = 0.75;
const FORBIDDEN = 1e6;
/** An edge this close to the frame's border (pixels, detector noise included) may be cut off by it. */
const EDGE = 4;
/** Weight of a new velocity measurement against the running estimate. */
const VELOCITY_GAIN = 0.6;

export class ObjectTracker {
  readonly minHits: number;
  readonly maxAgeMs: number;
  readonly stationaryMs: number;
  readonly maxTracks: number;
  readonly #salt: string;
  #tracks: Track[] = [];
  #sequence = 0;
  /** Time of the last update, and a running mean of the time between updates (how fast frames come). */
  #lastUpdate: number | undefined;
  #frameInterval = 0;
  /** Detections not tracked because `maxTracks` tracks were live. */
  droppedDetections = 0;

  constructor(options: TrackerOptions = {}) {
    this.minHits = options.minHits ?? 2;
    this.maxAgeMs = (options.maxAgeS ?? 2) * 1000;
    this.stationaryMs = (options.stationaryS ?? 10) * 1000;
    this.maxTracks = options.maxTracks ?? 128;
    this.#salt = options.idSalt ?? "";
  }

  /** Live tracks, confirmed or not. */
  get size(): number {
    return this.#tracks.length;
  }

  /** The confirmed live tracks. */
  objects(): readonly Track[] {
    return this.#tracks.filter((t) => t.confirmed);
  }

  /** One frame's detections at capture time `time` (ms since the epoch). */
  update(time: number, detections: readonly Detection[], frame: FrameSize): TrackerUpdate {
    const out: TrackerUpdate = { confirmed: [], matched: [], ended: [] };
    if (this.#lastUpdate !== undefined && time > this.#lastUpdate) {
      const dt = time - this.#lastUpdate;
      this.#frameInterval = this.#frameInterval === 0 ? dt : this.#frameInterval + 0.2 * (dt - this.#frameInterval);
    }
    this.#lastUpdate = time;
    const pairs = this.#associate(time, detections);
    const matchedTracks = new Set<Track>();
    const usedDetections = new Set<number>();
    for (const [t, d] of pairs) {
      const track = this.#tracks[t]!;
      this.#observe(track, detections[d]!, time, frame);
      matchedTracks.add(track);
      usedDetections.add(d);
      if (!track.confirmed && track.hits >= this.minHits) {
        track.confirmed = true;
        out.confirmed.push(track);
      }
      if (track.confirmed) out.matched.push(track);
    }
    this.#expire(time, frame, matchedTracks, out);
    detections.forEach((detection, d) => {
      if (usedDetections.has(d)) return;
      if (this.#tracks.length >= this.maxTracks) {
        this.droppedDetections++;
        return;
      }
      const track = this.#start(detection, time);
      if (track.confirmed) {
        out.confirmed.push(track);
        out.matched.push(track);
      }
    });
    return out;
  }

  /** Ages the tracks without detections (no frame came): those unmatched for too long end. */
  tick(time: number, frame: FrameSize): Track[] {
    const out: TrackerUpdate = { confirmed: [], matched: [], ended: [] };
    this.#expire(time, frame, new Set(), out);
    return out.ended;
  }

  /** Ends every confirmed track (the service stops, the clip is over) and forgets the others. */
  finish(): Track[] {
    const ended = this.#tracks.filter((t) => t.confirmed);
    this.#tracks = [];
    return ended;
  }

  /** Where a track's box is expected at `time`. */
  predict(track: Track, time: number): Box {
    const dt = (time - track.lastSeen) / 1000;
    return shiftBox(track.box, track.vx * dt, track.vy * dt);
  }

  #associate(time: number, detections: readonly Detection[]): [number, number][] {
    if (this.#tracks.length === 0 || detections.length === 0) return [];
    const costs = this.#tracks.map((track) => {
      const predicted = this.predict(track, time);
      return detections.map((d) => (d.label === track.label ? pairCost(predicted, d.box) : FORBIDDEN));
    });
    return assignMinCost(costs, FORBIDDEN);
  }

  #observe(track: Track, detection: Detection, time: number, frame: FrameSize): void {
    const dt = (time - track.lastSeen) / 1000;
    if (dt > 0) {
      const [dx, dy] = boxMotion(track.box, detection.box, frame);
      const gain = track.hits === 1 ? 1 : VELOCITY_GAIN;
      track.vx += gain * (dx / dt - track.vx);
      track.vy += gain * (dy / dt - track.vy);
    }
    track.box = detection.box;
    track.score = detection.score;
    if (detection.score !== null && (track.topScore === null || detection.score > track.topScore)) track.topScore = detection.score;
    track.lastSeen = time;
    track.hits++;
    if (boxIoU(detection.box, track.anchor) < STATIONARY_IOU) {
      track.anchor = detection.box;
      track.anchorTime = time;
      track.stationary = false;
    } else if (time - track.anchorTime >= this.stationaryMs) {
      track.stationary = true;
    }
  }

  #expire(time: number, frame: FrameSize, matched: ReadonlySet<Track>, out: TrackerUpdate): void {
    this.#tracks = this.#tracks.filter((track) => {
      if (matched.has(track)) return true;
      // frames slower than max_age (a large model on a CPU) must not end every object between two frames
      const age = Math.max(this.maxAgeMs, FRAMES_OF_AGE * this.#frameInterval);
      const maxAge = track.stationary ? age * STATIONARY_AGE_FACTOR : age;
      const gone = time - track.lastSeen > maxAge || outsideFrame(this.predict(track, time), frame);
      if (gone && track.confirmed) out.ended.push(track);
      return !gone;
    });
  }

  #start(detection: Detection, time: number): Track {
    const track: Track = {
      id: trackId(time, `${this.#salt}:${this.#sequence++}`),
      label: detection.label,
      box: detection.box,
      score: detection.score,
      topScore: detection.score,
      startTime: time,
      lastSeen: time,
      hits: 1,
      confirmed: this.minHits <= 1,
      stationary: false,
      vx: 0,
      vy: 0,
      anchor: detection.box,
      anchorTime: time,
    };
    this.#tracks.push(track);
    return track;
  }
}

/**
 * How far an object moved between two boxes: the mean shift of the edges that are not cut by the frame's border
 * (an object entering or leaving grows or shrinks at the border; its centre moves at half its speed there).
 */
function boxMotion(from: Box, to: Box, frame: FrameSize): [number, number] {
  const axis = (a0: number, a1: number, b0: number, b1: number, size: number): number => {
    const shifts: number[] = [];
    if (a0 > EDGE && b0 > EDGE) shifts.push(b0 - a0);
    if (a1 < size - EDGE && b1 < size - EDGE) shifts.push(b1 - a1);
    return shifts.length > 0 ? shifts.reduce((s, v) => s + v, 0) / shifts.length : (b0 + b1 - a0 - a1) / 2;
  };
  return [axis(from[0], from[2], to[0], to[2], frame.width), axis(from[1], from[3], to[1], to[3], frame.height)];
}

/** 0 for a perfect pair, up to 1; FORBIDDEN where the boxes neither overlap nor lie close. */
function pairCost(predicted: Box, box: Box): number {
  const iou = boxIoU(predicted, box);
  const [px, py] = boxCenter(predicted);
  const [bx, by] = boxCenter(box);
  const distance = Math.hypot(px - bx, py - by) / Math.max(boxDiagonal(predicted), boxDiagonal(box), 1);
  if (iou < GATE_IOU && distance > GATE_DISTANCE) return FORBIDDEN;
  return 1 - (iou + Math.max(0, 1 - distance)) / 2;
}

/** Frigate's id shape: the start time in seconds with microseconds, a dash, six characters (FNV-1a of `seed`). */
function trackId(time: number, seed: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < seed.length; i++) {
    hash ^= seed.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return `${(time / 1000).toFixed(6)}-${hash.toString(36).padStart(7, "0").slice(-6)}`;
}
