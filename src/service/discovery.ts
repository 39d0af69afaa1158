/**
 * Home Assistant MQTT discovery, in the device-based form Home Assistant documents since 2024.11: one retained
 * message per camera on `<discovery_prefix>/device/<object_id>/config` holding the device, the origin, the shared
 * availability and the components (entities). Each camera becomes a device with three sensors: the caption text
 * (from `<prefix>/<camera>/caption`), the number of detected objects (boxes of `<prefix>/<camera>/od`) and the
 * camera's state (from `<prefix>/<camera>/status`); with events, an event entity (`new`, `end`), an occupancy
 * binary sensor and a count sensor for all objects, for each label and each zone, and an image entity of each
 * label's snapshot (topics as mqtt_topics.ts names them). Every entity suggests its entity id with
 * `default_entity_id` (`object_id` is deprecated). Availability follows `<prefix>/available`: only `online` is
 * available (`offline` from the Last Will and `stopped` from a clean shutdown both mean unavailable).
 *
 * Identifiers derive from the node id (by default the topic prefix) and the camera name only, so they are stable
 * across restarts and reconnects. An empty retained payload on the same topic removes the device's entities.
 */
import { FlorenceError, describeValue } from "../errors.ts";
import { labelSegment, MqttTopics } from "./mqtt_topics.ts";
import type { SourceState } from "./types.ts";

export interface DiscoveryOptions {
  /** Home Assistant's discovery prefix (its MQTT option "discovery prefix"), default `homeassistant`. */
  discoveryPrefix: string;
  /** The service's topic prefix (`florence-edge`). */
  topicPrefix: string;
  /** Distinguishes installations sharing a broker; [A-Za-z0-9_-]. Default: derived from the topic prefix. */
  nodeId?: string;
  /** The service's version, shown on the device page. */
  swVersion?: string;
  /** The model in use (its folder name or hub id), shown as the device's model. */
  model?: string;
}

export interface DiscoveryMessage {
  topic: string;
  /** The JSON config, or "" to remove the device. */
  payload: string;
}

const SOURCE_STATES: readonly SourceState[] = ["starting", "running", "stalled", "restarting", "failed", "stopped", "ended"];
const OBJECT_ID = /^[A-Za-z0-9_-]{1,128}$/;

/** A node id from a topic prefix: characters outside [A-Za-z0-9_-] become `_`. */
export function discoveryNodeId(topicPrefix: string): string {
  const id = topicPrefix.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64);
  return id === "" ? "florence_edge" : id;
}

function nodeIdOf(options: DiscoveryOptions): string {
  const id = options.nodeId ?? discoveryNodeId(options.topicPrefix);
  if (!OBJECT_ID.test(id)) {
    throw new FlorenceError("CONFIG_INVALID", `Home Assistant node id ${describeValue(id)} may only use letters, digits, _ and -`, { fix: "pick a node id such as florence_edge_garage" });
  }
  return id;
}

function checkCamera(camera: string): void {
  if (!OBJECT_ID.test(camera)) {
    throw new FlorenceError("INVALID_ARGUMENT", `camera name ${describeValue(camera)} cannot be part of a Home Assistant object id`, { fix: "use letters, digits, _ and - in camera names" });
  }
}

/** The discovery topic of one camera's device. */
export function discoveryTopic(options: DiscoveryOptions, camera: string): string {
  checkCamera(camera);
  return `${options.discoveryPrefix}/device/${nodeIdOf(options)}_${camera}/config`;
}

/** The unique id of one camera's entity (`caption`, `object_count`, `status`, `count_person` …), stable across restarts. */
export function discoveryUniqueId(options: DiscoveryOptions, camera: string, entity: string): string {
  return `${nodeIdOf(options)}_${camera}_${entity}`;
}

/** What a camera's events add to its device: an event entity, and entities per label and per zone. */
export interface EventEntities {
  /** Labels with counts (`<prefix>/<camera>/<label>`), as the events saw or the config named them. */
  labels: readonly string[];
  zones: readonly { name: string; labels: readonly string[] }[];
}

/** A component's config before its ids are added. */
type ComponentBody = { platform: string; name: string; [key: string]: unknown };
type Component = ComponentBody & { unique_id: string; default_entity_id: string };

/** Home Assistant's entity id suggestion: `<platform>.<object id>`, the object id in lower case [a-z0-9_]. */
function entityId(platform: string, uniqueId: string): string {
  return `${platform}.${uniqueId.toLowerCase().replace(/[^a-z0-9_]+/g, "_")}`;
}

function occupancy(name: string, topic: string): ComponentBody {
  return { platform: "binary_sensor", name: `${name} occupancy`, state_topic: topic, value_template: "{{ 'ON' if (value | int(0)) > 0 else 'OFF' }}", device_class: "occupancy" };
}

function count(name: string, topic: string): ComponentBody {
  return { platform: "sensor", name: `${name} count`, state_topic: topic, value_template: "{{ value | int(0) }}", state_class: "measurement", unit_of_measurement: "objects", icon: "mdi:counter" };
}

function title(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The event entity and the per-label and per-zone entities of one camera's events. */
function eventComponents(options: DiscoveryOptions, camera: string, entities: EventEntities): Record<string, ComponentBody> {
  const topics = new MqttTopics(options.topicPrefix);
  const out: Record<string, ComponentBody> = {
    events: {
      platform: "event",
      name: "Object events",
      state_topic: topics.events,
      event_types: ["new", "end"],
      // the topic carries every camera's events and their updates: only this camera's new and end pass
      value_template: `{% if value_json.after.camera == '${camera}' and value_json.type in ['new', 'end'] %}{{ {'event_type': value_json.type, 'id': value_json.after.id, 'label': value_json.after.label, 'entered_zones': value_json.after.entered_zones} | tojson }}{% else %}{}{% endif %}`,
      icon: "mdi:motion-sensor",
    },
    occupancy_all: occupancy("Object", topics.count(camera, undefined, undefined)),
    count_all: count("Object", topics.count(camera, undefined, undefined)),
  };
  for (const label of entities.labels) {
    const segment = labelSegment(label);
    out[`occupancy_${segment}`] = occupancy(title(label), topics.count(camera, undefined, label));
    out[`count_${segment}`] = count(title(label), topics.count(camera, undefined, label));
    out[`snapshot_${segment}`] = { platform: "image", name: `${title(label)} snapshot`, image_topic: topics.objectSnapshot(camera, label), content_type: "image/jpeg" };
  }
  for (const zone of entities.zones) {
    out[`zone_${zone.name}_occupancy`] = occupancy(title(zone.name), topics.count(camera, zone.name, undefined));
    out[`zone_${zone.name}_count`] = count(title(zone.name), topics.count(camera, zone.name, undefined));
    for (const label of zone.labels) out[`zone_${zone.name}_count_${labelSegment(label)}`] = count(`${title(zone.name)} ${label}`, topics.count(camera, zone.name, label));
  }
  return out;
}

/** Each component with its unique id and the entity id it suggests (`default_entity_id`, not the deprecated `object_id`). */
function withIds(options: DiscoveryOptions, camera: string, components: Record<string, ComponentBody>): Record<string, Component> {
  const out: Record<string, Component> = {};
  for (const [key, component] of Object.entries(components)) {
    const uniqueId = discoveryUniqueId(options, camera, key);
    out[key] = { ...component, unique_id: uniqueId, default_entity_id: entityId(component.platform, uniqueId) };
  }
  return out;
}

/** The retained config message that makes one camera a Home Assistant device (with its events' entities if given). */
export function cameraDiscovery(options: DiscoveryOptions, camera: string, events?: EventEntities): DiscoveryMessage {
  const node = nodeIdOf(options);
  const base = `${options.topicPrefix}/${camera}`;
  const version = options.swVersion ? { sw_version: options.swVersion } : {};
  const config = {
    device: {
      identifiers: [`${node}_${camera}`],
      name: camera,
      manufacturer: "florence-edge",
      model: options.model ? `Florence-2 (${options.model})` : "Florence-2",
      ...version,
    },
    origin: { name: "florence-edge", ...version },
    availability: [{ topic: `${options.topicPrefix}/available`, value_template: "{{ 'online' if value == 'online' else 'offline' }}" }],
    components: withIds(options, camera, {
      caption: {
        platform: "sensor",
        name: "Caption",
        state_topic: `${base}/caption`,
        // a sensor state holds at most 255 characters
        value_template: "{{ value_json.result['<CAPTION>'][:255] }}",
        json_attributes_topic: `${base}/caption`,
        json_attributes_template: "{{ {'caption': value_json.result['<CAPTION>'], 'frame': value_json.frame, 'timestamp': value_json.timestamp} | tojson }}",
        icon: "mdi:text-box-outline",
      },
      object_count: {
        platform: "sensor",
        name: "Objects",
        state_topic: `${base}/od`,
        value_template: "{{ value_json.result['<OD>'].bboxes | length }}",
        json_attributes_topic: `${base}/od`,
        json_attributes_template: "{{ {'labels': value_json.result['<OD>'].labels, 'frame': value_json.frame, 'timestamp': value_json.timestamp} | tojson }}",
        state_class: "measurement",
        unit_of_measurement: "objects",
        icon: "mdi:shape-outline",
      },
      status: {
        platform: "sensor",
        name: "Status",
        state_topic: `${base}/status`,
        value_template: "{{ value_json.state }}",
        json_attributes_topic: `${base}/status`,
        device_class: "enum",
        options: [...SOURCE_STATES],
        entity_category: "diagnostic",
        icon: "mdi:cctv",
      },
      ...(events !== undefined ? eventComponents(options, camera, events) : {}),
    }),
  };
  return { topic: discoveryTopic(options, camera), payload: JSON.stringify(config) };
}

/** The retained empty message that removes one camera's device from Home Assistant. */
export function removeCameraDiscovery(options: DiscoveryOptions, camera: string): DiscoveryMessage {
  return { topic: discoveryTopic(options, camera), payload: "" };
}
