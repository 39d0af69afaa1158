import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildServiceConfig, loadServiceConfig, sourceFromString } from "../../src/service/service_config.ts";
import { sourceOptionsFromConfig } from "../../src/service/serve_options.ts";
import { normalizeCommon, normalizeSpec } from "../../src/service/sources/spec.ts";
import { TINY_MODEL } from "../support/paths.ts";

const dir = mkdtempSync(join(tmpdir(), "fe-config-"));

function error(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.is((e as { code?: string }).code, "CONFIG_INVALID");
    return (e as Error).message;
  }
  assert.unreachable("expected CONFIG_INVALID");
  return "";
}

test("a full YAML config with several cameras", () => {
  const file = join(dir, "config.yaml");
  writeFileSync(join(dir, "secret"), "s3cret\n");
  writeFileSync(file, `
model: { path: ${TINY_MODEL}, precision: quantized, threads: 2 }
generation: { num_beams: 3, max_new_tokens: 64 }
mqtt:
  url: mqtts://broker.local:8883
  topic_prefix: home/florence
  username: cam
  password_file: ${join(dir, "secret")}
  qos: { results: 1 }
  retain: { results: true }
  offline_queue: { max_messages: 50 }
cameras:
  - name: front_door
    source: rtsp://user:pw@10.0.0.5/stream1
    tasks:
      - "<OD>"
      - { task: "<CAPTION>", interval_s: 30, snapshot: true }
      - { task: "<OPEN_VOCABULARY_DETECTION>", text: "person" }
  - name: garage
    source: { type: http, url: "http://cam2/snapshot.jpg", interval_s: 2 }
metrics: { port: 9464 }
`);
  const config = loadServiceConfig({ config: file }, {});
  assert.is(config.model.precision, "quantized");
  assert.is(config.mqtt.password, "s3cret");
  assert.is(config.mqtt.qos.results, 1);
  assert.is(config.mqtt.qos.status, 1);
  assert.is(config.mqtt.offlineQueue.maxMessages, 50);
  assert.is(config.mqtt.offlineQueue.maxBytes, 16 << 20);
  assert.is(config.cameras.length, 2);
  assert.equal(config.cameras[0]!.source, { type: "rtsp", url: "rtsp://user:pw@10.0.0.5/stream1", transport: "tcp" });
  assert.equal(config.cameras[0]!.tasks.map((t) => [t.task, t.intervalS, t.text, t.snapshot]), [["<OD>", 0, undefined, false], ["<CAPTION>", 30, undefined, true], ["<OPEN_VOCABULARY_DETECTION>", 0, "person", false]]);
  assert.equal(config.cameras[1]!.source, { type: "http", url: "http://cam2/snapshot.jpg", intervalS: 2 });
  assert.is(config.metrics.port, 9464);
  assert.equal([config.model.cudaGraphSteps, config.model.zeroCopy], [128, "auto"], "TensorRT defaults");
});

test("TensorRT tuning: CUDA graph steps and zero-copy", () => {
  const config = buildServiceConfig({ model: { backend: "tensorrt", cuda_graph_steps: 0, zero_copy: "off" } }, {}, {}, "t");
  assert.equal([config.model.backend, config.model.cudaGraphSteps, config.model.zeroCopy], ["tensorrt", 0, "off"]);
  assert.match(error(() => buildServiceConfig({ model: { cuda_graph_steps: -1 } }, {}, {}, "t")), /^model\.cuda_graph_steps: must be an integer in 0\.\.4096, got -1/);
  assert.match(error(() => buildServiceConfig({ model: { zero_copy: "yes" } }, {}, {}, "t")), /^model\.zero_copy: must be one of auto, on, off/);
});

test("flags override the file; the single-camera flags make a camera", () => {
  const config = buildServiceConfig({ mqtt: { url: "mqtt://a:1883" } }, { mqtt: "mqtt://b:1883", topicPrefix: "p", camera: "cam1", source: "rtsp://x/y", task: ["<OD>", "<CAPTION>"] }, {}, "test");
  assert.is(config.mqtt.url, "mqtt://b:1883");
  assert.is(config.mqtt.topicPrefix, "p");
  assert.is(config.cameras.length, 1);
  assert.is(config.cameras[0]!.name, "cam1");
  assert.equal(config.cameras[0]!.tasks.map((t) => t.task), ["<OD>", "<CAPTION>"]);
});

test("secrets from the environment", () => {
  const config = buildServiceConfig({ mqtt: { username: "u" } }, {}, { FLORENCE_EDGE_MQTT_PASSWORD: "envpw", FLORENCE_EDGE_MQTT_URL: "mqtt://env:1883" }, "test");
  assert.is(config.mqtt.password, "envpw");
  assert.is(config.mqtt.url, "mqtt://env:1883");
  assert.is(buildServiceConfig({}, {}, {}, "t").mqtt.url, undefined, "no broker configured → the embedded one");
});

test("errors name the path of the bad key and the fix", () => {
  assert.match(error(() => buildServiceConfig({ cameras: [{ name: "a", source: "rtsp://x", tasks: ["<OD>", { task: "<DETECT>" }] }] }, {}, {}, "t")), /^cameras\[0\]\.tasks\[1\]\.task: unknown task "<DETECT>" — use one of <CAPTION>/);
  assert.match(error(() => buildServiceConfig({ mqtt: { qos: { results: 3 } } }, {}, {}, "t")), /^mqtt\.qos\.results: must be one of 0, 1, 2, got 3/);
  assert.match(error(() => buildServiceConfig({ mqtt: { urll: "x" } }, {}, {}, "t")), /^mqtt\.urll: unknown key — known keys here: url,/);
  assert.match(error(() => buildServiceConfig({ cameras: [{ name: "bad name", source: "rtsp://x" }] }, {}, {}, "t")), /^cameras\[0\]\.name: "bad name" is not a valid camera name/);
  assert.match(error(() => buildServiceConfig({ cameras: [{ name: "a", source: "rtsp://x" }, { name: "a", source: "rtsp://y" }] }, {}, {}, "t")), /^cameras\[1\]\.name: "a" is used twice/);
  assert.match(error(() => buildServiceConfig({ cameras: [{ name: "a" }] }, {}, {}, "t")), /^cameras\[0\]\.source: is required/);
  assert.match(error(() => buildServiceConfig({ cameras: [{ name: "a", source: { type: "rtsp" } }] }, {}, {}, "t")), /^cameras\[0\]\.source\.url: is required/);
  assert.match(error(() => buildServiceConfig({ mqtt: { url: "http://broker" } }, {}, {}, "t")), /^mqtt\.url: "http:\/\/broker" is not an MQTT URL/);
  assert.match(error(() => buildServiceConfig({ mqtt: { url: "bad://user:secret@x" } }, {}, {}, "t")), /\*\*\*@/, "passwords are masked in messages");
  assert.match(error(() => buildServiceConfig({ mqtt: { topic_prefix: "a/#" } }, {}, {}, "t")), /^mqtt\.topic_prefix/);
  assert.match(error(() => buildServiceConfig({ model: { threads: 0 } }, {}, {}, "t")), /^model\.threads: must be an integer in 1\.\.1024, got 0/);
  assert.match(error(() => buildServiceConfig([], {}, {}, "t")), /^config: must be a mapping/);
  assert.match(error(() => sourceFromString("/nonexistent/thing")), /not a URL \(rtsp:\/\/, http:\/\/\), a device/);
  const bad = join(dir, "bad.yaml");
  writeFileSync(bad, "mqtt: [unclosed");
  assert.match(error(() => loadServiceConfig({ config: bad }, {})), /is not valid YAML\/JSON/);
  assert.match(error(() => loadServiceConfig({ config: join(dir, "missing.yaml") }, {})), /cannot read config file/);
  const dup = join(dir, "dup.yaml");
  writeFileSync(dup, "log: {level: info}\nlog: {level: debug}\n");
  assert.match(error(() => loadServiceConfig({ config: dup }, {})), /YAML/);
});

test("http: off unless configured (on in the demo), loopback by default, a token required beyond it", () => {
  const tokenFile = join(dir, "http-token");
  writeFileSync(tokenFile, "0123456789abcdef0123456789abcdef\n");
  const camera = [{ name: "a", source: "rtsp://x" }];
  assert.is(buildServiceConfig({ cameras: camera }, {}, {}, "t").http.enabled, false, "a configured service opens no port unless asked");
  const demo = buildServiceConfig({}, {}, {}, "t");
  assert.equal([demo.demoCamera, demo.http.enabled, demo.http.host, demo.http.port, demo.http.anyPortIfBusy, demo.http.token], [true, true, "127.0.0.1", 8080, true, undefined]);
  const httpOnly = buildServiceConfig({ cameras: [], http: {} }, {}, {}, "t");
  assert.equal([httpOnly.demoCamera, httpOnly.cameras, httpOnly.http.enabled, httpOnly.http.anyPortIfBusy], [false, [], true, false]);
  const full = buildServiceConfig({ cameras: camera, http: { host: "0.0.0.0", port: 9000, token_file: tokenFile, max_body_bytes: 4096, max_pixels: 1000, max_images: 2, queue_size: 3, request_timeout_s: 5, default_task: "<CAPTION>", remote_images: true, private_addresses: true } }, {}, {}, "t");
  assert.equal(full.http, { enabled: true, host: "0.0.0.0", port: 9000, anyPortIfBusy: false, token: "0123456789abcdef0123456789abcdef", maxBodyBytes: 4096, maxPixels: 1000, maxImages: 2, queueSize: 3, requestTimeoutS: 5, defaultTask: "<CAPTION>", remoteImages: true, privateAddresses: true });
  assert.is(buildServiceConfig({ cameras: camera }, { httpPort: 0, httpHost: "::" }, { FLORENCE_EDGE_HTTP_TOKEN: "from-the-environment-0001" }, "t").http.token, "from-the-environment-0001");
  assert.equal(buildServiceConfig({ cameras: camera }, { httpPort: 7000 }, {}, "t").http.enabled, true);
  assert.match(error(() => buildServiceConfig({ http: { host: "0.0.0.0" } }, {}, {}, "t")), /^http\.host: 0\.0\.0\.0 is reachable from other machines, so the API needs a bearer token — put one in a file and set http\.token_file \(or FLORENCE_EDGE_HTTP_TOKEN/);
  assert.match(error(() => buildServiceConfig({ cameras: camera }, { httpHost: "192.168.1.5" }, {}, "t")), /^http\.host: 192\.168\.1\.5 is reachable/);
  assert.match(error(() => buildServiceConfig({ http: { token: "short" } }, {}, {}, "t")), /^http\.token: is 5 characters; at least 16 — generate one: openssl rand -hex 32/);
  assert.match(error(() => buildServiceConfig({ http: { token_file: join(dir, "nope") } }, {}, {}, "t")), /^http\.token_file: cannot read/);
  assert.match(error(() => buildServiceConfig({ http: { port: 70000 } }, {}, {}, "t")), /^http\.port: must be an integer in 0\.\.65535, got 70000/);
  assert.match(error(() => buildServiceConfig({ http: { default_task: "<DETECT>" } }, {}, {}, "t")), /^http\.default_task: unknown task "<DETECT>"/);
  assert.match(error(() => buildServiceConfig({ http: { tokn: "x" } }, {}, {}, "t")), /^http\.tokn: unknown key — known keys here: enabled, host, port, token, token_file/);
  for (const host of ["127.0.0.1", "127.1.2.3", "localhost", "::1"]) assert.is(buildServiceConfig({ http: { host } }, {}, {}, "t").http.host, host);
});

test("every source option is reachable from YAML and reaches the source as written", () => {
  const config = buildServiceConfig({
    cameras: [
      {
        name: "door",
        source: { type: "rtsp", url: "rtsp://cam/s", transport: "udp", timeout_s: 4, fps: 5, codec: "h265", latency_ms: 80, username: "u", password: "p", output: "rgb24", width: 640, height: 360, jpeg_quality: 70 },
        backoff: { initial_s: 2, max_s: 30, healthy_s: 10 },
        max_frame_bytes: 1048576,
        stall_timeout_s: 20,
      },
      { name: "yard", source: { type: "csi", sensor_id: 1, flip_method: 2, output: "jpeg", jpeg_quality: 60 } },
      { name: "snap", source: { type: "http", url: "https://cam/snap.jpg", timeout_s: 3, username: "u", password: "p", headers: { "X-Key": "k" } } },
      { name: "clip", source: { type: "file", path: "/tmp/clip.mp4", realtime: false, width: 320 } },
    ],
  }, {}, {}, "t");
  const door = sourceOptionsFromConfig(config.cameras[0]!, { dropped: 0 });
  const spec = normalizeSpec(door);
  assert.equal(spec, { type: "rtsp", url: "rtsp://cam/s", transport: "udp", timeoutS: 4, fps: 5, codec: "h265", latencyMs: 80, username: "u", password: "p", out: { format: "rgb24", width: 640, height: 360, jpegQuality: 70 } });
  assert.equal(normalizeCommon(door), { camera: "door", decoder: "auto", stallTimeoutS: 20, backoff: { initialS: 2, maxS: 30, healthyS: 10 }, maxFrameBytes: 1048576 });
  const yard = normalizeSpec(sourceOptionsFromConfig(config.cameras[1]!, { dropped: 0 }));
  assert.equal(yard, { type: "csi", sensorId: 1, width: 1920, height: 1080, fps: 30, flipMethod: 2, out: { format: "jpeg", width: 1920, height: 1080, jpegQuality: 60 } }, "defaults from the one table");
  assert.equal(normalizeSpec(sourceOptionsFromConfig(config.cameras[2]!, { dropped: 0 })), { type: "http", url: "https://cam/snap.jpg", intervalS: 1, timeoutS: 3, username: "u", password: "p", headers: { "X-Key": "k" } });
  const clip = normalizeSpec(sourceOptionsFromConfig(config.cameras[3]!, { dropped: 0 }));
  assert.equal([clip.type, (clip as { realtime: boolean }).realtime, (clip as { out: { width: number } }).out.width], ["file", false, 320]);
  // bad values are refused at load time, by the sources' own rules, naming the config path
  assert.match(error(() => buildServiceConfig({ cameras: [{ name: "a", source: { type: "rtsp", url: "rtsp://x", codec: "vp9" } }] }, {}, {}, "t")), /^cameras\[0\]\.source: source\.codec must be one of auto, h264, h265/);
  assert.match(error(() => buildServiceConfig({ cameras: [{ name: "a", source: { type: "rtsp", url: "rtsp://x", output: "rgb24" } }] }, {}, {}, "t")), /^cameras\[0\]\.source: source\.output/);
  assert.match(error(() => buildServiceConfig({ cameras: [{ name: "a", source: { type: "rtsp", url: "rtsp://x", latency: 1 } }] }, {}, {}, "t")), /^cameras\[0\]\.source\.latency: unknown key — known keys here: type, url, transport, timeout_s/);
  assert.match(error(() => buildServiceConfig({ cameras: [{ name: "a", source: "rtsp://x", backoff: { initial_s: 10, max_s: 5 } }] }, {}, {}, "t")), /^cameras\[0\]: source\.backoff\.maxS must be at least backoff\.initialS/);
});

test("sourceFromString recognises URLs, devices, folders and files", () => {
  assert.is(sourceFromString("rtsp://cam/s").type, "rtsp");
  assert.is(sourceFromString("https://cam/snap.jpg").type, "http");
  assert.equal(sourceFromString("csi://1"), { type: "csi", sensorId: 1, width: 1920, height: 1080, fps: 30 });
  assert.is(sourceFromString("/dev/video2").type, "v4l2");
  assert.is(sourceFromString(dir).type, "folder");
  assert.is(sourceFromString(join(TINY_MODEL, "config.json")).type, "file");
});

test.run();
