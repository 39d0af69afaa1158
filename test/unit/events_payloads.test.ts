/**
 * What a camera's events say, on a moving-shapes clip's ground truth: every message matches its schema in schemas/,
 * `before` is what the object's previous message said, updates come only on a meaningful change and moves no more
 * often than update_interval_s, snapshots and descriptions are asked for as the README says; and the detection
 * results become detections through the camera's label filters.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { CameraEvents, type EventMessage, type EventsOutput } from "../../src/events/camera_events.ts";
import { detectionsOf, filterDetections } from "../../src/events/detections.ts";
import { sampleClip } from "../../src/world/clip.ts";
import { loadWorldFont } from "../../src/world/font.ts";
import { clipDetections } from "../support/clip_detections.ts";
import { loadSchemas } from "../support/json_schema.ts";

const schemas = loadSchemas();
const FRAME = { width: 640, height: 480 };
const UPDATE_S = 2;

function run(describe: (label: string) => boolean) {
  const frames = clipDetections(sampleClip(loadWorldFont(), { seed: 41, frames: 500, lanes: 3, bounce: false }), { jitter: 2, dropRate: 0.1, seed: 2 });
  const camera = new CameraEvents({
    camera: "yard",
    tracker: { minHits: 2, maxAgeS: 1 },
    zones: [{ name: "lawn", polygon: [[0, 0.5], [0.5, 0.5], [0.5, 1], [0, 1]], labels: [] }],
    updateIntervalS: UPDATE_S,
    describe,
  });
  const outputs: { time: number; out: EventsOutput }[] = [];
  for (const frame of frames) {
    const out = camera.observe(frame.time, frame.detections, FRAME);
    outputs.push({ time: frame.time, out });
    // each description is answered before the next frame, as a quick background job would be
    for (const request of out.descriptions) outputs.push({ time: frame.time, out: camera.describe(request.id, request.label, `a ${request.label}`) });
  }
  return { camera, outputs, frames };
}

test("every event, count and description matches its schema; before is the previous message's after", () => {
  const { outputs } = run((label) => label !== "star");
  const last = new Map<string, EventMessage["after"]>();
  const ended = new Set<string>();
  let descriptions = 0;
  for (const { out } of outputs) {
    for (const event of out.events) {
      schemas.assertValid("event", event);
      const id = event.after.id;
      assert.not.ok(ended.has(id), `a message after the end of ${id}`);
      if (event.type === "new") assert.is(last.has(id), false);
      else assert.equal(event.before, last.get(id), `${event.type} of ${id}: before is the last message's after`);
      if (event.type === "end") {
        ended.add(id);
        assert.ok(event.after.end_time !== null && event.after.end_time >= event.after.start_time);
        assert.equal(event.after.current_zones, []);
      } else assert.is(event.after.end_time, null);
      last.set(id, event.after);
    }
    for (const count of out.counts) schemas.assertValid("count", count.count);
    for (const update of out.objectUpdates) {
      schemas.assertValid("tracked_object_update", update);
      assert.is(last.get(update.id)?.description, `a ${update.label}`, "the description lands in the object's update");
      descriptions++;
    }
  }
  const news = outputs.flatMap(({ out }) => out.events.filter((e) => e.type === "new"));
  assert.ok(news.length >= 10, `objects: ${news.length}`);
  const described = news.filter((e) => e.after.label !== "star").length;
  // objects still on the edge when the clip ends may not have been asked yet
  assert.ok(descriptions <= described && descriptions >= described - 3, `descriptions ${descriptions} for ${described} objects`);
  assert.ok(outputs.every(({ out }) => out.descriptions.every((d) => d.label !== "star")), "stars are not described");
});

test("updates only on a meaningful change; a move or a better score no more often than update_interval_s", () => {
  const { outputs } = run(() => false);
  const lastAt = new Map<string, number>();
  let moves = 0;
  let changes = 0;
  for (const { time, out } of outputs) {
    for (const event of out.events) {
      const id = event.after.id;
      if (event.type === "update") {
        const { before, after } = event;
        const changed = JSON.stringify([before.current_zones, before.entered_zones, before.stationary, before.has_snapshot, before.description]) !==
          JSON.stringify([after.current_zones, after.entered_zones, after.stationary, after.has_snapshot, after.description]);
        if (changed) changes++;
        else {
          moves++;
          assert.ok(time - lastAt.get(id)! >= UPDATE_S * 1000, `a move of ${id} ${time - lastAt.get(id)!} ms after its last message`);
        }
      }
      lastAt.set(id, time);
    }
  }
  assert.ok(changes > 0 && moves > 0, `zone updates ${changes}, move updates ${moves}`);
});

test("snapshots: one at new (marked has_snapshot), then better views at most every update_interval_s", () => {
  const { outputs } = run(() => false);
  const shots = new Map<string, number[]>();
  for (const { time, out } of outputs) {
    for (const request of out.snapshots) shots.set(request.id, [...(shots.get(request.id) ?? []), time]);
    for (const event of out.events.filter((e) => e.type === "new")) {
      assert.ok(out.snapshots.some((s) => s.id === event.after.id), "a snapshot with new");
      assert.is(event.after.has_snapshot, true);
    }
  }
  for (const [id, times] of shots) for (let i = 1; i < times.length; i++) assert.ok(times[i]! - times[i - 1]! >= UPDATE_S * 1000, `snapshots of ${id}: ${times}`);
});

test("detections: <OD> and <OPEN_VOCABULARY_DETECTION> results through the label filters (scores, areas in pixels or fractions)", () => {
  const od = { "<OD>": { bboxes: [[0, 0, 100, 100], [10, 10, 20, 20], [5, 5, 4, 30], [0, 0, 320, 240]], labels: ["car", "car", "car", " person "], scores: [0.9, 0.3, 0.9, null] } };
  const dets = detectionsOf(od, "<OD>");
  assert.equal(dets.map((d) => [d.label, d.score]), [["car", 0.9], ["car", 0.3], ["person", null]], "an empty box is no detection");
  const ovd = { "<OPEN_VOCABULARY_DETECTION>": { bboxes: [[1, 2, 30, 40]], bboxes_labels: ["package"], polygons: [], polygons_labels: [] } };
  assert.equal(detectionsOf(ovd, "<OPEN_VOCABULARY_DETECTION>"), [{ box: [1, 2, 30, 40], label: "package", score: null }]);
  const frame = { width: 640, height: 480 };
  const keep = (filter: Parameters<typeof filterDetections>[1]) => filterDetections(dets, filter, frame).map((d) => `${d.label}:${d.score}`);
  assert.equal(keep({ labels: [], filters: {} }), ["car:0.9", "car:0.3", "person:null"]);
  assert.equal(keep({ labels: ["car"], filters: {} }), ["car:0.9", "car:0.3"]);
  assert.equal(keep({ labels: [], filters: { car: { minScore: 0.5 }, person: { minScore: 0.5 } } }), ["car:0.9", "person:null"], "no score passes");
  assert.equal(keep({ labels: [], filters: { car: { minArea: 1000 } } }), ["car:0.9", "person:null"], "pixels");
  assert.equal(keep({ labels: [], filters: { person: { maxArea: 0.2 } } }), ["car:0.9", "car:0.3"], "a quarter of the frame is over a fifth");
  assert.equal(keep({ labels: [], filters: { car: { minArea: 0.01 } } }), ["car:0.9", "person:null"], "1 % of 640 × 480 is 3072 px");
});

test.run();
