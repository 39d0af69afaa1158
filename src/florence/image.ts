/**
 * Image decoding with PIL semantics: what `PIL.Image.open(path).convert("RGB")` gives, which is what Hugging Face's
 * Florence-2 image processor starts from. This is the only module that uses sharp (libvips).
 *
 * sharp is asked for the raw, unconverted samples (no ICC transform, no CMYK→sRGB transform, no premultiplication,
 * 16-bit kept) and the PIL conversion to RGB is done here:
 *   - RGB / RGBA / P (with or without transparency): the RGB samples; alpha is dropped, never composited.
 *   - L / LA / "1": grey replicated (bilevel PNGs decode to 0/255, like Pillow's bit2rgb).
 *   - CMYK (including Adobe inverted CMYK JPEGs, which libvips un-inverts like Pillow's "CMYK;I" rawmode): Pillow's
 *     cmyk2rgb, R = 255 - K' - (C·K')/255 with K' = 255 - K in Pillow's integer MULDIV255.
 *   - 16-bit grey PNG (Pillow mode "I;16"): Pillow's I16_RGB clips, v > 255 → 255.
 *   - 16-bit RGB / RGBA / grey+alpha PNG (Pillow rawmodes "RGB;16B", "RGBA;16B", "LA;16B"): the high byte.
 *   - embedded ICC profiles are ignored, as PIL does.
 * EXIF orientation is ignored by default (PIL.Image.open does not apply it); `exifOrientation: "apply"` honours it.
 */
import { closeSync, openSync, readSync } from "node:fs";
import sharp, { type Metadata, type OutputInfo } from "sharp";

import { FlorenceError, describeValue } from "../errors.ts";
import { findFrameHeader } from "./jpeg_header.ts";
import type { RgbImage } from "./resize.ts";

export type { RgbImage } from "./resize.ts";

export type DecodeOptions = {
  /** "ignore" (default, like PIL.Image.open) or "apply" (rotate/flip by the EXIF Orientation tag). */
  exifOrientation?: "ignore" | "apply";
  /** Largest width × height accepted, checked from the header before decoding. Default 64 megapixels. */
  maxPixels?: number;
};

export const DEFAULT_MAX_PIXELS = 64_000_000;

// Pillow raises on truncated files but decodes through libjpeg's "corrupt data" warnings.
const FAIL_ON = "truncated" as const;

function describeInput(input: Uint8Array | string): string {
  return typeof input === "string" ? `image file ${describeValue(input, 200)}` : `image data (${input.length} bytes)`;
}

function unreadable(input: Uint8Array | string, reason: string, cause?: unknown): FlorenceError {
  return new FlorenceError("IMAGE_UNREADABLE", `${describeInput(input)} cannot be decoded: ${reason}`, {
    fix:
      typeof input === "string"
        ? "check that the path names a complete JPEG, PNG, WebP, GIF or TIFF file"
        : "pass the complete bytes of a JPEG, PNG, WebP, GIF or TIFF file",
    cause,
  });
}

function tooLarge(input: Uint8Array | string, width: number, height: number, maxPixels: number): FlorenceError {
  return new FlorenceError(
    "IMAGE_TOO_LARGE",
    `${describeInput(input)} is ${width}x${height} (${width * height} pixels), more than the limit of ${maxPixels}`,
    { fix: "downscale the image before passing it, or raise maxPixels if the memory is available" },
  );
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function checkOptions(options: DecodeOptions): { apply: boolean; maxPixels: number } {
  const orientation = options.exifOrientation ?? "ignore";
  if (orientation !== "ignore" && orientation !== "apply") {
    throw new FlorenceError("INVALID_ARGUMENT", `exifOrientation must be "ignore" or "apply", got ${describeValue(orientation)}`, {
      fix: 'pass exifOrientation: "ignore" (PIL behaviour) or "apply"',
    });
  }
  const maxPixels = options.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (!Number.isSafeInteger(maxPixels) || maxPixels < 1) {
    throw new FlorenceError("INVALID_ARGUMENT", `maxPixels must be a positive integer, got ${describeValue(maxPixels)}`, {
      fix: `pass a positive integer such as ${DEFAULT_MAX_PIXELS}`,
    });
  }
  return { apply: orientation === "apply", maxPixels };
}

/** Pillow's MULDIV255: (a·b + 127) / 255 rounded as Pillow's integer trick does. */
function mulDiv255(a: number, b: number): number {
  const t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

/** PIL convert("RGB") of raw decoded samples, by libvips interpretation and channel count. */
function toRgb(
  samples: Uint8Array | Uint16Array,
  space: string,
  channels: number,
  width: number,
  height: number,
): Uint8Array {
  const pixels = width * height;
  // plain 8-bit RGB: the decoder's buffer is the image (no copy)
  if (channels === 3 && space !== "cmyk" && samples instanceof Uint8Array) return samples.subarray(0, pixels * 3);
  const rgb = new Uint8Array(pixels * 3);
  if (samples instanceof Uint16Array) {
    // 1-band 16-bit grey is Pillow's "I;16" (clipped to 255); every other 16-bit layout is unpacked to 8 bits
    // by taking the high byte.
    const greyClip = channels === 1;
    const grey = channels < 3;
    for (let i = 0, s = 0, o = 0; i < pixels; i++, s += channels) {
      if (grey) {
        const v = samples[s]!;
        const g = greyClip ? (v > 255 ? 255 : v) : v >> 8;
        rgb[o++] = g;
        rgb[o++] = g;
        rgb[o++] = g;
      } else {
        rgb[o++] = samples[s]! >> 8;
        rgb[o++] = samples[s + 1]! >> 8;
        rgb[o++] = samples[s + 2]! >> 8;
      }
    }
    return rgb;
  }
  if (space === "cmyk" && channels >= 4) {
    for (let i = 0, s = 0, o = 0; i < pixels; i++, s += channels) {
      const nk = 255 - samples[s + 3]!;
      rgb[o++] = clip8(nk - mulDiv255(samples[s]!, nk));
      rgb[o++] = clip8(nk - mulDiv255(samples[s + 1]!, nk));
      rgb[o++] = clip8(nk - mulDiv255(samples[s + 2]!, nk));
    }
    return rgb;
  }
  if (channels < 3) {
    for (let i = 0, s = 0, o = 0; i < pixels; i++, s += channels) {
      const g = samples[s]!;
      rgb[o++] = g;
      rgb[o++] = g;
      rgb[o++] = g;
    }
    return rgb;
  }
  for (let i = 0, s = 0, o = 0; i < pixels; i++, s += channels) {
    rgb[o++] = samples[s]!;
    rgb[o++] = samples[s + 1]!;
    rgb[o++] = samples[s + 2]!;
  }
  return rgb;
}

function clip8(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Interpretations whose samples are taken as they are; anything else is converted to sRGB by libvips. */
const RAW_SPACES = new Set(["srgb", "rgb", "b-w", "grey16", "rgb16", "cmyk"]);

/**
 * Decodes an image file (path) or its bytes to 8-bit RGB exactly as `PIL.Image.open(...).convert("RGB")` does
 * (first frame of animations). Throws FlorenceError IMAGE_UNREADABLE or IMAGE_TOO_LARGE; never anything else for
 * bad input.
 */
export async function decodeImage(input: Uint8Array | string, options: DecodeOptions = {}): Promise<RgbImage> {
  const { apply, maxPixels } = checkOptions(options);
  if (typeof input !== "string" && !(input instanceof Uint8Array)) {
    throw new FlorenceError("INVALID_ARGUMENT", `decodeImage: input must be a path or a Uint8Array, got ${describeValue(input)}`, {
      fix: "pass a file path string or the file's bytes",
    });
  }
  const source = input;
  const metadata = await probeImage(input);
  const { width, height } = metadata;
  if (width * height > maxPixels) throw tooLarge(input, width, height, maxPixels);

  const space = metadata.space;
  const keepSamples = RAW_SPACES.has(space);
  const sixteenBit = keepSamples && metadata.depth === "ushort";
  let pipeline = sharp(source, {
    failOn: FAIL_ON,
    limitInputPixels: maxPixels,
    ignoreIcc: true,
    autoOrient: apply,
    sequentialRead: true,
    pages: 1,
  });
  if (keepSamples) {
    // Output in the input's own interpretation, so libvips converts nothing; for CMYK the pipeline colourspace
    // too, or sharp transforms CMYK to sRGB with a generic profile.
    if (space === "cmyk") pipeline = pipeline.pipelineColourspace("cmyk");
    pipeline = pipeline.toColourspace(space);
  }
  pipeline = pipeline.raw({ depth: sixteenBit ? "ushort" : "uchar" });

  let decoded: { data: Uint8Array; info: OutputInfo };
  try {
    decoded = await pipeline.toBuffer({ resolveWithObject: true });
  } catch (error) {
    const text = errorText(error);
    if (/pixel limit/i.test(text)) throw tooLarge(input, width, height, maxPixels);
    throw unreadable(input, text, error);
  }
  const { data, info } = decoded;
  const expected = info.width * info.height * info.channels * (sixteenBit ? 2 : 1);
  if (data.length < expected || info.channels < 1) {
    throw unreadable(input, `the decoder returned ${data.length} bytes for ${info.width}x${info.height}x${info.channels}`);
  }
  const samples = sixteenBit
    ? sixteenBitView(data, info.width * info.height * info.channels)
    : new Uint8Array(data.buffer, data.byteOffset, expected);
  return {
    width: info.width,
    height: info.height,
    data: toRgb(samples, keepSamples ? space : "srgb", info.channels, info.width, info.height),
  };
}

/** What an image's header says, read without decoding its pixels. */
export interface ImageHeader {
  width: number;
  height: number;
  /** jpeg, png, webp, gif, tiff … as libvips names it. */
  format: string;
  space: string;
  depth: string | undefined;
}

/**
 * An image's size and kind from its header, without decoding it (so a decompression bomb costs nothing to refuse).
 * Throws IMAGE_UNREADABLE for anything that is not a readable image.
 */
export async function probeImage(input: Uint8Array | string): Promise<ImageHeader> {
  if (typeof input !== "string" && input.length === 0) throw unreadable(input, "it is empty (0 bytes)");
  // Camera frames and most files are baseline/progressive 8-bit JPEGs: their header says all libvips' metadata()
  // would, read here without a round trip through sharp's thread pool (which costs milliseconds on a busy machine).
  const jpeg = jpegHeader(input);
  let header: ImageHeader;
  if (jpeg) {
    header = { ...jpeg, format: "jpeg" };
  } else {
    let metadata: Metadata;
    try {
      metadata = await sharp(input, { failOn: FAIL_ON, limitInputPixels: false, pages: 1 }).metadata();
    } catch (error) {
      throw unreadable(input, errorText(error), error);
    }
    header = { width: metadata.width, height: metadata.height, format: String(metadata.format), space: String(metadata.space ?? "srgb"), depth: metadata.depth };
  }
  const { width, height } = header;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw unreadable(input, `its header gives no valid size (${String(width)}x${String(height)})`);
  }
  return header;
}

/** Bytes read from the start of a file to find a JPEG's frame header (EXIF and ICC segments come before it). */
const HEADER_PROBE_BYTES = 256 * 1024;

/**
 * What libvips' metadata() reports for an 8-bit JPEG with one (grey, "b-w") or three (YCbCr or RGB, "srgb")
 * components, from its SOF segment; undefined for anything else (CMYK, 12-bit, other formats, no SOF within the
 * first bytes, unreadable files), which then goes through sharp's metadata().
 */
export function jpegHeader(input: Uint8Array | string): { width: number; height: number; space: "srgb" | "b-w"; depth: "uchar" } | undefined {
  let bytes: Uint8Array;
  if (typeof input === "string") {
    let fd: number | undefined;
    try {
      fd = openSync(input, "r");
      const probe = new Uint8Array(HEADER_PROBE_BYTES);
      bytes = probe.subarray(0, readSync(fd, probe, 0, probe.length, 0));
    } catch {
      return undefined;
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  } else {
    bytes = input;
  }
  const header = findFrameHeader(bytes);
  if (header === undefined) return undefined;
  const { precision, width, height, components } = header;
  if (precision !== 8 || width < 1 || height < 1 || (components !== 1 && components !== 3)) return undefined;
  return { width, height, space: components === 1 ? "b-w" : "srgb", depth: "uchar" };
}

function sixteenBitView(data: Uint8Array, count: number): Uint16Array {
  // Raw ushort output is in machine order; copy when the Buffer is not 2-byte aligned.
  if (data.byteOffset % 2 === 0) return new Uint16Array(data.buffer, data.byteOffset, count);
  const copy = new Uint8Array(count * 2);
  copy.set(data.subarray(0, count * 2));
  return new Uint16Array(copy.buffer);
}

/**
 * Approximate resize with sharp's own cubic (Catmull-Rom) kernel: faster, but NOT what Hugging Face computes (pixels
 * differ by a few levels). Only for `pixelValues(..., { resize: "fast" })`; never the default.
 */
export async function resizeWithSharp(image: RgbImage, width: number, height: number): Promise<RgbImage> {
  for (const [name, value] of [["width", width], ["height", height]] as const) {
    if (!Number.isInteger(value) || value < 1) {
      throw new FlorenceError("INVALID_ARGUMENT", `resizeWithSharp: ${name} must be a positive integer, got ${describeValue(value)}`, {
        fix: `pass the model's input ${name} (768 for Florence-2)`,
      });
    }
  }
  if (image.data.length < image.width * image.height * 3) {
    throw new FlorenceError("INVALID_ARGUMENT", `resizeWithSharp: image data has ${image.data.length} bytes for ${image.width}x${image.height} RGB`, {
      fix: "pass an RgbImage from decodeImage",
    });
  }
  if (image.width === width && image.height === height) return image;
  const raw = image.data.subarray(0, image.width * image.height * 3);
  const { data, info } = await sharp(raw, { raw: { width: image.width, height: image.height, channels: 3 } })
    .resize(width, height, { fit: "fill", kernel: "cubic" })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, info.width * info.height * 3) };
}

// ---------------------------------------------------------------------------------------------------------------
// Snapshots: a camera frame with a task's result drawn on it, as JPEG (for the MQTT snapshot topic).

import { Buffer } from "node:buffer";

/** An axis-aligned box in the image's pixel coordinates (x1, y1, x2, y2), as Florence-2's `bboxes`. */
export interface SnapshotBox {
  box: readonly number[];
  label?: string;
  score?: number | null;
}

/** A closed outline in pixel coordinates: polygon vertices, or a text quad's four corners. */
export interface SnapshotShape {
  points: ReadonlyArray<readonly number[]>;
  label?: string;
  score?: number | null;
}

/** What to draw; src/service/overlay.ts builds it from any task's result. */
export interface SnapshotOverlay {
  boxes?: readonly SnapshotBox[];
  polygons?: readonly SnapshotShape[];
  quads?: readonly SnapshotShape[];
  /** A text result (caption, OCR): drawn in a banner at the bottom. */
  caption?: string;
}

export interface SnapshotOptions {
  /** JPEG quality 1..100; default 80. */
  quality?: number;
  /** Downscale wider images to this width (the overlay is scaled with them); default: keep the size. */
  maxWidth?: number;
  /** "jpeg" (default) or "png" (lossless; `quality` is ignored). */
  format?: "jpeg" | "png";
}

/** Shapes drawn at most, so a runaway result cannot make a huge SVG. */
const MAX_SNAPSHOT_SHAPES = 2000;
const MAX_LABEL_CHARS = 80;
// distinct, saturated colours readable under white text; picked per label so a class keeps its colour
const HALO = 'stroke="#000000" stroke-opacity="0.55" stroke-width="';
const SNAPSHOT_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080", "#f032e6", "#9a6324", "#800000", "#000075", "#808000", "#46a0d0"];

/** Text for an SVG text node: XML-escaped, without the characters XML 1.0 forbids (which would fail the parse). */
export function escapeSvgText(text: string): string {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        out += text[i]! + text[i + 1]!;
        i++;
        continue;
      }
    }
    if (c >= 0xd800 && c <= 0xdfff) out += "\ufffd"; // unpaired surrogate
    else if (c === 0x09 || c === 0x0a || c === 0x0d) out += " ";
    else if (c < 0x20 || c === 0xfffe || c === 0xffff) continue;
    else if (c === 0x26) out += "&amp;";
    else if (c === 0x3c) out += "&lt;";
    else if (c === 0x3e) out += "&gt;";
    else if (c === 0x22) out += "&quot;";
    else if (c === 0x27) out += "&apos;";
    else out += text[i]!;
  }
  return out;
}

function paletteColour(label: string | undefined): string {
  // FNV-1a over the label: stable across runs and processes
  let h = 0x811c9dc5;
  const text = label ?? "";
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return SNAPSHOT_PALETTE[(h >>> 0) % SNAPSHOT_PALETTE.length]!;
}

function labelText(label: string | undefined, score: number | null | undefined): string {
  const name = (label ?? "").trim();
  const withScore = typeof score === "number" && Number.isFinite(score) ? (name ? `${name} ${score.toFixed(2)}` : score.toFixed(2)) : name;
  return withScore.length > MAX_LABEL_CHARS ? `${withScore.slice(0, MAX_LABEL_CHARS - 1)}…` : withScore;
}

function n1(value: number): string {
  return (Math.round(value * 10) / 10).toString();
}

/** The overlay as an SVG of the output size; `scale` maps image pixels to output pixels. */
function overlaySvg(overlay: SnapshotOverlay, width: number, height: number, scale: number): string | undefined {
  const short = Math.min(width, height);
  const stroke = Math.max(2, Math.round(short / 200));
  // a dark halo under each coloured line: contrast on any background, and it survives JPEG's halved chroma
  const halo = stroke + 2;
  const fontSize = Math.min(48, Math.max(11, Math.round(short / 36)));
  const charWidth = fontSize * 0.6;
  const shapes: string[] = [];
  const labels: string[] = [];
  let budget = MAX_SNAPSHOT_SHAPES;

  const addLabel = (text: string, x: number, y: number, colour: string) => {
    if (!text) return;
    const boxHeight = Math.round(fontSize * 1.3);
    const boxWidth = Math.min(width, Math.round(text.length * charWidth + fontSize * 0.6));
    // above the shape when there is room, else just inside its top edge
    const top = y - boxHeight >= 0 ? y - boxHeight : Math.max(0, Math.min(y, height - boxHeight));
    const left = Math.max(0, Math.min(x, width - boxWidth));
    labels.push(
      `<rect x="${n1(left)}" y="${n1(top)}" width="${boxWidth}" height="${boxHeight}" fill="${colour}" fill-opacity="0.85"/>`,
      `<text x="${n1(left + fontSize * 0.3)}" y="${n1(top + fontSize * 1.0)}" font-size="${fontSize}" fill="#ffffff">${escapeSvgText(text)}</text>`,
    );
  };

  for (const item of overlay.boxes ?? []) {
    if (budget-- <= 0) break;
    const b = item.box;
    if (!b || b.length < 4) continue;
    const x1 = Math.min(b[0]!, b[2]!) * scale;
    const y1 = Math.min(b[1]!, b[3]!) * scale;
    const x2 = Math.max(b[0]!, b[2]!) * scale;
    const y2 = Math.max(b[1]!, b[3]!) * scale;
    if (![x1, y1, x2, y2].every(Number.isFinite)) continue;
    const colour = paletteColour(item.label);
    const rect = `x="${n1(x1)}" y="${n1(y1)}" width="${n1(Math.max(1, x2 - x1))}" height="${n1(Math.max(1, y2 - y1))}" fill="none"`;
    shapes.push(`<rect ${rect} ${HALO}${halo}"/>`, `<rect ${rect} stroke="${colour}" stroke-width="${stroke}"/>`);
    addLabel(labelText(item.label, item.score), x1, y1, colour);
  }
  const outline = (items: readonly SnapshotShape[] | undefined, fillOpacity: number) => {
    for (const item of items ?? []) {
      if (budget-- <= 0) break;
      const pts: string[] = [];
      let minX = Infinity;
      let minY = Infinity;
      for (const p of item.points ?? []) {
        const x = p[0]! * scale;
        const y = p[1]! * scale;
        if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
        pts.push(`${n1(x)},${n1(y)}`);
        if (y < minY || (y === minY && x < minX)) {
          minY = y;
          minX = x;
        }
      }
      if (pts.length < 2) continue;
      const colour = paletteColour(item.label);
      const points = `points="${pts.join(" ")}" stroke-linejoin="round"`;
      shapes.push(
        `<polygon ${points} fill="none" ${HALO}${halo}"/>`,
        `<polygon ${points} fill="${colour}" fill-opacity="${fillOpacity}" stroke="${colour}" stroke-width="${stroke}"/>`,
      );
      addLabel(labelText(item.label, item.score), minX, minY, colour);
    }
  };
  outline(overlay.polygons, 0.3);
  outline(overlay.quads, 0);

  const caption = overlay.caption === undefined ? "" : String(overlay.caption).replace(/\s+/g, " ").trim();
  if (caption) {
    const maxChars = Math.max(4, Math.floor((width - fontSize) / charWidth));
    const text = caption.length > maxChars ? `${caption.slice(0, maxChars - 1)}…` : caption;
    // at the bottom: labels of shapes near the top edge stay readable
    const bannerHeight = Math.min(height, Math.round(fontSize * 1.6));
    const bannerTop = height - bannerHeight;
    labels.push(
      `<rect x="0" y="${bannerTop}" width="${width}" height="${bannerHeight}" fill="#000000" fill-opacity="0.6"/>`,
      `<text x="${n1(fontSize * 0.5)}" y="${n1(bannerTop + fontSize * 1.15)}" font-size="${fontSize}" fill="#ffffff">${escapeSvgText(text)}</text>`,
    );
  }
  if (shapes.length === 0 && labels.length === 0) return undefined;
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">` +
    `<g>${shapes.join("")}</g>` +
    `<g font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif">${labels.join("")}</g></svg>`
  );
}

/**
 * Draws an overlay (boxes, polygons, quads, a caption) on a frame and encodes it as JPEG. The frame is an RgbImage
 * or the bytes of a JPEG/PNG/… file; coordinates are in the frame's pixels as decodeImage sees it (EXIF orientation
 * not applied, like the model's input), and the JPEG is written in that same orientation without metadata.
 */
export async function renderSnapshot(image: RgbImage | Uint8Array, overlay: SnapshotOverlay = {}, options: SnapshotOptions = {}): Promise<Uint8Array> {
  const quality = options.quality ?? 80;
  if (!Number.isInteger(quality) || quality < 1 || quality > 100) {
    throw new FlorenceError("INVALID_ARGUMENT", `renderSnapshot: quality must be an integer in 1..100, got ${describeValue(quality)}`, { fix: "pass e.g. quality: 80" });
  }
  const maxWidth = options.maxWidth;
  if (maxWidth !== undefined && (!Number.isInteger(maxWidth) || maxWidth < 1)) {
    throw new FlorenceError("INVALID_ARGUMENT", `renderSnapshot: maxWidth must be a positive integer, got ${describeValue(maxWidth)}`, { fix: "pass e.g. maxWidth: 1280, or leave it out" });
  }
  if (overlay === null || typeof overlay !== "object") {
    throw new FlorenceError("INVALID_ARGUMENT", `renderSnapshot: overlay must be an object, got ${describeValue(overlay)}`, { fix: "pass { boxes, polygons, quads, caption } (see overlayFromResult)" });
  }

  let pipeline: ReturnType<typeof sharp>;
  let width: number;
  let height: number;
  if (image instanceof Uint8Array) {
    ({ width, height } = await probeImage(image));
    if (width * height > DEFAULT_MAX_PIXELS) throw tooLarge(image, width, height, DEFAULT_MAX_PIXELS);
    pipeline = sharp(image, { failOn: FAIL_ON, limitInputPixels: DEFAULT_MAX_PIXELS, pages: 1, autoOrient: false });
  } else {
    const valid =
      image !== null &&
      typeof image === "object" &&
      Number.isInteger(image.width) &&
      Number.isInteger(image.height) &&
      image.width > 0 &&
      image.height > 0 &&
      image.data instanceof Uint8Array &&
      image.data.length >= image.width * image.height * 3;
    if (!valid) {
      const got = image && typeof image === "object" ? `${String(image.width)}x${String(image.height)} with ${image.data?.length ?? "no"} bytes` : describeValue(image);
      throw new FlorenceError("INVALID_ARGUMENT", `renderSnapshot: image must be an RgbImage (width × height × 3 bytes) or encoded image bytes, got ${got}`, {
        fix: "pass a frame's JPEG/PNG bytes or the RgbImage from decodeImage",
      });
    }
    width = image.width;
    height = image.height;
    pipeline = sharp(image.data.subarray(0, width * height * 3), { raw: { width, height, channels: 3 } });
  }

  const scale = maxWidth !== undefined && width > maxWidth ? maxWidth / width : 1;
  const outWidth = scale === 1 ? width : maxWidth!;
  const outHeight = scale === 1 ? height : Math.max(1, Math.round(height * scale));
  if (scale !== 1) pipeline = pipeline.resize(outWidth, outHeight, { fit: "fill" });
  // drop alpha without compositing, as PIL's convert("RGB") does for the model's input
  pipeline = pipeline.removeAlpha();
  const svg = overlaySvg(overlay, outWidth, outHeight, scale);
  if (svg !== undefined) pipeline = pipeline.composite([{ input: Buffer.from(svg, "utf8"), top: 0, left: 0 }]);
  try {
    const srgb = pipeline.toColourspace("srgb");
    const encoded = await (options.format === "png" ? srgb.png() : srgb.jpeg({ quality, chromaSubsampling: "4:2:0" })).toBuffer();
    return new Uint8Array(encoded.buffer, encoded.byteOffset, encoded.length);
  } catch (error) {
    if (image instanceof Uint8Array) throw unreadable(image, errorText(error), error);
    throw new FlorenceError("ENGINE_FAILED", `renderSnapshot: encoding the snapshot failed: ${errorText(error)}`, { cause: error });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding and SVG rasterisation for the shapes world's generator (src/world/), here because sharp lives here.

export type ImageEncoding = { format: "jpeg"; quality: number; chroma: "4:2:0" | "4:4:4" } | { format: "png" };

/** An 8-bit RGB image as a JPEG or PNG file. */
export async function encodeRgb(image: RgbImage, encoding: ImageEncoding): Promise<Uint8Array> {
  const pipeline = sharp(image.data.subarray(0, image.width * image.height * 3), { raw: { width: image.width, height: image.height, channels: 3 } });
  const out = encoding.format === "png"
    ? await pipeline.png({ compressionLevel: 6 }).toBuffer()
    : await pipeline.jpeg({ quality: encoding.quality, chromaSubsampling: encoding.chroma }).toBuffer();
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** An SVG document drawn by librsvg as straight (not premultiplied) RGBA, width × height × 4 bytes. */
export async function rasteriseSvg(svg: string, width: number, height: number): Promise<Uint8Array> {
  const { data, info } = await sharp(Buffer.from(svg, "utf8"), { density: 72 }).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  if (info.width !== width || info.height !== height || info.channels !== 4) {
    throw new FlorenceError("ENGINE_FAILED", `rasteriseSvg: librsvg drew ${info.width}x${info.height}x${info.channels}, expected ${width}x${height}x4`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}
