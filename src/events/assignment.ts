/**
 * Optimal one-to-one assignment of tracks to detections (the Hungarian method), through the `munkres` package: the
 * only module that imports it. Pairs whose cost is `forbidden` or more are never returned.
 */
import { munkres } from "munkres";

/** Rows × columns of costs (rows: tracks, columns: detections); returns the chosen [row, column] pairs. */
export function assignMinCost(costs: readonly (readonly number[])[], forbidden: number): [number, number][] {
  if (costs.length === 0 || costs[0]!.length === 0) return [];
  return munkres(costs).filter(([row, column]) => costs[row]![column]! < forbidden);
}
