/** `florence-edge serve`: the camera → Florence-2 → MQTT service (src/service/); with nothing configured, the bundled demo. */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Command, type FlagSpec, parseFlags } from "../cli_args.ts";
import { environmentVariables, readEnvironment } from "../config.ts";
import { MODEL_FLAGS } from "./model_flags.ts";

const SERVE_FLAGS: Record<string, FlagSpec> = {
  config: { kind: "string", help: "config file (YAML or JSON); default $FLORENCE_EDGE_CONFIG, else embedded defaults" },
  model: { kind: "string", help: "model folder or hub id (overrides model.path)" },
  source: { kind: "string", help: "one camera's source: rtsp://…, http(s)://…/snapshot.jpg, /dev/videoN, csi://N, a video file or an image folder" },
  mqtt: { kind: "string", help: "broker URL, e.g. mqtt://homeassistant.local:1883 (default: an embedded broker on 127.0.0.1)" },
  "topic-prefix": { kind: "string", help: "MQTT topic prefix (default florence-edge)" },
  camera: { kind: "string", help: "the camera's name for --source/--task (a topic segment)" },
  task: { kind: "strings", help: 'task for that camera, e.g. "<OD>"; repeat for several (one vision pass per frame)' },
  text: { kind: "string", help: "text input for the --task tasks that take one" },
  interval: { kind: "number", min: 0, max: 86400, help: "seconds between runs of the --task tasks (0: every frame)" },
  precision: MODEL_FLAGS["precision"]!,
  backend: MODEL_FLAGS["backend"]!,
  "metrics-port": { kind: "int", min: 0, max: 65535, help: "serve Prometheus /metrics on this port (127.0.0.1)" },
  "http-port": { kind: "int", min: 0, max: 65535, help: "serve the live view and the OpenAI/NVIDIA-compatible APIs on this port (default: on at 8080 with embedded defaults, else off)" },
  "http-host": { kind: "string", help: "address for --http-port (default 127.0.0.1; any other needs http.token_file or FLORENCE_EDGE_HTTP_TOKEN)" },
  "log-level": { kind: "string", choices: ["debug", "info", "warn", "error"], help: "log level (default info)" },
  "log-format": { kind: "string", choices: ["auto", "json", "text"], help: "log lines as JSON (journald, log shippers) or text for people; auto (default): text on a terminal, JSON elsewhere" },
  "snapshot-dir": { kind: "string", help: "write each camera's latest annotated snapshot here (<camera>-<task>.jpg); default with embedded defaults: the system temp folder" },
  duration: { kind: "number", min: 0.1, max: 1e9, help: "stop after this many seconds (demos and tests)" },
  echo: { kind: "boolean", help: "print one line per published result (default on with embedded defaults)" },
};

async function run(argv: readonly string[]): Promise<number> {
  const { flags } = parseFlags("serve", argv, SERVE_FLAGS);
  const { loadServiceConfig } = await import("../service/service_config.ts");
  const { serve } = await import("../service/serve.ts");
  const env = environmentVariables();
  const config = loadServiceConfig(
    {
      ...(flags["config"] !== undefined ? { config: flags["config"] as string } : {}),
      ...(flags["model"] !== undefined ? { model: flags["model"] as string } : {}),
      ...(flags["source"] !== undefined ? { source: flags["source"] as string } : {}),
      ...(flags["mqtt"] !== undefined ? { mqtt: flags["mqtt"] as string } : {}),
      ...(flags["topic-prefix"] !== undefined ? { topicPrefix: flags["topic-prefix"] as string } : {}),
      ...(flags["camera"] !== undefined ? { camera: flags["camera"] as string } : {}),
      ...(flags["task"] !== undefined ? { task: flags["task"] as string[] } : {}),
      ...(flags["text"] !== undefined ? { text: flags["text"] as string } : {}),
      ...(flags["interval"] !== undefined ? { interval: flags["interval"] as number } : {}),
      ...(flags["precision"] !== undefined ? { precision: flags["precision"] as string } : {}),
      ...(flags["backend"] !== undefined ? { backend: flags["backend"] as string } : {}),
      ...(flags["metrics-port"] !== undefined ? { metricsPort: flags["metrics-port"] as number } : {}),
      ...(flags["http-port"] !== undefined ? { httpPort: flags["http-port"] as number } : {}),
      ...(flags["http-host"] !== undefined ? { httpHost: flags["http-host"] as string } : {}),
      ...(flags["log-level"] !== undefined ? { logLevel: flags["log-level"] as string } : {}),
      ...(flags["log-format"] !== undefined ? { logFormat: flags["log-format"] as string } : {}),
    },
    env,
  );
  const embedded = config.demoCamera && config.mqtt.url === undefined;
  return serve(config, {
    env: readEnvironment(env),
    echo: flags["echo"] === true || (embedded && flags["echo"] !== false),
    ...(flags["snapshot-dir"] !== undefined ? { snapshotDir: flags["snapshot-dir"] as string } : embedded ? { snapshotDir: join(tmpdir(), "florence-edge-demo") } : {}),
    ...(flags["duration"] !== undefined ? { durationS: flags["duration"] as number } : {}),
  });
}

export const serveCommand: Command = { summary: "run the camera → Florence-2 → MQTT service", flags: SERVE_FLAGS, run };
