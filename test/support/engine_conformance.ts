/**
 * One suite for the Engine and DecoderStep contract (src/engine/engine.ts), run against every backend: what an
 * engine declares, what a decoder returns, how beam reorders move rows, which typed errors bad input gets, and that
 * an engine refuses work after dispose(). HF reference cases run where the backend computes the real model; where
 * it cannot (the TensorRT stand-in's logits are synthetic) they are registered as skips that say why, and a backend
 * this machine cannot run has every case registered as a skip, so skips are counted, never silently missing.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { DECODER_GRAPHS, type DecoderStep, type Engine, type Graph, tensor } from "../../src/engine/engine.ts";
import { generate, resolveGenerationConfig } from "../../src/florence/generate.ts";
import { rejectsCode } from "./errors.ts";
import { seededRandom } from "./random.ts";

export interface ConformanceSubject {
  /** Suite name: "onnxruntime", "tensorrt stand-in". */
  name: string;
  /** Why this backend cannot run here (every case becomes a counted skip). */
  unavailable?: string;
  open(): Promise<Engine>;
  /** The file to pass to loadGraph for a graph name. */
  graphPath(name: string): string;
  /** Graphs a decoder needs besides the layout's decoder graphs (embed_tokens where the decoder takes embeddings). */
  extraGraphs: readonly string[];
  /** Hidden size of the encoder states the decoder takes, and an encoder length its graphs accept. */
  hidden: number;
  encoderLength: number;
  /** Token ids the decoder accepts. */
  tokenLimit: number;
  /** Runs HF reference cases through the engine (undefined: the backend cannot compute the real model, and why). */
  hf?: { cases: readonly HfCase[]; encode(engine: Engine, graphs: Map<string, Graph>, c: HfCase): Promise<{ hidden: ReturnType<typeof tensor>; mask: ReturnType<typeof tensor> }>; generationJson: Record<string, unknown> };
  hfUnavailable?: string;
}

export interface HfCase {
  id: string;
  images: string[];
  generate_kwargs: Record<string, unknown>;
  prompt_ids: number[];
  generated_ids: number[][];
}

function encoderOutputs(subject: ConformanceSubject, batch: number, seed: number) {
  const rand = seededRandom(seed);
  const e = subject.encoderLength;
  const hidden = Float32Array.from({ length: batch * e * subject.hidden }, () => rand() * 2 - 1);
  return { encoderHiddenStates: tensor("float32", [batch, e, subject.hidden], hidden), encoderAttentionMask: tensor("int64", [batch, e], new BigInt64Array(batch * e).fill(1n)) };
}

async function loadDecoderGraphs(subject: ConformanceSubject, engine: Engine): Promise<Map<string, Graph>> {
  const graphs = new Map<string, Graph>();
  for (const name of [...subject.extraGraphs, ...DECODER_GRAPHS[engine.decoderLayout(true)]]) graphs.set(name, await engine.loadGraph(name, subject.graphPath(name)));
  return graphs;
}

async function steps(decoder: DecoderStep, tokens: readonly Int32Array[], reorders: ReadonlyMap<number, Int32Array> = new Map()): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let s = 0; s < tokens.length; s++) {
    out.push(Float32Array.from(await decoder.next(tokens[s]!)));
    const reorder = reorders.get(s);
    if (reorder) await decoder.reorder(reorder);
  }
  return out;
}

function assertClose(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.is(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (!(Math.abs(a - e) <= 1e-5 * Math.max(1, Math.abs(e)))) assert.unreachable(`${what}: value ${i} is ${a}, expected ${e}`);
  }
}

/** Registers the contract's cases for one backend as a uvu suite and runs it. */
export function engineConformance(subject: ConformanceSubject): void {
  const test = suite(`engine conformance: ${subject.name}`);
  const register = (name: string, body: () => Promise<void>, skipWhy?: string) => {
    const why = subject.unavailable ?? skipWhy;
    if (why) test.skip(`${name} [SKIPPED: ${why}]`, body);
    else test(name, body);
  };

  register("declares its backend, where its decoders keep the KV cache and which decoder graphs it runs", async () => {
    const engine = await subject.open();
    try {
      assert.ok(engine.backend === "onnxruntime" || engine.backend === "tensorrt");
      assert.ok(engine.description.length > 0);
      assert.ok(engine.decoderCache === "host" || engine.decoderCache === "device");
      for (const hasMerged of [true, false]) assert.ok(DECODER_GRAPHS[engine.decoderLayout(hasMerged)], `decoderLayout(${hasMerged})`);
      assert.is(engine.decoderLayout(false), "split", "without the merged decoder only the split pair can run");
    } finally {
      await engine.dispose();
    }
  });

  register("a decoder: rows = batch × beams, logits [rows × vocab] per step, the same tokens give the same logits", async () => {
    const engine = await subject.open();
    try {
      const graphs = await loadDecoderGraphs(subject, engine);
      const tokens = [Int32Array.of(2, 2, 2, 2), Int32Array.of(5, 7, 11, 13), Int32Array.of(3, 3, 4, 4)].map((t) => t.map((v) => v % subject.tokenLimit));
      const run = async () => {
        const decoder = await engine.createDecoder({ graphs, ...encoderOutputs(subject, 2, 1), numBeams: 2 });
        try {
          assert.is(decoder.rows, 4);
          return await steps(decoder, tokens);
        } finally {
          await decoder.dispose();
        }
      };
      const first = await run();
      const vocab = first[0]!.length / 4;
      assert.ok(Number.isInteger(vocab) && vocab > 0, `logits of ${first[0]!.length} values for 4 rows`);
      for (const logits of first) assert.ok(logits.every(Number.isFinite), "finite logits");
      const second = await run();
      first.forEach((logits, s) => assertClose(second[s]!, logits, `step ${s}`));
    } finally {
      await engine.dispose();
    }
  });

  register("reorder: a row continues from the row it is given (beam search's reorder_cache); the identity changes nothing", async () => {
    const engine = await subject.open();
    try {
      const graphs = await loadDecoderGraphs(subject, engine);
      const limit = (t: Int32Array) => t.map((v) => v % subject.tokenLimit);
      const options = { graphs, ...encoderOutputs(subject, 1, 2), numBeams: 2 };
      const run = async (tokens: Int32Array[], reorders?: Map<number, Int32Array>) => {
        const decoder = await engine.createDecoder(options);
        try {
          return await steps(decoder, tokens.map(limit), reorders);
        } finally {
          await decoder.dispose();
        }
      };
      const swapped = await run([Int32Array.of(5, 9), Int32Array.of(6, 6)], new Map([[0, Int32Array.of(1, 0)]]));
      const direct = await run([Int32Array.of(9, 5), Int32Array.of(6, 6)]);
      assertClose(swapped[1]!, direct[1]!, "after reorder [1, 0] the rows continue each other's history");
      const identity = await run([Int32Array.of(5, 9), Int32Array.of(6, 6)], new Map([[0, Int32Array.of(0, 1)]]));
      const plain = await run([Int32Array.of(5, 9), Int32Array.of(6, 6)]);
      assertClose(identity[1]!, plain[1]!, "the identity reorder");
    } finally {
      await engine.dispose();
    }
  });

  register("bad input gets typed errors: beams, encoder outputs, token count, reorder rows, missing graphs, a disposed decoder", async () => {
    const engine = await subject.open();
    try {
      const graphs = await loadDecoderGraphs(subject, engine);
      const encoded = encoderOutputs(subject, 1, 3);
      await rejectsCode(engine.createDecoder({ graphs, ...encoded, numBeams: 0 }), "INVALID_ARGUMENT", /numBeams/);
      await rejectsCode(engine.createDecoder({ graphs, encoderHiddenStates: encoded.encoderHiddenStates, encoderAttentionMask: tensor("int64", [1, 1]) }), "INVALID_ARGUMENT", /encoder outputs do not fit/);
      const decoderOnly = new Map([...graphs].filter(([name]) => subject.extraGraphs.includes(name)));
      await rejectsCode(engine.createDecoder({ graphs: decoderOnly, ...encoded }), "MODEL_FILE_MISSING");
      const decoder = await engine.createDecoder({ graphs, ...encoded, numBeams: 2 });
      await rejectsCode(decoder.next(Int32Array.of(1)), "INVALID_ARGUMENT", /2 rows/);
      await decoder.next(Int32Array.of(1, 2));
      await rejectsCode(decoder.reorder(Int32Array.of(0, 2)), "INVALID_ARGUMENT", /outside/);
      await decoder.dispose();
      await decoder.dispose();
      await rejectsCode(decoder.next(Int32Array.of(1, 2)), "DISPOSED", /disposed/);
    } finally {
      await engine.dispose();
    }
  });

  register("after dispose() the engine refuses work with DISPOSED, and disposing twice is harmless", async () => {
    const engine = await subject.open();
    const graphs = await loadDecoderGraphs(subject, engine);
    await engine.dispose();
    await engine.dispose();
    const name = [...graphs.keys()][0]!;
    await rejectsCode(engine.loadGraph(name, subject.graphPath(name)), "DISPOSED", /engine was disposed/);
    await rejectsCode(engine.createDecoder({ graphs, ...encoderOutputs(subject, 1, 4) }), "DISPOSED", /engine was disposed/);
  });

  const hf = subject.hf;
  for (const c of hf?.cases ?? [{ id: "HF reference cases", generate_kwargs: {} } as HfCase]) {
    register(`HF generate through the engine's decoder: ${c.id} ${JSON.stringify(c.generate_kwargs)}`, async () => {
      const engine = await subject.open();
      try {
        const graphs = await loadDecoderGraphs(subject, engine);
        const { hidden, mask } = await hf!.encode(engine, graphs, c);
        const config = resolveGenerationConfig(hf!.generationJson, c.generate_kwargs, "generation_config.json");
        const decoder = await engine.createDecoder({ graphs, encoderHiddenStates: hidden, encoderAttentionMask: mask, numBeams: config.numBeams });
        try {
          const out = await generate(decoder, hidden.dims[0]!, config);
          assert.equal(out.sequences, c.generated_ids);
        } finally {
          await decoder.dispose();
        }
      } finally {
        await engine.dispose();
      }
    }, hf ? undefined : subject.hfUnavailable);
  }

  test.run();
}
