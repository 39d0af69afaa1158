/**
 * TensorRT's C++ ABI as the koffi runtime relies on it, one table per major version.
 *
 * TensorRT's public classes (IRuntime, ICudaEngine, IExecutionContext) are thin wrappers: a vtable holding only the
 * destructors, then `mImpl`, a pointer to a pure-virtual `apiv::V*` object whose methods do the work. The runtime
 * reads `mImpl` and calls the apiv methods by vtable slot. Within 10.x methods are only appended; 10 → 11 removed
 * methods (so later slots moved) and TensorRT 11's ILogger derives from IVersionedInterface (two more virtuals first).
 *
 * Every slot here is checked against real headers by `florence-edge check-trt-abi --include DIR`
 * (src/engine_build/abi_check.ts, which compiles scripts/trt-abi-probe/probe.cpp), and at load the runtime self-checks
 * the table (each object's getPImpl returns its wrapper, the runtime returns our logger) before trusting it.
 * No koffi here: this file is data and pure checks, so tests and the checker can use it anywhere.
 */

export const SUPPORTED_TRT_MAJORS = [10, 11] as const;
export type TrtMajor = (typeof SUPPORTED_TRT_MAJORS)[number];

/** Where a slot lives: byte offset = index × pointer size (Itanium C++ ABI, x86-64 and aarch64). */
export const POINTER_BYTES = 8;

/**
 * The apiv methods the runtime calls, in header declaration order, with their C++ pointer-to-member types
 * (`C` is the class). The probe takes each one's address through exactly this type, so a changed signature
 * is reported rather than silently called with the wrong arguments.
 */
export const APIV_METHODS = {
  VRuntime: {
    cxxClass: "nvinfer1::apiv::VRuntime",
    methods: {
      getPImpl: "nvinfer1::IRuntime* (C::*)() noexcept",
      deserializeCudaEngine: "nvinfer1::ICudaEngine* (C::*)(void const*, std::size_t) noexcept",
      getLogger: "nvinfer1::ILogger* (C::*)() const noexcept",
    },
  },
  VCudaEngine: {
    cxxClass: "nvinfer1::apiv::VCudaEngine",
    methods: {
      getPImpl: "nvinfer1::ICudaEngine* (C::*)() noexcept",
      createExecutionContext: "nvinfer1::IExecutionContext* (C::*)(nvinfer1::ExecutionContextAllocationStrategy) noexcept",
      getNbOptimizationProfiles: "int32_t (C::*)() const noexcept",
      getTensorShape: "nvinfer1::Dims (C::*)(char const*) const noexcept",
      getTensorDataType: "nvinfer1::DataType (C::*)(char const*) const noexcept",
      isShapeInferenceIO: "bool (C::*)(char const*) const noexcept",
      getTensorIOMode: "nvinfer1::TensorIOMode (C::*)(char const*) const noexcept",
      getTensorFormat: "nvinfer1::TensorFormat (C::*)(char const*) const noexcept",
      getProfileShape: "nvinfer1::Dims (C::*)(char const*, int32_t, nvinfer1::OptProfileSelector) const noexcept",
      getNbIOTensors: "int32_t (C::*)() const noexcept",
      getIOTensorName: "char const* (C::*)(int32_t) const noexcept",
      getDeviceMemorySizeV2: "int64_t (C::*)() const noexcept",
    },
  },
  VExecutionContext: {
    cxxClass: "nvinfer1::apiv::VExecutionContext",
    methods: {
      getPImpl: "nvinfer1::IExecutionContext* (C::*)() noexcept",
      getEngine: "nvinfer1::ICudaEngine const& (C::*)() const noexcept",
      allInputDimensionsSpecified: "bool (C::*)() const noexcept",
      setOptimizationProfileAsync: "bool (C::*)(int32_t, cudaStream_t) noexcept",
      setInputShape: "bool (C::*)(char const*, nvinfer1::Dims const&) noexcept",
      getTensorShape: "nvinfer1::Dims (C::*)(char const*) const noexcept",
      setTensorAddress: "bool (C::*)(char const*, void*) noexcept",
      enqueueV3: "bool (C::*)(cudaStream_t) noexcept",
      setDeviceMemoryV2: "void (C::*)(void*, int64_t) noexcept",
    },
  },
} as const;

export type ApivClass = keyof typeof APIV_METHODS;
export type ApivMethod<C extends ApivClass> = keyof (typeof APIV_METHODS)[C]["methods"];

/**
 * ILogger methods the hand-made logger vtable implements (`C` is nvinfer1::ILogger). getInterfaceInfo and
 * getAPILanguage exist from TensorRT 11 (IVersionedInterface); a major whose table leaves them out lacks them.
 */
export const LOGGER_METHODS = {
  log: "void (C::*)(nvinfer1::ILogger::Severity, nvinfer1::AsciiChar const*) noexcept",
  getInterfaceInfo: "nvinfer1::InterfaceInfo (C::*)() const noexcept",
  getAPILanguage: "nvinfer1::APILanguage (C::*)() const noexcept",
} as const;
export type LoggerMethod = keyof typeof LOGGER_METHODS;

/** A vtable entry as the probe identifies it: a named method, or one of the two Itanium destructor entries. */
export type LoggerEntry = LoggerMethod | "~complete" | "~deleting";
export type WrapperEntry = "~complete" | "~deleting";

export const WRAPPER_CLASSES = {
  IRuntime: { cxxClass: "nvinfer1::IRuntime", impl: "VRuntime" },
  ICudaEngine: { cxxClass: "nvinfer1::ICudaEngine", impl: "VCudaEngine" },
  IExecutionContext: { cxxClass: "nvinfer1::IExecutionContext", impl: "VExecutionContext" },
} as const;
export type WrapperClass = keyof typeof WRAPPER_CLASSES;

/** extern "C" entry points of libnvinfer, with their C++ function pointer types. */
export const FREE_FUNCTIONS = {
  getInferLibVersion: "int32_t (*)() noexcept",
  createInferRuntime_INTERNAL: "void* (*)(void*, int32_t) noexcept",
} as const;
export type FreeFunction = keyof typeof FREE_FUNCTIONS;

/** Enums the runtime reads or passes, by C++ type; the values per major are in the tables. */
export const ENUM_TYPES = {
  DataType: "nvinfer1::DataType",
  TensorIOMode: "nvinfer1::TensorIOMode",
  TensorFormat: "nvinfer1::TensorFormat",
  OptProfileSelector: "nvinfer1::OptProfileSelector",
  ExecutionContextAllocationStrategy: "nvinfer1::ExecutionContextAllocationStrategy",
  Severity: "nvinfer1::ILogger::Severity",
  APILanguage: "nvinfer1::APILanguage",
} as const;
export type EnumType = keyof typeof ENUM_TYPES;

/** Struct layouts passed by value or pointer: field offsets in bytes, and whether the type is trivially copyable (then it is passed like a C struct). */
export const STRUCT_TYPES = {
  Dims64: { cxx: "nvinfer1::Dims64", fields: ["nbDims", "d"] },
  InterfaceInfo: { cxx: "nvinfer1::InterfaceInfo", fields: ["kind", "major", "minor"] },
} as const;
export type StructType = keyof typeof STRUCT_TYPES;

export interface StructLayout {
  size: number;
  offsets: Readonly<Record<string, number>>;
  triviallyCopyable: boolean;
}

export interface AbiTable {
  major: TrtMajor;
  /** Header versions this table was checked against with check-trt-abi (NVIDIA/TensorRT tags). */
  checkedWith: readonly string[];
  /** Vtable index per apiv method; null where this major lacks the method. */
  slots: { readonly [C in ApivClass]: { readonly [M in ApivMethod<C>]: number | null } };
  /** The public wrappers: their whole vtable (destructors only) and where `mImpl` sits. */
  wrappers: { readonly [W in WrapperClass]: { readonly vtable: readonly WrapperEntry[]; readonly implOffset: number } };
  /** ILogger's whole vtable, entry by entry: the layout of the vtable the runtime builds from JS callbacks. */
  logger: { readonly vtable: readonly LoggerEntry[] };
  structs: { readonly Dims64: StructLayout & { maxDims: number }; readonly InterfaceInfo: StructLayout };
  enums: { readonly [E in EnumType]: Readonly<Record<string, number>> };
  functions: readonly FreeFunction[];
}

const SHARED_ENUMS_10 = {
  DataType: { kFLOAT: 0, kHALF: 1, kINT8: 2, kINT32: 3, kBOOL: 4, kUINT8: 5, kFP8: 6, kBF16: 7, kINT64: 8 },
  TensorIOMode: { kNONE: 0, kINPUT: 1, kOUTPUT: 2 },
  TensorFormat: { kLINEAR: 0 },
  OptProfileSelector: { kMIN: 0, kOPT: 1, kMAX: 2 },
  ExecutionContextAllocationStrategy: { kSTATIC: 0, kON_PROFILE_CHANGE: 1, kUSER_MANAGED: 2 },
  Severity: { kINTERNAL_ERROR: 0, kERROR: 1, kWARNING: 2, kINFO: 3, kVERBOSE: 4 },
  APILanguage: { kCPP: 0 },
} as const;

const STRUCTS = {
  Dims64: { size: 72, offsets: { nbDims: 0, d: 8 }, triviallyCopyable: true, maxDims: 8 },
  InterfaceInfo: { size: 16, offsets: { kind: 0, major: 8, minor: 12 }, triviallyCopyable: true },
} as const;

const WRAPPERS = {
  IRuntime: { vtable: ["~complete", "~deleting"], implOffset: 8 },
  ICudaEngine: { vtable: ["~complete", "~deleting"], implOffset: 8 },
  IExecutionContext: { vtable: ["~complete", "~deleting"], implOffset: 8 },
} as const;

export const ABI_TABLES: { readonly [M in TrtMajor]: AbiTable } = {
  10: {
    major: 10,
    checkedWith: ["v10.1.0", "v10.3.0", "v10.13.3", "v10.16"],
    slots: {
      VRuntime: { getPImpl: 2, deserializeCudaEngine: 3, getLogger: 11 },
      VCudaEngine: {
        getPImpl: 2,
        createExecutionContext: 5,
        getNbOptimizationProfiles: 10,
        getTensorShape: 19,
        getTensorDataType: 20,
        isShapeInferenceIO: 22,
        getTensorIOMode: 23,
        getTensorFormat: 26,
        getProfileShape: 29,
        getNbIOTensors: 30,
        getIOTensorName: 31,
        getDeviceMemorySizeV2: 52,
      },
      VExecutionContext: {
        getPImpl: 2,
        getEngine: 7,
        allInputDimensionsSpecified: 12,
        setOptimizationProfileAsync: 17,
        setInputShape: 21,
        getTensorShape: 22,
        setTensorAddress: 24,
        enqueueV3: 37,
        setDeviceMemoryV2: 49,
      },
    },
    wrappers: WRAPPERS,
    logger: { vtable: ["log", "~complete", "~deleting"] },
    structs: STRUCTS,
    enums: SHARED_ENUMS_10,
    functions: ["getInferLibVersion", "createInferRuntime_INTERNAL"],
  },
  11: {
    major: 11,
    checkedWith: ["v11.0", "v11.1"],
    slots: {
      VRuntime: { getPImpl: 2, deserializeCudaEngine: 3, getLogger: 10 },
      VCudaEngine: {
        getPImpl: 2,
        createExecutionContext: 5,
        getNbOptimizationProfiles: 8,
        getTensorShape: 15,
        getTensorDataType: 16,
        isShapeInferenceIO: 18,
        getTensorIOMode: 19,
        getTensorFormat: 22,
        getProfileShape: 25,
        getNbIOTensors: 26,
        getIOTensorName: 27,
        getDeviceMemorySizeV2: 44,
      },
      VExecutionContext: {
        getPImpl: 2,
        getEngine: 7,
        allInputDimensionsSpecified: 12,
        setOptimizationProfileAsync: 16,
        setInputShape: 20,
        getTensorShape: 21,
        setTensorAddress: 23,
        enqueueV3: 36,
        setDeviceMemoryV2: 48,
      },
    },
    wrappers: WRAPPERS,
    logger: { vtable: ["getAPILanguage", "getInterfaceInfo", "~complete", "~deleting", "log"] },
    structs: STRUCTS,
    enums: {
      ...SHARED_ENUMS_10,
      DataType: { ...SHARED_ENUMS_10.DataType, kINT4: 9, kFP4: 10, kE8M0: 11 },
    },
    functions: ["getInferLibVersion", "createInferRuntime_INTERNAL"],
  },
};

/** The table for a TensorRT library version as getInferLibVersion encodes it (major·10000 + minor·100 + patch). */
export function abiTableFor(libVersion: number): AbiTable | undefined {
  const major = Math.floor(libVersion / 10000);
  return (SUPPORTED_TRT_MAJORS as readonly number[]).includes(major) ? ABI_TABLES[major as TrtMajor] : undefined;
}

export function formatTrtVersion(libVersion: number): string {
  return `${Math.floor(libVersion / 10000)}.${Math.floor(libVersion / 100) % 100}.${libVersion % 100}`;
}

/** Internal consistency of one table; returns one line per problem (empty when sound). */
export function checkAbiTable(table: AbiTable): string[] {
  const problems: string[] = [];
  for (const cls of Object.keys(APIV_METHODS) as ApivClass[]) {
    const listed = Object.keys(APIV_METHODS[cls].methods);
    const slots = table.slots[cls] as Record<string, number | null>;
    for (const name of Object.keys(slots)) if (!listed.includes(name)) problems.push(`${cls}.${name}: slot for a method APIV_METHODS does not list`);
    let previous = -1;
    for (const name of listed) {
      const slot = slots[name];
      if (slot === undefined) {
        problems.push(`${cls}.${name}: no slot (use null when TensorRT ${table.major} lacks it)`);
        continue;
      }
      if (slot === null) continue;
      // apiv classes derive from VRoot, whose virtual destructor takes entries 0 and 1
      if (!Number.isInteger(slot) || slot < 2) problems.push(`${cls}.${name}: slot ${slot} is not an integer ≥ 2`);
      if (slot <= previous) problems.push(`${cls}.${name}: slot ${slot} does not follow the previous method's ${previous} (methods are listed in header order)`);
      previous = Math.max(previous, slot);
    }
    if (slots["getPImpl"] !== 2) problems.push(`${cls}.getPImpl: must be slot 2, the first method after VRoot's destructor (the self-check relies on it)`);
  }
  for (const [wrapper, info] of Object.entries(table.wrappers)) {
    if (info.vtable.join(",") !== "~complete,~deleting") problems.push(`${wrapper}: vtable must be the two destructor entries, got ${info.vtable.join(", ")}`);
    if (info.implOffset !== POINTER_BYTES) problems.push(`${wrapper}: mImpl must follow the vtable pointer (offset ${POINTER_BYTES}), got ${info.implOffset}`);
  }
  const logger = table.logger.vtable;
  for (const entry of ["log", "~complete", "~deleting"] as const) {
    if (logger.filter((e) => e === entry).length !== 1) problems.push(`ILogger vtable: needs exactly one ${entry}`);
  }
  if (logger.indexOf("~deleting") !== logger.indexOf("~complete") + 1) problems.push("ILogger vtable: the deleting destructor must follow the complete one");
  if (new Set(logger).size !== logger.length) problems.push(`ILogger vtable: repeated entries ${logger.join(", ")}`);
  const dims = table.structs.Dims64;
  if (dims.offsets["d"]! % 8 !== 0 || dims.size !== dims.offsets["d"]! + 8 * dims.maxDims) problems.push(`Dims64: size ${dims.size} does not fit d at ${dims.offsets["d"]} with ${dims.maxDims} int64 values`);
  if (!dims.triviallyCopyable) problems.push("Dims64 must be trivially copyable: it is returned by value like a C struct");
  for (const [name, values] of Object.entries(table.enums)) {
    const seen = new Set(Object.values(values));
    if (seen.size !== Object.keys(values).length) problems.push(`enum ${name}: two names share a value`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------------------------
// The probe's report and its comparison with a table (used by src/engine_build/abi_check.ts and the unit test)

/** What the probe found in one set of headers. */
export interface ProbeReport {
  version: { major: number; minor: number; patch: number };
  /** "VRuntime.getPImpl" → vtable index; "missing" when absent, "signature" when present with another type, "not-virtual". */
  slots: Map<string, number | "missing" | "signature" | "not-virtual">;
  /** "IRuntime" / "ILogger" → entries identified by calling each slot of a compiled subclass. */
  vtables: Map<string, string[]>;
  implOffsets: Map<string, number>;
  /** "Dims64.size", "Dims64.d", "Dims64.maxDims", "Dims64.trivial" → number (trivial: 1/0). */
  layouts: Map<string, number>;
  /** "DataType.kHALF" → value; "missing" when the header lacks the name. */
  enums: Map<string, number | "missing">;
  /** "getInferLibVersion" → "ok" | "signature". */
  functions: Map<string, string>;
}

export function parseProbeOutput(text: string): ProbeReport {
  const report: ProbeReport = {
    version: { major: 0, minor: 0, patch: 0 },
    slots: new Map(),
    vtables: new Map(),
    implOffsets: new Map(),
    layouts: new Map(),
    enums: new Map(),
    functions: new Map(),
  };
  let sawVersion = false;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const [kind, key, ...rest] = line.split(/\s+/);
    const value = rest.join(" ");
    if (kind === "version") {
      const [major, minor, patch] = [key, ...rest].map(Number);
      report.version = { major: major!, minor: minor!, patch: patch! };
      sawVersion = true;
    } else if (kind === "slot") {
      const byteOffset = Number(value);
      report.slots.set(key!, value === "missing" || value === "signature" || value === "not-virtual" ? value : byteOffset / POINTER_BYTES);
    } else if (kind === "vtable") {
      const [index, entry] = rest;
      const list = report.vtables.get(key!) ?? [];
      list[Number(index)] = entry!;
      report.vtables.set(key!, list);
    } else if (kind === "impl") report.implOffsets.set(key!, Number(value));
    else if (kind === "layout") report.layouts.set(key!, Number(value));
    else if (kind === "enum") report.enums.set(key!, value === "missing" ? "missing" : Number(value));
    else if (kind === "function") report.functions.set(key!, value);
    else throw new Error(`probe output: unknown line ${JSON.stringify(line)}`);
  }
  if (!sawVersion) throw new Error("probe output has no version line");
  return report;
}

export interface AbiCheckRow {
  item: string;
  expected: string;
  found: string;
  ok: boolean;
}

function row(item: string, expected: unknown, found: unknown, ok?: boolean): AbiCheckRow {
  const e = expected === null ? "absent" : String(expected);
  const f = found === undefined ? "not reported" : String(found);
  return { item, expected: e, found: f, ok: ok ?? e === f };
}

/** Compares a table with what the probe found; one row per item, `ok` false on any mismatch. */
export function compareWithProbe(table: AbiTable, report: ProbeReport): AbiCheckRow[] {
  const rows: AbiCheckRow[] = [];
  rows.push(row("TensorRT major", table.major, report.version.major));
  for (const cls of Object.keys(APIV_METHODS) as ApivClass[]) {
    for (const [name, slot] of Object.entries(table.slots[cls] as Record<string, number | null>)) {
      const found = report.slots.get(`${cls}.${name}`);
      // a method this major lacks may be absent, or present and simply unused
      rows.push(slot === null ? row(`${cls}.${name}`, "absent or unused", found, true) : row(`${cls}.${name}`, slot, found));
    }
  }
  for (const [wrapper, info] of Object.entries(table.wrappers)) {
    rows.push(row(`${wrapper} vtable`, info.vtable.join(" "), report.vtables.get(wrapper)?.join(" ")));
    rows.push(row(`${wrapper}.mImpl offset`, info.implOffset, report.implOffsets.get(wrapper)));
  }
  rows.push(row("ILogger vtable", table.logger.vtable.join(" "), report.vtables.get("ILogger")?.join(" ")));
  for (const method of Object.keys(LOGGER_METHODS) as LoggerMethod[]) {
    const index = table.logger.vtable.indexOf(method);
    const found = report.slots.get(`ILogger.${method}`);
    rows.push(index < 0 ? row(`ILogger.${method}`, null, found, found === "missing") : row(`ILogger.${method}`, index, found));
  }
  for (const [name, layout] of Object.entries(table.structs) as [StructType, StructLayout & { maxDims?: number }][]) {
    rows.push(row(`${name} size`, layout.size, report.layouts.get(`${name}.size`)));
    for (const [field, offset] of Object.entries(layout.offsets)) rows.push(row(`${name}.${field} offset`, offset, report.layouts.get(`${name}.${field}`)));
    rows.push(row(`${name} trivially copyable`, layout.triviallyCopyable ? 1 : 0, report.layouts.get(`${name}.trivial`)));
    if (layout.maxDims !== undefined) rows.push(row(`${name}::MAX_DIMS`, layout.maxDims, report.layouts.get(`${name}.maxDims`)));
  }
  for (const [name, values] of Object.entries(table.enums)) {
    for (const [member, value] of Object.entries(values)) rows.push(row(`${name}::${member}`, value, report.enums.get(`${name}.${member}`)));
  }
  for (const fn of table.functions) rows.push(row(`${fn}()`, "ok", report.functions.get(fn)));
  return rows;
}

/**
 * The probe's generated part: one macro line per checked item, from the tables above (the probe source has the
 * macros). Every item of every major is probed, so one probe serves any header version.
 */
export function probeIncludeSource(): string {
  const lines: string[] = ["// generated by src/engine_build/abi_check.ts from src/engine/tensorrt/abi.ts — do not edit"];
  for (const [cls, info] of Object.entries(APIV_METHODS)) {
    for (const [name, signature] of Object.entries(info.methods)) lines.push(`PROBE_SLOT("${cls}.${name}", ${info.cxxClass}, ${name}, ${signature});`);
  }
  for (const [name, signature] of Object.entries(LOGGER_METHODS)) lines.push(`PROBE_SLOT("ILogger.${name}", nvinfer1::ILogger, ${name}, ${signature});`);
  for (const [name, signature] of Object.entries(FREE_FUNCTIONS)) lines.push(`PROBE_FUNCTION("${name}", ${name}, ${signature});`);
  const members = new Map<EnumType, Set<string>>();
  for (const table of Object.values(ABI_TABLES)) {
    for (const [name, values] of Object.entries(table.enums) as [EnumType, Record<string, number>][]) {
      const set = members.get(name) ?? new Set<string>();
      for (const member of Object.keys(values)) set.add(member);
      members.set(name, set);
    }
  }
  for (const [name, set] of members) for (const member of set) lines.push(`PROBE_ENUM("${name}.${member}", ${ENUM_TYPES[name]}, ${member});`);
  return `${lines.join("\n")}\n`;
}

// ---------------------------------------------------------------------------------------------------------------
// The load-time self-check: before trusting a table, the runtime calls methods whose answers it knows
// (getPImpl returns the wrapper it came from; the runtime's getLogger returns our logger; a context's getEngine
// returns its engine). One wrong answer and nothing else is called through the table.

export interface SelfCheckProbe {
  /** e.g. "VRuntime.getPImpl()" */
  what: string;
  expected: bigint | null;
  actual: bigint | null;
}

/** Returns a failure message when any probe disagrees, else undefined. */
export function selfCheckFailure(table: AbiTable, libVersion: number, probes: readonly SelfCheckProbe[]): string | undefined {
  const wrong = probes.filter((p) => p.expected === null || p.actual !== p.expected);
  if (wrong.length === 0) return undefined;
  const details = wrong.map((p) => `${p.what} returned ${p.actual === null ? "null" : `0x${p.actual.toString(16)}`}, expected ${p.expected === null ? "a pointer" : `0x${p.expected.toString(16)}`}`);
  return `TensorRT ${formatTrtVersion(libVersion)} does not match the TensorRT ${table.major} vtable table (abi.ts, checked with ${table.checkedWith.join(", ")}): ${details.join("; ")}`;
}
