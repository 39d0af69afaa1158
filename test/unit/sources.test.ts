/**
 * Frame sources without running a decoder: the JPEG and raw splitters (property tests over random chunkings,
 * corrupt/truncated input, bounded memory), still-image checks (sizes checked against sharp), the decoder
 * command lines (ffmpeg, GStreamer, Jetson, CSI, V4L2), platform detection, config validation, credential
 * masking, the newest-frame slot, and the supervisor's restart/backoff/stall logic with fake processes.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import type { ChildProcess } from "node:child_process";
import sharp from "sharp";
import { isFlorenceError } from "../../src/errors.ts";
import { LatestFrame, waitForAnyFrame } from "../../src/service/latest.ts";
import { buildCommand, gstFraction, gstQuote, resolveDecoder, ffmpegJpegQ } from "../../src/service/sources/pipelines.ts";
import { backoffDelayS, createSource, detectPlatform, inspectJpeg, JpegSplitter, maskUrl, planSource, RawFrameSplitter } from "../../src/service/sources/index.ts";
import type { CreateSourceOptions, PlatformInfo, SourceSpec, SpawnProcess } from "../../src/service/sources/index.ts";
import { normalizeSpec, type VideoSpec } from "../../src/service/sources/spec.ts";
import { redactor } from "../../src/service/redact.ts";
import { inspectStillImage } from "../../src/service/sources/still_image.ts";
import type { Frame, SourceStatus } from "../../src/service/types.ts";
import { REFERENCE } from "../support/paths.ts";
import { seededRandom } from "../support/random.ts";
import { watchEventLoop } from "../support/event_loop.ts";
import { wallClockBound } from "../support/wall_clock.ts";

const IMAGES = join(REFERENCE, "images");
const readImage = (name: string) => new Uint8Array(readFileSync(join(IMAGES, name)));
const DESKTOP: PlatformInfo = { jetson: false, model: undefined };
const JETSON: PlatformInfo = { jetson: true, model: "NVIDIA Jetson Orin Nano Developer Kit" };

/** Seeded, so a failing chunking can be reproduced from its seed. */
const rng = seededRandom;


/** Cuts `bytes` at random places: sizes from 1 byte up to `max`. */
function randomChunks(bytes: Uint8Array, random: () => number, max: number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let at = 0;
  while (at < bytes.length) {
    // Favour tiny chunks now and then: they split markers and lengths across pushes.
    const size = random() < 0.3 ? 1 + Math.floor(random() * 3) : 1 + Math.floor(random() * max);
    // Copies, like a pipe's fresh buffers: the splitter must not rely on chunks sharing one ArrayBuffer.
    chunks.push(bytes.slice(at, at + size));
    at += size;
  }
  return chunks;
}

function split(chunks: Uint8Array[], maxFrameBytes?: number): { frames: { data: Uint8Array; width: number; height: number }[]; corrupt: string[]; maxBuffered: number } {
  const frames: { data: Uint8Array; width: number; height: number }[] = [];
  const corrupt: string[] = [];
  const splitter = new JpegSplitter(
    {
      frame: (data, width, height) => frames.push({ data: data.slice(), width, height }),
      corrupt: (reason) => corrupt.push(reason),
    },
    maxFrameBytes !== undefined ? { maxFrameBytes } : {},
  );
  let maxBuffered = 0;
  for (const chunk of chunks) {
    splitter.push(chunk);
    maxBuffered = Math.max(maxBuffered, splitter.bufferedBytes);
  }
  splitter.flush();
  assert.is(splitter.frames, frames.length);
  assert.is(splitter.corrupt, corrupt.length);
  return { frames, corrupt, maxBuffered };
}

const u16 = (n: number) => [(n >> 8) & 255, n & 255];
function segment(code: number, payload: number[]): number[] {
  return [0xff, code, ...u16(payload.length + 2), ...payload];
}

/**
 * A structurally valid JPEG exercising the parser's corners: APP1 carrying a complete thumbnail JPEG (its own
 * SOI…EOI), fill bytes before markers, DRI + RSTn and 0xFF00 stuffing in scan data, and optionally a second scan
 * with a DHT between scans (progressive layout).
 */
function syntheticJpeg(width: number, height: number, options: { thumbnail?: Uint8Array; progressive?: boolean; seed?: number } = {}): Uint8Array {
  const random = rng(options.seed ?? 1);
  const bytes: number[] = [0xff, 0xd8];
  bytes.push(...segment(0xe0, [0x4a, 0x46, 0x49, 0x46, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]));
  if (options.thumbnail) bytes.push(...segment(0xe1, [0x45, 0x78, 0x69, 0x66, 0, 0, ...options.thumbnail]));
  bytes.push(...segment(0xdb, [0, ...Array.from({ length: 64 }, (_, i) => i + 1)]));
  bytes.push(0xff, 0xff); // fill bytes before a marker are allowed
  bytes.push(...segment(options.progressive ? 0xc2 : 0xc0, [8, ...u16(height), ...u16(width), 1, 1, 0x11, 0]));
  bytes.push(...segment(0xc4, [0, ...Array.from({ length: 16 }, () => 0), 0x01]));
  bytes.push(...segment(0xdd, u16(4)));
  const scans = options.progressive ? 2 : 1;
  for (let s = 0; s < scans; s++) {
    if (s > 0) bytes.push(...segment(0xc4, [0x10, ...Array.from({ length: 16 }, () => 0), 0x02]));
    bytes.push(...segment(0xda, [1, 1, 0, 0, 63, 0]));
    let rst = 0;
    for (let i = 0; i < 400; i++) {
      const r = random();
      if (r < 0.05) bytes.push(0xff, 0x00);
      else if (r < 0.07) bytes.push(0xff, 0xd0 + (rst++ & 7));
      else bytes.push(Math.floor(random() * 255)); // never 0xFF alone
    }
  }
  bytes.push(0xff, 0xff, 0xd9);
  return new Uint8Array(bytes);
}

// ---------------------------------------------------------------- JPEG splitter

test("JPEG splitter: fixture JPEGs give their sizes (checked against sharp) and pass through byte-identical", async () => {
  for (const name of ["street.jpg", "cmyk.jpg", "exif_rotated.jpg", "wide.jpg"]) {
    const bytes = readImage(name);
    const meta = await sharp(bytes).metadata();
    const { frames, corrupt } = split([bytes]);
    assert.is(corrupt.length, 0, name);
    assert.is(frames.length, 1, name);
    assert.equal([frames[0]!.width, frames[0]!.height], [meta.width, meta.height], name);
    assert.ok(Buffer.from(frames[0]!.data).equals(Buffer.from(bytes)), name);
  }
});

test("JPEG splitter: an EXIF thumbnail (SOI…EOI inside APP1) does not end the frame; progressive scans are followed", async () => {
  const thumb = readImage("exif_rotated.jpg");
  const withThumb = syntheticJpeg(640, 480, { thumbnail: thumb });
  const progressive = new Uint8Array(await sharp(readImage("street.jpg")).jpeg({ progressive: true }).toBuffer());
  const meta = await sharp(progressive).metadata();
  assert.ok(meta.isProgressive);
  const { frames, corrupt } = split([withThumb, progressive, syntheticJpeg(33, 17, { progressive: true })]);
  assert.equal(corrupt, []);
  assert.equal(frames.map((f) => [f.data.length, f.width, f.height]), [
    [withThumb.length, 640, 480],
    [progressive.length, meta.width, meta.height],
    [syntheticJpeg(33, 17, { progressive: true }).length, 33, 17],
  ]);
});

test("JPEG splitter property: every chunking of a stream gives the same frames (300 random chunkings)", async () => {
  const progressive = new Uint8Array(await sharp(readImage("street.jpg")).jpeg({ progressive: true }).toBuffer());
  const frames = [
    readImage("street.jpg"),
    syntheticJpeg(640, 480, { thumbnail: readImage("exif_rotated.jpg"), seed: 2 }),
    readImage("cmyk.jpg"),
    progressive,
    syntheticJpeg(64, 48, { progressive: true, seed: 3 }),
    readImage("exif_rotated.jpg"),
  ];
  const stream = Buffer.concat([...frames, ...frames]);
  const whole = split([stream]);
  assert.is(whole.frames.length, frames.length * 2);
  assert.equal(whole.corrupt, []);
  for (let seed = 1; seed <= 300; seed++) {
    const random = rng(seed);
    const got = split(randomChunks(stream, random, seed % 3 === 0 ? 17 : 70000));
    assert.is(got.frames.length, whole.frames.length, `seed ${seed}`);
    assert.equal(got.corrupt, [], `seed ${seed}`);
    got.frames.forEach((f, i) => {
      const want = frames[i % frames.length]!;
      if (!Buffer.from(f.data).equals(Buffer.from(want))) assert.unreachable(`seed ${seed}: frame ${i} differs`);
      assert.is(f.width, whole.frames[i]!.width);
    });
  }
});

test("JPEG splitter property: damaged streams give the same frames and corrupt counts under every chunking", () => {
  const good = [readImage("street.jpg"), syntheticJpeg(100, 50, { seed: 9 }), readImage("wide.jpg")];
  const cut = good[0]!.subarray(0, 5000); // truncated inside scan data, next frame's SOI follows
  const cutHeader = good[0]!.subarray(0, 300); // truncated inside the header
  const garbage = new Uint8Array([1, 2, 3, 0xff, 0x00, 0xff, 0xd9, 7]);
  const noSos = new Uint8Array([0xff, 0xd8, ...segment(0xc0, [8, 0, 10, 0, 10, 1, 1, 0x11, 0]), 0xff, 0xd9]);
  const noSof = new Uint8Array([0xff, 0xd8, ...segment(0xda, [1, 1, 0, 0, 63, 0]), 1, 2, 3, 0xff, 0xd9]);
  const stream = Buffer.concat([garbage, good[0]!, cut, good[1]!, cutHeader, good[2]!, garbage, noSos, good[0]!, noSof, good[1]!, good[2]!.subarray(0, 999)]);
  // Segment lengths are trusted (they must be, for EXIF thumbnails), so a frame cut inside its header swallows the
  // start of the next one: both are lost as one corrupt event, and the garbage run after them belongs to it too.
  const wantFrames = [good[0]!, good[1]!, good[0]!, good[1]!];
  // garbage at the start; cut in scan data; cut in header (+ the next frame and garbage); EOI without SOS;
  // SOS without SOF; truncated at the end.
  const wantCorrupt = 6;
  for (let seed = 1; seed <= 200; seed++) {
    const got = split(randomChunks(stream, rng(seed), seed % 2 ? 5 : 40000));
    assert.is(got.frames.length, wantFrames.length, `seed ${seed}: ${got.corrupt.join("; ")}`);
    got.frames.forEach((f, i) => assert.ok(Buffer.from(f.data).equals(Buffer.from(wantFrames[i]!)), `seed ${seed} frame ${i}`));
    assert.is(got.corrupt.length, wantCorrupt, `seed ${seed}: ${got.corrupt.join("; ")}`);
  }
});

test("JPEG splitter: a frame inside one chunk is handed over without copying", () => {
  const chunk = Buffer.concat([readImage("street.jpg"), readImage("wide.jpg")]);
  const views: Uint8Array[] = [];
  const splitter = new JpegSplitter({ frame: (data) => views.push(data), corrupt: () => assert.unreachable("corrupt") });
  splitter.push(chunk);
  assert.is(views.length, 2);
  assert.ok(views.every((v) => v.buffer === chunk.buffer));
});

test("JPEG splitter: a frame that never ends is dropped at maxFrameBytes; memory stays bounded and the next frame gets through", () => {
  const cap = 1 << 20;
  const header = readImage("street.jpg").subarray(0, 700); // SOI … into the scan data
  assert.ok(header.indexOf(0xda) > 0);
  const zeros = new Uint8Array(64 * 1024);
  const frames: Uint8Array[] = [];
  const corrupt: string[] = [];
  const splitter = new JpegSplitter({ frame: (d) => frames.push(d), corrupt: (r) => corrupt.push(r) }, { maxFrameBytes: cap });
  splitter.push(header);
  let maxBuffered = 0;
  for (let i = 0; i < 800; i++) {
    // 50 MiB of scan data that never ends
    splitter.push(zeros);
    maxBuffered = Math.max(maxBuffered, splitter.bufferedBytes);
  }
  splitter.push(readImage("wide.jpg"));
  assert.ok(maxBuffered <= cap, `buffered ${maxBuffered}`);
  assert.is(corrupt.length, 1);
  assert.match(corrupt[0]!, /exceeds/);
  assert.is(frames.length, 1);
  assert.is(frames[0]!.length, readImage("wide.jpg").length);
});

test("JPEG splitter: a stream that ends mid-frame counts the frame as truncated on flush", () => {
  const { frames, corrupt } = split([readImage("street.jpg"), readImage("wide.jpg").subarray(0, 4000)]);
  assert.is(frames.length, 1);
  assert.equal(corrupt, ["stream ended inside a frame"]);
});

test("inspectJpeg / inspectStillImage: sizes agree with sharp; truncated and foreign bytes are rejected", async () => {
  for (const name of ["street.jpg", "cmyk.jpg", "tiny.png", "palette.png", "depth16.png", "document_rgba.png"]) {
    const bytes = readImage(name);
    const meta = await sharp(bytes).metadata();
    const got = inspectStillImage(bytes);
    assert.ok(got.ok, name);
    if (got.ok) assert.equal([got.format, got.width, got.height], [meta.format === "png" ? "png" : "jpeg", meta.width, meta.height], name);
    const truncated = inspectStillImage(bytes.subarray(0, bytes.length - 20));
    assert.not.ok(truncated.ok, `${name} truncated`);
  }
  // A camera's trailing CRLF after the EOI is tolerated; garbage before the SOI is not.
  assert.ok(inspectJpeg(Buffer.concat([readImage("street.jpg"), new Uint8Array([13, 10])])).ok);
  assert.not.ok(inspectJpeg(Buffer.concat([new Uint8Array([1]), readImage("street.jpg")])).ok);
  assert.not.ok(inspectStillImage(new TextEncoder().encode("<html>error</html>")).ok);
  assert.not.ok(inspectStillImage(new Uint8Array(0)).ok);
});

// ---------------------------------------------------------------- raw splitter

test("raw splitter: any chunking gives the same fixed-size frames; a partial frame is dropped and counted", () => {
  const frameBytes = 7 * 5 * 3;
  const stream = new Uint8Array(frameBytes * 9 + 11).map((_, i) => (i * 31) & 255);
  for (let seed = 1; seed <= 100; seed++) {
    const frames: Uint8Array[] = [];
    let truncated = 0;
    const splitter = new RawFrameSplitter(frameBytes, (d) => frames.push(d.slice()), () => truncated++);
    for (const chunk of randomChunks(stream, rng(seed), seed % 2 ? 7 : 400)) {
      splitter.push(chunk);
      assert.ok(splitter.bufferedBytes < frameBytes);
    }
    splitter.flush();
    assert.is(frames.length, 9);
    frames.forEach((f, i) => assert.ok(Buffer.from(f).equals(Buffer.from(stream.subarray(i * frameBytes, (i + 1) * frameBytes)))));
    assert.is(truncated, 1);
  }
});

// ---------------------------------------------------------------- command lines

function command(options: SourceSpec, platform: PlatformInfo = DESKTOP, decoder: "auto" | "ffmpeg" | "gstreamer" = "auto") {
  const spec = normalizeSpec({ camera: "cam", ...options } as CreateSourceOptions) as VideoSpec;
  return buildCommand(spec, resolveDecoder(spec, decoder, platform, "cam"), platform);
}

const joined = (c: { args: string[] }) => c.args.join(" ");

test("ffmpeg file: loop, once, real-time pacing, fps, scaling, rgb24", () => {
  const loop = command({ type: "file", path: "/clips/a b.mp4" });
  assert.is(loop.file, "ffmpeg");
  assert.match(joined(loop), /-re -stream_loop -1 -i file:\/clips\/a b\.mp4 -an -sn -dn -c:v mjpeg -q:v \d+ -f image2pipe -flush_packets 1 pipe:1$/);
  assert.is(loop.cleanExit, "failure");
  assert.ok(loop.args.includes("-nostdin") && loop.args.includes("error"));
  const once = command({ type: "file", path: "x.mp4", loop: false, realtime: false, fps: 2.5, width: 640 });
  assert.not.ok(once.args.includes("-stream_loop"));
  assert.not.ok(once.args.includes("-re"));
  assert.is(once.cleanExit, "ended");
  assert.is(once.args[once.args.indexOf("-vf") + 1], "fps=2.5,scale=640:-2");
  const raw = command({ type: "file", path: "x.mp4", output: "rgb24", width: 320, height: 240 });
  assert.equal(raw.output, { format: "rgb24", width: 320, height: 240 });
  assert.match(joined(raw), /-vf scale=320:240 -pix_fmt rgb24 -f rawvideo -flush_packets 1 pipe:1$/);
});

test("ffmpeg RTSP: TCP by default, socket timeout in µs, credentials from options, no -rw_timeout (ffmpeg 5.1 rejects it)", () => {
  const rtsp = command({ type: "rtsp", url: "rtsp://cam.local:554/stream1", username: "admin", password: "p@ss word", timeoutS: 5 });
  const a = rtsp.args;
  assert.is(a[a.indexOf("-rtsp_transport") + 1], "tcp");
  assert.is(a[a.indexOf("-timeout") + 1], "5000000");
  assert.not.ok(a.includes("-rw_timeout"));
  assert.is(a[a.indexOf("-i") + 1], "rtsp://admin:p%40ss%20word@cam.local:554/stream1");
  assert.ok(a.indexOf("-rtsp_transport") < a.indexOf("-i"));
  const udp = command({ type: "rtsp", url: "rtsp://cam/s", transport: "udp" });
  assert.is(udp.args[udp.args.indexOf("-rtsp_transport") + 1], "udp");
});

test("ffmpeg V4L2: MJPEG passes the camera's JPEGs through (copy + Huffman tables); YUYV is encoded or converted to rgb24", () => {
  const mjpeg = command({ type: "v4l2", device: "/dev/video2", width: 1280, height: 720, fps: 15 });
  assert.is(joined(mjpeg), "-hide_banner -nostdin -nostats -loglevel error -f v4l2 -input_format mjpeg -framerate 15 -video_size 1280x720 -i /dev/video2 -an -sn -dn -c:v copy -bsf:v mjpeg2jpeg -f image2pipe -flush_packets 1 pipe:1");
  const yuyv = command({ type: "v4l2", format: "yuyv", width: 640, height: 480 });
  assert.match(joined(yuyv), /-f v4l2 -input_format yuyv422 -video_size 640x480 -i \/dev\/video0 .* -c:v mjpeg /);
  const raw = command({ type: "v4l2", format: "yuyv", width: 640, height: 480, output: "rgb24" });
  assert.match(joined(raw), /-vf scale=640:480 -pix_fmt rgb24 -f rawvideo/);
  assert.equal(raw.output, { format: "rgb24", width: 640, height: 480 });
  // MJPEG to rgb24 has to decode.
  assert.not.ok(command({ type: "v4l2", output: "rgb24", width: 320, height: 240 }).args.includes("copy"));
});

test("GStreamer CSI (Jetson): nvarguscamerasrc → NVMM → nvvidconv → nvjpegenc → fdsink, with -q first", () => {
  const csi = command({ type: "csi", sensorId: 1, width: 1280, height: 720, fps: 59.94, flipMethod: 2 }, JETSON);
  assert.is(csi.file, "gst-launch-1.0");
  assert.is(csi.args[0], "-q");
  assert.is(
    joined(csi),
    "-q nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=5994/100,format=NV12 ! nvvidconv flip-method=2 ! video/x-raw(memory:NVMM),format=I420,width=1280,height=720 ! nvjpegenc quality=90 ! fdsink fd=1 sync=false",
  );
  const raw = command({ type: "csi", output: "rgb24" }, JETSON);
  assert.match(joined(raw), /nvvidconv ! video\/x-raw,format=RGBA,width=1920,height=1080 ! videoconvert ! video\/x-raw,format=RGB ! fdsink fd=1 sync=false$/);
  assert.equal(raw.output, { format: "rgb24", width: 1920, height: 1080 });
  // CSI cannot go through ffmpeg.
  try {
    command({ type: "csi" }, JETSON, "ffmpeg");
    assert.unreachable();
  } catch (error) {
    assert.ok(isFlorenceError(error, "CONFIG_INVALID"));
  }
});

test("decoder auto: GStreamer with nvv4l2decoder on Jetson for RTSP and files, ffmpeg elsewhere and for V4L2", () => {
  const rtsp = command({ type: "rtsp", url: "rtsp://u:pw@cam/s", codec: "h265", latencyMs: 100 }, JETSON);
  assert.is(rtsp.decoder, "gstreamer");
  assert.is(rtsp.args[0], "-q");
  assert.match(joined(rtsp), /^-q rtspsrc location="rtsp:\/\/u:pw@cam\/s" protocols=tcp latency=100 tcp-timeout=10000000 ! application\/x-rtp,media=video ! rtph265depay ! h265parse ! nvv4l2decoder ! nvvidconv ! video\/x-raw\(memory:NVMM\),format=I420 ! nvjpegenc quality=90 ! fdsink fd=1 sync=false$/);
  assert.match(joined(command({ type: "rtsp", url: "rtsp://cam/s" }, JETSON)), / parsebin ! nvv4l2decoder /);
  const file = command({ type: "file", path: 'my "clip".mp4', fps: 5 }, JETSON);
  assert.match(joined(file), /^-q filesrc location="my \\"clip\\"\.mp4" ! parsebin ! nvv4l2decoder ! videorate drop-only=true max-rate=5 ! nvvidconv ! video\/x-raw\(memory:NVMM\),format=I420,framerate=5\/1 ! nvjpegenc/);
  assert.is(file.cleanExit, "replay");
  assert.match(joined(file), /sync=true$/);
  assert.is(command({ type: "file", path: "a.mp4", loop: false }, JETSON).cleanExit, "ended");
  assert.is(command({ type: "rtsp", url: "rtsp://cam/s" }, DESKTOP).decoder, "ffmpeg");
  assert.is(command({ type: "v4l2" }, JETSON).decoder, "ffmpeg");
  assert.is(command({ type: "rtsp", url: "rtsp://cam/s" }, JETSON, "ffmpeg").decoder, "ffmpeg");
  const desktopGst = command({ type: "rtsp", url: "rtsp://cam/s" }, DESKTOP, "gstreamer");
  assert.match(joined(desktopGst), / decodebin ! videoconvert ! videoscale ! video\/x-raw,format=I420 ! jpegenc quality=90 ! fdsink fd=1 sync=false$/);
  const v4l2Gst = command({ type: "v4l2", width: 640, height: 480, fps: 30 }, JETSON, "gstreamer");
  assert.is(joined(v4l2Gst), '-q v4l2src device="/dev/video0" ! image/jpeg,width=640,height=480,framerate=30/1 ! jpegparse ! fdsink fd=1 sync=false');
  for (const c of [rtsp, file, desktopGst, v4l2Gst]) assert.is(c.args[0], "-q");
});

test("gst helpers: fractions and quoting", () => {
  assert.is(gstFraction(30), "30/1");
  assert.is(gstFraction(7.5), "15/2");
  assert.is(gstFraction(0.2), "1/5");
  assert.is(gstQuote('a "b" \\c'), '"a \\"b\\" \\\\c"');
  assert.is(ffmpegJpegQ(100), 2);
  assert.is(ffmpegJpegQ(1), 31);
});

// ---------------------------------------------------------------- platform, config, secrets

test("detectPlatform: /etc/nv_tegra_release or a Jetson device-tree model; injectable probes", () => {
  const probe = (files: Record<string, string>) => ({ exists: (p: string) => p in files, readText: (p: string) => files[p] });
  assert.equal(detectPlatform(probe({ "/etc/nv_tegra_release": "# R36 (release)" })), { jetson: true, model: undefined });
  assert.equal(detectPlatform(probe({ "/proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\0" })), { jetson: true, model: "NVIDIA Jetson AGX Orin Developer Kit" });
  assert.equal(detectPlatform(probe({ "/proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.4\0" })), { jetson: false, model: "Raspberry Pi 4 Model B Rev 1.4" });
  assert.equal(detectPlatform(probe({})), { jetson: false, model: undefined });
});

test("config errors name the value and the fix", () => {
  const cases: [CreateSourceOptions, RegExp][] = [
    [{ camera: "c", type: "file", path: "a.mp4", fps: 0 }, /source\.fps must be a number in \(0, 240\], got 0/],
    [{ camera: "c", type: "file", path: "a.mp4", output: "rgb24" }, /output.*width and height/],
    [{ camera: "c", type: "rtsp", url: "http://cam/s" }, /source\.url must be a rtsp or rtsps URL, got "http:\/\/…"/],
    [{ camera: "c", type: "http", url: "not a url" }, /source\.url/],
    [{ camera: "c", type: "v4l2", device: "video0" }, /source\.device must be a device path like \/dev\/video0, got "video0"/],
    [{ camera: "c", type: "csi", sensorId: 99 }, /sensorId must be an integer in 0\.\.15, got 99/],
    [{ camera: "", type: "folder", path: "x" }, /camera name/],
    [{ camera: "c", type: "webcam" } as unknown as CreateSourceOptions, /source\.type must be one of .*got "webcam"/],
    [{ camera: "c", type: "file", path: "a.mp4", backoff: { initialS: 10, maxS: 5 } }, /backoff\.maxS/],
  ];
  for (const [options, pattern] of cases) {
    try {
      createSource({ platform: DESKTOP, ...options });
      assert.unreachable(JSON.stringify(options));
    } catch (error) {
      assert.ok(isFlorenceError(error, "CONFIG_INVALID"), String(error));
      assert.match((error as Error).message, pattern);
    }
  }
  // The rtsp URL in an error never shows the password.
  try {
    createSource({ camera: "c", type: "rtsp", url: "http://admin:hunter22@cam/s", platform: DESKTOP });
  } catch (error) {
    assert.not.match((error as Error).message, /hunter22/);
  }
});

test("credentials are masked in descriptions and in any text a decoder prints", () => {
  assert.is(maskUrl("rtsp://admin:hunter22@10.0.0.5:554/Streaming/Channels/101"), "rtsp://admin:***@10.0.0.5:554/Streaming/Channels/101");
  assert.is(maskUrl("rtsp://10.0.0.5/s"), "rtsp://10.0.0.5/s");
  const plan = planSource({ camera: "c", type: "rtsp", url: "rtsp://admin:hunter22@10.0.0.5/s", platform: DESKTOP });
  assert.is(plan.description, "rtsp rtsp://admin:***@10.0.0.5/s (tcp, jpeg, ffmpeg)");
  const http = planSource({ camera: "c", type: "http", url: "https://u:topsecret@cam/snap.jpg", platform: DESKTOP });
  assert.not.match(http.description, /topsecret/);
  const redact = redactor(["p@ss/word"]);
  assert.is(redact("rtsp://admin:p%40ss%2Fword@cam: 401 (password p@ss/word)"), "rtsp://admin:***@cam: 401 (password ***)");
});

test("backoff: 1 s doubling to 60 s", () => {
  assert.equal([1, 2, 3, 4, 5, 6, 7, 8, 100].map((n) => backoffDelayS(n, 1, 60)), [1, 2, 4, 8, 16, 32, 60, 60, 60]);
});

// ---------------------------------------------------------------- LatestFrame

function frame(seq: number, camera = "c"): Frame {
  return { camera, seq, capturedAt: 0, capturedMono: 0, format: "jpeg", width: 1, height: 1, data: new Uint8Array(1) };
}

test("LatestFrame: the newest frame wins, replaced frames are counted as dropped, one frame held", () => {
  const slot = new LatestFrame("c");
  assert.is(slot.take(), undefined);
  for (let i = 0; i < 1000; i++) slot.put(frame(i));
  assert.is(slot.peek()?.seq, 999);
  assert.is(slot.take()?.seq, 999);
  assert.is(slot.take(), undefined);
  assert.equal([slot.received, slot.dropped, slot.taken], [1000, 999, 1]);
  slot.put(frame(1000));
  assert.is(slot.take()?.seq, 1000);
  assert.is(slot.dropped, 999);
});

test("LatestFrame.next: resolves at once with a waiting frame, else on the next put; abort rejects and unregisters", async () => {
  const slot = new LatestFrame("c");
  slot.put(frame(1));
  assert.is((await slot.next()).seq, 1);
  const waiting = slot.next();
  slot.put(frame(2));
  assert.is((await waiting).seq, 2);
  assert.is(slot.take(), undefined); // handed to the waiter, not left in the slot
  assert.is(slot.dropped, 0);
  const controller = new AbortController();
  const aborted = slot.next(controller.signal);
  controller.abort();
  await aborted.then(
    () => assert.unreachable("should reject"),
    (error) => assert.is((error as Error).name, "AbortError"),
  );
  slot.put(frame(3)); // no waiter left: stays in the slot
  assert.is(slot.take()?.seq, 3);
  await slot.next(controller.signal).then(
    () => assert.unreachable("already aborted"),
    () => {},
  );
});

test("waitForAnyFrame: wakes on whichever camera gets a frame first, and cleans up", async () => {
  const a = new LatestFrame("a");
  const b = new LatestFrame("b");
  const woke = waitForAnyFrame([a, b]);
  b.put(frame(1, "b"));
  await woke;
  assert.ok(b.pending);
  assert.not.ok(a.pending);
  await waitForAnyFrame([a, b]); // at once: b has a frame
  const controller = new AbortController();
  b.take();
  const never = waitForAnyFrame([a, b], controller.signal);
  controller.abort();
  await never.then(
    () => assert.unreachable(),
    () => {},
  );
  const single = a.wait();
  a.put(frame(5, "a"));
  await single;
  assert.is(a.take()?.seq, 5);
});

// ---------------------------------------------------------------- supervisor with fake processes

/** A stand-in for a decoder process: the test writes its stdout and decides when it exits. */
class FakeChild extends EventEmitter {
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  readonly pid: number;
  signals: string[] = [];
  exited = false;
  constructor(pid: number) {
    super();
    this.pid = pid;
  }
  kill(signal: string): boolean {
    this.signals.push(signal);
    if (signal === "SIGTERM" || signal === "SIGKILL") this.exit(null, signal);
    return true;
  }
  exit(code: number | null, signal: string | null = null): void {
    if (this.exited) return;
    this.exited = true;
    this.emit("exit", code, signal);
    this.stdout.end();
    this.stderr.end();
    setTimeout(() => this.emit("close", code, signal), 5);
  }
}

function fakeSpawner(): { spawn: SpawnProcess; children: FakeChild[]; argv: string[][] } {
  const children: FakeChild[] = [];
  const argv: string[][] = [];
  return {
    children,
    argv,
    spawn: (file, args) => {
      argv.push([file, ...args]);
      const child = new FakeChild(1000 + children.length);
      children.push(child);
      return child as unknown as ChildProcess;
    },
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Upper bounds on delays: a loaded machine breaks them, so they are measured here and asserted by `npm run test:timing`. */
function upperBounds(lagMs: number, what: string, check: () => void): void {
  wallClockBound(lagMs, 100, what, check);
}
async function until(condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await sleep(5);
  }
}

test("supervisor: frames flow with increasing seq; a dying process is restarted with doubling backoff; seq keeps counting", async () => {
  const fake = fakeSpawner();
  const lag = watchEventLoop();
  const source = createSource({ camera: "door", type: "rtsp", url: "rtsp://admin:hunter22@cam/s", platform: DESKTOP, spawnProcess: fake.spawn, backoff: { initialS: 0.05, maxS: 0.2 } });
  const frames: Frame[] = [];
  const statuses: { status: SourceStatus; at: number }[] = [];
  source.start((f) => frames.push(f), (s) => statuses.push({ status: s, at: performance.now() }));
  assert.is(fake.children.length, 1);
  assert.ok(fake.argv[0]!.includes("rtsp://admin:hunter22@cam/s"));
  const jpeg = readImage("street.jpg");
  fake.children[0]!.stdout.write(jpeg.subarray(0, 100));
  fake.children[0]!.stdout.write(Buffer.concat([jpeg.subarray(100), jpeg]));
  await until(() => frames.length === 2);
  const meta = await sharp(jpeg).metadata();
  assert.equal(frames.map((f) => [f.camera, f.seq, f.format, f.width, f.height]), [["door", 0, "jpeg", meta.width, meta.height], ["door", 1, "jpeg", meta.width, meta.height]]);
  for (let round = 0; round < 4; round++) {
    const child = fake.children.at(-1)!;
    child.stderr.write("[rtsp @ 0x1] rtsp://admin:hunter22@cam/s: Connection refused\n");
    await sleep(5);
    child.exit(1);
    await until(() => fake.children.length === round + 2);
  }
  fake.children.at(-1)!.stdout.write(jpeg);
  await until(() => frames.length === 3);
  assert.is(frames[2]!.seq, 2);
  const states = statuses.map((s) => s.status.state);
  assert.equal(states.slice(0, 3), ["starting", "running", "restarting"]);
  const restarting = statuses.filter((s) => s.status.state === "restarting");
  assert.is(restarting.length, 4);
  for (const r of restarting) {
    assert.match(r.status.reason!, /ffmpeg exited with code 1: .*Connection refused/);
    assert.not.match(r.status.reason!, /hunter22/);
  }
  // Delays between a restart decision and the next "starting": 50, 100, 200, 200 ms (capped).
  const starts = statuses.filter((s) => s.status.state === "starting").slice(1);
  const gaps = restarting.map((r, i) => starts[i]!.at - r.at);
  [50, 100, 200, 200].forEach((want, i) => assert.ok(gaps[i]! >= want - 5, `gap ${i}: ${gaps[i]} ms, want ${want}`));
  upperBounds(lag(), "backoff delay upper bounds", () => [50, 100, 200, 200].forEach((want, i) => assert.ok(gaps[i]! < want + 150, `gap ${i}: ${gaps[i]} ms, want ${want}`)));
  assert.is(source.status().restarts, 4);
  assert.is(source.status().state, "running");
  const stopping = source.stop();
  assert.is(source.stop(), stopping); // idempotent
  await stopping;
  assert.equal(fake.children.at(-1)!.signals.slice(0, 2), ["SIGTERM", "SIGCONT"]);
  assert.is(source.status().state, "stopped");
  await source.stop();
});

test("supervisor: a silent process is stalled and restarted; a once file ends; a missing program fails for good", async () => {
  const fake = fakeSpawner();
  const stallLag = watchEventLoop();
  const stalled = createSource({ camera: "c", type: "file", path: "x.mp4", platform: DESKTOP, spawnProcess: fake.spawn, stallTimeoutS: 0.2, backoff: { initialS: 0.05 } });
  const states: string[] = [];
  stalled.start(() => {}, (s) => states.push(`${s.state}${s.reason ? `: ${s.reason}` : ""}`));
  fake.children[0]!.stderr.write("some warning\n");
  await until(() => fake.children.length === 2);
  assert.match(states[1]!, /^stalled: no frame for \d+\.\d s: some warning$/);
  // noticed within the second after the 0.2 s timeout: a wall-clock bound (support/wall_clock.ts)
  upperBounds(stallLag(), "the stall detection time", () => assert.match(states[1]!, /^stalled: no frame for 0\.\d s/));
  assert.match(states[2]!, /^restarting: no frame/);
  assert.equal(fake.children[0]!.signals.slice(0, 2), ["SIGTERM", "SIGCONT"]);
  await stalled.stop();

  const fakeOnce = fakeSpawner();
  const once = createSource({ camera: "c", type: "file", path: "x.mp4", loop: false, platform: DESKTOP, spawnProcess: fakeOnce.spawn });
  const onceStates: string[] = [];
  let got = 0;
  once.start(() => got++, (s) => onceStates.push(s.state));
  fakeOnce.children[0]!.stdout.write(Buffer.concat([readImage("street.jpg"), readImage("street.jpg").subarray(0, 1000)]));
  await sleep(10);
  fakeOnce.children[0]!.exit(0);
  await until(() => onceStates.includes("ended"));
  assert.is(got, 1);
  assert.is(once.status().framesCorrupt, 1); // the cut-off last frame
  assert.equal(onceStates, ["starting", "running", "ended"]);
  await sleep(50);
  assert.is(fakeOnce.children.length, 1); // not restarted
  await once.stop();

  const missing = createSource({ camera: "c", type: "file", path: "x.mp4", platform: DESKTOP, ffmpegPath: "/nonexistent/ffmpeg" });
  const missingStates: SourceStatus[] = [];
  missing.start(() => {}, (s) => missingStates.push(s));
  await until(() => missingStates.some((s) => s.state === "failed"));
  assert.match(missingStates.at(-1)!.reason!, /\/nonexistent\/ffmpeg not found — install ffmpeg/);
  await missing.stop();
  assert.throws(() => missing.start(() => {}, () => {}), /already started/);
});

test("supervisor: the backoff resets after a healthy period; framesDropped comes from the slot", async () => {
  const fake = fakeSpawner();
  const slot = new LatestFrame("c");
  const lag = watchEventLoop();
  const source = createSource({ camera: "c", type: "rtsp", url: "rtsp://cam/s", platform: DESKTOP, spawnProcess: fake.spawn, drops: slot, backoff: { initialS: 0.1, maxS: 10, healthyS: 0.15 } });
  const statuses: { state: string; at: number }[] = [];
  source.start((f) => slot.put(f), (s) => statuses.push({ state: s.state, at: performance.now() }));
  const jpeg = readImage("wide.jpg");
  const failAfterFrames = async (ms: number) => {
    const child = fake.children.at(-1)!;
    const end = performance.now() + ms;
    while (performance.now() < end) {
      child.stdout.write(jpeg);
      await sleep(20);
    }
    const count = fake.children.length;
    child.exit(1);
    await until(() => fake.children.length === count + 1, 5000);
  };
  await failAfterFrames(0); // failure 1: 0.1 s
  await failAfterFrames(0); // failure 2: 0.2 s
  await failAfterFrames(300); // healthy for 0.3 s > 0.15 s: back to 0.1 s
  const restartAt = statuses.filter((s) => s.state === "restarting").map((s) => s.at);
  const startAt = statuses.filter((s) => s.state === "starting").slice(1).map((s) => s.at);
  const gaps = restartAt.map((t, i) => startAt[i]! - t);
  assert.ok(gaps[1]! >= 195, `gaps ${gaps.map((g) => g.toFixed(0)).join(", ")}`);
  upperBounds(lag(), "the backoff reset", () => assert.ok(gaps[0]! < 180 && gaps[2]! < 180, `gaps ${gaps.map((g) => g.toFixed(0)).join(", ")}`));
  assert.ok(source.status().framesDropped > 0 && source.status().framesDropped === slot.dropped);
  await source.stop();
});

test.run();
