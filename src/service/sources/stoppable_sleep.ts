/**
 * The waits of sources that pace frames or poll (folder, HTTP snapshots): each sleep ends early when the source is
 * stopped, and once stopped every sleep returns at once, so a stop never waits out an interval.
 */
export class StoppableSleep {
  #stopped = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #wake: (() => void) | undefined;

  get stopped(): boolean {
    return this.#stopped;
  }

  /** Resolves after `ms` (at once for ms ≤ 0), or when stop() is called. */
  sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      if (ms <= 0 || this.#stopped) return resolve();
      this.#wake = resolve;
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#wake = undefined;
        resolve();
      }, ms);
    });
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#wake?.();
    this.#wake = undefined;
  }
}
