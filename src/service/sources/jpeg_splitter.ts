/**
 * Cuts a concatenated JPEG stream (ffmpeg `image2pipe`/`mjpeg`, gst `jpegenc ! fdsink`, a camera's MJPEG) into
 * frames, however the pipe chunks it. The header is walked segment by segment (so an EXIF thumbnail's own
 * SOI…EOI inside APP1 is skipped by its length), the entropy-coded data is scanned for the next real marker
 * (0xFF00 stuffing and RSTn are data). Each byte is looked at once; a frame that lies in one chunk is handed
 * over as a view of that chunk, one that spans chunks is joined once. A frame that never ends is dropped at
 * `maxFrameBytes`, so memory stays bounded whatever the input.
 */

import { EOI, isFrameMarker, isStandaloneMarker, readFrameHeader, SOI, SOS } from "../../florence/jpeg_header.ts";

export const DEFAULT_MAX_FRAME_BYTES = 32 * 1024 * 1024;

export interface JpegSplitterEvents {
  /** A structurally complete JPEG (SOI, SOF, SOS, EOI); `data` is only valid to keep, never reused by the splitter. */
  frame(data: Uint8Array, width: number, height: number): void;
  /** A truncated or malformed frame, garbage between frames, or an oversized frame was skipped. */
  corrupt(reason: string, kind: "frame" | "garbage"): void;
}

// Parser states.
const SEEK_SOI = 0; // outside a frame: looking for FF D8
const SEEK_SOI_FF = 1; // outside a frame, the last byte was FF
const MARKER = 2; // in the header: the next byte must be FF
const MARKER_CODE = 3; // in the header: read FF, the next byte is the marker code
const LENGTH_HI = 4;
const LENGTH_LO = 5;
const SEGMENT = 6; // skipping a segment's payload (capturing SOF's size fields)
const ENTROPY = 7; // in scan data: looking for FF
const ENTROPY_FF = 8; // in scan data, the last byte was FF

export class JpegSplitter {
  readonly #events: JpegSplitterEvents;
  readonly #maxFrameBytes: number;
  #state = SEEK_SOI;
  /** Chunks (or chunk tails) of the frame in progress that came before the current chunk. */
  #parts: Uint8Array[] = [];
  #partsBytes = 0;
  /** Offset of the frame's first byte in the current chunk; -1 when it began in an earlier chunk (see #parts). */
  #startInChunk = -1;
  #inFrame = false;
  #code = 0;
  #segmentRemaining = 0;
  #segmentOffset = 0;
  #sofBytes = new Uint8Array(5);
  #width = 0;
  #height = 0;
  #sawSof = false;
  #sawSos = false;
  /** Bytes skipped outside a frame since the last frame or counted error (garbage is counted once per run). */
  #garbage = 0;
  /** After a counted error, the bytes up to the next SOI belong to that error, not to a new garbage run. */
  #resyncing = false;

  frames = 0;
  corrupt = 0;

  constructor(events: JpegSplitterEvents, options: { maxFrameBytes?: number } = {}) {
    this.#events = events;
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  }

  /** Bytes held for the frame in progress (the reassembly buffer). */
  get bufferedBytes(): number {
    return this.#partsBytes;
  }

  push(chunk: Uint8Array): void {
    const n = chunk.length;
    let i = 0;
    this.#startInChunk = this.#inFrame ? -1 : 0;
    while (i < n) {
      switch (this.#state) {
        case SEEK_SOI: {
          const ff = chunk.indexOf(0xff, i);
          if (ff < 0) {
            this.#garbage += n - i;
            i = n;
          } else {
            this.#garbage += ff - i;
            this.#state = SEEK_SOI_FF;
            i = ff + 1;
          }
          break;
        }
        case SEEK_SOI_FF: {
          const b = chunk[i]!;
          if (b === SOI) {
            // The frame starts at the FF before this byte, which may be the previous chunk's last byte.
            this.#beginFrame(i - 1);
            this.#state = MARKER;
          } else if (b !== 0xff) {
            this.#garbage += 2;
            this.#state = SEEK_SOI;
          } else {
            this.#garbage += 1;
          }
          i++;
          break;
        }
        case MARKER: {
          if (chunk[i] !== 0xff) {
            this.#fail(`expected a marker, got 0x${chunk[i]!.toString(16)}`);
            // Rescan this byte as a possible start of the next frame.
            break;
          }
          this.#state = MARKER_CODE;
          i++;
          break;
        }
        case MARKER_CODE: {
          const code = chunk[i]!;
          i++;
          if (code === 0xff) break; // fill byte
          this.#onMarker(chunk, i, code, false);
          break;
        }
        case LENGTH_HI:
          this.#segmentRemaining = chunk[i]! << 8;
          this.#state = LENGTH_LO;
          i++;
          break;
        case LENGTH_LO: {
          const length = this.#segmentRemaining | chunk[i]!;
          i++;
          if (length < 2) {
            this.#fail(`segment 0xFF${this.#code.toString(16)} has length ${length}`);
            break;
          }
          this.#segmentRemaining = length - 2;
          this.#segmentOffset = 0;
          this.#state = SEGMENT;
          if (this.#segmentRemaining === 0) this.#endSegment();
          break;
        }
        case SEGMENT: {
          if (isFrameMarker(this.#code) && this.#segmentOffset < 5) {
            this.#sofBytes[this.#segmentOffset] = chunk[i]!;
            this.#segmentOffset++;
            this.#segmentRemaining--;
            i++;
          } else {
            const take = Math.min(this.#segmentRemaining, n - i);
            this.#segmentRemaining -= take;
            this.#segmentOffset += take;
            i += take;
          }
          if (this.#segmentRemaining === 0) this.#endSegment();
          break;
        }
        case ENTROPY: {
          const ff = chunk.indexOf(0xff, i);
          if (ff < 0) {
            i = n;
          } else {
            this.#state = ENTROPY_FF;
            i = ff + 1;
          }
          break;
        }
        case ENTROPY_FF: {
          const code = chunk[i]!;
          i++;
          if (code === 0x00 || (code >= 0xd0 && code <= 0xd7)) this.#state = ENTROPY;
          else if (code !== 0xff) this.#onMarker(chunk, i, code, true);
          break;
        }
      }
      if (this.#inFrame && this.#partsBytes + (i - Math.max(this.#startInChunk, 0)) > this.#maxFrameBytes) {
        this.#fail(`frame exceeds ${this.#maxFrameBytes} bytes without an end`);
      }
    }
    if (this.#inFrame) {
      const tail = this.#startInChunk < 0 ? chunk : chunk.subarray(this.#startInChunk);
      if (tail.length > 0) {
        this.#parts.push(tail);
        this.#partsBytes += tail.length;
      }
    }
    // A lone FF at the end (state SEEK_SOI_FF) may be half of the next SOI: #beginFrame re-creates that byte.
  }

  /** The input ended: a frame in progress is truncated, trailing bytes are garbage. */
  flush(): void {
    if (this.#inFrame) this.#fail("stream ended inside a frame");
    this.#countGarbage();
    this.#state = SEEK_SOI;
    this.#resyncing = false;
  }

  /** `end` is the index just after the marker code in `chunk`. */
  #onMarker(chunk: Uint8Array, end: number, code: number, inScan: boolean): void {
    if (code === EOI) {
      if (!this.#sawSos) {
        this.#fail("EOI before any scan (SOS)");
        return;
      }
      this.#finishFrame(chunk, end);
      return;
    }
    if (code === SOI) {
      // A new image starts before this one ended: this one was cut off.
      this.#fail(inScan ? "truncated: SOI inside scan data" : "truncated: SOI inside the header");
      this.#beginFrame(end - 2);
      this.#state = MARKER;
      return;
    }
    if (code === 0x00) {
      this.#fail("0xFF00 outside scan data");
      return;
    }
    if (isStandaloneMarker(code)) {
      this.#state = inScan ? ENTROPY : MARKER;
      return;
    }
    this.#code = code;
    this.#state = LENGTH_HI;
  }

  #endSegment(): void {
    const code = this.#code;
    if (isFrameMarker(code)) {
      if (this.#segmentOffset < 5) {
        this.#fail("SOF segment too short");
        return;
      }
      const header = readFrameHeader(this.#sofBytes, false)!;
      this.#height = header.height;
      this.#width = header.width;
      this.#sawSof = true;
    }
    if (code === SOS) {
      if (!this.#sawSof) {
        this.#fail("SOS before any SOF (no image size)");
        return;
      }
      this.#sawSos = true;
      this.#state = ENTROPY;
    } else {
      this.#state = MARKER;
    }
  }

  /** `at` is the index of the SOI's FF in `chunk`, or -1 when that FF was the previous chunk's last byte. */
  #beginFrame(at: number): void {
    this.#countGarbage();
    this.#resyncing = false;
    this.#inFrame = true;
    this.#sawSof = false;
    this.#sawSos = false;
    this.#width = 0;
    this.#height = 0;
    this.#parts = [];
    this.#partsBytes = 0;
    if (at >= 0) {
      this.#startInChunk = at;
    } else {
      this.#parts.push(FF_BYTE);
      this.#partsBytes = 1;
      this.#startInChunk = 0;
    }
  }

  /** `end` is the index just after EOI in `chunk`. */
  #finishFrame(chunk: Uint8Array, end: number): void {
    const start = Math.max(this.#startInChunk, 0);
    let data: Uint8Array;
    if (this.#parts.length === 0) {
      data = chunk.subarray(start, end);
    } else {
      const total = this.#partsBytes + end - start;
      data = new Uint8Array(total);
      let at = 0;
      for (const part of this.#parts) {
        data.set(part, at);
        at += part.length;
      }
      data.set(chunk.subarray(start, end), at);
    }
    const width = this.#width;
    const height = this.#height;
    this.#resetFrame();
    this.#startInChunk = end;
    if (width === 0 || height === 0) {
      // SOF with a zero size (height 0 means "defined by DNL", which nothing downstream supports).
      this.corrupt++;
      this.#events.corrupt(`image size ${width}x${height} in SOF`, "frame");
      return;
    }
    this.frames++;
    this.#events.frame(data, width, height);
  }

  #resetFrame(): void {
    this.#inFrame = false;
    this.#parts = [];
    this.#partsBytes = 0;
    this.#state = SEEK_SOI;
    this.#garbage = 0;
  }

  #fail(reason: string): void {
    this.#resetFrame();
    this.#resyncing = true;
    this.corrupt++;
    this.#events.corrupt(reason, "frame");
  }

  #countGarbage(): void {
    if (this.#garbage > 0 && !this.#resyncing) {
      this.corrupt++;
      this.#events.corrupt(`${this.#garbage} bytes of garbage between frames`, "garbage");
    }
    this.#garbage = 0;
  }
}

const FF_BYTE = new Uint8Array([0xff]);

/**
 * Size and structure of one complete JPEG (a file, an HTTP snapshot): a cheap check, not a decode. Bytes after
 * the EOI (a camera's trailing CRLF) are tolerated; bytes before the SOI are not.
 */
export function inspectJpeg(bytes: Uint8Array): { ok: true; width: number; height: number } | { ok: false; reason: string } {
  let found: { width: number; height: number } | undefined;
  let reason: string | undefined;
  const splitter = new JpegSplitter({
    frame(_data, width, height) {
      if (!found) found = { width, height };
      else reason ??= "more than one image";
    },
    corrupt(why, kind) {
      if (kind === "frame" || !found) reason ??= why;
    },
  });
  splitter.push(bytes);
  splitter.flush();
  if (found && reason === undefined) return { ok: true, ...found };
  return { ok: false, reason: reason ?? "no JPEG image (no SOI)" };
}
