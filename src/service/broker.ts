/**
 * The embedded MQTT broker: aedes in this process, on a loopback TCP port, used when no broker is configured so
 * that `florence-edge serve` works out of the box (point Home Assistant or `mosquitto_sub` at it). aedes speaks
 * MQTT 3.1.1 only: clients asking for MQTT 5 are refused with "unacceptable protocol version" and the service's
 * client falls back to 3.1.1. Retained messages live in memory and vanish with the process.
 */
import { createServer, type Socket } from "node:net";
import { Aedes } from "aedes";
import { FlorenceError } from "../errors.ts";

export interface BrokerOptions {
  /** TCP port; 0 picks a free one. Default 1883. */
  port?: number;
  /** Interface to listen on. Default 127.0.0.1 (only this machine can connect). */
  host?: string;
}

export interface EmbeddedBroker {
  /** `mqtt://host:port`, for the client. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Disconnects every client and stops listening. Idempotent. */
  close(): Promise<void>;
}

/** Starts aedes on `host:port` (MQTT 3.1.1 over TCP). */
export async function startBroker(options: BrokerOptions = {}): Promise<EmbeddedBroker> {
  const host = options.host ?? "127.0.0.1";
  const requested = options.port ?? 1883;
  if (!Number.isInteger(requested) || requested < 0 || requested > 65535) {
    throw new FlorenceError("INVALID_ARGUMENT", `embedded broker port ${JSON.stringify(requested)} is not a TCP port`, { fix: "use 0..65535 (0 picks a free port)" });
  }
  const aedes = await Aedes.createBroker();
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    // a client's broken socket must not take the broker down
    socket.on("error", () => undefined);
    aedes.handle(socket);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(requested, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (cause) {
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    const code = (cause as { code?: string }).code;
    throw new FlorenceError("INVALID_ARGUMENT", `cannot start the embedded MQTT broker on ${host}:${requested}: ${code ?? (cause as Error).message}`, {
      fix: code === "EADDRINUSE" ? "a broker already listens there: set mqtt.url to it (e.g. mqtt://127.0.0.1:1883)" : "check the host and port",
      cause,
    });
  }
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : requested;
  let closing: Promise<void> | undefined;
  return {
    url: `mqtt://${host.includes(":") ? `[${host}]` : host}:${port}`,
    host,
    port,
    close(): Promise<void> {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        await new Promise<void>((resolve) => aedes.close(() => resolve()));
        for (const socket of sockets) socket.destroy();
        await stopped;
      })();
      return closing;
    },
  };
}
