/**
 * Cuts a raw video stream (ffmpeg `-f rawvideo -pix_fmt rgb24`, gst `video/x-raw,format=RGB ! fdsink`) into
 * fixed-size frames. A frame inside one chunk is a view of it; one that spans chunks is copied once into a fresh
 * buffer of exactly one frame, so memory never exceeds one frame plus the current chunk.
 */
export class RawFrameSplitter {
  readonly frameBytes: number;
  readonly #onFrame: (data: Uint8Array) => void;
  readonly #onTruncated: (bytes: number) => void;
  #partial: Uint8Array | undefined;
  #filled = 0;
  frames = 0;
  truncated = 0;

  constructor(frameBytes: number, onFrame: (data: Uint8Array) => void, onTruncated: (bytes: number) => void = () => {}) {
    if (!Number.isInteger(frameBytes) || frameBytes <= 0) throw new RangeError(`frameBytes must be a positive integer, got ${frameBytes}`);
    this.frameBytes = frameBytes;
    this.#onFrame = onFrame;
    this.#onTruncated = onTruncated;
  }

  get bufferedBytes(): number {
    return this.#filled;
  }

  push(chunk: Uint8Array): void {
    const size = this.frameBytes;
    let i = 0;
    const n = chunk.length;
    if (this.#partial) {
      const take = Math.min(size - this.#filled, n);
      this.#partial.set(chunk.subarray(0, take), this.#filled);
      this.#filled += take;
      i = take;
      if (this.#filled < size) return;
      const frame = this.#partial;
      this.#partial = undefined;
      this.#filled = 0;
      this.frames++;
      this.#onFrame(frame);
    }
    while (n - i >= size) {
      this.frames++;
      this.#onFrame(chunk.subarray(i, i + size));
      i += size;
    }
    if (i < n) {
      this.#partial = new Uint8Array(size);
      this.#partial.set(chunk.subarray(i), 0);
      this.#filled = n - i;
    }
  }

  /** The input ended: a partial frame is dropped and counted. */
  flush(): void {
    if (this.#partial) {
      this.truncated++;
      this.#onTruncated(this.#filled);
    }
    this.#partial = undefined;
    this.#filled = 0;
  }
}
