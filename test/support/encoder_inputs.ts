/**
 * HF's encoder input for a reference case, built from the fixtures alone: the exact uint8 image HF's pixel_values
 * are an affine map of (reference/pixels/NAME.default.png) → vision_encoder → image features; the prompt ids → embed_tokens;
 * [features, prompt embeds] → encoder_model with an all-ones mask. Independent of the library's preprocessing.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { type Engine, type Graph, int64Tensor, type Tensor, tensor } from "../../src/engine/engine.ts";
import { REFERENCE, TINY_MODEL } from "./paths.ts";

interface Normalization {
  mean: number[];
  std: number[];
  rescale: number;
  height: number;
  width: number;
}

function readNormalization(modelDir: string): Normalization {
  const processor = JSON.parse(readFileSync(join(modelDir, "processor_config.json"), "utf8")) as { image_processor: Record<string, unknown> };
  const p = processor.image_processor;
  const size = p["size"] as { height: number; width: number };
  return { mean: p["image_mean"] as number[], std: p["image_std"] as number[], rescale: p["rescale_factor"] as number, height: size.height, width: size.width };
}

export interface EncoderOutput {
  /** last_hidden_state [batch, E, D] */
  hiddenStates: Tensor;
  /** int64 ones [batch, E] */
  attentionMask: Tensor;
}

export class ReferenceEncoder {
  readonly graphs: Map<string, Graph>;
  readonly #norm: Normalization;
  readonly #features = new Map<string, Tensor>();

  private constructor(graphs: Map<string, Graph>, norm: Normalization) {
    this.graphs = graphs;
    this.#norm = norm;
  }

  /** Loads vision_encoder, embed_tokens, encoder_model and the given decoder graphs from the tiny fixture model. */
  static async load(engine: Engine, decoderGraphs: readonly string[], modelDir = TINY_MODEL): Promise<ReferenceEncoder> {
    const graphs = new Map<string, Graph>();
    for (const name of ["vision_encoder", "embed_tokens", "encoder_model", ...decoderGraphs]) {
      graphs.set(name, await engine.loadGraph(name, join(modelDir, "onnx", `${name}.onnx`)));
    }
    return new ReferenceEncoder(graphs, readNormalization(modelDir));
  }

  /** HF pixel_values for one reference image: (u8 · rescale − mean[c]) / std[c], float32, CHW. */
  async pixelValues(image: string): Promise<Float32Array> {
    const { mean, std, rescale, height, width } = this.#norm;
    const { data, info } = await sharp(join(REFERENCE, "pixels", `${image}.default.png`)).raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || info.width !== width || info.height !== height) {
      throw new Error(`${image}.default.png is ${info.width}×${info.height}×${info.channels}, expected ${width}×${height}×3`);
    }
    const plane = width * height;
    const out = new Float32Array(3 * plane);
    for (let i = 0; i < plane; i++) {
      for (let c = 0; c < 3; c++) {
        out[c * plane + i] = Math.fround(Math.fround(Math.fround(data[i * 3 + c]! * rescale) - mean[c]!) / std[c]!);
      }
    }
    return out;
  }

  async imageFeatures(image: string): Promise<Tensor> {
    let features = this.#features.get(image);
    if (!features) {
      const { height, width } = this.#norm;
      const out = await this.graphs.get("vision_encoder")!.run({ pixel_values: tensor("float32", [1, 3, height, width], await this.pixelValues(image)) });
      features = out["image_features"]!;
      this.#features.set(image, features);
    }
    return features;
  }

  /** The encoder's output for a batch of images sharing one prompt (HF's processor repeats the prompt per image). */
  async encode(images: readonly string[], promptIds: readonly number[]): Promise<EncoderOutput> {
    const embedded = (await this.graphs.get("embed_tokens")!.run({ input_ids: int64Tensor([1, promptIds.length], promptIds) }))["inputs_embeds"]!;
    const prompt = embedded.data as Float32Array;
    const rows: Float32Array[] = [];
    let length = 0;
    let dim = 0;
    for (const image of images) {
      const features = await this.imageFeatures(image);
      const [, count, d] = features.dims as [number, number, number];
      dim = d;
      length = count + promptIds.length;
      const row = new Float32Array(length * d);
      row.set(features.data as Float32Array, 0);
      row.set(prompt, count * d);
      rows.push(row);
    }
    const input = new Float32Array(images.length * length * dim);
    rows.forEach((row, i) => input.set(row, i * length * dim));
    const attentionMask = int64Tensor([images.length, length], new Array<number>(images.length * length).fill(1));
    const encoded = await this.graphs.get("encoder_model")!.run({ inputs_embeds: tensor("float32", [images.length, length, dim], input), attention_mask: attentionMask });
    return { hiddenStates: encoded["last_hidden_state"]!, attentionMask };
  }

  async dispose(): Promise<void> {
    await Promise.all([...this.graphs.values()].map((g) => g.dispose()));
    this.graphs.clear();
  }
}
