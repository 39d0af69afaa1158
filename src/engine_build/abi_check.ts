/**
 * The TensorRT ABI check: compiles scripts/trt-abi-probe/probe.cpp against a TensorRT include directory, runs it, and
 * compares every vtable slot, wrapper layout, logger vtable entry, struct layout and enum value the koffi runtime
 * relies on with the table for that major version in src/engine/tensorrt/abi.ts. TensorRT's headers are read where
 * they are, never copied.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { ABI_TABLES, type AbiCheckRow, abiTableFor, compareWithProbe, parseProbeOutput, probeIncludeSource } from "../engine/tensorrt/abi.ts";
import { FlorenceError } from "../errors.ts";
import { packageRoot } from "../paths.ts";

const run = promisify(execFile);

export interface AbiCheckOptions {
  /** A TensorRT include directory (the one holding NvInferRuntime.h). */
  include: string;
  /** CUDA's include directory (NvInferRuntimeBase.h includes cuda_runtime_api.h); default: the first that exists of /usr/local/cuda/include and /usr/include. */
  cudaInclude?: string;
  /** The C++ compiler; default g++. */
  cxx?: string;
}

export interface AbiCheckResult {
  include: string;
  version: string;
  rows: AbiCheckRow[];
  ok: boolean;
}

/** NV_TENSORRT_MAJOR/MINOR/PATCH from NvInferVersion.h, following one level of indirection (10.13+ define them through TRT_*_ENTERPRISE). */
export async function headerVersion(include: string): Promise<{ major: number; minor: number; patch: number } | undefined> {
  let text: string;
  try {
    text = await readFile(join(include, "NvInferVersion.h"), "utf8");
  } catch {
    return undefined;
  }
  const defines = new Map<string, string>();
  for (const match of text.matchAll(/^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+([^\s/]+)/gm)) defines.set(match[1]!, match[2]!);
  const resolveNumber = (name: string): number => {
    let value = defines.get(name);
    for (let depth = 0; value !== undefined && !/^\d+$/.test(value) && depth < 4; depth++) value = defines.get(value);
    return value !== undefined && /^\d+$/.test(value) ? Number(value) : Number.NaN;
  };
  const version = { major: resolveNumber("NV_TENSORRT_MAJOR"), minor: resolveNumber("NV_TENSORRT_MINOR"), patch: resolveNumber("NV_TENSORRT_PATCH") };
  return Number.isNaN(version.major) ? undefined : version;
}

function defaultCudaInclude(): string | undefined {
  return ["/usr/local/cuda/include", "/usr/include"].find((dir) => existsSync(join(dir, "cuda_runtime_api.h")));
}

/** Builds and runs the probe for one include directory and compares it with abi.ts. */
export async function checkTrtAbi(options: AbiCheckOptions): Promise<AbiCheckResult> {
  const include = resolve(options.include);
  if (!existsSync(join(include, "NvInferRuntime.h"))) {
    throw new FlorenceError("INVALID_ARGUMENT", `--include ${options.include}: no NvInferRuntime.h there`, {
      fix: "pass TensorRT's include directory (e.g. /usr/include/aarch64-linux-gnu on JetPack, or include/ of a TensorRT tarball or of a NVIDIA/TensorRT checkout)",
    });
  }
  const declared = await headerVersion(include);
  if (declared && !abiTableFor(declared.major * 10000)) {
    const version = `${declared.major}.${declared.minor}.${declared.patch}`;
    return { include, version, rows: [{ item: "TensorRT major", expected: Object.keys(ABI_TABLES).join(" or "), found: String(declared.major), ok: false }], ok: false };
  }
  const cudaInclude = options.cudaInclude ?? defaultCudaInclude();
  if (!cudaInclude || !existsSync(join(cudaInclude, "cuda_runtime_api.h"))) {
    throw new FlorenceError("INVALID_ARGUMENT", `no cuda_runtime_api.h in ${cudaInclude ?? "/usr/local/cuda/include or /usr/include"} (TensorRT's headers include it)`, { fix: "pass --cuda-include DIR" });
  }
  const probeSource = join(packageRoot(), "scripts", "trt-abi-probe", "probe.cpp");
  if (!existsSync(probeSource)) throw new FlorenceError("ENGINE_UNAVAILABLE", `probe source missing: ${probeSource}`, { fix: "reinstall florence-edge: the package ships scripts/trt-abi-probe/probe.cpp" });
  const work = await mkdtemp(join(tmpdir(), "trt-abi-probe-"));
  try {
    await writeFile(join(work, "probe_items.inc"), probeIncludeSource());
    const binary = join(work, "probe");
    const cxx = options.cxx ?? "g++";
    try {
      await run(cxx, ["-std=c++20", "-O0", "-w", "-I", work, "-I", include, "-I", cudaInclude, probeSource, "-o", binary], { maxBuffer: 16 << 20 });
    } catch (cause) {
      const stderr = String((cause as { stderr?: string }).stderr ?? (cause as Error).message);
      throw new FlorenceError("ENGINE_UNAVAILABLE", `the probe does not compile against ${include} with ${cxx}:\n${stderr.split("\n").slice(0, 40).join("\n")}`, { fix: "check the include directories and that the compiler supports C++20 (--cxx)" });
    }
    const { stdout } = await run(binary, [], { maxBuffer: 16 << 20 });
    const report = parseProbeOutput(stdout);
    const version = `${report.version.major}.${report.version.minor}.${report.version.patch}`;
    const table = abiTableFor(report.version.major * 10000 + report.version.minor * 100 + report.version.patch);
    if (!table) {
      const supported = Object.keys(ABI_TABLES).join(", ");
      return { include, version, rows: [{ item: "TensorRT major", expected: supported, found: String(report.version.major), ok: false }], ok: false };
    }
    const rows = compareWithProbe(table, report);
    return { include, version, rows, ok: rows.every((r) => r.ok) };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export function formatAbiTable(result: AbiCheckResult): string {
  const header: AbiCheckRow = { item: "item", expected: "abi.ts", found: "headers", ok: true };
  const rows = [header, ...result.rows];
  const width = (key: "item" | "expected" | "found") => Math.max(...rows.map((r) => r[key].length));
  const [wi, we, wf] = [width("item"), width("expected"), width("found")];
  const lines = rows.map((r, i) => `${r.item.padEnd(wi)}  ${r.expected.padEnd(we)}  ${r.found.padEnd(wf)}  ${i === 0 ? "" : r.ok ? "ok" : "MISMATCH"}`);
  const failures = result.rows.filter((r) => !r.ok).length;
  return [`TensorRT ${result.version} headers in ${result.include}`, ...lines, failures ? `${failures} mismatch(es)` : `all ${result.rows.length} items match`].join("\n");
}
