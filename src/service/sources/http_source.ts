/**
 * An HTTP(S) snapshot URL (an IP camera's snapshot.jpg) polled at a fixed rate. Each request has a timeout and a
 * size cap; basic-auth credentials come from the URL or the options and travel in the Authorization header (fetch
 * refuses URLs with credentials). A failed poll (HTTP error, timeout) is remembered as the last error and polling
 * goes on; a source that yields no frame for the stall timeout is restarted by the supervisor (new connections,
 * backoff delay). A truncated or non-image body is counted as corrupt.
 */
import { Buffer } from "node:buffer";
import { performance } from "node:perf_hooks";
import { inspectStillImage } from "./still_image.ts";
import { StoppableSleep } from "./stoppable_sleep.ts";
import type { Attempt, AttemptHooks, SourceDriver } from "./supervisor.ts";

export interface HttpDriverOptions {
  url: string;
  intervalS: number;
  timeoutS: number;
  username: string | undefined;
  password: string | undefined;
  headers: Record<string, string>;
  maxFrameBytes: number;
  description: string;
  redact: (text: string) => string;
}

class PollError extends Error {
  readonly corrupt: boolean;
  constructor(message: string, corrupt: boolean) {
    super(message);
    this.corrupt = corrupt;
  }
}

/** The URL without credentials, and the Authorization header they make (options win over the URL). */
export function splitCredentials(url: string, username: string | undefined, password: string | undefined): { url: string; authorization: string | undefined } {
  const parsed = new URL(url);
  const user = username ?? decodeURIComponent(parsed.username);
  const pass = password ?? decodeURIComponent(parsed.password);
  parsed.username = "";
  parsed.password = "";
  const authorization = user || pass ? `Basic ${Buffer.from(`${user}:${pass}`, "utf8").toString("base64")}` : undefined;
  return { url: parsed.toString(), authorization };
}

async function readBody(response: Response, maxBytes: number): Promise<Uint8Array> {
  const declared = Number(response.headers.get("content-length") ?? NaN);
  if (declared > maxBytes) throw new PollError(`snapshot of ${declared} bytes exceeds ${maxBytes}`, true);
  if (!response.body) return new Uint8Array(0);
  const reader = response.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > maxBytes) {
        await reader.cancel().catch(() => {});
        throw new PollError(`snapshot exceeds ${maxBytes} bytes`, true);
      }
      parts.push(value);
    }
  } catch (error) {
    if (error instanceof PollError) throw error;
    throw new PollError(`transfer cut off after ${total} bytes (${error instanceof Error ? error.message : String(error)})`, true);
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts, total);
}

export class HttpDriver implements SourceDriver {
  readonly description: string;
  readonly frameIntervalS: number;
  readonly #options: HttpDriverOptions;
  readonly #target: { url: string; authorization: string | undefined };

  constructor(options: HttpDriverOptions) {
    this.#options = options;
    this.description = options.description;
    // The stall timeout must also allow one request to time out.
    this.frameIntervalS = options.intervalS + options.timeoutS / 2;
    this.#target = splitCredentials(options.url, options.username, options.password);
  }

  launch(hooks: AttemptHooks): Attempt {
    const { intervalS, timeoutS, maxFrameBytes, redact } = this.#options;
    const pause = new StoppableSleep();
    let lastError: string | undefined;
    let inflight: AbortController | undefined;
    const headers: Record<string, string> = { accept: "image/jpeg, image/png;q=0.9, */*;q=0.1", ...this.#options.headers };
    if (this.#target.authorization) headers["authorization"] = this.#target.authorization;

    const poll = async (): Promise<void> => {
      const controller = new AbortController();
      inflight = controller;
      let timedOut = false;
      const timeout = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, timeoutS * 1000);
      try {
        let response: Response;
        try {
          response = await fetch(this.#target.url, { headers, signal: controller.signal, redirect: "follow", cache: "no-store" });
        } catch (error) {
          throw new PollError(timedOut ? `no answer within ${timeoutS} s` : `request failed: ${error instanceof Error ? ((error.cause as Error | undefined)?.message ?? error.message) : String(error)}`, false);
        }
        if (!response.ok) {
          await response.body?.cancel().catch(() => {});
          const hint = response.status === 401 || response.status === 403 ? " (check the username and password)" : "";
          throw new PollError(`HTTP ${response.status} ${response.statusText}${hint}`, false);
        }
        let bytes: Uint8Array;
        try {
          bytes = await readBody(response, maxFrameBytes);
        } catch (error) {
          if (timedOut) throw new PollError(`snapshot not complete within ${timeoutS} s`, true);
          throw error;
        }
        const image = inspectStillImage(bytes);
        if (!image.ok) throw new PollError(`bad snapshot (${bytes.length} bytes): ${image.reason}`, true);
        if (!pause.stopped) hooks.frame(image.format, image.width, image.height, bytes);
      } finally {
        clearTimeout(timeout);
        inflight = undefined;
      }
    };

    const run = async () => {
      while (!pause.stopped) {
        const began = performance.now();
        try {
          await poll();
        } catch (error) {
          if (pause.stopped) return;
          lastError = redact(error instanceof Error ? error.message : String(error));
          if (error instanceof PollError && error.corrupt) hooks.corrupt(lastError);
        }
        // A fixed rate, not a fixed gap: a slow answer shortens the wait.
        await pause.sleep(intervalS * 1000 - (performance.now() - began));
      }
    };
    void run();

    return {
      lastError: () => lastError,
      stop: async () => {
        pause.stop();
        inflight?.abort();
      },
    };
  }
}
