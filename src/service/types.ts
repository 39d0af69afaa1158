/**
 * Shared shapes of the camera service. Sources produce Frames; the loop runs tasks on the newest frame; the
 * publisher turns TaskResults into MQTT messages. Every stage is joined by a bounded queue with drop counters.
 */

/** One decoded-or-encoded camera frame, as a source hands it over. */
export interface Frame {
  /** The camera's name from the config (also the MQTT topic segment). */
  camera: string;
  /** Per-camera sequence number of frames delivered by the source (restarts keep counting). */
  seq: number;
  /** When the frame was captured/received: milliseconds since the epoch (for payload timestamps). */
  capturedAt: number;
  /** performance.now() at capture, for latency measurement inside the process. */
  capturedMono: number;
  /** JPEG (or PNG) bytes, or raw packed RGB24 of width×height. */
  format: "jpeg" | "png" | "rgb24";
  width: number;
  height: number;
  data: Uint8Array;
}

export type SourceState = "starting" | "running" | "stalled" | "restarting" | "failed" | "stopped" | "ended";

export interface SourceStatus {
  camera: string;
  state: SourceState;
  /** Human-readable reason for the last state change (the error text of a dying subprocess, say). */
  reason?: string;
  restarts: number;
  framesReceived: number;
  /** Frames dropped because a newer frame arrived before the previous one was taken (newest frame wins). */
  framesDropped: number;
  /** Frames that were corrupt or truncated and skipped. */
  framesCorrupt: number;
  lastFrameAt: number | undefined;
}

/** A frame source: a camera, a file, a folder, a stream. */
export interface FrameSource {
  readonly camera: string;
  /** A one-line description without secrets (RTSP passwords are masked). */
  readonly description: string;
  /** Starts producing; `onFrame` is called for every complete frame, `onStatus` on every state change. */
  start(onFrame: (frame: Frame) => void, onStatus: (status: SourceStatus) => void): void;
  /** Stops and releases everything (subprocesses, sockets, timers). Idempotent. */
  stop(): Promise<void>;
  status(): SourceStatus;
}

/** What the service publishes for one task on one frame. */
export interface ResultMessage {
  camera: string;
  task: string;
  text_input?: string;
  frame: number;
  /** ISO 8601 capture time. */
  timestamp: string;
  image_size: { width: number; height: number };
  /** The runtime's result: `{ "<OD>": … }` in HF post_process_generation's shape. */
  result: Record<string, unknown>;
  latency_ms: { total: number; capture_to_publish: number; [stage: string]: number };
  model: string;
}
