/**
 * Home Assistant MQTT discovery, in the device-based form Home Assistant documents since 2024.11: one retained
 * message per camera on `<discovery_prefix>/device/<object_id>/config` holding the device, the origin, the shared
 * availability and the components (entities). Each camera becomes a device with three sensors: the caption text
 * (from `<prefix>/<camera>/caption`), the number of detected objects (boxes of `<prefix>/<camera>/od`) and the
 * camera's state (from `<prefix>/<camera>/status`). Availability follows `<prefix>/available`: only `online` is
 * available (`offline` from the Last Will and `stopped` from a clean shutdown both mean unavailable).
 *
 * Identifiers derive from the node id (by default the topic prefix) and the camera name only, so they are stable
 * across restarts and reconnects. An empty retained payload on the same topic removes the device's entities.
 */
import { FlorenceError, describeValue } from "../errors.ts";
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

/** The unique id of one camera's entity (`caption`, `object_count`, `status`), stable across restarts. */
export function discoveryUniqueId(options: DiscoveryOptions, camera: string, entity: "caption" | "object_count" | "status"): string {
  return `${nodeIdOf(options)}_${camera}_${entity}`;
}

/** The retained config message that makes one camera a Home Assistant device. */
export function cameraDiscovery(options: DiscoveryOptions, camera: string): DiscoveryMessage {
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
    components: {
      caption: {
        platform: "sensor",
        name: "Caption",
        unique_id: discoveryUniqueId(options, camera, "caption"),
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
        unique_id: discoveryUniqueId(options, camera, "object_count"),
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
        unique_id: discoveryUniqueId(options, camera, "status"),
        state_topic: `${base}/status`,
        value_template: "{{ value_json.state }}",
        json_attributes_topic: `${base}/status`,
        device_class: "enum",
        options: [...SOURCE_STATES],
        entity_category: "diagnostic",
        icon: "mdi:cctv",
      },
    },
  };
  return { topic: discoveryTopic(options, camera), payload: JSON.stringify(config) };
}

/** The retained empty message that removes one camera's device from Home Assistant. */
export function removeCameraDiscovery(options: DiscoveryOptions, camera: string): DiscoveryMessage {
  return { topic: discoveryTopic(options, camera), payload: "" };
}
