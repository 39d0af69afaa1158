/**
 * A real mosquitto (Debian's package) for the MQTT tests: one per test on a port of its own, with a config written
 * to a temp folder; stopped, paused (SIGSTOP) and resumed by pid; killed at exit if a test left it running.
 * `MOSQUITTO_PATH` is undefined where mosquitto is not installed (`apt-get install mosquitto`, or set MOSQUITTO).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect as tcpConnect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import process from "node:process";

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const liveProcesses = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of liveProcesses) {
    try {
      if (child.pid !== undefined) process.kill(child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
});


function findMosquitto(): string | undefined {
  const candidates = [process.env["MOSQUITTO"], ...(process.env["PATH"] ?? "").split(delimiter).map((d) => join(d, "mosquitto")), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"];
  for (const candidate of candidates) {
    if (!candidate) continue;
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A loopback port nobody listens on now (the kernel's pick), for a broker the test starts next. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export class Mosquitto {
  readonly port: number;
  readonly url: string;
  readonly #dir: string;
  readonly #config: string;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #running = false;
  output = "";

  constructor(port: number, options: { persistence?: boolean } = {}) {
    this.port = port;
    this.url = `mqtt://127.0.0.1:${port}`;
    this.#dir = mkdtempSync(join(tmpdir(), "fe-mosquitto-"));
    this.#config = join(this.#dir, "mosquitto.conf");
    writeFileSync(this.#config, [
      `listener ${port} 127.0.0.1`,
      "allow_anonymous true",
      // as root mosquitto would switch to the mosquitto user, who may not write the temp folder
      "user root",
      `persistence ${options.persistence ? "true" : "false"}`,
      `persistence_location ${this.#dir}/`,
      "log_dest stdout",
      "",
    ].join("\n"));
  }

  static async start(port: number, options: { persistence?: boolean } = {}): Promise<Mosquitto> {
    const broker = new Mosquitto(port, options);
    await broker.start();
    return broker;
  }

  async start(): Promise<void> {
    const child = spawn(MOSQUITTO_PATH!, ["-c", this.#config, "-v"], { stdio: ["ignore", "pipe", "pipe"] });
    this.#child = child;
    liveProcesses.add(child);
    const keep = (chunk: Buffer) => {
      this.output = (this.output + chunk.toString()).slice(-20_000);
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    this.#running = true;
    this.#exited = new Promise<void>((resolve) =>
      child.once("exit", () => {
        this.#running = false;
        liveProcesses.delete(child);
        resolve();
      })
    );
    const end = Date.now() + 5000;
    for (;;) {
      if (!this.#running) throw new Error(`mosquitto exited with ${child.exitCode}:\n${this.output}`);
      const open = await new Promise<boolean>((resolve) => {
        const socket = tcpConnect(this.port, "127.0.0.1");
        socket.once("connect", () => {
          socket.destroy();
          resolve(true);
        });
        socket.once("error", () => resolve(false));
      });
      if (open) return;
      if (Date.now() > end) throw new Error(`mosquitto did not listen on ${this.port}:\n${this.output}`);
      await sleep(25);
    }
  }

  // signals go by pid: Deno's child.kill() takes any signal, SIGSTOP included, for the process's death
  #signal(signal: NodeJS.Signals): void {
    if (this.#child?.pid !== undefined && this.#running) process.kill(this.#child.pid, signal);
  }

  async stop(): Promise<void> {
    if (!this.#child || !this.#running) return;
    this.#signal("SIGCONT");
    this.#signal("SIGTERM");
    const done = await Promise.race([this.#exited.then(() => true), sleep(3000).then(() => false)]);
    if (!done) {
      this.#signal("SIGKILL");
      await this.#exited;
    }
    this.#child = undefined;
  }

  pause(): void {
    this.#signal("SIGSTOP");
  }

  resume(): void {
    this.#signal("SIGCONT");
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}


export const MOSQUITTO_PATH = findMosquitto();
