/** The one backoff: camera restarts and MQTT reconnects wait min·2^attempt, capped at max. */

/** min·2^attempt capped at max; attempt 0 (the first retry) waits min. */
export function backoffDelay(attempt: number, min: number, max: number): number {
  return Math.min(max, min * 2 ** Math.max(0, Math.min(attempt, 30)));
}

/** The backoff with jitter, so that clients cut off together do not come back together: 75–100 % of it, never below min. */
export function jitteredBackoffDelay(attempt: number, min: number, max: number, random: () => number = Math.random): number {
  return Math.max(min, Math.round(backoffDelay(attempt, min, max) * (0.75 + 0.25 * random())));
}
