/**
 * The service's MQTT topic names, pure (`<prefix>` defaults to `florence-edge`):
 *   <prefix>/available                      availability (`online`, Last Will `offline`, `stopped`)
 *   <prefix>/<camera>/<task_slug>           one JSON result per task result
 *   <prefix>/<camera>/<task_slug>/snapshot  JPEG bytes
 *   <prefix>/<camera>/status                the camera's SourceStatus, retained
 *   <prefix>/stats                          the stats object
 *   <prefix>/<camera>/set                   commands in; answered on …/set/result or …/error
 *   <prefix>/<camera>/infer, <prefix>/infer inference requests in
 *   <prefix>/events                         tracked objects' new / update / end (Frigate's shape)
 *   <prefix>/tracked_object_update          descriptions of tracked objects
 *   <prefix>/<camera>/<label>               live objects of a label (`all`: of every label), retained
 *   <prefix>/<camera>/<label>/snapshot      the best view of the label's latest object, JPEG, retained
 *   <prefix>/<zone>/<label>                 live objects of a label in a zone (`all` too), retained
 * A label becomes a segment as `labelSegment` says: lower case, [a-z0-9_-], and `_object` after a name the camera's
 * own topics use (`status`, `set`, `od`, `all` …).
 */
import { describeValue, FlorenceError } from "../errors.ts";
import { isTaskToken, TASKS } from "../florence/tasks.ts";

export const DEFAULT_TOPIC_PREFIX = "florence-edge";
const SEGMENT = /^[^/+#\u0000]+$/;

/** Where a command topic leads: a camera's `set` or `infer`, or the service-wide `infer` (camera undefined). */
export type CommandRoute = { command: "set"; camera: string } | { command: "infer"; camera: string | undefined };

/** Throws CONFIG_INVALID (a configured name) or INVALID_ARGUMENT (a message's) unless `camera` is one topic segment. */
export function checkCameraSegment(camera: string, code: "CONFIG_INVALID" | "INVALID_ARGUMENT"): void {
  if (typeof camera !== "string" || !SEGMENT.test(camera)) {
    throw new FlorenceError(code, `camera name ${describeValue(camera)} cannot be an MQTT topic segment`, { fix: "use letters, digits, _ and -" });
  }
}

/** Segments under `<prefix>/<camera>/` that a label's topic may not take. */
const RESERVED_UNDER_CAMERA: ReadonlySet<string> = new Set([...Object.values(TASKS).map((t) => t.slug), "status", "set", "infer", "error", "all"]);

/** A label as a topic segment (and a Home Assistant id part): `traffic light` → `traffic_light`, `set` → `set_object`. */
export function labelSegment(label: string): string {
  const slug = label.toLowerCase().replace(/[^a-z0-9_-]+/g, "_").replace(/^_+|_+$/g, "").slice(0, 64) || "object";
  return RESERVED_UNDER_CAMERA.has(slug) ? `${slug}_object` : slug;
}

export class MqttTopics {
  readonly prefix: string;

  constructor(prefix: string = DEFAULT_TOPIC_PREFIX) {
    if (prefix === "" || /[+#\u0000]/.test(prefix) || prefix.startsWith("/") || prefix.endsWith("/") || prefix.startsWith("$")) {
      throw new FlorenceError("CONFIG_INVALID", `mqtt topic prefix ${describeValue(prefix)} may not be empty, contain # + or NUL, start with $, or start or end with /`);
    }
    this.prefix = prefix;
  }

  get availability(): string {
    return `${this.prefix}/available`;
  }

  get stats(): string {
    return `${this.prefix}/stats`;
  }

  /** `<prefix>/<camera>/<slug>`; INVALID_ARGUMENT for a camera that is no segment, UNKNOWN_TASK for a task. */
  result(camera: string, task: string): string {
    checkCameraSegment(camera, "INVALID_ARGUMENT");
    if (!isTaskToken(task)) throw new FlorenceError("UNKNOWN_TASK", `cannot publish a result of the unknown task ${describeValue(task)}`);
    return `${this.prefix}/${camera}/${TASKS[task].slug}`;
  }

  snapshot(camera: string, task: string): string {
    return `${this.result(camera, task)}/snapshot`;
  }

  status(camera: string): string {
    checkCameraSegment(camera, "INVALID_ARGUMENT");
    return `${this.prefix}/${camera}/status`;
  }

  get events(): string {
    return `${this.prefix}/events`;
  }

  get trackedObjectUpdate(): string {
    return `${this.prefix}/tracked_object_update`;
  }

  /** `<prefix>/<camera>/<label>` (label undefined: `all`), or `<prefix>/<zone>/<label>` for a zone's count. */
  count(camera: string, zone: string | undefined, label: string | undefined): string {
    checkCameraSegment(camera, "INVALID_ARGUMENT");
    return `${this.prefix}/${zone ?? camera}/${label === undefined ? "all" : labelSegment(label)}`;
  }

  objectSnapshot(camera: string, label: string): string {
    return `${this.count(camera, undefined, label)}/snapshot`;
  }

  setResult(camera: string): string {
    return `${this.prefix}/${camera}/set/result`;
  }

  /** Where a rejected command without a reply topic is answered. */
  error(camera: string | undefined): string {
    return camera !== undefined ? `${this.prefix}/${camera}/error` : `${this.prefix}/error`;
  }

  /** The filters the service subscribes to for commands and requests. */
  commandFilters(cameras: readonly string[]): string[] {
    const filters = [`${this.prefix}/infer`];
    for (const camera of cameras) filters.push(`${this.prefix}/${camera}/set`, `${this.prefix}/${camera}/infer`);
    return filters;
  }

  /** The command a topic carries, or undefined for any other topic. */
  route(topic: string, cameras: ReadonlySet<string>): CommandRoute | undefined {
    if (!topic.startsWith(`${this.prefix}/`)) return undefined;
    const parts = topic.slice(this.prefix.length + 1).split("/");
    if (parts.length === 1 && parts[0] === "infer") return { command: "infer", camera: undefined };
    if (parts.length === 2 && cameras.has(parts[0]!)) {
      if (parts[1] === "set") return { command: "set", camera: parts[0]! };
      if (parts[1] === "infer") return { command: "infer", camera: parts[0]! };
    }
    return undefined;
  }

  /** A client id from the prefix: at most 23 characters, the length every MQTT 3.1.1 broker must accept. */
  clientId(randomHex: string): string {
    return `${this.prefix.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 14)}-${randomHex}`;
  }
}
