/**
 * A small reader of the repository's own TypeScript for the architecture test: import specifiers, and the line
 * spans of functions and methods. Not a parser: it blanks comments, strings, template text and regular expression
 * literals so that braces and `import` words are counted only where they are code, which is all these checks need.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";

/** Every .ts file under `dir`, as paths relative to `root` with forward slashes. */
export function listSources(root: string, dir: string): string[] {
  const out: string[] = [];
  const walk = (at: string) => {
    for (const entry of readdirSync(at, { withFileTypes: true })) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts")) out.push(relative(root, path).split("\\").join("/"));
    }
  };
  walk(join(root, dir));
  return out.sort();
}

// a `/` after one of these starts a regular expression literal, not a division
const REGEX_AFTER = new Set(["(", ",", "=", ":", "[", "!", "&", "|", "?", "{", "}", ";", "+", "-", "*", "%", "<", ">", "~", "^", ""]);
const REGEX_AFTER_WORDS = /(?:^|[^\w$])(?:return|typeof|case|in|of|delete|void|throw|new|else|do|yield|await)$/;

/**
 * The source with comments, string and template contents and regex literals replaced by spaces (newlines kept, so
 * line numbers hold); `${…}` inside templates stays code. Import specifiers are kept where they appear as strings
 * right after `from` or `import(`: see importSpecifiers.
 */
export function blankNonCode(source: string): string {
  const out = source.split("");
  const blank = (from: number, to: number) => {
    for (let k = from; k < to; k++) if (out[k] !== "\n") out[k] = " ";
  };
  // template nesting: each entry is the brace depth at which a `${` was opened
  const templates: number[] = [];
  let depth = 0;
  let i = 0;
  let lastSignificant = "";
  const scanTemplate = (start: number): number => {
    // from just after ` or }, up to the closing ` or a ${ (returns the index after it)
    let k = start;
    while (k < source.length) {
      const c = source[k]!;
      if (c === "\\") k += 2;
      else if (c === "`") {
        blank(start, k);
        return k + 1;
      } else if (c === "$" && source[k + 1] === "{") {
        blank(start, k);
        templates.push(depth);
        depth++;
        return k + 2;
      } else k++;
    }
    blank(start, k);
    return k;
  };
  while (i < source.length) {
    const c = source[i]!;
    const next = source[i + 1];
    if (c === "/" && next === "/") {
      const end = source.indexOf("\n", i);
      const stop = end < 0 ? source.length : end;
      blank(i, stop);
      i = stop;
    } else if (c === "/" && next === "*") {
      const end = source.indexOf("*/", i + 2);
      const stop = end < 0 ? source.length : end + 2;
      blank(i, stop);
      i = stop;
    } else if (c === '"' || c === "'") {
      let k = i + 1;
      while (k < source.length && source[k] !== c && source[k] !== "\n") k += source[k] === "\\" ? 2 : 1;
      blank(i + 1, k);
      i = k + 1;
      lastSignificant = "s";
    } else if (c === "`") {
      i = scanTemplate(i + 1);
      lastSignificant = "s";
    } else if (c === "/" && (REGEX_AFTER.has(lastSignificant) || REGEX_AFTER_WORDS.test(source.slice(Math.max(0, i - 12), i).trimEnd()))) {
      let k = i + 1;
      let inClass = false;
      while (k < source.length && source[k] !== "\n") {
        const r = source[k]!;
        if (r === "\\") k += 2;
        else {
          if (r === "[") inClass = true;
          else if (r === "]") inClass = false;
          else if (r === "/" && !inClass) break;
          k++;
        }
      }
      blank(i + 1, k);
      i = k + 1;
      lastSignificant = "s";
    } else {
      if (c === "{") depth++;
      else if (c === "}") {
        depth--;
        if (templates.length && templates[templates.length - 1] === depth) {
          templates.pop();
          i = scanTemplate(i + 1);
          lastSignificant = "s";
          continue;
        }
      }
      if (!/\s/.test(c)) lastSignificant = /[\w$]/.test(c) ? "w" : c;
      i++;
    }
  }
  return out.join("");
}

/** The module specifiers a file imports or re-exports (static `import`/`export … from` and `import("…")`). */
export function importSpecifiers(source: string): string[] {
  const code = blankNonCode(source);
  const found: string[] = [];
  const pattern = /\bfrom\s*(["'])|\bimport\s*(["'])|\bimport\s*\(\s*(["'])/g;
  for (let m = pattern.exec(code); m; m = pattern.exec(code)) {
    // the string's contents were blanked in `code`: read them from the source at the same place
    const start = m.index + m[0].length;
    const quote = (m[1] ?? m[2] ?? m[3])!;
    const end = source.indexOf(quote, start);
    found.push(source.slice(start, end));
  }
  return found;
}

const NOT_FUNCTIONS = new Set(["if", "for", "while", "switch", "catch", "with", "return", "function"]);

export interface FunctionSpan {
  name: string;
  /** 1-based line of the header and of the closing brace. */
  start: number;
  end: number;
  lines: number;
  /** The line just above the header (a comment saying why it is long, where there is one). */
  comment: string;
}

/** Functions, methods and brace-bodied arrow functions, with their line spans. */
export function functionSpans(source: string): FunctionSpan[] {
  const code = blankNonCode(source).split("\n");
  const raw = source.split("\n");
  const spans: FunctionSpan[] = [];
  const open: { name: string; line: number; depth: number }[] = [];
  let depth = 0;
  // a header whose parameters run over several lines: its body opens on the line that starts with `)`
  let pending: string | undefined;
  for (let n = 0; n < code.length; n++) {
    const line = code[n]!;
    let name: string | undefined;
    const fn = /\bfunction\s*\*?\s*([\w$]+)?\s*[(<]/.exec(line);
    const method = /^\s*(?:(?:export|default|public|private|protected|static|async|override|readonly|get|set)\s+)*(#?[\w$]+|\[[^\]]+\])\s*(?:<[^>]*>)?\s*\(/.exec(line);
    const arrow = /(?:const|let)\s+([\w$]+)\s*(?::[^=]+)?=\s*(?:async\s*)?(?:<[^>]*>)?\(/.exec(line);
    if (fn) name = fn[1] ?? "function";
    else if (method && !NOT_FUNCTIONS.has(method[1]!) && !/\bclass\b|\binterface\b/.test(line)) name = method[1];
    else if (arrow && /=>\s*\{\s*$/.test(line)) name = arrow[1];
    else if (arrow) name = arrow[1];
    const opensBody = /\{\s*$/.test(line) && !/=\s*\{\s*$/.test(line);
    if (name !== undefined && !opensBody) {
      pending = name;
      name = undefined;
    } else if (name === undefined && pending !== undefined && /^\s*\)/.test(line) && opensBody) {
      name = pending;
      pending = undefined;
    } else if (name !== undefined) pending = undefined;
    const bodyAt = name !== undefined ? line.lastIndexOf("{") : -1;
    for (let k = 0; k < line.length; k++) {
      const c = line[k];
      if (c === "{") {
        if (k === bodyAt) open.push({ name: name!, line: n + 1, depth });
        depth++;
      } else if (c === "}") {
        depth--;
        const top = open[open.length - 1];
        if (top && top.depth === depth) {
          open.pop();
          spans.push({ name: top.name, start: top.line, end: n + 1, lines: n + 2 - top.line, comment: (raw[top.line - 2] ?? "").trim() });
        }
      }
    }
  }
  return spans;
}

export function readSource(root: string, path: string): string {
  return readFileSync(join(root, path), "utf8");
}
