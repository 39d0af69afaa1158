/**
 * The decoder subprocess for each video source, as an argv (never a shell string): ffmpeg on ordinary machines,
 * gst-launch-1.0 on Jetson (hardware decode with nvv4l2decoder, nvjpegenc) or when asked for. Pure functions, so
 * the command lines for hardware that is not here (CSI sensors, Jetson decoders, USB cameras) are unit-tested.
 */
import { FlorenceError } from "../../errors.ts";
import type { PlatformInfo } from "./platform.ts";
import type { DecoderChoice, OutputShape, VideoSpec } from "./spec.ts";

export interface ProcessCommand {
  decoder: "ffmpeg" | "gstreamer";
  file: string;
  args: string[];
  /** What comes out on stdout: concatenated JPEGs, or RGB24 frames of a known size. */
  output: { format: "jpeg" } | { format: "rgb24"; width: number; height: number };
  /** What a clean exit (code 0) means: the input ended for good, the input should be played again, or a failure. */
  cleanExit: "ended" | "replay" | "failure";
}

export interface CommandPaths {
  ffmpeg: string;
  gstLaunch: string;
}

export const DEFAULT_PATHS: CommandPaths = { ffmpeg: "ffmpeg", gstLaunch: "gst-launch-1.0" };

/** ffmpeg everywhere except on Jetson, where files and RTSP streams go through the hardware decoder. CSI needs GStreamer. */
export function resolveDecoder(spec: VideoSpec, requested: DecoderChoice, platform: PlatformInfo, camera: string): "ffmpeg" | "gstreamer" {
  if (spec.type === "csi") {
    if (requested === "ffmpeg") {
      throw new FlorenceError("CONFIG_INVALID", `camera ${JSON.stringify(camera)}: a CSI camera cannot be read with decoder "ffmpeg"`, { fix: 'use decoder: "auto" or "gstreamer" (nvarguscamerasrc)' });
    }
    return "gstreamer";
  }
  if (requested !== "auto") return requested;
  return platform.jetson && (spec.type === "file" || spec.type === "rtsp") ? "gstreamer" : "ffmpeg";
}

export function buildCommand(spec: VideoSpec, decoder: "ffmpeg" | "gstreamer", platform: PlatformInfo, paths: CommandPaths = DEFAULT_PATHS): ProcessCommand {
  return decoder === "ffmpeg" ? ffmpegCommand(spec, paths.ffmpeg) : gstreamerCommand(spec, platform, paths.gstLaunch);
}

// ---------------------------------------------------------------- ffmpeg

/** JPEG quality 1..100 → ffmpeg's mjpeg -q:v 2..31 (lower is better); approximate, monotonic. */
export function ffmpegJpegQ(quality: number): number {
  return Math.max(2, Math.min(31, Math.round(2 + ((100 - quality) * 29) / 99)));
}

function ffmpegFilters(out: OutputShape, fps: number | undefined): string[] {
  const filters: string[] = [];
  if (fps !== undefined) filters.push(`fps=${fps}`);
  if (out.width !== undefined || out.height !== undefined) filters.push(`scale=${out.width ?? -2}:${out.height ?? -2}`);
  return filters.length > 0 ? ["-vf", filters.join(",")] : [];
}

function ffmpegOutput(out: OutputShape): string[] {
  // -flush_packets: each frame leaves the process as soon as it is encoded, not when an I/O buffer fills.
  if (out.format === "rgb24") return ["-pix_fmt", "rgb24", "-f", "rawvideo", "-flush_packets", "1", "pipe:1"];
  return ["-c:v", "mjpeg", "-q:v", String(ffmpegJpegQ(out.jpegQuality)), "-f", "image2pipe", "-flush_packets", "1", "pipe:1"];
}

function outputOf(out: OutputShape): ProcessCommand["output"] {
  return out.format === "rgb24" ? { format: "rgb24", width: out.width!, height: out.height! } : { format: "jpeg" };
}

const FFMPEG_COMMON = ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"];
const NO_EXTRA_STREAMS = ["-an", "-sn", "-dn"];

/** The URL with the options' username/password put in (ffmpeg takes RTSP credentials only in the URL). */
export function rtspUrlWithCredentials(url: string, username: string | undefined, password: string | undefined): string {
  if (username === undefined && password === undefined) return url;
  const parsed = new URL(url);
  if (username !== undefined) parsed.username = encodeURIComponent(username);
  if (password !== undefined) parsed.password = encodeURIComponent(password);
  return parsed.toString();
}

function ffmpegCommand(spec: VideoSpec, file: string): ProcessCommand {
  const args = [...FFMPEG_COMMON];
  switch (spec.type) {
    case "file":
      if (spec.realtime) args.push("-re");
      if (spec.loop) args.push("-stream_loop", "-1");
      // file: keeps a path with a colon from being read as a protocol name.
      args.push("-i", `file:${spec.path}`, ...NO_EXTRA_STREAMS, ...ffmpegFilters(spec.out, spec.fps), ...ffmpegOutput(spec.out));
      return { decoder: "ffmpeg", file, args, output: outputOf(spec.out), cleanExit: spec.loop ? "failure" : "ended" };
    case "rtsp": {
      // -timeout is the RTSP demuxer's socket I/O timeout. -rw_timeout is not consumed by the RTSP demuxer, and
      // ffmpeg (5.1) then refuses to start with "Option rw_timeout not found": the stall watchdog covers the rest.
      args.push("-rtsp_transport", spec.transport, "-timeout", String(Math.round(spec.timeoutS * 1e6)));
      // Low latency: no probing buffer; broken packets are dropped before decoding instead of smearing frames.
      // Probing 1 s instead of 5 s: the first frame comes ~2 s sooner (the SDP already carries SPS/PPS).
      args.push("-fflags", "+nobuffer+discardcorrupt", "-flags", "low_delay", "-analyzeduration", "1000000");
      args.push("-i", rtspUrlWithCredentials(spec.url, spec.username, spec.password), ...NO_EXTRA_STREAMS, ...ffmpegFilters(spec.out, spec.fps), ...ffmpegOutput(spec.out));
      return { decoder: "ffmpeg", file, args, output: outputOf(spec.out), cleanExit: "failure" };
    }
    case "v4l2": {
      args.push("-f", "v4l2", "-input_format", spec.format === "mjpeg" ? "mjpeg" : "yuyv422");
      if (spec.fps !== undefined) args.push("-framerate", String(spec.fps));
      if (spec.out.width !== undefined && spec.out.height !== undefined) args.push("-video_size", `${spec.out.width}x${spec.out.height}`);
      args.push("-i", spec.device, ...NO_EXTRA_STREAMS);
      const passThrough = spec.format === "mjpeg" && spec.out.format === "jpeg" && (spec.out.width === undefined) === (spec.out.height === undefined);
      if (passThrough) {
        // The camera's JPEGs as they are; mjpeg2jpeg adds the standard Huffman tables that USB-camera MJPEG omits.
        args.push("-c:v", "copy", "-bsf:v", "mjpeg2jpeg", "-f", "image2pipe", "-flush_packets", "1", "pipe:1");
      } else {
        // The camera may not honour -video_size: scaling makes rgb24 frames exactly the size the splitter cuts.
        args.push(...ffmpegFilters(spec.out, undefined), ...ffmpegOutput(spec.out));
      }
      return { decoder: "ffmpeg", file, args, output: outputOf(spec.out), cleanExit: "failure" };
    }
    case "csi":
      throw new FlorenceError("CONFIG_INVALID", "a CSI camera cannot be read with ffmpeg", { fix: 'use decoder: "auto" or "gstreamer"' });
  }
}

// ---------------------------------------------------------------- GStreamer

/** A property value quoted for gst-launch's parser (argv words are joined with spaces and parsed again). */
export function gstQuote(value: string): string {
  return `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** 7.5 → "15/2": GStreamer fractions. */
export function gstFraction(fps: number): string {
  for (const den of [1, 2, 3, 4, 5, 6, 8, 10, 100, 1000, 1001]) {
    const num = fps * den;
    if (Math.abs(num - Math.round(num)) < 1e-6) return `${Math.round(num)}/${den}`;
  }
  return `${Math.round(fps * 1000)}/1000`;
}

function sizeFields(out: OutputShape): string {
  return `${out.width !== undefined ? `,width=${out.width}` : ""}${out.height !== undefined ? `,height=${out.height}` : ""}`;
}

function dropTo(fps: number | undefined): string[] {
  return fps === undefined ? [] : ["videorate", "drop-only=true", "max-rate=" + Math.max(1, Math.ceil(fps)), "!"];
}

/** From decoded video (NVMM on Jetson) to the stdout sink. */
function gstTail(out: OutputShape, jetson: boolean, fps: number | undefined, sync: boolean, flipMethod?: number): string[] {
  const sink = ["fdsink", "fd=1", `sync=${sync}`];
  const rate = fps !== undefined ? `,framerate=${gstFraction(fps)}` : "";
  const convert = jetson ? ["nvvidconv", ...(flipMethod ? [`flip-method=${flipMethod}`] : []), "!"] : ["videoconvert", "!", "videoscale", "!"];
  if (out.format === "rgb24") {
    // nvvidconv cannot write packed RGB: it writes RGBA, videoconvert drops the alpha.
    const caps = jetson ? [`video/x-raw,format=RGBA${sizeFields(out)}${rate}`, "!", "videoconvert", "!", "video/x-raw,format=RGB", "!"] : [`video/x-raw,format=RGB${sizeFields(out)}${rate}`, "!"];
    return [...dropTo(fps), ...convert, ...caps, ...sink];
  }
  const quality = `quality=${out.jpegQuality}`;
  const encode = jetson ? [`video/x-raw(memory:NVMM),format=I420${sizeFields(out)}${rate}`, "!", "nvjpegenc", quality, "!"] : [`video/x-raw,format=I420${sizeFields(out)}${rate}`, "!", "jpegenc", quality, "!"];
  return [...dropTo(fps), ...convert, ...encode, ...sink];
}

function gstDepayDecode(codec: "auto" | "h264" | "h265", jetson: boolean): string[] {
  if (!jetson) return ["decodebin", "!"];
  if (codec === "auto") return ["parsebin", "!", "nvv4l2decoder", "!"];
  return [`rtp${codec}depay`, "!", `${codec}parse`, "!", "nvv4l2decoder", "!"];
}

function gstreamerCommand(spec: VideoSpec, platform: PlatformInfo, file: string): ProcessCommand {
  const jetson = platform.jetson;
  // -q: without it gst-launch prints its state changes on stdout, in the middle of the frames.
  const args = ["-q"];
  switch (spec.type) {
    case "file":
      args.push("filesrc", `location=${gstQuote(spec.path)}`, "!", ...(jetson ? ["parsebin", "!", "nvv4l2decoder", "!"] : ["decodebin", "!"]));
      args.push(...gstTail(spec.out, jetson, spec.fps, spec.realtime));
      // gst-launch cannot loop: it exits 0 at the end and the source starts it again.
      return { decoder: "gstreamer", file, args, output: outputOf(spec.out), cleanExit: spec.loop ? "replay" : "ended" };
    case "rtsp": {
      const props = [`location=${gstQuote(spec.url)}`, `protocols=${spec.transport}`, `latency=${spec.latencyMs}`, `tcp-timeout=${Math.round(spec.timeoutS * 1e6)}`];
      if (spec.username !== undefined) props.push(`user-id=${gstQuote(spec.username)}`);
      if (spec.password !== undefined) props.push(`user-pw=${gstQuote(spec.password)}`);
      // Only the video stream is linked (a camera's audio stream would stay unlinked and stall the pipeline).
      args.push("rtspsrc", ...props, "!", "application/x-rtp,media=video", "!", ...gstDepayDecode(spec.codec, jetson));
      args.push(...gstTail(spec.out, jetson, spec.fps, false));
      return { decoder: "gstreamer", file, args, output: outputOf(spec.out), cleanExit: "failure" };
    }
    case "v4l2": {
      const rate = spec.fps !== undefined ? `,framerate=${gstFraction(spec.fps)}` : "";
      const size = spec.out.width !== undefined && spec.out.height !== undefined ? `,width=${spec.out.width},height=${spec.out.height}` : "";
      args.push("v4l2src", `device=${gstQuote(spec.device)}`, "!");
      if (spec.format === "mjpeg") {
        args.push(`image/jpeg${size}${rate}`, "!");
        if (spec.out.format === "jpeg") {
          // The camera's JPEGs as they are (jpegparse makes each buffer one whole image).
          args.push("jpegparse", "!", "fdsink", "fd=1", "sync=false");
          return { decoder: "gstreamer", file, args, output: { format: "jpeg" }, cleanExit: "failure" };
        }
        args.push("jpegdec", "!");
      } else {
        args.push(`video/x-raw,format=YUY2${size}${rate}`, "!");
      }
      // Decoded frames are in system memory: the CPU converter and encoder, on Jetson too.
      args.push(...gstTail(spec.out, false, undefined, false));
      return { decoder: "gstreamer", file, args, output: outputOf(spec.out), cleanExit: "failure" };
    }
    case "csi": {
      args.push("nvarguscamerasrc", `sensor-id=${spec.sensorId}`, "!", `video/x-raw(memory:NVMM),width=${spec.width},height=${spec.height},framerate=${gstFraction(spec.fps)},format=NV12`, "!");
      args.push(...gstTail(spec.out, true, undefined, false, spec.flipMethod));
      return { decoder: "gstreamer", file, args, output: outputOf(spec.out), cleanExit: "failure" };
    }
  }
}
