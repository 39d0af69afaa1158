/**
 * A cheap structural check of one still image (a folder's file, an HTTP snapshot): JPEG (SOI…SOF…SOS…EOI) or
 * PNG (signature, IHDR, IEND). It catches truncated and mislabelled files; the full decode happens later.
 */
import { inspectJpeg } from "./jpeg_splitter.ts";

export type StillImage = { ok: true; format: "jpeg" | "png"; width: number; height: number } | { ok: false; reason: string };

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
// The IEND chunk is always these 12 bytes: length 0, type "IEND", CRC.
const PNG_IEND = [0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82];

function startsWith(bytes: Uint8Array, prefix: readonly number[], at = 0): boolean {
  if (bytes.length < at + prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[at + i] !== prefix[i]) return false;
  return true;
}

function readU32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) >>> 0) + (bytes[at + 1]! << 16) + (bytes[at + 2]! << 8) + bytes[at + 3]!;
}

export function inspectPng(bytes: Uint8Array): StillImage {
  if (!startsWith(bytes, PNG_SIGNATURE)) return { ok: false, reason: "no PNG signature" };
  // IHDR must come first: length 13, "IHDR", width, height.
  if (bytes.length < 33 || readU32(bytes, 8) !== 13 || !startsWith(bytes, [0x49, 0x48, 0x44, 0x52], 12)) return { ok: false, reason: "PNG without IHDR" };
  const width = readU32(bytes, 16);
  const height = readU32(bytes, 20);
  if (width === 0 || height === 0) return { ok: false, reason: `PNG size ${width}x${height}` };
  if (!startsWith(bytes, PNG_IEND, bytes.length - PNG_IEND.length)) return { ok: false, reason: "truncated PNG (no IEND at the end)" };
  return { ok: true, format: "png", width, height };
}

export function inspectStillImage(bytes: Uint8Array): StillImage {
  if (bytes.length >= 2 && bytes[0] === 0xff && bytes[1] === 0xd8) {
    const jpeg = inspectJpeg(bytes);
    return jpeg.ok ? { ok: true, format: "jpeg", width: jpeg.width, height: jpeg.height } : jpeg;
  }
  if (startsWith(bytes, PNG_SIGNATURE)) return inspectPng(bytes);
  return { ok: false, reason: bytes.length === 0 ? "empty file" : "neither JPEG nor PNG" };
}
