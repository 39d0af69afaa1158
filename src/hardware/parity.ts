/** Parity with Hugging Face on a model's reference/generate.json: which cases FP16 engines are held to, and how outputs compare. */
import { join } from "node:path";
import { isFlorenceError } from "../errors.ts";
import type { Florence2, TaskResult } from "../florence/florence2.ts";

/** The first index where two id sequences differ (the shorter length when one is a prefix of the other), or -1. */
export function firstDifference(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** An error as one line: `CODE: message` for a FlorenceError, else its message. */
export function errorText(error: unknown): string {
  return isFlorenceError(error) ? `${error.code}: ${error.message}` : error instanceof Error ? error.message : String(error);
}


/** One case of reference/generate.json (scripts/python/make_fixtures.py run_generation). */
export interface ReferenceCase {
  id: string;
  images: string[];
  task: string;
  text_input: string | null;
  generate_kwargs: Record<string, unknown>;
  generated_ids: number[][];
  text: string[];
  result: Record<string, unknown>[];
  /** Greedy cases: the smallest gap between the best and second-best processed logit over every step. */
  min_top2_margin?: number;
}

export type SkipReason = "margin" | "beam" | "no-margin";

export interface CaseSelection {
  case: ReferenceCase;
  check: boolean;
  /** Why it is skipped; undefined when checked. */
  skip: SkipReason | undefined;
  numBeams: number;
}

export interface Selection {
  cases: CaseSelection[];
  checked: number;
  skipped: Record<SkipReason, number>;
}

/**
 * Which cases FP16 engines can be held to: greedy ones whose reference top-2 margin is at least `margin` (float16
 * rounding moves logits by far less). Beam cases record no per-step margins; `all` checks every case anyway.
 * `defaultNumBeams` is the model's generation_config num_beams, for cases that do not set it.
 */
export function classifyCases(cases: readonly ReferenceCase[], options: { margin: number; all: boolean; defaultNumBeams: number }): Selection {
  const skipped: Record<SkipReason, number> = { margin: 0, beam: 0, "no-margin": 0 };
  let checked = 0;
  const out = cases.map((c): CaseSelection => {
    const beams = c.generate_kwargs["num_beams"];
    const numBeams = typeof beams === "number" ? beams : options.defaultNumBeams;
    let skip: SkipReason | undefined;
    if (!options.all) {
      if (numBeams > 1) skip = "beam";
      else if (typeof c.min_top2_margin !== "number") skip = "no-margin";
      else if (c.min_top2_margin < options.margin) skip = "margin";
    }
    if (skip) skipped[skip]++;
    else checked++;
    return { case: c, check: skip === undefined, skip, numBeams };
  });
  return { cases: out, checked, skipped };
}

export type CaseOutput = Pick<TaskResult, "generated_ids" | "text" | "result">;

export type CaseComparison =
  | { status: "exact" }
  | {
      status: "differ";
      /** Which image of the case's batch. */
      image: number;
      /** The first thing that differs, checked in this order. */
      field: "count" | "generated_ids" | "text" | "result";
      /** generated_ids: the first position that differs (the shorter length when one is a prefix). */
      tokenIndex: number | null;
      ours: unknown;
      reference: unknown;
    };

/** Ids, then text, then the parsed result, exactly, image by image. */
export function compareCase(reference: ReferenceCase, outputs: readonly CaseOutput[]): CaseComparison {
  if (outputs.length !== reference.generated_ids.length) {
    return { status: "differ", image: 0, field: "count", tokenIndex: null, ours: outputs.length, reference: reference.generated_ids.length };
  }
  for (let i = 0; i < outputs.length; i++) {
    const ours = outputs[i]!;
    const index = firstDifference(ours.generated_ids, reference.generated_ids[i]!);
    if (index >= 0) return { status: "differ", image: i, field: "generated_ids", tokenIndex: index, ours: ours.generated_ids, reference: reference.generated_ids[i] };
    if (ours.text !== reference.text[i]) return { status: "differ", image: i, field: "text", tokenIndex: null, ours: ours.text, reference: reference.text[i] };
    if (JSON.stringify(ours.result) !== JSON.stringify(reference.result[i])) return { status: "differ", image: i, field: "result", tokenIndex: null, ours: ours.result, reference: reference.result[i] };
  }
  return { status: "exact" };
}

export type CaseOutcome = CaseComparison | { status: "failed"; error: string };

export interface ParitySummary {
  exact: number;
  differ: number;
  failed: number;
  checked: number;
  skipped: Record<SkipReason, number>;
  firstDifference: ({ id: string } & Extract<CaseComparison, { status: "differ" }>) | null;
  firstFailure: { id: string; error: string } | null;
}

export function summarizeParity(selection: Selection, outcomes: readonly { id: string; outcome: CaseOutcome }[]): ParitySummary {
  const summary: ParitySummary = { exact: 0, differ: 0, failed: 0, checked: selection.checked, skipped: { ...selection.skipped }, firstDifference: null, firstFailure: null };
  for (const { id, outcome } of outcomes) {
    if (outcome.status === "exact") summary.exact++;
    else if (outcome.status === "differ") {
      summary.differ++;
      summary.firstDifference ??= { id, ...outcome };
    } else {
      summary.failed++;
      summary.firstFailure ??= { id, error: outcome.error };
    }
  }
  return summary;
}

/**
 * Runs the checked cases on a loaded model the way test/e2e/infer.test.ts does (the case's images from
 * reference/images, its generate kwargs, int coordinates) and compares each with the reference. Backend-agnostic:
 * a case that throws is a failure, and the next one still runs.
 */
export async function runParity(
  model: Pick<Florence2, "encodeImages" | "runTaskBatch">,
  modelDir: string,
  selection: Selection,
  onCase: (id: string, outcome: CaseOutcome) => void = () => {},
): Promise<{ id: string; outcome: CaseOutcome }[]> {
  const outcomes: { id: string; outcome: CaseOutcome }[] = [];
  for (const { case: c } of selection.cases.filter((x) => x.check)) {
    let outcome: CaseOutcome;
    try {
      const visions = await model.encodeImages(c.images.map((name) => join(modelDir, "reference", "images", name)));
      const results = await model.runTaskBatch(visions, { task: c.task, text: c.text_input ?? undefined }, { generation: c.generate_kwargs, postprocess: { coordinates: "int" } });
      outcome = compareCase(c, results);
    } catch (error) {
      outcome = { status: "failed", error: errorText(error) };
    }
    outcomes.push({ id: c.id, outcome });
    onCase(c.id, outcome);
  }
  return outcomes;
}

export function describeDifference(d: NonNullable<ParitySummary["firstDifference"]>): string[] {
  const where = `${d.id}${d.image > 0 ? ` image ${d.image}` : ""}`;
  if (d.field === "generated_ids") {
    return [`first difference: ${where}, generated ids from token ${d.tokenIndex}`, `    ours ${JSON.stringify(d.ours)}`, `    HF   ${JSON.stringify(d.reference)}`];
  }
  if (d.field === "count") return [`first difference: ${where}: ${String(d.ours)} results for ${String(d.reference)} images`];
  return [`first difference: ${where}, ${d.field} (the ids are equal)`, `    ours ${JSON.stringify(d.ours)}`, `    HF   ${JSON.stringify(d.reference)}`];
}
