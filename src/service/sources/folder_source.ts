/**
 * A folder of JPEG/PNG images, in natural name order (frame2 before frame10), paced at `fps`, looping or once.
 * Each round lists the folder again, so images added while it runs are picked up. A file that is truncated or
 * not an image is skipped and counted; the next one is tried at once so a bad file costs no frame slot.
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { inspectStillImage } from "./still_image.ts";
import { StoppableSleep } from "./stoppable_sleep.ts";
import type { Attempt, AttemptHooks, SourceDriver } from "./supervisor.ts";

const IMAGE_NAME = /\.(jpe?g|png)$/i;
const naturalOrder = new Intl.Collator("en", { numeric: true, sensitivity: "variant" });

export async function listImages(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  return entries
    .filter((e) => (e.isFile() || e.isSymbolicLink()) && IMAGE_NAME.test(e.name) && !e.name.startsWith("."))
    .map((e) => e.name)
    .sort((a, b) => naturalOrder.compare(a, b) || (a < b ? -1 : a > b ? 1 : 0));
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class FolderDriver implements SourceDriver {
  readonly description: string;
  readonly frameIntervalS: number;
  readonly #dir: string;
  readonly #loop: boolean;
  readonly #maxFrameBytes: number;

  constructor(options: { path: string; loop: boolean; fps: number; maxFrameBytes: number }) {
    this.#dir = options.path;
    this.#loop = options.loop;
    this.frameIntervalS = 1 / options.fps;
    this.#maxFrameBytes = options.maxFrameBytes;
    this.description = `folder ${options.path} (${options.loop ? "loop" : "once"}, ${options.fps} fps)`;
  }

  launch(hooks: AttemptHooks): Attempt {
    const pause = new StoppableSleep();
    let lastError: string | undefined;
    const intervalMs = this.frameIntervalS * 1000;
    const sleepUntil = (mono: number) => pause.sleep(mono - performance.now());

    const run = async () => {
      let due = performance.now();
      for (;;) {
        let names: string[];
        try {
          names = await listImages(this.#dir);
        } catch (error) {
          return hooks.finished({ kind: "failed", reason: `cannot list folder ${this.#dir}: ${errorText(error)}` });
        }
        if (pause.stopped) return;
        if (names.length === 0) return hooks.finished({ kind: "failed", reason: `no .jpg, .jpeg or .png images in ${this.#dir}` });
        let delivered = 0;
        for (const name of names) {
          if (pause.stopped) return;
          const path = join(this.#dir, name);
          let bytes: Uint8Array;
          try {
            bytes = await readFile(path);
          } catch (error) {
            lastError = `cannot read ${path}: ${errorText(error)}`;
            hooks.corrupt(lastError);
            continue;
          }
          if (pause.stopped) return;
          const image = bytes.length > this.#maxFrameBytes ? { ok: false as const, reason: `larger than ${this.#maxFrameBytes} bytes` } : inspectStillImage(bytes);
          if (!image.ok) {
            lastError = `${path}: ${image.reason}`;
            hooks.corrupt(lastError);
            continue;
          }
          await sleepUntil(due);
          if (pause.stopped) return;
          // Pacing from a fixed schedule, so slow reads do not add up; after a long pause it catches up once, not in a burst.
          due = Math.max(due + intervalMs, performance.now());
          hooks.frame(image.format, image.width, image.height, bytes);
          delivered++;
        }
        if (!this.#loop) return hooks.finished({ kind: "ended", reason: `all ${names.length} images of ${this.#dir} delivered` });
        if (delivered === 0) {
          // Every file was bad: wait one frame interval before listing again instead of spinning.
          await sleepUntil(performance.now() + intervalMs);
          if (pause.stopped) return;
        }
      }
    };
    void run().catch((error) => hooks.finished({ kind: "failed", reason: errorText(error) }));

    return {
      lastError: () => lastError,
      stop: async () => pause.stop(),
    };
  }
}
