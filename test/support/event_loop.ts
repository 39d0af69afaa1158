import { performance } from "node:perf_hooks";

/**
 * Measures how long the event loop is blocked, from a 10 ms timer: the returned function stops it and gives the
 * longest delay beyond the tick (ms). Upper bounds on other delays only hold when nothing else holds the loop.
 */
export function watchEventLoop(): () => number {
  let last = performance.now();
  let worst = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - 10);
    last = now;
  }, 10);
  return () => {
    clearInterval(timer);
    return worst;
  };
}
