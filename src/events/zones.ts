/**
 * Zones: named polygons of a camera's frame, in pixels or in fractions of the frame (every coordinate ≤ 1, as
 * Frigate reads them), each with the labels it cares about (none: all). An object is in a zone while the middle of
 * its box's bottom edge is (where it stands); it enters after `inertia` observations in a row inside, and leaves after
 * as many outside, so that a box trembling on the border does not flap. Pure.
 */
import { type Box, boxFoot, type FrameSize } from "./boxes.ts";

export interface ZoneSpec {
  name: string;
  /** Corners [x, y], at least three: pixels, or fractions of the frame when every coordinate is ≤ 1. */
  polygon: readonly (readonly [number, number])[];
  /** Labels that count in this zone; empty: every label. */
  labels: readonly string[];
  /** Observations in a row inside (outside) before an object enters (leaves); default 3. */
  inertia?: number;
}

/** Whether a polygon's corners are fractions of the frame (Frigate's rule: every coordinate ≤ 1). */
export function isRelativePolygon(polygon: ZoneSpec["polygon"]): boolean {
  return polygon.every(([x, y]) => x <= 1 && y <= 1);
}

/** The polygon in pixels of a frame of this size. */
export function zonePixels(zone: ZoneSpec, frame: FrameSize): [number, number][] {
  const relative = isRelativePolygon(zone.polygon);
  return zone.polygon.map(([x, y]) => (relative ? [x * frame.width, y * frame.height] : [x, y]));
}

/** Even-odd rule (crossings of a ray to the right). */
export function pointInPolygon(x: number, y: number, polygon: readonly (readonly [number, number])[]): boolean {
  let inside = false;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
    const [xi, yi] = polygon[i]!;
    const [xj, yj] = polygon[j]!;
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** Twice the signed area (shoelace); 0 for a degenerate polygon. */
export function polygonArea(polygon: readonly (readonly [number, number])[]): number {
  let twice = 0;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) twice += polygon[j]![0] * polygon[i]![1] - polygon[i]![0] * polygon[j]![1];
  return Math.abs(twice) / 2;
}

interface ZoneState {
  /** Observations in a row that disagree with `inside`. */
  streak: number;
  inside: boolean;
}

/** One object's zones: where it is now and where it has been, in the order it entered them. */
export class ObjectZones {
  readonly #zones: readonly ZoneSpec[];
  readonly #state = new Map<string, ZoneState>();
  readonly entered: string[] = [];

  /** The zones that count an object of this label. */
  constructor(zones: readonly ZoneSpec[], label: string) {
    this.#zones = zones.filter((z) => z.labels.length === 0 || z.labels.includes(label));
  }

  /** The zones the object is in now, in the config's order. */
  current(): string[] {
    return this.#zones.filter((z) => this.#state.get(z.name)?.inside).map((z) => z.name);
  }

  /** One observation of the object's box; true when the current or entered zones changed. */
  observe(box: Box, frame: FrameSize, pixels: (zone: ZoneSpec) => readonly (readonly [number, number])[]): boolean {
    const [x, y] = boxFoot(box);
    let changed = false;
    for (const zone of this.#zones) {
      const state = this.#state.get(zone.name) ?? { streak: 0, inside: false };
      this.#state.set(zone.name, state);
      const inside = pointInPolygon(Math.min(x, frame.width - 1e-6), Math.min(y, frame.height - 1e-6), pixels(zone));
      if (inside === state.inside) {
        state.streak = 0;
        continue;
      }
      state.streak++;
      if (state.streak < (zone.inertia ?? 3)) continue;
      state.inside = inside;
      state.streak = 0;
      changed = true;
      if (inside && !this.entered.includes(zone.name)) this.entered.push(zone.name);
    }
    return changed;
  }
}

/** A camera's zones with their pixel polygons cached per frame size. */
export class CameraZones {
  readonly zones: readonly ZoneSpec[];
  #size: FrameSize = { width: 0, height: 0 };
  #pixels = new Map<string, [number, number][]>();

  constructor(zones: readonly ZoneSpec[]) {
    this.zones = zones;
  }

  pixels(zone: ZoneSpec, frame: FrameSize): [number, number][] {
    if (frame.width !== this.#size.width || frame.height !== this.#size.height) {
      this.#size = { width: frame.width, height: frame.height };
      this.#pixels = new Map(this.zones.map((z) => [z.name, zonePixels(z, frame)]));
    }
    return this.#pixels.get(zone.name)!;
  }
}
