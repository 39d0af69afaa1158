/**
 * Detections from a moving-shapes clip's ground truth (src/world/clip.ts), as a detector would give them: every
 * shape's box, optionally jittered, with a score, on the frames that are not dropped. The ground truth stays beside
 * each frame (the shape ids the tracker must find again), so the events tests can judge what the tracker did.
 */
import type { Detection } from "../../src/events/tracker.ts";
import type { ClipFrame } from "../../src/world/clip.ts";
import { seededRandom } from "./random.ts";

export interface TruthObject {
  id: number;
  label: string;
  box: [number, number, number, number];
}

export interface ObservedFrame {
  index: number;
  /** Capture time in ms since the epoch. */
  time: number;
  detections: Detection[];
  truth: TruthObject[];
}

export interface ClipDetectionOptions {
  fps?: number;
  /** Each coordinate moves by up to this many pixels (default 0). */
  jitter?: number;
  /** Share of frames dropped (default 0): the newest-frame slot skips them. */
  dropRate?: number;
  seed?: number;
  /** Time of frame 0 (default 1 760 000 000 000 ms). */
  start?: number;
}

/** Every frame's truth, and detections for the frames that are kept (dropped frames are left out). */
export function clipDetections(frames: readonly ClipFrame[], options: ClipDetectionOptions = {}): ObservedFrame[] {
  const random = seededRandom(options.seed ?? 1);
  const fps = options.fps ?? 10;
  const jitter = options.jitter ?? 0;
  const out: ObservedFrame[] = [];
  for (const frame of frames) {
    const truth = frame.truth.shapes.map((s) => ({ id: s.id, label: s.shape as string, box: [...s.box] as [number, number, number, number] }));
    if (frame.index > 0 && random() < (options.dropRate ?? 0)) continue;
    const detections = truth.map((t): Detection => {
      const j = () => (random() * 2 - 1) * jitter;
      const box: [number, number, number, number] = [t.box[0] + j(), t.box[1] + j(), t.box[2] + j(), t.box[3] + j()];
      return { box, label: t.label, score: Math.round((0.6 + 0.35 * random()) * 1000) / 1000 };
    });
    out.push({ index: frame.index, time: (options.start ?? 1_760_000_000_000) + (frame.index * 1000) / fps, detections, truth });
  }
  return out;
}
