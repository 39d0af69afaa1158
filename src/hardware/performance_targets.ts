/** The model's size and the performance targets of the issue: which applies to this GPU, and whether a timing meets it. */
import { round } from "../bench.ts";

export type TargetId = "orin-nano" | "agx-orin" | "desktop";


export interface ModelSize {
  size: "base" | "large" | "other";
  dModel: number | null;
  encoderLayers: number | null;
  decoderLayers: number | null;
  /** How the report names it: "Florence-2-base", "the tiny fixture model", … */
  label: string;
}

/** Florence-2-base is d_model 768 with 6 encoder and 6 decoder layers; -large is 1024 with 12 and 12. */
export function modelSizeOf(config: Record<string, unknown>, options: { bundledFixture?: boolean; bundledDemo?: boolean } = {}): ModelSize {
  const text = (typeof config["text_config"] === "object" && config["text_config"] !== null ? config["text_config"] : config) as Record<string, unknown>;
  const int = (key: string) => (typeof text[key] === "number" ? (text[key] as number) : null);
  const dModel = int("d_model");
  const encoderLayers = int("encoder_layers");
  const decoderLayers = int("decoder_layers");
  const size = dModel === 768 && encoderLayers === 6 && decoderLayers === 6 ? "base" : dModel === 1024 && encoderLayers === 12 && decoderLayers === 12 ? "large" : "other";
  const label =
    size === "base"
      ? "Florence-2-base"
      : size === "large"
        ? "Florence-2-large"
        : options.bundledDemo
          ? "the bundled demo model"
          : options.bundledFixture
            ? "the tiny fixture model"
            : `a model that is not Florence-2-base size (d_model ${dModel ?? "?"}, ${encoderLayers ?? "?"}+${decoderLayers ?? "?"} layers)`;
  return { size, dModel, encoderLayers, decoderLayers, label };
}

export const TARGET_TOKENS = 20;

export const TARGETS: Record<TargetId, { device: string; maxMs?: number; minSpeedupVsHf?: number; text: string }> = {
  "orin-nano": { device: "Jetson Orin Nano 8 GB", maxMs: 150, text: "≤ 150 ms end to end on a Jetson Orin Nano 8 GB" },
  "agx-orin": { device: "Jetson AGX Orin", maxMs: 50, text: "≤ 50 ms end to end on a Jetson AGX Orin" },
  desktop: { device: "desktop GPU", minSpeedupVsHf: 3, text: "≥ 3× faster than HF PyTorch FP16 on the same GPU" },
};

export interface TargetSelection {
  id: TargetId | null;
  reason: string;
}

const GiB = 2 ** 30;

/**
 * The target for a GPU: Jetsons by name ("Nano", "AGX") or, for nvidia-smi's bare "Orin (nvgpu)", by memory (an
 * Orin Nano 8 GB shows about 7.4 GiB, an AGX Orin 30 or 61 GiB); any other NVIDIA GPU is a desktop one.
 */
export function selectTarget(gpu: { name: string; memoryBytes: number | null }, override?: TargetId): TargetSelection {
  if (override) return { id: override, reason: `--target ${override}` };
  const name = gpu.name;
  const memory = gpu.memoryBytes === null ? "unknown memory" : `${(gpu.memoryBytes / GiB).toFixed(1)} GiB`;
  if (/orin/i.test(name)) {
    if (/nano/i.test(name)) return { id: "orin-nano", reason: `"${name}" is an Orin Nano` };
    if (/agx/i.test(name)) return { id: "agx-orin", reason: `"${name}" is an AGX Orin` };
    if (/\bnx\b/i.test(name)) return { id: null, reason: `no target for an Orin NX ("${name}"); pass --target to compare with one` };
    if (gpu.memoryBytes !== null && gpu.memoryBytes >= 6 * GiB && gpu.memoryBytes <= 8.5 * GiB) return { id: "orin-nano", reason: `"${name}" with ${memory}: taken for an Orin Nano 8 GB (an Orin NX 8 GB looks the same: pass --target)` };
    if (gpu.memoryBytes !== null && gpu.memoryBytes >= 28 * GiB) return { id: "agx-orin", reason: `"${name}" with ${memory}: an AGX Orin` };
    return { id: null, reason: `no target for "${name}" with ${memory} (targets: Orin Nano 8 GB, AGX Orin); pass --target to compare with one` };
  }
  if (/jetson|xavier|thor|tegra|nvgpu/i.test(name)) return { id: null, reason: `no target for "${name}" (targets: Orin Nano 8 GB, AGX Orin); pass --target to compare with one` };
  return { id: "desktop", reason: `"${name}" is a desktop GPU` };
}

export type VerdictStatus = "met" | "not met" | "not compared" | "model not base size" | "no target";

export interface Verdict {
  status: VerdictStatus;
  line: string;
  /** desktop: HF baseline ÷ our median. */
  speedup?: number;
}

export function judgeTarget(selection: TargetSelection, measured: { medianMs: number; tokens: number; model: ModelSize; hfBaselineMs?: number | undefined }): Verdict {
  if (selection.id === null) return { status: "no target", line: selection.reason };
  const target = TARGETS[selection.id];
  if (measured.model.size !== "base") {
    return { status: "model not base size", line: `timings of ${measured.model.label}; the targets are for Florence-2-base (${target.text})` };
  }
  if (measured.tokens !== TARGET_TOKENS) {
    return { status: "not compared", line: `not compared: the targets are for ${TARGET_TOKENS} generated tokens, this run generated ${measured.tokens} (--max-new-tokens ${TARGET_TOKENS})` };
  }
  const median = round(measured.medianMs);
  if (target.maxMs !== undefined) {
    const met = measured.medianMs <= target.maxMs;
    return { status: met ? "met" : "not met", line: `${met ? "met" : "not met"}: median ${median} ms ${met ? "≤" : ">"} ${target.maxMs} ms (${target.device})` };
  }
  if (measured.hfBaselineMs === undefined) {
    return { status: "not compared", line: `not compared: pass --hf-baseline-ms (HF PyTorch FP16 median on this GPU, <CAPTION>, greedy, ${TARGET_TOKENS} tokens) for the ${target.text} target` };
  }
  const speedup = round(measured.hfBaselineMs / measured.medianMs);
  const met = speedup >= target.minSpeedupVsHf!;
  return { status: met ? "met" : "not met", speedup, line: `${met ? "met" : "not met"}: ${speedup}× faster than HF (${measured.hfBaselineMs} ms ÷ ${median} ms), target ≥ ${target.minSpeedupVsHf}×` };
}
