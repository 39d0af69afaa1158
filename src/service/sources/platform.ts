/**
 * Where the sources run: a Jetson (GStreamer with the hardware decoder) or anything else (ffmpeg). The file
 * reads are injectable so tests can pretend to be either.
 */
import { existsSync, readFileSync } from "node:fs";

export interface PlatformInfo {
  jetson: boolean;
  /** The board's model string, e.g. "NVIDIA Jetson Orin Nano Developer Kit", when known. */
  model: string | undefined;
}

export interface PlatformProbe {
  exists(path: string): boolean;
  /** The file's text, or undefined when it cannot be read. */
  readText(path: string): string | undefined;
}

export const HOST_PROBE: PlatformProbe = {
  exists: (path) => existsSync(path),
  readText: (path) => {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return undefined;
    }
  },
};

export function detectPlatform(probe: PlatformProbe = HOST_PROBE): PlatformInfo {
  // The device-tree model string ends in a NUL byte.
  const model = probe.readText("/proc/device-tree/model")?.replace(/\0/g, "").trim() || undefined;
  const jetson = probe.exists("/etc/nv_tegra_release") || (model !== undefined && /jetson/i.test(model));
  return { jetson, model };
}
