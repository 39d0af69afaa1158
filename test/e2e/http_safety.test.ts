/**
 * Safe by default, request by request: `florence-edge serve` with a bearer token, small limits and a camera running,
 * sent each thing a careless or hostile client might send — no token or a wrong one, a body over the limit (with
 * and without Content-Length), a decompression bomb, malformed base64, something that is not an image, an unknown
 * task, broken JSON, image URLs pointing into the machine, a client that stalls mid-request, paths that try to climb
 * out of the web folder. Each gets a 4xx whose message says what was wrong and how to fix it; the camera keeps
 * publishing throughout; the token appears in no answer, page or log line; and binding beyond loopback without a
 * token is refused at start.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import { connect } from "node:net";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { promisify } from "node:util";
import { demoImagesDir, demoModelDir } from "../../src/paths.ts";
import { REPO_ROOT } from "../support/paths.ts";
import { demoCameraYaml, type ServiceProcess, startService } from "../support/service_process.ts";

const TOKEN = "tok-3f9a1c7e5b2d4e6f8a0b1c2d3e4f5a6b";
const MAX_BODY = 3 << 20;
const MAX_PIXELS = 2_000_000;
const JPEG = readFileSync(join(demoImagesDir(), "shapes-0.jpg"));
const AUTH = { Authorization: `Bearer ${TOKEN}` };

let service: ServiceProcess;
let imageServer: Server;
let imagePort = 0;
/** Every answer body received, to prove the token is in none of them. */
const bodies: string[] = [];

function config(tokenFile: string): string {
  return [
    `model: { path: ${JSON.stringify(demoModelDir())} }`,
    `http: { port: 0, token_file: ${JSON.stringify(tokenFile)}, max_body_bytes: ${MAX_BODY}, max_pixels: ${MAX_PIXELS}, request_timeout_s: 2, remote_images: true }`,
    demoCameraYaml("gate", demoImagesDir(), ["<OD>"]),
  ].join("\n");
}

function chat(imageUrl: string, text = "<OD>"): string {
  return JSON.stringify({ model: "florence-2", messages: [{ role: "user", content: [{ type: "text", text }, { type: "image_url", image_url: { url: imageUrl } }] }] });
}

async function send(path: string, init: RequestInit = {}): Promise<{ status: number; body: string; headers: Headers }> {
  const response = await fetch(`${service.url}${path}`, init);
  const body = await response.text();
  bodies.push(body);
  return { status: response.status, body, headers: response.headers };
}

function errorMessage(body: string): string {
  return (JSON.parse(body) as { error: { message: string } }).error.message;
}

/** A raw HTTP exchange over TCP, so paths reach the server exactly as written (fetch would normalise them). */
function raw(request: string, options: { waitMs?: number } = {}): Promise<{ text: string; closedAfterMs: number }> {
  const { port, hostname } = new URL(service.url);
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect(Number(port), hostname);
    let text = "";
    socket.on("data", (d) => (text += d.toString("latin1")));
    socket.on("error", reject);
    let timer: ReturnType<typeof setTimeout> | undefined;
    socket.on("close", () => {
      clearTimeout(timer);
      bodies.push(text);
      resolve({ text, closedAfterMs: Date.now() - started });
    });
    socket.write(request);
    if (options.waitMs === undefined) socket.end();
    else timer = setTimeout(() => socket.destroy(), options.waitMs);
  });
}

function crc32(bytes: Uint8Array): number {
  let crc = ~0;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return ~crc >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "latin1");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/** A PNG that says it is 50000×50000 RGB (7.5 GB decoded) in a few dozen bytes: a decompression bomb's header. */
function bombPng(): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(50_000, 0);
  ihdr.writeUInt32BE(50_000, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IDAT", Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])), chunk("IEND", Buffer.alloc(0))]);
}

async function cameraFrames(): Promise<number> {
  const answer = await send("/api/cameras", { headers: AUTH });
  return (JSON.parse(answer.body) as { cameras: { frames_processed: number }[] }).cameras[0]!.frames_processed;
}

test.before(async () => {
  imageServer = createServer((_req, res) => res.writeHead(200, { "Content-Type": "image/jpeg" }).end(JPEG));
  await new Promise<void>((resolve) => imageServer.listen(0, "127.0.0.1", () => resolve()));
  imagePort = (imageServer.address() as { port: number }).port;
  const dir = process.env["TMPDIR"] ?? "/tmp";
  const tokenFile = join(dir, `fe-token-${process.pid}`);
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  service = await startService(config(tokenFile));
});

test.after(async () => {
  await new Promise((resolve) => imageServer?.close(resolve));
  const code = await service?.stop();
  assert.is(code, 0);
  const { stdout, stderr } = service.output();
  assert.not.ok(stdout.includes(TOKEN) || stderr.includes(TOKEN), "the token is in no log line");
  assert.not.ok(bodies.some((b) => b.includes(TOKEN)), "the token is in no answer");
});

test("the bearer token: none or a wrong one is 401 with WWW-Authenticate; the page shell and /healthz need none", async () => {
  for (const headers of [{} as Record<string, string>, { Authorization: "Bearer wrong-token-of-some-length" }, { Authorization: TOKEN }, { Authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString("base64")}` }]) {
    for (const path of ["/api/cameras", "/metrics", "/v1/models"]) {
      const answer = await send(path, { headers });
      assert.is(answer.status, 401, `${path} ${JSON.stringify(headers).slice(0, 30)}`);
      assert.is(answer.headers.get("www-authenticate"), 'Bearer realm="florence-edge"');
      assert.match(errorMessage(answer.body), /needs the service's bearer token — send Authorization: Bearer <token>/);
    }
  }
  const chatAnswer = await send("/v1/chat/completions", { method: "POST", body: chat(`data:image/jpeg;base64,${JPEG.toString("base64")}`) });
  assert.is(chatAnswer.status, 401);
  for (const path of ["/", "/app.js", "/style.css", "/healthz"]) assert.is((await send(path)).status, 200, path);
  assert.is((await send("/v1/models", { headers: AUTH })).status, 200);
  assert.is((await send("/api/cameras", { headers: { Authorization: `bearer   ${TOKEN}` } })).status, 200);
});

test("bodies over the limit are refused with 413 before they are read, with Content-Length or chunked", async () => {
  const big = new Uint8Array(MAX_BODY + 1024).fill(65);
  const sized = await send("/v1/chat/completions", { method: "POST", headers: { ...AUTH, "Content-Type": "application/json" }, body: big });
  assert.is(sized.status, 413);
  assert.match(errorMessage(sized.body), new RegExp(`over the limit of ${MAX_BODY} bytes — send smaller or fewer images, or raise http.max_body_bytes`));
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let i = 0; i < 8; i++) controller.enqueue(new Uint8Array(MAX_BODY / 4).fill(66));
      controller.close();
    },
  });
  const chunked = await send("/api/infer", { method: "POST", headers: AUTH, body: stream, duplex: "half" } as RequestInit);
  assert.is(chunked.status, 413);
});

test("a decompression bomb, an oversized image, malformed base64 and a non-image are refused by their headers, with reasons", async () => {
  const bomb = bombPng();
  assert.ok(bomb.length < 100);
  const cases: [string, number, RegExp][] = [
    [chat(`data:image/png;base64,${bomb.toString("base64")}`), 413, /50000x50000 \(2500000000 pixels\), more than the limit of 2000000 — downscale it first/],
    [chat(`data:image/jpeg;base64,${JPEG.toString("base64").slice(0, 200)}!!${JPEG.toString("base64").slice(200)}`), 400, /base64 image data is malformed \("!" at character 200\)/],
    [chat(`data:image/jpeg;base64,${Buffer.from("just some text, not a picture").toString("base64")}`), 400, /not an image/],
    [chat("data:image/jpeg,rawbytes"), 400, /is not a base64 data URL/],
    [chat(`data:image/jpeg;base64,${JPEG.toString("base64")}`, "<RM_RF> /"), 400, /unknown Florence-2 task <RM_RF>/],
    [chat(`data:image/jpeg;base64,${JPEG.toString("base64")}`, "<REGION_TO_CATEGORY> the left half"), 400, /REGION_TO_CATEGORY/],
    ['{"model": "x", "messages": [', 400, /body: is not valid JSON/],
    ["", 400, /body: is empty/],
    ['{"model": "x", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}', 400, /unsupported content part "input_audio"/],
    [JSON.stringify({ model: "x", n: 3, messages: [] }), 400, /messages: must be a non-empty list/],
    [chat(`http://127.0.0.1:${imagePort}/frame.jpg`), 400, /resolves to 127\.0\.0\.1, a loopback, private or link-local address — fetch the image yourself/],
    [chat(`http://localhost:${imagePort}/frame.jpg`), 400, /a loopback, private or link-local address/],
    [chat("file:///etc/passwd"), 400, /neither a data URL nor an http\(s\) URL/],
  ];
  for (const [body, status, message] of cases) {
    const answer = await send("/v1/chat/completions", { method: "POST", headers: { ...AUTH, "Content-Type": "application/json" }, body });
    assert.is(answer.status, status, `${body.slice(0, 60)} → ${answer.body.slice(0, 200)}`);
    assert.match(errorMessage(answer.body), message);
  }
  const upload = await send("/api/infer?task=od", { method: "POST", headers: AUTH, body: new Uint8Array(bombPng()) });
  assert.is(upload.status, 413);
});

test("a client that stalls mid-headers or mid-body is cut off (408) within the request timeout; others are served meanwhile", async () => {
  const stalledHeaders = raw(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n`, { waitMs: 15_000 });
  const stalledBody = raw(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"model":`, { waitMs: 15_000 });
  assert.is((await send("/healthz")).status, 200, "served while two clients stall");
  for (const stalled of await Promise.all([stalledHeaders, stalledBody])) {
    assert.ok(stalled.closedAfterMs < 10_000, `closed by the server after ${stalled.closedAfterMs} ms`);
    assert.match(stalled.text, /^HTTP\/1\.1 408/);
  }
});

test("no path leaves the web folder: climbing, encoded and doubled paths are 404 and reveal nothing", async () => {
  const paths = ["/../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/app.js/../../package.json", "/..%2f..%2fpackage.json", "//etc/passwd", "/web/app.js", "/src/paths.ts", "/api/cameras/..%2F..%2F..%2Fetc%2Fpasswd/latest.jpg", "/api/cameras/%2e%2e/results", "/index.html%00.js"];
  for (const path of paths) {
    const { text } = await raw(`GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`);
    const status = Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1]);
    assert.ok(status === 404 || status === 400, `${path} → ${status}`);
    assert.not.match(text, /root:.*:0:0:|"name": "florence-edge"|export function/, path);
  }
});

test("through all of that the camera kept going; the page holds no token", async () => {
  const before = await cameraFrames();
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok((await cameraFrames()) > before, "frames are still being processed");
  assert.is(service.child.exitCode, null);
  assert.not.ok((await send("/")).body.includes(TOKEN));
});

test("binding beyond loopback without a token is refused at start, naming the fix", async () => {
  const run = promisify(execFile);
  try {
    await run(process.execPath, [join(REPO_ROOT, "dist", "src", "bin.js"), "serve", "--model", demoModelDir(), "--http-host", "0.0.0.0", "--http-port", "0"], { env: { ...process.env, FLORENCE_EDGE_HTTP_TOKEN: "" }, timeout: 30_000 });
    assert.unreachable("serve must refuse to start");
  } catch (error) {
    const e = error as { code: number; stderr: string };
    assert.ok(e.code !== 0, `exit code ${e.code}`);
    assert.match(e.stderr, /http\.host: 0\.0\.0\.0 is reachable from other machines, so the API needs a bearer token — put one in a file and set http\.token_file/);
  }
});

test.run();
