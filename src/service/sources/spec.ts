/**
 * What `createSource` takes: one discriminated union by `type` (the same field names as the service config's
 * `SourceConfig`, so a parsed camera's `source` can be passed straight in), plus the options every source shares.
 * `normalizeSpec` fills the defaults and rejects bad values with a FlorenceError naming the value and the fix.
 */
import type { SpawnOptions } from "node:child_process";
import { describeValue, FlorenceError } from "../../errors.ts";
import { maskSecrets } from "../redact.ts";
import { readBoolean, readChoice, readNumber, readString, reject, type Where } from "../../validate.ts";
import type { PlatformInfo } from "./platform.ts";

export type DecoderChoice = "auto" | "ffmpeg" | "gstreamer";
/** How frames come out of a video pipeline: JPEG bytes (default; passed through where the camera sends JPEG) or packed RGB24. */
export type OutputFormat = "jpeg" | "rgb24";

export interface VideoOutputOptions {
  /** "jpeg" (default) or "rgb24"; rgb24 needs `width` and `height`. */
  output?: OutputFormat | undefined;
  /** Scale to this size (one of them alone keeps the aspect ratio; rgb24 needs both). */
  width?: number | undefined;
  height?: number | undefined;
  /** JPEG quality 1..100 of re-encoded frames (default 90); mapped to ffmpeg's -q:v approximately. */
  jpegQuality?: number | undefined;
}

export interface FileSourceSpec extends VideoOutputOptions {
  type: "file";
  path: string;
  /** Start over at the end (default true); false: the source ends with state "ended". */
  loop?: boolean | undefined;
  /** Output frame rate; default: the file's own. */
  fps?: number | undefined;
  /** Pace at real time (default true); false reads as fast as the consumer takes frames. */
  realtime?: boolean | undefined;
}

export interface FolderSourceSpec {
  type: "folder";
  path: string;
  loop?: boolean | undefined;
  /** Images per second (default 1). */
  fps?: number | undefined;
}

export type VideoCodec = "auto" | "h264" | "h265";

export interface RtspSourceSpec extends VideoOutputOptions {
  type: "rtsp";
  /** rtsp:// or rtsps://, credentials may be in the URL (they are masked in descriptions and reasons). */
  url: string;
  transport?: "tcp" | "udp" | undefined;
  /** Socket I/O timeout in seconds (default 10): ffmpeg -timeout, GStreamer tcp-timeout. */
  timeoutS?: number | undefined;
  /** Limit the output frame rate (frames are dropped in the decoder process, not here). */
  fps?: number | undefined;
  /** Stream codec for the GStreamer path (default auto: parsebin picks the depayloader and parser). */
  codec?: VideoCodec | undefined;
  /** GStreamer rtspsrc jitter-buffer latency in ms (default 200). */
  latencyMs?: number | undefined;
  username?: string | undefined;
  password?: string | undefined;
}

export interface V4l2SourceSpec extends VideoOutputOptions {
  type: "v4l2";
  /** /dev/videoN (default /dev/video0). */
  device?: string | undefined;
  /** What to ask the camera for: "mjpeg" (default; JPEGs pass through without re-encoding) or "yuyv". */
  format?: "mjpeg" | "yuyv" | undefined;
  fps?: number | undefined;
}

export interface CsiSourceSpec extends Omit<VideoOutputOptions, "width" | "height"> {
  type: "csi";
  /** nvarguscamerasrc sensor-id (default 0). */
  sensorId?: number | undefined;
  /** Capture size (default 1920x1080) and rate (default 30). */
  width?: number | undefined;
  height?: number | undefined;
  fps?: number | undefined;
  /** nvvidconv flip-method 0..7 (default 0). */
  flipMethod?: number | undefined;
}

export interface HttpSourceSpec {
  type: "http";
  /** http:// or https:// URL of one JPEG (or PNG) snapshot; basic-auth credentials may be in the URL. */
  url: string;
  /** Seconds between polls (default 1). */
  intervalS?: number | undefined;
  /** Per-request timeout in seconds (default 5). */
  timeoutS?: number | undefined;
  username?: string | undefined;
  password?: string | undefined;
  headers?: Record<string, string> | undefined;
}

export type SourceSpec = FileSourceSpec | FolderSourceSpec | RtspSourceSpec | V4l2SourceSpec | CsiSourceSpec | HttpSourceSpec;
export type SourceType = SourceSpec["type"];

export interface BackoffOptions {
  /** First restart delay in seconds (default 1); doubles per consecutive failure. */
  initialS?: number | undefined;
  /** Largest delay in seconds (default 60). */
  maxS?: number | undefined;
  /** Running this long with frames resets the delay to initialS (default 30). */
  healthyS?: number | undefined;
}

/** Starts a subprocess; the default is node:child_process spawn. Tests inject one to watch or fake processes. */
export type SpawnProcess = (file: string, args: readonly string[], options: SpawnOptions) => import("node:child_process").ChildProcess;

export interface CommonSourceOptions {
  /** The camera's name (frames and statuses carry it). */
  camera: string;
  decoder?: DecoderChoice | undefined;
  /** Restart a source that delivers no frame for this long (default 10 s; never less than 2 frame intervals + 1 s). */
  stallTimeoutS?: number | undefined;
  backoff?: BackoffOptions | undefined;
  /** Where dropped frames are counted (the camera's LatestFrame slot); reported as framesDropped. */
  drops?: { readonly dropped: number } | undefined;
  /** Default: detected from /etc/nv_tegra_release and /proc/device-tree/model. */
  platform?: PlatformInfo | undefined;
  spawnProcess?: SpawnProcess | undefined;
  ffmpegPath?: string | undefined;
  gstLaunchPath?: string | undefined;
  /** Largest frame the reassembly buffer holds before dropping it as corrupt (default 32 MiB). */
  maxFrameBytes?: number | undefined;
}

export type CreateSourceOptions = SourceSpec & CommonSourceOptions;

// ---- defaults: the one place they are written (the config's --source guesses use them too) ----

export const SOURCE_DEFAULTS = {
  file: { loop: true, realtime: true },
  folder: { loop: true, fps: 1 },
  rtsp: { transport: "tcp", timeoutS: 10, codec: "auto", latencyMs: 200 },
  v4l2: { device: "/dev/video0", format: "mjpeg" },
  csi: { sensorId: 0, width: 1920, height: 1080, fps: 30, flipMethod: 0 },
  http: { intervalS: 1, timeoutS: 5 },
  output: { format: "jpeg", jpegQuality: 90 },
  common: { decoder: "auto", stallTimeoutS: 10, backoff: { initialS: 1, maxS: 60, healthyS: 30 }, maxFrameBytes: 32 * 1024 * 1024 },
} as const;

const D = SOURCE_DEFAULTS;

// ---- normalized (defaults filled, validated) ----

export interface OutputShape {
  format: OutputFormat;
  width: number | undefined;
  height: number | undefined;
  jpegQuality: number;
}

export type NormalizedSpec =
  | { type: "file"; path: string; loop: boolean; fps: number | undefined; realtime: boolean; out: OutputShape }
  | { type: "folder"; path: string; loop: boolean; fps: number }
  | { type: "rtsp"; url: string; transport: "tcp" | "udp"; timeoutS: number; fps: number | undefined; codec: VideoCodec; latencyMs: number; username: string | undefined; password: string | undefined; out: OutputShape }
  | { type: "v4l2"; device: string; format: "mjpeg" | "yuyv"; fps: number | undefined; out: OutputShape }
  | { type: "csi"; sensorId: number; width: number; height: number; fps: number; flipMethod: number; out: OutputShape }
  | { type: "http"; url: string; intervalS: number; timeoutS: number; username: string | undefined; password: string | undefined; headers: Record<string, string> };

export type VideoSpec = Exclude<NormalizedSpec, { type: "folder" } | { type: "http" }>;

// The sources' wording on the shared checks (validate.ts): `camera "door": source.fps must be …`, secrets masked.
function at(camera: string, key: string): Where {
  return { name: `camera ${JSON.stringify(camera)}: source.${key}`, code: "CONFIG_INVALID", separator: " ", show: (value) => maskSecrets(describeValue(value)) };
}

function bad(camera: string, key: string, value: unknown, expected: string, fix?: string): never {
  return reject(at(camera, key), `must be ${expected}`, { value, fix });
}

function positive(camera: string, key: string, value: unknown, fallback: number, max?: number): number;
function positive(camera: string, key: string, value: unknown, fallback: undefined, max?: number): number | undefined;
function positive(camera: string, key: string, value: unknown, fallback: number | undefined, max = Number.MAX_SAFE_INTEGER): number | undefined {
  return readNumber(at(camera, key), value, { min: 0, aboveMin: true, max }, fallback);
}

function dimension(camera: string, key: string, value: unknown, fallback?: number): number | undefined {
  return readNumber(at(camera, key), value, { min: 16, max: 16384, int: true, expected: "an integer pixel size in 16..16384" }, fallback);
}

function text(camera: string, key: string, value: unknown, fallback?: string): string {
  return readString(at(camera, key), value, { fallback, required: true, singleLine: true });
}

function optionalText(camera: string, key: string, value: unknown): string | undefined {
  return value === undefined ? undefined : text(camera, key, value);
}

function choice<T extends string>(camera: string, key: string, value: unknown, choices: readonly T[], fallback: T): T {
  return readChoice(at(camera, key), value, choices, fallback);
}

function flag(camera: string, key: string, value: unknown, fallback: boolean): boolean {
  return readBoolean(at(camera, key), value, fallback);
}

function url(camera: string, key: string, value: unknown, schemes: readonly string[], example: string): string {
  const raw = text(camera, key, value);
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    bad(camera, key, "(unparsable URL)", `a URL like ${example}`);
  }
  if (!schemes.includes(parsed.protocol.replace(/:$/, ""))) bad(camera, key, `${parsed.protocol}//…`, `a ${schemes.join(" or ")} URL`, `e.g. ${example}`);
  if (parsed.hostname === "") bad(camera, key, "(no host)", `a URL with a host, like ${example}`);
  return raw;
}

function output(camera: string, spec: VideoOutputOptions, size?: { width: number; height: number }): OutputShape {
  const format = choice(camera, "output", spec.output, ["jpeg", "rgb24"] as const, D.output.format);
  const width = size?.width ?? dimension(camera, "width", spec.width);
  const height = size?.height ?? dimension(camera, "height", spec.height);
  const quality = readNumber(at(camera, "jpegQuality"), spec.jpegQuality, { min: 1, max: 100, int: true });
  if (format === "rgb24" && (width === undefined || height === undefined)) {
    bad(camera, "output", format, "used with both width and height", "set width and height (frames are scaled to that size), or use output: jpeg");
  }
  return { format, width, height, jpegQuality: quality ?? D.output.jpegQuality };
}

export function normalizeSpec(options: CreateSourceOptions): NormalizedSpec {
  const camera = options.camera;
  if (typeof camera !== "string" || camera.length === 0) {
    throw new FlorenceError("CONFIG_INVALID", `camera name must be a non-empty string, got ${describeValue(camera)}`, { fix: "pass { camera: \"front-door\", … }" });
  }
  const spec = options as SourceSpec;
  switch (spec.type) {
    case "file":
      return {
        type: "file",
        path: text(camera, "path", spec.path),
        loop: flag(camera, "loop", spec.loop, D.file.loop),
        fps: positive(camera, "fps", spec.fps, undefined, 240),
        realtime: flag(camera, "realtime", spec.realtime, D.file.realtime),
        out: output(camera, spec),
      };
    case "folder":
      return { type: "folder", path: text(camera, "path", spec.path), loop: flag(camera, "loop", spec.loop, D.folder.loop), fps: positive(camera, "fps", spec.fps, D.folder.fps, 240) };
    case "rtsp":
      return {
        type: "rtsp",
        url: url(camera, "url", spec.url, ["rtsp", "rtsps"], "rtsp://user:pass@192.168.1.10:554/stream1"),
        transport: choice(camera, "transport", spec.transport, ["tcp", "udp"] as const, D.rtsp.transport),
        timeoutS: positive(camera, "timeoutS", spec.timeoutS, D.rtsp.timeoutS, 3600),
        fps: positive(camera, "fps", spec.fps, undefined, 240),
        codec: choice(camera, "codec", spec.codec, ["auto", "h264", "h265"] as const, D.rtsp.codec),
        latencyMs: spec.latencyMs === undefined ? D.rtsp.latencyMs : Math.round(positive(camera, "latencyMs", spec.latencyMs, D.rtsp.latencyMs, 60000)),
        username: optionalText(camera, "username", spec.username),
        password: optionalText(camera, "password", spec.password),
        out: output(camera, spec),
      };
    case "v4l2": {
      const device = text(camera, "device", spec.device, D.v4l2.device);
      if (!device.startsWith("/dev/")) bad(camera, "device", device, "a device path like /dev/video0");
      return { type: "v4l2", device, format: choice(camera, "format", spec.format, ["mjpeg", "yuyv"] as const, D.v4l2.format), fps: positive(camera, "fps", spec.fps, undefined, 240), out: output(camera, spec) };
    }
    case "csi": {
      const sensorId = readNumber(at(camera, "sensorId"), spec.sensorId ?? undefined, { min: 0, max: 15, int: true }, D.csi.sensorId);
      const flipMethod = readNumber(at(camera, "flipMethod"), spec.flipMethod ?? undefined, { min: 0, max: 7, int: true, expected: "an integer in 0..7 (nvvidconv flip-method)" }, D.csi.flipMethod);
      const width = dimension(camera, "width", spec.width, D.csi.width)!;
      const height = dimension(camera, "height", spec.height, D.csi.height)!;
      return { type: "csi", sensorId, width, height, fps: positive(camera, "fps", spec.fps, D.csi.fps, 240), flipMethod, out: output(camera, spec, { width, height }) };
    }
    case "http": {
      const headers = spec.headers ?? {};
      if (typeof headers !== "object" || headers === null || Object.values(headers).some((v) => typeof v !== "string")) bad(camera, "headers", headers, "a mapping of header names to strings");
      return {
        type: "http",
        url: url(camera, "url", spec.url, ["http", "https"], "http://192.168.1.10/snapshot.jpg"),
        intervalS: positive(camera, "intervalS", spec.intervalS, D.http.intervalS, 86400),
        timeoutS: positive(camera, "timeoutS", spec.timeoutS, D.http.timeoutS, 3600),
        username: optionalText(camera, "username", spec.username),
        password: optionalText(camera, "password", spec.password),
        headers,
      };
    }
    default:
      throw new FlorenceError("CONFIG_INVALID", `camera ${JSON.stringify(camera)}: source.type must be one of file, folder, rtsp, v4l2, csi, http, got ${describeValue((spec as { type?: unknown }).type)}`, {
        fix: 'e.g. { type: "rtsp", url: "rtsp://…" }',
      });
  }
}

export interface NormalizedCommon {
  camera: string;
  decoder: DecoderChoice;
  stallTimeoutS: number;
  backoff: { initialS: number; maxS: number; healthyS: number };
  maxFrameBytes: number;
}

export function normalizeCommon(options: CreateSourceOptions): NormalizedCommon {
  const camera = options.camera;
  const backoff = options.backoff ?? {};
  const initialS = positive(camera, "backoff.initialS", backoff.initialS, D.common.backoff.initialS, 3600);
  const maxS = positive(camera, "backoff.maxS", backoff.maxS, D.common.backoff.maxS, 86400);
  if (maxS < initialS) bad(camera, "backoff.maxS", maxS, `at least backoff.initialS (${initialS})`);
  return {
    camera,
    decoder: choice(camera, "decoder", options.decoder, ["auto", "ffmpeg", "gstreamer"] as const, D.common.decoder),
    stallTimeoutS: positive(camera, "stallTimeoutS", options.stallTimeoutS, D.common.stallTimeoutS, 86400),
    backoff: { initialS, maxS, healthyS: positive(camera, "backoff.healthyS", backoff.healthyS, D.common.backoff.healthyS, 86400) },
    maxFrameBytes: Math.round(positive(camera, "maxFrameBytes", options.maxFrameBytes, D.common.maxFrameBytes, 2 ** 31)),
  };
}
