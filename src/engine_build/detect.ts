/** What builds TensorRT engines here: trtexec and its TensorRT version, the GPU (nvidia-smi or a Jetson's device tree), the CUDA toolkit. */
import { spawn } from "node:child_process";
import { access, constants, readFile, stat } from "node:fs/promises";
import { delimiter, join } from "node:path";
import process from "node:process";
import { FlorenceError } from "../errors.ts";

export const JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec";

export interface TensorRTVersion {
  version: string;
  major: number;
  minor: number;
  patch: number;
}

/** Reads the TensorRT version from trtexec's banner: "[TensorRT v100300]", "[TensorRT v8601]", "[TensorRT v11.1.0.106]". */
export function parseTensorRTVersion(text: string): TensorRTVersion | undefined {
  const dotted = /TensorRT(?:\.trtexec)?\s*\[?TensorRT v(\d+)\.(\d+)\.(\d+)/.exec(text) ?? /TensorRT version:?\s*(\d+)\.(\d+)\.(\d+)/i.exec(text) ?? /\bTensorRT v(\d+)\.(\d+)\.(\d+)/.exec(text);
  if (dotted) return tensorRTVersion(Number(dotted[1]), Number(dotted[2]), Number(dotted[3]));
  const packed = /\[TensorRT v(\d{4,6})\]/.exec(text);
  if (!packed) return undefined;
  const n = Number(packed[1]);
  // NV_TENSORRT_VERSION: major*1000 + minor*100 + patch before TensorRT 10, major*10000 + minor*100 + patch since
  return n >= 100000 ? tensorRTVersion(Math.floor(n / 10000), Math.floor(n / 100) % 100, n % 100) : tensorRTVersion(Math.floor(n / 1000), Math.floor(n / 100) % 10, n % 100);
}

export function tensorRTVersion(major: number, minor: number, patch: number): TensorRTVersion {
  return { version: `${major}.${minor}.${patch}`, major, minor, patch };
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** trtexec: the given path, else JetPack's location, else the first on `pathEnv`. */
export async function findTrtexec(explicit: string | undefined, pathEnv = process.env["PATH"] ?? ""): Promise<string> {
  if (explicit !== undefined) {
    if (await isExecutable(explicit)) return explicit;
    throw new FlorenceError("ENGINE_UNAVAILABLE", `--trtexec ${explicit} is not an executable file`, {
      fix: `pass the path of TensorRT's trtexec (JetPack: ${JETPACK_TRTEXEC}; desktop TensorRT tar/deb: <TensorRT>/bin/trtexec)`,
    });
  }
  const candidates = [JETPACK_TRTEXEC, ...pathEnv.split(delimiter).filter(Boolean).map((d) => join(d, "trtexec"))];
  for (const candidate of candidates) if (await isExecutable(candidate)) return candidate;
  throw new FlorenceError("ENGINE_UNAVAILABLE", `TensorRT's trtexec was not found (looked at ${JETPACK_TRTEXEC} and on PATH)`, {
    fix: "install TensorRT (JetPack: sudo apt install nvidia-jetpack, or tensorrt; desktop: NVIDIA's TensorRT deb/tar, then add its bin/ to PATH), or pass --trtexec PATH",
  });
}

interface CommandOutput {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

function runCapture(command: string, args: string[], timeoutMs = 60_000): Promise<CommandOutput> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    // our own timer, cleared however the child ends (spawn's `timeout` outlives a command that fails to start)
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString()));
    child.stderr.on("data", (c: Buffer) => (output += c.toString()));
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, output });
    });
  });
}

export async function detectTensorRT(trtexec: string): Promise<TensorRTVersion> {
  let result: CommandOutput;
  try {
    result = await runCapture(trtexec, ["--version"]);
  } catch (cause) {
    throw new FlorenceError("ENGINE_UNAVAILABLE", `cannot run ${trtexec}: ${(cause as Error).message}`, {
      fix: "check that TensorRT is installed completely (trtexec needs libnvinfer and the CUDA runtime on the library path)",
      cause,
    });
  }
  const found = parseTensorRTVersion(result.output);
  if (!found) {
    throw new FlorenceError("ENGINE_UNAVAILABLE", `cannot tell the TensorRT version from "${trtexec} --version": ${result.output.trim().split("\n").slice(0, 3).join(" | ") || "(no output)"}`, {
      fix: "run it by hand; a trtexec that fails to start usually misses libnvinfer or libcudart on LD_LIBRARY_PATH",
    });
  }
  if (found.major < 10) {
    throw new FlorenceError("ENGINE_UNAVAILABLE", `TensorRT ${found.version} is too old: the decoder's profiles need zero-length past inputs (TensorRT 10 or newer)`, {
      fix: "upgrade to TensorRT 10 or 11 (JetPack 6.1+ ships TensorRT 10.3)",
    });
  }
  return found;
}

export interface GpuInfo {
  name: string;
  computeCapability: string;
  driver: string | null;
  cudaDriver: string | null;
}

/** Jetson modules, whose nvidia-smi may not report a compute capability, by their device-tree SoC. */
const JETSON_SOCS: [RegExp, string, string][] = [
  [/nvidia,tegra264/, "Jetson Thor", "11.0"],
  [/nvidia,tegra234/, "Jetson Orin", "8.7"],
  [/nvidia,tegra194/, "Jetson Xavier", "7.2"],
];

export async function detectGpu(nvidiaSmi = "nvidia-smi"): Promise<GpuInfo> {
  let name: string | undefined;
  let cc: string | undefined;
  let driver: string | null = null;
  let cudaDriver: string | null = null;
  let smiError = "";
  try {
    const query = await runCapture(nvidiaSmi, ["--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]);
    const line = query.code === 0 ? query.output.split("\n").find((l) => l.trim() !== "") : undefined;
    if (line) {
      const [n, c, d] = line.split(",").map((s) => s.trim());
      name = n || undefined;
      if (c && /^\d+\.\d+$/.test(c)) cc = c;
      if (d && /^[\d.]+$/.test(d)) driver = d;
    } else smiError = query.output.trim().split("\n")[0] ?? "";
    const banner = await runCapture(nvidiaSmi, []);
    cudaDriver = /CUDA Version:\s*([\d.]+)/.exec(banner.output)?.[1] ?? null;
    driver ??= /Driver Version:\s*([\d.]+)/.exec(banner.output)?.[1] ?? null;
  } catch (cause) {
    smiError = (cause as Error).message;
  }
  if (!name || !cc) {
    try {
      const compatible = (await readFile("/proc/device-tree/compatible", "latin1")).replaceAll("\0", " ");
      const soc = JETSON_SOCS.find(([pattern]) => pattern.test(compatible));
      if (soc) {
        const model = (await readFile("/proc/device-tree/model", "utf8").catch(() => "")).replaceAll("\0", "").trim();
        name = name ?? (model || soc[1]);
        cc = cc ?? soc[2];
      }
    } catch {
      // not a Jetson
    }
  }
  if (!name || !cc) {
    throw new FlorenceError("ENGINE_UNAVAILABLE", `cannot identify the NVIDIA GPU: ${nvidiaSmi} ${smiError ? `failed (${smiError})` : "reported no name and compute capability"}`, {
      fix: "run this on the machine with the GPU, with the NVIDIA driver installed (nvidia-smi --query-gpu=name,compute_cap must work)",
    });
  }
  return { name, computeCapability: cc, driver, cudaDriver };
}

export async function detectCudaToolkit(): Promise<string | null> {
  for (const home of [process.env["CUDA_HOME"], process.env["CUDA_PATH"], "/usr/local/cuda"]) {
    if (!home) continue;
    try {
      const info = JSON.parse(await readFile(join(home, "version.json"), "utf8")) as { cuda?: { version?: string } };
      if (info.cuda?.version) return info.cuda.version;
    } catch {
      // try the next
    }
  }
  return null;
}
