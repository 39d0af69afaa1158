/**
 * The service's config tree: a YAML or JSON file, overridden by command-line flags, with secrets from the
 * environment or files. Every value is validated; an error names the path of the bad key ("cameras[1].tasks[0].task")
 * and how to fix it. Unknown keys are errors too (a typo must not be silently ignored).
 */
import { readFileSync, statSync } from "node:fs";
import { isIPv4 } from "node:net";
import { parse as parseYaml } from "yaml";
import { FlorenceError } from "../errors.ts";
import { checkOnlyKeys, isRecord, readBoolean, readChoice, readMapping, readNumber, readString, reject, type NumberRange, type Where } from "../validate.ts";
import { PRECISIONS, type Precision } from "../florence/model_files.ts";
import { isTaskToken, TASKS } from "../florence/tasks.ts";
import type { ZoneSpec } from "../events/zones.ts";
import { checkZoneNames, type EventsConfig, parseEvents, parseZones } from "./events_config.ts";
import { maskUrl } from "./redact.ts";
import { normalizeCommon, normalizeSpec, SOURCE_DEFAULTS, type BackoffOptions, type SourceSpec, type SourceType } from "./sources/spec.ts";

/** A camera's source: the sources' own spec (sources/spec.ts), parsed straight from YAML; defaults live there. */
export type SourceConfig = SourceSpec;

export interface TaskSchedule {
  task: string;
  text: string | undefined;
  /** 0: every frame the loop can take; else at most once per interval. */
  intervalS: number;
  snapshot: boolean;
}

export interface CameraConfig {
  name: string;
  source: SourceConfig;
  decoder: "auto" | "ffmpeg" | "gstreamer";
  tasks: TaskSchedule[];
  stallTimeoutS: number;
  /** Restart pacing (sources/spec.ts BackoffOptions); undefined: the sources' defaults. */
  backoff?: BackoffOptions | undefined;
  /** Largest frame a source reassembles; undefined: the sources' default. */
  maxFrameBytes?: number | undefined;
  /** Tracked objects and their events (events_config.ts). */
  events: EventsConfig;
  zones: ZoneSpec[];
}

export interface MqttConfig {
  /** undefined: start the embedded broker on 127.0.0.1. */
  url: string | undefined;
  topicPrefix: string;
  clientId: string | undefined;
  username: string | undefined;
  password: string | undefined;
  tls: { ca: string | undefined; cert: string | undefined; key: string | undefined; rejectUnauthorized: boolean };
  protocol: "auto" | 4 | 5;
  qos: { results: 0 | 1 | 2; snapshot: 0 | 1 | 2; status: 0 | 1 | 2; stats: 0 | 1 | 2; events: 0 | 1 | 2 };
  retain: { results: boolean; snapshot: boolean };
  offlineQueue: { maxMessages: number; maxBytes: number };
  discovery: { enabled: boolean; prefix: string };
}

/** The HTTP face (src/service/http/): OpenAI- and NVIDIA-compatible endpoints, the live view, the APIs. */
export interface HttpConfig {
  enabled: boolean;
  host: string;
  port: number;
  /** The demo's port may be taken by something else: then any free port (npm start), else a clear error. */
  anyPortIfBusy: boolean;
  /** Bearer token every API call must carry; required when `host` is not a loopback address. */
  token: string | undefined;
  maxBodyBytes: number;
  /** Largest image accepted, in pixels, read from its header before decoding. */
  maxPixels: number;
  maxImages: number;
  /** Requests waiting for the model at most (one queue with the MQTT `infer` commands); beyond it: 429. */
  queueSize: number;
  /** A request must arrive whole within this (slow or stalled clients are cut off). */
  requestTimeoutS: number;
  /** The task of a chat request whose text names none. */
  defaultTask: string;
  /** Fetch http(s) image URLs of chat requests (off: data URLs only). */
  remoteImages: boolean;
  /** …also from loopback, private and link-local addresses. */
  privateAddresses: boolean;
}

export interface ServiceConfig {
  model: {
    path: string | undefined;
    precision: Precision;
    backend: "auto" | "onnxruntime" | "tensorrt";
    threads: number | undefined;
    resize: "pil" | "torchvision" | "fast";
    thread: "worker" | "main";
    /** TensorRT: decoder steps replayed as CUDA graphs (0: none). */
    cudaGraphSteps: number;
    /** TensorRT: mapped host memory instead of copies (auto: on Jetson). */
    zeroCopy: "auto" | "on" | "off";
  };
  generation: { numBeams: number | undefined; maxNewTokens: number | undefined };
  postprocess: { coordinates: "float" | "int"; scores: boolean };
  mqtt: MqttConfig;
  cameras: CameraConfig[];
  /** No camera is configured (no `cameras` list, no --source): the service plays the bundled demo clip. */
  demoCamera: boolean;
  http: HttpConfig;
  statsIntervalS: number;
  metrics: { port: number | undefined; host: string };
  log: { level: "debug" | "info" | "warn" | "error"; format: "auto" | "json" | "text" };
  /** Where the config came from, for messages. */
  source: string;
}

/** Command-line overrides: the stable `serve` flags. */
export interface ServeFlags {
  config?: string;
  model?: string;
  source?: string;
  mqtt?: string;
  topicPrefix?: string;
  camera?: string;
  task?: string[];
  text?: string;
  interval?: number;
  metricsPort?: number;
  /** Turns the HTTP face on at this port. */
  httpPort?: number;
  httpHost?: string;
  logLevel?: string;
  logFormat?: string;
  precision?: string;
  backend?: string;
}

type Obj = Record<string, unknown>;

// The config's own wording on the shared checks (validate.ts): errors name the key's path, "cameras[0].tasks: …",
// and an empty YAML value (null) counts as missing.
function at(path: string): Where {
  return { name: path, code: "CONFIG_INVALID" };
}

function fail(path: string, message: string, fix?: string): never {
  return reject(at(path), message, { fix });
}

function object(value: unknown, path: string): Obj {
  return readMapping(at(path), value);
}

function onlyKeys(obj: Obj, path: string, keys: readonly string[]): void {
  checkOnlyKeys(at(path), obj, keys);
}

function str(obj: Obj, key: string, path: string, fallback?: string): string | undefined {
  return readString(at(`${path}.${key}`), obj[key] ?? undefined, { fallback });
}

function num(obj: Obj, key: string, path: string, range: NumberRange, fallback?: number): number | undefined {
  return readNumber(at(`${path}.${key}`), obj[key] ?? undefined, range, fallback);
}

function bool(obj: Obj, key: string, path: string, fallback: boolean): boolean {
  return readBoolean(at(`${path}.${key}`), obj[key] ?? undefined, fallback);
}

function oneOf<T extends string | number>(obj: Obj, key: string, path: string, choices: readonly T[], fallback: T): T {
  return readChoice(at(`${path}.${key}`), obj[key] ?? undefined, choices, fallback);
}

function qos(obj: Obj, key: string, path: string, fallback: 0 | 1 | 2): 0 | 1 | 2 {
  return oneOf(obj, key, path, [0, 1, 2] as const, fallback);
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Guesses a source from the `--source` flag: a URL scheme, a device, a folder or a file. */
export function sourceFromString(value: string, path = "--source"): SourceConfig {
  if (/^rtsps?:\/\//i.test(value)) return { type: "rtsp", url: value, transport: SOURCE_DEFAULTS.rtsp.transport };
  if (/^https?:\/\//i.test(value)) return { type: "http", url: value, intervalS: SOURCE_DEFAULTS.http.intervalS };
  const csi = /^csi:\/\/(\d+)$/i.exec(value);
  if (csi) return { type: "csi", sensorId: Number(csi[1]), width: SOURCE_DEFAULTS.csi.width, height: SOURCE_DEFAULTS.csi.height, fps: SOURCE_DEFAULTS.csi.fps };
  if (/^\/dev\/video\d+$/.test(value)) return { type: "v4l2", device: value, format: SOURCE_DEFAULTS.v4l2.format, width: undefined, height: undefined, fps: undefined };
  let isDir = false;
  try {
    isDir = statSync(value).isDirectory();
  } catch {
    fail(path, `${JSON.stringify(value)} is not a URL (rtsp://, http://), a device (/dev/videoN, csi://N), a folder or an existing file`);
  }
  return isDir ? { type: "folder", path: value } : { type: "file", path: value };
}

const VIDEO_OUTPUT_KEYS = { output: "output", width: "width", height: "height", jpeg_quality: "jpegQuality" } as const;
/** Every source option, by type: the YAML key (snake case) and the spec's field. */
const SOURCE_KEYS: Record<SourceType, Record<string, string>> = {
  file: { path: "path", loop: "loop", fps: "fps", realtime: "realtime", ...VIDEO_OUTPUT_KEYS },
  folder: { path: "path", loop: "loop", fps: "fps" },
  rtsp: { url: "url", transport: "transport", timeout_s: "timeoutS", fps: "fps", codec: "codec", latency_ms: "latencyMs", username: "username", password: "password", ...VIDEO_OUTPUT_KEYS },
  v4l2: { device: "device", format: "format", fps: "fps", ...VIDEO_OUTPUT_KEYS },
  csi: { sensor_id: "sensorId", width: "width", height: "height", fps: "fps", flip_method: "flipMethod", output: "output", jpeg_quality: "jpegQuality" },
  http: { url: "url", interval_s: "intervalS", timeout_s: "timeoutS", username: "username", password: "password", headers: "headers" },
};
/** The fields a parsed source always carries (the default, or undefined where the source decides), so that a
 * camera's config shows its capture settings; other options appear when set. */
const ALWAYS: Record<SourceType, readonly string[]> = {
  file: ["path", "loop", "fps"],
  folder: ["path", "loop", "fps"],
  rtsp: ["url", "transport"],
  v4l2: ["device", "format", "width", "height", "fps"],
  csi: ["sensorId", "width", "height", "fps"],
  http: ["url", "intervalS"],
};
const REQUIRED: Partial<Record<SourceType, [string, string | undefined]>> = {
  file: ["path", undefined],
  folder: ["path", undefined],
  rtsp: ["url", "e.g. rtsp://user:pass@camera/stream"],
  http: ["url", undefined],
};

/** Validates with the sources' own rules, naming the config path. */
function checked<T>(path: string, check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (!(error instanceof FlorenceError)) throw error;
    throw new FlorenceError("CONFIG_INVALID", `${path}: ${error.message.replace(/^camera "[^"]*": /, "")}`);
  }
}

function parseSource(value: unknown, path: string, camera: string): SourceConfig {
  if (typeof value === "string") return sourceFromString(value, path);
  const obj = object(value, path);
  const type = oneOf(obj, "type", path, ["file", "folder", "rtsp", "v4l2", "csi", "http"] as const, "file");
  if (obj["type"] === undefined) fail(`${path}.type`, "is required", "one of file, folder, rtsp, v4l2, csi, http");
  const keys = SOURCE_KEYS[type];
  onlyKeys(obj, path, ["type", ...Object.keys(keys)]);
  const required = REQUIRED[type];
  if (required !== undefined) str(obj, required[0], path) ?? fail(`${path}.${required[0]}`, "is required", required[1]);
  const spec: Record<string, unknown> = { type };
  const defaults: Record<string, unknown> = SOURCE_DEFAULTS[type];
  for (const field of ALWAYS[type]) spec[field] = defaults[field];
  for (const [key, field] of Object.entries(keys)) if (obj[key] !== undefined && obj[key] !== null) spec[field] = obj[key];
  checked(path, () => normalizeSpec({ ...(spec as unknown as SourceSpec), camera }));
  return spec as unknown as SourceConfig;
}

function parseTask(value: unknown, path: string): TaskSchedule {
  const obj: Obj = typeof value === "string" ? { task: value } : object(value, path);
  onlyKeys(obj, path, ["task", "text", "interval_s", "snapshot"]);
  const task = str(obj, "task", path) ?? fail(`${path}.task`, "is required", 'e.g. task: "<OD>"');
  if (!isTaskToken(task)) fail(`${path}.task`, `unknown task ${JSON.stringify(task)}`, `use one of ${Object.keys(TASKS).join(" ")}`);
  const text = str(obj, "text", path);
  if (text !== undefined && text.length > 512) fail(`${path}.text`, `is ${text.length} characters; at most 512`);
  return { task, text, intervalS: num(obj, "interval_s", path, { min: 0, max: 86400 }, 0)!, snapshot: bool(obj, "snapshot", path, false) };
}

function parseCamera(value: unknown, path: string): CameraConfig {
  const obj = object(value, path);
  onlyKeys(obj, path, ["name", "source", "decoder", "tasks", "stall_timeout_s", "backoff", "max_frame_bytes", "events", "zones"]);
  const name = str(obj, "name", path) ?? fail(`${path}.name`, "is required", "a short name: letters, digits, _ and -");
  if (!NAME.test(name)) fail(`${path}.name`, `${JSON.stringify(name)} is not a valid camera name`, "use 1-64 letters, digits, _ or - (it becomes an MQTT topic segment)");
  if (obj["source"] === undefined) fail(`${path}.source`, "is required", "e.g. source: rtsp://camera/stream");
  const tasksValue = obj["tasks"] ?? ["<OD>"];
  if (!Array.isArray(tasksValue) || tasksValue.length === 0) fail(`${path}.tasks`, "must be a non-empty list of tasks");
  const backoffRaw = object(obj["backoff"], `${path}.backoff`);
  onlyKeys(backoffRaw, `${path}.backoff`, ["initial_s", "max_s", "healthy_s"]);
  const backoff = obj["backoff"] === undefined ? undefined : { initialS: num(backoffRaw, "initial_s", `${path}.backoff`, { min: 0.01, max: 3600 }), maxS: num(backoffRaw, "max_s", `${path}.backoff`, { min: 0.01, max: 86400 }), healthyS: num(backoffRaw, "healthy_s", `${path}.backoff`, { min: 0.01, max: 86400 }) };
  const maxFrameBytes = num(obj, "max_frame_bytes", path, { min: 1024, max: 2 ** 31, int: true });
  const source = parseSource(obj["source"], `${path}.source`, name);
  checked(path, () => normalizeCommon({ ...source, camera: name, backoff, maxFrameBytes }));
  const tasks = tasksValue.map((t, i) => parseTask(t, `${path}.tasks[${i}]`));
  return {
    name,
    source,
    decoder: oneOf(obj, "decoder", path, ["auto", "ffmpeg", "gstreamer"] as const, "auto"),
    tasks,
    events: parseEvents(obj["events"], `${path}.events`, tasks.map((t) => t.task)),
    zones: parseZones(obj["zones"], `${path}.zones`),
    stallTimeoutS: num(obj, "stall_timeout_s", path, { min: 1, max: 3600 }, 10)!,
    ...(backoff !== undefined ? { backoff } : {}),
    ...(maxFrameBytes !== undefined ? { maxFrameBytes } : {}),
  };
}

/** Reads a secret given inline, as `*_file` (a path whose trimmed content is the secret), or from the environment. */
function secret(obj: Obj, key: string, path: string, env: Record<string, string | undefined>, envName: string): string | undefined {
  const fileKey = `${key}_file`;
  const file = str(obj, fileKey, path);
  if (file !== undefined) {
    try {
      return readFileSync(file, "utf8").trim();
    } catch (cause) {
      throw new FlorenceError("CONFIG_INVALID", `${path}.${fileKey}: cannot read ${file}: ${(cause as Error).message}`, { fix: "check the path and that the service user may read it", cause });
    }
  }
  return str(obj, key, path) ?? (env[envName] || undefined);
}

const LOOPBACK_NAMES = new Set(["localhost", "::1", "[::1]"]);

/** Whether only this machine can reach an address: 127.0.0.0/8, ::1, localhost. */
export function isLoopbackHost(host: string): boolean {
  return LOOPBACK_NAMES.has(host.toLowerCase()) || (isIPv4(host) && host.startsWith("127."));
}

const HTTP_KEYS = ["enabled", "host", "port", "token", "token_file", "max_body_bytes", "max_pixels", "max_images", "queue_size", "request_timeout_s", "default_task", "remote_images", "private_addresses"];
const MIN_TOKEN_CHARS = 16;

/** The `http` section; on by default when the section is there, --http-port is given, or in the demo. */
function parseHttp(obj: Obj, present: boolean, demo: boolean, env: Record<string, string | undefined>): HttpConfig {
  const path = "http";
  onlyKeys(obj, path, HTTP_KEYS);
  const host = str(obj, "host", path, "127.0.0.1")!;
  if (/[\s/]/.test(host)) fail(`${path}.host`, `${JSON.stringify(host)} is not an address to bind`, "use 127.0.0.1 (default), 0.0.0.0, :: or an address of this machine");
  const token = secret(obj, "token", path, env, "FLORENCE_EDGE_HTTP_TOKEN");
  if (token !== undefined && token.length < MIN_TOKEN_CHARS) fail(`${path}.token`, `is ${token.length} characters; at least ${MIN_TOKEN_CHARS}`, "generate one: openssl rand -hex 32");
  const enabled = bool(obj, "enabled", path, present || demo);
  if (enabled && token === undefined && !isLoopbackHost(host)) {
    fail(`${path}.host`, `${host} is reachable from other machines, so the API needs a bearer token`, "put one in a file and set http.token_file (or FLORENCE_EDGE_HTTP_TOKEN in the service's environment), or bind 127.0.0.1");
  }
  const defaultTask = str(obj, "default_task", path, "<MORE_DETAILED_CAPTION>")!;
  if (!isTaskToken(defaultTask)) fail(`${path}.default_task`, `unknown task ${JSON.stringify(defaultTask)}`, `use one of ${Object.keys(TASKS).join(" ")}`);
  return {
    enabled,
    host,
    port: num(obj, "port", path, { min: 0, max: 65535, int: true }, 8080)!,
    anyPortIfBusy: demo && obj["port"] === undefined,
    token,
    maxBodyBytes: num(obj, "max_body_bytes", path, { min: 1024, max: 1 << 30, int: true }, 32 << 20)!,
    maxPixels: num(obj, "max_pixels", path, { min: 1, max: 1 << 30, int: true }, 40_000_000)!,
    maxImages: num(obj, "max_images", path, { min: 1, max: 64, int: true }, 16)!,
    queueSize: num(obj, "queue_size", path, { min: 1, max: 1024, int: true }, 16)!,
    requestTimeoutS: num(obj, "request_timeout_s", path, { min: 1, max: 3600 }, 30)!,
    defaultTask,
    remoteImages: bool(obj, "remote_images", path, false),
    privateAddresses: bool(obj, "private_addresses", path, false),
  };
}

function parseMqtt(value: unknown, env: Record<string, string | undefined>): MqttConfig {
  const path = "mqtt";
  const obj = object(value, path);
  onlyKeys(obj, path, ["url", "topic_prefix", "client_id", "username", "password", "password_file", "tls", "protocol", "qos", "retain", "offline_queue", "discovery"]);
  const url = str(obj, "url", path) ?? (env["FLORENCE_EDGE_MQTT_URL"] || undefined);
  if (url !== undefined && !/^(mqtts?|wss?|tcp|ssl):\/\/[^\s]+$/i.test(url)) fail(`${path}.url`, `${JSON.stringify(maskUrl(url))} is not an MQTT URL`, "e.g. mqtt://homeassistant.local:1883 or mqtts://broker:8883");
  const prefix = str(obj, "topic_prefix", path, "florence-edge")!;
  if (/[#+\s]/.test(prefix) || prefix.startsWith("/") || prefix.endsWith("/")) fail(`${path}.topic_prefix`, `${JSON.stringify(prefix)} may not contain # + or spaces, nor start or end with /`);
  const tls = object(obj["tls"], `${path}.tls`);
  onlyKeys(tls, `${path}.tls`, ["ca", "cert", "key", "reject_unauthorized"]);
  const q = object(obj["qos"], `${path}.qos`);
  onlyKeys(q, `${path}.qos`, ["results", "snapshot", "status", "stats", "events"]);
  const r = object(obj["retain"], `${path}.retain`);
  onlyKeys(r, `${path}.retain`, ["results", "snapshot"]);
  const oq = object(obj["offline_queue"], `${path}.offline_queue`);
  onlyKeys(oq, `${path}.offline_queue`, ["max_messages", "max_bytes"]);
  const d = object(obj["discovery"], `${path}.discovery`);
  onlyKeys(d, `${path}.discovery`, ["enabled", "prefix"]);
  const protocol = obj["protocol"] === undefined ? "auto" : oneOf(obj, "protocol", path, ["auto", 4, 5] as const, "auto");
  return {
    url,
    topicPrefix: prefix,
    clientId: str(obj, "client_id", path),
    username: str(obj, "username", path) ?? (env["FLORENCE_EDGE_MQTT_USERNAME"] || undefined),
    password: secret(obj, "password", path, env, "FLORENCE_EDGE_MQTT_PASSWORD"),
    tls: { ca: str(tls, "ca", `${path}.tls`), cert: str(tls, "cert", `${path}.tls`), key: str(tls, "key", `${path}.tls`), rejectUnauthorized: bool(tls, "reject_unauthorized", `${path}.tls`, true) },
    protocol,
    qos: { results: qos(q, "results", `${path}.qos`, 0), snapshot: qos(q, "snapshot", `${path}.qos`, 0), status: qos(q, "status", `${path}.qos`, 1), stats: qos(q, "stats", `${path}.qos`, 0), events: qos(q, "events", `${path}.qos`, 1) },
    retain: { results: bool(r, "results", `${path}.retain`, false), snapshot: bool(r, "snapshot", `${path}.retain`, false) },
    offlineQueue: {
      maxMessages: num(oq, "max_messages", `${path}.offline_queue`, { min: 0, max: 1_000_000, int: true }, 1000)!,
      maxBytes: num(oq, "max_bytes", `${path}.offline_queue`, { min: 0, max: 1 << 30, int: true }, 16 << 20)!,
    },
    discovery: { enabled: bool(d, "enabled", `${path}.discovery`, true), prefix: str(d, "prefix", `${path}.discovery`, "homeassistant")! },
  };
}

/** Parses and validates a config document (already parsed YAML/JSON) plus flag overrides. */
export function buildServiceConfig(document: unknown, flags: ServeFlags, env: Record<string, string | undefined>, source: string): ServiceConfig {
  const root = object(document, "config");
  onlyKeys(root, "config", ["model", "generation", "postprocess", "mqtt", "cameras", "stats_interval_s", "metrics", "log", "http"]);
  const model = object(root["model"], "model");
  onlyKeys(model, "model", ["path", "precision", "backend", "threads", "resize", "thread", "cuda_graph_steps", "zero_copy"]);
  const generation = object(root["generation"], "generation");
  onlyKeys(generation, "generation", ["num_beams", "max_new_tokens"]);
  const postprocess = object(root["postprocess"], "postprocess");
  onlyKeys(postprocess, "postprocess", ["coordinates", "scores"]);
  const metrics = object(root["metrics"], "metrics");
  onlyKeys(metrics, "metrics", ["port", "host"]);
  const log = object(root["log"], "log");
  onlyKeys(log, "log", ["level", "format"]);

  // flags override the file: apply them to the raw document before validation so errors name the flag's key
  if (flags.model !== undefined) model["path"] = flags.model;
  if (flags.precision !== undefined) model["precision"] = flags.precision;
  if (flags.backend !== undefined) model["backend"] = flags.backend;
  const mqttRaw = object(root["mqtt"], "mqtt");
  if (flags.mqtt !== undefined) mqttRaw["url"] = flags.mqtt;
  if (flags.topicPrefix !== undefined) mqttRaw["topic_prefix"] = flags.topicPrefix;
  if (flags.metricsPort !== undefined) metrics["port"] = flags.metricsPort;
  const httpRaw = object(root["http"], "http");
  if (flags.httpPort !== undefined) httpRaw["port"] = flags.httpPort;
  if (flags.httpHost !== undefined) httpRaw["host"] = flags.httpHost;
  if (flags.logLevel !== undefined) log["level"] = flags.logLevel;
  if (flags.logFormat !== undefined) log["format"] = flags.logFormat;

  let camerasRaw = root["cameras"];
  if (flags.source !== undefined || flags.camera !== undefined || flags.task !== undefined) {
    // the single-camera flags: --source/--camera/--task describe one camera (replacing the file's list)
    const existing = Array.isArray(camerasRaw) ? (camerasRaw as unknown[]) : [];
    const named = flags.camera !== undefined ? existing.find((c) => isRecord(c) && c["name"] === flags.camera) : existing.length === 1 ? existing[0] : undefined;
    const base: Obj = isRecord(named) ? { ...named } : {};
    if (flags.camera !== undefined) base["name"] = flags.camera;
    base["name"] ??= "camera";
    if (flags.source !== undefined) base["source"] = flags.source;
    if (flags.task !== undefined) base["tasks"] = flags.task.map((task) => ({ task, ...(flags.text !== undefined ? { text: flags.text } : {}), ...(flags.interval !== undefined ? { interval_s: flags.interval } : {}) }));
    camerasRaw = [...existing.filter((c) => c !== named), base];
  }
  if (camerasRaw !== undefined && !Array.isArray(camerasRaw)) fail("cameras", "must be a list of cameras");
  const cameras = ((camerasRaw as unknown[] | undefined) ?? []).map((c, i) => parseCamera(c, `cameras[${i}]`));
  const names = new Set<string>();
  for (const [i, camera] of cameras.entries()) {
    if (names.has(camera.name)) fail(`cameras[${i}].name`, `${JSON.stringify(camera.name)} is used twice`, "camera names must be unique");
    names.add(camera.name);
  }
  checkZoneNames(cameras);
  // no camera list at all (an explicit `cameras: []` means none: an HTTP-only service)
  const demoCamera = camerasRaw === undefined || camerasRaw === null;
  const mqtt = parseMqtt(mqttRaw, env);
  return {
    model: {
      path: str(model, "path", "model"),
      precision: oneOf(model, "precision", "model", PRECISIONS, "fp32"),
      backend: oneOf(model, "backend", "model", ["auto", "onnxruntime", "tensorrt"] as const, "auto"),
      threads: num(model, "threads", "model", { min: 1, max: 1024, int: true }),
      resize: oneOf(model, "resize", "model", ["pil", "torchvision", "fast"] as const, "pil"),
      // inference beside MQTT and the sources (default), or on the main thread (debugging, profiling)
      thread: oneOf(model, "thread", "model", ["worker", "main"] as const, "worker"),
      cudaGraphSteps: num(model, "cuda_graph_steps", "model", { min: 0, max: 4096, int: true }, 128)!,
      zeroCopy: oneOf(model, "zero_copy", "model", ["auto", "on", "off"] as const, "auto"),
    },
    generation: {
      numBeams: num(generation, "num_beams", "generation", { min: 1, max: 16, int: true }),
      maxNewTokens: num(generation, "max_new_tokens", "generation", { min: 1, max: 4096, int: true }),
    },
    postprocess: { coordinates: oneOf(postprocess, "coordinates", "postprocess", ["float", "int"] as const, "float"), scores: bool(postprocess, "scores", "postprocess", true) },
    mqtt,
    cameras,
    demoCamera,
    http: parseHttp(httpRaw, root["http"] !== undefined || flags.httpPort !== undefined || flags.httpHost !== undefined, demoCamera && mqtt.url === undefined, env),
    statsIntervalS: num(root, "stats_interval_s", "config", { min: 1, max: 3600 }, 10)!,
    metrics: { port: num(metrics, "port", "metrics", { min: 0, max: 65535, int: true }), host: str(metrics, "host", "metrics", "127.0.0.1")! },
    log: { level: oneOf(log, "level", "log", ["debug", "info", "warn", "error"] as const, "info"), format: oneOf(log, "format", "log", ["auto", "json", "text"] as const, "auto") },
    source,
  };
}

/** Reads the config file (YAML or JSON by content) and applies flags and the environment. */
export function loadServiceConfig(flags: ServeFlags, env: Record<string, string | undefined>): ServiceConfig {
  const file = flags.config ?? (env["FLORENCE_EDGE_CONFIG"] || undefined);
  let document: unknown = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (cause) {
      throw new FlorenceError("CONFIG_INVALID", `cannot read config file ${file}: ${(cause as Error).message}`, { fix: "check --config (or FLORENCE_EDGE_CONFIG)", cause });
    }
    try {
      document = parseYaml(text, { prettyErrors: true, uniqueKeys: true }) ?? {};
    } catch (cause) {
      throw new FlorenceError("CONFIG_INVALID", `${file} is not valid YAML/JSON: ${(cause as Error).message}`, { cause });
    }
  }
  return buildServiceConfig(document, flags, env, file ?? "(flags and defaults)");
}
