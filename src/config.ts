/**
 * The one reader of the process environment. Everything else receives settings as arguments.
 * (The service's full config tree — file + env + flags — grows here.)
 */
import { homedir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { FlorenceError } from "./errors.ts";

export interface RuntimeEnvironment {
  /** Where hub downloads and built engines are cached: $FLORENCE_EDGE_CACHE, $XDG_CACHE_HOME/florence-edge, ~/.cache/florence-edge. */
  cacheDir: string;
  hfToken: string | undefined;
  hubEndpoint: string | undefined;
  /** ONNX Runtime intra-op threads: $FLORENCE_EDGE_THREADS. */
  threads: number | undefined;
}

export function readEnvironment(env: Record<string, string | undefined> = process.env): RuntimeEnvironment {
  const cacheDir = env["FLORENCE_EDGE_CACHE"] || (env["XDG_CACHE_HOME"] ? join(env["XDG_CACHE_HOME"], "florence-edge") : join(homedir(), ".cache", "florence-edge"));
  let threads: number | undefined;
  if (env["FLORENCE_EDGE_THREADS"]) {
    threads = Number(env["FLORENCE_EDGE_THREADS"]);
    if (!Number.isInteger(threads) || threads < 1 || threads > 1024) {
      throw new FlorenceError("CONFIG_INVALID", `FLORENCE_EDGE_THREADS must be a positive integer, got ${JSON.stringify(env["FLORENCE_EDGE_THREADS"])}`, { fix: "unset it or set e.g. FLORENCE_EDGE_THREADS=4" });
    }
  }
  return { cacheDir, hfToken: env["HF_TOKEN"] || env["HUGGING_FACE_HUB_TOKEN"] || undefined, hubEndpoint: env["HF_ENDPOINT"] || undefined, threads };
}

/** The raw environment, for config layers that take secrets and overrides from it (passed down explicitly). */
export function environmentVariables(): Record<string, string | undefined> {
  return { ...process.env };
}
