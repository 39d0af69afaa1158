/**
 * The HTTP server: Hono's router and middleware on @hono/node-server (Node's http server, which Deno provides too).
 * The only module that imports hono or @hono/node-server: the routes themselves are framework-free functions from a
 * web-standard Request to a Response (routes.ts). Here: the bearer token (compared in constant time; only the page
 * shell and /healthz go without it), the body limit (413 before a byte more is read), Node's request and header
 * timeouts (a slow or stalled client is cut off), 404 and 405 as JSON, every error as an answer instead of a crash,
 * security headers, and one observation per request (route pattern, status, milliseconds) for metrics and the log.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { AddressInfo } from "node:net";
import { serve, type ServerType } from "@hono/node-server";
import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { secureHeaders } from "hono/secure-headers";
import { FlorenceError } from "../../errors.ts";
import { errorResponse, HttpError } from "./http_errors.ts";

export interface Route {
  method: "GET" | "POST";
  /** Hono's pattern: `/api/cameras/:name/latest.jpg`. */
  path: string;
  /** Served without the bearer token: the page shell (it holds no data) and /healthz. */
  public?: boolean;
  handle(request: Request, params: Record<string, string>): Promise<Response> | Response;
}

export interface HttpServerOptions {
  host: string;
  port: number;
  /** Take any free port when `port` is in use (the demo); otherwise that is an error. */
  anyPortIfBusy?: boolean;
  /** Every non-public route needs `Authorization: Bearer <token>` when set. */
  token: string | undefined;
  maxBodyBytes: number;
  /** Seconds a client has to send a whole request (headers within the smaller of this and 10 s). */
  requestTimeoutS: number;
  routes: readonly Route[];
  /** Each answered request: the route's pattern (or "unmatched"), the status, the milliseconds. */
  observe?(route: string, method: string, status: number, ms: number): void;
  /** An unexpected (5xx) failure. */
  onError?(route: string, error: unknown): void;
}

export interface HttpServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/** Whether the request carries the token (both sides hashed first, so the comparison takes the same time). */
function authorized(request: Request, expected: Buffer): boolean {
  const header = request.headers.get("authorization") ?? "";
  const match = /^Bearer\s+(.+)$/i.exec(header.trim());
  return match !== null && timingSafeEqual(digest(match[1]!), expected);
}

const UNAUTHORIZED = () =>
  new HttpError(401, "unauthorized", "this API needs the service's bearer token", {
    fix: "send Authorization: Bearer <token> (the token is in the file http.token_file names, or FLORENCE_EDGE_HTTP_TOKEN)",
    headers: { "WWW-Authenticate": 'Bearer realm="florence-edge"' },
  });

type Env = { Variables: { route: string } };

function buildApp(options: HttpServerOptions): Hono<Env> {
  const app = new Hono<Env>();
  const expected = options.token !== undefined ? digest(options.token) : undefined;
  app.use("*", async (c, next) => {
    const started = performance.now();
    await next();
    // a refused upload may not have been read to its end: the connection cannot carry another request after it
    if (c.req.method === "POST" && c.res.status >= 400) c.res.headers.set("Connection", "close");
    options.observe?.(c.get("route") ?? "unmatched", c.req.method, c.res.status, performance.now() - started);
  });
  app.use("*", secureHeaders({ crossOriginResourcePolicy: "same-origin", referrerPolicy: "no-referrer", xFrameOptions: "DENY", strictTransportSecurity: false }));
  const limit = bodyLimit({
    maxSize: options.maxBodyBytes,
    onError: () => errorResponse(new HttpError(413, "body_too_large", `the request body is over the limit of ${options.maxBodyBytes} bytes`, { fix: "send smaller or fewer images, or raise http.max_body_bytes" })),
  });
  const methods = new Map<string, string[]>();
  for (const route of options.routes) {
    methods.set(route.path, [...(methods.get(route.path) ?? []), route.method]);
    const handler = async (c: Context<Env>) => {
      c.set("route", route.path);
      if (!route.public && expected !== undefined && !authorized(c.req.raw, expected)) return errorResponse(UNAUTHORIZED());
      return route.handle(c.req.raw, c.req.param() as Record<string, string>);
    };
    if (route.method === "POST") app.post(route.path, limit, handler);
    else app.get(route.path, handler);
  }
  for (const [path, allowed] of methods) {
    app.all(path, (c) => {
      c.set("route", path);
      return errorResponse(new HttpError(405, "method_not_allowed", `${path} takes ${allowed.join(" or ")}`, { headers: { Allow: allowed.join(", ") } }));
    });
  }
  app.notFound((c) => errorResponse(new HttpError(404, "not_found", `nothing at ${c.req.method} ${new URL(c.req.url).pathname.slice(0, 200)}`, { fix: "the endpoints are listed in the README (the live view is at /)" })));
  app.onError((error, c) => {
    const response = errorResponse(error);
    if (response.status >= 500) options.onError?.(c.get("route") ?? "unmatched", error);
    return response;
  });
  return app;
}

function listen(app: Hono<Env>, options: HttpServerOptions, port: number): Promise<ServerType> {
  const timeoutMs = Math.round(options.requestTimeoutS * 1000);
  return new Promise<ServerType>((resolve, reject) => {
    const server = serve({
      fetch: app.fetch,
      hostname: options.host,
      port,
      serverOptions: { requestTimeout: timeoutMs, headersTimeout: Math.min(timeoutMs, 10_000), keepAliveTimeout: 5_000, connectionsCheckingInterval: Math.min(1_000, timeoutMs) },
    });
    server.once("error", reject);
    server.once("listening", () => {
      server.off("error", reject);
      resolve(server);
    });
  });
}

/** Starts serving the routes; resolves once listening (on a free port when `port` is busy and that is allowed). */
export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const app = buildApp(options);
  let server: ServerType;
  try {
    server = await listen(app, options, options.port);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE" && options.anyPortIfBusy) server = await listen(app, options, 0);
    else {
      throw new FlorenceError("CONFIG_INVALID", `cannot serve HTTP on ${options.host}:${options.port}: ${code ?? (error as Error).message}`, {
        fix: code === "EADDRINUSE" ? "pick another http.port (or --http-port) or stop what uses it" : "check http.host is an address of this machine",
        cause: error,
      });
    }
  }
  const port = (server.address() as AddressInfo).port;
  const urlHost = options.host.includes(":") ? `[${options.host}]` : options.host === "0.0.0.0" ? "127.0.0.1" : options.host;
  return {
    url: `http://${urlHost}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      }),
  };
}
