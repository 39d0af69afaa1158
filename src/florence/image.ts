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
import sharp, { type Metadata, type OutputInfo } from "sharp";

import { FlorenceError, describeValue } from "../errors.ts";
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
  if (channels === 3) {
    rgb.set(samples.subarray(0, pixels * 3));
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
  if (typeof input !== "string" && input.length === 0) throw unreadable(input, "it is empty (0 bytes)");
  const source = input;

  let metadata: Metadata;
  try {
    metadata = await sharp(source, { failOn: FAIL_ON, limitInputPixels: false, pages: 1 }).metadata();
  } catch (error) {
    throw unreadable(input, errorText(error), error);
  }
  const width = metadata.width;
  const height = metadata.height;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw unreadable(input, `its header gives no valid size (${String(width)}x${String(height)})`);
  }
  if (width * height > maxPixels) throw tooLarge(input, width, height, maxPixels);

  const space = String(metadata.space ?? "srgb");
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
