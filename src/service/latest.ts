/**
 * The per-camera newest-frame slot between a source and the inference loop. A new frame replaces one that was
 * not taken yet (counted as dropped): inference always works on the newest frame and never falls behind real
 * time, and memory is one frame per camera however slow inference is.
 */
import type { Frame } from "./types.ts";

type Waiter = { resolve: (frame: Frame) => void; reject: (reason: unknown) => void; cleanup: () => void };
type Watcher = () => void;

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The operation was aborted", "AbortError");
}

export class LatestFrame {
  readonly camera: string;
  #frame: Frame | undefined;
  /** Consumers waiting in next(): the oldest one gets the next frame. */
  readonly #waiters: Waiter[] = [];
  /** Callbacks waiting for any frame to be pending (wait(), waitForAnyFrame). */
  readonly #watchers = new Set<Watcher>();
  /** Frames put. */
  received = 0;
  /** Frames replaced before anyone took them. */
  dropped = 0;
  /** Frames handed to a consumer. */
  taken = 0;

  constructor(camera: string) {
    this.camera = camera;
  }

  /** True when a frame is waiting to be taken. */
  get pending(): boolean {
    return this.#frame !== undefined;
  }

  put(frame: Frame): void {
    this.received++;
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter.cleanup();
      this.taken++;
      waiter.resolve(frame);
      return;
    }
    if (this.#frame !== undefined) this.dropped++;
    this.#frame = frame;
    if (this.#watchers.size > 0) {
      const watchers = [...this.#watchers];
      this.#watchers.clear();
      for (const watcher of watchers) watcher();
    }
  }

  /** The newest frame not taken yet, or undefined; the slot is empty afterwards. */
  take(): Frame | undefined {
    const frame = this.#frame;
    if (frame !== undefined) {
      this.#frame = undefined;
      this.taken++;
    }
    return frame;
  }

  /** The waiting frame without taking it. */
  peek(): Frame | undefined {
    return this.#frame;
  }

  /** Drops a waiting frame (a camera whose schedule is empty, say); not counted as dropped. */
  clear(): void {
    this.#frame = undefined;
  }

  /** Takes the next frame: at once if one is waiting, else when one arrives. Rejects when `signal` aborts. */
  next(signal?: AbortSignal): Promise<Frame> {
    const ready = this.take();
    if (ready !== undefined) return Promise.resolve(ready);
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise<Frame>((resolve, reject) => {
      const onAbort = () => {
        const index = this.#waiters.indexOf(waiter);
        if (index >= 0) this.#waiters.splice(index, 1);
        reject(abortReason(signal!));
      };
      const waiter: Waiter = { resolve, reject, cleanup: () => signal?.removeEventListener("abort", onAbort) };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /** Resolves (without taking) when a frame is waiting: at once if one is. Rejects when `signal` aborts. */
  wait(signal?: AbortSignal): Promise<void> {
    return waitForAnyFrame([this], signal);
  }

  /** @internal Registers a one-shot callback for the next put; returns its remover. */
  watch(watcher: Watcher): () => void {
    this.#watchers.add(watcher);
    return () => this.#watchers.delete(watcher);
  }
}

/** Resolves when any of the slots has a frame waiting (at once if one has); for a loop serving several cameras. */
export function waitForAnyFrame(slots: Iterable<LatestFrame>, signal?: AbortSignal): Promise<void> {
  const list = [...slots];
  if (list.some((slot) => slot.pending)) return Promise.resolve();
  if (signal?.aborted) return Promise.reject(abortReason(signal));
  return new Promise<void>((resolve, reject) => {
    const removers: (() => void)[] = [];
    const done = () => {
      for (const remove of removers) remove();
      signal?.removeEventListener("abort", onAbort);
    };
    const onFrame = () => {
      done();
      resolve();
    };
    const onAbort = () => {
      done();
      reject(abortReason(signal!));
    };
    for (const slot of list) removers.push(slot.watch(onFrame));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
