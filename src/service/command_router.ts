/**
 * What MQTT commands mean: `<prefix>/<camera>/set` changes a camera's schedule (acknowledged on `…/set/result`),
 * `<prefix>/<camera>/infer` and `<prefix>/infer` run one task and answer on the request's reply topic; anything
 * rejected is answered on the reply topic or `…/error`. The transport (mqtt_link.ts) knows nothing of this: it hands
 * incoming messages over, and answers leave through `reply`.
 *
 * MQTT 5 request/response (response topic + correlation data properties) needs MQTT 5; on 3.1.1 an infer request
 * names its reply topic in its JSON body (`response_topic`), which MQTT 5 clients may use too.
 */
import { Buffer } from "node:buffer";
import { FlorenceError } from "../errors.ts";
import { checkResponseTopic, decodeCommandPayload, describeCommandError, parseInferRequest, parseSetCommand, type SetCommand } from "./commands.ts";
import type { IncomingMessage, LogLevel } from "./mqtt_link.ts";
import type { MqttTopics } from "./mqtt_topics.ts";
import { outgoingMessage, type MessageProperties, type OutgoingMessage } from "./outbox.ts";
import type { TaskSchedule } from "./service_config.ts";
import type { ResultMessage } from "./types.ts";

/** What the service does with validated commands. */
export interface MqttCommandHandlers {
  /**
   * Applies a validated `set` command and returns the camera's new schedule (acknowledged on `…/set/result`).
   * Typically `const next = applySetCommand(loop.tasksOf(c.camera) ?? [], c); loop.setTasks(c.camera, next); return next;`.
   * A throw is answered on `…/error` and changes nothing.
   */
  setTasks?(command: SetCommand): TaskSchedule[] | Promise<TaskSchedule[]>;
  /** Runs one task on the camera's newest frame (CameraLoop.request). */
  infer?(request: { camera: string; task: string; text: string | undefined }): Promise<ResultMessage>;
}

/** The JSON answer to a rejected command or failed request. */
export interface CommandErrorMessage {
  ok: false;
  command: "set" | "infer";
  camera: string | null;
  code: string;
  message: string;
  key: string;
  correlation_id?: string;
  received_at: string;
}

export interface CommandRouterOptions {
  topics: MqttTopics;
  cameras: readonly string[];
  handlers: MqttCommandHandlers;
  /** A handler that takes longer is answered with an error. */
  handlerTimeoutMs: number;
  /** Inference requests waiting at once; more are refused. */
  maxPendingInfers: number;
  /** Topic filters replies may not match (the service's own and Home Assistant's). */
  forbiddenReplyFilters: readonly string[];
  /** Sends an answer. */
  reply(message: OutgoingMessage): void;
  log: (level: LogLevel, message: string) => void;
}

interface ReplyTo {
  topic: string;
  correlationData: Buffer | undefined;
  correlationId: string | undefined;
}

const JSON_PROPERTIES = { contentType: "application/json" } as const;
const MAX_PENDING_COMMANDS = 16;
const MAX_CORRELATION_BYTES = 1024;

export class CommandRouter {
  readonly #options: CommandRouterOptions;
  readonly #cameraSet: ReadonlySet<string>;
  #commandChain: Promise<void> = Promise.resolve();
  #pendingCommands = 0;
  #pendingInfers = 0;
  readonly counts = { commands_ok: 0, commands_rejected: 0 };

  constructor(options: CommandRouterOptions) {
    this.#options = options;
    this.#cameraSet = new Set(options.cameras);
  }

  /** Handles a message if its topic carries a command; false for any other topic. */
  route(message: IncomingMessage): boolean {
    // an empty payload is how a retained message is cleared, not a command
    if (message.payload.length === 0) return false;
    const route = this.#options.topics.route(message.topic, this.#cameraSet);
    if (route === undefined) return false;
    if (route.command === "set") this.#onSet(route.camera, message);
    else this.#onInfer(route.camera, message);
    return true;
  }

  /** Resolves once the `set` commands received so far took effect, or after `timeoutMs`. */
  async settled(timeoutMs: number): Promise<void> {
    await withTimeout(this.#commandChain, timeoutMs);
  }

  #answer(topic: string, body: object, properties: MessageProperties): void {
    this.#options.reply(outgoingMessage(topic, JSON.stringify(body), 1, false, undefined, properties));
  }

  #reject(command: "set" | "infer", camera: string | undefined, error: unknown, reply?: ReplyTo): void {
    this.counts.commands_rejected++;
    const { code, key, message } = describeCommandError(error);
    const body: CommandErrorMessage = {
      ok: false,
      command,
      camera: camera ?? null,
      code,
      message,
      key,
      ...(reply?.correlationId !== undefined ? { correlation_id: reply.correlationId } : {}),
      received_at: new Date().toISOString(),
    };
    this.#options.log("warn", `${command} command${camera ? ` for ${camera}` : ""} rejected: ${code}: ${message}`);
    const topic = reply?.topic ?? this.#options.topics.error(camera);
    this.#answer(topic, body, reply?.correlationData !== undefined ? { ...JSON_PROPERTIES, correlationData: reply.correlationData } : JSON_PROPERTIES);
  }

  #onSet(camera: string, message: IncomingMessage): void {
    if (message.retain) {
      this.#reject("set", camera, new FlorenceError("INVALID_ARGUMENT", "retained commands are ignored (they would run again on every reconnect)", { fix: "publish the command with retain=false, and clear the retained one with an empty retained message" }));
      return;
    }
    const setTasks = this.#options.handlers.setTasks;
    if (setTasks === undefined) {
      this.#reject("set", camera, new FlorenceError("ENGINE_UNAVAILABLE", "this service does not take set commands"));
      return;
    }
    let command: SetCommand;
    try {
      command = parseSetCommand(message.payload, camera);
    } catch (error) {
      this.#reject("set", camera, error);
      return;
    }
    if (this.#pendingCommands >= MAX_PENDING_COMMANDS) {
      this.#reject("set", camera, new FlorenceError("ENGINE_UNAVAILABLE", `${this.#pendingCommands} commands are waiting`, { fix: "send commands more slowly" }));
      return;
    }
    this.#pendingCommands++;
    const timeoutMs = this.#options.handlerTimeoutMs;
    // commands take effect one at a time, in arrival order
    this.#commandChain = this.#commandChain.then(async () => {
      try {
        const schedule = await withTimeout(Promise.resolve().then(() => setTasks(command)), timeoutMs);
        if (schedule === undefined) throw new FlorenceError("ENGINE_UNAVAILABLE", `the command was not applied within ${timeoutMs} ms`);
        this.counts.commands_ok++;
        const ack = {
          ok: true,
          command: "set",
          camera,
          tasks: schedule.map((t) => ({ task: t.task, ...(t.text !== undefined ? { text: t.text } : {}), interval_s: t.intervalS, snapshot: t.snapshot })),
          received_at: new Date().toISOString(),
        };
        this.#answer(this.#options.topics.setResult(camera), ack, JSON_PROPERTIES);
      } catch (error) {
        this.#reject("set", camera, error);
      } finally {
        this.#pendingCommands--;
      }
    });
  }

  /** The known camera a rejected request's body names, so that its error goes to that camera's error topic. */
  #namedCamera(payload: Buffer): string | undefined {
    try {
      const camera = decodeCommandPayload(payload)["camera"];
      return typeof camera === "string" && this.#cameraSet.has(camera) ? camera : undefined;
    } catch {
      return undefined;
    }
  }

  /** The reply topic of an infer request, or undefined once it has been rejected. */
  #replyTo(topicCamera: string | undefined, message: IncomingMessage): { reply: ReplyTo | undefined; request: ReturnType<typeof parseInferRequest> } | undefined {
    const { correlationData } = message;
    let reply: ReplyTo | undefined;
    if (message.retain) {
      this.#reject("infer", topicCamera, new FlorenceError("INVALID_ARGUMENT", "retained inference requests are ignored", { fix: "publish requests with retain=false" }));
      return undefined;
    }
    if (correlationData !== undefined && correlationData.length > MAX_CORRELATION_BYTES) {
      this.#reject("infer", topicCamera, new FlorenceError("INVALID_ARGUMENT", `the correlation data is ${correlationData.length} bytes; at most ${MAX_CORRELATION_BYTES}`));
      return undefined;
    }
    if (message.responseTopic !== undefined) {
      try {
        reply = { topic: checkResponseTopic(message.responseTopic, "responseTopic", this.#options.forbiddenReplyFilters), correlationData, correlationId: undefined };
      } catch (error) {
        this.#reject("infer", topicCamera, error);
        return undefined;
      }
    }
    try {
      const request = parseInferRequest(message.payload, { topicCamera, cameras: this.#options.cameras, forbiddenResponseFilters: this.#options.forbiddenReplyFilters });
      return { reply, request };
    } catch (error) {
      this.#reject("infer", topicCamera ?? this.#namedCamera(message.payload), error, reply);
      return undefined;
    }
  }

  #onInfer(topicCamera: string | undefined, message: IncomingMessage): void {
    const parsed = this.#replyTo(topicCamera, message);
    if (parsed === undefined) return;
    const { request } = parsed;
    const reply = parsed.reply ?? (request.responseTopic !== undefined ? { topic: request.responseTopic, correlationData: message.correlationData, correlationId: undefined } : undefined);
    if (reply === undefined) {
      this.#reject(
        "infer",
        request.camera,
        new FlorenceError("INVALID_ARGUMENT", "the request names no reply topic", {
          fix: message.protocol === 5 ? "set the MQTT 5 response topic property, or a response_topic field" : "this broker speaks MQTT 3.1.1: add a response_topic field to the JSON request",
        }),
      );
      return;
    }
    reply.correlationId = request.correlationId;
    const infer = this.#options.handlers.infer;
    if (infer === undefined) {
      this.#reject("infer", request.camera, new FlorenceError("ENGINE_UNAVAILABLE", "this service does not take inference requests"), reply);
      return;
    }
    if (this.#pendingInfers >= this.#options.maxPendingInfers) {
      this.#reject("infer", request.camera, new FlorenceError("ENGINE_UNAVAILABLE", `${this.#pendingInfers} inference requests are waiting`, { fix: "retry later" }), reply);
      return;
    }
    this.#pendingInfers++;
    const timeoutMs = this.#options.handlerTimeoutMs;
    withTimeout(infer({ camera: request.camera, task: request.task, text: request.text }), timeoutMs)
      .then((result) => {
        if (result === undefined) throw new FlorenceError("ENGINE_UNAVAILABLE", `no result within ${timeoutMs} ms`, { fix: "retry later" });
        this.counts.commands_ok++;
        const body = { ok: true, ...(reply.correlationId !== undefined ? { correlation_id: reply.correlationId } : {}), result };
        this.#answer(reply.topic, body, reply.correlationData !== undefined ? { ...JSON_PROPERTIES, correlationData: reply.correlationData } : JSON_PROPERTIES);
      })
      .catch((error: unknown) => this.#reject("infer", request.camera, error, reply))
      .finally(() => {
        this.#pendingInfers--;
      });
  }
}

/** The promise's value, or undefined once `ms` have passed. */
export function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
