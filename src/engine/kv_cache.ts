/**
 * How the decoder's KV cache is named in the onnx-community layout, and the checks every decoder makes before it
 * allocates anything. The decoder contract itself (DecoderStep, DecoderOptions) is part of the seam in engine.ts.
 */
import { FlorenceError } from "../errors.ts";
import type { DecoderGraphs, DecoderOptions, Graph } from "./engine.ts";

export function graphNamed(graphs: DecoderGraphs, name: string): Graph | undefined {
  return graphs instanceof Map ? graphs.get(name) : (graphs as Readonly<Partial<Record<string, Graph>>>)[name];
}

// KV cache naming (onnx-community export): the decoder reads past_key_values.<layer>.<decoder|encoder>.<key|value>
// and returns present.<layer>.<…>; "decoder" is self-attention (grows each step), "encoder" cross-attention (fixed).

/** past_key_values.<layer>.<decoder|encoder>.<key|value>: groups layer, attention and key/value. */
export const PAST_KEY_VALUES = /^past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)$/;
/** present.<layer>.<decoder|encoder>.<key|value>: groups layer, attention and key/value. */
export const PRESENT = /^present\.(\d+)\.(decoder|encoder)\.(key|value)$/;
/** The self-attention cache a step reads: what tells a with-past decoder from a first-step one. */
export const PAST_SELF_ATTENTION = /^past_key_values\.\d+\.decoder\.(key|value)$/;
/** Cross-attention presents: after the first step a merged decoder returns placeholders for them. */
export const PRESENT_CROSS_ATTENTION = /^present\.\d+\.encoder\.(key|value)$/;

/** The past input a present output feeds on the next step (present.3.decoder.key → past_key_values.3.decoder.key). */
export function pastNameFor(present: string): string {
  return present.replace(/^present\./, "past_key_values.");
}

/**
 * Checks what every decoder checks before it allocates anything: numBeams and the encoder outputs. Returns the
 * rows (batch × beams) and beams.
 */
export function decoderGeometry(options: DecoderOptions): { rows: number; numBeams: number } {
  const numBeams = options.numBeams ?? 1;
  if (!Number.isInteger(numBeams) || numBeams < 1) {
    throw new FlorenceError("INVALID_ARGUMENT", `numBeams must be a positive integer, got ${numBeams}`);
  }
  const hidden = options.encoderHiddenStates;
  const mask = options.encoderAttentionMask;
  if (hidden.dims.length !== 3 || mask.dims.length !== 2 || mask.dims[0] !== hidden.dims[0] || mask.dims[1] !== hidden.dims[1] || mask.type !== "int64") {
    throw new FlorenceError(
      "INVALID_ARGUMENT",
      `encoder outputs do not fit together: hidden states ${hidden.type}[${hidden.dims.join(", ")}], attention mask ${mask.type}[${mask.dims.join(", ")}]`,
      { fix: "pass the encoder's last_hidden_state [batch, E, D] and its int64 attention mask [batch, E]" },
    );
  }
  return { rows: hidden.dims[0]! * numBeams, numBeams };
}
