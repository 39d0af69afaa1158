/**
 * A JSON value that validates against a client's JSON Schema, filled from what Florence-2 said. OpenAI's
 * `response_format: {type: "json_schema"}` asks for exactly that, and Florence-2 cannot be told to write JSON, so the
 * answer is poured into the schema: strings get the description (a `title`/`summary`-like field its first sentence),
 * numbers the answer's confidence where the name asks for one (else the least allowed value), enums and consts
 * their first value, arrays their fewest items, objects every declared property. Pure.
 */
import { isRecord } from "../../validate.ts";

export interface FillSource {
  /** The description: a caption, or a summary of what was found. */
  text: string;
  /** The answer's confidence in 0..1, when the model gave one. */
  confidence: number | undefined;
}

type Schema = Record<string, unknown>;

const MAX_DEPTH = 24;

function resolveRef(ref: string, root: Schema): Schema | undefined {
  if (!ref.startsWith("#/")) return undefined;
  let node: unknown = root;
  for (const part of ref.slice(2).split("/")) node = isRecord(node) ? node[part.replace(/~1/g, "/").replace(/~0/g, "~")] : undefined;
  return isRecord(node) ? node : undefined;
}

/** The first sentence, at most 80 characters: what a title or a summary field gets. */
function firstSentence(text: string): string {
  const sentence = /^.*?[.!?](\s|$)/.exec(text)?.[0]?.trim() ?? text;
  return sentence.length > 80 ? `${sentence.slice(0, 79)}…` : sentence;
}

function fillString(schema: Schema, name: string, source: FillSource): string {
  if (schema["format"] === "date-time") return new Date().toISOString();
  let text = /title|summary|short|label|name|headline/i.test(name) ? firstSentence(source.text) : source.text;
  const max = typeof schema["maxLength"] === "number" ? schema["maxLength"] : Infinity;
  const min = typeof schema["minLength"] === "number" ? schema["minLength"] : 0;
  const chars = [...text];
  if (chars.length > max) text = chars.slice(0, Math.max(0, max)).join("");
  if ([...text].length < min) text = text.padEnd(text.length + (min - [...text].length), ".");
  return text;
}

function fillNumber(schema: Schema, name: string, source: FillSource, integer: boolean): number {
  const min = typeof schema["minimum"] === "number" ? schema["minimum"] : typeof schema["exclusiveMinimum"] === "number" ? schema["exclusiveMinimum"] + (integer ? 1 : 1e-6) : undefined;
  const max = typeof schema["maximum"] === "number" ? schema["maximum"] : typeof schema["exclusiveMaximum"] === "number" ? schema["exclusiveMaximum"] - (integer ? 1 : 1e-6) : undefined;
  let value = /confidence|score|probability|certainty/i.test(name) && source.confidence !== undefined ? source.confidence : (min ?? 0);
  if (max !== undefined && max <= 1 && /confidence|score|probability|certainty/i.test(name) && source.confidence !== undefined) value = Math.min(value, max);
  if (integer) value = Math.ceil(value);
  if (min !== undefined && value < min) value = integer ? Math.ceil(min) : min;
  if (max !== undefined && value > max) value = integer ? Math.floor(max) : max;
  return value;
}

function schemaType(schema: Schema): string | undefined {
  const type = schema["type"];
  if (typeof type === "string") return type;
  if (Array.isArray(type)) return (type.find((t) => t !== "null") ?? type[0]) as string | undefined;
  if (isRecord(schema["properties"])) return "object";
  if (schema["items"] !== undefined) return "array";
  return undefined;
}

function fill(schema: unknown, root: Schema, name: string, source: FillSource, depth: number): unknown {
  if (!isRecord(schema) || depth > MAX_DEPTH) return source.text;
  if (typeof schema["$ref"] === "string") return fill(resolveRef(schema["$ref"], root), root, name, source, depth + 1);
  if ("const" in schema) return schema["const"];
  if (Array.isArray(schema["enum"]) && schema["enum"].length > 0) return schema["enum"][0];
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    const branches = schema[key];
    if (Array.isArray(branches) && branches.length > 0) {
      const pick = branches.find((b) => !(isRecord(b) && b["type"] === "null")) ?? branches[0];
      return fill(pick, root, name, source, depth + 1);
    }
  }
  switch (schemaType(schema)) {
    case "object": {
      const out: Record<string, unknown> = {};
      const properties = isRecord(schema["properties"]) ? schema["properties"] : {};
      for (const [key, sub] of Object.entries(properties)) out[key] = fill(sub, root, key, source, depth + 1);
      if (Object.keys(properties).length === 0 && schema["additionalProperties"] !== false) out["description"] = source.text;
      return out;
    }
    case "array": {
      const count = typeof schema["minItems"] === "number" ? schema["minItems"] : 0;
      return Array.from({ length: count }, () => fill(schema["items"], root, name, source, depth + 1));
    }
    case "string":
      return fillString(schema, name, source);
    case "integer":
      return fillNumber(schema, name, source, true);
    case "number":
      return fillNumber(schema, name, source, false);
    case "boolean":
      return false;
    case "null":
      return null;
    default:
      return source.text;
  }
}

/** A value for `schema` (a JSON Schema object) carrying `source`. */
export function fillSchema(schema: Record<string, unknown>, source: FillSource): unknown {
  return fill(schema, schema, "", source, 0);
}
