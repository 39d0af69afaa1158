/**
 * The shape of src/ stays as STYLE.md draws it: imports form no cycle; the engine layer never imports Florence-2 or
 * service code; Florence-2 code never names a backend (only the engine seam, engine/engine.ts, and its helpers);
 * the shapes world (src/world/) sits on Florence-2 beside the service, and nothing below it imports it; no two
 * files share a base name; each package is imported by one module only; and files in src/ stay under ~600 lines and
 * functions under ~120, except where a comment right above the function says `long:` and why.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { basename, dirname, join, normalize } from "node:path";
import { REPO_ROOT } from "../support/paths.ts";
import { functionSpans, importSpecifiers, listSources, readSource } from "../support/source_scan.ts";

const MAX_FILE_LINES = 600;
const MAX_FUNCTION_LINES = 120;
/** Where the size limits are enforced: all of src/ (the service and CLI were split by their own changes). */
const SIZED = /^src\//;
/**
 * Over the limits and not yet split, each entry naming what to split (empty since issue 11, item 9: keep it so).
 * Remove an entry once its file or function fits; the test fails on anything over the limits not listed here.
 */
const NOT_YET_SPLIT = new Set<string>([]);

const files = listSources(REPO_ROOT, "src");
const sources = new Map(files.map((f) => [f, readSource(REPO_ROOT, f)]));

/** src-relative import edges: file → the src files it imports (package imports left out). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const [file, source] of sources) {
    const targets = importSpecifiers(source)
      .filter((s) => s.startsWith("."))
      .map((s) => normalize(join(dirname(file), s)).split("\\").join("/"));
    graph.set(file, [...new Set(targets)]);
  }
  return graph;
}

test("the source reader finds imports and functions where they are code, not in strings or comments", () => {
  const source = [
    'import { a } from "./a.ts";',
    '// import { b } from "./b.ts";',
    'const text = "import { c } from \\"./c.ts\\"";',
    "export { d } from './d.ts';",
    'const lazy = await import("./e.ts");',
    "function long(x: number): number {",
    "  const re = /[{]/;",
    "  const t = `${x} }`;",
    "  return x;",
    "}",
  ].join("\n");
  assert.equal(importSpecifiers(source), ["./a.ts", "./d.ts", "./e.ts"]);
  const spans = functionSpans(source);
  assert.equal(spans.map((s) => [s.name, s.start, s.end]), [["long", 6, 10]]);
});

test("every relative import in src/ names a file that exists", () => {
  const missing: string[] = [];
  for (const [file, targets] of importGraph()) for (const t of targets) if (!sources.has(t)) missing.push(`${file} → ${t}`);
  assert.equal(missing, []);
});

test("the import graph of src/ has no cycles (type-only imports included)", () => {
  const graph = importGraph();
  const state = new Map<string, "open" | "done">();
  const cycles: string[] = [];
  const visit = (file: string, path: string[]) => {
    state.set(file, "open");
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === "open") cycles.push([...path.slice(path.indexOf(next)), file, next].join(" → "));
      else if (!state.has(next)) visit(next, [...path, file]);
    }
    state.set(file, "done");
  };
  for (const file of graph.keys()) if (!state.has(file)) visit(file, []);
  assert.equal(cycles, []);
});

test("layers import downwards only: engine/ never imports florence/ or service/; florence/ never imports service/ or a backend; world/ sits above florence/; events/ imports only itself", () => {
  const wrong: string[] = [];
  for (const [file, targets] of importGraph()) {
    for (const t of targets) {
      if (file.startsWith("src/engine/") && /^src\/(florence|service)\//.test(t)) wrong.push(`${file} → ${t}`);
      if (file.startsWith("src/florence/") && t.startsWith("src/service/")) wrong.push(`${file} → ${t}`);
      // the seam and backend-neutral helpers only
      if (file.startsWith("src/florence/") && t.startsWith("src/engine/") && !["src/engine/engine.ts", "src/engine/float16.ts"].includes(t)) wrong.push(`${file} → ${t}`);
      if (file === "src/timing.ts" && !t.startsWith("src/engine/engine.ts")) wrong.push(`${file} → ${t}`);
      // the shapes world draws and scores through Florence-2; the layers below it and the service never need it
      if (/^src\/(engine|florence|service)\//.test(file) && t.startsWith("src/world/")) wrong.push(`${file} → ${t}`);
      if (file.startsWith("src/world/") && /^src\/(service|commands|engine_build|hardware)\/|^src\/(cli|mod)\.ts$/.test(t)) wrong.push(`${file} → ${t}`);
      // the events' core (tracking, zones, event payloads) is pure: it imports only itself
      if (file.startsWith("src/events/") && !t.startsWith("src/events/")) wrong.push(`${file} → ${t}`);
    }
  }
  assert.equal(wrong, []);
});

test("florence/ code never checks which backend runs it", () => {
  const named: string[] = [];
  for (const [file, source] of sources) {
    if (!file.startsWith("src/florence/")) continue;
    // in code, not in comments: a backend's name as a value or a `.backend` check
    const code = source.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
    if (/["'`](onnxruntime|tensorrt)["'`]|\.backend\b/.test(code)) named.push(file);
  }
  assert.equal(named, []);
});

test("each package is imported by one module of src/ (mqtt by mqtt_link.ts, munkres by events/assignment.ts, hono by http_server.ts …)", () => {
  const importers = new Map<string, string[]>();
  for (const [file, source] of sources) {
    for (const specifier of importSpecifiers(source)) {
      if (specifier.startsWith(".") || specifier.startsWith("node:")) continue;
      const name = specifier.startsWith("@") ? specifier.split("/").slice(0, 2).join("/") : specifier.split("/")[0]!;
      importers.set(name, [...new Set([...(importers.get(name) ?? []), file])]);
    }
  }
  assert.equal([...importers].filter(([, files]) => files.length > 1).map(([name, files]) => `${name}: ${files.join(", ")}`), []);
  assert.equal(importers.get("mqtt"), ["src/service/mqtt_link.ts"]);
  assert.equal(importers.get("munkres"), ["src/events/assignment.ts"]);
  assert.equal(importers.get("hono"), ["src/service/http/http_server.ts"]);
  assert.equal(importers.get("@hono/node-server"), ["src/service/http/http_server.ts"]);
  assert.equal(importers.get("fflate"), ["src/service/http/nvidia_api.ts"]);
});

test("no two files in src/ share a base name", () => {
  const byName = new Map<string, string[]>();
  for (const file of files) byName.set(basename(file), [...(byName.get(basename(file)) ?? []), file]);
  const shared = [...byName].filter(([, paths]) => paths.length > 1).map(([, paths]) => paths.join(" and "));
  assert.equal(shared, []);
});

test(`src/: files under ${MAX_FILE_LINES} lines, functions under ${MAX_FUNCTION_LINES} unless a "long:" comment says why`, () => {
  const tooLong: string[] = [];
  for (const [file, source] of sources) {
    if (!SIZED.test(file)) continue;
    const lines = source.split("\n").length;
    if (lines > MAX_FILE_LINES && !NOT_YET_SPLIT.has(file)) tooLong.push(`${file}: ${lines} lines`);
    for (const span of functionSpans(source)) {
      if (span.lines > MAX_FUNCTION_LINES && !/^\/\/ long:|^\* long:|long: /.test(span.comment) && !NOT_YET_SPLIT.has(`${file} ${span.name}`)) tooLong.push(`${file}:${span.start} ${span.name}: ${span.lines} lines`);
    }
  }
  assert.equal(tooLong, []);
  // and the list only shrinks: an entry whose file or function now fits must go
  const stillLong = new Set<string>();
  for (const [file, source] of sources) {
    if (!SIZED.test(file)) continue;
    if (source.split("\n").length > MAX_FILE_LINES) stillLong.add(file);
    for (const span of functionSpans(source)) if (span.lines > MAX_FUNCTION_LINES) stillLong.add(`${file} ${span.name}`);
  }
  assert.equal([...NOT_YET_SPLIT].filter((entry) => !stillLong.has(entry)), [], "entries of NOT_YET_SPLIT that now fit");
});

test.run();
