/** `florence-edge bench`: the pipeline timed warm in one process (src/bench.ts). */
import process from "node:process";
import { runBench } from "../bench.ts";
import { type Command, type FlagSpec, parseFlags, requireFlag } from "../cli_args.ts";
import { readEnvironment } from "../config.ts";
import { generateOptions, MODEL_FLAGS, openOptions, TASK_FLAGS } from "./model_flags.ts";

const FLAGS: Record<string, FlagSpec> = {
  ...MODEL_FLAGS,
  ...TASK_FLAGS,
  runs: { kind: "int", min: 1, max: 100000, help: "timed runs after one warm-up (default 10)" },
  warmup: { kind: "int", min: 0, max: 1000, help: "warm-up runs (default 2)" },
};

async function run(argv: readonly string[]): Promise<number> {
  const { flags } = parseFlags("bench", argv, FLAGS);
  const modelArg = requireFlag<string>("bench", flags, "model", "--model ./Florence-2-base-ft");
  const image = requireFlag<string>("bench", flags, "image", "--image photo.jpg");
  const report = await runBench({
    model: modelArg,
    image,
    tasks: (flags["task"] as string[] | undefined) ?? ["<CAPTION>"],
    text: flags["text"] as string | undefined,
    runs: (flags["runs"] as number | undefined) ?? 10,
    warmup: (flags["warmup"] as number | undefined) ?? 2,
    generate: generateOptions(flags),
    load: openOptions(flags, readEnvironment()),
  });
  process.stdout.write(flags["json"] ? `${JSON.stringify(report)}\n` : `${report.summary}\n`);
  return 0;
}

export const benchCommand: Command = { summary: "time the pipeline warm, in one process: medians, p90 and per-stage medians", flags: FLAGS, run };
