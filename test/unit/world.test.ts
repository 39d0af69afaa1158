/**
 * The shapes world's generator against its contract (shared/shapes-world.md): geometry, colours, words, spacing,
 * backgrounds, encodings, and the training answers read back by HF's post-processing into the ground truth.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { decodeImage } from "../../src/florence/image.ts";
import { postProcessGeneration } from "../../src/florence/postprocess.ts";
import { sampleClip } from "../../src/world/clip.ts";
import { loadWorldFont } from "../../src/world/font.ts";
import { boxGap, boxIoU, polygonArea, shapeBox, shapeOutline } from "../../src/world/geometry.ts";
import { captionNamesExactly, detectionsOf, matchDetections, polygonIoU, polygonsOf, recall, shapeDetections, wordDetectionsOf } from "../../src/world/scoring.ts";
import { WorldRandom } from "../../src/world/random.ts";
import { drawScene, renderScene } from "../../src/world/render.ts";
import { meanGrey, sampleStill, type Scene, sceneTruth, wordBox } from "../../src/world/scene.ts";
import { COLOURS, IMAGE_SIZES, WORDS } from "../../src/world/world_spec.ts";
import { trainingExamples } from "../../src/world/targets.ts";

const font = loadWorldFont();
const near = (a: number, b: number, eps = 1e-9) => Math.abs(a - b) <= eps;

test("star: ten vertices, the first straight up at radius d/2, inner radius 0.2·d, box = extent of the vertices", () => {
  const [x, y, d] = [10, 20, 100];
  const star = shapeOutline("star", x, y, d);
  assert.is(star.length, 20);
  const cx = x + d / 2;
  const cy = y + d / 2;
  assert.ok(near(star[0]!, cx) && near(star[1]!, cy - d / 2), "first point straight up");
  for (let k = 0; k < 10; k++) {
    const r = Math.hypot(star[2 * k]! - cx, star[2 * k + 1]! - cy);
    assert.ok(near(r, k % 2 === 0 ? d / 2 : 0.2 * d, 1e-9), `vertex ${k} radius ${r}`);
  }
  const box = shapeBox("star", x, y, d);
  assert.ok(near(box[1], y) && near(box[0], cx - (d / 2) * Math.cos(Math.PI / 10)), "box is the vertices' extent");
  assert.ok(near(box[3], cy + (d / 2) * Math.cos(Math.PI / 5)));
  assert.ok(polygonArea(star) > 0, "clockwise on screen");
});

test("triangle, square and circle follow the spec's table", () => {
  assert.equal(shapeOutline("triangle", 5, 6, 10).sort(), [5, 16, 15, 16, 10, 6].sort());
  assert.equal(shapeBox("triangle", 5, 6, 10), [5, 6, 15, 16]);
  assert.equal(shapeBox("circle", 5, 6, 10), [5, 6, 15, 16]);
  const circle = shapeOutline("circle", 0, 0, 40);
  assert.ok(circle.length / 2 >= 24, "a circle's polygon has 24 or more points");
  for (let i = 0; i < circle.length; i += 2) assert.ok(near(Math.hypot(circle[i]! - 20, circle[i + 1]! - 20), 20, 1e-9));
});

test("stills: sizes, counts, spacing, margins, sizes of shapes and words, colours and words from the spec", () => {
  const sizes = new Set<string>();
  const backgrounds = new Set<string>();
  for (let i = 0; i < 300; i++) {
    const scene = sampleStill(font, 11, i);
    const truth = sceneTruth(scene, font);
    sizes.add(`${scene.width}x${scene.height}`);
    backgrounds.add(scene.background.kind);
    assert.ok(IMAGE_SIZES.some(([w, h]) => w === scene.width && h === scene.height));
    assert.ok(truth.shapes.length >= 1 && truth.shapes.length <= 4, `shapes ${truth.shapes.length}`);
    assert.ok(truth.words.length <= 2);
    const boxes = [...truth.shapes.map((s) => s.box), ...truth.words.map((w) => w.box)];
    for (const b of boxes) assert.ok(b[0] >= 4 && b[1] >= 4 && b[2] <= scene.width - 4 && b[3] <= scene.height - 4, `box ${b} inside by 4 px`);
    for (let a = 0; a < boxes.length; a++) for (let b = a + 1; b < boxes.length; b++) assert.ok(boxGap(boxes[a]!, boxes[b]!) >= 6, `gap between ${boxes[a]} and ${boxes[b]}`);
    const minSide = Math.min(scene.width, scene.height);
    for (const s of scene.shapes) assert.ok(s.d >= 0.08 * minSide - 1e-9 && s.d <= 0.35 * minSide + 1e-9);
    for (const w of scene.words) {
      assert.ok(w.fontSize >= 0.05 * scene.height - 1e-9 && w.fontSize <= 0.11 * scene.height + 1e-9);
      assert.ok((WORDS as readonly string[]).includes(w.text));
    }
    for (const s of truth.shapes) assert.ok(s.colour in COLOURS);
    if (scene.style.encoding.format === "jpeg") assert.ok(scene.style.encoding.quality >= 80 && scene.style.encoding.quality <= 95);
  }
  assert.is(sizes.size, 5, "all five image sizes occur");
  assert.is(backgrounds.size, 3, "all three backgrounds occur");
});

test("words are black where the background's grey under them is above 128, else white", () => {
  let black = 0;
  for (let i = 0; i < 300; i++) {
    const scene = sampleStill(font, 12, i, { words: 2 });
    for (const w of scene.words) {
      const box = wordBox(font, w);
      const grey = meanGrey(scene.background, box[1], box[3], scene.height);
      assert.is(w.ink, grey > 128 ? "black" : "white", `${w.text} on ${JSON.stringify(scene.background)}`);
      black += w.ink === "black" ? 1 : 0;
    }
  }
  assert.ok(black > 50, "both inks occur");
});

/** A scene drawn without noise and saved as PNG, by the given rasteriser. */
function plainScene(index: number, rasteriser: "coverage" | "svg"): Scene {
  const scene = sampleStill(font, 5, index, { words: 2 });
  scene.background = { kind: "flat", grey: 120 };
  scene.style = { rasteriser, samples: 4, encoding: { format: "png" } };
  for (const w of scene.words) w.ink = "white"; // the rule for grey 120 (checked on sampled scenes below)
  return scene;
}

for (const rasteriser of ["coverage", "svg"] as const) {
  test(`${rasteriser}: exact fills inside shapes, a word's ink fills its box tightly, black or white by the background`, async () => {
    for (let i = 0; i < 6; i++) {
      const scene = plainScene(i, rasteriser);
      const truth = sceneTruth(scene, font);
      const image = await decodeImage(await drawScene(scene, font));
      const px = (x: number, y: number) => Array.from(image.data.subarray((y * image.width + x) * 3, (y * image.width + x) * 3 + 3));
      for (const s of truth.shapes) {
        const cx = Math.round((s.box[0] + s.box[2]) / 2);
        const cy = Math.round(s.shape === "triangle" ? s.box[1] + 0.75 * (s.box[3] - s.box[1]) : (s.box[1] + s.box[3]) / 2);
        assert.equal(px(cx, cy), [...COLOURS[s.colour]], `${s.label} at ${cx},${cy}`);
      }
      for (const w of truth.words) {
        let [x1, y1, x2, y2] = [Infinity, Infinity, -Infinity, -Infinity];
        for (let y = Math.floor(w.box[1]) - 3; y <= Math.ceil(w.box[3]) + 3; y++) {
          for (let x = Math.floor(w.box[0]) - 3; x <= Math.ceil(w.box[2]) + 3; x++) {
            if (px(x, y)[0]! > 140) [x1, y1, x2, y2] = [Math.min(x1, x), Math.min(y1, y), Math.max(x2, x), Math.max(y2, y)];
          }
        }
        assert.ok(Math.abs(x1 - w.box[0]) <= 1.5 && Math.abs(y1 - w.box[1]) <= 1.5, `${w.text}: ink starts at ${x1},${y1}, box ${w.box}`);
        assert.ok(Math.abs(x2 + 1 - w.box[2]) <= 1.5 && Math.abs(y2 + 1 - w.box[3]) <= 1.5, `${w.text}: ink ends at ${x2},${y2}, box ${w.box}`);
      }
    }
  });
}

test("the two rasterisers draw the same geometry (mean difference under 1 level), and drawing is reproducible", async () => {
  const a = await renderScene(plainScene(3, "coverage"), font);
  const b = await renderScene(plainScene(3, "svg"), font);
  let sum = 0;
  for (let i = 0; i < a.data.length; i++) sum += Math.abs(a.data[i]! - b.data[i]!);
  assert.ok(sum / a.data.length < 1, `mean |coverage − librsvg| ${sum / a.data.length}`);
  const scene = sampleStill(font, 8, 1);
  assert.equal(await drawScene(scene, font), await drawScene(sampleStill(font, 8, 1), font));
});

test("backgrounds: gradient runs from the top grey to the bottom grey; noise has σ ≈ 8", async () => {
  const scene = plainScene(0, "coverage");
  scene.shapes = [];
  scene.words = [];
  scene.background = { kind: "gradient", top: 40, bottom: 200 };
  let image = await renderScene(scene, font);
  assert.is(image.data[0], 40);
  assert.is(image.data[(image.height - 1) * image.width * 3], 200);
  scene.background = { kind: "noisy", grey: 128, sigma: 8 };
  image = await renderScene(scene, font);
  let s = 0;
  let s2 = 0;
  for (const v of image.data) {
    s += v - 128;
    s2 += (v - 128) ** 2;
  }
  const sd = Math.sqrt(s2 / image.data.length - (s / image.data.length) ** 2);
  assert.ok(Math.abs(sd - 8) < 0.3 && Math.abs(s / image.data.length) < 0.2, `σ ${sd}`);
});

test("every task's training answer reads back through HF's post-processing into the ground truth", () => {
  for (let i = 0; i < 40; i++) {
    const truth = sceneTruth(sampleStill(font, 21, i), font);
    for (const e of trainingExamples(truth, new WorldRandom(3, i))) {
      const result = postProcessGeneration(`</s><s>${e.target}</s>`, e.task, truth)[e.task];
      const label = `${e.task} ${e.input} on still ${i}`;
      switch (e.task) {
        case "<OD>":
          assert.is(recall(matchDetections(detectionsOf(result), shapeDetections(truth, (s) => s.shape), 0.9)), 1, label);
          break;
        case "<DENSE_REGION_CAPTION>":
          assert.is(recall(matchDetections(detectionsOf(result), shapeDetections(truth, (s) => s.label), 0.9)), 1, label);
          break;
        case "<CAPTION>":
        case "<DETAILED_CAPTION>":
        case "<MORE_DETAILED_CAPTION>":
          assert.ok(captionNamesExactly(result as string, truth), `${label}: ${result}`);
          break;
        case "<OCR>":
          assert.is(result, truth.words.map((w) => w.text).join(" "), label);
          break;
        case "<OCR_WITH_REGION>": {
          const words = truth.words.map((w) => ({ box: w.box, label: w.text }));
          assert.is(recall(matchDetections(wordDetectionsOf(result), words, 0.9)), 1, label);
          break;
        }
        case "<REFERRING_EXPRESSION_SEGMENTATION>": {
          const hits = truth.shapes.filter((s) => s.label === e.input);
          const polygons = polygonsOf(result);
          assert.is(polygons.length, hits.length, label);
          for (const s of hits) {
            const best = Math.max(...polygons.map((p) => polygonIoU([p], s.polygon, truth.width, truth.height)));
            assert.ok(best >= 0.85, `${label}: mask IoU ${best}`);
          }
          if (hits.length === 0) assert.equal(polygonsOf(result), [], label);
          break;
        }
        case "<OPEN_VOCABULARY_DETECTION>": {
          const want = truth.shapes.filter((s) => s.shape === e.input || s.label === e.input);
          assert.is(detectionsOf(result).length, want.length, label);
          break;
        }
        default:
          break;
      }
    }
  }
});

test("clips: ids stay with their shape, shapes move and keep apart, words stay put", () => {
  const frames = sampleClip(font, { seed: 4, frames: 80 });
  const lastBox = new Map<number, number[]>();
  const ids = new Set<number>();
  for (const f of frames) {
    const inView = new Set(f.visibility.filter((v) => v.visible === 1).map((v) => v.id));
    assert.is(f.truth.shapes.length, f.visibility.length);
    assert.equal(f.truth.words, frames[0]!.truth.words);
    const boxes = f.truth.shapes.map((s) => s.box);
    for (let a = 0; a < boxes.length; a++) for (let b = a + 1; b < boxes.length; b++) assert.ok(boxGap(boxes[a]!, boxes[b]!) >= 6);
    for (const s of f.truth.shapes) {
      ids.add(s.id);
      const before = lastBox.get(s.id);
      if (before?.length && inView.has(s.id)) assert.ok(boxIoU(before as [number, number, number, number], s.box) > 0.3, `id ${s.id} jumps between frames`);
      lastBox.set(s.id, inView.has(s.id) ? s.box : []);
    }
  }
  assert.ok(ids.size > 3, `shapes enter during the clip (${ids.size} ids)`);
  const first = frames[0]!.truth.shapes[0]!;
  const later = frames[10]!.truth.shapes.find((s) => s.id === first.id);
  assert.ok(later === undefined || boxIoU(first.box, later.box) < 0.95, "shapes move");
});

test.run();
