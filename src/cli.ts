/**
 * florence-edge command line. The subcommands and their flags are a stable contract that the service, scripts
 * and other programs build on; each lives in src/commands/.
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { type Command, usage } from "./cli_args.ts";
import { benchCommand } from "./commands/bench_command.ts";
import { buildEnginesCommand } from "./commands/build_engines_command.ts";
import { checkTrtAbiCommand } from "./commands/check_trt_abi_command.ts";
import { evalCommand } from "./commands/eval_command.ts";
import { inferCommand } from "./commands/infer_command.ts";
import { parseCommand } from "./commands/parse_command.ts";
import { serveCommand } from "./commands/serve_command.ts";
import { testHardwareCommand } from "./commands/test_hardware_command.ts";
import { FlorenceError } from "./errors.ts";

function packageVersion(): string {
  try {
    const path = fileURLToPath(new URL("../../package.json", import.meta.url));
    return JSON.parse(readFileSync(path, "utf8")).version as string;
  } catch {
    return "unknown";
  }
}

const COMMANDS: Record<string, Command> = {
  infer: inferCommand,
  parse: parseCommand,
  bench: benchCommand,
  serve: serveCommand,
  "build-engines": buildEnginesCommand,
  "check-trt-abi": checkTrtAbiCommand,
  "test-hardware": testHardwareCommand,
  eval: evalCommand,
};

const HELP = `florence-edge ${packageVersion()} — Florence-2 on ONNX Runtime (CPU) and TensorRT (NVIDIA GPUs)

  florence-edge infer --model DIR --image PATH --task "<OD>" [--text T] [--num-beams N] [--max-new-tokens N] [--json]
  florence-edge parse --task "<OD>" --text RAW [--image-size 640x480] [--coordinates float|int|float32] [--json]
  florence-edge bench --model DIR --image PATH --task T [--num-beams N] [--max-new-tokens N] --runs N [--json]
  florence-edge serve [--config FILE] [--model DIR] [--source SRC] [--mqtt URL] [--topic-prefix P] [--camera NAME] [--task T …]
  florence-edge build-engines --model DIR [--precision fp32|fp16] [--out engines/] [--dry-run]
  florence-edge check-trt-abi --include DIR [--include DIR …] [--cuda-include DIR]
  florence-edge test-hardware [--model DIR] [--skip-build] [--json FILE]
  florence-edge eval [--model DIR] [--precision P] [--images N] [--seed S] [--json]

${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(15)}${c.summary}`).join("\n")}

Run a subcommand with --help for its flags.`;

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  if (name === "--version" || name === "version") {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`florence-edge: unknown command ${JSON.stringify(name)}\n\n${HELP}\n`);
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(`${usage(name, command.summary, command.flags)}\n${command.notes ? `\n${command.notes}\n` : ""}`);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (error) {
    if (error instanceof FlorenceError) {
      process.stderr.write(`florence-edge ${name}: ${error.code}: ${error.message}\n`);
      return error.code === "INVALID_ARGUMENT" || error.code === "CONFIG_INVALID" ? 2 : 1;
    }
    throw error;
  }
}
