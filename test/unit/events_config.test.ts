/**
 * The `events` and `zones` config: the README's worked example is read as it stands, `serve --task "<OD>"` alone
 * turns events on, and each bad value is refused with the path of its key and a fix.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { buildServiceConfig, type ServeFlags } from "../../src/service/service_config.ts";
import { isFlorenceError } from "../../src/errors.ts";
import { REPO_ROOT } from "../support/paths.ts";

function build(document: unknown, flags: ServeFlags = {}) {
  return buildServiceConfig(document, flags, {}, "test");
}

function camera(extra: Record<string, unknown>, tasks: unknown = ["<OD>"]) {
  return { cameras: [{ name: "front", source: "rtsp://cam/stream", tasks, ...extra }] };
}

test("the README's worked example reads as it stands", () => {
  const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("#### Worked example"));
  const yaml = /```yaml\n([\s\S]*?)```/.exec(section)![1]!;
  const config = build(parseYaml(yaml));
  const front = config.cameras[0]!;
  assert.is(front.events.enabled, true);
  assert.is(front.events.task, "<OD>");
  assert.equal(front.events.labels, ["person", "car", "package"]);
  assert.equal(front.events.filters, { car: { minScore: 0.5, minArea: 0.01 }, person: { minArea: 2000 } });
  assert.is(front.events.stationaryS, 30);
  assert.equal(front.events.description, { task: "<REGION_TO_DESCRIPTION>", labels: ["person", "car"] });
  assert.equal(front.zones, [{ name: "driveway", polygon: [[0.1, 0.55], [0.9, 0.55], [0.9, 1], [0.1, 1]], labels: ["car"], inertia: 3 }]);
});

test("events are on by default for a camera running <OD> (serve --task \"<OD>\" alone), off without a detection task", () => {
  const od = build({}, { source: "rtsp://cam/stream", task: ["<OD>"] }).cameras[0]!;
  assert.equal(od.events, { enabled: true, task: "<OD>", labels: [], filters: {}, minHits: 2, maxAgeS: 2, stationaryS: 10, updateIntervalS: 5, snapshots: true, description: undefined });
  assert.equal(od.zones, []);
  assert.is(build({}, { source: "rtsp://cam/stream", task: ["<CAPTION>"] }).cameras[0]!.events.enabled, false);
  const ovd = build({}, { source: "rtsp://cam/stream", task: ["<OPEN_VOCABULARY_DETECTION>"], text: "package" }).cameras[0]!;
  assert.equal([ovd.events.enabled, ovd.events.task], [true, "<OPEN_VOCABULARY_DETECTION>"]);
  assert.is(build(camera({ events: { enabled: false } })).cameras[0]!.events.enabled, false);
  assert.equal(build(camera({ events: { description: "<CAPTION>" } })).cameras[0]!.events.description, { task: "<CAPTION>", labels: [] });
  assert.is(build({ mqtt: { qos: { events: 0 } } }).mqtt.qos.events, 0);
  assert.is(build({}).mqtt.qos.events, 1);
});

test("bad events and zones are refused with the key's path", () => {
  const cases: [unknown, string][] = [
    [camera({ events: { min_hits: 0 } }), "cameras[0].events.min_hits: must be an integer in 1..100, got 0"],
    [camera({ events: { colour: 1 } }), "cameras[0].events.colour: unknown key"],
    [camera({ events: { enabled: true } }, ["<CAPTION>"]), "cameras[0].events.enabled: needs the camera to run <OD>"],
    [camera({ events: { task: "<OPEN_VOCABULARY_DETECTION>" } }), "cameras[0].events.task: needs the camera to run <OPEN_VOCABULARY_DETECTION>"],
    [camera({ events: { task: "<CAPTION>" } }), "cameras[0].events.task: must be one of <OD>, <OPEN_VOCABULARY_DETECTION>"],
    [camera({ events: { labels: "car" } }), "cameras[0].events.labels: must be a list of labels"],
    [camera({ events: { filters: { car: { min_score: 2 } } } }), "cameras[0].events.filters.car.min_score: must be a number in 0..1, got 2"],
    [camera({ events: { filters: { car: { min_area: 500, max_area: 100 } } } }), "cameras[0].events.filters.car.max_area: must not be below min_area (500), got 100"],
    [camera({ events: { filters: { car: { size: 1 } } } }), "cameras[0].events.filters.car.size: unknown key"],
    [camera({ events: { description: { task: "<OD>" } } }), "cameras[0].events.description.task: must be one of <REGION_TO_DESCRIPTION>"],
    [camera({ events: { description: { labels: ["car"] } } }), "cameras[0].events.description.task: is required"],
    [camera({ zones: { driveway: { polygon: [[0, 0], [1, 0]] } } }), "cameras[0].zones.driveway.polygon: must be a list of at least three points"],
    [camera({ zones: { driveway: [[0, 0], [1, 0], [1, "x"]] } }), "cameras[0].zones.driveway.polygon[2][1]: must be a number ≥ 0"],
    [camera({ zones: { driveway: [[0, 0], [1, 0], [2, 0]] } }), "cameras[0].zones.driveway.polygon: encloses no area"],
    [camera({ zones: { driveway: [[0, 0], [0.5, 0], [300, 200]] } }), "cameras[0].zones.driveway.polygon: mixes fractions and pixels"],
    [camera({ zones: { driveway: { polygon: [[0, 0], [1, 0], [1, 1]], inertia: 0 } } }), "cameras[0].zones.driveway.inertia: must be an integer in 1..100, got 0"],
    [camera({ zones: { driveway: { polygon: [[0, 0], [1, 0], [1, 1]], labels: [""] } } }), "cameras[0].zones.driveway.labels[0]: must be a non-empty string"],
    [camera({ zones: { "drive way": [[0, 0], [1, 0], [1, 1]] } }), 'cameras[0].zones.drive way: "drive way" is not a valid zone name'],
    [camera({ zones: { events: [[0, 0], [1, 0], [1, 1]] } }), 'cameras[0].zones.events: the zone name "events" is a topic of its own'],
    [camera({ zones: { front: [[0, 0], [1, 0], [1, 1]] } }), "cameras[0].zones.front: is also a camera's name"],
    [{ cameras: [camera({ zones: { porch: [[0, 0], [1, 0], [1, 1]] } }).cameras[0], { name: "back", source: "rtsp://cam/2", zones: { porch: [[0, 0], [1, 0], [1, 1]] } }] }, "cameras[1].zones.porch: is also a zone of cameras[0]"],
    [{ mqtt: { qos: { events: 3 } } }, "mqtt.qos.events: must be one of 0, 1, 2, got 3"],
  ];
  for (const [document, message] of cases) {
    try {
      build(document);
      assert.unreachable(`accepted: ${message}`);
    } catch (error) {
      assert.ok(isFlorenceError(error, "CONFIG_INVALID"), String(error));
      assert.ok((error as Error).message.startsWith(message), `${(error as Error).message}\n  wanted: ${message}`);
    }
  }
});

test.run();
