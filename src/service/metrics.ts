/**
 * Service statistics: per-camera frame rates, per-stage latency percentiles over a sliding window, drop, error and
 * reconnect counters, queue depths and MQTT counters. `snapshot()` gives the JSON published on `<prefix>/stats`;
 * `prometheusText()` the same numbers in the Prometheus text exposition format 0.0.4, served by
 * `startMetricsServer` (node:http, 127.0.0.1 by default).
 *
 * Memory is bounded whatever the frame rate or uptime: each rate keeps at most `rateCapacity` timestamps, each
 * latency series at most `samplesPerSeries` samples (a ring buffer of typed arrays), and at most `maxSeries`
 * camera × stage series exist (later ones are counted in `series_dropped`, not stored).
 * Percentiles are over the samples of the last `windowMs`, interpolated linearly between closest ranks (numpy's
 * default): with n sorted samples, p(q) = s[h] + (h - ⌊h⌋)·(s[⌊h⌋+1] - s[⌊h⌋]), h = (n-1)·q.
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { FlorenceError, describeValue } from "../errors.ts";
import type { SourceState, SourceStatus } from "./types.ts";

export interface MetricsOptions {
  /** Sliding window for rates and percentiles, in milliseconds; default 60000. */
  windowMs?: number;
  /** Latency samples kept per camera × stage; default 512. */
  samplesPerSeries?: number;
  /** Frame timestamps kept per camera for each rate; default 2048. */
  rateCapacity?: number;
  /** Most camera × stage latency series; default 256. */
  maxSeries?: number;
  /** Monotonic clock in milliseconds; default performance.now. */
  now?: () => number;
  /** Wall clock in milliseconds since the epoch, for the snapshot's timestamp; default Date.now. */
  wallClock?: () => number;
  /** Constant labels of the `florence_edge_info` gauge (version, model, backend …). */
  info?: Record<string, string>;
}

export const QUANTILES = [0.5, 0.9, 0.99] as const;

export interface LatencySummary {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** Samples in the window. */
  count: number;
}

export interface CameraSnapshot {
  state: SourceState | null;
  reason?: string;
  fps_received: number;
  fps_processed: number;
  frames_received: number;
  frames_processed: number;
  frames_dropped: number;
  frames_corrupt: number;
  reconnects: number;
  errors: Record<string, number>;
  last_frame_age_s: number | null;
  latency_ms: Record<string, LatencySummary>;
}

export interface StatsSnapshot {
  timestamp: string;
  uptime_s: number;
  window_s: number;
  cameras: Record<string, CameraSnapshot>;
  queues: Record<string, { depth: number; max_depth: number; capacity?: number; dropped?: number }>;
  mqtt: {
    connected: boolean | null;
    reconnects: number;
    published: Record<string, number>;
    publish_failed: Record<string, number>;
    bytes_published: number;
  };
  process: { rss_bytes: number; heap_used_bytes: number };
  series_dropped: number;
}

function positiveInteger(value: number, name: string, example: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new FlorenceError("INVALID_ARGUMENT", `ServiceMetrics: ${name} must be a positive integer, got ${describeValue(value)}`, { fix: `pass e.g. ${example}` });
  }
  return value;
}

/** Event timestamps in a ring: the rate over the window without per-event allocation. */
class RateWindow {
  readonly #times: Float64Array;
  #head = 0;
  #size = 0;
  readonly #since: number;

  constructor(capacity: number, since: number) {
    this.#times = new Float64Array(capacity);
    this.#since = since;
  }

  push(at: number): void {
    this.#times[this.#head] = at;
    this.#head = (this.#head + 1) % this.#times.length;
    if (this.#size < this.#times.length) this.#size++;
  }

  /** Events per second over the window (or since tracking began, if that is shorter). */
  perSecond(now: number, windowMs: number): number {
    const capacity = this.#times.length;
    const cutoff = now - windowMs;
    let count = 0;
    let oldest = now;
    for (let i = 1; i <= this.#size; i++) {
      const t = this.#times[(this.#head - i + capacity) % capacity]!;
      if (t < cutoff) break;
      count++;
      oldest = t;
    }
    if (count === 0) return 0;
    // a full ring may have forgotten events inside the window: measure over what it still holds
    const span = count === capacity ? now - oldest : Math.min(windowMs, now - this.#since);
    return span > 0 ? (count * 1000) / span : 0;
  }
}

/** Latency samples of one camera × stage in a ring, with all-time sum and count for the Prometheus summary. */
class LatencySeries {
  readonly #values: Float64Array;
  readonly #times: Float64Array;
  #head = 0;
  #size = 0;
  totalCount = 0;
  totalSumMs = 0;

  constructor(capacity: number) {
    this.#values = new Float64Array(capacity);
    this.#times = new Float64Array(capacity);
  }

  push(valueMs: number, at: number): void {
    this.#values[this.#head] = valueMs;
    this.#times[this.#head] = at;
    this.#head = (this.#head + 1) % this.#values.length;
    if (this.#size < this.#values.length) this.#size++;
    this.totalCount++;
    this.totalSumMs += valueMs;
  }

  /** Copies the samples of the window into `scratch`, sorted; returns how many. */
  windowSorted(now: number, windowMs: number, scratch: Float64Array): number {
    const capacity = this.#values.length;
    const cutoff = now - windowMs;
    let n = 0;
    for (let i = 1; i <= this.#size; i++) {
      const slot = (this.#head - i + capacity) % capacity;
      if (this.#times[slot]! < cutoff) break;
      scratch[n++] = this.#values[slot]!;
    }
    scratch.subarray(0, n).sort();
    return n;
  }
}

/** Linear interpolation between closest ranks (numpy's default method) of sorted[0..n). */
export function quantileOfSorted(sorted: ArrayLike<number>, n: number, q: number): number {
  if (n === 0) return Number.NaN;
  const h = (n - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, n - 1);
  return sorted[lo]! + (h - lo) * (sorted[hi]! - sorted[lo]!);
}

interface CameraRecord {
  received: RateWindow;
  processed: RateWindow;
  framesReceived: number;
  framesProcessed: number;
  framesDropped: number;
  framesCorrupt: number;
  reconnects: number;
  state: SourceState | null;
  reason: string | undefined;
  /** Monotonic time of the last frame received. */
  lastFrameMono: number | undefined;
  errors: Map<string, number>;
  stages: Map<string, LatencySeries>;
}

const SOURCE_STATES: readonly SourceState[] = ["starting", "running", "stalled", "restarting", "failed", "stopped", "ended"];

/** Aggregates the service's numbers; one instance per service, fed by the sources, the loop and the publisher. */
export class ServiceMetrics {
  readonly windowMs: number;
  readonly #samplesPerSeries: number;
  readonly #rateCapacity: number;
  readonly #maxSeries: number;
  readonly #now: () => number;
  readonly #wallClock: () => number;
  readonly #info: Record<string, string> | undefined;
  readonly #startedMono: number;
  readonly #cameras = new Map<string, CameraRecord>();
  readonly #queues = new Map<string, { depth: number; maxDepth: number; capacity: number | undefined; dropped: number | undefined }>();
  readonly #published = new Map<string, number>();
  readonly #publishFailed = new Map<string, number>();
  /** Labelled counters by family name: HTTP requests by route and status, refused jobs by origin … */
  readonly #counters = new Map<string, { help: string; values: Map<string, [Record<string, string>, number]> }>();
  readonly #scratch: Float64Array;
  #series = 0;
  #seriesDropped = 0;
  #mqttConnected: boolean | null = null;
  #mqttReconnects = 0;
  #bytesPublished = 0;

  constructor(options: MetricsOptions = {}) {
    const windowMs = options.windowMs ?? 60_000;
    if (!Number.isFinite(windowMs) || windowMs <= 0) {
      throw new FlorenceError("INVALID_ARGUMENT", `ServiceMetrics: windowMs must be a positive number, got ${describeValue(windowMs)}`, { fix: "pass e.g. 60000" });
    }
    this.windowMs = windowMs;
    this.#samplesPerSeries = positiveInteger(options.samplesPerSeries ?? 512, "samplesPerSeries", 512);
    this.#rateCapacity = positiveInteger(options.rateCapacity ?? 2048, "rateCapacity", 2048);
    this.#maxSeries = positiveInteger(options.maxSeries ?? 256, "maxSeries", 256);
    this.#now = options.now ?? (() => performance.now());
    this.#wallClock = options.wallClock ?? Date.now;
    this.#info = options.info;
    this.#startedMono = this.#now();
    this.#scratch = new Float64Array(this.#samplesPerSeries);
  }

  #camera(name: string): CameraRecord {
    let record = this.#cameras.get(name);
    if (!record) {
      const now = this.#now();
      record = {
        received: new RateWindow(this.#rateCapacity, now),
        processed: new RateWindow(this.#rateCapacity, now),
        framesReceived: 0,
        framesProcessed: 0,
        framesDropped: 0,
        framesCorrupt: 0,
        reconnects: 0,
        state: null,
        reason: undefined,
        lastFrameMono: undefined,
        errors: new Map(),
        stages: new Map(),
      };
      this.#cameras.set(name, record);
    }
    return record;
  }

  /** A source delivered a frame. */
  frameReceived(camera: string): void {
    const record = this.#camera(camera);
    const now = this.#now();
    record.received.push(now);
    record.framesReceived++;
    record.lastFrameMono = now;
  }

  /** The loop finished a frame; `stageMs` are its stage latencies (decode, vision, encoder, decoder …). */
  frameProcessed(camera: string, stageMs: Record<string, number>): void {
    const record = this.#camera(camera);
    const now = this.#now();
    record.processed.push(now);
    record.framesProcessed++;
    for (const stage in stageMs) {
      const value = stageMs[stage]!;
      if (typeof value !== "number" || !Number.isFinite(value) || value < 0) continue;
      let series = record.stages.get(stage);
      if (!series) {
        if (this.#series >= this.#maxSeries) {
          this.#seriesDropped++;
          continue;
        }
        series = new LatencySeries(this.#samplesPerSeries);
        record.stages.set(stage, series);
        this.#series++;
      }
      series.push(value, now);
    }
  }

  /** The source's own counters (received/dropped/corrupt/restarts) and state; totals, taken as they are. */
  sourceStatus(status: SourceStatus): void {
    const record = this.#camera(status.camera);
    record.state = status.state;
    record.reason = status.reason;
    record.framesDropped = status.framesDropped;
    record.framesCorrupt = status.framesCorrupt;
    record.reconnects = status.restarts;
  }

  /** Frames dropped outside the source (a full queue, say); adds to the source's count until its next status. */
  framesDropped(camera: string, count = 1): void {
    this.#camera(camera).framesDropped += count;
  }

  error(camera: string, stage: string): void {
    const errors = this.#camera(camera).errors;
    errors.set(stage, (errors.get(stage) ?? 0) + 1);
  }

  /** A queue's depth now, its bound, and how many items it has dropped so far (a running total). */
  queueDepth(queue: string, depth: number, capacity?: number, dropped?: number): void {
    const entry = this.#queues.get(queue);
    if (entry) {
      entry.depth = depth;
      if (depth > entry.maxDepth) entry.maxDepth = depth;
      if (capacity !== undefined) entry.capacity = capacity;
      if (dropped !== undefined) entry.dropped = dropped;
    } else {
      this.#queues.set(queue, { depth, maxDepth: depth, capacity, dropped });
    }
  }

  mqttConnection(connected: boolean): void {
    if (connected && this.#mqttConnected === false) this.#mqttReconnects++;
    this.#mqttConnected = connected;
  }

  /** A message handed to MQTT (`kind`: result, snapshot, status, stats …), or one that could not be. */
  published(kind: string, bytes: number, ok = true): void {
    const map = ok ? this.#published : this.#publishFailed;
    map.set(kind, (map.get(kind) ?? 0) + 1);
    if (ok) this.#bytesPublished += bytes;
  }

  /** Adds to a labelled counter (`florence_edge_<name>_total`), created on first use with its HELP text. */
  count(name: string, help: string, labels: Record<string, string>, by = 1): void {
    let family = this.#counters.get(name);
    if (!family) this.#counters.set(name, (family = { help, values: new Map() }));
    const key = JSON.stringify(labels);
    const entry = family.values.get(key);
    if (entry) entry[1] += by;
    else if (family.values.size < this.#maxSeries) family.values.set(key, [labels, by]);
    else this.#seriesDropped++;
  }

  snapshot(): StatsSnapshot {
    const now = this.#now();
    const cameras: Record<string, CameraSnapshot> = {};
    for (const [name, record] of this.#cameras) {
      const latency: Record<string, LatencySummary> = {};
      for (const [stage, series] of record.stages) {
        const n = series.windowSorted(now, this.windowMs, this.#scratch);
        if (n === 0) continue;
        latency[stage] = {
          p50: round(quantileOfSorted(this.#scratch, n, 0.5)),
          p90: round(quantileOfSorted(this.#scratch, n, 0.9)),
          p99: round(quantileOfSorted(this.#scratch, n, 0.99)),
          max: round(this.#scratch[n - 1]!),
          count: n,
        };
      }
      cameras[name] = {
        state: record.state,
        ...(record.reason !== undefined ? { reason: record.reason } : {}),
        fps_received: round(record.received.perSecond(now, this.windowMs)),
        fps_processed: round(record.processed.perSecond(now, this.windowMs)),
        frames_received: record.framesReceived,
        frames_processed: record.framesProcessed,
        frames_dropped: record.framesDropped,
        frames_corrupt: record.framesCorrupt,
        reconnects: record.reconnects,
        errors: Object.fromEntries(record.errors),
        last_frame_age_s: record.lastFrameMono === undefined ? null : round((now - record.lastFrameMono) / 1000),
        latency_ms: latency,
      };
    }
    const queues: StatsSnapshot["queues"] = {};
    for (const [name, q] of this.#queues) queues[name] = { depth: q.depth, max_depth: q.maxDepth, ...(q.capacity !== undefined ? { capacity: q.capacity } : {}), ...(q.dropped !== undefined ? { dropped: q.dropped } : {}) };
    const memory = process.memoryUsage();
    return {
      timestamp: new Date(this.#wallClock()).toISOString(),
      uptime_s: round((now - this.#startedMono) / 1000),
      window_s: this.windowMs / 1000,
      cameras,
      queues,
      mqtt: {
        connected: this.#mqttConnected,
        reconnects: this.#mqttReconnects,
        published: Object.fromEntries(this.#published),
        publish_failed: Object.fromEntries(this.#publishFailed),
        bytes_published: this.#bytesPublished,
      },
      process: { rss_bytes: memory.rss, heap_used_bytes: memory.heapUsed },
      series_dropped: this.#seriesDropped,
    };
  }

  /** The Prometheus text exposition format 0.0.4 (`Content-Type: text/plain; version=0.0.4`). */
  prometheusText(): string {
    const now = this.#now();
    const out = new Exposition();
    if (this.#info) out.family("florence_edge_info", "gauge", "Constant 1, labelled with the service's version and model.", [[this.#info, 1]]);
    out.family("florence_edge_uptime_seconds", "gauge", "Seconds since the metrics were created (service start).", [[{}, (now - this.#startedMono) / 1000]]);

    const cams = [...this.#cameras];
    const perCamera = (pick: (r: CameraRecord) => number): Array<[Record<string, string>, number]> => cams.map(([camera, r]) => [{ camera }, pick(r)]);
    out.family("florence_edge_frames_received_total", "counter", "Frames delivered by the camera's source.", perCamera((r) => r.framesReceived));
    out.family("florence_edge_frames_processed_total", "counter", "Frames the camera loop ran tasks on.", perCamera((r) => r.framesProcessed));
    out.family("florence_edge_frames_dropped_total", "counter", "Frames dropped because a newer frame replaced them or a queue was full.", perCamera((r) => r.framesDropped));
    out.family("florence_edge_frames_corrupt_total", "counter", "Frames skipped as corrupt or truncated.", perCamera((r) => r.framesCorrupt));
    out.family("florence_edge_source_reconnects_total", "counter", "Restarts of the camera's source (subprocess or connection).", perCamera((r) => r.reconnects));
    out.family("florence_edge_frames_received_per_second", "gauge", "Frames received per second over the sliding window.", perCamera((r) => r.received.perSecond(now, this.windowMs)));
    out.family("florence_edge_frames_processed_per_second", "gauge", "Frames processed per second over the sliding window.", perCamera((r) => r.processed.perSecond(now, this.windowMs)));
    out.family(
      "florence_edge_last_frame_age_seconds",
      "gauge",
      "Seconds since the camera's last frame.",
      cams.filter(([, r]) => r.lastFrameMono !== undefined).map(([camera, r]) => [{ camera }, (now - r.lastFrameMono!) / 1000]),
    );
    out.family(
      "florence_edge_source_state",
      "gauge",
      "1 for the camera source's current state, 0 for the others.",
      cams.filter(([, r]) => r.state !== null).flatMap(([camera, r]) => SOURCE_STATES.map((state): [Record<string, string>, number] => [{ camera, state }, r.state === state ? 1 : 0])),
    );
    out.family("florence_edge_errors_total", "counter", "Frames or tasks that failed, by stage.", cams.flatMap(([camera, r]) => [...r.errors].map(([stage, n]): [Record<string, string>, number] => [{ camera, stage }, n])));

    const summary: Array<[Record<string, string>, number, string?]> = [];
    for (const [camera, r] of cams) {
      for (const [stage, series] of r.stages) {
        const n = series.windowSorted(now, this.windowMs, this.#scratch);
        for (const q of QUANTILES) summary.push([{ camera, stage, quantile: String(q) }, quantileOfSorted(this.#scratch, n, q) / 1000]);
        summary.push([{ camera, stage }, series.totalSumMs / 1000, "_sum"]);
        summary.push([{ camera, stage }, series.totalCount, "_count"]);
      }
    }
    out.family("florence_edge_stage_latency_seconds", "summary", `Per-frame latency of each pipeline stage; quantiles over the last ${this.windowMs / 1000} s.`, summary);

    const queues = [...this.#queues];
    out.family("florence_edge_queue_depth", "gauge", "Items waiting in the queue.", queues.map(([queue, q]) => [{ queue }, q.depth]));
    out.family("florence_edge_queue_depth_max", "gauge", "Largest depth the queue has had.", queues.map(([queue, q]) => [{ queue }, q.maxDepth]));
    out.family("florence_edge_queue_capacity", "gauge", "The queue's bound.", queues.filter(([, q]) => q.capacity !== undefined).map(([queue, q]) => [{ queue }, q.capacity!]));
    out.family("florence_edge_queue_dropped_total", "counter", "Items the queue dropped because it was full.", queues.filter(([, q]) => q.dropped !== undefined).map(([queue, q]) => [{ queue }, q.dropped!]));

    if (this.#mqttConnected !== null) out.family("florence_edge_mqtt_connected", "gauge", "1 while connected to the MQTT broker.", [[{}, this.#mqttConnected ? 1 : 0]]);
    out.family("florence_edge_mqtt_reconnects_total", "counter", "Reconnections to the MQTT broker after a loss.", [[{}, this.#mqttReconnects]]);
    out.family("florence_edge_mqtt_messages_published_total", "counter", "MQTT messages handed to the client, by kind.", [...this.#published].map(([kind, n]) => [{ kind }, n]));
    out.family("florence_edge_mqtt_publish_failures_total", "counter", "MQTT messages that could not be published, by kind.", [...this.#publishFailed].map(([kind, n]) => [{ kind }, n]));
    out.family("florence_edge_mqtt_published_bytes_total", "counter", "Payload bytes of the MQTT messages published.", [[{}, this.#bytesPublished]]);

    for (const [name, family] of this.#counters) out.family(`florence_edge_${name}_total`, "counter", family.help, [...family.values.values()]);

    const memory = process.memoryUsage();
    out.family("florence_edge_resident_memory_bytes", "gauge", "Resident set size of the service process.", [[{}, memory.rss]]);
    out.family("florence_edge_heap_used_bytes", "gauge", "JavaScript heap in use.", [[{}, memory.heapUsed]]);
    out.family("florence_edge_latency_series_dropped_total", "counter", "Latency samples not stored because the series limit was reached.", [[{}, this.#seriesDropped]]);
    return out.text();
  }
}

function round(value: number): number {
  return Number.isFinite(value) ? Math.round(value * 100) / 100 : value;
}

/** HELP text: backslash and line feed escaped. */
export function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** Label value: backslash, double quote and line feed escaped. */
export function escapeLabelValue(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

class Exposition {
  readonly #lines: string[] = [];

  family(name: string, type: "counter" | "gauge" | "summary", help: string, samples: ReadonlyArray<readonly [Record<string, string>, number, string?]>): void {
    if (samples.length === 0) return;
    this.#lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
    for (const [labels, value, suffix] of samples) {
      const pairs: string[] = [];
      for (const key in labels) {
        // info labels come from the caller: a bad name would make the whole page unparseable
        if (!LABEL_NAME.test(key) || key.startsWith("__")) continue;
        pairs.push(`${key}="${escapeLabelValue(labels[key]!)}"`);
      }
      this.#lines.push(`${name}${suffix ?? ""}${pairs.length ? `{${pairs.join(",")}}` : ""} ${formatValue(value)}`);
    }
  }

  text(): string {
    return this.#lines.length ? `${this.#lines.join("\n")}\n` : "";
  }
}

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export interface MetricsServerOptions {
  /** Bind address; default 127.0.0.1 (use 0.0.0.0 or :: only behind a firewall: there is no authentication). */
  host?: string;
  /** TCP port; 0 picks a free one. */
  port: number;
}

export interface MetricsServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Serves `GET /metrics` (Prometheus text) and `GET /stats` (the JSON snapshot). */
export async function startMetricsServer(metrics: ServiceMetrics, options: MetricsServerOptions): Promise<MetricsServer> {
  const host = options.host ?? "127.0.0.1";
  if (typeof host !== "string" || host.length === 0) {
    throw new FlorenceError("CONFIG_INVALID", `metrics.host must be an address to bind, got ${describeValue(host)}`, { fix: "use 127.0.0.1 (default), 0.0.0.0 or ::" });
  }
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new FlorenceError("CONFIG_INVALID", `metrics.port must be an integer in 0..65535, got ${describeValue(options.port)}`, { fix: "use e.g. 9464" });
  }
  const server: Server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const path = (request.url ?? "/").split("?")[0];
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { Allow: "GET, HEAD", "Content-Type": "text/plain; charset=utf-8" }).end("method not allowed\n");
      return;
    }
    let body: string;
    let type: string;
    try {
      if (path === "/metrics") {
        body = metrics.prometheusText();
        type = PROMETHEUS_CONTENT_TYPE;
      } else if (path === "/stats") {
        body = `${JSON.stringify(metrics.snapshot())}\n`;
        type = "application/json";
      } else {
        response.writeHead(404, { "Content-Type": "text/plain; charset=utf-8" }).end("not found: try /metrics or /stats\n");
        return;
      }
    } catch (error) {
      response.writeHead(500, { "Content-Type": "text/plain; charset=utf-8" }).end(`${error instanceof Error ? error.message : String(error)}\n`);
      return;
    }
    const bytes = new TextEncoder().encode(body);
    response.writeHead(200, { "Content-Type": type, "Content-Length": bytes.length, "Cache-Control": "no-store" });
    response.end(request.method === "HEAD" ? undefined : bytes);
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      reject(
        new FlorenceError("CONFIG_INVALID", `cannot serve metrics on ${host}:${options.port}: ${error.code ?? error.message}`, {
          fix: error.code === "EADDRINUSE" ? "pick another metrics.port or stop what uses it" : "check metrics.host is an address of this machine",
          cause: error,
        }),
      );
    };
    server.once("error", onError);
    server.listen(options.port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : options.port;
  const urlHost = host.includes(":") ? `[${host}]` : host;
  return {
    url: `http://${urlHost}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections?.();
      }),
  };
}
