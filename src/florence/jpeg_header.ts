/**
 * The one reader of JPEG headers: which markers carry a frame header (SOF) or no length, and what a SOF segment
 * says. Used by the image decoder's fast path (image.ts) and by the camera stream splitter
 * (service/sources/jpeg_splitter.ts), which walks the same markers a byte at a time.
 */

export const SOI = 0xd8;
export const EOI = 0xd9;
export const SOS = 0xda;

/** SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC). */
export function isFrameMarker(code: number): boolean {
  return code >= 0xc0 && code <= 0xcf && code !== 0xc4 && code !== 0xc8 && code !== 0xcc;
}

/** TEM and RST0..RST7 carry no length. */
export function isStandaloneMarker(code: number): boolean {
  return code === 0x01 || (code >= 0xd0 && code <= 0xd7);
}

export interface JpegFrameHeader {
  precision: number;
  width: number;
  height: number;
  components: number;
}

/** The fields of a SOF segment's payload (`payload[0]` is the sample precision), or undefined when too short. */
export function readFrameHeader(payload: Uint8Array, components = true): JpegFrameHeader | undefined {
  if (payload.length < (components ? 6 : 5)) return undefined;
  return {
    precision: payload[0]!,
    height: (payload[1]! << 8) | payload[2]!,
    width: (payload[3]! << 8) | payload[4]!,
    components: components ? payload[5]! : 0,
  };
}

/** Walks a JPEG's header segments to its frame header; undefined when the bytes hold none before the scan. */
export function findFrameHeader(bytes: Uint8Array): JpegFrameHeader | undefined {
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== SOI) return undefined;
  let at = 2;
  while (at + 4 <= bytes.length) {
    if (bytes[at] !== 0xff) return undefined;
    const marker = bytes[at + 1]!;
    if (marker === 0xff) {
      at++; // fill byte
      continue;
    }
    if (isStandaloneMarker(marker)) {
      at += 2;
      continue;
    }
    // a scan before any frame header means a malformed file
    if (marker === SOI || marker === EOI || marker === SOS) return undefined;
    const length = (bytes[at + 2]! << 8) | bytes[at + 3]!;
    if (length < 2) return undefined;
    if (isFrameMarker(marker)) {
      if (at + 10 > bytes.length || length < 8) return undefined;
      return readFrameHeader(bytes.subarray(at + 4, at + 10));
    }
    at += 2 + length;
  }
  return undefined;
}
