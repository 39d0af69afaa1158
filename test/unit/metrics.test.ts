import { test } from "uvu";
import * as assert from "uvu/assert";
import { request } from "node:http";
import { FlorenceError } from "../../src/errors.ts";
import {
  PROMETHEUS_CONTENT_TYPE,
  ServiceMetrics,
  escapeHelp,
  escapeLabelValue,
  quantileOfSorted,
  startMetricsServer,
} from "../../src/service/metrics.ts";
import type { SourceStatus } from "../../src/service/types.ts";

function clocked(options: ConstructorParameters<typeof ServiceMetrics>[0] = {}) {
  let now = 1000;
  const metrics = new ServiceMetrics({ wallClock: () => Date.UTC(2025, 5, 1), ...options, now: () => now });
  return { metrics, advance: (ms: number) => (now += ms) };
}

/** A seeded generator, so the brute-force comparison is reproducible. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

test("percentiles are numpy's linear interpolation (np.percentile(range(1, 101), [50, 90, 99]))", () => {
  const { metrics } = clocked();
  for (let v = 100; v >= 1; v--) metrics.frameProcessed("cam", { vision: v });
  const latency = metrics.snapshot().cameras["cam"]!.latency_ms["vision"]!;
  // numpy: 50.5, 90.1, 99.01
  assert.is(latency.p50, 50.5);
  assert.is(latency.p90, 90.1);
  assert.is(latency.p99, 99.01);
  assert.is(latency.max, 100);
  assert.is(latency.count, 100);
  assert.is(quantileOfSorted([7], 1, 0.99), 7);
  assert.ok(Number.isNaN(quantileOfSorted([], 0, 0.5)));
});

test("percentiles match a sort of the samples in the window", () => {
  const { metrics } = clocked({ samplesPerSeries: 1000 });
  const random = lcg(42);
  const values: number[] = [];
  for (let i = 0; i < 777; i++) {
    const v = Math.round(random() * 50000) / 100;
    values.push(v);
    metrics.frameProcessed("cam", { decoder: v });
  }
  values.sort((a, b) => a - b);
  const at = (q: number) => {
    const h = (values.length - 1) * q;
    const lo = Math.floor(h);
    return values[lo]! + (h - lo) * (values[Math.min(lo + 1, values.length - 1)]! - values[lo]!);
  };
  const latency = metrics.snapshot().cameras["cam"]!.latency_ms["decoder"]!;
  assert.is(latency.p50, Math.round(at(0.5) * 100) / 100);
  assert.is(latency.p90, Math.round(at(0.9) * 100) / 100);
  assert.is(latency.p99, Math.round(at(0.99) * 100) / 100);
});

test("the window slides: old samples leave the percentiles", () => {
  const { metrics, advance } = clocked({ windowMs: 10_000 });
  for (let i = 0; i < 10; i++) metrics.frameProcessed("cam", { vision: 1000 });
  advance(11_000);
  for (let i = 0; i < 4; i++) metrics.frameProcessed("cam", { vision: 10 });
  const latency = metrics.snapshot().cameras["cam"]!.latency_ms["vision"]!;
  assert.is(latency.count, 4);
  assert.is(latency.max, 10);
  advance(11_000);
  assert.equal(metrics.snapshot().cameras["cam"]!.latency_ms, {}, "no samples in the window: no summary");
});

test("memory is bounded: a series keeps its last samplesPerSeries samples", () => {
  const { metrics } = clocked({ samplesPerSeries: 8 });
  for (let i = 1; i <= 10_000; i++) metrics.frameProcessed("cam", { vision: i });
  const latency = metrics.snapshot().cameras["cam"]!.latency_ms["vision"]!;
  assert.is(latency.count, 8);
  assert.is(latency.max, 10_000);
  assert.is(latency.p50, 9996.5); // median of 9993..10000
  assert.is(metrics.snapshot().cameras["cam"]!.frames_processed, 10_000);
});

test("series beyond maxSeries are counted, not stored; bad stage values are ignored", () => {
  const { metrics } = clocked({ maxSeries: 2 });
  metrics.frameProcessed("a", { vision: 1, decoder: 2, parse: 3, broken: Number.NaN, negative: -1 });
  const snap = metrics.snapshot();
  assert.equal(Object.keys(snap.cameras["a"]!.latency_ms), ["vision", "decoder"]);
  assert.is(snap.series_dropped, 1);
});

test("fps per camera over the window, received and processed", () => {
  const { metrics, advance } = clocked({ windowMs: 10_000 });
  for (let i = 0; i < 300; i++) {
    metrics.frameReceived("front");
    if (i % 10 === 0) metrics.frameProcessed("front", { vision: 5 });
    advance(1000 / 30);
  }
  const cam = metrics.snapshot().cameras["front"]!;
  // events in the window / window length: exact up to one event at the window's edge (0.1 fps over 10 s)
  assert.ok(Math.abs(cam.fps_received - 30) <= 0.11, `fps_received ${cam.fps_received}`);
  assert.ok(Math.abs(cam.fps_processed - 3) <= 0.11, `fps_processed ${cam.fps_processed}`);
  assert.is(cam.frames_received, 300);
  assert.is(cam.last_frame_age_s, 0.03);
  advance(20_000);
  const idle = metrics.snapshot().cameras["front"]!;
  assert.is(idle.fps_received, 0);
  assert.is(idle.last_frame_age_s, 20.03);
});

test("fps stays right when the timestamp ring overflows", () => {
  const { metrics, advance } = clocked({ windowMs: 60_000, rateCapacity: 16 });
  for (let i = 0; i < 1000; i++) {
    metrics.frameReceived("fast");
    advance(10); // 100 fps
  }
  const fps = metrics.snapshot().cameras["fast"]!.fps_received;
  assert.ok(Math.abs(fps - 100) < 8, `fps ${fps}`);
});

test("source status, drops, errors, queues and MQTT counters reach the snapshot", () => {
  const { metrics } = clocked();
  const status: SourceStatus = { camera: "door", state: "restarting", reason: "ffmpeg exited 1", restarts: 3, framesReceived: 50, framesDropped: 7, framesCorrupt: 2, lastFrameAt: undefined };
  metrics.sourceStatus(status);
  metrics.framesDropped("door", 2);
  metrics.error("door", "inference");
  metrics.error("door", "inference");
  metrics.error("door", "decode");
  metrics.queueDepth("publish", 5, 100);
  metrics.queueDepth("publish", 2);
  metrics.mqttConnection(true);
  metrics.mqttConnection(false);
  metrics.mqttConnection(true);
  metrics.published("result", 300);
  metrics.published("result", 200);
  metrics.published("snapshot", 1000, false);
  const snap = metrics.snapshot();
  const door = snap.cameras["door"]!;
  assert.is(door.state, "restarting");
  assert.is(door.reason, "ffmpeg exited 1");
  assert.is(door.reconnects, 3);
  assert.is(door.frames_dropped, 9);
  assert.is(door.frames_corrupt, 2);
  assert.equal(door.errors, { inference: 2, decode: 1 });
  assert.equal(snap.queues, { publish: { depth: 2, max_depth: 5, capacity: 100 } });
  assert.equal(snap.mqtt, { connected: true, reconnects: 1, published: { result: 2 }, publish_failed: { snapshot: 1 }, bytes_published: 500 });
  assert.is(snap.timestamp, "2025-06-01T00:00:00.000Z");
  assert.ok(snap.process.rss_bytes > 0);
  JSON.parse(JSON.stringify(snap));
});

test("invalid options name the value", () => {
  for (const [options, name] of [[{ windowMs: 0 }, "windowMs"], [{ samplesPerSeries: 1.5 }, "samplesPerSeries"], [{ maxSeries: -1 }, "maxSeries"]] as const) {
    try {
      new ServiceMetrics(options);
      assert.unreachable();
    } catch (error) {
      assert.instance(error, FlorenceError);
      assert.match((error as Error).message, name);
    }
  }
});

/** A strict reader of the 0.0.4 text format: families, types, escapes; returns samples by name. */
function parseExposition(text: string): { types: Map<string, string>; samples: Array<{ name: string; labels: Record<string, string>; value: number }> } {
  assert.ok(text.endsWith("\n"), "ends with a line feed");
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples: Array<{ name: string; labels: Record<string, string>; value: number }> = [];
  const seenFamilies: string[] = [];
  let current = "";
  for (const line of text.slice(0, -1).split("\n")) {
    let m: RegExpExecArray | null;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line))) {
      assert.not.ok(helps.has(m[1]!), `one HELP per family: ${m[1]}`);
      assert.not.ok(/\\[^\\n]/.test(m[2]!.replace(/\\\\/g, "")), "HELP escapes only \\\\ and \\n");
      helps.add(m[1]!);
      continue;
    }
    if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|summary|histogram|untyped)$/.exec(line))) {
      assert.ok(helps.has(m[1]!), `HELP before TYPE for ${m[1]}`);
      assert.not.ok(types.has(m[1]!), `one TYPE per family: ${m[1]}`);
      types.set(m[1]!, m[2]!);
      assert.not.ok(seenFamilies.includes(m[1]!), "families are not split");
      seenFamilies.push(m[1]!);
      current = m[1]!;
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `sample line: ${line}`);
    const name = m![1]!;
    const family = types.get(current) === "summary" ? name.replace(/_(sum|count)$/, "") : name;
    assert.is(family, current, `sample ${name} belongs to the family just declared`);
    const labels: Record<string, string> = {};
    const body = m![2] ?? "";
    const labelRe = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)/gy;
    let consumed = 0;
    let lm: RegExpExecArray | null;
    while (consumed < body.length && (lm = labelRe.exec(body))) {
      labels[lm[1]!] = lm[2]!.replace(/\\(\\|"|n)/g, (_, c: string) => (c === "n" ? "\n" : c));
      consumed = labelRe.lastIndex;
    }
    assert.is(consumed, body.length, `labels parse completely: ${body}`);
    const raw = m![3]!;
    const value = raw === "NaN" ? Number.NaN : raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : Number(raw);
    assert.ok(raw === "NaN" || !Number.isNaN(value), `value ${raw}`);
    samples.push({ name, labels, value });
  }
  for (const [name, type] of types) if (type === "counter") assert.ok(name.endsWith("_total"), `counter ${name} ends in _total`);
  return { types, samples };
}

test("Prometheus text format 0.0.4: HELP/TYPE, _total counters, summaries, escaping", () => {
  const { metrics } = clocked({ info: { version: "0.1.0", model: 'Florence-2 "base"\\ft\nx' } });
  for (let i = 1; i <= 10; i++) metrics.frameProcessed("front", { vision: i * 100 });
  metrics.frameReceived("front");
  metrics.sourceStatus({ camera: "front", state: "running", restarts: 1, framesReceived: 1, framesDropped: 4, framesCorrupt: 0, lastFrameAt: undefined });
  metrics.queueDepth('odd "queue"\\name\nwith newline', 3);
  metrics.error("front", "inference");
  const text = metrics.prometheusText();
  const { types, samples } = parseExposition(text);
  assert.is(types.get("florence_edge_frames_received_total"), "counter");
  assert.is(types.get("florence_edge_stage_latency_seconds"), "summary");
  assert.is(types.get("florence_edge_queue_depth"), "gauge");
  const find = (name: string, labels: Record<string, string> = {}) =>
    samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.is(find("florence_edge_frames_processed_total", { camera: "front" })!.value, 10);
  assert.is(find("florence_edge_frames_dropped_total", { camera: "front" })!.value, 4);
  assert.is(find("florence_edge_source_reconnects_total", { camera: "front" })!.value, 1);
  assert.is(find("florence_edge_source_state", { camera: "front", state: "running" })!.value, 1);
  assert.is(find("florence_edge_source_state", { camera: "front", state: "failed" })!.value, 0);
  assert.is(find("florence_edge_errors_total", { camera: "front", stage: "inference" })!.value, 1);
  // seconds, numpy-linear quantiles of 100..1000 ms
  assert.is(find("florence_edge_stage_latency_seconds", { stage: "vision", quantile: "0.5" })!.value, 0.55);
  assert.ok(Math.abs(find("florence_edge_stage_latency_seconds", { stage: "vision", quantile: "0.9" })!.value - 0.91) < 1e-12);
  assert.is(find("florence_edge_stage_latency_seconds_sum", { stage: "vision" })!.value, 5.5);
  assert.is(find("florence_edge_stage_latency_seconds_count", { stage: "vision" })!.value, 10);
  // label values round-trip through the escapes
  assert.is(find("florence_edge_queue_depth")!.labels["queue"], 'odd "queue"\\name\nwith newline');
  assert.is(find("florence_edge_info")!.labels["model"], 'Florence-2 "base"\\ft\nx');
  assert.ok(text.includes('queue="odd \\"queue\\"\\\\name\\nwith newline"'));
  assert.is(escapeHelp("a\\b\nc"), "a\\\\b\\nc");
  assert.is(escapeLabelValue('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
});

test("labelled counters: created on first use, added to, exposed as _total; their series are bounded", () => {
  const metrics = new ServiceMetrics({ maxSeries: 3 });
  metrics.count("http_requests", "HTTP requests answered.", { route: "/v1/models", code: "200" });
  metrics.count("http_requests", "HTTP requests answered.", { route: "/v1/models", code: "200" });
  metrics.count("http_requests", "HTTP requests answered.", { route: "/healthz", code: "200" }, 5);
  metrics.count("jobs_refused", "Refused.", { origin: "http" });
  metrics.count("jobs_refused", "Refused.", { origin: "mqtt" });
  metrics.count("jobs_refused", "Refused.", { origin: "other" });
  metrics.count("jobs_refused", "Refused.", { origin: "a fourth" });
  const { types, samples } = parseExposition(metrics.prometheusText());
  assert.is(types.get("florence_edge_http_requests_total"), "counter");
  const value = (name: string, labels: Record<string, string>) => samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
  assert.is(value("florence_edge_http_requests_total", { route: "/v1/models" }), 2);
  assert.is(value("florence_edge_http_requests_total", { route: "/healthz" }), 5);
  assert.is(value("florence_edge_jobs_refused_total", { origin: "other" }), 1);
  assert.is(value("florence_edge_jobs_refused_total", { origin: "a fourth" }), undefined, "beyond maxSeries: counted as dropped");
  assert.is(value("florence_edge_latency_series_dropped_total", {}), 1);
});

test("an empty window gives NaN quantiles, still valid text", () => {
  const { metrics, advance } = clocked({ windowMs: 1000 });
  metrics.frameProcessed("c", { vision: 3 });
  advance(5000);
  const { samples } = parseExposition(metrics.prometheusText());
  const q = samples.find((s) => s.name === "florence_edge_stage_latency_seconds" && s.labels["quantile"] === "0.5")!;
  assert.ok(Number.isNaN(q.value));
  assert.is(samples.find((s) => s.name === "florence_edge_stage_latency_seconds_count")!.value, 1, "counts are all-time");
});

function get(url: string, method = "GET"): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

test("the /metrics endpoint serves the exposition on 127.0.0.1 by default", async () => {
  const metrics = new ServiceMetrics();
  metrics.frameProcessed("front", { vision: 12 });
  const server = await startMetricsServer(metrics, { port: 0 });
  try {
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await get(`${server.url}/metrics`);
    assert.is(res.status, 200);
    assert.is(res.headers["content-type"], PROMETHEUS_CONTENT_TYPE);
    parseExposition(res.body);
    assert.ok(res.body.includes('florence_edge_frames_processed_total{camera="front"} 1'));
    const stats = await get(`${server.url}/stats`);
    assert.is(stats.status, 200);
    assert.is(JSON.parse(stats.body).cameras.front.frames_processed, 1);
    const head = await get(`${server.url}/metrics`, "HEAD");
    assert.is(head.status, 200);
    assert.is(head.body, "");
    assert.is((await get(`${server.url}/nope`)).status, 404);
    const post = await get(`${server.url}/metrics`, "POST");
    assert.is(post.status, 405);
    assert.is(post.headers["allow"], "GET, HEAD");

    // a taken port is a config error that names host and port
    try {
      await startMetricsServer(metrics, { port: server.port });
      assert.unreachable();
    } catch (error) {
      assert.instance(error, FlorenceError);
      assert.is((error as FlorenceError).code, "CONFIG_INVALID");
      assert.match((error as Error).message, `127.0.0.1:${server.port}`);
      assert.match((error as Error).message, "EADDRINUSE");
    }
  } finally {
    await server.close();
  }
});

test("bad bind settings name the value", async () => {
  const metrics = new ServiceMetrics();
  for (const options of [{ port: 70000 }, { port: 1.5 }, { port: 0, host: "" }]) {
    try {
      await startMetricsServer(metrics, options);
      assert.unreachable();
    } catch (error) {
      assert.instance(error, FlorenceError);
      assert.is((error as FlorenceError).code, "CONFIG_INVALID");
    }
  }
});

test.run();
