import { test } from "uvu";
import * as assert from "uvu/assert";
import { ConsoleView, describeAnswer } from "../../src/service/console_view.ts";
import { createLogger, resolveLogFormat } from "../../src/service/log.ts";
import type { ResultMessage } from "../../src/service/types.ts";

const message = (frame: number, task: string, answer: unknown): ResultMessage => ({
  camera: "door", task, frame, timestamp: "2026-12-07T12:00:00.000Z", image_size: { width: 640, height: 480 },
  result: { [task]: answer }, latency_ms: { total: 41.6, capture_to_publish: 44 }, model: "florence-2-shapes",
});

test("answers read as people want them: captions quoted, boxes with labels, words with their boxes, masks with points", () => {
  assert.is(describeAnswer("A red circle and a blue square."), '"A red circle and a blue square."');
  assert.is(describeAnswer({ bboxes: [[10.4, 20.6, 30, 40], [1, 2, 3, 4]], labels: ["circle", "star"] }), "2 found: circle [10,21,30,40], star [1,2,3,4]");
  assert.is(describeAnswer({ bboxes: [[1, 2, 3, 4]], labels: [""] }), "1 found: region [1,2,3,4]");
  assert.is(describeAnswer({ quad_boxes: [[5, 6, 50, 6, 50, 20, 5, 20]], labels: ["STOP"] }), '1 found: "STOP" [5,6,50,20]');
  assert.is(describeAnswer({ polygons: [[[0, 0, 10, 0, 10, 10]]], labels: [""] }), "1 found: mask (3 points)");
  assert.is(describeAnswer({ bboxes: [], labels: [] }), "nothing found");
  const many = { bboxes: Array.from({ length: 9 }, () => [0, 0, 1, 1]), labels: Array.from({ length: 9 }, () => "square") };
  assert.match(describeAnswer(many), /^9 found: (square \[0,0,1,1\], ){5}square \[0,0,1,1\], …$/);
});

test("one line per result with latency and the camera's rate; JSON lines with --log-format json", () => {
  const lines: string[] = [];
  let clock = 0;
  const view = new ConsoleView({ write: (l) => lines.push(l), now: () => clock });
  for (let frame = 0; frame < 4; frame++) {
    clock = frame * 500;
    view.result(message(frame, "<OD>", { bboxes: [[1, 2, 3, 4]], labels: ["circle"] }));
  }
  view.result(message(3, "<CAPTION>", "A red circle."));
  assert.is(lines[0], "door #0 <OD>: 1 found: circle [1,2,3,4]  (42 ms)\n");
  assert.is(lines[3], "door #3 <OD>: 1 found: circle [1,2,3,4]  (42 ms, 2.0 fps)\n");
  assert.is(lines[4], 'door #3 <CAPTION>: "A red circle."  (42 ms, 2.0 fps)\n', "a second task on the same frame does not count as a frame");
  const json: string[] = [];
  new ConsoleView({ write: (l) => json.push(l), json: true }).result(message(1, "<CAPTION>", "x"));
  assert.equal(JSON.parse(json[0]!), message(1, "<CAPTION>", "x"));
});

test("one line per tracked object's event; the message itself with --log-format json", () => {
  const lines: string[] = [];
  const after = {
    id: "1765123955.475377-mxklsc", camera: "door", label: "circle", score: 0.9, top_score: 0.9, box: [112.4, 80, 190, 158.6] as [number, number, number, number], area: 6084,
    current_zones: ["porch"], entered_zones: ["porch"], start_time: 1765123955.475, end_time: null, frame_time: 1765123957, stationary: true, has_snapshot: true, description: "red circle",
  };
  const view = new ConsoleView({ write: (l) => lines.push(l) });
  view.event({ type: "update", before: after, after });
  assert.is(lines[0], 'door event update circle 1765123955.475377-mxklsc [112,80,190,159] in porch stationary "red circle"\n');
  const json: string[] = [];
  new ConsoleView({ write: (l) => json.push(l), json: true }).event({ type: "new", before: after, after });
  assert.equal(JSON.parse(json[0]!).after.id, after.id);
});

test("text log lines carry the same fields, masked; auto is text on a terminal and JSON under journald or in a pipe", () => {
  const lines: string[] = [];
  const log = createLogger({ format: "text", write: (l) => lines.push(l), now: () => Date.parse("2026-12-07T12:04:05Z"), env: {} });
  log.warn("camera door stalled", { camera: "door", reason: "no frame for 10 s", source: "rtsp://admin:hunter2@cam/1" });
  assert.is(lines[0], '12:04:05 warn  camera door stalled camera=door reason="no frame for 10 s" source=rtsp://admin:***@cam/1\n');
  assert.is(resolveLogFormat("auto", {}, true), "text");
  assert.is(resolveLogFormat("auto", { JOURNAL_STREAM: "8:1234" }, true), "json");
  assert.is(resolveLogFormat("auto", {}, false), "json");
  assert.is(resolveLogFormat("json", {}, true), "json");
});

test.run();
