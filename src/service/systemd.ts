/**
 * systemd integration: `sd_notify(3)` through koffi → libsystemd.so.0, for `Type=notify` with `WatchdogSec=`.
 * Works under Node and Deno (koffi is a Node-API addon; Deno needs --allow-ffi, which --allow-all includes).
 *
 * Outside systemd (NOTIFY_SOCKET unset) or without libsystemd/koffi the notifier is a no-op: `enabled` is false,
 * `disabledReason` says why, and that reason is logged once when the notifier is created.
 *
 * The watchdog rule (WatchdogFeeder): every half watchdog interval the feeder pings systemd ONLY IF
 *   (a) the progress counter (frames fully processed) changed since the previous check, or
 *   (b) the service is idle by design: no camera has a task due, or the loop is waiting for a frame (a camera that
 *       is down is the source's business: it reconnects by itself, and restarting the service would not help).
 * So an inference, engine call or event loop that hangs stops the pings and systemd restarts the service after
 * WatchdogSec. One frame (all its due tasks) must therefore finish within half of WatchdogSec: with the unit's
 * 30 s, within 15 s — raise WatchdogSec for large models with beam search on small Jetsons.
 */
import { createRequire } from "node:module";
import process from "node:process";
import { clearInterval, setInterval } from "node:timers";
import { FlorenceError, describeValue } from "../errors.ts";

/** Where the notifier says why it is disabled, or that a notification failed (a Logger fits). */
export interface NotifierLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface NotifierOptions {
  /** The shared library to load; default "libsystemd.so.0". */
  library?: string;
  /** Environment consulted for NOTIFY_SOCKET and WATCHDOG_USEC; default process.env (libsystemd reads the real one). */
  env?: Record<string, string | undefined>;
  log?: NotifierLog;
}

export interface Notifier {
  /** True when notifications reach systemd. */
  readonly enabled: boolean;
  /** Why notifications are off (undefined when enabled). */
  readonly disabledReason: string | undefined;
  /** systemd's watchdog timeout (WatchdogSec) in milliseconds, when the watchdog is on for this process. */
  readonly watchdogIntervalMs: number | undefined;
  /** READY=1 (and STATUS=): start-up is complete; systemd starts the watchdog now. */
  ready(status?: string): boolean;
  /** WATCHDOG=1: call only when real progress was made (see WatchdogFeeder). */
  watchdog(): boolean;
  /** STOPPING=1: shutdown has begun. */
  stopping(status?: string): boolean;
  /** STATUS=: one line shown by `systemctl status`. */
  status(text: string): boolean;
  /** EXTEND_TIMEOUT_USEC=: more time for a slow start or stop (a TensorRT engine build), from now. */
  extendTimeout(ms: number): boolean;
  /** Releases the library; later calls do nothing. */
  close(): void;
}

interface KoffiLibrary {
  func(definition: string): (...args: unknown[]) => unknown;
  unload(): void;
}
interface Koffi {
  load(path: string): KoffiLibrary;
}

const MAX_STATUS = 512;

function statusLine(text: string): string {
  // a STATUS= value ends at the first newline; keep the whole text on one line
  const line = String(text).replace(/[\r\n]+/g, " ").trim();
  return line.length > MAX_STATUS ? `${line.slice(0, MAX_STATUS - 1)}…` : line;
}

function defaultLog(): NotifierLog {
  const write = (level: string, msg: string) => void process.stderr.write(`${JSON.stringify({ ts: new Date().toISOString(), level, msg })}\n`);
  return { info: (msg) => write("info", msg), warn: (msg) => write("warn", msg) };
}

class DisabledNotifier implements Notifier {
  readonly enabled = false;
  readonly watchdogIntervalMs = undefined;
  readonly disabledReason: string;
  constructor(reason: string) {
    this.disabledReason = reason;
  }
  ready(): boolean {
    return false;
  }
  watchdog(): boolean {
    return false;
  }
  stopping(): boolean {
    return false;
  }
  status(): boolean {
    return false;
  }
  extendTimeout(ms: number): boolean {
    checkTimeout(ms);
    return false;
  }
  close(): void {}
}

function checkTimeout(ms: number): void {
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms <= 0) {
    throw new FlorenceError("INVALID_ARGUMENT", `extendTimeout: ms must be a positive number of milliseconds, got ${describeValue(ms)}`, {
      fix: "pass e.g. 120000 for two more minutes",
    });
  }
}

class SystemdNotifier implements Notifier {
  readonly enabled = true;
  readonly disabledReason = undefined;
  readonly watchdogIntervalMs: number | undefined;
  #library: KoffiLibrary | undefined;
  readonly #notify: (unsetEnvironment: number, state: string) => unknown;
  readonly #log: NotifierLog;
  #failureLogged = false;

  constructor(library: KoffiLibrary, notify: (unsetEnvironment: number, state: string) => unknown, watchdogIntervalMs: number | undefined, log: NotifierLog) {
    this.#library = library;
    this.#notify = notify;
    this.watchdogIntervalMs = watchdogIntervalMs;
    this.#log = log;
  }

  #send(state: string): boolean {
    if (!this.#library) return false;
    // unset_environment = 0: the variables must stay for the next call (children are fenced by NotifyAccess=main)
    const result = Number(this.#notify(0, state));
    if (result > 0) return true;
    if (!this.#failureLogged) {
      this.#failureLogged = true;
      this.#log.warn("sd_notify failed; systemd will not see this service's state", {
        state: state.split("\n")[0],
        result: result === 0 ? "NOTIFY_SOCKET is not set" : `errno ${-result}`,
      });
    }
    return false;
  }

  ready(status?: string): boolean {
    return this.#send(status === undefined ? "READY=1" : `READY=1\nSTATUS=${statusLine(status)}`);
  }
  watchdog(): boolean {
    return this.#send("WATCHDOG=1");
  }
  stopping(status?: string): boolean {
    return this.#send(status === undefined ? "STOPPING=1" : `STOPPING=1\nSTATUS=${statusLine(status)}`);
  }
  status(text: string): boolean {
    return this.#send(`STATUS=${statusLine(text)}`);
  }
  extendTimeout(ms: number): boolean {
    checkTimeout(ms);
    return this.#send(`EXTEND_TIMEOUT_USEC=${Math.ceil(ms * 1000)}`);
  }
  close(): void {
    const library = this.#library;
    this.#library = undefined;
    try {
      library?.unload();
    } catch {
      // unloading is best effort: the process is ending anyway
    }
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Creates the notifier. Never throws for a missing systemd: it returns a disabled notifier and logs why, once
 * (info when simply not under systemd, warn when systemd is waiting but libsystemd or koffi cannot be loaded).
 */
export function createNotifier(options: NotifierOptions = {}): Notifier {
  const env = options.env ?? process.env;
  const log = options.log ?? defaultLog();
  const library = options.library ?? "libsystemd.so.0";
  const socket = env["NOTIFY_SOCKET"];
  if (!socket) {
    const reason = "NOTIFY_SOCKET is not set: not started by systemd as Type=notify, so readiness and watchdog notifications are off";
    log.info(reason);
    return new DisabledNotifier(reason);
  }
  const disabled = (reason: string): Notifier => {
    log.warn(`${reason}; systemd is waiting for READY=1 on ${socket} and will time the start out`);
    return new DisabledNotifier(reason);
  };
  let koffi: Koffi;
  try {
    koffi = createRequire(import.meta.url)("koffi") as Koffi;
  } catch (error) {
    return disabled(`cannot load koffi (the FFI module used to call libsystemd): ${errorText(error)}`);
  }
  let handle: KoffiLibrary;
  try {
    handle = koffi.load(library);
  } catch (error) {
    const hint = /permission|--allow-ffi|NotCapable|PermissionDenied/i.test(errorText(error)) ? " (under Deno, run with --allow-ffi)" : "";
    return disabled(`cannot load ${library}${hint}: ${errorText(error)}`);
  }
  let notify: (unsetEnvironment: number, state: string) => unknown;
  try {
    notify = handle.func("int sd_notify(int unset_environment, const char *state)");
  } catch (error) {
    handle.unload();
    return disabled(`${library} has no usable sd_notify: ${errorText(error)}`);
  }
  return new SystemdNotifier(handle, notify, watchdogInterval(handle, env), log);
}

/** The watchdog timeout systemd set for THIS process (sd_watchdog_enabled checks WATCHDOG_PID), in ms. */
function watchdogInterval(handle: KoffiLibrary, env: Record<string, string | undefined>): number | undefined {
  try {
    const enabled = handle.func("int sd_watchdog_enabled(int unset_environment, _Out_ uint64_t *usec)");
    const usec: [number | bigint] = [0];
    const result = Number(enabled(0, usec));
    if (result > 0 && Number(usec[0]) > 0) return Number(usec[0]) / 1000;
    return undefined;
  } catch {
    // very old libsystemd: read the variables the same way sd_watchdog_enabled does
    const usec = Number(env["WATCHDOG_USEC"]);
    const pid = env["WATCHDOG_PID"];
    if (!Number.isFinite(usec) || usec <= 0) return undefined;
    if (pid !== undefined && pid !== "" && Number(pid) !== process.pid) return undefined;
    return usec / 1000;
  }
}

export interface WatchdogFeederOptions {
  notifier: Pick<Notifier, "watchdog" | "watchdogIntervalMs">;
  /** Frames fully processed so far (CameraLoop.processedFrames). */
  progress: () => number;
  /** True while there is no work by design: no camera has a task due, or the loop waits for a frame. */
  idle?: () => boolean;
  /** Check period in ms; default half of the notifier's watchdog interval. */
  periodMs?: number;
  /** Called when a ping is withheld: the counter did not move and the service was busy. */
  onWithheld?: (info: { sinceProgressMs: number; progress: number }) => void;
  /** Milliseconds, for onWithheld's sinceProgressMs; default Date.now. */
  now?: () => number;
}

/** Pings the systemd watchdog only while frames are being processed (or nothing is due); see the module comment. */
export class WatchdogFeeder {
  readonly periodMs: number | undefined;
  #pings = 0;
  #withheld = 0;
  #lastProgress: number;
  #lastProgressAt: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  readonly #options: WatchdogFeederOptions;
  readonly #now: () => number;

  constructor(options: WatchdogFeederOptions) {
    if (typeof options.progress !== "function") {
      throw new FlorenceError("INVALID_ARGUMENT", `WatchdogFeeder: progress must be a function returning the processed-frame count, got ${describeValue(options.progress)}`, {
        fix: "pass () => loop.processedFrames",
      });
    }
    const period = options.periodMs ?? (options.notifier.watchdogIntervalMs !== undefined ? options.notifier.watchdogIntervalMs / 2 : undefined);
    if (period !== undefined && (!Number.isFinite(period) || period <= 0)) {
      throw new FlorenceError("INVALID_ARGUMENT", `WatchdogFeeder: periodMs must be a positive number, got ${describeValue(period)}`, { fix: "leave it out to use half of WatchdogSec" });
    }
    this.periodMs = period;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#lastProgress = options.progress();
    this.#lastProgressAt = this.#now();
  }

  get pings(): number {
    return this.#pings;
  }
  get withheld(): number {
    return this.#withheld;
  }

  /** Starts the periodic check; does nothing when systemd's watchdog is off. */
  start(): void {
    if (this.#timer || this.periodMs === undefined) return;
    this.#timer = setInterval(() => this.tick(), this.periodMs);
    this.#timer.unref?.();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One check: pings and returns true when the counter moved or the service is idle by design. */
  tick(): boolean {
    const progress = this.#options.progress();
    const now = this.#now();
    const advanced = progress !== this.#lastProgress;
    if (advanced) {
      this.#lastProgress = progress;
      this.#lastProgressAt = now;
    }
    if (advanced || this.#options.idle?.() === true) {
      this.#options.notifier.watchdog();
      this.#pings++;
      return true;
    }
    this.#withheld++;
    this.#options.onWithheld?.({ sinceProgressMs: now - this.#lastProgressAt, progress });
    return false;
  }
}
