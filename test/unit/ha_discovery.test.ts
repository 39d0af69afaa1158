/**
 * Every Home Assistant discovery payload the service sends follows Home Assistant's rules for device discovery and
 * for each platform it uses (test/support/ha_rules.ts, written from HA's documentation), and the schema in schemas/.
 * The rules are shown to catch what HA refuses: a test that could not fail would prove nothing.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { cameraDiscovery, type DiscoveryOptions, type EventEntities } from "../../src/service/discovery.ts";
import { labelSegment } from "../../src/service/mqtt_topics.ts";
import { haDeviceDiscoveryProblems } from "../support/ha_rules.ts";
import { loadSchemas } from "../support/json_schema.ts";

const schemas = loadSchemas();
const OPTIONS: DiscoveryOptions = { discoveryPrefix: "homeassistant", topicPrefix: "florence-edge", swVersion: "0.1.0", model: "florence-2-shapes" };
const ENTITIES: EventEntities = {
  labels: ["person", "traffic light", "set", "circle"],
  zones: [{ name: "driveway", labels: ["car", "person"] }, { name: "Porch-2", labels: [] }],
};

function payloads(): [string, Record<string, unknown>][] {
  return [
    ["front_door", undefined],
    ["front_door", ENTITIES],
    ["garage", { labels: [], zones: [] }],
  ].map(([camera, entities]) => {
    const message = cameraDiscovery(OPTIONS, camera as string, entities as EventEntities | undefined);
    return [message.topic, JSON.parse(message.payload)];
  });
}

test("every discovery payload follows Home Assistant's rules for device discovery and each platform, and the schema", () => {
  for (const [topic, payload] of payloads()) {
    assert.equal(haDeviceDiscoveryProblems(topic, payload), [], topic);
    schemas.assertValid("ha_discovery", payload);
  }
});

test("with events: an event entity (new, end), occupancy and count per label and zone, an image per label, ids by default_entity_id", () => {
  const [, payload] = payloads()[1]!;
  const components = payload["components"] as Record<string, Record<string, unknown>>;
  const byPlatform = (platform: string) => Object.entries(components).filter(([, c]) => c["platform"] === platform);
  assert.equal(byPlatform("event").map(([, c]) => c["event_types"]), [["new", "end"]]);
  assert.is(components["events"]!["state_topic"], "florence-edge/events");
  for (const label of ENTITIES.labels) {
    const segment = labelSegment(label);
    assert.is(components[`occupancy_${segment}`]!["device_class"], "occupancy");
    assert.is(components[`occupancy_${segment}`]!["state_topic"], `florence-edge/front_door/${segment}`);
    assert.is(components[`count_${segment}`]!["state_topic"], `florence-edge/front_door/${segment}`);
    assert.is(components[`snapshot_${segment}`]!["image_topic"], `florence-edge/front_door/${segment}/snapshot`);
  }
  assert.is(labelSegment("traffic light"), "traffic_light");
  assert.is(labelSegment("set"), "set_object"); // the camera's command topic keeps its name
  assert.is(components["zone_driveway_count_car"]!["state_topic"], "florence-edge/driveway/car");
  assert.is(components["zone_Porch-2_occupancy"]!["state_topic"], "florence-edge/Porch-2/all");
  for (const [key, c] of Object.entries(components)) {
    assert.is(c["default_entity_id"], `${c["platform"]}.florence_edge_front_door_${key.toLowerCase().replace(/-/g, "_")}`);
    assert.not.ok("object_id" in c);
  }
  // without events the device keeps its three sensors, and only them
  assert.equal(Object.keys(payloads()[0]![1]["components"] as object), ["caption", "object_count", "status"]);
});

test("the rules catch what Home Assistant refuses", () => {
  const [topic, good] = payloads()[1]!;
  const broken = (change: (p: Record<string, any>) => void): string[] => {
    const copy = JSON.parse(JSON.stringify(good));
    change(copy);
    return haDeviceDiscoveryProblems(topic, copy);
  };
  const cases: [string, (p: Record<string, any>) => void, RegExp][] = [
    ["no origin", (p) => delete p.origin, /origin: required/],
    ["origin without name", (p) => (p.origin = { sw: "1" }), /origin\.name: required/],
    ["no device identifiers", (p) => delete p.device.identifiers, /identifiers or connections/],
    ["no components", (p) => (p.components = {}), /components: required/],
    ["a component without unique_id", (p) => delete p.components.count_person.unique_id, /count_person\.unique_id: required/],
    ["the deprecated object_id", (p) => (p.components.count_person.object_id = "x"), /object_id: deprecated/],
    ["default_entity_id of another platform", (p) => (p.components.count_person.default_entity_id = "binary_sensor.x"), /default_entity_id/],
    ["a binary sensor of an unknown class", (p) => (p.components.occupancy_person.device_class = "people"), /device_class: "people"/],
    ["a binary sensor whose template never says OFF", (p) => (p.components.occupancy_person.value_template = "{{ 'ON' }}"), /never renders OFF/],
    ["an image with both topics", (p) => (p.components.snapshot_person.url_topic = "x/url"), /exactly one of image_topic and url_topic/],
    ["an image of a non-image type", (p) => (p.components.snapshot_person.content_type = "text/plain"), /content_type/],
    ["an event without event types", (p) => delete p.components.events.event_types, /event_types: required/],
    ["a sensor without a state topic", (p) => delete p.components.count_person.state_topic, /state_topic: required/],
    ["a sensor of an unknown state class", (p) => (p.components.count_person.state_class = "sum"), /state_class/],
    ["an enum sensor without options", (p) => delete p.components.status.options, /options/],
    ["availability given twice", (p) => (p.availability_topic = "x/available"), /may not be used together/],
    ["an availability without topic", (p) => (p.availability = [{ value_template: "{{ value }}" }]), /availability\[0\]\.topic: required/],
    ["a key and its abbreviation", (p) => (p.components.count_person.stat_t = "x"), /given twice/],
    ["an unknown key", (p) => (p.components.count_person.colour = "red"), /colour: unknown key/],
    ["two components with one unique id", (p) => (p.components.count_circle.unique_id = p.components.count_person.unique_id), /used twice/],
    ["an unbalanced template", (p) => (p.components.count_person.value_template = "{{ value "), /unbalanced/],
  ];
  for (const [name, change, problem] of cases) {
    const problems = broken(change);
    assert.ok(problems.some((p) => problem.test(p)), `${name}: ${JSON.stringify(problems)}`);
  }
  // abbreviated payloads are read as HA reads them
  const short = JSON.parse(JSON.stringify(good));
  short.dev = short.device;
  delete short.device;
  short.o = short.origin;
  delete short.origin;
  short.cmps = short.components;
  delete short.components;
  short.cmps.count_person = { p: "sensor", uniq_id: "x_count", def_ent_id: "sensor.x_count", stat_t: "t/a", val_tpl: "{{ value }}", name: "n" };
  assert.equal(haDeviceDiscoveryProblems(topic, short), []);
  assert.ok(haDeviceDiscoveryProblems("homeassistant/sensor/x/config", good).length > 0, "a single-component topic is no device topic");
});

test.run();
