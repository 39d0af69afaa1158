#!/usr/bin/env node
/** The `florence-edge` executable: runs the CLI and turns its result into an exit code. */
import process from "node:process";
import { main } from "./cli.ts";

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`florence-edge: internal error: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exit(70);
  },
);
