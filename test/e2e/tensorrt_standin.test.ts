/**
 * The TensorRT backend end to end on a real GPU, over the stand-in libnvinfer (test/support/trt_standin.ts; real
 * TensorRT cannot be installed where this project is developed): TensorRtEngine.open with a manifest for this GPU,
 * graphs loaded through the ABI table, TensorRtGraph.run with and without zero-copy, and the decoder — KV cache
 * ping-pong, beam reorders within and across batch items, workspaces kept between generations, step contexts
 * sharing one activation block, CUDA graphs captured in the first generation and replayed in later ones — checked
 * through logits that carry every row's token history. Without a GPU it prints why it skipped.
 *
 * Also a plain script: `node dist/test/e2e/tensorrt_standin.test.js` (scripts/gpu/cuda-check.sh runs it).
 * FLORENCE_EDGE_STANDIN_LIB: a prebuilt stand-in library (otherwise built with cc).
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { timedEngine } from "../../src/timing.ts";
import { tensor } from "../../src/engine/engine.ts";
import { isFlorenceError } from "../../src/errors.ts";
import { CudaRuntime } from "../../src/engine/tensorrt/cuda.ts";
import { engineDirName } from "../../src/engine/tensorrt/manifest.ts";
import { TensorRtEngine, type TensorRtOptions } from "../../src/engine/tensorrt/runtime.ts";
import type { DecoderStep } from "../../src/engine/engine.ts";
import { decoderPlans, type StandinPlan, standinOnGpu, writeStandinEngines } from "../support/trt_standin.ts";
import { rejectsCode } from "../support/errors.ts";
import { seededRandom } from "../support/random.ts";
import { skipGpuTests } from "../support/gpu_skips.ts";

const availability = CudaRuntime.tryOpen();

const MAX_ROWS = 4;
const MAX_ENCODER = 8;
const MAX_PAST = 15;
const VOCAB = 40;

if (!availability.ok) {
  console.log(`tensorrt-standin: SKIPPED: ${availability.reason}. It runs on a machine with an NVIDIA GPU and driver (scripts/gpu/cuda-check.sh).`);
  skipGpuTests(import.meta.url, "no usable CUDA GPU here");
} else {
  const cuda = availability.cuda;
  const { library, standin, machine } = standinOnGpu(cuda);
  const root = mkdtempSync(join(tmpdir(), "standin-engines-"));
  const engineDir = join(root, "model", engineDirName(machine.gpuName, machine.computeCapability, machine.tensorrtVersion));

  const writeEngines = (plans: Record<string, StandinPlan>) => writeStandinEngines(engineDir, plans, machine, "model");

  async function open(options: Partial<TensorRtOptions> = {}): Promise<TensorRtEngine> {
    return TensorRtEngine.open({ engineDir, tensorrt: { libraries: [library] }, verifyOnnx: "none", log: (line) => console.log(`tensorrt-standin: ${line}`), ...options });
  }

  const baseline = cuda.liveAllocations();

  test("opens through the ABI table and runs a graph, staged and zero-copy, bit-exact", async () => {
    writeEngines({ vision_encoder: { standin: 1, kind: "copy", memoryBytes: 256, tensors: [{ name: "x", input: true, type: "float32", shape: [-1, 3, -1, -1], profile: { min: [1, 3, 1, 1], opt: [1, 3, 8, 8], max: [2, 3, 64, 64] } }, { name: "y", input: false, type: "float32", shape: [-1, 3, -1, -1] }] } });
    for (const zeroCopy of [false, true]) {
      const engine = await open({ zeroCopy });
      try {
        assert.is(engine.stats().zeroCopy, zeroCopy);
        const graph = await engine.loadGraph("vision_encoder", join(engineDir, "vision_encoder.plan"));
        assert.equal(graph.inputs.map((i) => i.name), ["x"]);
        for (const [n, h] of [[1, 8], [2, 64], [1, 5]] as const) {
          const data = Float32Array.from({ length: n * 3 * h * h }, (_, i) => Math.sin(i + h));
          const out = await graph.run({ x: tensor("float32", [n, 3, h, h], data) });
          assert.equal(out["y"]!.dims, [n, 3, h, h]);
          assert.equal(Buffer.from((out["y"]!.data as Float32Array).buffer), Buffer.from(data.buffer), `[${n}, 3, ${h}, ${h}] zeroCopy=${zeroCopy}`);
        }
        await rejectsCode(graph.run({ x: tensor("float32", [3, 3, 8, 8]) }), "ENGINE_INPUT_INVALID", /no optimization profile/);
      } finally {
        await engine.dispose();
      }
    }
    assert.equal(standin.stats.refused, []);
  });

  interface Generation {
    batch: number;
    beams: number;
    encoder: number;
    steps: number;
    seed: number;
  }

  /**
   * Runs one generation through the decoder with random tokens and random reorders, checking every step's logits
   * against the histories kept here. Returns the logits of all steps, for comparing configurations.
   */
  async function generate(engine: Pick<TensorRtEngine, "createDecoder">, graphs: Record<string, unknown>, g: Generation): Promise<string> {
    const rows = g.batch * g.beams;
    const rand = seededRandom(g.seed);
    const hidden = new Float32Array(g.batch * g.encoder * 2);
    const hiddenWords = new BigInt64Array(hidden.buffer);
    const crossMark: bigint[] = [];
    for (let b = 0; b < g.batch; b++) {
      crossMark.push(BigInt(1000 * (b + 1) + g.seed));
      for (let e = 0; e < g.encoder; e++) hiddenWords[b * g.encoder + e] = e === 0 ? crossMark[b]! : BigInt(e);
    }
    const mask = new BigInt64Array(g.batch * g.encoder).fill(1n);
    const decoder: DecoderStep = await engine.createDecoder({
      graphs: graphs as never,
      encoderHiddenStates: tensor("float32", [g.batch, g.encoder, 2], hidden),
      encoderAttentionMask: tensor("int64", [g.batch, g.encoder], mask),
      numBeams: g.beams,
    });
    const history: bigint[][] = Array.from({ length: rows }, () => []);
    const cross = Array.from({ length: rows }, (_, r) => crossMark[Math.floor(r / g.beams)]!);
    const seen: string[] = [];
    try {
      for (let step = 0; step < g.steps; step++) {
        const tokens = Int32Array.from({ length: rows }, () => 1 + Math.floor(rand() * 50000));
        const logits = await decoder.next(tokens);
        tokens.forEach((t, r) => history[r]!.push(BigInt(t)));
        const words = new BigInt64Array(logits.buffer, logits.byteOffset, logits.length / 2);
        for (let r = 0; r < rows; r++) {
          const row = words.subarray((r * VOCAB) / 2, ((r + 1) * VOCAB) / 2);
          const expected = [...history[r]!, ...Array<bigint>(VOCAB / 2 - 1 - history[r]!.length).fill(0n), cross[r]!];
          if (row.join() !== expected.join()) assert.unreachable(`step ${step} row ${r}: logits carry [${row.join()}], expected [${expected.join()}]`);
        }
        seen.push(words.join());
        if (step + 1 < g.steps && g.beams > 1) {
          // beams move: within items most of the time, across items now and then
          const across = rand() < 0.3;
          const indices = Int32Array.from({ length: rows }, (_, r) => (across ? Math.floor(rand() * rows) : Math.floor(r / g.beams) * g.beams + Math.floor(rand() * g.beams)));
          await decoder.reorder(indices);
          const old = history.map((h) => [...h]);
          const oldCross = [...cross];
          for (let r = 0; r < rows; r++) {
            history[r] = [...old[indices[r]!]!];
            cross[r] = oldCross[indices[r]!]!;
          }
        }
      }
    } finally {
      await decoder.dispose();
    }
    return seen.join("|");
  }

  async function decoderEngine(embed: boolean, options: Partial<TensorRtOptions>): Promise<{ engine: TensorRtEngine; graphs: Record<string, unknown> }> {
    const plans = decoderPlans({ maxRows: MAX_ROWS, maxEncoder: MAX_ENCODER, maxPast: MAX_PAST, vocab: VOCAB, embed });
    writeEngines(plans);
    const engine = await open(options);
    const graphs: Record<string, unknown> = {};
    for (const name of Object.keys(plans)) graphs[name] = await engine.loadGraph(name, join(engineDir, `${name}.plan`));
    return { engine, graphs };
  }

  const GENERATIONS: Generation[] = [
    { batch: 2, beams: 2, encoder: 5, steps: 10, seed: 1 },
    { batch: 2, beams: 2, encoder: 5, steps: 10, seed: 2 }, // same geometry: the workspace and its graphs again
    { batch: 1, beams: 3, encoder: 7, steps: 9, seed: 3 }, // another geometry: a second workspace
    { batch: 2, beams: 2, encoder: 5, steps: 12, seed: 4 }, // back to the first, and past its captured steps
    { batch: 1, beams: 1, encoder: 8, steps: 15, seed: 5 }, // greedy, the profile's longest past: a third workspace, the first dropped
    { batch: 2, beams: 2, encoder: 5, steps: 10, seed: 6 },
  ];

  for (const embed of [false, true]) {
    test(`decoder (${embed ? "embed_tokens + inputs_embeds" : "input_ids"}): every row's history survives steps, reorders, workspaces and CUDA graph replays; graphs on, off and zero-copy agree`, async () => {
      const runs: Record<string, string[]> = {};
      for (const [label, options] of [
        ["graphs", { cudaGraphs: { steps: 6 }, workspaces: 2 }],
        ["eager", { cudaGraphs: false as const, workspaces: 0 }],
        ["graphs+zero-copy", { cudaGraphs: { steps: 6 }, zeroCopy: true, workspaces: 2 }],
      ] as const) {
        const before = { ...standin.stats.captured };
        const { engine, graphs } = await decoderEngine(embed, options);
        try {
          runs[label] = [];
          for (const g of GENERATIONS) runs[label]!.push(await generate(engine, graphs, g));
          const stats = engine.stats().decoder;
          const steps = GENERATIONS.reduce((a, g) => a + g.steps, 0);
          assert.is(stats.generations, GENERATIONS.length);
          assert.is(stats.steps, steps);
          if (label === "eager") {
            assert.equal([stats.captures, stats.replays, stats.eager], [0, 0, steps]);
            assert.equal(standin.stats.captured, before, "nothing captured");
          } else {
            // seeds 1, 3 and 5 open workspaces (6 graphs each); 2, 4 and 6 replay seed 1's; seed 5 drops seed 3's workspace (limit 2)
            assert.equal([stats.captures, stats.replays], [18, 18], JSON.stringify(stats));
            assert.is(stats.eager, steps - 18);
            assert.equal(stats.disabled, []);
            assert.is(stats.workspaces, 2);
            assert.is(stats.graphs, 12);
          }
        } finally {
          await engine.dispose();
        }
      }
      assert.equal(runs["graphs"], runs["eager"], "graphs replay what eager steps compute");
      assert.equal(runs["graphs+zero-copy"], runs["eager"], "zero-copy gives the same logits");
      assert.equal(standin.stats.refused, [], "the stand-in refused nothing (addresses, shapes, memory, capture after an eager run)");
    });
  }

  test("a generation longer than the engines' profile stops with the rebuild hint; a busy graph is refused to a second decoder", async () => {
    const { engine, graphs } = await decoderEngine(false, {});
    try {
      const decoder = await engine.createDecoder({ graphs: graphs as never, encoderHiddenStates: tensor("float32", [1, 4, 2]), encoderAttentionMask: tensor("int64", [1, 4], new BigInt64Array(4).fill(1n)) });
      await rejectsCode(engine.createDecoder({ graphs: graphs as never, encoderHiddenStates: tensor("float32", [1, 4, 2]), encoderAttentionMask: tensor("int64", [1, 4]) }), "ENGINE_FAILED", /in use by another decoder/);
      let error: unknown;
      try {
        for (let step = 0; step < MAX_PAST + 2; step++) await decoder.next(Int32Array.of(7));
      } catch (e) {
        error = e;
      }
      assert.ok(isFlorenceError(error, "ENGINE_INPUT_INVALID") && /15 past positions/.test((error as Error).message) && /florence-edge build-engines/.test(error.fix ?? ""), String(error));
      await decoder.dispose();
      await rejectsCode(decoder.next(Int32Array.of(1)), "DISPOSED", /disposed/);
    } finally {
      await engine.dispose();
    }
  });

  test("the benchmark's timed engine keeps the TensorRT decoder (given the engine's own graphs) and its statistics", async () => {
    const plans = decoderPlans({ maxRows: MAX_ROWS, maxEncoder: MAX_ENCODER, maxPast: MAX_PAST, vocab: VOCAB, embed: true });
    writeEngines(plans);
    const inner = await open();
    try {
      const timed = timedEngine(inner);
      const engine = timed.engine as unknown as Pick<TensorRtEngine, "createDecoder" | "stats">;
      const graphs: Record<string, unknown> = {};
      for (const name of Object.keys(plans)) graphs[name] = await timed.engine.loadGraph(name, join(engineDir, `${name}.plan`));
      assert.type(engine.createDecoder, "function");
      const g = { batch: 1, beams: 2, encoder: 6, steps: 5, seed: 9 };
      await generate(engine, graphs, g);
      assert.is(inner.stats().decoder.generations, 1, "the TensorRT decoder ran");
      assert.equal(engine.stats(), inner.stats());
      const runs = timed.takeByGraph();
      assert.is(runs["decoder_step"]?.runs, g.steps + (g.steps - 1), "every step and reorder timed");
    } finally {
      await inner.dispose();
    }
  });

  test("everything is freed: CUDA allocations and graphs, TensorRT objects", () => {
    assert.equal(cuda.liveAllocations(), baseline);
    assert.is(standin.liveObjects, 0, "runtime, engines and contexts destroyed");
    const { contexts, engines } = standin.stats;
    assert.is(contexts.created, contexts.destroyed);
    assert.is(engines.created, engines.destroyed);
    assert.ok(contexts.userManaged > 0, "step contexts were used");
    console.log(`tensorrt-standin: ${engines.created} engines, ${contexts.created} contexts (${contexts.userManaged} per step), enqueues ${JSON.stringify(standin.enqueued)}`);
  });
}

test.run();
