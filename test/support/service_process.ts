/**
 * `florence-edge serve` as users run it, in a child process, for the HTTP tests: a config file written to a temp
 * folder, the HTTP face's URL read from the service's own log line, everything it prints kept, SIGTERM to stop.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { REPO_ROOT } from "./paths.ts";
import { waitFor } from "./wait_for.ts";

export interface ServiceProcess {
  /** The HTTP face, without a trailing slash. */
  readonly url: string;
  readonly child: ChildProcess;
  readonly dir: string;
  /** Everything printed so far. */
  output(): { stdout: string; stderr: string };
  /** SIGTERM; resolves with the exit code (null when it had to be killed). */
  stop(): Promise<number | null>;
}

/** Starts the service with `config` (YAML) and extra flags; resolves once its HTTP face listens. */
export async function startService(config: string, options: { args?: string[]; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<ServiceProcess> {
  const dir = mkdtempSync(join(tmpdir(), "fe-http-"));
  const file = join(dir, "config.yaml");
  writeFileSync(file, config);
  const child = spawn(process.execPath, [join(REPO_ROOT, "dist", "src", "bin.js"), "serve", "--config", file, "--log-format", "json", ...(options.args ?? [])], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NOTIFY_SOCKET: "", ...options.env },
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const found = await waitFor("the service's HTTP URL", options.timeoutMs ?? 60_000, () => {
    if (child.exitCode !== null) return { exited: child.exitCode, url: undefined };
    const line = stderr.split("\n").find((l) => l.includes('"msg":"http:'));
    return line ? { exited: null, url: (JSON.parse(line) as { fields: { url: string } }).fields.url.replace(/\/$/, "") } : undefined;
  }).catch((error: Error) => {
    child.kill("SIGKILL");
    throw new Error(`${error.message}\n${stderr.slice(-3000)}`);
  });
  if (found.url === undefined) throw new Error(`the service exited with ${found.exited} before listening:\n${stderr.slice(-3000)}`);
  const url = found.url;
  return {
    url,
    child,
    dir,
    output: () => ({ stdout, stderr }),
    stop: async () => {
      if (child.exitCode === null) child.kill("SIGTERM");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const code = await Promise.race([exited, new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), 20_000)))]);
      clearTimeout(timer);
      if (code === "timeout") {
        child.kill("SIGKILL");
        return null;
      }
      // Deno's child_process reports a signalled child's exit code as null even when it exits 0 by itself: there the
      // service's own "stopped" line is the proof of the clean exit path
      if (code === null && (globalThis as { Deno?: unknown }).Deno !== undefined && stderr.includes('"msg":"stopped"')) return 0;
      return code;
    },
  };
}

/** A camera of demo stills at 2 fps (no ffmpeg needed), with these tasks on every frame. */
export function demoCameraYaml(name: string, folder: string, tasks: readonly string[]): string {
  return [
    "cameras:",
    `  - name: ${name}`,
    `    source: { type: folder, path: ${JSON.stringify(folder)}, loop: true, fps: 2 }`,
    "    tasks:",
    ...tasks.map((t) => `      - { task: ${JSON.stringify(t)} }`),
    "",
  ].join("\n");
}
