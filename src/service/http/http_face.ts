/**
 * The HTTP face of `florence-edge serve`, put together: the live state fed by the service's results and camera
 * states, the inference routes on the shared request queue, the view routes, and the server — with every answered
 * request counted in the metrics (by route and status) and every failure inside the service logged.
 */
import type { GenerateOptions } from "../../florence/florence2.ts";
import { renderSnapshot } from "../../florence/image.ts";
import type { Logger } from "../log.ts";
import { frameImage, type InferenceModel } from "../loop.ts";
import type { ServiceMetrics } from "../metrics.ts";
import type { RequestQueue } from "../scheduler.ts";
import type { HttpConfig, TaskSchedule } from "../service_config.ts";
import { startHttpServer } from "./http_server.ts";
import { inferenceRoutes } from "./inference_routes.ts";
import { LiveState } from "./live_state.ts";
import { viewRoutes } from "./view_routes.ts";

export interface HttpFaceOptions {
  config: HttpConfig;
  queue: RequestQueue<InferenceModel>;
  cameras: readonly string[];
  modelId: string;
  generate: GenerateOptions;
  metrics: ServiceMetrics;
  tasksOf(camera: string): readonly TaskSchedule[] | undefined;
  log: Logger;
}

export interface HttpFace {
  readonly url: string;
  /** Feed it the service's results and camera states. */
  readonly live: LiveState;
  close(): Promise<void>;
}

/** Snapshots for people: at most 1280 wide, as the MQTT snapshots. */
const VIEW_SNAPSHOT = { quality: 80, maxWidth: 1280 } as const;

export async function startHttpFace(options: HttpFaceOptions): Promise<HttpFace> {
  const { config, metrics, log } = options;
  const live = new LiveState(options.cameras, (frame, overlay) => renderSnapshot(frameImage(frame), overlay, VIEW_SNAPSHOT));
  const routes = [
    ...inferenceRoutes({
      queue: options.queue,
      modelId: options.modelId,
      created: Math.floor(Date.now() / 1000),
      generate: options.generate,
      limits: { maxPixels: config.maxPixels, maxBytes: config.maxBodyBytes, remoteImages: config.remoteImages, privateAddresses: config.privateAddresses, fetchTimeoutMs: config.requestTimeoutS * 1000 },
      defaultTask: config.defaultTask,
      maxImages: config.maxImages,
      render: (image, overlay, format) => renderSnapshot(image, overlay, { ...VIEW_SNAPSHOT, format }),
    }),
    ...viewRoutes({ live, modelId: options.modelId, metrics, queue: () => options.queue.counters(), tasksOf: options.tasksOf }),
  ];
  const server = await startHttpServer({
    host: config.host,
    port: config.port,
    anyPortIfBusy: config.anyPortIfBusy,
    token: config.token,
    maxBodyBytes: config.maxBodyBytes,
    requestTimeoutS: config.requestTimeoutS,
    routes,
    observe: (route, method, status, ms) => {
      metrics.count("http_requests", "HTTP requests answered, by route, method and status.", { route, method, code: String(status) });
      log.debug("http", { route, method, status, ms: Math.round(ms * 100) / 100 });
    },
    onError: (route, error) => log.warn("http request failed inside the service", { route, error }),
  });
  return {
    url: server.url,
    live,
    close: async () => {
      live.close();
      await server.close();
    },
  };
}
