/**
 * One decoder subprocess (ffmpeg or gst-launch) as an attempt: frames from its stdout through the splitter, the
 * tail of its stderr kept for the reason when it dies. Stopping sends SIGTERM (and SIGCONT, so a stopped process
 * can act on it), then SIGKILL after 2 s. While it runs, the parent's exit kills it too; should the parent be
 * killed outright, the decoder dies of SIGPIPE at its next write to the closed stdout pipe.
 */
import { spawn, type ChildProcess } from "node:child_process";
import process from "node:process";
import type { ProcessCommand } from "./pipelines.ts";
import { JpegSplitter } from "./jpeg_splitter.ts";
import { RawFrameSplitter } from "./raw_splitter.ts";
import type { SpawnProcess } from "./spec.ts";
import type { Attempt, AttemptHooks, SourceDriver } from "./supervisor.ts";

export const KILL_GRACE_MS = 2000;
const STDERR_TAIL_CHARS = 2000;

export interface ProcessDriverOptions {
  command: ProcessCommand;
  description: string;
  frameIntervalS: number | undefined;
  maxFrameBytes: number;
  spawnProcess: SpawnProcess | undefined;
  /** Removes secrets from stderr text before it becomes a reason. */
  redact: (text: string) => string;
}

const defaultSpawn: SpawnProcess = (file, args, options) => spawn(file, args as string[], options);

function installHint(command: ProcessCommand): string {
  return command.decoder === "ffmpeg"
    ? "install ffmpeg (apt-get install ffmpeg) or set ffmpegPath"
    : "install GStreamer (apt-get install gstreamer1.0-tools gstreamer1.0-plugins-good; on Jetson nvidia-l4t-gstreamer) or set gstLaunchPath";
}

/** The last few non-empty lines of a process's stderr, one line. */
function tailLines(text: string): string {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  return lines.slice(-3).join(" | ");
}

export class ProcessDriver implements SourceDriver {
  readonly description: string;
  readonly frameIntervalS: number | undefined;
  readonly command: ProcessCommand;
  readonly #options: ProcessDriverOptions;

  constructor(options: ProcessDriverOptions) {
    this.#options = options;
    this.command = options.command;
    this.description = options.description;
    this.frameIntervalS = options.frameIntervalS;
  }

  launch(hooks: AttemptHooks): Attempt {
    const { command, redact } = this.#options;
    const program = command.file;
    let stderrTail = "";
    let finished = false;
    let exited = false;
    let stopRequested = false;
    let killTimer: ReturnType<typeof setTimeout> | undefined;
    let resolveExit: () => void = () => {};
    const exitedPromise = new Promise<void>((resolve) => (resolveExit = resolve));

    const finish = (outcome: Parameters<AttemptHooks["finished"]>[0]) => {
      if (finished || stopRequested) return;
      finished = true;
      hooks.finished(outcome);
    };

    const output = command.output;
    const splitter =
      output.format === "jpeg"
        ? new JpegSplitter({ frame: (data, width, height) => hooks.frame("jpeg", width, height, data), corrupt: (reason) => hooks.corrupt(reason) }, { maxFrameBytes: this.#options.maxFrameBytes })
        : new RawFrameSplitter(output.width * output.height * 3, (data) => hooks.frame("rgb24", output.width, output.height, data), (bytes) => hooks.corrupt(`truncated raw frame (${bytes} bytes)`));

    let child: ChildProcess;
    try {
      child = (this.#options.spawnProcess ?? defaultSpawn)(program, command.args, { stdio: ["ignore", "pipe", "pipe"], detached: false, windowsHide: true });
    } catch (error) {
      queueMicrotask(() => finish({ kind: "fatal", reason: `cannot start ${program}: ${error instanceof Error ? error.message : String(error)} — ${installHint(command)}` }));
      return { stop: async () => {}, lastError: () => undefined };
    }

    // Deno's ChildProcess.kill sends only the first signal (later calls return false): fall back to process.kill
    // by pid, but only while the child has not exited, so a reused pid is never hit.
    const signal = (name: NodeJS.Signals) => {
      try {
        if (!child.kill(name) && !exited && child.pid !== undefined) process.kill(child.pid, name);
      } catch {
        // already gone
      }
    };
    // The parent's normal exit must not leave a decoder behind (process "exit" handlers run synchronously).
    const killOnParentExit = () => signal("SIGKILL");
    process.on("exit", killOnParentExit);

    child.stdout?.on("data", (chunk: Uint8Array) => splitter.push(chunk));
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (text: string) => {
      stderrTail = (stderrTail + text).slice(-STDERR_TAIL_CHARS);
    });

    const onGone = () => {
      if (exited) return;
      exited = true;
      process.removeListener("exit", killOnParentExit);
      if (killTimer !== undefined) clearTimeout(killTimer);
      resolveExit();
    };

    child.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") {
        onGone();
        finish({ kind: "fatal", reason: `${program} not found — ${installHint(command)}` });
      } else if (child.pid === undefined) {
        onGone();
        finish({ kind: "failed", reason: `cannot start ${program}: ${redact(error.message)}` });
      }
      // Other errors (a failed kill) are followed by "exit"/"close" or are harmless.
    });
    child.on("exit", onGone);
    // "close" comes after stdout is drained: the last frames are in, a cut-off one can be counted.
    child.on("close", (code: number | null, signal: NodeJS.Signals | null) => {
      onGone();
      splitter.flush();
      if (code === 0) {
        if (command.cleanExit === "ended") finish({ kind: "ended", reason: "end of input" });
        else if (command.cleanExit === "replay") finish({ kind: "replay" });
        else finish({ kind: "failed", reason: redact(`${program} exited unexpectedly${stderrTail ? `: ${tailLines(stderrTail)}` : ""}`) });
        return;
      }
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      finish({ kind: "failed", reason: redact(`${program} ${how}${stderrTail ? `: ${tailLines(stderrTail)}` : ""}`) });
    });

    return {
      lastError: () => (stderrTail ? redact(tailLines(stderrTail)) : undefined),
      stop: () => {
        if (!exited && !stopRequested) {
          stopRequested = true;
          signal("SIGTERM");
          // A process stopped by SIGSTOP (or a debugger) only acts on SIGTERM once continued.
          signal("SIGCONT");
          killTimer = setTimeout(() => signal("SIGKILL"), KILL_GRACE_MS);
        }
        stopRequested = true;
        return exitedPromise;
      },
    };
  }
}
