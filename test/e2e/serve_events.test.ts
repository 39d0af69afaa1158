/**
 * `florence-edge serve` with events, as a user runs it, on a moving-shapes clip drawn by the generator (a folder of
 * frames), a real broker and an mqtt.js subscriber:
 *   - always: `serve --task "<OD>"` alone, on the tiny fixture model, publishes events, retained counts and a Home
 *     Assistant device with the event entity; every payload is valid, and a clean stop ends every object it began;
 *   - with the shapes-world model (world.json in the demo model's folder): the objects are the clip's shapes — one
 *     `new` and one `end` per shape in view long enough, named as the ground truth names them, described by
 *     `<REGION_TO_DESCRIPTION>` as `colour shape`. Until that model ships this part is a counted skip.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import mqtt from "mqtt";
import { demoModelDir, isSeeingModel } from "../../src/paths.ts";
import { startBroker } from "../../src/service/broker.ts";
import { labelSegment } from "../../src/service/mqtt_topics.ts";
import { loadWorldFont } from "../../src/world/font.ts";
import { clipFolder } from "../support/clip_folder.ts";
import { haDeviceDiscoveryProblems } from "../support/ha_rules.ts";
import { loadSchemas } from "../support/json_schema.ts";
import { REPO_ROOT, TINY_MODEL } from "../support/paths.ts";
import { waitFor } from "../support/wait_for.ts";
import { NOT_SEEING, testWhen } from "../support/test_when.ts";

const schemas = loadSchemas();
const font = loadWorldFont();

interface Served {
  messages: { topic: string; payload: Buffer; retain: boolean }[];
  stderr: string;
  code: number | null;
}

/** Runs serve with `args` against an embedded broker until it stops by itself (`--duration` or the clip's end + SIGTERM). */
async function serve(args: string[], prefix: string, stopWhen: (seen: Served["messages"]) => boolean, timeoutMs: number): Promise<Served> {
  const broker = await startBroker({ port: 0 });
  const client = mqtt.connect(broker.url, { protocolVersion: 4, reconnectPeriod: 0 });
  const messages: Served["messages"] = [];
  await new Promise<void>((resolve, reject) => {
    client.once("connect", () => resolve());
    client.once("error", reject);
  });
  client.on("message", (topic, payload, packet) => messages.push({ topic, payload, retain: packet.retain }));
  await client.subscribeAsync([`${prefix}/#`, "homeassistant/#"]);
  const child = spawn(process.execPath, [join(REPO_ROOT, "dist", "src", "bin.js"), "serve", "--mqtt", broker.url, "--topic-prefix", prefix, "--log-format", "json", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, NOTIFY_SOCKET: "" },
  });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  try {
    await waitFor("the clip to be served", timeoutMs, () => (stopWhen(messages) ? true : undefined)).catch((error) => assert.unreachable(`${(error as Error).message}\n${stderr.slice(-3000)}`));
    child.kill("SIGTERM");
    const code = await exited;
    await new Promise((resolve) => setTimeout(resolve, 300));
    return { messages, stderr, code };
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    await client.endAsync(true);
    await broker.close();
  }
}

/** Exit 0 after SIGTERM (under Deno a signalled child's code reads null even when it exits 0: the log line tells). */
function stoppedCleanly(served: Served): void {
  const deno = (globalThis as { Deno?: unknown }).Deno !== undefined;
  assert.ok(served.code === 0 || (deno && served.code === null), `exit code after SIGTERM: ${served.code}\n${served.stderr.slice(-2000)}`);
  assert.ok(/"msg":"stopped"/.test(served.stderr), "the log says stopped");
}

function json(served: Served, topic: string): Record<string, any>[] {
  return served.messages.filter((m) => m.topic === topic && m.payload.length > 0).map((m) => JSON.parse(m.payload.toString()));
}

test('serve --task "<OD>" alone publishes events, counts and the HA event entity; every payload is valid; a clean stop ends every object', async () => {
  const { dir } = await clipFolder(font, { seed: 91, frames: 12, lanes: 2, bounce: false }, "fe-events-");
  const served = await serve(["--model", TINY_MODEL, "--source", join(dir, "frames"), "--camera", "yard", "--task", "<OD>"], "fe-ev", (seen) => seen.filter((m) => m.topic === "fe-ev/yard/od").length >= 8, 90_000);
  stoppedCleanly(served);
  const events = json(served, "fe-ev/events");
  for (const e of events) schemas.assertValid("event", e);
  const news = events.filter((e) => e.type === "new").map((e) => e.after.id);
  const ends = events.filter((e) => e.type === "end").map((e) => e.after.id);
  // the random-weight fixture sees the same few boxes on every frame: they are tracked like objects that stand still
  assert.ok(news.length >= 1, `objects: ${news.length}\n${served.stderr.slice(-1500)}`);
  assert.equal([...ends].sort(), [...news].sort(), "one end per new, the last ones at the clean stop");
  const all = served.messages.filter((m) => m.topic === "fe-ev/yard/all");
  assert.ok(all.length >= 2 && all.every((m) => Number.isInteger(JSON.parse(m.payload.toString()))), "counts");
  assert.is(all.at(-1)!.payload.toString(), "0", "nothing left after the stop");
  const config = served.messages.filter((m) => m.topic === "homeassistant/device/fe-ev_yard/config" && m.payload.length > 0).at(-1)!;
  const payload = JSON.parse(config.payload.toString());
  assert.equal(haDeviceDiscoveryProblems(config.topic, payload), []);
  assert.equal(payload.components.events.event_types, ["new", "end"]);
  for (const label of new Set(events.map((e) => e.after.label))) assert.ok(`count_${labelSegment(label)}` in payload.components, `entities for ${label}`);
  assert.ok(served.stderr.split("\n").some((line) => line.includes('"events"') && line.includes('"yard"')), "the log says events are on");
});

// Until the shapes-world model ships, the demo model has random weights and this test is a counted skip.
const seeing = isSeeingModel(demoModelDir());
const maybe = testWhen(seeing, NOT_SEEING);

maybe("serve with the shapes model: one new and one end per shape, named and described as the ground truth says", async () => {
  const FRAMES = 40;
  const { dir, clip } = await clipFolder(font, { seed: 93, frames: FRAMES, lanes: 2, bounce: false }, "fe-events-");
  const config = join(dir, "config.yaml");
  writeFileSync(config, [
    "cameras:",
    "  - name: shapes",
    `    source: { type: folder, path: ${JSON.stringify(join(dir, "frames"))}, loop: false, fps: 4 }`,
    '    tasks: ["<OD>"]',
    "    events:",
    "      min_hits: 2",
    "      max_age_s: 2",
    '      description: { task: "<REGION_TO_DESCRIPTION>" }',
    "    zones:",
    "      left: [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]",
    "",
  ].join("\n"));
  const served = await serve(["--config", config, "--model", demoModelDir()], "fe-world-ev", (seen) => seen.some((m) => m.topic === "fe-world-ev/shapes/status" && /"ended"/.test(m.payload.toString())), 240_000);
  stoppedCleanly(served);
  const events = json(served, "fe-world-ev/events");
  for (const e of events) schemas.assertValid("event", e);
  const news = events.filter((e) => e.type === "new");
  const ends = events.filter((e) => e.type === "end");
  assert.equal(ends.map((e) => e.after.id).sort(), news.map((e) => e.after.id).sort(), "one end per new");
  // the shapes wholly in view for at least four frames must each be one object, with the ground truth's name
  const shapes = new Map<number, { label: string; colour: string; frames: number }>();
  for (const f of clip) f.truth.shapes.forEach((s, k) => {
    const entry = shapes.get(s.id) ?? { label: s.shape, colour: s.colour, frames: 0 };
    if (f.visibility[k]!.visible === 1) entry.frames++;
    shapes.set(s.id, entry);
  });
  const long = [...shapes.values()].filter((s) => s.frames >= 4);
  assert.ok(news.length >= long.length && news.length <= shapes.size, `objects ${news.length}: shapes in view ≥ 4 frames ${long.length}, shapes ${shapes.size}`);
  for (const label of new Set(long.map((s) => s.label))) {
    assert.ok(news.filter((e) => e.after.label === label).length >= long.filter((s) => s.label === label).length, `${label}s`);
  }
  // descriptions: `colour shape` of a shape of the clip with the object's label
  const updates = json(served, "fe-world-ev/tracked_object_update");
  assert.ok(updates.length >= long.length - 1, `descriptions: ${updates.length}`);
  const pairs = new Set([...shapes.values()].map((s) => `${s.colour} ${s.label}`));
  const right = updates.filter((u) => pairs.has(u.description.toLowerCase()) && u.description.toLowerCase().endsWith(u.label));
  assert.ok(right.length >= 0.75 * updates.length, `descriptions naming a shape of the clip: ${right.length} of ${updates.length}: ${updates.map((u) => u.description).join(", ")}`);
});

test.run();
