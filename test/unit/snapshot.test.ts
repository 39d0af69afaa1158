import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { FlorenceError } from "../../src/errors.ts";
import { type RgbImage, decodeImage, escapeSvgText, renderSnapshot } from "../../src/florence/image.ts";
import { overlayFromResult } from "../../src/service/overlay.ts";
import { REFERENCE, readReference } from "../support/paths.ts";

const GREY = 128;

function greyImage(width: number, height: number): RgbImage {
  return { width, height, data: new Uint8Array(width * height * 3).fill(GREY) };
}

async function decodeJpeg(jpeg: Uint8Array): Promise<{ width: number; height: number; data: Uint8Array; format: string | undefined }> {
  const meta = await sharp(jpeg).metadata();
  const { data, info } = await sharp(jpeg).removeAlpha().toColourspace("srgb").raw().toBuffer({ resolveWithObject: true });
  assert.is(info.channels, 3);
  return { width: info.width, height: info.height, data: new Uint8Array(data), format: meta.format };
}

function pixel(image: { width: number; data: Uint8Array }, x: number, y: number): [number, number, number] {
  const i = (y * image.width + x) * 3;
  return [image.data[i]!, image.data[i + 1]!, image.data[i + 2]!];
}

const distance = (a: readonly number[], b: readonly number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));

/** The largest change within 2 px of (x, y) against a reference image or colour: a drawn line is 2–4 px wide. */
function changeNear(image: { width: number; height: number; data: Uint8Array }, x: number, y: number, reference: readonly number[] | { width: number; data: Uint8Array }): number {
  let most = 0;
  for (let dy = -2; dy <= 2; dy++) {
    for (let dx = -2; dx <= 2; dx++) {
      const px = Math.min(image.width - 1, Math.max(0, Math.round(x) + dx));
      const py = Math.min(image.height - 1, Math.max(0, Math.round(y) + dy));
      const ref = Array.isArray(reference) ? reference : pixel(reference as { width: number; data: Uint8Array }, px, py);
      most = Math.max(most, distance(pixel(image, px, py), ref));
    }
  }
  return most;
}

/** A stroke pixel is coloured, not just darker: its channels differ clearly. */
const saturation = (p: readonly number[]) => Math.max(...p) - Math.min(...p);

test("a box is drawn: its edge changes colour, its inside does not; size is kept", async () => {
  const image = greyImage(320, 240);
  const jpeg = await renderSnapshot(image, { boxes: [{ box: [40, 60, 200, 180], label: "car", score: 0.87 }] });
  assert.ok(jpeg instanceof Uint8Array);
  assert.equal([...jpeg.subarray(0, 3)], [0xff, 0xd8, 0xff], "JPEG signature");
  const out = await decodeJpeg(jpeg);
  assert.is(out.format, "jpeg");
  assert.is(out.width, 320);
  assert.is(out.height, 240);
  const grey = [GREY, GREY, GREY];
  for (const [x, y] of [[40, 120], [200, 120], [120, 60], [120, 180]] as const) {
    assert.ok(changeNear(out, x, y, grey) > 60, `edge near ${x},${y}`);
    assert.ok(saturation(pixel(out, x, y)) > 25, `the line at ${x},${y} is coloured: ${pixel(out, x, y)}`);
  }
  for (const [x, y] of [[120, 120], [100, 150], [10, 230], [300, 10]] as const) {
    assert.ok(distance(pixel(out, x, y), grey) <= 6, `untouched pixel ${x},${y} = ${pixel(out, x, y)}`);
  }
  // the label sits above the box: its background replaces the grey there
  assert.ok(distance(pixel(out, 44, 50), grey) > 40, `label background ${pixel(out, 44, 50)}`);
});

test("maxWidth downscales the frame and the overlay with it", async () => {
  const jpeg = await renderSnapshot(greyImage(640, 480), { boxes: [{ box: [100, 100, 500, 400] }] }, { maxWidth: 320 });
  const out = await decodeJpeg(jpeg);
  assert.equal([out.width, out.height], [320, 240]);
  const grey = [GREY, GREY, GREY];
  assert.ok(changeNear(out, 50, 120, grey) > 60, "left edge at x = 100 / 2");
  assert.ok(changeNear(out, 250, 120, grey) > 60, "right edge at x = 500 / 2");
  assert.ok(distance(pixel(out, 150, 120), grey) <= 6, "inside");
  // narrower frames are not enlarged
  const small = await decodeJpeg(await renderSnapshot(greyImage(200, 100), {}, { maxWidth: 320 }));
  assert.equal([small.width, small.height], [200, 100]);
});

test("polygons (filled), quads and a caption are drawn", async () => {
  const overlay = {
    polygons: [{ points: [[20, 20], [120, 20], [120, 100], [20, 100]], label: "blob" }],
    quads: [{ points: [[200, 150], [300, 150], [300, 200], [200, 200]], label: "EXIT" }],
    caption: "a grey test card",
  };
  const out = await decodeJpeg(await renderSnapshot(greyImage(320, 240), overlay));
  const grey = [GREY, GREY, GREY];
  assert.ok(distance(pixel(out, 70, 60), grey) > 15, `polygon fill ${pixel(out, 70, 60)}`);
  assert.ok(changeNear(out, 300, 175, grey) > 60, "quad edge");
  assert.ok(distance(pixel(out, 250, 175), grey) <= 6, `quad inside is not filled ${pixel(out, 250, 175)}`);
  const banner = pixel(out, 310, 237);
  assert.ok(banner[0] < GREY - 30, `caption banner darkens the bottom ${banner}`);
  assert.ok(distance(pixel(out, 310, 3), [GREY, GREY, GREY]) <= 6, "the top is left alone");
});

test("label text is escaped for XML (and characters XML forbids are dropped)", async () => {
  const nasty = `<svg onload="x">&amp; 'quotes' "double" \u0001\u0008\u001f tab\tnew\nline \ud800 lone \ud83d\ude97 car ]]> <!--`;
  assert.is(escapeSvgText('<a b="c">&\'d\''), "&lt;a b=&quot;c&quot;&gt;&amp;&apos;d&apos;");
  assert.is(escapeSvgText("a\u0000b\u000bc\ufffe"), "abc");
  assert.is(escapeSvgText("\ud83d\ude97\ud800"), "\ud83d\ude97\ufffd");
  const jpeg = await renderSnapshot(greyImage(320, 240), { boxes: [{ box: [10, 40, 100, 100], label: nasty }], caption: nasty });
  const out = await decodeJpeg(jpeg);
  assert.equal([out.width, out.height], [320, 240]);
  assert.ok(changeNear(out, 10, 70, [GREY, GREY, GREY]) > 60, "the box is still drawn");
});

test("encoded frames: a fixture JPEG keeps its stored orientation and size, like decodeImage", async () => {
  for (const name of ["street.jpg", "exif_rotated.jpg", "document_rgba.png", "gray.png"]) {
    const bytes = new Uint8Array(readFileSync(join(REFERENCE, "images", name)));
    const decoded = await decodeImage(bytes);
    const box = [decoded.width * 0.25, decoded.height * 0.25, decoded.width * 0.75, decoded.height * 0.75];
    const out = await decodeJpeg(await renderSnapshot(bytes, { boxes: [{ box, label: "x" }] }));
    assert.equal([out.width, out.height], [decoded.width, decoded.height], name);
    // the pixel on the box's left edge changed; one well inside is the decoded frame's (JPEG noise aside)
    const x = Math.round(box[0]!);
    const y = Math.round(decoded.height / 2);
    assert.ok(changeNear(out, x, y, decoded) > 40, `${name}: edge changed`);
  }
});

test("an HF result drawn end to end: <OD> from parse.json on its image size", async () => {
  const c = readReference<Array<{ task: string; text: string; image_size: [number, number]; expected?: Record<string, unknown> }>>("parse.json").find(
    (p) => p.task === "<OD>" && p.text.startsWith("</s><s>car"),
  )!;
  const [width, height] = c.image_size;
  const overlay = overlayFromResult(c.expected!);
  const out = await decodeJpeg(await renderSnapshot(greyImage(width, height), overlay, { quality: 90 }));
  assert.equal([out.width, out.height], [width, height]);
  const [x1, y1, x2, y2] = overlay.boxes![0]!.box as number[];
  const mid = Math.round((y1! + y2!) / 2);
  assert.ok(changeNear(out, x1!, mid, [GREY, GREY, GREY]) > 60);
  assert.ok(changeNear(out, x2!, mid, [GREY, GREY, GREY]) > 60);
  assert.ok(distance(pixel(out, Math.round((x1! + x2!) / 2), mid), [GREY, GREY, GREY]) <= 6);
});

test("quality changes the size; an empty overlay just re-encodes", async () => {
  const bytes = new Uint8Array(readFileSync(join(REFERENCE, "images", "street.jpg")));
  const low = await renderSnapshot(bytes, {}, { quality: 20 });
  const high = await renderSnapshot(bytes, {}, { quality: 95 });
  assert.ok(low.length < high.length, `${low.length} < ${high.length}`);
});

test("bad input and options give FlorenceErrors that name the value", async () => {
  const expectCode = async (promise: Promise<unknown>, code: string, fragment: string) => {
    try {
      await promise;
    } catch (error) {
      assert.instance(error, FlorenceError);
      assert.is((error as FlorenceError).code, code);
      assert.ok((error as Error).message.includes(fragment), (error as Error).message);
      return;
    }
    assert.unreachable(`expected ${code}`);
  };
  await expectCode(renderSnapshot(greyImage(10, 10), {}, { quality: 0 }), "INVALID_ARGUMENT", "quality");
  await expectCode(renderSnapshot(greyImage(10, 10), {}, { quality: 101 }), "INVALID_ARGUMENT", "101");
  await expectCode(renderSnapshot(greyImage(10, 10), {}, { maxWidth: 0 }), "INVALID_ARGUMENT", "maxWidth");
  await expectCode(renderSnapshot({ width: 10, height: 10, data: new Uint8Array(5) }, {}), "INVALID_ARGUMENT", "10x10 with 5 bytes");
  await expectCode(renderSnapshot(new Uint8Array([1, 2, 3, 4]), {}), "IMAGE_UNREADABLE", "4 bytes");
  await expectCode(renderSnapshot(new Uint8Array(0), {}), "IMAGE_UNREADABLE", "empty");
  await expectCode(renderSnapshot(greyImage(10, 10), null as never), "INVALID_ARGUMENT", "overlay");
});

test.run();
