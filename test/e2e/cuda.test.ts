/**
 * The CUDA layer under the TensorRT backend, on a real GPU: libcudart by soname, device and pinned memory, async
 * copies host → device → device → host on streams, events across streams, compute capability from
 * cudaDeviceGetAttribute, everything freed, and the cost of one FFI call. Without a GPU it prints why it skipped.
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
import { CudaRuntime, formatCudaVersion } from "../../src/engine/tensorrt/cuda.ts";
import { callAsync } from "../../src/engine/tensorrt/ffi.ts";

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
      assert.ok(median(samples) < 20, `an FFI call should take microseconds, took ${median(samples)} µs`);
    } finally {
      stream.destroy();
      host.free();
      device.free();
      device2.free();
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
