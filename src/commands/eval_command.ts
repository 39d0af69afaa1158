/** `florence-edge eval`: a model's figures on fresh held-out images of the shapes world, per task. */
import process from "node:process";
import { type Command, type FlagSpec, parseFlags } from "../cli_args.ts";
import { readEnvironment } from "../config.ts";
import type { Precision } from "../florence/model_files.ts";
import { loadFlorence } from "../mod.ts";
import { demoModelDir } from "../paths.ts";
import { type EvalReport, compareReports, evaluateWorld, formatReport } from "../world/evaluate.ts";
import { loadWorldFont } from "../world/font.ts";
import { MODEL_FLAGS } from "./model_flags.ts";

const EVAL_FLAGS: Record<string, FlagSpec> = {
  model: { kind: "string", help: "model folder (default: the bundled demo model)" },
  precision: { ...MODEL_FLAGS["precision"]!, kind: "strings", help: "which onnx/*.onnx files (default fp32); repeat to compare precisions side by side, e.g. --precision fp32 --precision fp16 --precision quantized" },
  backend: MODEL_FLAGS["backend"]!,
  threads: MODEL_FLAGS["threads"]!,
  images: { kind: "int", min: 1, max: 100000, help: "held-out images to draw (default 100)" },
  seed: { kind: "int", min: 0, max: 999999, help: "held-out seed; images come from world seed 1,000,000 + S, never used in training (default 0)" },
  json: { kind: "boolean", help: "print the report as one JSON object" },
  check: { kind: "boolean", help: "exit 1 when a figure misses its goal (for scripts and CI)" },
};

/** A one-line progress bar on a terminal; a line every 10 % elsewhere. */
export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr): (done: number, total: number) => void {
  let lastDecile = -1;
  const started = performance.now();
  return (done, total) => {
    const eta = ((performance.now() - started) / done) * (total - done) / 1000;
    if (stream.isTTY) {
      const width = 30;
      const filled = Math.round((done / total) * width);
      stream.write(`\r${label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${done}/${total} eta ${eta.toFixed(0)}s${done === total ? "\n" : ""}`);
    } else if (Math.floor((done / total) * 10) > lastDecile) {
      lastDecile = Math.floor((done / total) * 10);
      stream.write(`${label}: ${done}/${total}\n`);
    }
  };
}

async function evaluatePrecision(model: string, precision: Precision, flags: Record<string, unknown>): Promise<EvalReport> {
  const florence = await loadFlorence(model, {
    env: readEnvironment(),
    precision,
    backend: (flags["backend"] as "auto" | "onnxruntime" | "tensorrt" | undefined) ?? "auto",
    ...(flags["threads"] !== undefined ? { threads: flags["threads"] as number } : {}),
  });
  try {
    return await evaluateWorld(florence, loadWorldFont(), {
      images: (flags["images"] as number | undefined) ?? 100,
      seed: (flags["seed"] as number | undefined) ?? 0,
      onProgress: progressBar(`eval ${precision}`),
    });
  } finally {
    await florence.dispose();
  }
}

async function run(argv: readonly string[]): Promise<number> {
  const { flags } = parseFlags("eval", argv, EVAL_FLAGS);
  const model = (flags["model"] as string | undefined) ?? demoModelDir();
  const precisions = [...new Set<Precision>((flags["precision"] as Precision[] | undefined) ?? ["fp32"])];
  const reports: { precision: Precision; report: EvalReport }[] = [];
  for (const precision of precisions) {
    const report = await evaluatePrecision(model, precision, flags);
    reports.push({ precision, report });
    if (flags["json"]) process.stdout.write(`${JSON.stringify({ model, precision, ...report })}\n`);
    else process.stdout.write(`${formatReport(report, `${model} (${precision})`)}\n`);
  }
  if (reports.length > 1 && !flags["json"]) process.stdout.write(`\n${compareReports(reports)}\n`);
  return flags["check"] === true && reports.some(({ report }) => !report.passed) ? 1 : 0;
}

export const evalCommand: Command = { summary: "a model's per-task figures on fresh held-out images of the shapes world", flags: EVAL_FLAGS, run };
