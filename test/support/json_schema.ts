/**
 * A small JSON Schema (draft 2020-12) validator for the subset the files in schemas/ use: type, enum, const,
 * properties, required, additionalProperties, propertyNames, min/maxProperties, items, min/maxItems, minimum,
 * maximum, min/maxLength (in code points), pattern (ECMA-262, `u` flag), anyOf, oneOf, $ref (local `#/$defs/…`
 * and other files of schemas/ by name) and format "date-time". Any other keyword is an error, so a schema can
 * never be silently weaker than it reads.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "./paths.ts";

type Schema = boolean | Record<string, unknown>;

const ANNOTATIONS = new Set(["$schema", "$id", "$defs", "$comment", "title", "description", "examples", "default"]);
const KEYWORDS = new Set([
  "type", "enum", "const", "properties", "required", "additionalProperties", "propertyNames", "minProperties", "maxProperties",
  "items", "minItems", "maxItems", "minimum", "maximum", "minLength", "maxLength", "pattern", "anyOf", "oneOf", "$ref", "format",
]);
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

export interface SchemaSet {
  /** Problems of `value` against the named schema (`result` or `result.schema.json`); empty when valid. */
  errors(name: string, value: unknown): string[];
  /** Throws with every problem listed when `value` does not validate. */
  assertValid(name: string, value: unknown): void;
}

function typeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function hasType(value: unknown, type: string): boolean {
  const actual = typeOf(value);
  return actual === type || (type === "number" && actual === "integer");
}

function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Loads every schemas/*.schema.json (or the files of `dir`). */
export function loadSchemas(dir = join(REPO_ROOT, "schemas")): SchemaSet {
  const files = new Map<string, Record<string, unknown>>();
  for (const name of readdirSync(dir).filter((n) => n.endsWith(".schema.json"))) {
    files.set(name, JSON.parse(readFileSync(join(dir, name), "utf8")) as Record<string, unknown>);
  }

  function resolve(ref: string, root: Record<string, unknown>): [Schema, Record<string, unknown>] {
    const [file, fragment] = ref.split("#") as [string, string | undefined];
    const base = file === "" ? root : files.get(file);
    if (base === undefined) throw new Error(`unresolvable $ref ${ref}`);
    if (!fragment) return [base, base];
    let node: unknown = base;
    for (const part of fragment.split("/").filter(Boolean)) node = (node as Record<string, unknown>)[part];
    if (node === undefined) throw new Error(`unresolvable $ref ${ref}`);
    return [node as Schema, base];
  }

  function check(schema: Schema, value: unknown, path: string, root: Record<string, unknown>, out: string[]): void {
    if (schema === true) return;
    if (schema === false) {
      out.push(`${path}: no value allowed here`);
      return;
    }
    for (const key of Object.keys(schema)) {
      if (!KEYWORDS.has(key) && !ANNOTATIONS.has(key)) throw new Error(`schema keyword ${key} is not supported by this validator (at ${path})`);
    }
    const s = schema as Record<string, unknown>;
    if (s["$ref"] !== undefined) {
      const [target, targetRoot] = resolve(s["$ref"] as string, root);
      check(target, value, path, targetRoot, out);
    }
    if (s["type"] !== undefined) {
      const types = Array.isArray(s["type"]) ? (s["type"] as string[]) : [s["type"] as string];
      if (!types.some((t) => hasType(value, t))) {
        out.push(`${path}: expected ${types.join(" or ")}, got ${typeOf(value)}`);
        return;
      }
    }
    if (s["enum"] !== undefined && !(s["enum"] as unknown[]).some((v) => deepEqual(v, value))) out.push(`${path}: ${JSON.stringify(value)} is not one of ${JSON.stringify(s["enum"])}`);
    if (s["const"] !== undefined && !deepEqual(s["const"], value)) out.push(`${path}: expected ${JSON.stringify(s["const"])}, got ${JSON.stringify(value)}`);
    if (typeof value === "number") {
      if (typeof s["minimum"] === "number" && value < s["minimum"]) out.push(`${path}: ${value} < minimum ${s["minimum"]}`);
      if (typeof s["maximum"] === "number" && value > s["maximum"]) out.push(`${path}: ${value} > maximum ${s["maximum"]}`);
    }
    if (typeof value === "string") {
      const length = [...value].length;
      if (typeof s["minLength"] === "number" && length < s["minLength"]) out.push(`${path}: shorter than ${s["minLength"]}`);
      if (typeof s["maxLength"] === "number" && length > s["maxLength"]) out.push(`${path}: longer than ${s["maxLength"]}`);
      if (typeof s["pattern"] === "string" && !new RegExp(s["pattern"], "u").test(value)) out.push(`${path}: ${JSON.stringify(value)} does not match ${JSON.stringify(s["pattern"])}`);
      if (s["format"] === "date-time" && (!DATE_TIME.test(value) || Number.isNaN(Date.parse(value)))) out.push(`${path}: ${JSON.stringify(value)} is not an RFC 3339 date-time`);
    }
    if (Array.isArray(value)) {
      if (typeof s["minItems"] === "number" && value.length < s["minItems"]) out.push(`${path}: fewer than ${s["minItems"]} items`);
      if (typeof s["maxItems"] === "number" && value.length > s["maxItems"]) out.push(`${path}: more than ${s["maxItems"]} items`);
      if (s["items"] !== undefined) value.forEach((item, i) => check(s["items"] as Schema, item, `${path}[${i}]`, root, out));
    }
    if (typeOf(value) === "object") {
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj);
      const properties = (s["properties"] ?? {}) as Record<string, Schema>;
      for (const key of (s["required"] ?? []) as string[]) if (!Object.prototype.hasOwnProperty.call(obj, key)) out.push(`${path}: missing required ${key}`);
      if (typeof s["minProperties"] === "number" && keys.length < s["minProperties"]) out.push(`${path}: fewer than ${s["minProperties"]} properties`);
      if (typeof s["maxProperties"] === "number" && keys.length > s["maxProperties"]) out.push(`${path}: more than ${s["maxProperties"]} properties`);
      for (const key of keys) {
        if (s["propertyNames"] !== undefined) check(s["propertyNames"] as Schema, key, `${path}{${key}}`, root, out);
        if (Object.prototype.hasOwnProperty.call(properties, key)) check(properties[key]!, obj[key], `${path}.${key}`, root, out);
        else if (s["additionalProperties"] !== undefined) check(s["additionalProperties"] as Schema, obj[key], `${path}.${key}`, root, out);
      }
    }
    if (s["anyOf"] !== undefined) {
      const branches = (s["anyOf"] as Schema[]).map((branch) => {
        const sub: string[] = [];
        check(branch, value, path, root, sub);
        return sub;
      });
      if (!branches.some((b) => b.length === 0)) out.push(`${path}: matches none of anyOf (${branches.map((b) => b[0]).join(" | ")})`);
    }
    if (s["oneOf"] !== undefined) {
      const matching = (s["oneOf"] as Schema[]).filter((branch) => {
        const sub: string[] = [];
        check(branch, value, path, root, sub);
        return sub.length === 0;
      }).length;
      if (matching !== 1) out.push(`${path}: matches ${matching} of oneOf, expected exactly 1`);
    }
  }

  function find(name: string): Record<string, unknown> {
    const file = name.endsWith(".schema.json") ? name : `${name}.schema.json`;
    const schema = files.get(file);
    if (schema === undefined) throw new Error(`no schema ${file} in ${dir}`);
    return schema;
  }

  return {
    errors(name, value) {
      const schema = find(name);
      const out: string[] = [];
      check(schema, value, "$", schema, out);
      return out;
    },
    assertValid(name, value) {
      const problems = this.errors(name, value);
      if (problems.length > 0) throw new Error(`payload does not match ${name}: ${problems.slice(0, 8).join("; ")}\n${JSON.stringify(value).slice(0, 400)}`);
    },
  };
}
