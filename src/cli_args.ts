/** A small, strict command-line parser: known flags only, typed values, repeated flags collected. */
import { resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { FlorenceError } from "./errors.ts";

export type FlagKind = "string" | "int" | "number" | "boolean" | "strings";

export interface FlagSpec {
  kind: FlagKind;
  help: string;
  /** For "string" flags: the accepted values. */
  choices?: readonly string[];
  min?: number;
  max?: number;
}

export type FlagValues = Record<string, string | number | boolean | string[] | undefined>;

export function parseFlags(command: string, argv: readonly string[], specs: Record<string, FlagSpec>): { flags: FlagValues; positional: string[] } {
  const flags: FlagValues = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    let name = arg.slice(2);
    let inline: string | undefined;
    const eq = name.indexOf("=");
    if (eq >= 0) {
      inline = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const spec = specs[name];
    if (!spec) {
      throw new FlorenceError("INVALID_ARGUMENT", `${command}: unknown flag --${name}`, { fix: `known flags: ${Object.keys(specs).map((k) => `--${k}`).join(" ")}` });
    }
    if (spec.kind === "boolean") {
      flags[name] = inline === undefined ? true : !["false", "0", "no"].includes(inline);
      continue;
    }
    const raw = inline ?? argv[++i];
    if (raw === undefined) throw new FlorenceError("INVALID_ARGUMENT", `${command}: --${name} needs a value`, { fix: spec.help });
    if (spec.choices && spec.kind !== "int" && spec.kind !== "number" && !spec.choices.includes(raw)) {
      throw new FlorenceError("INVALID_ARGUMENT", `${command}: --${name} must be one of ${spec.choices.join(", ")}, got ${JSON.stringify(raw)}`, { fix: spec.help });
    }
    if (spec.kind === "strings") {
      const list = (flags[name] as string[] | undefined) ?? [];
      list.push(raw);
      flags[name] = list;
    } else if (spec.kind === "int" || spec.kind === "number") {
      const value = Number(raw);
      const bad = !Number.isFinite(value) || (spec.kind === "int" && !Number.isInteger(value)) || (spec.min !== undefined && value < spec.min) || (spec.max !== undefined && value > spec.max);
      if (bad || raw.trim() === "") {
        const range = spec.min !== undefined || spec.max !== undefined ? ` in ${spec.min ?? "-∞"}..${spec.max ?? "∞"}` : "";
        throw new FlorenceError("INVALID_ARGUMENT", `${command}: --${name} must be ${spec.kind === "int" ? "an integer" : "a number"}${range}, got ${JSON.stringify(raw)}`, { fix: spec.help });
      }
      flags[name] = value;
    } else {
      flags[name] = raw;
    }
  }
  return { flags, positional };
}

export function requireFlag<T extends string | number>(command: string, flags: FlagValues, name: string, example: string): T {
  const value = flags[name];
  if (value === undefined) throw new FlorenceError("INVALID_ARGUMENT", `${command}: --${name} is required`, { fix: `e.g. ${example}` });
  return value as T;
}

export function usage(command: string, summary: string, specs: Record<string, FlagSpec>): string {
  const lines = [`florence-edge ${command} — ${summary}`, ""];
  for (const [name, spec] of Object.entries(specs)) {
    const value = spec.kind === "boolean" ? "" : spec.choices ? ` ${spec.choices.join("|")}` : spec.kind === "strings" ? " VALUE (repeatable)" : " VALUE";
    const flag = `  --${name}${value}`;
    // a flag too long for the column gets its help on the next line, aligned with the others
    lines.push(flag.length < 40 ? flag.padEnd(40) + spec.help : `${flag}\n${" ".repeat(40)}${spec.help}`);
  }
  return lines.join("\n");
}

/**
 * A script's entry point: when `meta` is the module the program started from (`node FILE`, or `deno run FILE`), runs
 * `main` with the arguments and exits with its code, so that no library thread or timer holds the process open once
 * the report is out. An error is printed as `CODE: message` (FlorenceError) or its stack, exit 1.
 */
export function runAsScript(meta: ImportMeta, main: (argv: readonly string[]) => Promise<number>): void {
  const entry = process.argv[1];
  const isMain = (meta as { main?: boolean }).main === true || (entry !== undefined && resolve(entry) === fileURLToPath(meta.url));
  if (!isMain) return;
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`${error instanceof FlorenceError ? `${error.code}: ${error.message}` : ((error as Error).stack ?? String(error))}\n`);
      process.exit(1);
    },
  );
}

/** One `florence-edge` subcommand: its flags, one line for the overview, and what it does with its arguments. */
export interface Command {
  summary: string;
  flags: Record<string, FlagSpec>;
  /** Lines printed after the flag list by `--help`. */
  notes?: string;
  /** Resolves with the exit code; a FlorenceError it throws is printed as `CODE: message` (exit 2 for bad arguments). */
  run(argv: readonly string[]): Promise<number>;
}
