/**
 * The service under systemd, for real where this machine allows it:
 *   - `systemd-analyze verify` on the unit (it checks the ExecStart binary exists: a stub stands in for it);
 *   - sd_notify through koffi → libsystemd to a unix datagram socket (a python3 listener that also reads the
 *     sender's pid from SCM_CREDENTIALS), from a child process under Node and, when installed, under Deno;
 *   - scripts/install-service.sh: --dry-run, and real runs into a staging --root (with stub systemctl/npm/useradd
 *     on PATH that record any call: --root must make none).
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { FlorenceError } from "../../src/errors.ts";
import { loadServiceConfig } from "../../src/service/service_config.ts";
import { WatchdogFeeder, createNotifier } from "../../src/service/systemd.ts";
import { REPO_ROOT } from "../support/paths.ts";

const IS_DENO = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";
const UNIT_FILE = join(REPO_ROOT, "systemd", "florence-edge.service");
const INSTALL = join(REPO_ROOT, "scripts", "install-service.sh");
const DEFAULT_PREFIX = "/usr/local/lib/florence-edge";
const scratch = mkdtempSync(join(tmpdir(), "fe-systemd-"));

function which(command: string): string | undefined {
  const found = spawnSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" });
  return found.status === 0 ? found.stdout.trim() : undefined;
}

const SYSTEMD_ANALYZE = which("systemd-analyze");
const PYTHON = which("python3");
const DENO = which("deno");
const NODE = IS_DENO ? which("node") : process.execPath;
const HOST_UNITS = ["/usr/lib/systemd/system", "/lib/systemd/system"].find((d) => existsSync(join(d, "sysinit.target")));

function skip(name: string, why: string): void {
  test(`${name} (skipped: ${why})`, () => {
    console.log(`  skipped: ${name}: ${why}`);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// the unit

const unitText = readFileSync(UNIT_FILE, "utf8");

function directives(text: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) map.set(m[1]!, [...(map.get(m[1]!) ?? []), m[2]!]);
  }
  return map;
}

test("the unit: Type=notify with watchdog, restart policy, hardening that leaves the GPU and V8 alone", () => {
  const d = directives(unitText);
  const one = (key: string) => {
    assert.is(d.get(key)?.length, 1, `${key} set once`);
    return d.get(key)![0]!;
  };
  assert.is(one("ExecStart"), `${DEFAULT_PREFIX}/bin/florence-edge serve --config /etc/florence-edge/config.yaml`);
  assert.is(one("Type"), "notify");
  assert.is(one("NotifyAccess"), "main");
  assert.is(one("WatchdogSec"), "30s");
  assert.is(one("Restart"), "on-failure");
  assert.ok(d.has("RestartSec"));
  assert.ok(d.has("StartLimitIntervalSec") && d.has("StartLimitBurst"));
  assert.ok(unitText.indexOf("StartLimitBurst") < unitText.indexOf("[Service]"), "start limits belong in [Unit]");
  assert.is(one("StateDirectory"), "florence-edge");
  assert.is(one("CacheDirectory"), "florence-edge");
  assert.ok(d.get("Environment")!.includes("FLORENCE_EDGE_CACHE=%C/florence-edge"));
  assert.is(one("EnvironmentFile"), "-/etc/florence-edge/env");
  assert.is(one("KillMode"), "mixed");
  assert.match(one("TimeoutStopSec"), /^\d+s$/);
  assert.ok(one("After").includes("network-online.target"));
  assert.ok(one("Wants").includes("network-online.target"));
  assert.is(one("ProtectSystem"), "strict");
  assert.is(one("NoNewPrivileges"), "yes");
  // each of these breaks the GPU, the cameras or V8 (see the unit's header)
  for (const key of ["PrivateDevices", "MemoryDenyWriteExecute", "DevicePolicy", "DeviceAllow", "ProtectClock", "PrivateUsers", "PrivateTmp", "DynamicUser", "ProcSubset"]) {
    assert.not.ok(d.has(key), `${key} must not be set`);
  }
  assert.is(one("User"), "florence-edge");
});

const stubPrefix = join(scratch, "prefix");

function verify(unitPath: string, extra: string[] = []): { status: number | null; output: string } {
  const result = spawnSync(SYSTEMD_ANALYZE!, ["verify", ...extra, unitPath], { encoding: "utf8", cwd: scratch });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

if (SYSTEMD_ANALYZE) {
  test("systemd-analyze verify prints nothing (the launcher path pointed at a stub, as the installer does)", () => {
    mkdirSync(join(stubPrefix, "bin"), { recursive: true });
    writeFileSync(join(stubPrefix, "bin", "florence-edge"), "#!/bin/sh\nexit 0\n");
    chmodSync(join(stubPrefix, "bin", "florence-edge"), 0o755);
    const dir = join(scratch, "unit");
    mkdirSync(dir, { recursive: true });
    const copy = join(dir, "florence-edge.service");
    writeFileSync(copy, unitText.replaceAll(DEFAULT_PREFIX, stubPrefix));
    const { status, output } = verify(copy);
    assert.is(output, "", "no warnings at all");
    assert.is(status, 0);
  });

  test("verify's only requirement on the committed unit is that the launcher exists", () => {
    const { status, output } = verify(UNIT_FILE);
    if (existsSync(`${DEFAULT_PREFIX}/bin/florence-edge`)) {
      assert.is(output, "");
      assert.is(status, 0);
    } else {
      // systemd-analyze checks ExecStart= binaries (only a "-" prefix exempts one, which would also stop
      // Restart=on-failure from seeing failures); nothing else in the file draws a message
      assert.is(output.trim(), `florence-edge.service: Command ${DEFAULT_PREFIX}/bin/florence-edge is not executable: No such file or directory`);
    }
  });
} else {
  skip("systemd-analyze verify", "systemd-analyze is not installed");
}

// ---------------------------------------------------------------------------------------------------------------
// sd_notify for real

const LISTENER = `
import json, socket, struct, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
print(json.dumps({"listening": path}), flush=True)
while True:
    data, ancillary, _flags, _addr = s.recvmsg(65536, socket.CMSG_SPACE(12))
    pid = None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("3i", payload[:12])[0]
    print(json.dumps({"pid": pid, "data": data.decode("utf-8", "replace"), "t": time.monotonic()}), flush=True)
`;

const CHILD = `
import process from "node:process";
const { createNotifier, WatchdogFeeder } = await import(process.argv[process.argv.length - 2]);
const mode = process.argv[process.argv.length - 1];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const logs = [];
const log = { info: (msg) => logs.push(["info", msg]), warn: (msg) => logs.push(["warn", msg]) };
const notifier = createNotifier({ log });
const report = { pid: process.pid, enabled: notifier.enabled, reason: notifier.disabledReason ?? null, watchdogIntervalMs: notifier.watchdogIntervalMs ?? null, logs, sent: [] };
if (mode === "full") {
  report.sent.push(notifier.ready("model loaded\\nsecond line"));
  report.sent.push(notifier.status("phase:progress"));
  report.sent.push(notifier.extendTimeout(60000));
  let frames = 0;
  let idle = false;
  const worker = setInterval(() => frames++, 10);
  const feeder = new WatchdogFeeder({ notifier, progress: () => frames, idle: () => idle });
  feeder.start();
  await sleep(600);
  clearInterval(worker);
  notifier.status("phase:stalled");
  await sleep(600);
  idle = true;
  notifier.status("phase:idle");
  await sleep(450);
  feeder.stop();
  notifier.status("phase:done");
  report.sent.push(notifier.stopping("bye"));
  report.pings = feeder.pings;
  report.withheld = feeder.withheld;
  report.periodMs = feeder.periodMs;
} else {
  report.sent.push(notifier.ready(), notifier.watchdog(), notifier.status("x"));
}
notifier.close();
report.afterClose = notifier.watchdog();
console.log(JSON.stringify(report));
`;

// The same listener without python3 (CI images may lack it): libc's socket/bind/recv through koffi, in a node child
// that blocks in recv(). It cannot read the sender's credentials, so it reports pid null.
const KOFFI_LISTENER = `
import { createRequire } from "node:module";
const koffi = createRequire(process.argv[2])("koffi");
const libc = koffi.load("libc.so.6");
const socket = libc.func("int socket(int domain, int type, int protocol)");
const SockaddrUn = koffi.struct("sockaddr_un", { sun_family: "uint16_t", sun_path: koffi.array("char", 108) });
const bind = libc.func("int bind(int fd, const sockaddr_un *addr, uint32_t len)");
const recv = libc.func("long recv(int fd, void *buf, size_t len, int flags)");
const path = process.argv[3];
const fd = socket(1, 2, 0); // AF_UNIX, SOCK_DGRAM
if (fd < 0 || bind(fd, { sun_family: 1, sun_path: path }, 110) !== 0) throw new Error("cannot bind " + path + ": errno " + koffi.errno());
process.stdout.write(JSON.stringify({ listening: path }) + "\\n");
const buffer = Buffer.alloc(65536);
for (;;) {
  const n = Number(recv(fd, buffer, buffer.length, 0));
  if (n < 0 && koffi.errno() === 4) continue; // EINTR
  if (n < 0) throw new Error("recv: errno " + koffi.errno());
  process.stdout.write(JSON.stringify({ pid: null, data: buffer.toString("utf8", 0, n) }) + "\\n");
}
`;

type ListenerKind = "python3" | "koffi";
const LISTENERS: ListenerKind[] = [
  ...(PYTHON ? (["python3"] as const) : []),
  ...(NODE && existsSync(join(REPO_ROOT, "node_modules", "koffi")) ? (["koffi"] as const) : []),
];

interface Datagram {
  pid: number | null;
  data: string;
}

async function startListener(socketPath: string, kind: ListenerKind = LISTENERS[0]!): Promise<{ child: ChildProcess; received: Datagram[] }> {
  let child: ChildProcess;
  if (kind === "python3") {
    child = spawn(PYTHON!, ["-c", LISTENER, socketPath], { stdio: ["ignore", "pipe", "inherit"] });
  } else {
    const script = join(scratch, "koffi-listener.mjs");
    writeFileSync(script, KOFFI_LISTENER);
    child = spawn(NODE!, [script, pathToFileURL(join(REPO_ROOT, "package.json")).href, socketPath], { stdio: ["ignore", "pipe", "inherit"] });
  }
  const received: Datagram[] = [];
  let buffer = "";
  await new Promise<void>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`listener exited ${code}`)));
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = JSON.parse(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
        if (line.listening) resolve();
        else received.push(line);
      }
    });
  });
  return { child, received };
}

function stopListener(child: ChildProcess): void {
  if (child.exitCode === null && child.pid !== undefined) child.kill("SIGTERM");
}

type Runtime = { name: string; command: string; args: (script: string, mode: string) => string[] };

const runtimes: Runtime[] = [];
if (NODE && existsSync(join(REPO_ROOT, "dist", "src", "service", "systemd.js"))) {
  const module = pathToFileURL(join(REPO_ROOT, "dist", "src", "service", "systemd.js")).href;
  runtimes.push({ name: "node", command: NODE, args: (script, mode) => [script, module, mode] });
}
if (DENO) {
  const module = pathToFileURL(join(REPO_ROOT, "src", "service", "systemd.ts")).href;
  runtimes.push({ name: "deno", command: DENO, args: (script, mode) => ["run", "--allow-all", "--quiet", "--config", join(REPO_ROOT, "deno.json"), script, module, mode] });
}

function runChild(runtime: Runtime, mode: string, env: Record<string, string | undefined>): Record<string, any> {
  const script = join(scratch, "notify-child.mjs");
  writeFileSync(script, CHILD);
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...env })) if (v !== undefined && !["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"].includes(k)) childEnv[k] = v;
  for (const [k, v] of Object.entries(env)) if (v !== undefined) childEnv[k] = v;
  const result = spawnSync(runtime.command, runtime.args(script, mode), { encoding: "utf8", env: childEnv, cwd: REPO_ROOT, timeout: 60_000 });
  assert.is(result.status, 0, `${runtime.name} child failed: ${result.stderr}`);
  return JSON.parse(result.stdout.trim().split("\n").at(-1)!);
}

function libsystemdLoads(): boolean {
  const quiet = { info: () => undefined, warn: () => undefined };
  const probe = createNotifier({ env: { NOTIFY_SOCKET: join(scratch, "probe.sock") }, log: quiet });
  probe.close();
  return probe.enabled;
}

const waitFor = async (check: () => boolean, ms = 3000) => {
  const until = Date.now() + ms;
  while (!check() && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
};

if (LISTENERS.length === 0) {
  skip("sd_notify to a real socket", "neither python3 nor node with koffi is here to listen");
} else if (!libsystemdLoads()) {
  skip("sd_notify to a real socket", "libsystemd.so.0 cannot be loaded here");
} else {
  for (const runtime of runtimes) {
    test(`sd_notify for real (${runtime.name}): READY, STATUS, EXTEND_TIMEOUT, WATCHDOG only on progress or idle, STOPPING`, async () => {
      const socketPath = join(scratch, `notify-${runtime.name}.sock`);
      const { child, received } = await startListener(socketPath);
      try {
        const report = runChild(runtime, "full", { NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: "200000" });
        assert.is(report["enabled"], true, String(report["reason"]));
        assert.is(report["watchdogIntervalMs"], 200);
        assert.is(report["periodMs"], 100);
        assert.equal(report["sent"], [true, true, true, true]);
        assert.is(report["afterClose"], false, "no notifications after close()");
        await waitFor(() => received.some((d) => d.data.startsWith("STOPPING=1")));
        const data = received.map((d) => d.data);
        if (LISTENERS[0] === "python3") {
          for (const d of received) assert.is(d.pid, report["pid"], "every datagram comes from the main process itself");
        }
        assert.is(data[0], "READY=1\nSTATUS=model loaded second line");
        assert.is(data[1], "STATUS=phase:progress");
        assert.is(data[2], "EXTEND_TIMEOUT_USEC=60000000");
        assert.is(data.at(-1), "STOPPING=1\nSTATUS=bye");
        const between = (from: string, to: string) => data.slice(data.indexOf(from) + 1, data.indexOf(to)).filter((x) => x === "WATCHDOG=1").length;
        const progressing = between("STATUS=phase:progress", "STATUS=phase:stalled");
        const stalled = between("STATUS=phase:stalled", "STATUS=phase:idle");
        const idle = between("STATUS=phase:idle", "STATUS=phase:done");
        assert.ok(progressing >= 3, `pings while frames advance: ${progressing}`);
        // the first check after the counter stops may still see the last frames; after that, nothing
        assert.ok(stalled <= 1, `pings while stuck: ${stalled}`);
        assert.ok(idle >= 2, `pings while idle by design: ${idle}`);
        assert.ok(report["withheld"] >= 3, `withheld ${report["withheld"]}`);
        assert.is(report["pings"], data.filter((x) => x === "WATCHDOG=1").length);
        assert.equal(report["logs"], [], "nothing to complain about");
      } finally {
        stopListener(child);
      }
    });

    test(`sd_notify (${runtime.name}): WATCHDOG_PID of another process turns the watchdog off; a dead socket is reported once`, async () => {
      const socketPath = join(scratch, `notify2-${runtime.name}.sock`);
      const { child, received } = await startListener(socketPath);
      try {
        const report = runChild(runtime, "basic", { NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: "200000", WATCHDOG_PID: "1" });
        assert.is(report["enabled"], true);
        assert.is(report["watchdogIntervalMs"], null, "the watchdog belongs to pid 1, not to us");
        await waitFor(() => received.length >= 3);
        assert.equal(received.map((d) => d.data), ["READY=1", "WATCHDOG=1", "STATUS=x"]);
      } finally {
        stopListener(child);
      }
      const dead = runChild(runtime, "basic", { NOTIFY_SOCKET: join(scratch, "nobody-listens.sock") });
      assert.is(dead["enabled"], true);
      assert.equal(dead["sent"], [false, false, false]);
      assert.is(dead["logs"].length, 1, "one warning for three failed calls");
      assert.is(dead["logs"][0][0], "warn");
      assert.match(dead["logs"][0][1], "sd_notify failed");
    });
  }
  if (!DENO) skip("sd_notify under Deno", "deno is not installed");
  if (LISTENERS.includes("koffi") && runtimes.length > 0) {
    test("the koffi listener (used where python3 is missing) receives the same datagrams", async () => {
      const socketPath = join(scratch, "notify-koffi.sock");
      const { child, received } = await startListener(socketPath, "koffi");
      try {
        const report = runChild(runtimes[0]!, "basic", { NOTIFY_SOCKET: socketPath });
        assert.equal(report["sent"], [true, true, true]);
        await waitFor(() => received.length >= 3);
        assert.equal(received.map((d) => d.data), ["READY=1", "WATCHDOG=1", "STATUS=x"]);
      } finally {
        stopListener(child);
      }
    });
  }
}

test("without NOTIFY_SOCKET, or without libsystemd, the notifier is a no-op that says why once", () => {
  const logs: string[][] = [];
  const log = { info: (m: string) => logs.push(["info", m]), warn: (m: string) => logs.push(["warn", m]) };
  const outside = createNotifier({ env: {}, log });
  assert.is(outside.enabled, false);
  assert.match(outside.disabledReason!, "NOTIFY_SOCKET is not set");
  assert.is(outside.watchdogIntervalMs, undefined);
  assert.equal([outside.ready("x"), outside.watchdog(), outside.status("y"), outside.stopping(), outside.extendTimeout(1000)], [false, false, false, false, false]);
  assert.equal(logs, [["info", outside.disabledReason!]]);

  logs.length = 0;
  const missing = createNotifier({ env: { NOTIFY_SOCKET: "/run/systemd/notify" }, library: "libsystemd-not-here.so.0", log });
  assert.is(missing.enabled, false);
  assert.match(missing.disabledReason!, "libsystemd-not-here.so.0");
  missing.ready();
  missing.watchdog();
  assert.is(logs.length, 1);
  assert.is(logs[0]![0], "warn");
  assert.match(logs[0]![1]!, "/run/systemd/notify");
  missing.close();

  try {
    outside.extendTimeout(-5);
    assert.unreachable();
  } catch (error) {
    assert.instance(error, FlorenceError);
    assert.match((error as Error).message, "-5");
  }
});

test("WatchdogFeeder: pings when the counter moves or the service is idle, withholds when busy and stuck", () => {
  let pings = 0;
  const notifier = { watchdogIntervalMs: 30_000, watchdog: () => (pings++, true) };
  let frames = 0;
  let idle = false;
  const withheld: number[] = [];
  let now = 0;
  const feeder = new WatchdogFeeder({ notifier, progress: () => frames, idle: () => idle, onWithheld: (i) => withheld.push(i.sinceProgressMs), now: () => now });
  assert.is(feeder.periodMs, 15_000, "half of WatchdogSec");
  now += 15_000;
  assert.is(feeder.tick(), false, "no frame yet and busy");
  frames += 3;
  now += 15_000;
  assert.is(feeder.tick(), true, "frames were processed");
  now += 15_000;
  assert.is(feeder.tick(), false, "stuck in a frame");
  now += 15_000;
  assert.is(feeder.tick(), false, "still stuck: systemd restarts the service now");
  idle = true;
  now += 15_000;
  assert.is(feeder.tick(), true, "nothing due: idle by design");
  assert.is(pings, 2);
  assert.equal(withheld, [15_000, 15_000, 30_000]);
  assert.is(feeder.withheld, 3);
  assert.is(feeder.pings, 2);

  const off = new WatchdogFeeder({ notifier: { watchdogIntervalMs: undefined, watchdog: () => true }, progress: () => 0 });
  assert.is(off.periodMs, undefined);
  off.start(); // no timer without a watchdog
  off.stop();
  try {
    new WatchdogFeeder({ notifier, progress: 5 as never });
    assert.unreachable();
  } catch (error) {
    assert.instance(error, FlorenceError);
    assert.match((error as Error).message, "progress");
  }
});

// ---------------------------------------------------------------------------------------------------------------
// the install script

const HAVE_BUILD = existsSync(join(REPO_ROOT, "dist", "src", "bin.js"));
const stubBin = join(scratch, "stub-bin");
const calls = join(scratch, "calls.log");
mkdirSync(stubBin, { recursive: true });
for (const name of ["systemctl", "systemd-sysusers", "systemd-tmpfiles", "useradd", "usermod", "chgrp", "npm"]) {
  writeFileSync(join(stubBin, name), `#!/bin/sh\necho "${name} $*" >> "${calls}"\nexit 0\n`);
  chmodSync(join(stubBin, name), 0o755);
}

function install(args: string[], options: { stubs?: boolean } = {}): { status: number | null; stdout: string; stderr: string } {
  const path = options.stubs === false ? process.env["PATH"] : `${stubBin}:${process.env["PATH"]}`;
  const result = spawnSync("bash", [INSTALL, ...args], { encoding: "utf8", env: { ...process.env, PATH: path }, timeout: 300_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const recordedCalls = () => (existsSync(calls) ? readFileSync(calls, "utf8") : "");
const mode = (path: string) => statSync(path).mode & 0o777;

function listTree(dir: string): string[] {
  const r = spawnSync("find", [dir, "-mindepth", "1"], { encoding: "utf8" });
  return r.stdout.split("\n").filter(Boolean);
}

if (!HAVE_BUILD) {
  skip("install-service.sh", "dist/src/bin.js is missing (run tsc first)");
} else {
  const nodeForLauncher = NODE ?? "/usr/bin/node";

  test("install --dry-run prints every step and changes nothing (staging root and live system)", () => {
    const root = mkdtempSync(join(scratch, "dry-root-"));
    rmSync(calls, { force: true });
    const staged = install(["--dry-run", "--root", root, "--enable", "--start", "--node", nodeForLauncher]);
    assert.is(staged.status, 0, staged.stderr);
    for (const expected of [
      `would write: ${root}${DEFAULT_PREFIX}/bin/florence-edge (mode 0755)`,
      `would write: ${root}/etc/systemd/system/florence-edge.service (mode 0644)`,
      `would write: ${root}/etc/florence-edge/config.yaml (mode 0640)`,
      `would write: ${root}/etc/florence-edge/env (mode 0600)`,
      `would write: ${root}/etc/tmpfiles.d/florence-edge.conf (mode 0644)`,
      `would write: ${root}/etc/sysusers.d/florence-edge.conf (mode 0644)`,
      "would run: npm ci --omit=dev --ignore-scripts",
      `would link: ${root}/etc/systemd/system/multi-user.target.wants/florence-edge.service -> /etc/systemd/system/florence-edge.service`,
      "skipped (--root): systemctl daemon-reload",
      "skipped (--root): systemctl restart florence-edge.service",
    ]) {
      assert.ok(staged.stdout.includes(expected), `dry run mentions: ${expected}\n${staged.stdout}`);
    }
    assert.equal(listTree(root), [], "nothing written under the root");

    const liveBefore = [DEFAULT_PREFIX, "/etc/florence-edge", "/etc/systemd/system/florence-edge.service"].map((p) => existsSync(p));
    const live = install(["--dry-run", "--enable", "--start", "--node", nodeForLauncher]);
    assert.is(live.status, 0, live.stderr);
    for (const expected of [
      "would run: systemctl daemon-reload",
      "would run: systemctl enable florence-edge.service",
      "would run: systemctl restart florence-edge.service",
      "would run: systemd-sysusers /etc/sysusers.d/florence-edge.conf",
      "would run: systemd-tmpfiles --create /etc/tmpfiles.d/florence-edge.conf",
      "would write: /etc/systemd/system/florence-edge.service (mode 0644)",
    ]) {
      assert.ok(live.stdout.includes(expected), `live dry run mentions: ${expected}\n${live.stdout}`);
    }
    assert.equal([DEFAULT_PREFIX, "/etc/florence-edge", "/etc/systemd/system/florence-edge.service"].map((p) => existsSync(p)), liveBefore);
    assert.is(recordedCalls(), "", "a dry run calls no tool");
  });

  const root = join(scratch, "root");

  test("install --root: the layout, modes, launcher, unit and config; no systemctl, no user tools, no npm", () => {
    rmSync(calls, { force: true });
    const run = install(["--root", root, "--deps", "none", "--enable", "--node", nodeForLauncher]);
    assert.is(run.status, 0, `${run.stdout}\n${run.stderr}`);
    assert.is(recordedCalls(), "", "--root must not call systemctl, systemd-sysusers, systemd-tmpfiles, useradd or npm");
    const p = (path: string) => join(root, path);
    const launcher = p(`${DEFAULT_PREFIX}/bin/florence-edge`);
    assert.is(mode(launcher), 0o755);
    assert.is(readFileSync(launcher, "utf8"), `#!/bin/sh\n# florence-edge launcher, written by scripts/install-service.sh\nexec ${nodeForLauncher} ${DEFAULT_PREFIX}/app/dist/src/bin.js "$@"\n`);
    assert.ok(existsSync(p(`${DEFAULT_PREFIX}/app/dist/src/bin.js`)));
    assert.ok(existsSync(p(`${DEFAULT_PREFIX}/app/package.json`)));
    assert.not.ok(existsSync(p(`${DEFAULT_PREFIX}/app/dist/test`)), "tests are not installed");
    assert.is(readFileSync(p("/etc/systemd/system/florence-edge.service"), "utf8"), unitText, "the default layout installs the unit as committed");
    assert.is(mode(p("/etc/systemd/system/florence-edge.service")), 0o644);
    assert.is(readlinkSync(p("/etc/systemd/system/multi-user.target.wants/florence-edge.service")), "/etc/systemd/system/florence-edge.service");
    assert.is(readlinkSync(p("/usr/local/bin/florence-edge")), `${DEFAULT_PREFIX}/bin/florence-edge`);
    assert.is(mode(p("/etc/florence-edge/config.yaml")), 0o640);
    assert.is(mode(p("/etc/florence-edge/env")), 0o600, "secrets: root only (systemd reads it)");
    const sysusers = readFileSync(p("/etc/sysusers.d/florence-edge.conf"), "utf8");
    assert.match(sysusers, /^u florence-edge - "florence-edge service" \/var\/lib\/florence-edge -$/m);
    assert.match(sysusers, /^m florence-edge video$/m);
    assert.match(sysusers, /^m florence-edge render$/m);
    const tmpfiles = readFileSync(p("/etc/tmpfiles.d/florence-edge.conf"), "utf8");
    assert.match(tmpfiles, /^z \/etc\/florence-edge\/config\.yaml 0640 root florence-edge -$/m);

    // the example config is one the service accepts
    const config = loadServiceConfig({ config: p("/etc/florence-edge/config.yaml") }, {});
    assert.is(config.cameras.length, 1);
    assert.equal(config.cameras[0]!.source, { type: "v4l2", device: "/dev/video0", format: "mjpeg", width: undefined, height: undefined, fps: undefined });
    assert.is(config.metrics.host, "127.0.0.1");
  });

  if (!which("systemd-sysusers") || !which("systemd-tmpfiles")) {
    skip("systemd-sysusers and systemd-tmpfiles on the staged root", "they are not installed");
  } else if (process.getuid?.() !== 0) {
    skip("systemd-sysusers and systemd-tmpfiles on the staged root", "chown needs root");
  } else {
    test("on the target: systemd-sysusers creates the user, systemd-tmpfiles gives the config to its group", () => {
      for (const f of ["passwd", "group", "shadow", "gshadow"]) if (!existsSync(join(root, "etc", f))) writeFileSync(join(root, "etc", f), "");
      const users = spawnSync("systemd-sysusers", [`--root=${root}`, join(root, "etc/sysusers.d/florence-edge.conf")], { encoding: "utf8" });
      const out = `${users.stdout}${users.stderr}`;
      assert.is(users.status, 0, out);
      assert.match(out, "Creating user 'florence-edge'");
      assert.not.match(out, /ignoring|Failed/);
      const groups = readFileSync(join(root, "etc/group"), "utf8");
      const gid = Number(/^florence-edge:x:(\d+):/m.exec(groups)![1]);
      assert.match(groups, /^video:x:\d+:florence-edge$/m);
      assert.match(groups, /^render:x:\d+:florence-edge$/m);
      const files = spawnSync("systemd-tmpfiles", [`--root=${root}`, "--create", join(root, "etc/tmpfiles.d/florence-edge.conf")], { encoding: "utf8" });
      assert.is(files.status, 0, `${files.stdout}${files.stderr}`);
      const dir = statSync(join(root, "etc/florence-edge"));
      const config = statSync(join(root, "etc/florence-edge/config.yaml"));
      const env = statSync(join(root, "etc/florence-edge/env"));
      assert.equal([dir.uid, dir.gid, dir.mode & 0o777], [0, gid, 0o750]);
      assert.equal([config.uid, config.gid, config.mode & 0o777], [0, gid, 0o640]);
      assert.equal([env.uid, env.gid, env.mode & 0o777], [0, 0, 0o600]);
    });
  }

  if (SYSTEMD_ANALYZE && HOST_UNITS) {
    test("the installed unit verifies inside the staging root (systemd-analyze verify --root)", () => {
      // the root needs the units the service orders against (sysinit.target, network-online.target …)
      mkdirSync(join(root, "usr/lib/systemd/system"), { recursive: true });
      const copied = spawnSync("cp", ["-a", `${HOST_UNITS}/.`, join(root, "usr/lib/systemd/system")], { encoding: "utf8" });
      assert.is(copied.status, 0, copied.stderr);
      const { status, output } = verify(join(root, "etc/systemd/system/florence-edge.service"), [`--root=${root}`]);
      assert.is(output, "");
      assert.is(status, 0);
    });
  }

  test("install is idempotent: edited config is kept, the program is replaced cleanly", () => {
    const config = join(root, "etc/florence-edge/config.yaml");
    writeFileSync(config, `${readFileSync(config, "utf8")}# edited by the administrator\n`);
    const again = install(["--root", root, "--deps", "none", "--enable", "--node", nodeForLauncher]);
    assert.is(again.status, 0, again.stderr);
    assert.match(readFileSync(config, "utf8"), "# edited by the administrator");
    assert.ok(again.stdout.includes(`kept: ${config} (exists)`));
    assert.ok(again.stdout.includes(`unchanged: ${join(root, "etc/systemd/system/florence-edge.service")}`));
    assert.not.ok(existsSync(join(root, `${DEFAULT_PREFIX}/app.new`)));
    assert.not.ok(existsSync(join(root, `${DEFAULT_PREFIX}/app.old`)));
    assert.is(recordedCalls(), "");
  });

  test("a custom prefix and user end up in the unit and the launcher", () => {
    const other = join(scratch, "root-custom");
    const run = install(["--root", other, "--deps", "none", "--prefix", "/opt/florence", "--user", "camsvc", "--no-link", "--node", nodeForLauncher]);
    assert.is(run.status, 0, run.stderr);
    const unit = readFileSync(join(other, "etc/systemd/system/florence-edge.service"), "utf8");
    const d = directives(unit);
    assert.equal(d.get("ExecStart"), ["/opt/florence/bin/florence-edge serve --config /etc/florence-edge/config.yaml"]);
    assert.equal(d.get("User"), ["camsvc"]);
    assert.equal(d.get("Group"), ["camsvc"]);
    assert.not.ok(unit.includes(DEFAULT_PREFIX));
    assert.match(readFileSync(join(other, "opt/florence/bin/florence-edge"), "utf8"), `/opt/florence/app/dist/src/bin.js`);
    assert.not.ok(existsSync(join(other, "usr/local/bin/florence-edge")), "--no-link");
    assert.match(readFileSync(join(other, "etc/sysusers.d/florence-edge.conf"), "utf8"), "m camsvc video");
    if (SYSTEMD_ANALYZE) {
      // the same unit with its launcher pointed at the stub verifies clean
      const copy = join(scratch, "custom", "florence-edge.service");
      mkdirSync(join(scratch, "custom"), { recursive: true });
      writeFileSync(copy, unit.replaceAll("/opt/florence", stubPrefix));
      assert.is(verify(copy).output, "");
    }
  });

  test("--uninstall keeps config, state and cache; --purge removes config too", () => {
    const out = install(["--uninstall", "--root", root]);
    assert.is(out.status, 0, out.stderr);
    for (const gone of [DEFAULT_PREFIX, "/etc/systemd/system/florence-edge.service", "/etc/systemd/system/multi-user.target.wants/florence-edge.service", "/etc/sysusers.d/florence-edge.conf", "/usr/local/bin/florence-edge"]) {
      assert.not.ok(existsSync(join(root, gone)) || isLink(join(root, gone)), `${gone} removed`);
    }
    assert.ok(existsSync(join(root, "etc/florence-edge/config.yaml")), "config kept");
    const purge = install(["--uninstall", "--purge", "--root", root]);
    assert.is(purge.status, 0, purge.stderr);
    assert.not.ok(existsSync(join(root, "etc/florence-edge")));
    assert.is(recordedCalls(), "");
  });

  test("bad arguments are refused with a reason (exit 2)", () => {
    for (const [args, fragment] of [
      [["--prefix", "relative/dir", "--root", root], "absolute"],
      [["--prefix", "/usr", "--root", root], "system directory"],
      [["--prefix", "/opt/a b", "--root", root], "space"],
      [["--purge"], "--purge only goes with --uninstall"],
      [["--deps", "yarn", "--root", root], "npm, copy or none"],
      [["--user", "Bad User", "--root", root], "not a valid user name"],
      [["--frobnicate"], "unknown option"],
    ] as const) {
      const r = install([...args]);
      assert.is(r.status, 2, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
      assert.ok(r.stderr.includes(fragment), `${args.join(" ")}: ${r.stderr}`);
    }
  });

  if (existsSync(join(REPO_ROOT, "node_modules", "koffi")) && which("npm")) {
    test("install --deps copy: the installed program runs, without dev dependencies", () => {
      const copyRoot = join(scratch, "root-copy");
      const run = install(["--root", copyRoot, "--deps", "copy", "--node", nodeForLauncher], { stubs: false });
      try {
        assert.is(run.status, 0, `${run.stdout}\n${run.stderr}`);
        const app = join(copyRoot, `${DEFAULT_PREFIX}/app`);
        assert.not.ok(existsSync(join(app, "node_modules", "typescript")), "dev dependency pruned");
        assert.not.ok(existsSync(join(app, "node_modules", "uvu")), "dev dependency pruned");
        assert.ok(existsSync(join(app, "node_modules", "koffi")));
        const version = spawnSync(nodeForLauncher, [join(app, "dist/src/bin.js"), "--version"], { encoding: "utf8" });
        assert.is(version.status, 0, version.stderr);
        assert.is(version.stdout.trim(), JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")).version);
        const parsed = spawnSync(nodeForLauncher, [join(app, "dist/src/bin.js"), "parse", "--task", "<OD>", "--text", "car<loc_52><loc_332><loc_932><loc_774>", "--image-size", "640x480", "--coordinates", "int", "--json"], { encoding: "utf8" });
        assert.is(parsed.status, 0, parsed.stderr);
        // parse.json's first <OD> case, as HF returned it
        assert.equal(JSON.parse(parsed.stdout), { "<OD>": { bboxes: [[33, 159, 596, 371]], labels: ["car"] } });
      } finally {
        rmSync(copyRoot, { recursive: true, force: true });
      }
    });
  }
}

function isLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

test("clean up", () => {
  rmSync(scratch, { recursive: true, force: true });
});

test.run();
