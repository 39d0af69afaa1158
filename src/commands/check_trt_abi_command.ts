/**
 * `florence-edge check-trt-abi --include DIR [--include DIR2] [--cuda-include DIR] [--cxx g++]`: the koffi runtime's
 * TensorRT vtable slots and layouts checked against real headers (src/engine_build/abi_check.ts). Prints one table
 * per include directory; exits 1 on any mismatch, 2 on bad arguments or a probe that does not build.
 */
import process from "node:process";
import { type Command, type FlagSpec, parseFlags } from "../cli_args.ts";
import { checkTrtAbi, formatAbiTable } from "../engine_build/abi_check.ts";
import { FlorenceError, isFlorenceError } from "../errors.ts";

const FLAGS: Record<string, FlagSpec> = {
  include: { kind: "strings", help: "TensorRT include directory (the one holding NvInferRuntime.h); repeat to check several" },
  "cuda-include": { kind: "string", help: "CUDA include directory (default /usr/local/cuda/include, else /usr/include)" },
  cxx: { kind: "string", help: "C++ compiler (default g++)" },
};

async function run(argv: readonly string[]): Promise<number> {
  const { flags, positional } = parseFlags("check-trt-abi", argv, FLAGS);
  const includes = (flags["include"] as string[] | undefined) ?? [];
  if (positional.length > 0) throw new FlorenceError("INVALID_ARGUMENT", `check-trt-abi: unexpected argument ${JSON.stringify(positional[0])}`, { fix: "pass directories with --include DIR" });
  if (includes.length === 0) throw new FlorenceError("INVALID_ARGUMENT", "check-trt-abi: --include is required", { fix: "e.g. --include /usr/include/aarch64-linux-gnu" });
  const cudaInclude = flags["cuda-include"] as string | undefined;
  const cxx = flags["cxx"] as string | undefined;
  let failed = false;
  for (const include of includes) {
    try {
      const result = await checkTrtAbi({ include, ...(cudaInclude ? { cudaInclude } : {}), ...(cxx ? { cxx } : {}) });
      process.stdout.write(`${formatAbiTable(result)}\n\n`);
      if (!result.ok) failed = true;
    } catch (error) {
      // a probe that does not build is a setup problem like a bad flag: exit 2, not a mismatch
      if (!isFlorenceError(error)) throw error;
      process.stderr.write(`florence-edge check-trt-abi: ${error.code}: ${error.message}\n`);
      return 2;
    }
  }
  return failed ? 1 : 0;
}

export const checkTrtAbiCommand: Command = {
  summary: "check the TensorRT FFI's vtable slots and layouts against TensorRT's headers (needs g++)",
  flags: FLAGS,
  notes: "exit codes: 0 every item matches, 1 mismatches, 2 bad arguments or a probe that does not build",
  run,
};
