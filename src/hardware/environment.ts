/** What the TensorRT path needs on this machine (GPU, CUDA runtime, TensorRT, trtexec), found or missing, and how to get what is missing. */
import { existsSync, readFileSync } from "node:fs";
import { totalmem } from "node:os";
import { detectGpu, detectTensorRT, findTrtexec, type GpuInfo, JETPACK_TRTEXEC, type TensorRTVersion } from "../engine_build/detect.ts";
import type { MachineInfo } from "../engine/tensorrt/runtime.ts";


export type Platform = "jetson" | "desktop";
export type Part = "gpu" | "cuda" | "tensorrt" | "trtexec";
export type Availability<T> = ({ ok: true } & T) | { ok: false; reason: string };

export interface EnvironmentReport {
  platform: Platform;
  gpu: Availability<{ name: string; computeCapability: string; driver: string | null; cudaDriver: string | null }>;
  cuda: Availability<{ runtime: string; driver: string; library: string }>;
  tensorrt: Availability<{ version: string }>;
  /** Not looked for with --skip-build. */
  trtexec: Availability<{ path: string; version: string }> | { ok: "not needed" };
  /** GPU memory as CUDA reports it (on a Jetson, the memory it shares with the CPU). */
  memoryBytes: number | null;
  integrated: boolean | null;
}

export const PART_NAMES: Record<Part, string> = { gpu: "NVIDIA GPU", cuda: "CUDA runtime (libcudart)", tensorrt: "TensorRT (libnvinfer)", trtexec: "trtexec" };

export function missingParts(env: Pick<EnvironmentReport, "gpu" | "cuda" | "tensorrt" | "trtexec">): Part[] {
  return (["gpu", "cuda", "tensorrt", "trtexec"] as const).filter((part) => env[part].ok === false);
}

const HOW_TO_GET: Record<Platform, Record<Part, string>> = {
  jetson: {
    gpu: "the GPU driver comes with JetPack 6 or 7 (L4T): reflash or update with SDK Manager, and run as a user in the video group",
    cuda: "CUDA comes with JetPack: sudo apt install nvidia-jetpack",
    tensorrt: "JetPack ships TensorRT (libnvinfer, /usr/src/tensorrt): sudo apt install nvidia-jetpack (or tensorrt)",
    trtexec: `JetPack's TensorRT puts trtexec in ${JETPACK_TRTEXEC} (sudo apt install tensorrt); or pass --trtexec PATH, or --skip-build with engines built already`,
  },
  desktop: {
    gpu: "install the NVIDIA driver (nvidia-smi must list the GPU; in a container, run it with --gpus all)",
    cuda: "install the CUDA 12 or 13 runtime (libcudart) and put its lib64/ on LD_LIBRARY_PATH",
    tensorrt: "install TensorRT 10.x (NVIDIA's deb or tar) and put its lib/ on LD_LIBRARY_PATH",
    trtexec: "put TensorRT 10.x's bin/trtexec on PATH (or pass --trtexec PATH, or --skip-build with engines built already)",
  },
};

/** The one line printed when the machine cannot run the test: which parts are missing and how to get them. */
export function skipLine(missing: readonly Part[], platform: Platform): string {
  if (missing.length === 0) return "";
  const names = missing.map((p) => PART_NAMES[p]);
  if (missing.includes("gpu")) {
    const also = names.length > 1 ? ` (also missing: ${names.slice(1).join(", ")})` : "";
    const how =
      platform === "jetson"
        ? HOW_TO_GET.jetson.gpu
        : "run it on a Jetson with JetPack 6 or 7 (it ships TensorRT in /usr/src/tensorrt and libnvinfer) or on a desktop NVIDIA GPU with the driver, CUDA 12+ and TensorRT 10.x installed and trtexec on PATH";
    return `SKIPPED, cannot run here: no NVIDIA GPU${also} — ${how}`;
  }
  return `SKIPPED, cannot run here: missing ${names.join(", ")} — ${missing.map((p) => HOW_TO_GET[platform][p]).join("; ")}`;
}

function detectPlatform(): Platform {
  if (existsSync("/etc/nv_tegra_release")) return "jetson";
  try {
    if (/nvidia,tegra/.test(readFileSync("/proc/device-tree/compatible", "latin1"))) return "jetson";
  } catch {
    // no device tree: not a Jetson
  }
  return "desktop";
}

function firstClause(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split(" — ")[0]!;
}

export interface Detected {
  env: EnvironmentReport;
  /** Set when CUDA and TensorRT both loaded: what the TensorRT backend will see. */
  machine: MachineInfo | undefined;
  trtexec: string | undefined;
}

/** What is here; trtexec is looked for only when the test builds engines. */
export async function detectEnvironment(options: { skipBuild: boolean; trtexec: string | undefined }): Promise<Detected> {
  const platform = detectPlatform();
  let gpuInfo: GpuInfo | undefined;
  let gpuReason = "";
  try {
    gpuInfo = await detectGpu();
  } catch (error) {
    gpuReason = firstClause(error);
  }
  // loaded here and not at the top: --help and bad flags must work without koffi
  const { CudaRuntime, formatCudaVersion } = await import("../engine/tensorrt/cuda.ts");
  const { describeMachine, tryLoadTensorRt } = await import("../engine/tensorrt/runtime.ts");
  const cuda = CudaRuntime.tryOpen();
  const trt = tryLoadTensorRt();
  let machine: MachineInfo | undefined;
  let memoryBytes: number | null = null;
  if (cuda.ok) {
    try {
      memoryBytes = cuda.cuda.memoryInfo().totalBytes;
    } catch {
      memoryBytes = null;
    }
    if (trt.ok) machine = describeMachine(cuda.cuda, trt.trt);
  }
  if (memoryBytes === null && platform === "jetson") memoryBytes = totalmem();
  const deviceName = cuda.ok ? cuda.cuda.deviceName() : undefined;
  const gpu: EnvironmentReport["gpu"] = gpuInfo
    ? { ok: true, ...gpuInfo }
    : cuda.ok
      ? { ok: true, name: deviceName ?? "GPU", computeCapability: (({ major, minor }) => `${major}.${minor}`)(cuda.cuda.computeCapability()), driver: null, cudaDriver: formatCudaVersion(cuda.cuda.driverVersion) }
      : { ok: false, reason: gpuReason };

  let trtexecPath: string | undefined;
  let trtexec: EnvironmentReport["trtexec"] = { ok: "not needed" };
  if (!options.skipBuild) {
    try {
      trtexecPath = await findTrtexec(options.trtexec);
      const version: TensorRTVersion = await detectTensorRT(trtexecPath);
      trtexec = { ok: true, path: trtexecPath, version: version.version };
    } catch (error) {
      trtexec = { ok: false, reason: firstClause(error) };
      trtexecPath = undefined;
    }
  }
  return {
    env: {
      platform,
      gpu,
      cuda: cuda.ok ? { ok: true, runtime: formatCudaVersion(cuda.cuda.runtimeVersion), driver: formatCudaVersion(cuda.cuda.driverVersion), library: cuda.cuda.libraryPath } : { ok: false, reason: cuda.reason },
      tensorrt: trt.ok ? { ok: true, version: trt.trt.versionText } : { ok: false, reason: trt.reason },
      trtexec,
      memoryBytes,
      integrated: machine?.integrated ?? (platform === "jetson" ? true : null),
    },
    machine,
    trtexec: trtexecPath,
  };
}
