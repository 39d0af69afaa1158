/**
 * The TensorRT FFI contract: abi.ts's slot tables are sound, ffi.ts declares every method they list with a
 * compatible C signature, the probe's report is compared item by item, and — when FLORENCE_EDGE_TRT_INCLUDE names
 * TensorRT include directories (path-list) — the real check (compile the probe, compare) passes against them.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import process from "node:process";
import { delimiter } from "node:path";
import {
  ABI_TABLES,
  type AbiTable,
  APIV_METHODS,
  type ApivClass,
  checkAbiTable,
  compareWithProbe,
  ENUM_TYPES,
  FREE_FUNCTIONS,
  LOGGER_METHODS,
  parseProbeOutput,
  probeIncludeSource,
  selfCheckFailure,
  SUPPORTED_TRT_MAJORS,
} from "../../src/engine/tensorrt/abi.ts";
import { FFI_LAYOUTS, LOGGER_SIGNATURES, NVINFER_DECLARATIONS, VTABLE_SIGNATURES } from "../../src/engine/tensorrt/ffi.ts";
import { checkTrtAbi, formatAbiTable } from "../../src/engine_build/abi_check.ts";

/** Splits a C++ function type "R (C::*)(A, B) const noexcept" or "R (*)(A)" into result and parameters. */
function cxxParts(signature: string): { result: string; params: string[] } {
  const match = /^(.*?)\s*\((?:C::)?\*\)\((.*)\)\s*(?:const)?\s*(?:noexcept)?$/.exec(signature);
  if (!match) throw new Error(`cannot read C++ signature ${signature}`);
  const params = match[2]!.trim() === "" ? [] : match[2]!.split(",").map((p) => p.trim());
  return { result: match[1]!.trim(), params };
}

const ENUMS = new Set<string>(Object.values(ENUM_TYPES));

/** The C type koffi must use for a C++ type on the Itanium ABI (what the FFI contract is allowed to declare). */
function ffiTypeFor(cxx: string): string {
  if (cxx === "void") return "void";
  if (cxx === "bool") return "bool";
  if (cxx === "int32_t" || ENUMS.has(cxx)) return "int32_t";
  if (cxx === "int64_t") return "int64_t";
  if (cxx === "std::size_t") return "size_t";
  if (cxx === "char const*" || cxx === "nvinfer1::AsciiChar const*") return "const char *";
  if (cxx === "nvinfer1::Dims") return "Dims64";
  if (cxx === "nvinfer1::InterfaceInfo") return "InterfaceInfo";
  if (cxx === "nvinfer1::Dims const&" || cxx === "void const*") return "const void *";
  // object pointers, references and CUDA handles all travel as plain pointers
  if (cxx.endsWith("*") || cxx.endsWith("&") || cxx === "cudaStream_t") return "void *";
  throw new Error(`no FFI mapping for C++ type ${cxx}`);
}

test("every ABI table is internally consistent", () => {
  for (const major of SUPPORTED_TRT_MAJORS) {
    const problems = checkAbiTable(ABI_TABLES[major]);
    assert.equal(problems, [], `TensorRT ${major}: ${problems.join("; ")}`);
    assert.is(ABI_TABLES[major].major, major);
  }
});

test("the consistency check catches a corrupted table", () => {
  const base = ABI_TABLES[10];
  const swapped: AbiTable = {
    ...base,
    slots: { ...base.slots, VExecutionContext: { ...base.slots.VExecutionContext, setTensorAddress: 21, setInputShape: 24 } },
  };
  assert.ok(checkAbiTable(swapped).some((p) => p.includes("VExecutionContext")));
  const badLogger: AbiTable = { ...base, logger: { vtable: ["~complete", "log", "~deleting"] } };
  assert.ok(checkAbiTable(badLogger).some((p) => p.includes("deleting destructor must follow")));
  const missing: AbiTable = { ...base, slots: { ...base.slots, VRuntime: { getPImpl: 2, getLogger: 11 } as never } };
  assert.ok(checkAbiTable(missing).some((p) => p.includes("VRuntime.deserializeCudaEngine: no slot")));
});

test("TensorRT 11 moved methods that 10 kept (10 → 11 removed methods), and only after the first removal", () => {
  // facts from the headers: 11 dropped VRuntime::deserializeCudaEngine(IStreamReader&), VCudaEngine's implicit-batch
  // and legacy memory methods, VExecutionContext::allInputShapesSpecified — so later slots moved down
  const t10 = ABI_TABLES[10].slots;
  const t11 = ABI_TABLES[11].slots;
  assert.ok(t11.VRuntime.getLogger! < t10.VRuntime.getLogger!);
  assert.ok(t11.VCudaEngine.getTensorShape! < t10.VCudaEngine.getTensorShape!);
  assert.ok(t11.VExecutionContext.enqueueV3! < t10.VExecutionContext.enqueueV3!);
  for (const cls of Object.keys(APIV_METHODS) as ApivClass[]) assert.is(t10[cls].getPImpl, t11[cls].getPImpl, `${cls}.getPImpl`);
  assert.is(t10.VExecutionContext.getEngine, t11.VExecutionContext.getEngine, "getEngine precedes the first removal");
});

test("ffi.ts declares every apiv method abi.ts lists, with the C types the C++ signature needs", () => {
  for (const [cls, info] of Object.entries(APIV_METHODS)) {
    const signatures = VTABLE_SIGNATURES[cls as ApivClass] as Record<string, readonly [string, readonly string[]]>;
    assert.equal(Object.keys(signatures).sort(), Object.keys(info.methods).sort(), `${cls}: methods`);
    for (const [method, cxx] of Object.entries(info.methods)) {
      const { result, params } = cxxParts(cxx);
      const [ffiResult, ffiParams] = signatures[method]!;
      assert.is(ffiResult, ffiTypeFor(result), `${cls}.${method} result (${result})`);
      assert.is(ffiParams[0], "void *", `${cls}.${method}: self comes first`);
      assert.equal(ffiParams.slice(1), params.map(ffiTypeFor), `${cls}.${method} parameters (${params.join(", ")})`);
    }
  }
});

test("the logger's callbacks cover every entry of each major's ILogger vtable", () => {
  for (const major of SUPPORTED_TRT_MAJORS) {
    for (const entry of ABI_TABLES[major].logger.vtable) assert.ok(entry in LOGGER_SIGNATURES, `TensorRT ${major}: no callback for ${entry}`);
  }
  for (const [method, cxx] of Object.entries(LOGGER_METHODS)) {
    const { result, params } = cxxParts(cxx);
    const [ffiResult, ffiParams] = LOGGER_SIGNATURES[method as keyof typeof LOGGER_METHODS];
    assert.is(ffiResult, ffiTypeFor(result), `ILogger.${method} result`);
    assert.equal(ffiParams.slice(1), params.map(ffiTypeFor), `ILogger.${method} parameters`);
  }
  // TensorRT 11's ILogger derives from IVersionedInterface: its two virtuals and destructor come before log
  assert.equal(ABI_TABLES[11].logger.vtable.slice(0, 4), ["getAPILanguage", "getInterfaceInfo", "~complete", "~deleting"]);
  assert.is(ABI_TABLES[10].logger.vtable[0], "log");
});

test("libnvinfer's entry points are declared as the headers type them", () => {
  for (const [name, cxx] of Object.entries(FREE_FUNCTIONS)) {
    const declaration = NVINFER_DECLARATIONS[name as keyof typeof NVINFER_DECLARATIONS];
    assert.ok(declaration, `${name} declared`);
    const { result, params } = cxxParts(cxx);
    const match = /^(.*?)\s*\*?(\w+)\((.*)\)$/.exec(declaration.replace(/\s+/g, " "))!;
    assert.is(match[2], name);
    const declaredParams = match[3]!.trim() === "" ? [] : match[3]!.split(",");
    assert.is(declaredParams.length, params.length, `${name} arity`);
    assert.ok(declaration.startsWith(result === "void*" ? "void *" : result), `${name} returns ${result}`);
  }
});

test("koffi lays out Dims64 and InterfaceInfo as every table says", () => {
  for (const major of SUPPORTED_TRT_MAJORS) {
    const { Dims64, InterfaceInfo } = ABI_TABLES[major].structs;
    assert.is(FFI_LAYOUTS.Dims64.size, Dims64.size);
    assert.is(FFI_LAYOUTS.Dims64.nbDims, Dims64.offsets["nbDims"]);
    assert.is(FFI_LAYOUTS.Dims64.d, Dims64.offsets["d"]);
    assert.is(FFI_LAYOUTS.Dims64.maxDims, Dims64.maxDims);
    assert.is(FFI_LAYOUTS.InterfaceInfo.size, InterfaceInfo.size);
    assert.is(FFI_LAYOUTS.InterfaceInfo.major, InterfaceInfo.offsets["major"]);
    assert.is(FFI_LAYOUTS.InterfaceInfo.minor, InterfaceInfo.offsets["minor"]);
  }
});

test("the generated probe items cover every method, logger method, function and enum member", () => {
  const source = probeIncludeSource();
  for (const [cls, info] of Object.entries(APIV_METHODS)) for (const method of Object.keys(info.methods)) assert.ok(source.includes(`"${cls}.${method}"`), `${cls}.${method}`);
  for (const method of Object.keys(LOGGER_METHODS)) assert.ok(source.includes(`"ILogger.${method}"`));
  for (const name of Object.keys(FREE_FUNCTIONS)) assert.ok(source.includes(`PROBE_FUNCTION("${name}"`));
  for (const major of SUPPORTED_TRT_MAJORS) {
    for (const [name, values] of Object.entries(ABI_TABLES[major].enums)) for (const member of Object.keys(values)) assert.ok(source.includes(`"${name}.${member}"`), `${name}.${member}`);
  }
});

test("a probe report is compared item by item: a moved slot or a missing method is a mismatch", () => {
  const table = ABI_TABLES[10];
  // a hand-written report for a hypothetical header set: setTensorAddress moved by one entry, enqueueV3 gone
  const lines = ["version 10 99 0"];
  for (const [cls, slots] of Object.entries(table.slots)) {
    for (const [method, slot] of Object.entries(slots as Record<string, number>)) {
      const moved = cls === "VExecutionContext" && method === "setTensorAddress" ? slot + 1 : slot;
      lines.push(cls === "VExecutionContext" && method === "enqueueV3" ? `slot ${cls}.${method} missing` : `slot ${cls}.${method} ${moved * 8}`);
    }
  }
  const report = parseProbeOutput(lines.join("\n"));
  assert.is(report.version.minor, 99);
  const rows = compareWithProbe(table, report);
  const failed = rows.filter((r) => !r.ok).map((r) => r.item);
  assert.ok(failed.includes("VExecutionContext.setTensorAddress"));
  assert.ok(failed.includes("VExecutionContext.enqueueV3"));
  assert.ok(!failed.includes("VExecutionContext.setInputShape"));
  // items the report left out (layouts, enums, vtables) are mismatches too, never silent passes
  assert.ok(failed.includes("Dims64 size"));
  assert.ok(failed.includes("ILogger vtable"));
  assert.throws(() => parseProbeOutput("slot X.y 16"), /no version line/);
});

test("the load-time self-check names what disagreed", () => {
  const table = ABI_TABLES[10];
  assert.is(selfCheckFailure(table, 100300, [{ what: "VRuntime.getPImpl()", expected: 0x1000n, actual: 0x1000n }]), undefined);
  const failure = selfCheckFailure(table, 100300, [{ what: "VRuntime.getLogger()", expected: 0x2000n, actual: 0x3000n }]);
  assert.ok(failure?.includes("TensorRT 10.3.0"));
  assert.ok(failure?.includes("VRuntime.getLogger() returned 0x3000, expected 0x2000"));
});

const includes = (process.env["FLORENCE_EDGE_TRT_INCLUDE"] ?? "").split(delimiter).filter(Boolean);
if (includes.length === 0) {
  console.log(
    "trt_abi: SKIPPED the real ABI check: FLORENCE_EDGE_TRT_INCLUDE is not set. Set it to TensorRT include directories " +
      `(e.g. /usr/include/aarch64-linux-gnu, or include/ of NVIDIA/TensorRT tags v10.3.0, v10.13.3, v10.16, v11.1; "${delimiter}"-separated) to compile the probe against them.`,
  );
} else {
  for (const include of includes) {
    test(`check-trt-abi passes against ${include}`, async () => {
      const result = await checkTrtAbi({ include });
      const failures = result.rows.filter((r) => !r.ok);
      assert.equal(failures, [], formatAbiTable(result));
      assert.ok(result.rows.length > 50, "the check compared the whole table");
    });
  }
}

test.run();
