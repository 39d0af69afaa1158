/** `florence-edge infer`: tasks on one image, one vision pass. */
import process from "node:process";
import { type Command, parseFlags, requireFlag } from "../cli_args.ts";
import { readEnvironment } from "../config.ts";
import { FlorenceError } from "../errors.ts";
import type { TaskResult } from "../florence/florence2.ts";
import { loadFlorence } from "../mod.ts";
import { generateOptions, MODEL_FLAGS, openOptions, TASK_FLAGS } from "./model_flags.ts";

const FLAGS = { ...MODEL_FLAGS, ...TASK_FLAGS };

function printResults(results: TaskResult[], json: boolean): void {
  if (json) {
    const out = results.map((r) => ({ task: r.task, ...(r.text_input !== undefined ? { text_input: r.text_input } : {}), text: r.text, generated_ids: r.generated_ids, result: r.result, image_size: r.image_size, timings_ms: r.timings_ms }));
    process.stdout.write(`${JSON.stringify(out.length === 1 ? out[0] : out)}\n`);
    return;
  }
  for (const r of results) {
    process.stdout.write(`${r.task}${r.text_input ? ` ${JSON.stringify(r.text_input)}` : ""}  (${r.timings_ms.total_ms.toFixed(1)} ms)\n`);
    process.stdout.write(`  ${JSON.stringify(r.result[r.task] ?? r.result)}\n`);
  }
}

async function run(argv: readonly string[]): Promise<number> {
  const { flags } = parseFlags("infer", argv, FLAGS);
  const modelArg = requireFlag<string>("infer", flags, "model", "--model ./Florence-2-base-ft");
  const image = requireFlag<string>("infer", flags, "image", "--image photo.jpg");
  const tasks = (flags["task"] as string[] | undefined) ?? [];
  if (tasks.length === 0) throw new FlorenceError("INVALID_ARGUMENT", "infer: --task is required", { fix: 'e.g. --task "<OD>"' });
  const model = await loadFlorence(modelArg, openOptions(flags, readEnvironment()));
  try {
    const requests = tasks.map((task) => ({ task, text: flags["text"] as string | undefined }));
    printResults(await model.infer(image, requests, generateOptions(flags)), flags["json"] === true);
  } finally {
    await model.dispose(); // and the engine it owns
  }
  return 0;
}

export const inferCommand: Command = { summary: "run tasks on one image", flags: FLAGS, run };
