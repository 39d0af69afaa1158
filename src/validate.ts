/** The shared checks of untyped input (JSON, YAML, message payloads), so every reader asks the same question. */

/** A plain mapping: an object that is neither null nor an array. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}
