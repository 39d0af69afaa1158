/**
 * Typed errors. Every error says what was wrong (the offending value or path) and how to fix it.
 * `code` is stable and machine-readable; the CLI prints `code: message` and exits non-zero.
 */
export type ErrorCode =
  | "MODEL_FILE_MISSING"
  | "MODEL_FILE_INVALID"
  | "MODEL_DOWNLOAD_FAILED"
  | "IMAGE_UNREADABLE"
  | "IMAGE_TOO_LARGE"
  | "UNKNOWN_TASK"
  | "TASK_INPUT_INVALID"
  | "INVALID_ARGUMENT"
  | "INVALID_UTF8"
  | "TOKENIZER_INVALID"
  | "ENGINE_UNAVAILABLE"
  | "ENGINE_FAILED"
  | "ENGINE_INPUT_INVALID"
  | "DISPOSED"
  | "CONFIG_INVALID"
  | "ASSET_MISSING"
  | "BUSY";

export class FlorenceError extends Error {
  readonly code: ErrorCode;
  /** How to fix it, in one sentence (also included in `message`). */
  readonly fix: string | undefined;

  constructor(code: ErrorCode, message: string, options: { fix?: string; cause?: unknown } = {}) {
    super(options.fix ? `${message} — ${options.fix}` : message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "FlorenceError";
    this.code = code;
    this.fix = options.fix;
  }
}

export function isFlorenceError(value: unknown, code?: ErrorCode): value is FlorenceError {
  return value instanceof FlorenceError && (code === undefined || value.code === code);
}

/** Shortens a value for an error message. */
export function describeValue(value: unknown, max = 80): string {
  let text: string;
  try {
    text = typeof value === "string" ? JSON.stringify(value) : String(JSON.stringify(value) ?? value);
  } catch {
    text = String(value);
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
