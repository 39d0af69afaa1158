/**
 * Pure config → options mappers: what `serve()` passes to the model loader, the camera loop, the sources and the
 * MQTT publisher, from the validated config tree. The tests use these same mappers.
 */
import type { RuntimeEnvironment } from "../config.ts";
import type { GenerateOptions } from "../florence/florence2.ts";
import type { OpenOptions } from "../mod.ts";
import type { MqttCommandHandlers } from "./command_router.ts";
import type { LogLevel } from "./mqtt_link.ts";
import type { MqttPublisherOptions } from "./mqtt.ts";
import type { CameraConfig, MqttConfig, ServiceConfig } from "./service_config.ts";
import type { CreateSourceOptions } from "./sources/spec.ts";

/** The service's version, shown in stats and on Home Assistant's device page. */
export const SERVICE_VERSION = "0.1.0";

/**
 * Publisher options from the validated `mqtt` config section. `url` is the configured broker or the embedded one's
 * (which speaks MQTT 3.1.1 only); the TLS files named in the config are read by the caller and passed as bytes.
 */
export function publisherOptionsFromConfig(
  config: MqttConfig,
  context: {
    url: string;
    cameras: readonly string[];
    embeddedBroker?: boolean;
    tls?: { ca?: string | Uint8Array; cert?: string | Uint8Array; key?: string | Uint8Array };
    handlers?: MqttCommandHandlers;
    log?: (level: LogLevel, message: string) => void;
    swVersion?: string;
    model?: string;
  },
): MqttPublisherOptions {
  return {
    url: context.url,
    cameras: context.cameras,
    topicPrefix: config.topicPrefix,
    // an empty secret file means no password, not an empty one
    ...(config.clientId ? { clientId: config.clientId } : {}),
    ...(config.username ? { username: config.username } : {}),
    ...(config.password ? { password: config.password } : {}),
    tls: { ...context.tls, rejectUnauthorized: config.tls.rejectUnauthorized },
    protocol: context.embeddedBroker ? 4 : config.protocol,
    qos: config.qos,
    retain: config.retain,
    offlineQueue: config.offlineQueue,
    discovery: {
      enabled: config.discovery.enabled,
      prefix: config.discovery.prefix,
      ...(context.swVersion !== undefined ? { swVersion: context.swVersion } : {}),
      ...(context.model !== undefined ? { model: context.model } : {}),
    },
    ...(context.handlers !== undefined ? { handlers: context.handlers } : {}),
    ...(context.log !== undefined ? { log: context.log } : {}),
  };
}

/** How the model is opened, from the `model` section. */
export function modelOptionsFromConfig(config: ServiceConfig["model"], env: RuntimeEnvironment, log: (line: string) => void): OpenOptions {
  return {
    env,
    backend: config.backend,
    precision: config.precision,
    ...(config.threads ? { threads: config.threads } : {}),
    resize: config.resize,
    tensorrt: {
      cudaGraphs: config.cudaGraphSteps === 0 ? false : { steps: config.cudaGraphSteps },
      zeroCopy: config.zeroCopy === "auto" ? "auto" : config.zeroCopy === "on",
    },
    log,
  };
}

/** Generation and post-processing settings for every task the loop runs. */
export function generateOptionsFromConfig(config: Pick<ServiceConfig, "generation" | "postprocess">): GenerateOptions {
  return {
    ...(config.generation.numBeams !== undefined ? { numBeams: config.generation.numBeams } : {}),
    ...(config.generation.maxNewTokens !== undefined ? { maxNewTokens: config.generation.maxNewTokens } : {}),
    postprocess: { coordinates: config.postprocess.coordinates, scores: config.postprocess.scores },
  };
}

/** What `createSource` takes for one configured camera; `drops` is where its dropped frames are counted. */
export function sourceOptionsFromConfig(camera: CameraConfig, drops: { readonly dropped: number }): CreateSourceOptions {
  return {
    ...camera.source,
    camera: camera.name,
    decoder: camera.decoder,
    stallTimeoutS: camera.stallTimeoutS,
    ...(camera.backoff !== undefined ? { backoff: camera.backoff } : {}),
    ...(camera.maxFrameBytes !== undefined ? { maxFrameBytes: camera.maxFrameBytes } : {}),
    drops,
  };
}
