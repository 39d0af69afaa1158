/** `florence-edge build-engines`: FP16 TensorRT engines for this GPU, built with trtexec (src/engine_build/). */
import process from "node:process";
import { buildEngines } from "../engine_build/build_engines.ts";
import { JETPACK_TRTEXEC } from "../engine_build/detect.ts";
import { formatCommand } from "../engine_build/trtexec.ts";
import { type Command, type FlagSpec, parseFlags, requireFlag } from "../cli_args.ts";
import { FlorenceError } from "../errors.ts";

const FLAGS: Record<string, FlagSpec> = {
  model: { kind: "string", help: "model folder (config.json, onnx/*.onnx)" },
  precision: { kind: "string", choices: ["fp32", "fp16"], help: "ONNX graphs to build from (default fp32); the engines are FP16" },
  out: { kind: "string", help: "engines root (default engines/)" },
  "max-batch": { kind: "int", min: 1, help: "images per call (default 1)" },
  "max-beams": { kind: "int", min: 1, help: "beams per image (default: generation_config num_beams)" },
  "max-prompt": { kind: "int", min: 1, help: "prompt tokens after the image tokens (default 256)" },
  "max-new-tokens": { kind: "int", min: 1, help: "generated tokens (default 1024)" },
  trtexec: { kind: "string", help: `trtexec path (default ${JETPACK_TRTEXEC}, then PATH)` },
  "strongly-typed": { kind: "boolean", help: "TensorRT 10 too: mixed-precision ONNX + --stronglyTyped (TensorRT 11 always)" },
  force: { kind: "boolean", help: "rebuild up-to-date engines" },
  "dry-run": { kind: "boolean", help: "print the trtexec commands; build nothing" },
};

async function run(argv: readonly string[]): Promise<number> {
  const { flags, positional } = parseFlags("build-engines", argv, FLAGS);
  if (positional.length > 0) throw new FlorenceError("INVALID_ARGUMENT", `build-engines: unexpected argument ${JSON.stringify(positional[0])}`, { fix: "pass the model folder with --model DIR" });
  const model = requireFlag<string>("build-engines", flags, "model", "--model models/Florence-2-base-ft");
  // Ctrl-C or SIGTERM stops trtexec and leaves no half-built engine folder
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const result = await buildEngines({
      model,
      ...(flags["precision"] ? { precision: flags["precision"] as "fp32" | "fp16" } : {}),
      ...(flags["out"] ? { out: flags["out"] as string } : {}),
      ...(flags["max-batch"] ? { maxBatch: flags["max-batch"] as number } : {}),
      ...(flags["max-beams"] ? { maxBeams: flags["max-beams"] as number } : {}),
      ...(flags["max-prompt"] ? { maxPrompt: flags["max-prompt"] as number } : {}),
      ...(flags["max-new-tokens"] ? { maxNewTokens: flags["max-new-tokens"] as number } : {}),
      ...(flags["trtexec"] ? { trtexec: flags["trtexec"] as string } : {}),
      stronglyTyped: Boolean(flags["strongly-typed"]),
      force: Boolean(flags["force"]),
      dryRun: Boolean(flags["dry-run"]),
      signal: controller.signal,
    });
    if (result.dryRun) for (const c of result.commands) process.stdout.write(`${formatCommand(["trtexec", ...c.argv])}\n`);
    else process.stdout.write(`${result.engineDir}\n`);
    return 0;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

export const buildEnginesCommand: Command = { summary: "build FP16 TensorRT engines for this GPU with trtexec", flags: FLAGS, run };
