/**
 * NVIDIA's hosted Florence-2 API, served by `florence-edge serve`: a client that does what NVIDIA's sample client
 * does (test/support/nvidia_sample_client.py: POST with Accept: application/json, write the answer to a .zip,
 * extract it, list the folder) gets `<id>.response` and, when boxes were found, `overlay.png`. The response's content
 * and entities must be what the CLI's own `infer --format nvidia` says for the same image and task, with null
 * where the task gives no entity of a kind.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execFile, execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { promisify } from "node:util";
import { decodeImage } from "../../src/florence/image.ts";
import { demoImagesDir, demoModelDir } from "../../src/paths.ts";
import { REPO_ROOT } from "../support/paths.ts";
import { type ServiceProcess, startService } from "../support/service_process.ts";
import { testWhen } from "../support/test_when.ts";

const run = promisify(execFile);
const CONFIG = [`model: { path: ${JSON.stringify(demoModelDir())} }`, "cameras: []", "http: { port: 0 }", ""].join("\n");
const IMAGE = join(demoImagesDir(), "shapes-1.jpg");
const python = (() => {
  try {
    execFileSync("python3", ["-c", "import zipfile, json"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();
const maybe = testWhen(python, "python3 is not installed (apt-get install python3); NVIDIA's sample client is Python");

let service: ServiceProcess;

interface NvidiaEntities {
  bboxes: number[][] | null;
  quad_boxes: number[][] | null;
  labels: string[] | null;
  bboxes_labels: string[] | null;
  polygons: number[][][] | null;
}
interface NvidiaResponse {
  id: string;
  choices: { index: number; message: { role: string; content: string; entities: NvidiaEntities }; finish_reason: string }[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

/** NVIDIA's sample client against the service; the files it extracted. */
async function sampleClient(prompt: string, out: string): Promise<{ files: string[]; response: NvidiaResponse; dir: string; client: string }> {
  const dir = join(service.dir, out);
  const { stdout } = await run("python3", [join(REPO_ROOT, "test", "support", "nvidia_sample_client.py"), `${service.url}/v1/vlm/microsoft/florence-2`, IMAGE, prompt, dir], { timeout: 120_000 });
  const listed = JSON.parse(stdout) as { status: number; files: string[]; client: string };
  assert.is(listed.status, 200);
  const responseFile = listed.files.find((f) => f.endsWith(".response"))!;
  assert.ok(responseFile, `a .response file among ${listed.files.join(", ")}`);
  const response = JSON.parse(readFileSync(join(dir, responseFile), "utf8")) as NvidiaResponse;
  assert.is(responseFile, `${response.id}.response`, "the file is named by the answer's id");
  return { files: listed.files, response, dir, client: listed.client };
}

/** The CLI's own answer in NVIDIA's shape. */
async function cli(task: string, text?: string): Promise<{ content: string; entities: { bboxes: number[][]; quad_boxes: number[][]; labels: string[]; polygons: number[][][] } }> {
  const { stdout } = await run(process.execPath, [join(REPO_ROOT, "dist", "src", "bin.js"), "infer", "--model", demoModelDir(), "--image", IMAGE, "--task", task, ...(text ? ["--text", text] : []), "--format", "nvidia", "--json"], { timeout: 120_000 });
  return (JSON.parse(stdout) as { result: Record<string, never> }).result[task];
}

function expectEntities(got: NvidiaEntities, want: Awaited<ReturnType<typeof cli>>["entities"]): void {
  const orNull = <T>(list: T[]) => (list.length > 0 ? list : null);
  assert.equal(got.bboxes, orNull(want.bboxes));
  assert.equal(got.quad_boxes, orNull(want.quad_boxes));
  assert.equal(got.labels, orNull(want.labels));
  assert.equal(got.polygons, orNull(want.polygons));
}

test.before(async () => {
  service = await startService(CONFIG);
});

test.after(async () => {
  assert.is(await service?.stop(), 0);
});

maybe("NVIDIA's sample client: <OD> unzips to <id>.response with the CLI's boxes and labels, and overlay.png with them drawn", async () => {
  const { files, response, dir, client } = await sampleClient("<OD>", "od");
  console.log(`  sample client over python ${client}`);
  const want = await cli("<OD>");
  assert.equal(files.sort(), [`${response.id}.response`, "overlay.png"].sort());
  const choice = response.choices[0]!;
  assert.is(choice.message.role, "assistant");
  assert.is(choice.finish_reason, "stop");
  assert.is(choice.message.content, `<OD>${want.content}`);
  expectEntities(choice.message.entities, want.entities);
  assert.is(choice.message.entities.bboxes_labels, null);
  assert.ok(response.usage.completion_tokens > 0 && response.usage.total_tokens === response.usage.prompt_tokens + response.usage.completion_tokens);
  // the overlay is the image, same size, with something drawn on it
  const overlay = await decodeImage(new Uint8Array(readFileSync(join(dir, "overlay.png"))));
  const original = await decodeImage(IMAGE);
  assert.equal([overlay.width, overlay.height], [original.width, original.height]);
  let changed = 0;
  for (let i = 0; i < original.data.length; i += 3) if (Math.abs(overlay.data[i]! - original.data[i]!) > 60) changed++;
  assert.ok(changed > 100, `boxes drawn on the overlay (${changed} pixels changed)`);
});

maybe("<CAPTION>: the content is the task token and the CLI's caption; every entity is null; no overlay", async () => {
  const { files, response } = await sampleClient("<CAPTION>", "caption");
  const want = await cli("<CAPTION>");
  assert.equal(files, [`${response.id}.response`]);
  assert.is(response.choices[0]!.message.content, `<CAPTION>${want.content}`);
  assert.equal(response.choices[0]!.message.entities, { bboxes: null, quad_boxes: null, labels: null, bboxes_labels: null, polygons: null });
});

maybe("<OCR_WITH_REGION> gives quad_boxes; a region task takes <loc_x1><loc_y1><loc_x2><loc_y2> as its text", async () => {
  const ocr = await sampleClient("<OCR_WITH_REGION>", "ocr");
  expectEntities(ocr.response.choices[0]!.message.entities, (await cli("<OCR_WITH_REGION>")).entities);
  const region = await sampleClient("<REGION_TO_CATEGORY><loc_100><loc_120><loc_600><loc_700>", "region");
  assert.is(region.response.choices[0]!.message.content, `<REGION_TO_CATEGORY>${(await cli("<REGION_TO_CATEGORY>", "<loc_100><loc_120><loc_600><loc_700>")).content}`);
});

test("?format=json answers the .response JSON alone; a bad request is a JSON 400 naming the fault", async () => {
  const b64 = readFileSync(IMAGE).toString("base64");
  const post = (body: unknown, query = "") => fetch(`${service.url}/v1/vlm/microsoft/florence-2${query}`, { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(body) });
  const json = await post({ messages: [{ role: "user", content: `<OD><img src="data:image/jpeg;base64,${b64}" />` }] }, "?format=json");
  assert.is(json.status, 200);
  assert.match(json.headers.get("content-type")!, /application\/json/);
  const response = (await json.json()) as NvidiaResponse;
  const want = await cli("<OD>");
  assert.is(response.choices[0]!.message.content, `<OD>${want.content}`);
  expectEntities(response.choices[0]!.message.entities, want.entities);

  const cases: [unknown, RegExp][] = [
    [{ messages: [{ role: "user", content: "<OD>no image" }] }, /has no image/],
    [{ messages: [{ role: "user", content: '<OD><img src="data:image/jpeg;asset_id,868f5924-8ef2-4d8d-866e-87bb423126cb" />' }] }, /asset ids are not available here/],
    [{ messages: [{ role: "user", content: `<DETECT><img src="data:image/jpeg;base64,${b64}" />` }] }, /unknown Florence-2 task <DETECT>/],
    [{ messages: [{ role: "user", content: `a cat<img src="data:image/jpeg;base64,${b64}" />` }] }, /does not start with a task token/],
    [{ messages: [{ role: "user", content: `<REGION_TO_CATEGORY>somewhere<img src="data:image/jpeg;base64,${b64}" />` }] }, /REGION_TO_CATEGORY/],
    [{ prompt: "<OD>" }, /messages: must be a list/],
  ];
  for (const [body, message] of cases) {
    const answer = await post(body);
    assert.is(answer.status, 400, JSON.stringify(body).slice(0, 80));
    assert.match(((await answer.json()) as { error: { message: string } }).error.message, message);
  }
});

test("the ZIP answer is a ZIP whatever the Accept header says (NVIDIA's own sample sends application/json)", async () => {
  const b64 = readFileSync(IMAGE).toString("base64");
  for (const accept of ["application/json", "application/zip", "*/*"]) {
    const answer = await fetch(`${service.url}/v1/vlm/microsoft/florence-2`, { method: "POST", headers: { "Content-Type": "application/json", Accept: accept }, body: JSON.stringify({ messages: [{ role: "user", content: `<CAPTION><img src="data:image/jpeg;base64,${b64}" />` }] }) });
    assert.is(answer.headers.get("content-type"), "application/zip");
    const bytes = new Uint8Array(await answer.arrayBuffer());
    assert.equal([...bytes.subarray(0, 4)], [0x50, 0x4b, 0x03, 0x04], "a local file header: PK\\3\\4");
  }
});

test.run();
