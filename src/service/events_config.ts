/**
 * A camera's `events` and `zones` sections of the service config, validated with the shared checks (validate.ts):
 * every error names the key's path (`cameras[0].zones.driveway.polygon[2]: …`). Defaults live here: events are on
 * for every camera that runs `<OD>` or `<OPEN_VOCABULARY_DETECTION>`, so `serve --task "<OD>"` alone produces them.
 */
import { DETECTION_TASKS, type DetectionTask, type LabelFilter } from "../events/detections.ts";
import { isRelativePolygon, polygonArea, type ZoneSpec } from "../events/zones.ts";
import { checkOnlyKeys, readBoolean, readChoice, readMapping, readNumber, readString, reject, type Where } from "../validate.ts";

/** Tasks that describe an object: region tasks on its box in the whole frame, the others on the crop of its box. */
export const DESCRIPTION_TASKS = {
  "<REGION_TO_DESCRIPTION>": "region",
  "<REGION_TO_OCR>": "region",
  "<REGION_TO_CATEGORY>": "region",
  "<CAPTION>": "crop",
  "<DETAILED_CAPTION>": "crop",
  "<MORE_DETAILED_CAPTION>": "crop",
  "<OCR>": "crop",
} as const;
export type DescriptionTask = keyof typeof DESCRIPTION_TASKS;

export interface DescriptionConfig {
  task: DescriptionTask;
  /** Labels described; empty: every label. */
  labels: string[];
}

export interface EventsConfig {
  enabled: boolean;
  /** The detection task whose results are tracked. */
  task: DetectionTask;
  /** Labels tracked; empty: every label. */
  labels: string[];
  filters: Record<string, LabelFilter>;
  minHits: number;
  maxAgeS: number;
  stationaryS: number;
  updateIntervalS: number;
  snapshots: boolean;
  description: DescriptionConfig | undefined;
}

/** Names a zone may not take: they are topics of their own under the prefix (`<prefix>/<zone>/<label>`). */
export const RESERVED_ZONE_NAMES = ["events", "tracked_object_update", "available", "stats", "infer", "error"] as const;
const NAME = /^[A-Za-z0-9_-]{1,64}$/;

function at(name: string): Where {
  return { name, code: "CONFIG_INVALID" };
}

function labelList(value: unknown, path: string): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) reject(at(path), "must be a list of labels", { value, fix: "e.g. [person, car]" });
  return value.map((label, i) => readString(at(`${path}[${i}]`), label, { required: true, singleLine: true }).trim());
}

function parseFilters(value: unknown, path: string): Record<string, LabelFilter> {
  const filters: Record<string, LabelFilter> = {};
  for (const [label, raw] of Object.entries(readMapping(at(path), value))) {
    const where = `${path}.${label}`;
    const obj = readMapping(at(where), raw);
    checkOnlyKeys(at(where), obj, ["min_score", "min_area", "max_area"]);
    const area = { min: 0, max: 1e9, expected: "pixels, or a fraction of the frame (≤ 1)" };
    const f: LabelFilter = {};
    const minScore = readNumber(at(`${where}.min_score`), obj["min_score"] ?? undefined, { min: 0, max: 1 });
    const minArea = readNumber(at(`${where}.min_area`), obj["min_area"] ?? undefined, area);
    const maxArea = readNumber(at(`${where}.max_area`), obj["max_area"] ?? undefined, area);
    if (minScore !== undefined) f.minScore = minScore;
    if (minArea !== undefined) f.minArea = minArea;
    if (maxArea !== undefined) f.maxArea = maxArea;
    if (minArea !== undefined && maxArea !== undefined && (minArea <= 1) === (maxArea <= 1) && minArea > maxArea) {
      reject(at(`${where}.max_area`), `must not be below min_area (${minArea})`, { value: maxArea });
    }
    filters[label] = f;
  }
  return filters;
}

function parseDescription(value: unknown, path: string): DescriptionConfig | undefined {
  if (value === undefined || value === null) return undefined;
  const obj = typeof value === "string" ? { task: value } : readMapping(at(path), value);
  checkOnlyKeys(at(path), obj, ["task", "labels"]);
  const tasks = Object.keys(DESCRIPTION_TASKS) as DescriptionTask[];
  if (obj["task"] === undefined || obj["task"] === null) reject(at(`${path}.task`), "is required", { fix: `one of ${tasks.join(" ")}` });
  const task = readChoice(at(`${path}.task`), obj["task"], tasks, tasks[0]!);
  return { task, labels: labelList(obj["labels"], `${path}.labels`) };
}

/** The `events` section of camera `path`, whose tasks are `tasks`. */
export function parseEvents(value: unknown, path: string, tasks: readonly string[]): EventsConfig {
  const obj = readMapping(at(path), value);
  checkOnlyKeys(at(path), obj, ["enabled", "task", "labels", "filters", "min_hits", "max_age_s", "stationary_s", "update_interval_s", "snapshots", "description"]);
  const detecting = DETECTION_TASKS.filter((t) => tasks.includes(t));
  const enabled = readBoolean(at(`${path}.enabled`), obj["enabled"] ?? undefined, detecting.length > 0);
  const task = readChoice(at(`${path}.task`), obj["task"] ?? undefined, DETECTION_TASKS, detecting[0] ?? "<OD>");
  if (enabled && !tasks.includes(task)) {
    reject(at(obj["task"] === undefined ? `${path}.enabled` : `${path}.task`), `needs the camera to run ${task}`, { fix: `add "${task}" to the camera's tasks, or set ${path}.enabled: false` });
  }
  const num = (key: string, range: { min: number; max: number; int?: boolean }, fallback: number) => readNumber(at(`${path}.${key}`), obj[key] ?? undefined, range, fallback);
  return {
    enabled,
    task,
    labels: labelList(obj["labels"], `${path}.labels`),
    filters: parseFilters(obj["filters"], `${path}.filters`),
    minHits: num("min_hits", { min: 1, max: 100, int: true }, 2),
    maxAgeS: num("max_age_s", { min: 0.1, max: 3600 }, 2),
    stationaryS: num("stationary_s", { min: 0.1, max: 86400 }, 10),
    updateIntervalS: num("update_interval_s", { min: 0, max: 3600 }, 5),
    snapshots: readBoolean(at(`${path}.snapshots`), obj["snapshots"] ?? undefined, true),
    description: parseDescription(obj["description"], `${path}.description`),
  };
}

function parsePoint(value: unknown, path: string): [number, number] {
  if (!Array.isArray(value) || value.length !== 2) reject(at(path), "must be a point [x, y]", { value });
  const coordinate = (v: unknown, i: number) => readNumber(at(`${path}[${i}]`), v, { min: 0, max: 100_000, expected: "a number ≥ 0 (pixels, or a fraction of the frame ≤ 1)" });
  return [coordinate(value[0], 0)!, coordinate(value[1], 1)!];
}

function parseZone(name: string, value: unknown, path: string): ZoneSpec {
  if (!NAME.test(name)) reject(at(path), `${JSON.stringify(name)} is not a valid zone name`, { fix: "use 1-64 letters, digits, _ or - (it becomes an MQTT topic segment)" });
  if ((RESERVED_ZONE_NAMES as readonly string[]).includes(name)) reject(at(path), `the zone name ${JSON.stringify(name)} is a topic of its own`, { fix: `pick another name than ${RESERVED_ZONE_NAMES.join(", ")}` });
  const obj = Array.isArray(value) ? { polygon: value } : readMapping(at(path), value);
  checkOnlyKeys(at(path), obj, ["polygon", "labels", "inertia"]);
  const raw = obj["polygon"];
  if (!Array.isArray(raw) || raw.length < 3) reject(at(`${path}.polygon`), "must be a list of at least three points [x, y]", { value: raw, fix: "e.g. [[0.1, 0.5], [0.9, 0.5], [0.9, 1], [0.1, 1]] (fractions) or pixels" });
  const polygon = raw.map((p, i) => parsePoint(p, `${path}.polygon[${i}]`));
  if (polygonArea(polygon) <= 0) reject(at(`${path}.polygon`), "encloses no area (its points lie on a line)", { value: raw });
  if (!isRelativePolygon(polygon) && polygon.some(([x, y]) => (x > 0 && x < 1) || (y > 0 && y < 1))) {
    reject(at(`${path}.polygon`), "mixes fractions and pixels", { value: raw, fix: "give every point in fractions of the frame (all ≤ 1) or every point in pixels" });
  }
  return {
    name,
    polygon,
    labels: labelList(obj["labels"], `${path}.labels`),
    inertia: readNumber(at(`${path}.inertia`), obj["inertia"] ?? undefined, { min: 1, max: 100, int: true }, 3),
  };
}

/** The `zones` section of camera `path`: a mapping of zone name → { polygon, labels?, inertia? } (or the polygon). */
export function parseZones(value: unknown, path: string): ZoneSpec[] {
  return Object.entries(readMapping(at(path), value)).map(([name, zone]) => parseZone(name, zone, `${path}.${name}`));
}

/** Zone names are topics under the prefix: unique across cameras and unlike any camera's name. */
export function checkZoneNames(cameras: readonly { name: string; zones: readonly ZoneSpec[] }[]): void {
  const cameraNames = new Set(cameras.map((c) => c.name));
  const seen = new Map<string, string>();
  cameras.forEach((camera, i) => {
    for (const zone of camera.zones) {
      const path = `cameras[${i}].zones.${zone.name}`;
      if (cameraNames.has(zone.name)) reject(at(path), `is also a camera's name`, { fix: "zone and camera names share the topic level <prefix>/<name>: rename one" });
      const other = seen.get(zone.name);
      if (other !== undefined) reject(at(path), `is also a zone of ${other}`, { fix: "zone names must be unique across cameras (they are topics <prefix>/<zone>/<label>)" });
      seen.set(zone.name, `cameras[${i}]`);
    }
  });
}
