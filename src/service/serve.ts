/**
 * `florence-edge serve`: cameras → newest frame → Florence-2 (one vision pass per frame) → MQTT, with systemd
 * notify/watchdog, stats and Prometheus metrics. With nothing configured it runs on embedded defaults: an in-process
 * broker on localhost, the bundled demo model and clip, printing what it publishes.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import process from "node:process";
import type { RuntimeEnvironment } from "../config.ts";
import { FlorenceError } from "../errors.ts";
import type { TaskResult, VisionFeatures } from "../florence/florence2.ts";
import { renderSnapshot } from "../florence/image.ts";
import { loadFlorence } from "../mod.ts";
import { demoClip, demoImagesDir, demoModelDir } from "../paths.ts";
import { type EmbeddedBroker, startBroker } from "./broker.ts";
import { applySetCommand } from "./commands.ts";
import type { CameraConfig, ServiceConfig, SourceConfig, TaskSchedule } from "./config.ts";
import { LatestFrame, waitForAnyFrame } from "./latest.ts";
import { createLogger, type Logger } from "./log.ts";
import { CameraLoop, type InferenceModel } from "./loop.ts";
import { type MetricsServer, ServiceMetrics, startMetricsServer } from "./metrics.ts";
import { MqttPublisher } from "./mqtt.ts";
import { overlayFromResult } from "./overlay.ts";
import { createSource } from "./sources/index.ts";
import type { CreateSourceOptions } from "./sources/spec.ts";
import { createNotifier, WatchdogFeeder } from "./systemd.ts";
import type { Frame, FrameSource, ResultMessage } from "./types.ts";
import { WorkerModel } from "./worker_model.ts";

/** The model as the service uses it: the loop's interface, what the logs name, and one dispose for all of it. */
type ServiceModel = InferenceModel & {
  readonly files: { readonly id: string; readonly dir: string; readonly precision: string };
  readonly engine: { readonly description: string };
  dispose(): Promise<void>;
};

export interface ServeOptions {
  env: RuntimeEnvironment;
  /** Stop by itself after this many seconds (demos, tests); default: run until SIGTERM/SIGINT. */
  durationS?: number;
  /** Print one line per published result to stdout (the embedded-defaults demo does). */
  echo?: boolean;
  /** Handle SIGTERM/SIGINT (default true). */
  handleSignals?: boolean;
  log?: Logger;
}

export const BUNDLED_CLIP = demoClip;

function hasExecutable(name: string): boolean {
  const dirs = (process.env["PATH"] ?? "").split(":");
  return dirs.some((d) => d && existsSync(join(d, name)));
}

/** The camera `npm start` serves: the bundled clip through ffmpeg, or the bundled images when ffmpeg is missing. */
export function embeddedCamera(): CameraConfig {
  const clip = BUNDLED_CLIP();
  const source: SourceConfig = hasExecutable("ffmpeg") && existsSync(clip)
    ? { type: "file", path: clip, loop: true, fps: 2 }
    : { type: "folder", path: demoImagesDir(), loop: true, fps: 1 };
  return {
    name: "demo",
    source,
    decoder: "ffmpeg",
    tasks: [
      { task: "<OD>", text: undefined, intervalS: 0, snapshot: true },
      { task: "<CAPTION>", text: undefined, intervalS: 2, snapshot: false },
    ],
    stallTimeoutS: 10,
  };
}

function sourceOptions(camera: CameraConfig, slot: LatestFrame): CreateSourceOptions {
  const common = { camera: camera.name, decoder: camera.decoder, stallTimeoutS: camera.stallTimeoutS, drops: slot };
  const s = camera.source;
  switch (s.type) {
    case "file":
      return { ...common, type: "file", path: s.path, loop: s.loop, ...(s.fps !== undefined ? { fps: s.fps } : {}) };
    case "folder":
      return { ...common, type: "folder", path: s.path, loop: s.loop, fps: s.fps };
    case "rtsp":
      return { ...common, type: "rtsp", url: s.url, transport: s.transport };
    case "v4l2":
      return { ...common, type: "v4l2", device: s.device, format: s.format, width: s.width, height: s.height, fps: s.fps };
    case "csi":
      return { ...common, type: "csi", sensorId: s.sensorId, width: s.width, height: s.height, fps: s.fps };
    case "http":
      return { ...common, type: "http", url: s.url, intervalS: s.intervalS };
  }
}

async function readPem(path: string | undefined, what: string): Promise<string | undefined> {
  if (path === undefined) return undefined;
  try {
    return await readFile(path, "utf8");
  } catch (cause) {
    throw new FlorenceError("CONFIG_INVALID", `mqtt.tls.${what}: cannot read ${path}: ${(cause as Error).message}`, { fix: "check the path and permissions", cause });
  }
}

/** Runs the service until a signal (or `durationS`); resolves with the exit code. */
export async function serve(config: ServiceConfig, options: ServeOptions): Promise<number> {
  const log = options.log ?? createLogger({ level: config.log.level });
  const notifier = createNotifier({ log });
  const cameras = config.cameras.length > 0 ? config.cameras : [embeddedCamera()];
  const embedded = config.cameras.length === 0;
  const cleanups: (() => Promise<void> | void)[] = [];
  let model: ServiceModel | undefined;
  let broker: EmbeddedBroker | undefined;
  let publisher: MqttPublisher | undefined;
  let metricsServer: MetricsServer | undefined;
  const sources: FrameSource[] = [];
  let loop: CameraLoop | undefined;
  let feeder: WatchdogFeeder | undefined;
  let statsTimer: ReturnType<typeof setInterval> | undefined;
  let stopping: Promise<number> | undefined;
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((resolve) => (resolveDone = resolve));

  const shutdown = (reason: string, code = 0): Promise<number> => {
    stopping ??= (async () => {
      log.info("stopping", { reason });
      notifier.stopping(`stopping: ${reason}`);
      if (statsTimer) clearInterval(statsTimer);
      feeder?.stop();
      await Promise.allSettled(sources.map((s) => s.stop()));
      await loop?.stop(); // finishes the inference in flight
      if (publisher) await publisher.stop(5000).catch((e) => log.warn("mqtt stop failed", { error: String(e) }));
      await metricsServer?.close().catch(() => undefined);
      await model?.dispose();
      await broker?.close().catch(() => undefined);
      for (const cleanup of cleanups) await cleanup();
      notifier.close();
      log.info("stopped", { reason });
      log.flush();
      resolveDone(code);
      return code;
    })();
    return stopping;
  };

  try {
    const metrics = new ServiceMetrics({ info: { version: "0.1.0" } });
    // model
    const modelPath = config.model.path ?? demoModelDir();
    if (config.model.path === undefined) log.warn("no model configured: using the bundled demo model", { model: modelPath, fix: "set model.path in the config or pass --model DIR" });
    const open = {
      env: options.env,
      backend: config.model.backend,
      precision: config.model.precision,
      ...(config.model.threads ? { threads: config.model.threads } : {}),
      resize: config.model.resize,
      tensorrt: {
        cudaGraphs: config.model.cudaGraphSteps === 0 ? (false as const) : { steps: config.model.cudaGraphSteps },
        zeroCopy: config.model.zeroCopy === "auto" ? ("auto" as const) : config.model.zeroCopy === "on",
      },
      log: (line: string) => log.info(line),
    };
    // ONNX Runtime's Node binding runs sessions on the calling thread: in a worker, a vision pass no longer holds up
    // MQTT keep-alives, commands, source pipes and the watchdog
    if (config.model.thread === "worker") {
      model = await WorkerModel.start(modelPath, open);
    } else {
      const local = await loadFlorence(modelPath, open);
      model = {
        files: local.files,
        engine: local.engine,
        encodeImage: (image) => local.encodeImage(image),
        runTask: (vision, request, generate) => local.runTask(vision as VisionFeatures, request, generate),
        dispose: async () => {
          await local.dispose();
          await local.engine.dispose();
        },
      };
    }
    log.info("model loaded", { model: model.files.id, dir: model.files.dir, backend: model.engine.description, precision: model.files.precision, thread: config.model.thread });

    // broker
    let url = config.mqtt.url;
    if (url === undefined) {
      try {
        broker = await startBroker({ host: "127.0.0.1", port: 1883 });
      } catch {
        broker = await startBroker({ host: "127.0.0.1", port: 0 });
      }
      url = broker.url;
      log.info("no MQTT broker configured: started the embedded broker (MQTT 3.1.1)", { url, subscribe: `mosquitto_sub -h ${broker.host} -p ${broker.port} -t '${config.mqtt.topicPrefix}/#' -v` });
    }

    // cameras and the loop
    const slots = new Map(cameras.map((c) => [c.name, new LatestFrame(c.name)]));
    const loopCameras = cameras.map((c) => ({ name: c.name, slot: slots.get(c.name)!, tasks: c.tasks.map((t) => ({ ...t })) }));
    const publishResult = async (message: ResultMessage, frame: Frame, taskResult: TaskResult, schedule: TaskSchedule) => {
      message.latency_ms.capture_to_publish = Math.round((performance.now() - frame.capturedMono) * 100) / 100;
      const ok = publisher!.publishResult(message);
      metrics.published("result", 0, ok);
      if (options.echo) process.stdout.write(`${message.camera} #${message.frame} ${message.task} ${message.latency_ms.total} ms ${JSON.stringify(message.result)}\n`);
      if (schedule.snapshot) {
        try {
          const jpeg = await renderSnapshot(frame.format === "rgb24" ? { width: frame.width, height: frame.height, data: frame.data } : frame.data, overlayFromResult(taskResult.result, { task: taskResult.task }), { quality: 80, maxWidth: 1280 });
          publisher!.publishSnapshot(message.camera, message.task, jpeg);
        } catch (error) {
          log.warn("snapshot failed", { camera: message.camera, task: message.task, error: String((error as Error).message ?? error) });
        }
      }
    };
    loop = new CameraLoop({
      model,
      cameras: loopCameras,
      generate: {
        ...(config.generation.numBeams !== undefined ? { numBeams: config.generation.numBeams } : {}),
        ...(config.generation.maxNewTokens !== undefined ? { maxNewTokens: config.generation.maxNewTokens } : {}),
        postprocess: { coordinates: config.postprocess.coordinates, scores: config.postprocess.scores },
      },
      waitForFrame: (signal) => waitForAnyFrame(slots.values(), signal),
      events: {
        result: (message, frame, taskResult, schedule) => void publishResult(message, frame, taskResult, schedule),
        error: (camera, stage, error) => {
          metrics.error(camera, stage);
          log.warn(stage === "decode" ? "frame skipped: it could not be decoded" : "task failed", { camera, stage, code: (error as FlorenceError).code, error: String((error as Error).message ?? error) });
        },
        processed: (camera, stageMs) => metrics.frameProcessed(camera, stageMs),
      },
    });

    publisher = new MqttPublisher({
      url,
      cameras: cameras.map((c) => c.name),
      topicPrefix: config.mqtt.topicPrefix,
      ...(config.mqtt.clientId ? { clientId: config.mqtt.clientId } : {}),
      ...(config.mqtt.username ? { username: config.mqtt.username } : {}),
      ...(config.mqtt.password ? { password: config.mqtt.password } : {}),
      tls: {
        ...(config.mqtt.tls.ca ? { ca: await readPem(config.mqtt.tls.ca, "ca") } : {}),
        ...(config.mqtt.tls.cert ? { cert: await readPem(config.mqtt.tls.cert, "cert") } : {}),
        ...(config.mqtt.tls.key ? { key: await readPem(config.mqtt.tls.key, "key") } : {}),
        rejectUnauthorized: config.mqtt.tls.rejectUnauthorized,
      },
      protocol: broker ? 4 : config.mqtt.protocol,
      qos: config.mqtt.qos,
      retain: config.mqtt.retain,
      offlineQueue: config.mqtt.offlineQueue,
      discovery: { enabled: config.mqtt.discovery.enabled, prefix: config.mqtt.discovery.prefix, model: model.files.id, swVersion: "0.1.0" },
      handlers: {
        setTasks: (command) => {
          const next = applySetCommand(loop!.tasksOf(command.camera) ?? [], command);
          loop!.setTasks(command.camera, next);
          log.info("schedule changed by command", { camera: command.camera, tasks: next.map((t) => t.task) });
          return next;
        },
        infer: (request) => loop!.request(request),
      },
      log: (level, message) => log.log(level, message, { component: "mqtt" }),
    });
    publisher.start();

    for (const camera of cameras) {
      const slot = slots.get(camera.name)!;
      const source = createSource(sourceOptions(camera, slot));
      sources.push(source);
      log.info("camera", { camera: camera.name, source: source.description, tasks: camera.tasks.map((t) => t.task) });
      source.start(
        (frame) => {
          metrics.frameReceived(frame.camera);
          slot.put(frame);
        },
        (status) => {
          metrics.sourceStatus(status);
          publisher!.publishStatus(status);
          const level = status.state === "failed" || status.state === "stalled" ? "warn" : "info";
          log.log(level, `camera ${status.camera} ${status.state}`, { camera: status.camera, reason: status.reason, restarts: status.restarts });
        },
      );
    }
    loop.start();

    statsTimer = setInterval(() => {
      for (const [name, slot] of slots) metrics.queueDepth(`frames:${name}`, slot.pending ? 1 : 0, 1);
      const counters = publisher!.counters();
      metrics.mqttConnection(counters.state === "online");
      publisher!.publishStats({ ...metrics.snapshot(), mqtt: counters });
    }, config.statsIntervalS * 1000);
    if (config.metrics.port !== undefined) {
      metricsServer = await startMetricsServer(metrics, { host: config.metrics.host, port: config.metrics.port });
      log.info("metrics", { url: metricsServer.url });
    }

    feeder = new WatchdogFeeder({ notifier, progress: () => loop!.processedFrames, idle: () => ![...slots.values()].some((s) => s.pending) });
    feeder.start();
    notifier.ready(`serving ${cameras.length} camera(s) with ${model.files.id}`);
    log.info("ready", { cameras: cameras.map((c) => c.name), mqtt: url.replace(/\/\/[^@/]*@/, "//***@"), prefix: config.mqtt.topicPrefix, embedded });
  } catch (error) {
    await shutdown(`start-up failed: ${(error as Error).message}`, 1);
    throw error;
  }

  if (options.handleSignals !== false) {
    const onSignal = (signal: string) => void shutdown(signal);
    process.once("SIGTERM", () => onSignal("SIGTERM"));
    process.once("SIGINT", () => onSignal("SIGINT"));
  }
  if (options.durationS !== undefined) {
    const timer = setTimeout(() => void shutdown(`--duration ${options.durationS}s elapsed`), options.durationS * 1000);
    cleanups.push(() => clearTimeout(timer));
  }
  return done;
}
