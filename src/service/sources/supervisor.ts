/**
 * One FrameSource around a driver that knows how to run one attempt (a subprocess, a polling loop, a folder walk).
 * The supervisor owns everything the kinds share: the status and counters, the stall watchdog, restarts with
 * exponential backoff (reset after a healthy period), and an idempotent stop that waits for the attempt to die.
 * A new attempt starts only after the previous one has exited, so two decoders never fight over one camera.
 */
import { performance } from "node:perf_hooks";
import { FlorenceError } from "../../errors.ts";
import type { Frame, FrameSource, SourceState, SourceStatus } from "../types.ts";
import { backoffDelay } from "../backoff.ts";

export type AttemptOutcome =
  /** The input is finished for good (a `loop: false` file or folder). */
  | { kind: "ended"; reason?: string }
  /** The input reached its end and is played again at once (gst-launch cannot loop a file by itself). */
  | { kind: "replay" }
  /** Something broke: restart after the backoff delay. */
  | { kind: "failed"; reason: string }
  /** Restarting cannot help (the decoder program is not installed): give up with state "failed". */
  | { kind: "fatal"; reason: string };

export interface AttemptHooks {
  frame(format: Frame["format"], width: number, height: number, data: Uint8Array): void;
  corrupt(reason: string): void;
  /** The attempt stopped by itself. Called at most once. */
  finished(outcome: AttemptOutcome): void;
}

export interface Attempt {
  /** Ends the attempt and releases what it holds; resolves when it is gone. Idempotent. */
  stop(): Promise<void>;
  /** The latest error text (a subprocess's stderr tail, an HTTP error), for the stall reason. */
  lastError(): string | undefined;
}

export interface SourceDriver {
  readonly description: string;
  /** Seconds between frames at the expected rate, when known: the stall timeout is never shorter than two of them. */
  readonly frameIntervalS: number | undefined;
  launch(hooks: AttemptHooks): Attempt;
}

export interface SupervisorOptions {
  camera: string;
  stallTimeoutS: number;
  backoff: { initialS: number; maxS: number; healthyS: number };
  drops: { readonly dropped: number } | undefined;
}

/** The delay before restart number `failures` (1-based): initial, doubling, capped. */
export function backoffDelayS(failures: number, initialS: number, maxS: number): number {
  return backoffDelay(failures - 1, initialS, maxS);
}

export class SupervisedSource implements FrameSource {
  readonly camera: string;
  readonly description: string;
  readonly #driver: SourceDriver;
  readonly #options: SupervisorOptions;
  readonly #stallMs: number;
  #onFrame: (frame: Frame) => void = () => {};
  #onStatus: (status: SourceStatus) => void = () => {};
  #started = false;
  #stopping: Promise<void> | undefined;

  #state: SourceState = "stopped";
  #reason: string | undefined;
  #restarts = 0;
  #framesReceived = 0;
  #framesCorrupt = 0;
  #lastFrameAt: number | undefined;
  #seq = 0;

  #attempt: Attempt | undefined;
  /** Bumped for every attempt; hooks of an older attempt are ignored. */
  #generation = 0;
  #attemptFrames = 0;
  #consecutiveFailures = 0;
  #runningSinceMono = 0;
  #lastProgressMono = 0;
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  #restartTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(driver: SourceDriver, options: SupervisorOptions) {
    this.camera = options.camera;
    this.description = driver.description;
    this.#driver = driver;
    this.#options = options;
    const interval = driver.frameIntervalS;
    this.#stallMs = Math.max(options.stallTimeoutS, interval !== undefined ? 2 * interval + 1 : 0) * 1000;
  }

  start(onFrame: (frame: Frame) => void, onStatus: (status: SourceStatus) => void): void {
    if (this.#started) {
      throw new FlorenceError("INVALID_ARGUMENT", `source for camera ${JSON.stringify(this.camera)} was already started`, { fix: "create a new source with createSource() to start again" });
    }
    this.#started = true;
    this.#onFrame = onFrame;
    this.#onStatus = onStatus;
    this.#launch();
  }

  status(): SourceStatus {
    return {
      camera: this.camera,
      state: this.#state,
      ...(this.#reason !== undefined ? { reason: this.#reason } : {}),
      restarts: this.#restarts,
      framesReceived: this.#framesReceived,
      framesDropped: this.#options.drops?.dropped ?? 0,
      framesCorrupt: this.#framesCorrupt,
      lastFrameAt: this.#lastFrameAt,
    };
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    this.#generation++;
    this.#clearTimers();
    const attempt = this.#attempt;
    this.#attempt = undefined;
    await attempt?.stop();
    this.#setState("stopped", undefined);
  }

  #setState(state: SourceState, reason: string | undefined): void {
    this.#state = state;
    this.#reason = reason;
    this.#onStatus(this.status());
  }

  #clearTimers(): void {
    if (this.#watchdog !== undefined) clearTimeout(this.#watchdog);
    if (this.#restartTimer !== undefined) clearTimeout(this.#restartTimer);
    this.#watchdog = undefined;
    this.#restartTimer = undefined;
  }

  #launch(): void {
    if (this.#stopping) return;
    this.#setState("starting", undefined);
    this.#lastProgressMono = performance.now();
    this.#armWatchdog(this.#stallMs);
    this.#startAttempt();
  }

  #startAttempt(): void {
    const generation = ++this.#generation;
    this.#attemptFrames = 0;
    const current = () => generation === this.#generation && !this.#stopping;
    try {
      const attempt = this.#driver.launch({
        frame: (format, width, height, data) => {
          if (current()) this.#deliver(format, width, height, data);
        },
        corrupt: () => {
          if (current()) this.#framesCorrupt++;
        },
        finished: (outcome) => {
          if (current()) this.#finished(outcome);
        },
      });
      // A driver that finished synchronously has already moved on to a newer generation.
      if (generation === this.#generation) this.#attempt = attempt;
      else void attempt.stop();
    } catch (error) {
      this.#finished({ kind: "fatal", reason: error instanceof Error ? error.message : String(error) });
    }
  }

  #deliver(format: Frame["format"], width: number, height: number, data: Uint8Array): void {
    const now = performance.now();
    this.#lastProgressMono = now;
    this.#framesReceived++;
    this.#attemptFrames++;
    const capturedAt = Date.now();
    this.#lastFrameAt = capturedAt;
    if (this.#state !== "running") {
      this.#runningSinceMono = now;
      this.#setState("running", undefined);
    } else if (this.#consecutiveFailures > 0 && now - this.#runningSinceMono >= this.#options.backoff.healthyS * 1000) {
      this.#consecutiveFailures = 0;
    }
    this.#onFrame({ camera: this.camera, seq: this.#seq++, capturedAt, capturedMono: now, format, width, height, data });
  }

  #armWatchdog(ms: number): void {
    if (this.#watchdog !== undefined) clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => this.#checkStall(), Math.max(1, ms));
  }

  // One timer per stall period instead of one per frame: it re-arms for the time left since the last frame.
  #checkStall(): void {
    this.#watchdog = undefined;
    if (this.#stopping || this.#attempt === undefined) return;
    const idle = performance.now() - this.#lastProgressMono;
    if (idle < this.#stallMs) {
      this.#armWatchdog(this.#stallMs - idle);
      return;
    }
    const detail = this.#attempt.lastError();
    const reason = `no frame for ${(idle / 1000).toFixed(1)} s${detail ? `: ${detail}` : ""}`;
    this.#setState("stalled", reason);
    this.#restart(reason);
  }

  #finished(outcome: AttemptOutcome): void {
    switch (outcome.kind) {
      case "ended":
        this.#generation++;
        this.#clearTimers();
        this.#attempt = undefined;
        this.#setState("ended", outcome.reason);
        return;
      case "fatal": {
        this.#generation++;
        this.#clearTimers();
        const attempt = this.#attempt;
        this.#attempt = undefined;
        void attempt?.stop();
        this.#setState("failed", outcome.reason);
        return;
      }
      case "replay":
        // An input that ends without a single frame would replay in a tight loop: that is a failure.
        if (this.#attemptFrames === 0) {
          this.#restart("the input ended without a frame");
          return;
        }
        // Same state, same watchdog: a looping file keeps "running" across the relaunch.
        this.#attempt = undefined;
        this.#startAttempt();
        return;
      case "failed":
        this.#restart(outcome.reason);
        return;
    }
  }

  #restart(reason: string): void {
    this.#generation++;
    this.#clearTimers();
    const old = this.#attempt;
    this.#attempt = undefined;
    this.#restarts++;
    this.#consecutiveFailures++;
    const delayMs = backoffDelayS(this.#consecutiveFailures, this.#options.backoff.initialS, this.#options.backoff.maxS) * 1000;
    this.#setState("restarting", reason);
    const began = performance.now();
    const generation = this.#generation;
    void (async () => {
      try {
        await old?.stop();
      } catch {
        // A failing stop must not keep the source from restarting; the attempt's generation is already stale.
      }
      if (this.#stopping || generation !== this.#generation) return;
      const left = delayMs - (performance.now() - began);
      this.#restartTimer = setTimeout(() => {
        this.#restartTimer = undefined;
        this.#launch();
      }, Math.max(0, left));
    })();
  }
}
