/**
 * Errors of the HTTP face as answers: a status, and a JSON body in OpenAI's error shape
 * `{"error": {"message", "type", "code", "param"}}` (which the openai clients surface as the exception's message).
 * Every 4xx says what was wrong and how to fix it; a 5xx never carries a stack. Pure: web-standard Response only.
 */
import { type ErrorCode, FlorenceError } from "../../errors.ts";
import { BusyError } from "../scheduler.ts";
import { maskSecrets } from "../redact.ts";

/** A request the service refuses: `status` is the HTTP status, `param` the request field at fault. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly param: string | undefined;
  readonly headers: Record<string, string>;

  constructor(status: number, code: string, message: string, options: { fix?: string; param?: string; headers?: Record<string, string> } = {}) {
    super(options.fix ? `${message} — ${options.fix}` : message);
    this.name = "HttpError";
    this.status = status;
    this.code = code;
    this.param = options.param;
    this.headers = options.headers ?? {};
  }
}

/** A 400 about one request field. */
export function badRequest(param: string, message: string, fix?: string): HttpError {
  return new HttpError(400, "invalid_request", `${param}: ${message}`, { param, ...(fix !== undefined ? { fix } : {}) });
}

const STATUS_OF: Partial<Record<ErrorCode, number>> = {
  INVALID_ARGUMENT: 400,
  INVALID_UTF8: 400,
  UNKNOWN_TASK: 400,
  TASK_INPUT_INVALID: 400,
  IMAGE_UNREADABLE: 400,
  IMAGE_TOO_LARGE: 413,
  BUSY: 429,
  ENGINE_UNAVAILABLE: 503,
  DISPOSED: 503,
};

const TYPE_OF_STATUS: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  404: "not_found_error",
  405: "invalid_request_error",
  408: "timeout_error",
  413: "invalid_request_error",
  415: "invalid_request_error",
  429: "rate_limit_error",
  503: "service_unavailable",
};

/** Any error as the HTTP error it stands for: a FlorenceError by its code, anything unexpected as 500. */
export function toHttpError(error: unknown): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof BusyError) return new HttpError(429, error.code, error.message, { headers: { "Retry-After": String(error.retryAfterS) } });
  if (error instanceof FlorenceError) return new HttpError(STATUS_OF[error.code] ?? 500, error.code, error.message);
  return new HttpError(500, "internal_error", `the request failed inside the service: ${error instanceof Error ? error.message : String(error)}`, { fix: "the service log has the details" });
}

/** The answer for an error: OpenAI's error object, secrets masked. */
export function errorResponse(error: unknown): Response {
  const http = toHttpError(error);
  const body = {
    error: {
      message: maskSecrets(http.message),
      type: TYPE_OF_STATUS[http.status] ?? (http.status >= 500 ? "server_error" : "invalid_request_error"),
      code: http.code,
      param: http.param ?? null,
    },
  };
  return new Response(`${JSON.stringify(body)}\n`, { status: http.status, headers: { "Content-Type": "application/json; charset=utf-8", ...http.headers } });
}

/** A JSON answer. */
export function jsonResponse(value: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(`${JSON.stringify(value)}\n`, { status, headers: { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store", ...headers } });
}
