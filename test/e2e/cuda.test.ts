/**
 * The CUDA layer under the TensorRT backend, on a real GPU: libcudart by soname, device and pinned memory, async
 * copies host → device → device → host on streams, events across streams, compute capability from
 * cudaDeviceGetAttribute, mapped (zero-copy) pinned memory, CUDA graphs captured from a stream and the decoder's
 * step-graph policy over them, everything freed, and the cost of one FFI call and of eager work vs one graph launch.
 * Without a GPU it prints why it skipped.
 *
 * Also a plain script: `node dist/test/e2e/cuda.test.js` (scripts/gpu/cuda-check.sh runs it on a GPU machine).
 * FLORENCE_EDGE_EXPECT_CC ("9.0") and FLORENCE_EDGE_EXPECT_GPU (a name) — from nvidia-smi — are checked when set;
 * FLORENCE_EDGE_CUDA_REPORT=path writes the measured numbers as JSON.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { isFlorenceError } from "../../src/errors.ts";
import { type CudaGraphExec, CudaRuntime, type CudaStream, formatCudaVersion } from "../../src/engine/tensorrt/cuda.ts";
import { CUDA, callAsync } from "../../src/engine/tensorrt/ffi.ts";
import { StepGraphs } from "../../src/engine/tensorrt/step_graphs.ts";
import { skipGpuTests } from "../support/gpu_skips.ts";

const availability = CudaRuntime.tryOpen();
const report: Record<string, unknown> = {};

function note(key: string, value: unknown): void {
  report[key] = value;
  console.log(`cuda: ${key} = ${typeof value === "object" ? JSON.stringify(value) : String(value)}`);
}

/** A pattern no buffer starts out with: each 32-bit word is a hash of its index. */
function pattern(words: number, seed: number): Uint32Array {
  const out = new Uint32Array(words);
  for (let i = 0; i < words; i++) out[i] = Math.imul(i + seed, 2654435761) >>> 0;
  return out;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

if (!availability.ok) {
  console.log(`cuda: SKIPPED the CUDA layer tests: ${availability.reason}. They run on a machine with an NVIDIA GPU and driver (scripts/gpu/cuda-check.sh).`);
  skipGpuTests(import.meta.url, "no usable CUDA GPU here");
} else {
  const cuda = availability.cuda;
  const baseline = cuda.liveAllocations();

  test("loads libcudart by soname and reads versions and the device", () => {
    note("library", cuda.libraryPath);
    assert.match(cuda.libraryPath, /libcudart\.so\.(13|12|11\.0)$/);
    note("runtime", formatCudaVersion(cuda.runtimeVersion));
    note("driver", formatCudaVersion(cuda.driverVersion));
    assert.ok(cuda.runtimeVersion >= 11000, "CUDA runtime 11 or newer");
    assert.ok(cuda.driverVersion >= cuda.runtimeVersion, "the driver supports this runtime");
    const info = cuda.deviceInfo();
    note("device", info);
    assert.ok(info.multiprocessors > 0);
  });

  test("compute capability comes from cudaDeviceGetAttribute and matches nvidia-smi", () => {
    const cc = cuda.computeCapability();
    note("compute_capability", `${cc.major}.${cc.minor}`);
    assert.ok(cc.major >= 5 && cc.major <= 20 && cc.minor >= 0 && cc.minor <= 9, `plausible compute capability ${cc.major}.${cc.minor}`);
    const expected = process.env["FLORENCE_EDGE_EXPECT_CC"];
    if (expected) assert.is(`${cc.major}.${cc.minor}`, expected.trim(), "nvidia-smi's compute_cap");
    else console.log("cuda: FLORENCE_EDGE_EXPECT_CC not set: compute capability not compared with nvidia-smi");
    const name = process.env["FLORENCE_EDGE_EXPECT_GPU"];
    if (name) assert.is(cuda.deviceName(), name.trim(), "nvidia-smi's name");
  });

  test("host → device → device → host round trip on a stream, with offsets, is bit-exact", () => {
    const words = (1 << 20) + 37; // not a multiple of anything convenient
    const bytes = words * 4;
    const source = cuda.allocPinned(bytes);
    const back = cuda.allocPinned(bytes);
    const first = cuda.allocDevice(bytes);
    const second = cuda.allocDevice(bytes + 4096);
    const stream = cuda.createStream();
    const done = cuda.createEvent();
    try {
      const data = pattern(words, 7);
      new Uint32Array(source.buffer, 0, words).set(data);
      new Uint32Array(back.buffer, 0, words).fill(0);
      stream.copyHostToDevice(first, source, bytes);
      stream.copyDeviceToDevice(second, first, bytes, 4096, 0);
      stream.copyDeviceToHost(back, second, bytes, 0, 4096);
      done.record(stream);
      done.synchronize();
      assert.ok(done.isComplete());
      const got = new Uint32Array(back.buffer, 0, words);
      let mismatches = 0;
      for (let i = 0; i < words; i++) if (got[i] !== data[i]) mismatches++;
      assert.is(mismatches, 0, "every word came back");
      // a partial copy lands exactly where it was sent, and nothing else moves
      stream.fill(first, 0xab, 64 * 4, 100 * 4);
      stream.copyDeviceToHost(back, first, 300 * 4);
      stream.synchronize();
      const part = new Uint32Array(back.buffer, 0, 300);
      for (let i = 0; i < 300; i++) {
        const expected = i >= 100 && i < 164 ? 0xabababab : data[i]!;
        if (part[i] !== expected) assert.unreachable(`word ${i}: ${part[i]!.toString(16)} ≠ ${expected.toString(16)}`);
      }
    } finally {
      done.destroy();
      stream.destroy();
      for (const b of [source, back, first, second]) b.free();
    }
  });

  test("events order two streams; timing events measure the copies", async () => {
    const bytes = 64 << 20;
    const host = cuda.allocPinned(bytes);
    const back = cuda.allocPinned(bytes);
    const device = cuda.allocDevice(bytes);
    const upload = cuda.createStream();
    const download = cuda.createStream();
    const start = cuda.createEvent({ timing: true });
    const uploaded = cuda.createEvent({ timing: true });
    const downloaded = cuda.createEvent({ timing: true });
    try {
      const data = pattern(bytes / 4, 11);
      new Uint32Array(host.buffer).set(data);
      new Uint32Array(back.buffer).fill(0);
      start.record(upload);
      upload.copyHostToDevice(device, host, bytes);
      uploaded.record(upload);
      download.waitFor(uploaded); // without this the download could overtake the upload
      download.copyDeviceToHost(back, device, bytes);
      downloaded.record(download);
      await downloaded.synchronizeAsync();
      const got = new Uint32Array(back.buffer);
      for (let i = 0; i < got.length; i += 4099) if (got[i] !== data[i]) assert.unreachable(`word ${i} differs after the ordered copies`);
      assert.is(got[got.length - 1], data[data.length - 1]);
      const h2d = uploaded.elapsedSince(start);
      const d2h = downloaded.elapsedSince(uploaded);
      assert.ok(h2d > 0 && d2h > 0, "both copies took time");
      note("h2d_64MiB_ms", Number(h2d.toFixed(3)));
      note("h2d_GBps", Number((bytes / h2d / 1e6).toFixed(1)));
      note("d2h_GBps", Number((bytes / d2h / 1e6).toFixed(1)));
    } finally {
      for (const e of [start, uploaded, downloaded]) e.destroy();
      upload.destroy();
      download.destroy();
      for (const b of [host, back, device]) b.free();
    }
  });

  test("bad copies, freed buffers and impossible allocations give FlorenceErrors", () => {
    const small = cuda.allocDevice(256);
    const host = cuda.allocPinned(256);
    const stream = cuda.createStream();
    try {
      assert.throws(() => stream.copyHostToDevice(small, host, 512), (e: unknown) => isFlorenceError(e, "INVALID_ARGUMENT") && /512 bytes/.test((e as Error).message));
      assert.throws(() => stream.copyDeviceToHost(host, small, 16, 250), (e: unknown) => isFlorenceError(e, "INVALID_ARGUMENT"));
      assert.throws(
        () => cuda.allocDevice(2 ** 52),
        (e: unknown) => isFlorenceError(e, "ENGINE_FAILED") && /cudaMalloc/.test((e as Error).message) && /cudaErrorMemoryAllocation/.test((e as Error).message),
      );
    } finally {
      stream.destroy();
      small.free();
      host.free();
    }
    assert.throws(() => small.address, (e: unknown) => isFlorenceError(e, "DISPOSED"));
    assert.throws(() => host.buffer, (e: unknown) => isFlorenceError(e, "DISPOSED"));
    small.free(); // twice is harmless
  });

  test("per-call cost: one FFI call, a small synchronous round trip, and an async wait", async () => {
    const stream = cuda.createStream();
    const host = cuda.allocPinned(64);
    const device = cuda.allocDevice(64);
    const device2 = cuda.allocDevice(64);
    try {
      const out: [number] = [0];
      const calls = 200_000;
      const samples: number[] = [];
      for (let round = 0; round < 5; round++) {
        const t0 = performance.now();
        for (let i = 0; i < calls; i++) cuda.api.cudaGetDevice(out);
        samples.push(((performance.now() - t0) * 1000) / calls);
      }
      note("ffi_call_us", Number(median(samples).toFixed(3)));
      const queries: number[] = [];
      for (let round = 0; round < 5; round++) {
        const t0 = performance.now();
        for (let i = 0; i < 20_000; i++) stream.isIdle();
        queries.push(((performance.now() - t0) * 1000) / 20_000);
      }
      note("stream_query_us", Number(median(queries).toFixed(3)));
      const launches: number[] = [];
      for (let round = 0; round < 5; round++) {
        const t0 = performance.now();
        for (let i = 0; i < 20_000; i++) stream.copyDeviceToDevice(device2, device, 64);
        launches.push(((performance.now() - t0) * 1000) / 20_000);
        stream.synchronize();
      }
      note("memcpy_async_enqueue_us", Number(median(launches).toFixed(3)));
      const trips: number[] = [];
      for (let i = 0; i < 2000; i++) {
        const t0 = performance.now();
        stream.copyHostToDevice(device, host, 8);
        stream.copyDeviceToHost(host, device, 8);
        stream.synchronize();
        trips.push((performance.now() - t0) * 1000);
      }
      note("h2d_d2h_sync_roundtrip_us", Number(median(trips).toFixed(2)));
      const waits: number[] = [];
      for (let i = 0; i < 500; i++) {
        const t0 = performance.now();
        await stream.synchronizeAsync();
        waits.push((performance.now() - t0) * 1000);
      }
      note("async_sync_us", Number(median(waits).toFixed(2)));
      const asyncCalls: number[] = [];
      for (let i = 0; i < 500; i++) {
        const t0 = performance.now();
        await callAsync(cuda.api.cudaGetDevice, out);
        asyncCalls.push((performance.now() - t0) * 1000);
      }
      note("ffi_async_call_us", Number(median(asyncCalls).toFixed(2)));
      // a measurement, printed below with the others: a loaded machine must not fail the test
      assert.ok(samples.every(Number.isFinite), "FFI call timings were taken");
    } finally {
      stream.destroy();
      host.free();
      device.free();
      device2.free();
    }
  });

  test("mapped pinned memory: the GPU reads and writes it in place, no copy to or from the host", () => {
    assert.ok(cuda.canMapHostMemory(), "cudaDevAttrCanMapHostMemory");
    const words = 4096 + 3;
    const bytes = words * 4;
    const mapped = cuda.allocPinned(bytes, { mapped: true });
    const plain = cuda.allocPinned(bytes);
    const device = cuda.allocDevice(bytes);
    const stream = cuda.createStream();
    try {
      assert.ok(mapped.mapped && !plain.mapped);
      assert.ok(mapped.deviceAddress !== 0n);
      assert.throws(() => plain.deviceAddress, (e: unknown) => isFlorenceError(e, "INVALID_ARGUMENT") && /mapped: true/.test((e as Error).message));
      note("mapped_device_address_equals_host", mapped.deviceAddress === mapped.address);
      // host writes, the GPU reads through the device address (a device-to-device copy: no host-to-device transfer)
      const data = pattern(words, 23);
      new Uint32Array(mapped.buffer, 0, words).set(data);
      cuda.check(cuda.api.cudaMemcpyAsync(device.address, mapped.deviceAddress, bytes, CUDA.memcpyDeviceToDevice, stream.handle), "copy from mapped");
      stream.copyDeviceToHost(plain, device, bytes);
      stream.synchronize();
      const back = new Uint32Array(plain.buffer, 0, words);
      for (let i = 0; i < words; i++) if (back[i] !== data[i]) assert.unreachable(`word ${i} read through the mapping differs`);
      // the GPU writes through the device address, the host reads the same memory
      stream.fill(device, 0x5a, bytes);
      cuda.check(cuda.api.cudaMemcpyAsync(mapped.deviceAddress, device.address, bytes, CUDA.memcpyDeviceToDevice, stream.handle), "copy to mapped");
      stream.synchronize();
      const seen = new Uint32Array(mapped.buffer, 0, words);
      for (let i = 0; i < words; i++) if (seen[i] !== 0x5a5a5a5a) assert.unreachable(`word ${i} written by the GPU is not visible to the host`);
    } finally {
      stream.destroy();
      for (const b of [mapped, plain, device]) b.free();
    }
    assert.throws(() => mapped.deviceAddress, (e: unknown) => isFlorenceError(e, "DISPOSED"));
  });

  /** A decoder-like step on `stream`: ids up, two device copies standing for the engines, logits down. */
  function stepWork(stream: CudaStream, b: { ids: ReturnType<CudaRuntime["allocPinned"]>; a: ReturnType<CudaRuntime["allocDevice"]>; c: ReturnType<CudaRuntime["allocDevice"]>; out: ReturnType<CudaRuntime["allocPinned"]> }, step: number): void {
    stream.copyHostToDevice(b.a, b.ids, 64, step * 64, step * 64);
    stream.copyDeviceToDevice(b.c, b.a, 64 * (step + 1));
    stream.fill(b.c, step + 1, 4, 64 * (step + 1));
    stream.copyDeviceToHost(b.out, b.c, 64 * (step + 1) + 4);
  }

  test("CUDA graphs: capture runs nothing, every launch replays the copies and reads the inputs of that moment", () => {
    const stream = cuda.createStream();
    const b = { ids: cuda.allocPinned(64 * 8), a: cuda.allocDevice(64 * 8), c: cuda.allocDevice(64 * 9), out: cuda.allocPinned(64 * 9) };
    let exec: CudaGraphExec | undefined;
    const before = cuda.liveAllocations().graphs;
    try {
      new Uint8Array(b.out.buffer).fill(0);
      stream.fill(b.a, 0);
      stream.synchronize();
      exec = stream.capture(() => stepWork(stream, b, 2));
      assert.is(exec.nodes, 4, "four operations captured");
      assert.is(cuda.liveAllocations().graphs, before + 1);
      assert.not.ok(stream.isCapturing());
      stream.synchronize();
      assert.ok(new Uint8Array(b.out.buffer).every((v) => v === 0), "capturing ran nothing");
      for (const seed of [1, 2, 3]) {
        const ids = new Uint8Array(b.ids.buffer, 0, 64 * 8);
        for (let i = 0; i < ids.length; i++) ids[i] = (i * 7 + seed * 13) & 0xff;
        exec.launch(stream);
        stream.synchronize();
        const out = new Uint8Array(b.out.buffer, 0, 64 * 3 + 4);
        for (let i = 0; i < 64; i++) if (out[128 + i] !== ids[128 + i]) assert.unreachable(`launch ${seed}: byte ${i} of the uploaded ids differs`);
        assert.equal([...out.subarray(192, 196)], [3, 3, 3, 3], "the captured memset");
      }
    } finally {
      exec?.destroy();
      exec?.destroy(); // twice is harmless
      stream.destroy();
      for (const x of Object.values(b)) x.free();
    }
    assert.is(cuda.liveAllocations().graphs, before);
  });

  test("a capture that synchronises fails with a FlorenceError naming the call, and the stream works afterwards", () => {
    const stream = cuda.createStream();
    const host = cuda.allocPinned(256);
    const device = cuda.allocDevice(256);
    try {
      assert.throws(
        () =>
          stream.capture(() => {
            stream.copyHostToDevice(device, host, 256);
            stream.synchronize();
          }),
        (e: unknown) => isFlorenceError(e, "ENGINE_FAILED") && /cudaStreamSynchronize/.test((e as Error).message),
      );
      assert.not.ok(stream.isCapturing());
      new Uint8Array(host.buffer).fill(9);
      stream.copyHostToDevice(device, host, 256);
      new Uint8Array(host.buffer).fill(0);
      stream.copyDeviceToHost(host, device, 256);
      stream.synchronize();
      assert.ok(new Uint8Array(host.buffer).every((v) => v === 9), "the stream still copies");
      assert.is(cuda.api.cudaGetLastError(), 0, "no error left behind");
    } finally {
      stream.destroy();
      host.free();
      device.free();
    }
  });

  test("step graphs: first generation eager then captured, later generations replay, results equal; a failed capture turns graphs off", () => {
    const steps = 6;
    const run = (graphs: StepGraphs<CudaStream, CudaGraphExec>, stream: CudaStream, b: Parameters<typeof stepWork>[1], seed: number, breakAt = -1): string[] => {
      const outputs: string[] = [];
      for (let step = 0; step < steps; step++) {
        const ids = new Uint8Array(b.ids.buffer, step * 64, 64);
        for (let i = 0; i < 64; i++) ids[i] = (i + step * 31 + seed * 101) & 0xff;
        if (!graphs.replay(step)) {
          stepWork(stream, b, step);
          stream.synchronize();
          graphs.ranEagerly();
          graphs.capture(step, () => {
            stepWork(stream, b, step);
            if (step === breakAt) stream.synchronize(); // not capturable
          });
        }
        stream.synchronize();
        outputs.push(Buffer.from(new Uint8Array(b.out.buffer, 0, 64 * (step + 1) + 4)).toString("hex"));
      }
      return outputs;
    };
    const make = () => ({ ids: cuda.allocPinned(64 * 8), a: cuda.allocDevice(64 * 8), c: cuda.allocDevice(64 * 9), out: cuda.allocPinned(64 * 9) });
    const stream = cuda.createStream();
    const b = make();
    const lines: string[] = [];
    const graphs = new StepGraphs<CudaStream, CudaGraphExec>(stream, { limit: 4, enabled: true, what: "test", log: (l) => lines.push(l) });
    const broken = new StepGraphs<CudaStream, CudaGraphExec>(stream, { limit: 8, enabled: true, what: "broken", log: (l) => lines.push(l) });
    try {
      const eager = run(new StepGraphs<CudaStream, CudaGraphExec>(stream, { limit: 0, enabled: false, what: "off" }), stream, b, 5);
      assert.equal(run(graphs, stream, b, 5), eager, "first generation (eager, then captured)");
      assert.equal(graphs.stats, { replays: 0, captures: 4, eager: 6, graphs: 4, nodes: 16, disabled: undefined });
      assert.equal(run(graphs, stream, b, 5), eager, "second generation (replayed) equals eager");
      assert.equal(graphs.stats, { replays: 4, captures: 4, eager: 8, graphs: 4, nodes: 16, disabled: undefined });
      assert.not.equal(run(graphs, stream, b, 6), eager, "other ids give other outputs through the graphs");
      assert.equal(run(broken, stream, b, 5, 3), eager, "a failed capture still gives the eager results");
      const stats = broken.stats;
      assert.is(stats.graphs, 0, "graphs made before the failure are destroyed");
      assert.match(stats.disabled ?? "", /step 3.*cudaStreamSynchronize/);
      assert.is(lines.length, 1);
      assert.match(lines[0]!, /CUDA graphs off for broken/);
      assert.equal(run(broken, stream, b, 5, 3), eager, "and it keeps running eagerly");
      assert.is(broken.stats.replays, 0);
    } finally {
      graphs.dispose();
      broken.dispose();
      stream.destroy();
      for (const x of Object.values(b)) x.free();
    }
  });

  test("cost of a decoder-like step of 48 operations from JS: eager enqueue vs one graph launch", () => {
    const stream = cuda.createStream();
    const a = cuda.allocDevice(1 << 16);
    const c = cuda.allocDevice(1 << 16);
    const operations = 48; // a Florence-2-base with-past step binds 48 cache tensors; TensorRT's kernels are more
    const work = () => {
      for (let i = 0; i < operations; i++) stream.copyDeviceToDevice(i % 2 ? a : c, i % 2 ? c : a, 1024, (i * 1024) % 32768, (i * 512) % 32768);
    };
    let exec: CudaGraphExec | undefined;
    try {
      exec = stream.capture(work);
      assert.is(exec.nodes, operations);
      const eager: number[] = [];
      const graph: number[] = [];
      for (let round = 0; round < 400; round++) {
        let t0 = performance.now();
        work();
        stream.synchronize();
        eager.push((performance.now() - t0) * 1000);
        t0 = performance.now();
        exec.launch(stream);
        stream.synchronize();
        graph.push((performance.now() - t0) * 1000);
      }
      note("step48_eager_us", Number(median(eager).toFixed(1)));
      note("step48_graph_us", Number(median(graph).toFixed(1)));
      note("step48_eager_over_graph", Number((median(eager) / median(graph)).toFixed(2)));
    } finally {
      exec?.destroy();
      stream.destroy();
      a.free();
      c.free();
    }
  });

  test("everything allocated was freed", () => {
    const live = cuda.liveAllocations();
    note("live_after", live);
    assert.equal(live, baseline);
    const memory = cuda.memoryInfo();
    note("memory_MiB", { free: Math.round(memory.freeBytes / 2 ** 20), total: Math.round(memory.totalBytes / 2 ** 20) });
    assert.ok(memory.freeBytes > 0 && memory.freeBytes <= memory.totalBytes);
  });

  test.after(() => {
    const path = process.env["FLORENCE_EDGE_CUDA_REPORT"];
    if (path) writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`);
  });
}

test.run();
