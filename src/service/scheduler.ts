/**
 * The one queue of on-demand inference: HTTP requests and MQTT `infer` commands wait here for their turn at the model.
 * The camera loop (loop.ts) gives turns round robin — each camera with a frame, then one job from this queue — so a
 * flood of requests takes at most its share of the model and the cameras' frame rates go on. The queue is bounded:
 * when it is full a job is refused at once with BUSY and an estimate of when to retry (HTTP 429 + Retry-After), and
 * the refusal is counted. A waiting job whose caller gave up (its signal aborted: the client went away) leaves the
 * queue without using the model.
 */
import { FlorenceError, describeValue } from "../errors.ts";

/** A full queue: try again in `retryAfterS` seconds. */
export class BusyError extends FlorenceError {
  readonly retryAfterS: number;

  constructor(depth: number, retryAfterS: number) {
    super("BUSY", `the inference queue is full (${depth} waiting)`, { fix: `retry in ${retryAfterS} s, or raise http.queue_size if the memory and the wait are acceptable` });
    this.retryAfterS = retryAfterS;
  }
}

export interface QueueCounters {
  depth: number;
  capacity: number;
  submitted: number;
  /** Jobs that ran to the end (their own error included). */
  served: number;
  /** Refused because the queue was full. */
  rejected: number;
  /** Left the queue before their turn: the caller gave up, or the service stopped. */
  cancelled: number;
}

/** A job taken from the queue: the loop runs it on the model at its turn. */
export interface QueuedJob<M> {
  readonly origin: string;
  run(model: M): Promise<void>;
}

interface Waiting<M> {
  origin: string;
  work: (model: M) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
  detach: () => void;
}

/** Told of every refusal and depth change (metrics). */
export interface QueueObserver {
  rejected?(origin: string): void;
  depth?(depth: number, capacity: number): void;
}

/** Completions remembered for the throughput behind Retry-After. */
const RATE_SAMPLES = 32;
const RATE_WINDOW_MS = 60_000;

export class RequestQueue<M> {
  readonly capacity: number;
  /** Called when a job arrives, so a loop waiting for frames wakes up. */
  onWork: (() => void) | undefined;
  readonly #waiting: Waiting<M>[] = [];
  readonly #completions: number[] = [];
  readonly #now: () => number;
  readonly #observer: QueueObserver;
  #submitted = 0;
  #served = 0;
  #rejected = 0;
  #cancelled = 0;

  constructor(options: { capacity: number; now?: () => number; observer?: QueueObserver }) {
    if (!Number.isSafeInteger(options.capacity) || options.capacity < 1) {
      throw new FlorenceError("INVALID_ARGUMENT", `RequestQueue: capacity must be a positive integer, got ${describeValue(options.capacity)}`, { fix: "pass e.g. 16" });
    }
    this.capacity = options.capacity;
    this.#now = options.now ?? Date.now;
    this.#observer = options.observer ?? {};
  }

  #changed(): void {
    this.#observer.depth?.(this.#waiting.length, this.capacity);
  }

  get depth(): number {
    return this.#waiting.length;
  }

  /**
   * Queues `work` for its turn at the model; resolves with what it returns. Rejects at once with BusyError when the
   * queue is full, and with the signal's reason when the caller gives up before the turn comes.
   */
  submit<T>(origin: string, work: (model: M) => Promise<T>, signal?: AbortSignal): Promise<T> {
    try {
      this.admit(origin);
    } catch (error) {
      return Promise.reject(error);
    }
    if (signal?.aborted) {
      this.#cancelled++;
      return Promise.reject(signal.reason);
    }
    return new Promise<T>((resolve, reject) => {
      const entry: Waiting<M> = { origin, work, resolve: resolve as (value: unknown) => void, reject, detach: () => undefined };
      if (signal) {
        const onAbort = () => {
          const index = this.#waiting.indexOf(entry);
          if (index < 0) return; // already running: it finishes, the caller ignores the answer
          this.#waiting.splice(index, 1);
          this.#cancelled++;
          this.#changed();
          reject(signal.reason);
        };
        signal.addEventListener("abort", onAbort, { once: true });
        entry.detach = () => signal.removeEventListener("abort", onAbort);
      }
      this.#waiting.push(entry);
      this.#submitted++;
      this.#changed();
      this.onWork?.();
    });
  }

  /**
   * Throws BusyError (and counts the refusal) when the queue is full: called right before submit, in the same
   * synchronous step, it tells a caller whether its job is taken before it commits to an answer (a stream, say).
   */
  admit(origin: string): void {
    if (this.#waiting.length < this.capacity) return;
    this.#rejected++;
    this.#observer.rejected?.(origin);
    throw new BusyError(this.#waiting.length, this.retryAfterS());
  }

  /** The oldest waiting job, or undefined. */
  take(): QueuedJob<M> | undefined {
    const entry = this.#waiting.shift();
    if (!entry) return undefined;
    entry.detach();
    this.#changed();
    return {
      origin: entry.origin,
      run: async (model: M) => {
        try {
          entry.resolve(await entry.work(model));
        } catch (error) {
          entry.reject(error);
        } finally {
          this.#served++;
          this.#completions.push(this.#now());
          if (this.#completions.length > RATE_SAMPLES) this.#completions.shift();
        }
      },
    };
  }

  /** Refuses every waiting job (the service is stopping). */
  rejectAll(error: unknown): void {
    for (const entry of this.#waiting.splice(0)) {
      entry.detach();
      this.#cancelled++;
      entry.reject(error);
    }
    this.#changed();
  }

  /** Seconds until a job queued now would likely have had its turn, from the recent throughput; 1..600. */
  retryAfterS(): number {
    const now = this.#now();
    const recent = this.#completions.filter((t) => now - t <= RATE_WINDOW_MS);
    const span = recent.length >= 2 ? recent[recent.length - 1]! - recent[0]! : 0;
    // without a measured rate, guess one job a second
    const perSecond = span > 0 ? ((recent.length - 1) * 1000) / span : 1;
    return Math.min(600, Math.max(1, Math.ceil((this.#waiting.length + 1) / perSecond)));
  }

  counters(): QueueCounters {
    return { depth: this.#waiting.length, capacity: this.capacity, submitted: this.#submitted, served: this.#served, rejected: this.#rejected, cancelled: this.#cancelled };
  }
}
