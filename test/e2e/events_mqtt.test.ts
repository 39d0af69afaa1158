/**
 * The events end to end over real brokers — aedes in process (MQTT 3.1.1) and Debian's mosquitto (MQTT 5) — with an
 * independent mqtt.js subscriber: a moving-shapes clip drawn by the generator, its ground-truth boxes as the `<OD>`
 * results of each frame (so what must happen is known), the service's EventPublisher and MqttPublisher, and the
 * camera loop with the real tiny model running the descriptions. On the wire: one `new` and one `end` per shape,
 * every payload valid against its schema, retained counts that a late subscriber gets and that match the shapes in
 * view, a snapshot JPEG with the object's box drawn where the shape is, descriptions on tracked_object_update, and
 * the Home Assistant device growing an entity set per label, valid by Home Assistant's rules.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Buffer } from "node:buffer";
import { performance } from "node:perf_hooks";
import { connect, type MqttClient } from "mqtt";
import { readEnvironment } from "../../src/config.ts";
import type { TaskResult } from "../../src/florence/florence2.ts";
import { decodeImage } from "../../src/florence/image.ts";
import { loadFlorence } from "../../src/mod.ts";
import { startBroker } from "../../src/service/broker.ts";
import { EventPublisher } from "../../src/service/event_publisher.ts";
import { parseEvents } from "../../src/service/events_config.ts";
import { CameraLoop } from "../../src/service/loop.ts";
import { MqttPublisher } from "../../src/service/mqtt.ts";
import type { CameraConfig } from "../../src/service/service_config.ts";
import type { Frame } from "../../src/service/types.ts";
import { sampleClip } from "../../src/world/clip.ts";
import { loadWorldFont } from "../../src/world/font.ts";
import { drawScene, renderScene } from "../../src/world/render.ts";
import { haDeviceDiscoveryProblems } from "../support/ha_rules.ts";
import { loadSchemas } from "../support/json_schema.ts";
import { freePort, Mosquitto, MOSQUITTO_PATH } from "../support/mosquitto.ts";
import { TINY_MODEL } from "../support/paths.ts";
import { waitFor } from "../support/wait_for.ts";

const schemas = loadSchemas();
const PREFIX = "fe-events";
const FPS = 10;
const font = loadWorldFont();
// three lanes of passing shapes, 120 frames at 10 fps: shapes enter, cross and leave
const clip = sampleClip(font, { seed: 5, frames: 120, lanes: 3, bounce: false });
const jpegs = await Promise.all(clip.map((f) => drawScene(f.scene, font)));

interface Seen {
  topic: string;
  payload: Buffer;
  retain: boolean;
}

async function subscriber(url: string, protocolVersion: 4 | 5): Promise<{ client: MqttClient; seen: Seen[] }> {
  const client = connect(url, { protocolVersion, reconnectPeriod: 0 });
  const seen: Seen[] = [];
  client.on("message", (topic, payload, packet) => seen.push({ topic, payload, retain: packet.retain }));
  await new Promise<void>((resolve, reject) => {
    client.once("connect", () => resolve());
    client.once("error", reject);
  });
  await client.subscribeAsync("#", { qos: 1 });
  return { client, seen };
}

function camera(): CameraConfig {
  const tasks = [{ task: "<OD>", text: undefined, intervalS: 0, snapshot: false }];
  const events = parseEvents({ max_age_s: 0.5, update_interval_s: 1, description: { task: "<REGION_TO_DESCRIPTION>" } }, "lane.events", ["<OD>"]);
  const zones = [{ name: "left_half", polygon: [[0, 0], [0.5, 0], [0.5, 1], [0, 1]] as [number, number][], labels: [], inertia: 2 }];
  return { name: "lane", source: { type: "folder", path: "." }, decoder: "auto", tasks, stallTimeoutS: 10, events, zones };
}

/** The clip's frame `k` as a camera delivers it, and its ground truth as an `<OD>` result. */
function frameAndResult(k: number, start: number): [Frame, TaskResult] {
  const f = clip[k]!;
  const frame: Frame = { camera: "lane", seq: k, capturedAt: start + (k * 1000) / FPS, capturedMono: performance.now(), format: "jpeg", width: 640, height: 480, data: jpegs[k]! };
  const shapes = f.truth.shapes;
  const od = { bboxes: shapes.map((s) => [...s.box]), labels: shapes.map((s) => s.shape as string), scores: shapes.map(() => 0.9) };
  const result = { task: "<OD>", result: { "<OD>": od }, image_size: { width: 640, height: 480 }, text: "", generated_ids: [], timings_ms: { encoder_ms: 0, decoder_ms: 0, parse_ms: 0, total_ms: 0 } } as unknown as TaskResult;
  return [frame, result];
}

async function scenario(url: string, protocolVersion: 4 | 5): Promise<void> {
  const model = await loadFlorence(TINY_MODEL, { env: readEnvironment({}), backend: "onnxruntime", threads: 2 });
  const { client, seen } = await subscriber(url, protocolVersion);
  const config = camera();
  const publisher = new MqttPublisher({ url, cameras: ["lane"], topicPrefix: PREFIX, protocol: protocolVersion, discovery: { enabled: true }, reconnectMinMs: 100 });
  const loop = new CameraLoop({
    model,
    cameras: [{ name: "lane", slot: { take: () => undefined, pending: false }, tasks: config.tasks }],
    events: { result: () => undefined, error: () => undefined, processed: () => undefined },
    generate: { maxNewTokens: 8 },
    waitForFrame: () => new Promise((resolve) => setTimeout(resolve, 20)),
  });
  const events = new EventPublisher({ cameras: [config], sink: publisher, background: (job) => loop.enqueueBackground(job) });
  let late: { client: MqttClient; seen: Seen[] } | undefined;
  try {
    events.start();
    publisher.start();
    loop.start();
    assert.ok(await publisher.waitOnline(5000), "online");
    const start = Date.now() - 120_000;
    const MIDDLE = 70;
    for (let k = 0; k < clip.length; k++) {
      const [frame, result] = frameAndResult(k, start);
      events.result("lane", frame, result);
      if (k === MIDDLE) {
        // a subscriber arriving now gets the retained counts: the shapes in view
        await publisher.flush(5000);
        await new Promise((resolve) => setTimeout(resolve, 300));
        late = await subscriber(url, protocolVersion);
        const want = clip[MIDDLE]!.truth.shapes.length;
        const all = await waitFor("the retained count", 5000, () => late!.seen.find((m) => m.topic === `${PREFIX}/lane/all` && m.retain));
        assert.is(Number(all.payload.toString()), want, `retained ${PREFIX}/lane/all at frame ${MIDDLE}`);
        for (const label of new Set(clip[MIDDLE]!.truth.shapes.map((s) => s.shape as string))) {
          const count = await waitFor(`the retained ${label} count`, 5000, () => late!.seen.find((m) => m.topic === `${PREFIX}/lane/${label}` && m.retain));
          assert.is(Number(count.payload.toString()), clip[MIDDLE]!.truth.shapes.filter((s) => s.shape === label).length);
        }
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    // the descriptions queued during the clip run now that no frame waits
    await waitFor("the descriptions", 30_000, () => (loop.backgroundQueued === 0 ? true : undefined));
    await new Promise((resolve) => setTimeout(resolve, 300));
    events.finish();
    assert.ok(await publisher.flush(5000), "flushed");
    await new Promise((resolve) => setTimeout(resolve, 300));

    const json = (topic: string) => seen.filter((m) => m.topic === topic && m.payload.length > 0).map((m) => JSON.parse(m.payload.toString()));
    const messages = json(`${PREFIX}/events`);
    for (const m of messages) schemas.assertValid("event", m);
    const shapes = new Set(clip.flatMap((f) => f.truth.shapes.map((s) => s.id)));
    const seenTwice = [...shapes].filter((id) => clip.filter((f) => f.truth.shapes.some((s) => s.id === id)).length >= 2);
    const news = messages.filter((m) => m.type === "new");
    const ends = messages.filter((m) => m.type === "end");
    assert.is(news.length, seenTwice.length, "one new per shape");
    assert.equal(ends.map((m) => m.after.id).sort(), news.map((m) => m.after.id).sort(), "one end per new");
    assert.ok(messages.some((m) => m.type === "update" && m.after.entered_zones.includes("left_half")), "a zone entered");

    const updates = json(`${PREFIX}/tracked_object_update`);
    for (const u of updates) schemas.assertValid("tracked_object_update", u);
    assert.ok(updates.length >= news.length - 2, `descriptions: ${updates.length} for ${news.length} objects`);
    assert.equal([...new Set(updates.map((u) => u.id))].length, updates.length, "one description per object");

    for (const m of seen.filter((m) => m.topic.startsWith(`${PREFIX}/lane/`) && !m.topic.endsWith("/snapshot") && !m.topic.endsWith("/status"))) {
      schemas.assertValid("count", JSON.parse(m.payload.toString()));
    }
    const lastAll = seen.filter((m) => m.topic === `${PREFIX}/lane/all`).at(-1)!;
    assert.is(lastAll.payload.toString(), "0", "all gone at the end");

    // a snapshot: the JPEG of a frame where that object was, its box drawn along the shape's top edge
    const snapshots = seen.filter((m) => m.topic.endsWith("/snapshot"));
    assert.ok(snapshots.length >= 1, "snapshots");
    assert.ok(late!.seen.some((m) => m.topic.endsWith("/snapshot") && m.retain), "a late subscriber gets the retained snapshots");
    // a snapshot is of one of the label's objects as an event saw it (the first is taken with its new): find the frame
    const label = snapshots[0]!.topic.split("/")[2]!;
    let best = 0;
    const shots = await Promise.all(snapshots.filter((m) => m.topic === snapshots[0]!.topic).slice(0, 3).map((m) => decodeImage(new Uint8Array(m.payload))));
    for (const shot of shots) assert.equal([shot.width, shot.height], [640, 480]);
    for (const m of messages.filter((m) => m.after.label === label && m.type !== "end")) {
      const k = Math.round((m.after.frame_time * 1000 - start) / (1000 / FPS));
      const clean = await renderScene(clip[k]!.scene, font);
      const [x1, y1, x2] = m.after.box.map(Math.round);
      for (const shot of shots) {
        let drawn = 0;
        for (let x = x1 + 2; x < x2 - 2; x++) {
          const i = (y1 * 640 + x) * 3;
          if (Math.abs(shot.data[i]! - clean.data[i]!) + Math.abs(shot.data[i + 1]! - clean.data[i + 1]!) > 60) drawn++;
        }
        best = Math.max(best, drawn / Math.max(1, x2 - x1 - 4));
      }
    }
    assert.ok(best > 0.6, `the box's top edge is drawn on the snapshot (${(100 * best).toFixed(0)} % of it)`);

    // Home Assistant: the device grew the labels' entities, valid by HA's rules
    const configs = seen.filter((m) => m.topic === "homeassistant/device/fe-events_lane/config" && m.payload.length > 0);
    const lastConfig = JSON.parse(configs.at(-1)!.payload.toString());
    assert.equal(haDeviceDiscoveryProblems(configs.at(-1)!.topic, lastConfig), []);
    schemas.assertValid("ha_discovery", lastConfig);
    for (const shape of new Set(news.map((m) => m.after.label))) assert.ok(`count_${shape}` in lastConfig.components, `entities for ${shape}`);
    assert.ok("zone_left_half_occupancy" in lastConfig.components && "events" in lastConfig.components);
  } finally {
    await loop.stop();
    await publisher.stop(2000);
    await client.endAsync(true);
    await late?.client.endAsync(true);
    await model.dispose();
  }
}

test("aedes (MQTT 3.1.1): a clip's shapes become events, counts, snapshots, descriptions and Home Assistant entities on the wire", async () => {
  const broker = await startBroker({ port: 0 });
  try {
    await scenario(broker.url, 4);
  } finally {
    await broker.close();
  }
});

if (MOSQUITTO_PATH) {
  test("mosquitto (MQTT 5): the same on a real broker", async () => {
    const broker = await Mosquitto.start(await freePort());
    try {
      await scenario(broker.url, 5);
    } finally {
      await broker.dispose();
    }
  });
} else {
  test.skip("mosquitto (MQTT 5): the same on a real broker [SKIPPED: mosquitto not installed: apt-get install mosquitto]", () => undefined);
}

test.run();
