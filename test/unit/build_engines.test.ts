/**
 * `florence-edge build-engines` (src/engine_build/) orchestration. TensorRT cannot be installed on the machine that runs these tests, so each
 * test writes STAND-INS for `trtexec` and `nvidia-smi`: small shell scripts that print the banners the real tools
 * print, record the argv they get, keep a copy of the ONNX they were given and write a fake .plan. What is checked
 * here is everything around TensorRT: the graphs handed to it (run in ONNX Runtime at the profile shapes), the flags,
 * skipping, the manifest, atomicity on failure and the TensorRT 11 path. Whether TensorRT builds and runs these
 * engines needs a GPU machine (scripts/ hardware test).
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { buildEngines, type BuildEnginesOptions } from "../../src/engine_build/build_engines.ts";
import { detectTensorRT, findTrtexec, JETPACK_TRTEXEC, parseTensorRTVersion } from "../../src/engine_build/detect.ts";
import { ENGINE_GRAPHS } from "../../src/engine_build/graphs.ts";
import { fp32Nodes, inferElementTypes, toMixedPrecision } from "../../src/engine_build/mixed_precision.ts";
import { formatCommand } from "../../src/engine_build/trtexec.ts";
import { main } from "../../src/cli.ts";
import { type Tensor, tensor } from "../../src/engine/engine.ts";
import { DataType, type ModelProto, newNode, newTensor, parseModel, type ValueInfo } from "../../src/engine/onnx/proto.ts";
import { serializeModel } from "../../src/engine/onnx/proto_writer.ts";
import { splitMergedDecoderModel } from "../../src/engine/onnx/split.ts";
import { OnnxRuntimeEngine } from "../../src/engine/onnxruntime/onnxruntime.ts";
import { isFlorenceError } from "../../src/errors.ts";
import { engineDirName, type EngineManifest, gpuKey, parseManifest } from "../../src/engine/tensorrt/manifest.ts";
import { checkManifest, engineFolderName, findEngines, type MachineInfo, readManifest } from "../../src/engine/tensorrt/runtime.ts";
import { TINY_MODEL } from "../support/paths.ts";
import { rejectsCode } from "../support/errors.ts";

console.log("build_engines: trtexec and nvidia-smi are stand-in scripts here (TensorRT cannot be installed on this machine); real builds need scripts/ on a GPU machine");

const GPU_DIR_10 = "nvidia-geforce-rtx-4090-sm89-trt10.3.0";
const LIMITS = { maxBatch: 2, maxBeams: 2, maxPrompt: 8, maxNewTokens: 6 } as const;
const IMAGE_TOKENS = 577;

interface StandIns {
  dir: string;
  trtexec: string;
  nvidiaSmi: string;
  /** Where the stand-in trtexec records each call: <n>-<graph>.argv, <graph>.onnx, <n>-<graph>.cache-lines. */
  record: string;
}

interface StandInBehaviour {
  /** What `trtexec --version` prints. */
  banner?: string;
  /** A graph whose build fails, and how. */
  fail?: { graph: string; how: "oom" | "unsupported-op" | "killed" | "no-plan" };
}

/** Writes the stand-in trtexec and nvidia-smi (POSIX sh, so that Node and Deno runs alike can spawn them). */
async function writeStandIns(behaviour: StandInBehaviour = {}): Promise<StandIns> {
  const dir = await mkdtemp(join(tmpdir(), "fe-trt-standin-"));
  const record = join(dir, "record");
  await mkdir(record);
  const banner = behaviour.banner ?? "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] [b17] # trtexec --version";
  const fail = behaviour.fail;
  const failBlock = !fail
    ? ""
    : `if [ "$graph" = "${fail.graph}" ]; then
  printf 'half-written' > "$plan"
  ${
    {
      oom: `echo "[E] [TRT] 2: [virtualMemoryBuffer.cpp::resizePhysical::140] Error Code 2: OutOfMemory (no further information)" >&2
  echo "[E] Requested amount of GPU memory (8589934592 bytes) could not be allocated" >&2
  exit 1`,
      "unsupported-op": `echo "[E] [TRT] ModelImporter.cpp:949: While parsing node number 12 [FancyOp -> \\"x\\"]:" >&2
  echo "[E] [TRT] No importer registered for op: FancyOp. Attempted to import as plugin." >&2
  echo "[E] Failed to parse onnx file" >&2
  exit 1`,
      killed: `kill -9 $$`,
      "no-plan": `rm -f "$plan"
  exit 0`,
    }[fail.how]
  }
fi
`;
  const trtexec = join(dir, "trtexec");
  await writeFile(
    trtexec,
    `#!/bin/sh
# STAND-IN for NVIDIA's trtexec, written by test/unit/build_engines.test.ts because TensorRT cannot be installed
# where the unit tests run. It records its arguments, keeps the ONNX it was given and writes a fake engine.
record='${record}'
if [ "$1" = "--version" ]; then
  echo '${banner}'
  exit 0
fi
onnx=; plan=; cache=
for arg in "$@"; do
  case "$arg" in
    --onnx=*) onnx="\${arg#--onnx=}" ;;
    --saveEngine=*) plan="\${arg#--saveEngine=}" ;;
    --timingCacheFile=*) cache="\${arg#--timingCacheFile=}" ;;
  esac
done
graph=$(basename "$plan" .plan)
n=$(ls "$record" | grep -c '\\.argv$')
printf '%s\\n' "$@" > "$record/$n-$graph.argv"
cp "$onnx" "$record/$graph.onnx"
if [ -f "$cache" ]; then wc -l < "$cache" > "$record/$n-$graph.cache-lines"; else echo 0 > "$record/$n-$graph.cache-lines"; fi
echo "[I] Building $graph"
${failBlock}printf 'FAKE ENGINE for %s built from %s bytes of ONNX\\n' "$graph" "$(wc -c < "$onnx")" > "$plan"
printf '%s\\n' "$graph" >> "$cache"
echo "&&&& PASSED TensorRT.trtexec [TensorRT v100300] # trtexec"
`,
  );
  const nvidiaSmi = join(dir, "nvidia-smi");
  await writeFile(
    nvidiaSmi,
    `#!/bin/sh
# STAND-IN for nvidia-smi (see trtexec next to it)
case "$1" in
  --query-gpu=*) echo 'NVIDIA GeForce RTX 4090, 8.9, 550.54.14' ;;
  *) echo '| NVIDIA-SMI 550.54.14              Driver Version: 550.54.14      CUDA Version: 12.4     |' ;;
esac
`,
  );
  await chmod(trtexec, 0o755);
  await chmod(nvidiaSmi, 0o755);
  return { dir, trtexec, nvidiaSmi, record };
}

interface Call {
  index: number;
  graph: string;
  argv: string[];
  cacheLinesBefore: number;
}

async function calls(standIns: StandIns): Promise<Call[]> {
  const names = (await readdir(standIns.record)).filter((n) => n.endsWith(".argv"));
  const out: Call[] = [];
  for (const name of names) {
    const m = /^(\d+)-(.+)\.argv$/.exec(name)!;
    const argv = (await readFile(join(standIns.record, name), "utf8")).trimEnd().split("\n");
    const cacheLinesBefore = Number((await readFile(join(standIns.record, `${m[1]}-${m[2]}.cache-lines`), "utf8")).trim());
    out.push({ index: Number(m[1]), graph: m[2]!, argv, cacheLinesBefore });
  }
  return out.sort((a, b) => a.index - b.index);
}

function flag(argv: readonly string[], name: string): string | undefined {
  const hit = argv.find((a) => a.startsWith(`--${name}=`));
  return hit?.slice(name.length + 3);
}

function shapes(argv: readonly string[], which: "minShapes" | "optShapes" | "maxShapes"): Map<string, number[]> {
  const spec = flag(argv, which);
  const map = new Map<string, number[]>();
  if (!spec) return map;
  for (const part of spec.split(",")) {
    const at = part.lastIndexOf(":");
    map.set(part.slice(0, at), part.slice(at + 1).split("x").map(Number));
  }
  return map;
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

async function tempOut(): Promise<string> {
  return mkdtemp(join(tmpdir(), "fe-engines-"));
}

function options(standIns: StandIns, out: string, extra: Partial<BuildEnginesOptions> = {}): BuildEnginesOptions {
  return { model: TINY_MODEL, out, trtexec: standIns.trtexec, nvidiaSmi: standIns.nvidiaSmi, ...LIMITS, log: () => undefined, heartbeatSeconds: 3600, ...extra };
}

async function snapshot(dir: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const name of (await readdir(dir)).sort()) files[name] = sha256(new Uint8Array(await readFile(join(dir, name))));
  return files;
}

/** Zero-filled feeds for a graph's inputs at the given shapes (int64 masks of ones). */
function feedsAt(model: ModelProto, dims: Map<string, number[]>): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  for (const input of model.graph!.input) {
    const name = input.name!;
    const shape = dims.get(name) ?? input.type!.tensorType!.shape!.dim.map((d) => d.dimValue!);
    const type = input.type!.tensorType!.elemType;
    if (type === DataType.INT64) feeds[name] = tensor("int64", shape, new BigInt64Array(shape.reduce((a, b) => a * b, 1)).fill(1n));
    else {
      const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
      for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37) * 0.5;
      feeds[name] = tensor("float32", shape, data);
    }
  }
  return feeds;
}

function maxAbs(t: Tensor): number {
  let m = 0;
  for (const v of t.data as Float32Array) m = Math.max(m, Math.abs(v));
  return m;
}

function maxAbsDiff(a: Tensor, b: Tensor): number {
  assert.equal([...a.dims], [...b.dims]);
  let m = 0;
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

// ---------------------------------------------------------------------------------------------------------------

test("TensorRT version from trtexec banners of 8.6, 10.x and 11.x", () => {
  assert.equal(parseTensorRTVersion("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec"), { version: "8.6.1", major: 8, minor: 6, patch: 1 });
  assert.equal(parseTensorRTVersion("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] [b17] # x")?.version, "10.3.0");
  assert.equal(parseTensorRTVersion("&&&& RUNNING TensorRT.trtexec [TensorRT v101303] [b9] # x")?.version, "10.13.3");
  assert.equal(parseTensorRTVersion("&&&& RUNNING TensorRT.trtexec [TensorRT v110300] [b99]")?.version, "11.3.0");
  assert.equal(parseTensorRTVersion("&&&& RUNNING TensorRT.trtexec [TensorRT v11.1.0.106] [b48] # trtexec")?.version, "11.1.0");
  assert.equal(parseTensorRTVersion("[I] TensorRT version: 10.16.0")?.version, "10.16.0");
  assert.is(parseTensorRTVersion("trtexec: command not found"), undefined);
  assert.is(engineDirName("Orin (nvgpu)", "8.7", "10.3.0"), "orin-sm87-trt10.3.0");
  assert.is(engineDirName("NVIDIA GeForce RTX 4090", "8.9", "10.13.3"), "nvidia-geforce-rtx-4090-sm89-trt10.13.3");
});

test("trtexec: an explicit path must exist; otherwise JetPack's path, then PATH; none is a clear error", async () => {
  const s = await writeStandIns();
  try {
    await rejectsCode(() => findTrtexec(join(s.dir, "nope")), "ENGINE_UNAVAILABLE", /nope is not an executable file.*\/usr\/src\/tensorrt\/bin\/trtexec/);
    if (!existsSync(JETPACK_TRTEXEC)) {
      assert.is(await findTrtexec(undefined, `/nonexistent:${s.dir}`), s.trtexec);
      await rejectsCode(() => findTrtexec(undefined, "/nonexistent"), "ENGINE_UNAVAILABLE", /trtexec was not found.*install TensorRT/);
    }
    // TensorRT 8.6 cannot take zero-length past inputs
    const old = await writeStandIns({ banner: "&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec" });
    await rejectsCode(() => detectTensorRT(old.trtexec), "ENGINE_UNAVAILABLE", /TensorRT 8\.6\.1 is too old/);
    await rm(old.dir, { recursive: true, force: true });
  } finally {
    await rm(s.dir, { recursive: true, force: true });
  }
});

test("TensorRT 10: five engines, manifest, profiles, FP32 layers, timing cache; the graphs given run at every profile bound", async () => {
  const s = await writeStandIns();
  const out = await tempOut();
  const engine = new OnnxRuntimeEngine({ intraOpThreads: 1 });
  try {
    const lines: string[] = [];
    const result = await buildEngines(options(s, out, { log: (l) => lines.push(l) }));
    const engineDir = join(out, "tiny-seed0", GPU_DIR_10);
    assert.is(result.engineDir, engineDir);
    assert.equal(result.built, [...ENGINE_GRAPHS]);
    assert.equal(result.skipped, []);
    assert.equal((await readdir(engineDir)).filter((f) => f.endsWith(".plan")).sort(), ENGINE_GRAPHS.map((g) => `${g}.plan`).sort());
    assert.equal((await readdir(join(out, "tiny-seed0"))).filter((n) => n.startsWith(".")), [], "no temporary folders left");
    assert.ok(lines.some((l) => l.includes("[5/5] decoder_with_past_model: built")), "progress shown");

    const recorded = await calls(s);
    assert.equal(recorded.map((c) => c.graph), [...ENGINE_GRAPHS]);
    const manifest = JSON.parse(await readFile(join(engineDir, "manifest.json"), "utf8")) as EngineManifest;
    assert.equal(manifest.tensorrt, { version: "10.3.0", major: 10, trtexec: s.trtexec });
    assert.equal(manifest.gpu, { name: "NVIDIA GeForce RTX 4090", computeCapability: "8.9", driver: "550.54.14" });
    assert.is(manifest.cuda.driver, "12.4");
    assert.is(manifest.mode, "fp16-precision-constraints");
    assert.equal(manifest.limits, { maxBatch: 2, maxBeams: 2, maxDecoderRows: 4, maxPrompt: 8, maxNewTokens: 6, imageTokens: IMAGE_TOKENS });
    assert.equal(manifest.model.precision, "fp32");

    for (const call of recorded) {
      const graph = call.graph as (typeof ENGINE_GRAPHS)[number];
      const entry = manifest.graphs[graph]!;
      const argv = call.argv;
      // paths inside the temporary folder, never the final one
      for (const name of ["onnx", "saveEngine", "timingCacheFile"]) assert.match(flag(argv, name)!, /\/\.nvidia-geforce-rtx-4090-sm89-trt10\.3\.0\.partial-\d+-\d+\//, `${graph} --${name}`);
      assert.ok(argv.includes("--fp16") && argv.includes("--skipInference") && !argv.includes("--stronglyTyped"), `${graph} flags`);
      assert.equal(entry.flags, argv.filter((a) => !/^--(onnx|saveEngine|timingCacheFile)=/.test(a)), `${graph} manifest flags = argv without paths`);

      const onnxBytes = new Uint8Array(await readFile(join(s.record, `${graph}.onnx`)));
      assert.is(entry.onnxSha256, sha256(onnxBytes), `${graph} onnx sha256`);
      assert.is(entry.planSha256, sha256(new Uint8Array(await readFile(join(engineDir, `${graph}.plan`)))), `${graph} plan sha256`);
      const sourceFile = graph.startsWith("decoder") ? "decoder_model_merged.onnx" : `${graph}.onnx`;
      const sourceBytes = new Uint8Array(await readFile(join(TINY_MODEL, "onnx", sourceFile)));
      assert.equal(entry.sources, [{ file: join("onnx", sourceFile), sha256: sha256(sourceBytes), bytes: sourceBytes.length }]);
      const model = parseModel(onnxBytes);

      // profiles: every dynamic input, with its rank; fixed dims as declared; min ≤ opt ≤ max
      const [min, opt, max] = [shapes(argv, "minShapes"), shapes(argv, "optShapes"), shapes(argv, "maxShapes")];
      for (const input of model.graph!.input) {
        const dims = input.type!.tensorType!.shape!.dim;
        if (dims.every((d) => d.dimValue !== undefined)) continue;
        const lo = min.get(input.name!)!;
        const mid = opt.get(input.name!)!;
        const hi = max.get(input.name!)!;
        assert.ok(lo && mid && hi, `${graph}: ${input.name} has a profile`);
        assert.is(lo.length, dims.length, `${graph}: ${input.name} rank`);
        dims.forEach((d, axis) => {
          if (d.dimValue !== undefined) assert.ok(lo[axis] === d.dimValue && hi[axis] === d.dimValue, `${graph}: ${input.name} axis ${axis} fixed`);
          assert.ok(lo[axis]! <= mid[axis]! && mid[axis]! <= hi[axis]!, `${graph}: ${input.name} axis ${axis} min ≤ opt ≤ max`);
        });
        assert.equal(entry.profiles[input.name!], { min: lo, opt: mid, max: hi });
      }
      const batchMax = graph === "vision_encoder" || graph === "encoder_model" ? 2 : 4;
      for (const [name, dims] of max) assert.is(dims[0], batchMax, `${graph}: ${name} batch up to ${batchMax}`);

      // FP32 layers: exactly the LayerNormalization/Softmax/Pow nodes, each addressable by "<name>*" alone
      const fp32 = model.graph!.node.filter((n) => ["LayerNormalization", "Softmax", "Pow"].includes(n.opType!)).map((n) => n.name!);
      const spec = flag(argv, "layerPrecisions");
      if (fp32.length === 0) {
        assert.is(spec, undefined, `${graph}: no precision constraints without FP32 layers`);
        assert.not.ok(argv.includes("--precisionConstraints=obey"));
      } else {
        assert.ok(argv.includes("--precisionConstraints=obey"), `${graph}: obey`);
        assert.is(flag(argv, "layerOutputTypes"), spec, `${graph}: output types follow precisions`);
        const entries = spec!.split(",").map((e) => e.split(":"));
        assert.ok(entries.every(([, p]) => p === "fp32"));
        assert.equal([...new Set(entries.map(([n]) => n!.replace(/\*$/, "")))].sort(), [...fp32].sort());
        assert.equal(entry.fp32Layers, fp32);
        const others = model.graph!.node.filter((n) => !fp32.includes(n.name!)).map((n) => n.name!);
        for (const name of fp32) {
          assert.match(name, /\.fp32$/);
          assert.not.ok(others.some((o) => o.startsWith(name)), `${name}* matches only its own layers`);
        }
      }
      assert.is(new Set(model.graph!.node.map((n) => n.name)).size, model.graph!.node.length, `${graph}: node names unique`);
    }
    const byGraph = new Map(recorded.map((c) => [c.graph, c.argv]));
    const past = shapes(byGraph.get("decoder_with_past_model")!, "minShapes");
    assert.equal(past.get("past_key_values.0.decoder.key"), [1, 4, 0, 16], "past length 0 at the minimum");
    assert.equal(shapes(byGraph.get("decoder_with_past_model")!, "maxShapes").get("past_key_values.1.decoder.value"), [4, 4, 5, 16], "past up to max-new-tokens − 1");
    assert.equal(shapes(byGraph.get("decoder_with_past_model")!, "maxShapes").get("past_key_values.1.encoder.key"), [4, 4, IMAGE_TOKENS + 8, 16]);
    assert.equal(shapes(byGraph.get("encoder_model")!, "minShapes").get("attention_mask"), [1, IMAGE_TOKENS + 1]);
    assert.equal(shapes(byGraph.get("encoder_model")!, "maxShapes").get("inputs_embeds"), [2, IMAGE_TOKENS + 8, 64]);
    assert.equal(shapes(byGraph.get("embed_tokens")!, "maxShapes").get("input_ids"), [4, 8]);
    assert.equal(shapes(byGraph.get("decoder_model")!, "maxShapes").get("inputs_embeds"), [4, 1, 64]);

    // the timing cache: one shared file per GPU and TensorRT version, handed from graph to graph
    assert.equal(recorded.map((c) => c.cacheLinesBefore), [0, 1, 2, 3, 4]);
    assert.is((await readFile(join(out, "timing-cache", `${GPU_DIR_10}.cache`), "utf8")).trim().split("\n").length, 5);

    // the graphs handed to trtexec run in ONNX Runtime at the profiles' min and max shapes
    for (const graph of ["encoder_model", "decoder_model", "decoder_with_past_model", "embed_tokens"]) {
      const model = parseModel(new Uint8Array(await readFile(join(s.record, `${graph}.onnx`))));
      const loaded = await engine.loadGraph(graph, join(s.record, `${graph}.onnx`));
      for (const which of ["minShapes", "maxShapes"] as const) {
        const outputs = await loaded.run(feedsAt(model, shapes(byGraph.get(graph)!, which)));
        for (const [name, t] of Object.entries(outputs)) assert.ok(Number.isFinite(maxAbs(t)), `${graph} ${which}: ${name} finite`);
      }
    }
    // renaming layers changed nothing: the given first-step decoder equals the exporter's decoder_model.onnx
    const given = await engine.loadGraph("given", join(s.record, "decoder_model.onnx"));
    const exported = await engine.loadGraph("exported", join(TINY_MODEL, "onnx", "decoder_model.onnx"));
    const feeds = feedsAt(parseModel(new Uint8Array(await readFile(join(s.record, "decoder_model.onnx")))), shapes(byGraph.get("decoder_model")!, "optShapes"));
    const a = await given.run(feeds);
    const b = await exported.run(feeds);
    for (const name of Object.keys(b)) assert.ok(maxAbsDiff(a[name]!, b[name]!) <= 1e-5, `decoder_model ${name}`);
  } finally {
    await engine.dispose();
    await rm(s.dir, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  }
});

test("the runtime reads what the build writes: findEngines finds the folder, the manifest passes its checks, another GPU or TensorRT is refused", async () => {
  const s = await writeStandIns();
  const out = await tempOut();
  try {
    await buildEngines(options(s, out));
    const machine: MachineInfo = { gpuName: "NVIDIA GeForce RTX 4090", computeCapability: "8.9", tensorrtVersion: "10.3.0", cudaRuntimeVersion: 12040, cudaDriverVersion: 12040, integrated: false };
    const found = await findEngines(out, "tiny-seed0", { machine });
    assert.ok(found.ok, found.ok ? "" : found.reason);
    assert.is(found.engineDir, join(out, "tiny-seed0", GPU_DIR_10));
    assert.equal(Object.keys(found.manifest.graphs).sort(), [...ENGINE_GRAPHS].sort());
    const manifest = await readManifest(found.engineDir);
    checkManifest(manifest, machine, found.engineDir);
    const refused = (other: Partial<MachineInfo>, pattern: RegExp) => {
      try {
        checkManifest(manifest, { ...machine, ...other }, found.engineDir);
        assert.unreachable("refused");
      } catch (error) {
        assert.ok(isFlorenceError(error, "ENGINE_UNAVAILABLE"), String(error));
        assert.match((error as Error).message, pattern);
        assert.match((error as Error).message, /florence-edge build-engines --model/);
      }
    };
    refused({ tensorrtVersion: "10.13.0" }, /TensorRT 10\.3\.0 \(this machine has 10\.13\.0\)/);
    refused({ computeCapability: "8.7" }, /compute capability 8\.9/);
    refused({ gpuName: "NVIDIA GeForce RTX 4080" }, /GPU NVIDIA GeForce RTX 4090/);
    const elsewhere = await findEngines(out, "tiny-seed0", { machine: { ...machine, tensorrtVersion: "10.16.0" } });
    assert.ok(!elsewhere.ok && /engines for other machines: .*trt10\.3\.0/.test(elsewhere.reason), elsewhere.ok ? "" : elsewhere.reason);
    // a damaged manifest is refused with the field named
    const path = join(found.engineDir, "manifest.json");
    const json = JSON.parse(await readFile(path, "utf8"));
    assert.throws(() => parseManifest({ ...json, schema: 2 }, path), /schema must be 1/);
    assert.throws(() => parseManifest({ ...json, tensorrt: { version: "ten" } }, path), /tensorrt\.version/);
    assert.throws(() => parseManifest({ ...json, graphs: { vision_encoder: { ...json.graphs.vision_encoder, plan: "../x.plan" } } }, path), /plan must be a file name/);
  } finally {
    await rm(s.dir, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  }
});

test("engine folder names: one GPU whether nvidia-smi or the driver names it (Jetson: \"Orin (nvgpu)\" and \"Orin\")", () => {
  assert.is(engineDirName("Orin (nvgpu)", "8.7", "10.3.0"), "orin-sm87-trt10.3.0");
  assert.is(engineFolderName({ gpuName: "Orin", computeCapability: "8.7", tensorrtVersion: "10.3.0" }), "orin-sm87-trt10.3.0");
  assert.is(engineDirName("NVIDIA GeForce RTX 4090", "8.9", "10.3.0"), GPU_DIR_10);
  assert.is(gpuKey("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
  assert.is(gpuKey("()"), "gpu");
});

test("up-to-date engines are skipped; changed flags, a damaged plan or --force rebuild exactly what they touch", async () => {
  const s = await writeStandIns();
  const out = await tempOut();
  try {
    await buildEngines(options(s, out));
    const engineDir = join(out, "tiny-seed0", GPU_DIR_10);
    const before = await snapshot(engineDir);
    const mtime = (await stat(join(engineDir, "vision_encoder.plan"))).mtimeMs;
    const lines: string[] = [];

    const again = await buildEngines(options(s, out, { log: (l) => lines.push(l) }));
    assert.equal(again.built, []);
    assert.equal(again.skipped, [...ENGINE_GRAPHS]);
    assert.is((await calls(s)).length, 5, "trtexec was not run again");
    assert.equal(await snapshot(engineDir), before);
    assert.is((await stat(join(engineDir, "vision_encoder.plan"))).mtimeMs, mtime);
    assert.ok(lines.some((l) => /all 5 engines are up to date/.test(l)));

    // a longer generation changes only the with-past decoder's profile
    const longer = await buildEngines(options(s, out, { maxNewTokens: 9 }));
    assert.equal(longer.built, ["decoder_with_past_model"]);
    assert.equal(longer.skipped, ["vision_encoder", "embed_tokens", "encoder_model", "decoder_model"]);
    const rebuilt = (await calls(s)).at(-1)!;
    assert.is(rebuilt.graph, "decoder_with_past_model");
    assert.is(rebuilt.cacheLinesBefore, 5, "the shared timing cache was reused");
    const after = await snapshot(engineDir);
    for (const g of ["vision_encoder", "embed_tokens", "encoder_model", "decoder_model"]) assert.is(after[`${g}.plan`], before[`${g}.plan`], `${g}.plan kept`);
    const manifest = JSON.parse(await readFile(join(engineDir, "manifest.json"), "utf8")) as EngineManifest;
    assert.equal(manifest.graphs.decoder_with_past_model!.profiles["past_key_values.0.decoder.key"]!.max, [4, 4, 8, 16]);
    assert.is(manifest.limits.maxNewTokens, 9);

    // a damaged plan is rebuilt
    await writeFile(join(engineDir, "encoder_model.plan"), "garbage");
    const repaired = await buildEngines(options(s, out, { maxNewTokens: 9 }));
    assert.equal(repaired.built, ["encoder_model"]);

    const forced = await buildEngines(options(s, out, { maxNewTokens: 9, force: true }));
    assert.equal(forced.built, [...ENGINE_GRAPHS]);
    assert.is((await calls(s)).length, 5 + 1 + 1 + 5);
  } finally {
    await rm(s.dir, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  }
});

test("a failed build leaves the previous engines untouched and nothing half-written, and says why", async () => {
  const good = await writeStandIns();
  const out = await tempOut();
  const dirs: string[] = [good.dir];
  try {
    await buildEngines(options(good, out));
    const engineDir = join(out, "tiny-seed0", GPU_DIR_10);
    const before = await snapshot(engineDir);

    const oom = await writeStandIns({ fail: { graph: "decoder_with_past_model", how: "oom" } });
    dirs.push(oom.dir);
    const error = await rejectsCode(() => buildEngines(options(oom, out, { force: true })), "ENGINE_FAILED", /decoder_with_past_model.*ran out of memory/s);
    assert.match(error.message, /lower --max-batch/);
    assert.equal(await snapshot(engineDir), before, "previous engines and manifest unchanged");
    const modelOut = join(out, "tiny-seed0");
    assert.equal((await readdir(modelOut)).filter((n) => n.startsWith(".")), [], "no temporary folder left");
    const failedLog = join(modelOut, `${GPU_DIR_10}.decoder_with_past_model.failed.log`);
    assert.match(await readFile(failedLog, "utf8"), /OutOfMemory/);
    assert.match(error.message, new RegExp(failedLog.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")));

    const unsupported = await writeStandIns({ fail: { graph: "vision_encoder", how: "unsupported-op" } });
    dirs.push(unsupported.dir);
    await rejectsCode(() => buildEngines(options(unsupported, out, { force: true })), "ENGINE_FAILED", /cannot build an operation of the graph \(FancyOp\)/);

    const killed = await writeStandIns({ fail: { graph: "encoder_model", how: "killed" } });
    dirs.push(killed.dir);
    await rejectsCode(() => buildEngines(options(killed, out, { force: true })), "ENGINE_FAILED", /killed by SIGKILL.*out-of-memory killer/s);

    const silent = await writeStandIns({ fail: { graph: "embed_tokens", how: "no-plan" } });
    dirs.push(silent.dir);
    await rejectsCode(() => buildEngines(options(silent, out, { force: true })), "ENGINE_FAILED", /wrote no engine for embed_tokens/);
    assert.equal(await snapshot(engineDir), before, "still unchanged after every failure");
    assert.equal((await readdir(modelOut)).filter((n) => n.startsWith(".")), []);

    // a first build that fails creates no engine folder at all
    const fresh = await tempOut();
    dirs.push(fresh);
    await rejectsCode(() => buildEngines(options(oom, fresh)), "ENGINE_FAILED", /ran out of memory/);
    assert.not.ok(existsSync(join(fresh, "tiny-seed0", GPU_DIR_10)));

    // a good build afterwards removes the failure logs
    await buildEngines(options(good, out, { force: true }));
    assert.equal((await readdir(modelOut)).filter((n) => n.endsWith(".failed.log")), []);
  } finally {
    for (const d of [...dirs, out]) await rm(d, { recursive: true, force: true });
  }
});

test("TensorRT 11: --stronglyTyped on a mixed-precision ONNX (FP16 weights, FP32 LayerNorm/Softmax/Pow, FP32 interface) that ONNX Runtime runs close to FP32", async () => {
  const s = await writeStandIns({ banner: "&&&& RUNNING TensorRT.trtexec [TensorRT v11.1.0.106] [b48] # trtexec --version" });
  const out = await tempOut();
  const engine = new OnnxRuntimeEngine({ intraOpThreads: 1 });
  try {
    const result = await buildEngines(options(s, out));
    assert.is(result.engineDir, join(out, "tiny-seed0", "nvidia-geforce-rtx-4090-sm89-trt11.1.0"));
    assert.equal(result.built, [...ENGINE_GRAPHS]);
    assert.is(result.manifest!.mode, "strongly-typed-mixed-precision");
    for (const call of await calls(s)) {
      assert.ok(call.argv.includes("--stronglyTyped"), `${call.graph}: --stronglyTyped`);
      for (const banned of ["--fp16", "--precisionConstraints=obey"]) assert.not.ok(call.argv.includes(banned), `${call.graph}: no ${banned}`);
      assert.is(flag(call.argv, "layerPrecisions"), undefined);

      const original = call.graph.startsWith("decoder")
        ? (() => {
            const split = splitMergedDecoderModel(parseModel(new Uint8Array(readFileSync(join(TINY_MODEL, "onnx", "decoder_model_merged.onnx")))));
            return call.graph === "decoder_model" ? split.firstStep : split.withPast;
          })()
        : parseModel(new Uint8Array(readFileSync(join(TINY_MODEL, "onnx", `${call.graph}.onnx`))));
      const mixedPath = join(s.record, `${call.graph}.onnx`);
      const mixed = parseModel(new Uint8Array(await readFile(mixedPath)));
      // the interface keeps its types
      const io = (m: ModelProto) => [...m.graph!.input, ...m.graph!.output].map((v) => [v.name, v.type?.tensorType?.elemType]);
      assert.equal(io(mixed), io(original), `${call.graph}: inputs and outputs unchanged`);
      // weights: FP16, except those only FP32 nodes read
      const halves = mixed.graph!.initializer.filter((t) => t.dataType === DataType.FLOAT16).length;
      const floats = mixed.graph!.initializer.filter((t) => t.dataType === DataType.FLOAT).length;
      if (call.graph !== "embed_tokens") assert.ok(halves > floats, `${call.graph}: ${halves} FP16 vs ${floats} FP32 initializers`);
      // every LayerNorm/Softmax/Pow computes in FP32
      const types = inferElementTypes(mixed.graph!);
      for (const node of mixed.graph!.node) {
        if (!["LayerNormalization", "Softmax", "Pow"].includes(node.opType!)) continue;
        assert.is(types.get(node.input[0]!), DataType.FLOAT, `${call.graph}: ${node.name} reads FP32`);
        assert.is(types.get(node.output[0]!), DataType.FLOAT, `${call.graph}: ${node.name} writes FP32`);
      }

      // ONNX Runtime runs it; outputs stay within FP16 rounding of the FP32 graph
      const originalPath = join(s.dir, `${call.graph}.fp32.onnx`);
      await writeFile(originalPath, serializeModel(original));
      const feeds = feedsAt(original, shapes(call.argv, "optShapes"));
      if (call.graph === "embed_tokens") feeds["input_ids"] = tensor("int64", [1, 1], new BigInt64Array([7n]));
      const ref = await (await engine.loadGraph(`${call.graph} fp32`, originalPath)).run(feeds);
      const got = await (await engine.loadGraph(`${call.graph} mixed`, mixedPath)).run(feeds);
      for (const name of Object.keys(ref)) {
        assert.is(got[name]!.type, "float32");
        const scale = Math.max(1, maxAbs(ref[name]!));
        assert.ok(maxAbsDiff(ref[name]!, got[name]!) <= 5e-3 * scale, `${call.graph} ${name}: |Δ| ${maxAbsDiff(ref[name]!, got[name]!)} (scale ${scale})`);
      }
    }
    // TensorRT 10 takes the same path on request
    const s10 = await writeStandIns();
    const typed = await buildEngines(options(s10, out, { stronglyTyped: true }));
    assert.is(typed.manifest!.mode, "strongly-typed-mixed-precision");
    assert.ok((await calls(s10)).every((c) => c.argv.includes("--stronglyTyped") && !c.argv.includes("--fp16")));
    await rm(s10.dir, { recursive: true, force: true });
  } finally {
    await engine.dispose();
    await rm(s.dir, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  }
});

function valueInfo(name: string, elemType: number, dims: number[]): ValueInfo {
  const dim = dims.map((d) => ({ dimValue: d, unknownFields: [], fieldOrder: [] }));
  return { name, type: { tensorType: { elemType, shape: { dim, unknownFields: [], fieldOrder: [] }, unknownFields: [], fieldOrder: [] }, unknownFields: [], fieldOrder: [] }, unknownFields: [], fieldOrder: [] };
}

test("a LayerNorm written out in primitives: its variance chain stays FP32, which is what keeps x² from overflowing FP16", async () => {
  const dir = await tempOut();
  // ONNX Runtime's LayerNormFusion would fuse the FP32 chain, the Casts and the FP16 Mul into one LayerNormalization
  // of mixed types and then refuse it; the graph itself is valid ONNX
  const engine = new OnnxRuntimeEngine({ intraOpThreads: 1, graphOptimizationLevel: "disabled" });
  try {
    const f32 = (values: number[]) => new Uint8Array(new Float32Array(values).buffer);
    const build = (): ModelProto => ({
      unknownFields: [],
      fieldOrder: [],
      irVersion: 8,
      opsetImport: [{ domain: "", version: 18, unknownFields: [], fieldOrder: [] }],
      graph: {
        unknownFields: [],
        fieldOrder: [],
        name: "decomposed_layernorm",
        node: [
          newNode("ReduceMean", ["x", "axes"], ["mean"], "ln/ReduceMean"),
          newNode("Sub", ["x", "mean"], ["centered"], "ln/Sub"),
          newNode("Pow", ["centered", "two"], ["squared"], "ln/Pow"),
          newNode("ReduceMean", ["squared", "axes"], ["variance"], "ln/ReduceMean_1"),
          newNode("Add", ["variance", "eps"], ["variance_eps"], "ln/Add"),
          newNode("Sqrt", ["variance_eps"], ["std"], "ln/Sqrt"),
          newNode("Div", ["centered", "std"], ["normalized"], "ln/Div"),
          newNode("Mul", ["normalized", "gamma"], ["scaled"], "ln/Mul"),
          newNode("Add", ["scaled", "beta"], ["y"], "ln/Add_1"),
        ],
        initializer: [
          newTensor("axes", DataType.INT64, [1], new Uint8Array(new BigInt64Array([-1n]).buffer)),
          newTensor("two", DataType.FLOAT, [], f32([2])),
          newTensor("eps", DataType.FLOAT, [], f32([1e-5])),
          newTensor("gamma", DataType.FLOAT, [8], f32([1, 0.5, 2, 1, 1, 1.5, 1, 0.25])),
          newTensor("beta", DataType.FLOAT, [8], f32([0, 0.1, 0, -0.1, 0, 0, 0.2, 0])),
        ],
        sparseInitializer: [],
        input: [valueInfo("x", DataType.FLOAT, [2, 8])],
        output: [valueInfo("y", DataType.FLOAT, [2, 8])],
        valueInfo: [],
      },
    });
    const keep = fp32Nodes(build().graph!);
    assert.equal([...keep].map((n) => n.name).sort(), ["ln/Add", "ln/Div", "ln/Pow", "ln/ReduceMean_1", "ln/Sqrt"]);

    const save = async (name: string, model: ModelProto) => {
      await writeFile(join(dir, name), serializeModel(model));
      return engine.loadGraph(name, join(dir, name));
    };
    const reference = await save("fp32.onnx", build());
    const kept = build();
    toMixedPrecision(kept, fp32Nodes(kept.graph!));
    // the chain reads and writes FP32 end to end: no FP16 Cast between Pow and the Div
    const byName = new Map(kept.graph!.node.map((n) => [n.name, n]));
    assert.equal(byName.get("ln/ReduceMean_1")!.input[0], "squared");
    assert.equal(byName.get("ln/Add")!.input[0], "variance");
    assert.equal(byName.get("ln/Sqrt")!.input[0], "variance_eps");
    assert.equal(byName.get("ln/Div")!.input[1], "std");
    const types = inferElementTypes(kept.graph!);
    for (const name of ["centered.to_fp32", "squared", "variance", "variance_eps", "std", "normalized"]) assert.is(types.get(name), DataType.FLOAT, name);
    for (const name of ["mean", "centered", "scaled", "y.fp16"]) assert.is(types.get(name), DataType.FLOAT16, name);
    const mixed = await save("mixed.onnx", kept);

    // activations of a few hundred, as after a residual stream grows: (x − mean)² exceeds FP16's largest value
    const x = new Float32Array(16);
    for (let i = 0; i < 16; i++) x[i] = (i % 8) * 90 - 300 + (i >= 8 ? 17 : 0);
    const mean = x.slice(0, 8).reduce((a, b) => a + b, 0) / 8;
    assert.ok((x[7]! - mean) ** 2 > 65504, "the test input overflows FP16 when squared");
    const feeds = { x: tensor("float32", [2, 8], x) };
    const want = (await reference.run(feeds))["y"]!;
    const got = (await mixed.run(feeds))["y"]!;
    assert.ok(maxAbsDiff(want, got) <= 1e-2, `FP32 variance chain: |Δ| ${maxAbsDiff(want, got)}`);
  } finally {
    await engine.dispose();
    await rm(dir, { recursive: true, force: true });
  }
});

test("weights in .onnx_data are read in: the graph given to trtexec is the one the all-in-one file gives, and the manifest lists the data file", async () => {
  const s = await writeStandIns();
  const out = await tempOut();
  const parent = await tempOut();
  const model = join(parent, "tiny-external");
  try {
    await mkdir(join(model, "onnx"), { recursive: true });
    for (const f of ["config.json", "generation_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json"]) await writeFile(join(model, f), await readFile(join(TINY_MODEL, f)));
    for (const g of ["vision_encoder", "embed_tokens", "decoder_model_merged"]) await writeFile(join(model, "onnx", `${g}.onnx`), await readFile(join(TINY_MODEL, "onnx", `${g}.onnx`)));
    // encoder_model with its two largest initializers moved to encoder_model.onnx_data
    const encoder = parseModel(new Uint8Array(await readFile(join(TINY_MODEL, "onnx", "encoder_model.onnx"))));
    const big = [...encoder.graph!.initializer].sort((a, b) => b.rawData!.length - a.rawData!.length).slice(0, 2);
    const chunks: Uint8Array[] = [];
    let offset = 0;
    for (const t of big) {
      const entry = (key: string, value: string) => ({ key, value, unknownFields: [], fieldOrder: [] });
      t.externalData = [entry("location", "encoder_model.onnx_data"), entry("offset", String(offset)), entry("length", String(t.rawData!.length))];
      t.dataLocation = 1;
      chunks.push(t.rawData!);
      offset += t.rawData!.length;
      delete t.rawData;
    }
    const data = Buffer.concat(chunks);
    await writeFile(join(model, "onnx", "encoder_model.onnx_data"), data);
    await writeFile(join(model, "onnx", "encoder_model.onnx"), serializeModel(parseModel(serializeModel(encoder))));

    const external = await buildEngines(options(s, out, { model }));
    const inline = await buildEngines(options(s, out));
    const a = external.manifest!.graphs.encoder_model!;
    const b = inline.manifest!.graphs.encoder_model!;
    assert.is(a.onnxSha256, b.onnxSha256, "same graph handed to trtexec");
    assert.equal(a.sources.map((x) => x.file), [join("onnx", "encoder_model.onnx"), join("onnx", "encoder_model.onnx_data")]);
    assert.is(a.sources[1]!.sha256, sha256(data));

    await rm(join(model, "onnx", "encoder_model.onnx_data"));
    await rejectsCode(() => buildEngines(options(s, out, { model, force: true })), "MODEL_FILE_MISSING", /encoder_model\.onnx_data .*cannot be read/);
  } finally {
    for (const d of [s.dir, out, parent]) await rm(d, { recursive: true, force: true });
  }
});

test("--precision fp16 builds from the _fp16 graphs with TensorRT 10; strongly typed builds need the fp32 graphs", async () => {
  const s = await writeStandIns();
  const out = await tempOut();
  try {
    const result = await buildEngines(options(s, out, { precision: "fp16" }));
    assert.equal(result.built, [...ENGINE_GRAPHS]);
    assert.is(result.manifest!.model.precision, "fp16");
    assert.equal(result.manifest!.graphs.decoder_model!.sources[0]!.file, join("onnx", "decoder_model_merged_fp16.onnx"));
    const recorded = parseModel(new Uint8Array(await readFile(join(s.record, "decoder_with_past_model.onnx"))));
    assert.is(recorded.graph!.input.find((i) => i.name === "inputs_embeds")!.type!.tensorType!.elemType, DataType.FLOAT16);
    await rejectsCode(() => buildEngines(options(s, out, { precision: "fp16", stronglyTyped: true })), "INVALID_ARGUMENT", /--precision fp16 cannot be used.*--precision fp32/s);
  } finally {
    await rm(s.dir, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  }
});

test("dry run: the commands, nothing written; works without TensorRT too", async () => {
  const s = await writeStandIns();
  const out = await tempOut();
  try {
    const result = await buildEngines(options(s, out, { dryRun: true }));
    assert.ok(result.dryRun);
    assert.equal(result.commands.map((c) => c.graph), [...ENGINE_GRAPHS]);
    assert.equal(await readdir(out), [], "nothing written");
    assert.is((await calls(s)).length, 0, "trtexec only asked for its version");
    assert.match(formatCommand(["trtexec", ...result.commands[4]!.argv]), /--minShapes=encoder_attention_mask:1x578,.*past_key_values\.0\.decoder\.key:1x4x0x16/);

    const lines: string[] = [];
    const blind = await buildEngines({ ...options(s, out, { dryRun: true, log: (l) => lines.push(l) }), trtexec: join(s.dir, "missing-trtexec") });
    assert.is(blind.commands.length, 5);
    assert.ok(lines.some((l) => /assuming TensorRT 10/.test(l)));
    assert.equal(await readdir(out), []);
  } finally {
    await rm(s.dir, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  }
});

test("bad options: clear errors naming the value", async () => {
  const s = await writeStandIns();
  const out = await tempOut();
  try {
    await rejectsCode(() => buildEngines(options(s, out, { maxBatch: 0 })), "INVALID_ARGUMENT", /--max-batch must be a positive integer, got 0/);
    await rejectsCode(() => buildEngines(options(s, out, { maxPrompt: 500 })), "INVALID_ARGUMENT", /577 image tokens \+ 500 prompt tokens exceed the encoder's 1024 positions/);
    await rejectsCode(() => buildEngines(options(s, out, { precision: "quantized" as "fp32" })), "INVALID_ARGUMENT", /--precision must be fp32 or fp16, got "quantized"/);
    await rejectsCode(() => buildEngines(options(s, out, { model: join(out, "nowhere") })), "MODEL_FILE_MISSING", /model folder not found/);
    const stderr = process.stderr.write;
    process.stderr.write = (() => true) as typeof process.stderr.write;
    try {
      assert.is(await main(["build-engines", "--model", TINY_MODEL, "--max-new-tokens", "-3"]), 2);
      assert.is(await main(["build-engines", "--modle", TINY_MODEL]), 2);
    } finally {
      process.stderr.write = stderr;
    }
  } finally {
    await rm(s.dir, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  }
});

test.run();
