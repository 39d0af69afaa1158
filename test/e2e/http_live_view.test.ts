/**
 * The live view in a real browser: Debian's chromium (or CHROMIUM_PATH) driven by playwright-core, against
 * `florence-edge serve` with a camera of demo stills running <OD> and <CAPTION> on every frame. The newest annotated
 * frame appears and changes without a reload; the caption text follows the frames, saying what the service
 * published for each; the upload form returns the image with the answer's boxes drawn on it, and the answer equals
 * the API's for that image; the page fits a phone's width.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { type Browser, chromium } from "playwright-core";
import { decodeImage, type RgbImage } from "../../src/florence/image.ts";
import { demoImagesDir, demoModelDir } from "../../src/paths.ts";
import { demoCameraYaml, type ServiceProcess, startService } from "../support/service_process.ts";
import { waitFor } from "../support/wait_for.ts";
import { testWhen } from "../support/test_when.ts";

const CHROMIUM = process.env["CHROMIUM_PATH"] || "/usr/bin/chromium";
const IMAGE = join(demoImagesDir(), "shapes-1.jpg");
const CONFIG = [`model: { path: ${JSON.stringify(demoModelDir())} }`, "http: { port: 0 }", demoCameraYaml("front", demoImagesDir(), ["<OD>", "<CAPTION>"])].join("\n");
const maybe = testWhen(existsSync(CHROMIUM), `no chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);

let service: ServiceProcess;
let browser: Browser;
/** Captions the service published, by frame, read from its event stream beside the browser. */
const captions = new Map<number, string>();
const events = new AbortController();

async function followEvents(url: string): Promise<void> {
  const response = await fetch(`${url}/api/events`, { signal: events.signal });
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = /^event: result\ndata: (.*)$/m.exec(block);
        if (!data) continue;
        const result = JSON.parse(data[1]!) as { task: string; frame: number; summary: string };
        if (result.task === "<CAPTION>") captions.set(result.frame, result.summary);
      }
    }
  } catch {
    // aborted at the end
  }
}

/** Whether the top edge of `box` is drawn: most pixels along it differ from the clean image. */
function topEdgeDrawn(drawn: RgbImage, clean: RgbImage, box: readonly number[]): boolean | undefined {
  const x1 = Math.max(0, Math.round(Math.min(box[0]!, box[2]!)));
  const x2 = Math.min(clean.width - 1, Math.round(Math.max(box[0]!, box[2]!)));
  const y = Math.round(Math.min(box[1]!, box[3]!));
  if (x2 - x1 < 12 || y < 2 || y >= clean.height - 2) return undefined; // too thin or off the image to judge
  let changed = 0;
  for (let x = x1 + 3; x < x2 - 3; x++) {
    const i = (y * clean.width + x) * 3;
    if (Math.abs(drawn.data[i]! - clean.data[i]!) + Math.abs(drawn.data[i + 1]! - clean.data[i + 1]!) + Math.abs(drawn.data[i + 2]! - clean.data[i + 2]!) > 60) changed++;
  }
  return changed / (x2 - x1 - 6) > 0.6;
}

test.before(async () => {
  if (!existsSync(CHROMIUM)) return;
  service = await startService(CONFIG);
  void followEvents(service.url);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});

test.after(async () => {
  events.abort();
  await browser?.close();
  if (service) assert.is(await service.stop(), 0);
});

maybe("the newest annotated frame appears and changes without a reload; the caption follows the frames", async () => {
  const page = await browser.newPage();
  await page.goto(`${service.url}/`);
  const frameImage = page.locator('article[data-camera="front"] img.frame');
  await frameImage.waitFor({ state: "attached", timeout: 30_000 });
  await page.waitForFunction(() => Number(document.querySelector('article[data-camera="front"] img.frame')?.getAttribute("data-frame") ?? "-1") >= 0, undefined, { timeout: 30_000 });
  const a = Number(await frameImage.getAttribute("data-frame"));
  assert.ok(await frameImage.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth > 0), "the frame is a decoded image");
  await page.waitForFunction((seen) => Number(document.querySelector('article[data-camera="front"] img.frame')?.getAttribute("data-frame")) > seen, a, { timeout: 30_000 });
  const b = Number(await frameImage.getAttribute("data-frame"));
  assert.ok(b > a, `frame ${a} then ${b}`);
  assert.match(await frameImage.getAttribute("src") ?? "", /^blob:/);

  const caption = page.locator('article[data-camera="front"] li[data-task="<CAPTION>"]');
  await caption.waitFor({ timeout: 30_000 });
  const shown = async () => ({ frame: Number(await caption.getAttribute("data-frame")), text: (await caption.locator(".text").textContent()) ?? "" });
  const before = await shown();
  await page.waitForFunction((seen) => Number(document.querySelector('li[data-task="<CAPTION>"]')?.getAttribute("data-frame")) > seen, before.frame, { timeout: 30_000 });
  const after = await shown();
  for (const { frame, text } of [before, after]) {
    const published = await waitFor(`the published caption of frame ${frame}`, 10_000, () => captions.get(frame));
    assert.ok(text.startsWith(`${published} (frame ${frame},`), `the page shows ${JSON.stringify(text)} for frame ${frame}; the service published ${JSON.stringify(published)}`);
  }
  assert.match(await page.locator('article[data-camera="front"] .state').textContent() ?? "", /running/);
  assert.match(await page.locator('article[data-camera="front"] .fps').textContent() ?? "", /\d+\.\d fps/);
  await page.close();
});

maybe("the upload form runs a task on an image and returns it with the answer's boxes drawn; the answer is the API's", async () => {
  const page = await browser.newPage();
  await page.goto(`${service.url}/`);
  await page.locator('#infer-task option[value="<OD>"]').waitFor({ state: "attached" });
  await page.setInputFiles("#infer-file", IMAGE);
  await page.selectOption("#infer-task", "<OD>");
  await page.click("#infer-run");
  await page.locator("#infer-result").waitFor({ state: "visible", timeout: 60_000 });
  const shown = JSON.parse((await page.locator("#infer-json").textContent())!) as { result: Record<string, { bboxes: number[][] }> };
  const api = await fetch(`${service.url}/api/infer?task=%3COD%3E`, { method: "POST", body: readFileSync(IMAGE) });
  const answer = (await api.json()) as { result: Record<string, unknown>; summary: string };
  assert.equal(shown.result, answer.result, "the page shows the API's answer for this image");
  assert.match((await page.locator("#infer-summary").textContent())!, new RegExp(`^<OD>: ${answer.summary.replace(/[[\]().*+?^$|\\]/g, "\\$&")}$`));

  const src = (await page.locator("#infer-image").getAttribute("src"))!;
  assert.match(src, /^data:image\/jpeg;base64,/);
  const drawn = await decodeImage(new Uint8Array(Buffer.from(src.slice(src.indexOf(",") + 1), "base64")));
  const clean = await decodeImage(IMAGE);
  assert.equal([drawn.width, drawn.height], [Math.min(1280, clean.width), Math.round(clean.height * Math.min(1, 1280 / clean.width))]);
  const judged = shown.result["<OD>"]!.bboxes.map((box) => topEdgeDrawn(drawn, clean, box)).filter((v) => v !== undefined);
  assert.ok(judged.length > 0, "at least one box to judge");
  assert.ok(judged.every(Boolean), `every box is drawn on the returned image (${judged.filter(Boolean).length} of ${judged.length})`);
  await page.close();
});

maybe("on a phone-sized screen the page fits the width and shows the frame", async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  const page = await context.newPage();
  await page.goto(`${service.url}/`);
  await page.waitForFunction(() => Number(document.querySelector("img.frame")?.getAttribute("data-frame") ?? "-1") >= 0, undefined, { timeout: 30_000 });
  const { scroll, inner, image } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth, image: document.querySelector("img.frame")!.getBoundingClientRect().width }));
  assert.ok(scroll <= inner, `no sideways scrolling: content ${scroll} px in a ${inner} px window`);
  assert.ok(image > 300 && image <= inner, `the frame fills the width: ${image} px`);
  await context.close();
});

test.run();
