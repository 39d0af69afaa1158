/**
 * The installed package works: `npm pack` the project, install the tarball into an empty folder offline (from the
 * npm cache `npm ci` filled), and run the installed `florence-edge`: --help, infer on the bundled demo model, serve
 * on its embedded defaults until SIGTERM (its live view answering from the package's web/), and build-engines --help.
 * Also: what the tarball holds (no test fixtures, no dist/test, no dev scripts) and its size.
 *
 * `npm install --offline <tgz>` wants the full packuments of every dependency, which `npm ci` does not cache, so the
 * folder gets a lockfile made from the project's own (the production entries, plus the tarball): `npm ci --offline`
 * then needs only the cached tarballs.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import process from "node:process";
import { promisify } from "node:util";
import { jpegHeader } from "../../src/florence/image.ts";
import { demoModelDir } from "../../src/paths.ts";
import { REPO_ROOT } from "../support/paths.ts";

const run = promisify(execFile);
const NPM = process.platform === "win32" ? "npm.cmd" : "npm";
// the CUDA download of onnxruntime-node's install script is never wanted here (the repository's .npmrc says the same)
const NPM_ENV = { ...process.env, npm_config_onnxruntime_node_install: "skip", npm_config_update_notifier: "false" };
const DEMO_MODEL = demoModelDir();
const DEMO_MODEL_PATH = relative(REPO_ROOT, DEMO_MODEL);

interface PackedFile {
  path: string;
  size: number;
}

interface Installed {
  dir: string;
  bin: string;
  pkg: string;
  files: PackedFile[];
  tarballBytes: number;
}

let installed: Installed | undefined;
let work: string | undefined;

async function packAndInstall(): Promise<Installed> {
  work = await mkdtemp(join(tmpdir(), "fe-pack-"));
  // dist/ is already built (the tests run from it); --ignore-scripts keeps `prepare` from rebuilding it under them
  const { stdout } = await run(NPM, ["pack", "--ignore-scripts", "--json", "--pack-destination", work], { cwd: REPO_ROOT, env: NPM_ENV, maxBuffer: 1 << 26 });
  const [packed] = JSON.parse(stdout) as { filename: string; size: number; files: PackedFile[] }[];
  const tarball = join(work, packed!.filename);
  console.log(`  npm pack: ${packed!.filename}, ${(packed!.size / 2 ** 20).toFixed(2)} MiB, ${packed!.files.length} files`);

  const app = join(work, "app");
  await mkdir(app);
  const lock = JSON.parse(readFileSync(join(REPO_ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, { dev?: boolean }> };
  const manifest = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as Record<string, unknown>;
  const integrity = `sha512-${createHash("sha512").update(await readFile(tarball)).digest("base64")}`;
  const root = { name: "florence-edge-pack-test", version: "1.0.0", dependencies: { "florence-edge": `file:${tarball}` } };
  const packages: Record<string, unknown> = {
    "": root,
    "node_modules/florence-edge": { version: manifest["version"], resolved: `file:${tarball}`, integrity, license: manifest["license"], dependencies: manifest["dependencies"], bin: manifest["bin"], engines: manifest["engines"] },
  };
  for (const [key, entry] of Object.entries(lock.packages)) if (key.startsWith("node_modules/") && !entry.dev) packages[key] = entry;
  await writeFile(join(app, "package.json"), JSON.stringify(root, null, 2));
  await writeFile(join(app, "package-lock.json"), JSON.stringify({ ...root, lockfileVersion: 3, requires: true, packages }, null, 2));
  await run(NPM, ["ci", "--offline", "--no-audit", "--no-fund"], { cwd: app, env: NPM_ENV, maxBuffer: 1 << 26, timeout: 300_000 });
  return { dir: app, bin: join(app, "node_modules", ".bin", "florence-edge"), pkg: join(app, "node_modules", "florence-edge"), files: packed!.files, tarballBytes: packed!.size };
}

async function florenceEdge(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(installed!.bin, args, { cwd: installed!.dir, maxBuffer: 1 << 24, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

let setupFailure: unknown;

test.before(async () => {
  // uvu drops an error thrown by a before hook without a word: keep it and fail every test with it instead
  try {
    assert.ok(existsSync(join(DEMO_MODEL, "config.json")), `the demo model is missing: ${DEMO_MODEL} (the package ships it; the service and the examples default to it)`);
    installed = await packAndInstall();
  } catch (error) {
    setupFailure = error;
  }
});

test.before.each(() => {
  if (setupFailure !== undefined) throw setupFailure;
});

test.after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

test("the tarball ships dist/src, the demo model, clip and images, and no tests, fixtures or dev scripts", () => {
  const paths = installed!.files.map((f) => f.path);
  for (const needed of ["dist/src/bin.js", "dist/src/commands/build_engines_command.js", "src/mod.ts", "web/index.html", "web/app.js", "web/style.css", "assets/shapes-clip.mkv", "assets/shapes-clip.json", "assets/demo-images/shapes-0.jpg", "assets/fonts/DejaVuSans-Bold.ttf", `${DEMO_MODEL_PATH}/config.json`, "engines/README.md", "scripts/trt-abi-probe/probe.cpp", "systemd/florence-edge.service"]) {
    assert.ok(paths.includes(needed), `${needed} in the tarball`);
  }
  const unwanted = paths.filter((p) => /^(test|dist\/test|dist\/scripts)\//.test(p) || /tiny-seed0|\/reference\//.test(p) || /^scripts\/(python|gpu)\//.test(p) || /^scripts\/[^/]+\.(ts|mjs)$/.test(p));
  assert.equal(unwanted, [], "nothing for tests or development");
  assert.ok(installed!.tarballBytes < 64 * 2 ** 20, `the tarball is ${(installed!.tarballBytes / 2 ** 20).toFixed(1)} MiB`);
});

test("installed: florence-edge --help lists every subcommand; build-engines --help its flags", async () => {
  const help = await florenceEdge(["--help"]);
  assert.is(help.code, 0, help.stderr);
  for (const command of ["infer", "parse", "bench", "serve", "build-engines", "check-trt-abi", "test-hardware", "eval"]) assert.match(help.stdout, new RegExp(`\\b${command}\\b`));
  const build = await florenceEdge(["build-engines", "--help"]);
  assert.is(build.code, 0, build.stderr);
  assert.match(build.stdout, /--model/);
  assert.match(build.stdout, /--dry-run/);
});

test("installed: florence-edge infer on the bundled demo model", async () => {
  const model = join(installed!.pkg, DEMO_MODEL_PATH);
  const image = join(installed!.pkg, "assets", "demo-images", "shapes-0.jpg");
  const size = jpegHeader(image)!;
  const out = await florenceEdge(["infer", "--model", model, "--image", image, "--task", "<OD>", "--max-new-tokens", "16", "--json"]);
  assert.is(out.code, 0, out.stderr);
  const json = JSON.parse(out.stdout) as { task: string; result: Record<string, unknown>; image_size: { width: number; height: number } };
  assert.is(json.task, "<OD>");
  assert.ok(json.result["<OD>"] !== undefined, out.stdout);
  assert.equal(json.image_size, { width: size.width, height: size.height });
});

test("installed: florence-edge serve on embedded defaults publishes, then stops cleanly on SIGTERM", async () => {
  // the bin file itself, not npx: npx does not pass SIGTERM on
  const child = spawn(installed!.bin, ["serve"], { cwd: installed!.dir, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  try {
    const deadline = Date.now() + 90_000;
    // the embedded demo echoes one line per published result: "demo #N <TASK> …"
    while (!/^demo #\d+ <(OD|CAPTION)>/m.test(stdout) && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 200));
    assert.match(stdout, /^demo #\d+ <(OD|CAPTION)>/m, `a published result within 90 s\nstdout:\n${stdout}\nstderr:\n${stderr}`);
    // the live view is on, on loopback, and its page and script come from the installed package
    const live = /^live view: (http:\/\/127\.0\.0\.1:\d+)\/$/m.exec(stdout);
    assert.ok(live, `the live view's URL is printed\n${stdout}`);
    const page = await fetch(`${live![1]}/`);
    assert.is(page.status, 200);
    assert.match(await page.text(), /<script src="\/app\.js"/);
    assert.match(await (await fetch(`${live![1]}/app.js`)).text(), /followEvents/);
    const cameras = (await (await fetch(`${live![1]}/api/cameras`)).json()) as { cameras: { name: string }[] };
    assert.equal(cameras.cameras.map((c) => c.name), ["demo"]);
    child.kill("SIGTERM");
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r("timeout"), 30_000))]);
    assert.is(code, 0, `exit 0 after SIGTERM\n${stderr}`);
    assert.match(stdout + stderr, /stopped/);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
  }
});

test.run();
