/**
 * Frame sources for `florence-edge serve`: one FrameSource interface over video files, image folders, RTSP
 * streams, USB (V4L2) and Jetson CSI cameras, and HTTP snapshot URLs.
 *
 *   const source = createSource({ camera: "door", type: "rtsp", url: "rtsp://user:pw@cam/stream1" });
 *   source.start((frame) => slot.put(frame), (status) => log(status));
 *   …
 *   await source.stop();
 *
 * Video kinds run a decoder subprocess (ffmpeg, or GStreamer with hardware decoding on Jetson); every kind is
 * supervised the same way (stall watchdog, restart with backoff, status changes, bounded memory).
 */
import { maskUrl, redactor, urlPassword } from "../redact.ts";
import { buildCommand, DEFAULT_PATHS, resolveDecoder, type ProcessCommand } from "./pipelines.ts";
import { FolderDriver } from "./folder_source.ts";
import { HttpDriver } from "./http_source.ts";
import { detectPlatform, type PlatformInfo } from "./platform.ts";
import { ProcessDriver } from "./process_source.ts";
import { normalizeCommon, normalizeSpec, type CreateSourceOptions, type NormalizedCommon, type NormalizedSpec, type VideoSpec } from "./spec.ts";
import { SupervisedSource, type SourceDriver } from "./supervisor.ts";
import type { FrameSource } from "../types.ts";

export type {
  BackoffOptions,
  CommonSourceOptions,
  CreateSourceOptions,
  CsiSourceSpec,
  DecoderChoice,
  FileSourceSpec,
  FolderSourceSpec,
  HttpSourceSpec,
  OutputFormat,
  RtspSourceSpec,
  SourceSpec,
  SourceType,
  SpawnProcess,
  V4l2SourceSpec,
  VideoOutputOptions,
} from "./spec.ts";
export type { ProcessCommand } from "./pipelines.ts";
export type { PlatformInfo, PlatformProbe } from "./platform.ts";
export { buildCommand, resolveDecoder } from "./pipelines.ts";
export { detectPlatform } from "./platform.ts";
export { maskUrl } from "../redact.ts";
export { JpegSplitter, inspectJpeg } from "./jpeg_splitter.ts";
export { RawFrameSplitter } from "./raw_splitter.ts";
export { backoffDelayS } from "./supervisor.ts";

/** What a source would run, without running it: for `--dry-run`, logs, and tests. */
export interface SourcePlan {
  description: string;
  /** The decoder subprocess, for the video kinds. */
  command: ProcessCommand | undefined;
}

function outputWords(spec: VideoSpec): string {
  const size = spec.out.width !== undefined || spec.out.height !== undefined ? ` ${spec.out.width ?? "auto"}x${spec.out.height ?? "auto"}` : "";
  return `${spec.out.format}${size}`;
}

function describe(spec: NormalizedSpec, decoder: string | undefined, platform: PlatformInfo): string {
  const hw = decoder === "gstreamer" && platform.jetson ? " (Jetson hardware decode)" : "";
  switch (spec.type) {
    case "file":
      return `file ${spec.path} (${spec.loop ? "loop" : "once"}, ${spec.fps !== undefined ? `${spec.fps} fps` : spec.realtime ? "real time" : "unpaced"}, ${outputWords(spec)}, ${decoder}${hw})`;
    case "folder":
      return `folder ${spec.path} (${spec.loop ? "loop" : "once"}, ${spec.fps} fps)`;
    case "rtsp":
      return `rtsp ${maskUrl(spec.url)} (${spec.transport}${spec.username !== undefined ? `, user ${spec.username}` : ""}, ${outputWords(spec)}, ${decoder}${hw})`;
    case "v4l2":
      return `v4l2 ${spec.device} (${spec.format}${spec.fps !== undefined ? `, ${spec.fps} fps` : ""}, ${outputWords(spec)}, ${decoder})`;
    case "csi":
      return `csi sensor ${spec.sensorId} (${spec.width}x${spec.height} ${spec.fps} fps, ${spec.out.format}, ${decoder})`;
    case "http":
      return `http ${maskUrl(spec.url)} (every ${spec.intervalS} s${spec.username !== undefined ? `, user ${spec.username}` : ""})`;
  }
}

function frameInterval(spec: VideoSpec): number | undefined {
  return spec.fps !== undefined ? 1 / spec.fps : undefined;
}

function secretsOf(spec: NormalizedSpec): (string | undefined)[] {
  if (spec.type === "rtsp" || spec.type === "http") return [spec.password, urlPassword(spec.url)];
  return [];
}

interface Built {
  common: NormalizedCommon;
  driver: SourceDriver;
  command: ProcessCommand | undefined;
}

function build(options: CreateSourceOptions): Built {
  const spec = normalizeSpec(options);
  const common = normalizeCommon(options);
  const platform = options.platform ?? detectPlatform();
  const redact = redactor(secretsOf(spec));
  if (spec.type === "folder") {
    return { common, command: undefined, driver: new FolderDriver({ path: spec.path, loop: spec.loop, fps: spec.fps, maxFrameBytes: common.maxFrameBytes }) };
  }
  if (spec.type === "http") {
    const driver = new HttpDriver({ ...spec, maxFrameBytes: common.maxFrameBytes, description: describe(spec, undefined, platform), redact });
    return { common, command: undefined, driver };
  }
  const decoder = resolveDecoder(spec, common.decoder, platform, common.camera);
  const command = buildCommand(spec, decoder, platform, { ffmpeg: options.ffmpegPath ?? DEFAULT_PATHS.ffmpeg, gstLaunch: options.gstLaunchPath ?? DEFAULT_PATHS.gstLaunch });
  const driver = new ProcessDriver({
    command,
    description: describe(spec, decoder, platform),
    frameIntervalS: frameInterval(spec),
    maxFrameBytes: common.maxFrameBytes,
    spawnProcess: options.spawnProcess,
    redact,
  });
  return { common, command, driver };
}

/** Validates the config (FlorenceError CONFIG_INVALID naming the bad value) and builds the source; nothing runs until start(). */
export function createSource(options: CreateSourceOptions): FrameSource {
  const { driver, common } = build(options);
  return new SupervisedSource(driver, { camera: common.camera, stallTimeoutS: common.stallTimeoutS, backoff: common.backoff, drops: options.drops });
}

/** The description and decoder command a config would give, without starting anything. */
export function planSource(options: CreateSourceOptions): SourcePlan {
  const { driver, command } = build(options);
  return { description: driver.description, command };
}
