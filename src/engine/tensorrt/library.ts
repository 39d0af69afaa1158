/**
 * libnvinfer itself: which shared library is opened (.so.11, .so.10), which TensorRT version it reports and which
 * ABI table (abi.ts) its vtables follow. Opening it never throws; the reason says what is missing.
 */
import { type AbiTable, abiTableFor, formatTrtVersion, SUPPORTED_TRT_MAJORS } from "./abi.ts";
import { bindNvInfer, FFI_LAYOUTS, LIBRARY_DIRS, type NvInferApi, openLibrary, SONAMES } from "./ffi.ts";

/** The oldest TensorRT whose vtables hold every method abi.ts uses (10.0 lacks the *V2 memory calls). */
export const MIN_TRT_VERSION = 100100;

export interface TensorRtLibraryOptions {
  /** libnvinfer files or sonames to try first. */
  libraries?: readonly string[];
  /** More directories to look for libnvinfer in. */
  searchDirs?: readonly string[];
  /** Try this major's soname first (the version the engines were built with). */
  preferMajor?: number;
}

export interface TensorRtLibrary {
  readonly api: NvInferApi;
  /** getInferLibVersion(): major·10000 + minor·100 + patch. */
  readonly version: number;
  readonly versionText: string;
  readonly table: AbiTable;
}

/** Opens libnvinfer (.so.11, .so.10), checks getInferLibVersion and picks the ABI table. Never throws. */
export function tryLoadTensorRt(options: TensorRtLibraryOptions = {}): { ok: true; trt: TensorRtLibrary } | { ok: false; reason: string } {
  const sonames = [...SONAMES.nvinfer].sort((a, b) => Number(b.endsWith(`.so.${options.preferMajor}`)) - Number(a.endsWith(`.so.${options.preferMajor}`)));
  const candidates = [...(options.libraries ?? []), ...sonames];
  const library = openLibrary(candidates, [...(options.searchDirs ?? []), ...LIBRARY_DIRS.nvinfer]);
  if ("failures" in library) return { ok: false, reason: `TensorRT not found (tried ${candidates.join(", ")}): ${library.failures.join("; ") || "no such files"}` };
  const api = bindNvInfer(library);
  const version = api.getInferLibVersion();
  const versionText = formatTrtVersion(version);
  const table = abiTableFor(version);
  if (!table) return { ok: false, reason: `${library.path} is TensorRT ${versionText}; this runtime supports TensorRT ${SUPPORTED_TRT_MAJORS.join(" and ")}` };
  if (version < MIN_TRT_VERSION) {
    return { ok: false, reason: `${library.path} is TensorRT ${versionText}; this runtime needs ${formatTrtVersion(MIN_TRT_VERSION)} or newer (getDeviceMemorySizeV2 and setDeviceMemoryV2 appeared in 10.1): JetPack 6.1+ or a current TensorRT 10 for desktop` };
  }
  const sonameMajor = /\.so\.(\d+)/.exec(library.path)?.[1];
  if (sonameMajor && Number(sonameMajor) !== table.major) return { ok: false, reason: `${library.path} reports TensorRT ${versionText}: soname and getInferLibVersion disagree` };
  const dims = table.structs.Dims64;
  if (FFI_LAYOUTS.Dims64.size !== dims.size || FFI_LAYOUTS.Dims64.d !== dims.offsets["d"] || FFI_LAYOUTS.Dims64.nbDims !== dims.offsets["nbDims"]) {
    return { ok: false, reason: `koffi lays out Dims64 as ${JSON.stringify(FFI_LAYOUTS.Dims64)}, TensorRT ${table.major} as ${JSON.stringify(dims)}` };
  }
  return { ok: true, trt: { api, version, versionText, table } };
}
