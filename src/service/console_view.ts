/**
 * What `serve` prints for people: per camera and task, the caption text or the labels with their boxes, the
 * latency and the camera's processing rate — one line per result. With `--log-format json` the same results are
 * JSON lines (the published message) instead.
 */
import type { EventMessage } from "../events/camera_events.ts";
import type { ResultMessage } from "./types.ts";

const MAX_ITEMS = 6;

function box(b: readonly number[]): string {
  return `[${b.map((v) => Math.round(v)).join(",")}]`;
}

/** The answer of a result as a short phrase: text as it is, boxes as `label [x1,y1,x2,y2]`, polygons as points. */
export function describeAnswer(answer: unknown): string {
  if (typeof answer === "string") return JSON.stringify(answer);
  if (answer === null || typeof answer !== "object") return String(answer);
  const a = answer as { bboxes?: number[][]; labels?: string[]; bboxes_labels?: string[]; quad_boxes?: number[][]; polygons?: number[][][]; polygons_labels?: string[] };
  const items: string[] = [];
  const labels = a.labels ?? a.bboxes_labels ?? [];
  (a.bboxes ?? []).forEach((b, i) => items.push(`${labels[i] || "region"} ${box(b)}`));
  (a.quad_boxes ?? []).forEach((q, i) => {
    const xs = [q[0]!, q[2]!, q[4]!, q[6]!];
    const ys = [q[1]!, q[3]!, q[5]!, q[7]!];
    items.push(`${JSON.stringify(a.labels?.[i] ?? "")} ${box([Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)])}`);
  });
  (a.polygons ?? []).forEach((polys, i) => items.push(`${a.polygons_labels?.[i] || a.labels?.[i] || "mask"} (${polys.map((p) => p.length / 2).join("+")} points)`));
  if (items.length === 0) return "nothing found";
  const shown = items.slice(0, MAX_ITEMS).join(", ");
  return items.length > MAX_ITEMS ? `${items.length} found: ${shown}, …` : `${items.length} found: ${shown}`;
}

/** Turns results into lines for a terminal, keeping each camera's recent frame times for its rate. */
export class ConsoleView {
  readonly #frames = new Map<string, { frame: number; at: number }[]>();
  readonly #write: (line: string) => void;
  readonly #json: boolean;
  readonly #now: () => number;

  constructor(options: { write: (line: string) => void; json?: boolean; now?: () => number }) {
    this.#write = options.write;
    this.#json = options.json === true;
    this.#now = options.now ?? (() => performance.now());
  }

  result(message: ResultMessage): void {
    if (this.#json) {
      this.#write(`${JSON.stringify(message)}\n`);
      return;
    }
    const fps = this.#rate(message.camera, message.frame);
    const input = message.text_input ? ` ${JSON.stringify(message.text_input)}` : "";
    const rate = fps === undefined ? "" : `, ${fps.toFixed(1)} fps`;
    this.#write(`${message.camera} #${message.frame} ${message.task}${input}: ${describeAnswer(message.result[message.task])}  (${Math.round(message.latency_ms.total)} ms${rate})\n`);
  }

  /** A tracked object's event: `demo event new circle 1765…-mxklsc [112,80,190,158] zones driveway`. */
  event(message: EventMessage): void {
    if (this.#json) {
      this.#write(`${JSON.stringify(message)}\n`);
      return;
    }
    const a = message.after;
    const zones = a.current_zones.length > 0 ? ` in ${a.current_zones.join(", ")}` : "";
    const extra = [a.stationary ? "stationary" : "", a.description !== null ? JSON.stringify(a.description) : ""].filter(Boolean).join(" ");
    this.#write(`${a.camera} event ${message.type} ${a.label} ${a.id} ${box(a.box)}${zones}${extra ? ` ${extra}` : ""}\n`);
  }

  /** Frames processed per second over the camera's last ten distinct frames. */
  #rate(camera: string, frame: number): number | undefined {
    const recent = this.#frames.get(camera) ?? [];
    if (recent[recent.length - 1]?.frame !== frame) {
      recent.push({ frame, at: this.#now() });
      if (recent.length > 11) recent.shift();
      this.#frames.set(camera, recent);
    }
    if (recent.length < 3) return undefined;
    const seconds = (recent[recent.length - 1]!.at - recent[0]!.at) / 1000;
    return seconds > 0 ? (recent.length - 1) / seconds : undefined;
  }
}
