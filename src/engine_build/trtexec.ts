/** Running trtexec: its command line as a shell would show it, its output streamed to a log, and its failures explained. */
import { spawn } from "node:child_process";
import { copyFile } from "node:fs/promises";
import { createWriteStream } from "node:fs";
import { FlorenceError } from "../errors.ts";
import type { EngineGraph } from "./graphs.ts";

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function formatCommand(argv: readonly string[]): string {
  return argv.map(shellQuote).join(" ");
}

function trtexecFailure(graph: EngineGraph, code: number | null, signal: NodeJS.Signals | null, tail: string, logPath: string): FlorenceError {
  const where = `trtexec failed building ${graph} (${signal ? `killed by ${signal}` : `exit code ${code}`}); log: ${logPath}`;
  const last = tail.trim().split("\n").slice(-8).join("\n");
  if (signal === "SIGKILL" || /out of memory|OutOfMemory|cudaErrorMemoryAllocation|Requested amount of GPU memory|insufficient (?:device )?memory|std::bad_alloc|failed to allocate/i.test(tail)) {
    return new FlorenceError("ENGINE_FAILED", `${where}: the GPU (or, on a Jetson, shared system memory) ran out of memory${signal === "SIGKILL" ? " — a SIGKILL usually comes from the kernel's out-of-memory killer" : ""}\n${last}`, {
      fix: "lower --max-batch, --max-beams, --max-prompt or --max-new-tokens, close other GPU programs (on a Jetson: stop the desktop, add swap), then run again",
    });
  }
  const op = /No importer registered for op: ([\w.:-]*\w)/.exec(tail)?.[1] ?? /Unsupported ONNX (?:operator|data type)[^\n]*?(\w+)\s*$/m.exec(tail)?.[1];
  if (op || /UNSUPPORTED_NODE|INVALID_NODE|Could not find any implementation for node|Unsupported ONNX/i.test(tail)) {
    return new FlorenceError("ENGINE_FAILED", `${where}: TensorRT cannot build an operation of the graph${op ? ` (${op})` : ""}\n${last}`, {
      fix: "use a newer TensorRT, or re-export the graph with scripts/python/florence_export.py (opset 17, plain ONNX ops)",
    });
  }
  return new FlorenceError("ENGINE_FAILED", `${where}\n${last}`, { fix: "read the log; run the printed trtexec command by hand with --verbose for details" });
}

/** Runs trtexec, streaming its output to a log, with a progress line every few seconds. */
export async function runTrtexec(
  trtexec: string,
  argv: string[],
  logPath: string,
  failedLogPath: string,
  graph: EngineGraph,
  ctx: { log: (l: string) => void; heartbeatSeconds: number; signal: AbortSignal | undefined },
): Promise<void> {
  const logFile = createWriteStream(logPath);
  let tail = "";
  let lastLine = "";
  const started = Date.now();
  const result = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolvePromise, reject) => {
    const child = spawn(trtexec, argv, { stdio: ["ignore", "pipe", "pipe"], ...(ctx.signal ? { signal: ctx.signal } : {}) });
    const onData = (chunk: Buffer) => {
      logFile.write(chunk);
      tail = (tail + chunk.toString()).slice(-16_000);
      const lines = tail.trimEnd().split("\n");
      lastLine = lines[lines.length - 1] ?? lastLine;
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    const timer = setInterval(() => {
      const seconds = Math.round((Date.now() - started) / 1000);
      ctx.log(`    ${graph}: ${seconds} s … ${lastLine.replace(/^\[[^\]]*\]\s*/, "").slice(0, 120)}`);
    }, ctx.heartbeatSeconds * 1000);
    child.on("error", (error) => {
      clearInterval(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearInterval(timer);
      resolvePromise({ code, signal });
    });
  }).catch((cause: Error) => {
    if (ctx.signal?.aborted) throw new FlorenceError("ENGINE_FAILED", `building ${graph} was interrupted`, { cause });
    throw new FlorenceError("ENGINE_UNAVAILABLE", `cannot run ${trtexec}: ${cause.message}`, { cause });
  });
  await new Promise<void>((r) => logFile.end(r));
  if (ctx.signal?.aborted) throw new FlorenceError("ENGINE_FAILED", `building ${graph} was interrupted; nothing was written`);
  if (result.code !== 0 || result.signal) {
    // the log outlives the temporary folder, which is removed
    await copyFile(logPath, failedLogPath).catch(() => undefined);
    throw trtexecFailure(graph, result.code, result.signal, tail, failedLogPath);
  }
}
