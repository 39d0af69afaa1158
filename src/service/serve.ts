/**
 * `florence-edge serve`: cameras → newest frame → Florence-2 (one vision pass per frame) → MQTT, with systemd
 * notify/watchdog, stats and Prometheus metrics. With nothing configured it runs on embedded defaults: an in-process
 * broker on localhost, the bundled demo model and clip, printing what it publishes.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import process from "node:process";
import type { RuntimeEnvironment } from "../config.ts";
import { FlorenceError } from "../errors.ts";
import type { TaskResult, VisionFeatures } from "../florence/florence2.ts";
import { renderSnapshot } from "../florence/image.ts";
import { taskSpec } from "../florence/tasks.ts";
import { loadFlorence } from "../mod.ts";
import { demoClip, demoImagesDir, demoModelDir, isSeeingModel } from "../paths.ts";
import { type EmbeddedBroker, startBroker } from "./broker.ts";
import type { MqttCommandHandlers } from "./command_router.ts";
import { applySetCommand } from "./commands.ts";
import { parseEvents } from "./events_config.ts";
import { EventPublisher } from "./event_publisher.ts";
import { LatestFrame, waitForAnyFrame } from "./latest.ts";
import { ConsoleView } from "./console_view.ts";
import { createLogger, type Logger, resolveLogFormat } from "./log.ts";
import { CameraLoop, frameImage, type InferenceModel } from "./loop.ts";
import { type HttpFace, startHttpFace } from "./http/http_face.ts";
import { RequestQueue } from "./scheduler.ts";
import { type MetricsServer, ServiceMetrics, startMetricsServer } from "./metrics.ts";
import { MqttPublisher } from "./mqtt.ts";
import { overlayFromResult } from "./overlay.ts";
import { maskUrl } from "./redact.ts";
import { createSource } from "./sources/index.ts";
import { generateOptionsFromConfig, modelOptionsFromConfig, publisherOptionsFromConfig, SERVICE_VERSION, sourceOptionsFromConfig } from "./serve_options.ts";
import type { CameraConfig, ServiceConfig, SourceConfig, TaskSchedule } from "./service_config.ts";
import { createNotifier, type Notifier, WatchdogFeeder } from "./systemd.ts";
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
  /** Print one line per published result to stdout (the embedded-defaults demo does): text, JSON lines when log.format is "json". */
  echo?: boolean;
  /** Also write each task's latest annotated snapshot to `<dir>/<camera>-<task>.jpg` (replaced atomically). */
  snapshotDir?: string;
  /** Handle SIGTERM/SIGINT (default true). */
  handleSignals?: boolean;
  log?: Logger;
}

export const BUNDLED_CLIP = demoClip;
/** Descriptions waiting for the model at most; more are dropped and counted (`queues.descriptions.dropped`). */
const DESCRIPTION_QUEUE = 16;

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
  const tasks = [
    { task: "<OD>", text: undefined, intervalS: 0, snapshot: true },
    { task: "<CAPTION>", text: undefined, intervalS: 2, snapshot: false },
  ];
  return { name: "demo", source, decoder: "ffmpeg", tasks, stallTimeoutS: 10, events: parseEvents(undefined, "demo.events", tasks.map((t) => t.task)), zones: [] };
}

async function readPem(path: string | undefined, what: string): Promise<string | undefined> {
  if (path === undefined) return undefined;
  try {
    return await readFile(path, "utf8");
  } catch (cause) {
    throw new FlorenceError("CONFIG_INVALID", `mqtt.tls.${what}: cannot read ${path}: ${(cause as Error).message}`, { fix: "check the path and permissions", cause });
  }
}

/** The TLS files named in the config, read. */
async function readTls(tls: ServiceConfig["mqtt"]["tls"]): Promise<{ ca?: string; cert?: string; key?: string }> {
  return {
    ...(tls.ca ? { ca: await readPem(tls.ca, "ca") } : {}),
    ...(tls.cert ? { cert: await readPem(tls.cert, "cert") } : {}),
    ...(tls.key ? { key: await readPem(tls.key, "key") } : {}),
  };
}

/** Loads the model in a worker (default) or on this thread, as one object with one dispose. */
async function loadServiceModel(config: ServiceConfig, env: RuntimeEnvironment, log: Logger): Promise<ServiceModel> {
  const modelPath = config.model.path ?? demoModelDir();
  if (config.model.path === undefined) {
    const what = isSeeingModel(modelPath) ? "the bundled demo model (trained on the shapes world)" : "the bundled demo model (random weights: its answers mean nothing)";
    log.warn(`no model configured: using ${what}`, { model: modelPath, fix: "set model.path in the config or pass --model DIR" });
  }
  const open = modelOptionsFromConfig(config.model, env, (line: string) => log.info(line));
  // ONNX Runtime's Node binding runs sessions on the calling thread: in a worker, a vision pass no longer holds up
  // MQTT keep-alives, commands, source pipes and the watchdog
  if (config.model.thread === "worker") return WorkerModel.start(modelPath, open);
  const local = await loadFlorence(modelPath, open);
  return {
    files: local.files,
    engine: local.engine,
    encodeImage: (image) => local.encodeImage(image),
    runTask: (vision, request, generate) => local.runTask(vision as VisionFeatures, request, generate),
    dispose: () => local.dispose(), // the model owns its engine
  };
}

/** The configured broker's URL, or an embedded broker started on 127.0.0.1 (port 1883 if free). */
async function brokerUrl(config: ServiceConfig, log: Logger): Promise<{ url: string; broker: EmbeddedBroker | undefined }> {
  if (config.mqtt.url !== undefined) return { url: config.mqtt.url, broker: undefined };
  let broker: EmbeddedBroker;
  try {
    broker = await startBroker({ host: "127.0.0.1", port: 1883 });
  } catch {
    broker = await startBroker({ host: "127.0.0.1", port: 0 });
  }
  log.info("no MQTT broker configured: started the embedded broker (MQTT 3.1.1)", { url: broker.url, subscribe: `mosquitto_sub -h ${broker.host} -p ${broker.port} -t '${config.mqtt.topicPrefix}/#' -v` });
  return { url: broker.url, broker };
}

/** What a running service holds, stopped in reverse order of starting. */
interface Running {
  model?: ServiceModel;
  broker?: EmbeddedBroker;
  publisher?: MqttPublisher;
  metricsServer?: MetricsServer;
  http?: HttpFace;
  sources: FrameSource[];
  loop?: CameraLoop;
  events?: EventPublisher;
  feeder?: WatchdogFeeder;
  statsTimer?: ReturnType<typeof setInterval>;
  eventsTimer?: ReturnType<typeof setInterval>;
  cleanups: (() => Promise<void> | void)[];
}

async function stopRunning(running: Running, log: Logger): Promise<void> {
  if (running.statsTimer) clearInterval(running.statsTimer);
  if (running.eventsTimer) clearInterval(running.eventsTimer);
  running.feeder?.stop();
  await running.http?.close().catch((e) => log.warn("http stop failed", { error: String(e) }));
  await Promise.allSettled(running.sources.map((s) => s.stop()));
  await running.loop?.stop(); // finishes the inference in flight
  running.events?.finish(); // every object's end, counts back to 0, before MQTT flushes
  if (running.publisher) await running.publisher.stop(5000).catch((e) => log.warn("mqtt stop failed", { error: String(e) }));
  await running.metricsServer?.close().catch(() => undefined);
  await running.model?.dispose();
  await running.broker?.close().catch(() => undefined);
  for (const cleanup of running.cleanups) await cleanup();
}

/** Publishes one result, and its snapshot when the schedule asks for one. */
function resultPublisher(publisher: MqttPublisher, metrics: ServiceMetrics, log: Logger, view: ConsoleView | undefined, snapshotDir: string | undefined, http: () => HttpFace | undefined) {
  return async (message: ResultMessage, frame: Frame, taskResult: TaskResult, schedule: TaskSchedule): Promise<void> => {
    message.latency_ms.capture_to_publish = Math.round((performance.now() - frame.capturedMono) * 100) / 100;
    const ok = publisher.publishResult(message);
    metrics.published("result", 0, ok);
    view?.result(message);
    http()?.live.result(message, frame);
    if (!schedule.snapshot) return;
    try {
      const jpeg = await renderSnapshot(frameImage(frame), overlayFromResult(taskResult.result, { task: taskResult.task }), { quality: 80, maxWidth: 1280 });
      publisher.publishSnapshot(message.camera, message.task, jpeg);
      if (snapshotDir !== undefined) await writeSnapshotFile(snapshotDir, message.camera, message.task, jpeg);
    } catch (error) {
      log.warn("snapshot failed", { camera: message.camera, task: message.task, error: String((error as Error).message ?? error) });
    }
  };
}

/** `<camera>-<task slug>.jpg`, the slug as in the MQTT topics (`od`, `dense_region_caption`). */
function snapshotFileName(camera: string, task: string): string {
  return `${camera}-${taskSpec(task).slug}.jpg`;
}

/** `<dir>/<camera>-<task slug>.jpg`, written beside and renamed, so a viewer never reads half a file. */
async function writeSnapshotFile(dir: string, camera: string, task: string, jpeg: Uint8Array): Promise<void> {
  const file = join(dir, snapshotFileName(camera, task));
  await writeFile(`${file}.part`, jpeg);
  await rename(`${file}.part`, file);
}

/** Starts every camera's source: frames into its slot, status changes to MQTT, metrics and the log. */
function startSources(cameras: readonly CameraConfig[], slots: ReadonlyMap<string, LatestFrame>, publisher: MqttPublisher, metrics: ServiceMetrics, log: Logger, http: HttpFace | undefined): FrameSource[] {
  return cameras.map((camera) => {
    const slot = slots.get(camera.name)!;
    const source = createSource(sourceOptionsFromConfig(camera, slot));
    log.info("camera", { camera: camera.name, source: source.description, tasks: camera.tasks.map((t) => t.task) });
    source.start(
      (frame) => {
        metrics.frameReceived(frame.camera);
        slot.put(frame);
      },
      (status) => {
        metrics.sourceStatus(status);
        publisher.publishStatus(status);
        http?.live.status(status);
        const level = status.state === "failed" || status.state === "stalled" ? "warn" : "info";
        log.log(level, `camera ${status.camera} ${status.state}`, { camera: status.camera, reason: status.reason, restarts: status.restarts });
      },
    );
    return source;
  });
}

/** Starts everything in order (model, broker, loop, MQTT, cameras, stats, metrics, watchdog) into `running`. */
async function start(config: ServiceConfig, options: ServeOptions, cameras: readonly CameraConfig[], running: Running, log: Logger, notifier: Notifier): Promise<void> {
  const metrics = new ServiceMetrics({ info: { version: SERVICE_VERSION } });
  const model = (running.model = await loadServiceModel(config, options.env, log));
  log.info("model loaded", { model: model.files.id, dir: model.files.dir, backend: model.engine.description, precision: model.files.precision, thread: config.model.thread });
  const { url, broker } = await brokerUrl(config, log);
  running.broker = broker;

  const slots = new Map(cameras.map((c) => [c.name, new LatestFrame(c.name)]));
  // HTTP requests and MQTT `infer` commands wait here for their turns between the cameras' frames; refusals are its drops
  const requests: RequestQueue<InferenceModel> = new RequestQueue<InferenceModel>({
    capacity: config.http.queueSize,
    observer: {
      rejected: () => metrics.queueDepth("requests", requests.depth, requests.capacity, requests.counters().rejected),
      depth: (depth, capacity) => metrics.queueDepth("requests", depth, capacity, requests.counters().rejected),
    },
  });
  const generate = generateOptionsFromConfig(config);
  let publishResult: ReturnType<typeof resultPublisher> | undefined;
  let events: EventPublisher | undefined;
  const loop = (running.loop = new CameraLoop({
    model,
    requests,
    cameras: cameras.map((c) => ({ name: c.name, slot: slots.get(c.name)!, tasks: c.tasks.map((t) => ({ ...t })) })),
    generate,
    waitForFrame: (signal) => waitForAnyFrame(slots.values(), signal),
    background: { maxQueued: DESCRIPTION_QUEUE },
    events: {
      result: (message, frame, taskResult, schedule) => {
        void publishResult?.(message, frame, taskResult, schedule);
        events?.result(message.camera, frame, taskResult);
      },
      error: (camera, stage, error) => {
        metrics.error(camera, stage);
        log.warn(stage === "decode" ? "frame skipped: it could not be decoded" : "task failed", { camera, stage, code: (error as FlorenceError).code, error: String((error as Error).message ?? error) });
      },
      processed: (camera, stageMs) => metrics.frameProcessed(camera, stageMs),
    },
  }));

  const handlers: MqttCommandHandlers = {
    setTasks: (command) => {
      const next = applySetCommand(loop.tasksOf(command.camera) ?? [], command);
      loop.setTasks(command.camera, next);
      log.info("schedule changed by command", { camera: command.camera, tasks: next.map((t) => t.task) });
      return next;
    },
    infer: (request) => loop.request(request),
  };
  const publisher = (running.publisher = new MqttPublisher(
    publisherOptionsFromConfig(config.mqtt, {
      url,
      cameras: cameras.map((c) => c.name),
      embeddedBroker: broker !== undefined,
      tls: await readTls(config.mqtt.tls),
      handlers,
      log: (level, message) => log.log(level, message, { component: "mqtt" }),
      swVersion: SERVICE_VERSION,
      model: model.files.id,
    }),
  ));
  const view = options.echo ? new ConsoleView({ write: (line) => void process.stdout.write(line), json: config.log.format === "json" }) : undefined;
  if (options.snapshotDir !== undefined) {
    await mkdir(options.snapshotDir, { recursive: true });
    log.info("annotated snapshots", { dir: options.snapshotDir, files: cameras.flatMap((c) => c.tasks.filter((t) => t.snapshot).map((t) => snapshotFileName(c.name, t.task))) });
  }
  if (config.http.enabled) {
    running.http = await startHttpFace({ config: config.http, queue: requests, cameras: cameras.map((c) => c.name), modelId: model.files.id, generate, metrics, tasksOf: (camera) => loop.tasksOf(camera), log });
    log.info("http: the live view and the OpenAI- and NVIDIA-compatible APIs", { url: `${running.http.url}/`, access: config.http.token !== undefined ? "bearer token required" : "open to this machine only" });
    if (options.echo) process.stdout.write(`live view: ${running.http.url}/\n`);
  }
  publishResult = resultPublisher(publisher, metrics, log, view, options.snapshotDir, () => running.http);
  events = running.events = new EventPublisher({ cameras, sink: publisher, background: (job) => loop.enqueueBackground(job), metrics, log, ...(view ? { onEvent: (event) => view.event(event) } : {}) });
  if (events.cameras.length > 0) log.info("events", { cameras: events.cameras, topic: `${config.mqtt.topicPrefix}/events` });
  events.start();
  running.eventsTimer = setInterval(() => events!.tick(Date.now()), 1000);
  publisher.start();
  running.sources.push(...startSources(cameras, slots, publisher, metrics, log, running.http));
  loop.start();

  running.statsTimer = setInterval(() => {
    for (const [name, slot] of slots) metrics.queueDepth(`frames:${name}`, slot.pending ? 1 : 0, 1);
    metrics.queueDepth("descriptions", loop.backgroundQueued, DESCRIPTION_QUEUE, loop.backgroundDropped);
    const counters = publisher.counters();
    metrics.mqttConnection(counters.state === "online");
    publisher.publishStats({ ...metrics.snapshot(), ...(events!.cameras.length > 0 ? { events: events!.stats() } : {}), mqtt: counters });
  }, config.statsIntervalS * 1000);
  if (config.metrics.port !== undefined) {
    running.metricsServer = await startMetricsServer(metrics, { host: config.metrics.host, port: config.metrics.port });
    log.info("metrics", { url: running.metricsServer.url });
  }
  running.feeder = new WatchdogFeeder({ notifier, progress: () => loop.processedFrames + loop.servedRequests, idle: () => ![...slots.values()].some((s) => s.pending) && !loop.requestsWaiting });
  running.feeder.start();
  notifier.ready(`serving ${cameras.length} camera(s) with ${model.files.id}`);
  log.info("ready", { cameras: cameras.map((c) => c.name), mqtt: maskUrl(url), prefix: config.mqtt.topicPrefix, embedded: config.demoCamera });
}

/** Runs the service until a signal (or `durationS`); resolves with the exit code. */
export async function serve(config: ServiceConfig, options: ServeOptions): Promise<number> {
  const log = options.log ?? createLogger({ level: config.log.level, format: resolveLogFormat(config.log.format) });
  const notifier = createNotifier({ log });
  const cameras = config.cameras.length > 0 ? config.cameras : config.demoCamera ? [embeddedCamera()] : [];
  const running: Running = { sources: [], cleanups: [] };
  let stopping: Promise<number> | undefined;
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((resolve) => (resolveDone = resolve));
  const shutdown = (reason: string, code = 0): Promise<number> => {
    stopping ??= (async () => {
      log.info("stopping", { reason });
      notifier.stopping(`stopping: ${reason}`);
      await stopRunning(running, log);
      notifier.close();
      log.info("stopped", { reason });
      log.flush();
      resolveDone(code);
      return code;
    })();
    return stopping;
  };

  try {
    await start(config, options, cameras, running, log, notifier);
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
    running.cleanups.push(() => clearTimeout(timer));
  }
  return done;
}
