import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { decodeImage, jpegHeader, resizeWithSharp } from "../../src/florence/image.ts";
import { type RgbImage, createResizeCache, resizeBicubicPil, resizeBicubicTorchvision } from "../../src/florence/resize.ts";
import { type ImageProcessorConfig, parseImageProcessorConfig, pixelValues } from "../../src/florence/preprocess.ts";
import { REFERENCE, TINY_MODEL, readReference } from "../support/paths.ts";
import { rejectsCode as rejects, throwsCode } from "../support/errors.ts";

type BackendRecord = { shape: number[]; sum: number; first: number[] };
type ImageRecord = { mode: string; size: [number, number]; default: BackendRecord; pil: BackendRecord };

const IMAGES = readdirSync(join(REFERENCE, "images")).sort();
const PREPROCESS = readReference<Record<string, ImageRecord>>("preprocess.json");
const CONFIG = parseImageProcessorConfig(
  JSON.parse(readFileSync(join(TINY_MODEL, "processor_config.json"), "utf8")),
  "processor_config.json",
);
const SIZE = CONFIG.size;
// preprocess.json names the torchvision backend "default" (what Florence2Processor.from_pretrained loads).
const BACKENDS = [
  { mode: "pil", reference: "pil", resize: resizeBicubicPil },
  { mode: "torchvision", reference: "default", resize: resizeBicubicTorchvision },
] as const;

/** HF's uint8 image (pixel_values is an exact affine image of it), a plain 8-bit RGB PNG. */
async function referencePixels(name: string, backend: string): Promise<RgbImage> {
  return decodeImage(join(REFERENCE, "pixels", `${name}.${backend}.png`));
}

function compareBytes(actual: Uint8Array, expected: Uint8Array): { differing: number; maxDiff: number } {
  let differing = 0;
  let maxDiff = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (d !== 0) {
      differing++;
      if (d > maxDiff) maxDiff = d;
    }
  }
  return { differing, maxDiff };
}



test("the fixture has reference pixels and preprocess.json entries for every image", () => {
  assert.ok(IMAGES.length >= 11, `only ${IMAGES.length} images`);
  for (const name of IMAGES) {
    assert.ok(PREPROCESS[name], `preprocess.json lacks ${name}`);
    assert.equal(PREPROCESS[name]!.pil.shape, [3, SIZE.height, SIZE.width]);
  }
});

test("decodeImage gives each image's PIL size (EXIF orientation ignored)", async () => {
  for (const name of IMAGES) {
    const rgb = await decodeImage(join(REFERENCE, "images", name));
    assert.equal([rgb.width, rgb.height], PREPROCESS[name]!.size, name);
    assert.is(rgb.data.length, rgb.width * rgb.height * 3);
  }
});

for (const backend of BACKENDS) {
  test(`every image: decode + ${backend.mode} resize equals HF's ${backend.reference} uint8 image byte for byte`, async () => {
    const failures: string[] = [];
    const cache = createResizeCache();
    for (const name of IMAGES) {
      const rgb = await decodeImage(join(REFERENCE, "images", name));
      const resized = backend.resize(rgb, SIZE.width, SIZE.height, cache);
      const expected = await referencePixels(name, backend.reference);
      assert.equal([expected.width, expected.height], [SIZE.width, SIZE.height]);
      const { differing, maxDiff } = compareBytes(resized.data, expected.data);
      if (differing > 0) failures.push(`${name} (${PREPROCESS[name]!.mode}): ${differing} bytes differ, max ${maxDiff}`);
    }
    assert.equal(failures, [], `${failures.length} of ${IMAGES.length} images differ:\n${failures.join("\n")}`);
  });

  test(`every image: ${backend.mode} pixel values match HF's sum, first values and the float64 formula`, async () => {
    const cache = createResizeCache();
    const out = new Float32Array(3 * SIZE.height * SIZE.width);
    const plane = SIZE.height * SIZE.width;
    const failures: string[] = [];
    for (const name of IMAGES) {
      const rgb = await decodeImage(join(REFERENCE, "images", name));
      const values = pixelValues(rgb, CONFIG, { resize: backend.mode, cache }, out);
      assert.ok(values === out, "pixelValues must write into the given buffer");
      const record = PREPROCESS[name]![backend.reference];
      let sum = 0;
      for (let i = 0; i < values.length; i++) sum += values[i]!;
      if (Math.abs(sum - record.sum) > 1e-6 * Math.abs(record.sum) + 1e-3) {
        failures.push(`${name}: sum ${sum} vs HF ${record.sum}`);
      }
      record.first.forEach((v, i) => {
        if (Math.abs(values[i]! - v) > 1e-5) failures.push(`${name}: first[${i}] ${values[i]} vs HF ${v}`);
      });
      // Elementwise against (u8 · rescale_factor − mean) / std in float64, from HF's own uint8 image.
      const expected = await referencePixels(name, backend.reference);
      let worst = 0;
      for (let c = 0; c < 3; c++) {
        const mean = CONFIG.imageMean[c]!;
        const std = CONFIG.imageStd[c]!;
        for (let i = 0; i < plane; i++) {
          const want = (expected.data[i * 3 + c]! * CONFIG.rescaleFactor - mean) / std;
          const err = Math.abs(values[c * plane + i]! - want);
          if (err > worst) worst = err;
        }
      }
      if (worst > 1e-5) failures.push(`${name}: max elementwise error ${worst}`);
    }
    assert.equal(failures, [], failures.join("\n"));
  });
}

test("processor_config.json (nested) and the flat preprocessor_config.json give the same settings", () => {
  const flat = parseImageProcessorConfig(
    JSON.parse(readFileSync(join(REFERENCE, "variants", "preprocessor_config.json"), "utf8")),
    "preprocessor_config.json",
  );
  const expected: ImageProcessorConfig = {
    size: { height: 768, width: 768 },
    resample: 3,
    doResize: true,
    doRescale: true,
    rescaleFactor: 0.00392156862745098,
    doNormalize: true,
    imageMean: [0.485, 0.456, 0.406],
    imageStd: [0.229, 0.224, 0.225],
    doConvertRgb: true,
    doCenterCrop: false,
    cropSize: { height: 768, width: 768 },
  };
  assert.equal(CONFIG, expected);
  assert.equal(flat, expected);
});

test("bad processor settings: CONFIG_INVALID naming the file and the key", () => {
  const base = JSON.parse(readFileSync(join(REFERENCE, "variants", "preprocessor_config.json"), "utf8")) as Record<string, unknown>;
  const cases: [string, unknown, RegExp][] = [
    ["image_mean", [0.5, 0.5], /my_pre\.json: "image_mean"/],
    ["image_std", [0.2, 0, 0.2], /my_pre\.json: "image_std"/],
    ["size", { shortest_edge: 768 }, /my_pre\.json: "size"/],
    ["size", { height: 0, width: 768 }, /my_pre\.json: "size"/],
    ["rescale_factor", "1/255", /my_pre\.json: "rescale_factor"/],
    ["resample", 0, /my_pre\.json: "resample"/],
    ["do_normalize", "yes", /my_pre\.json: "do_normalize"/],
  ];
  for (const [key, value, pattern] of cases) {
    throwsCode(() => parseImageProcessorConfig({ ...base, [key]: value }, "my_pre.json"), "CONFIG_INVALID", pattern);
  }
  throwsCode(() => parseImageProcessorConfig([], "x.json"), "CONFIG_INVALID", /x\.json/);
  throwsCode(() => parseImageProcessorConfig({ image_processor: 3 }, "p.json"), "CONFIG_INVALID", /p\.json: "image_processor"/);
  const { size: _size, ...withoutSize } = base;
  throwsCode(() => parseImageProcessorConfig(withoutSize, "q.json"), "CONFIG_INVALID", /q\.json: "size" is missing/);
});

test("pixelValues: bad output buffer or image → INVALID_ARGUMENT; cache reuse gives identical results", async () => {
  const rgb = await decodeImage(join(REFERENCE, "images", "street.jpg"));
  throwsCode(() => pixelValues(rgb, CONFIG, {}, new Float32Array(10)), "INVALID_ARGUMENT", /output has 10 elements/);
  throwsCode(() => pixelValues({ width: 5, height: 5, data: new Uint8Array(10) }, CONFIG), "INVALID_ARGUMENT", /5x5/);
  throwsCode(
    () => pixelValues(rgb, CONFIG, { resize: "bogus" as "pil" }),
    "INVALID_ARGUMENT",
    /resize must be/,
  );
  const cache = createResizeCache();
  const a = pixelValues(rgb, CONFIG, { cache });
  const b = pixelValues(rgb, CONFIG, { cache });
  const fresh = pixelValues(rgb, CONFIG);
  assert.equal(Array.from(a.subarray(0, 4096)), Array.from(fresh.subarray(0, 4096)));
  assert.ok(a.every((v, i) => v === b[i] && v === fresh[i]));
});

test("resize \"fast\" (sharp's cubic) is approximate and needs a pre-resized image", async () => {
  const rgb = await decodeImage(join(REFERENCE, "images", "street.jpg"));
  throwsCode(() => pixelValues(rgb, CONFIG, { resize: "fast" }), "INVALID_ARGUMENT", /resizeWithSharp/);
  const resized = await resizeWithSharp(rgb, SIZE.width, SIZE.height);
  assert.equal([resized.width, resized.height], [SIZE.width, SIZE.height]);
  const fast = pixelValues(resized, CONFIG, { resize: "fast" });
  const exact = pixelValues(rgb, CONFIG, { resize: "pil" });
  // Close on average (sharp samples edges at slightly different positions, so single pixels at hard edges can
  // differ a lot): mean difference under 2 uint8 levels (one level ≈ 0.0175 after normalisation).
  let total = 0;
  for (let i = 0; i < fast.length; i++) total += Math.abs(fast[i]! - exact[i]!) * CONFIG.imageStd[Math.floor(i / (fast.length / 3))]! * 255;
  const meanLevels = total / fast.length;
  assert.ok(meanLevels < 2, `fast differs from exact by ${meanLevels} levels on average`);
  assert.ok(meanLevels > 0, "fast is expected to differ from HF's exact resize");
});

test("EXIF orientation: ignored by default like PIL.Image.open, honoured with exifOrientation: \"apply\"", async () => {
  const path = join(REFERENCE, "images", "exif_rotated.jpg");
  const ignored = await decodeImage(path);
  const applied = await decodeImage(path, { exifOrientation: "apply" });
  assert.equal([ignored.width, ignored.height], [400, 300]);
  assert.equal([applied.width, applied.height], [300, 400]);
  // Orientation 6: rotate 90° clockwise, so the top-left output pixel is the bottom-left source pixel.
  const src = (x: number, y: number) => Array.from(ignored.data.subarray((y * 400 + x) * 3, (y * 400 + x) * 3 + 3));
  const dst = (x: number, y: number) => Array.from(applied.data.subarray((y * 300 + x) * 3, (y * 300 + x) * 3 + 3));
  assert.equal(dst(0, 0), src(0, 299));
  assert.equal(dst(299, 0), src(0, 0));
  await rejects(decodeImage(path, { exifOrientation: "yes" as "apply" }), "INVALID_ARGUMENT", /exifOrientation/);
});

function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, body: Uint8Array): Uint8Array {
  const chunk = new Uint8Array(12 + body.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, body.length);
  for (let i = 0; i < 4; i++) chunk[4 + i] = type.charCodeAt(i);
  chunk.set(body, 8);
  view.setUint32(8 + body.length, crc32(chunk.subarray(4, 8 + body.length)));
  return chunk;
}

function pngClaiming(width: number, height: number): Uint8Array {
  const ihdr = new Uint8Array(13);
  const view = new DataView(ihdr.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const parts = [
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", new Uint8Array([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])),
    pngChunk("IEND", new Uint8Array(0)),
  ];
  return Buffer.concat(parts);
}

test("bad images: IMAGE_UNREADABLE / IMAGE_TOO_LARGE, naming the input, never a crash", async () => {
  const jpeg = new Uint8Array(readFileSync(join(REFERENCE, "images", "street.jpg")));
  await rejects(decodeImage(jpeg.subarray(0, Math.floor(jpeg.length / 2))), "IMAGE_UNREADABLE", /image data \(\d+ bytes\)/);
  await rejects(decodeImage(jpeg.subarray(0, 600)), "IMAGE_UNREADABLE", /cannot be decoded/);
  await rejects(decodeImage(new Uint8Array(0)), "IMAGE_UNREADABLE", /empty/);
  let seed = 12345;
  const noise = new Uint8Array(4096).map(() => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) & 255);
  await rejects(decodeImage(noise), "IMAGE_UNREADABLE", /cannot be decoded/);
  await rejects(decodeImage(new TextEncoder().encode("definitely not an image")), "IMAGE_UNREADABLE", /cannot be decoded/);
  await rejects(decodeImage(pngClaiming(100000, 100000)), "IMAGE_TOO_LARGE", /100000x100000/);
  await rejects(decodeImage(join(REFERENCE, "images", "street.jpg"), { maxPixels: 1000 }), "IMAGE_TOO_LARGE", /street\.jpg.*640x480/);
  await rejects(decodeImage(join(REFERENCE, "images", "no_such_image.png")), "IMAGE_UNREADABLE", /no_such_image\.png/);
  await rejects(decodeImage(join(REFERENCE, "preprocess.json")), "IMAGE_UNREADABLE", /preprocess\.json/);
  await rejects(decodeImage(jpeg, { maxPixels: 0 }), "INVALID_ARGUMENT", /maxPixels/);
});

test("pixelValues view: the planes stay in the cache's memory, equal to a copied result", async () => {
  const rgb = await decodeImage(join(REFERENCE, "images", "street.jpg"));
  const cache = createResizeCache();
  const copied = pixelValues(rgb, CONFIG, { cache });
  const view = pixelValues(rgb, CONFIG, { cache, view: true });
  assert.is(view.length, copied.length);
  assert.ok(view.every((v, i) => Object.is(v, copied[i])));
  assert.ok(cache.simd, "the WebAssembly kernels ran");
  assert.is(view.buffer, cache.simd!.memory.buffer, "no copy out of the kernels' memory");
  assert.ok(copied.buffer !== cache.simd!.memory.buffer);
  // without kernels (or without a cache) there is nothing to view: a new array
  const js = createResizeCache({ kernels: "js" });
  const fallback = pixelValues(rgb, CONFIG, { cache: js, view: true });
  assert.ok(fallback.every((v, i) => Object.is(v, copied[i])));
});

/** A JPEG segment: marker, big-endian length, payload. */
function segment(marker: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  out.set([0xff, marker, (payload.length + 2) >> 8, (payload.length + 2) & 255]);
  out.set(payload, 4);
  return out;
}

/** `jpeg` with `extra` inserted right after SOI, as files with big EXIF/XMP/ICC segments have. */
function withSegmentsAfterSoi(jpeg: Uint8Array, ...extra: Uint8Array[]): Uint8Array {
  return Buffer.concat([jpeg.subarray(0, 2), ...extra, jpeg.subarray(2)]);
}

test("JPEG header read without sharp: the size and colour space libvips reports, or no answer", async () => {
  const raw = new Uint8Array(37 * 23 * 3).map((_, i) => (i * 37) & 255);
  const rgb = new Uint8Array(await sharp(raw, { raw: { width: 37, height: 23, channels: 3 } }).jpeg({ quality: 90 }).toBuffer());
  const progressive = new Uint8Array(await sharp(raw, { raw: { width: 37, height: 23, channels: 3 } }).jpeg({ progressive: true }).toBuffer());
  const grey = new Uint8Array(await sharp(raw, { raw: { width: 37, height: 23, channels: 3 } }).greyscale().jpeg().toBuffer());
  const cmyk = new Uint8Array(readFileSync(join(REFERENCE, "images", "cmyk.jpg")));
  // 100 kB of APP1 and APP2 segments ahead of the frame header, plus fill bytes before a marker
  const padded = withSegmentsAfterSoi(rgb, segment(0xe1, new Uint8Array(60000)), segment(0xe2, new Uint8Array(40000)), new Uint8Array([0xff]));
  for (const [name, bytes] of [["baseline", rgb], ["progressive", progressive], ["grey", grey], ["padded", padded]] as const) {
    const header = jpegHeader(bytes);
    const metadata = await sharp(bytes).metadata();
    assert.ok(header, name);
    assert.equal([header.width, header.height, header.space, header.depth], [metadata.width, metadata.height, metadata.space, metadata.depth], name);
  }
  assert.is(jpegHeader(cmyk), undefined, "CMYK goes through sharp's metadata");
  assert.is(jpegHeader(rgb.subarray(0, 10)), undefined, "truncated before the frame header");
  assert.is(jpegHeader(new Uint8Array(readFileSync(join(REFERENCE, "images", "gray.png")))), undefined, "not a JPEG");
  assert.is(jpegHeader(join(REFERENCE, "images", "no_such_image.jpg")), undefined);
  const fromPath = jpegHeader(join(REFERENCE, "images", "street.jpg"));
  assert.equal(fromPath, { width: 640, height: 480, space: "srgb", depth: "uchar" });

  // decoded through the header path: grey is replicated, colour equals sharp's own raw decode
  const decodedGrey = await decodeImage(grey);
  const greySamples = new Uint8Array(await sharp(grey).toColourspace("b-w").raw().toBuffer());
  assert.is(decodedGrey.data.length, 37 * 23 * 3);
  assert.ok(greySamples.every((g, i) => decodedGrey.data[3 * i] === g && decodedGrey.data[3 * i + 1] === g && decodedGrey.data[3 * i + 2] === g));
  const decodedPadded = await decodeImage(padded);
  const colour = new Uint8Array(await sharp(rgb).raw().toBuffer());
  assert.equal(Array.from(decodedPadded.data), Array.from(colour));
});

test("timing: pixelValues for a 640x480 frame (median of 20 runs)", async () => {
  const rgb = await decodeImage(join(REFERENCE, "images", "street.jpg"));
  assert.equal([rgb.width, rgb.height], [640, 480]);
  const cache = createResizeCache();
  const out = new Float32Array(3 * SIZE.height * SIZE.width);
  const lines: string[] = [];
  for (const mode of ["pil", "torchvision"] as const) {
    pixelValues(rgb, CONFIG, { resize: mode, cache }, out);
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const start = performance.now();
      pixelValues(rgb, CONFIG, { resize: mode, cache }, out);
      times.push(performance.now() - start);
    }
    times.sort((a, b) => a - b);
    lines.push(`${mode} ${((times[9]! + times[10]!) / 2).toFixed(2)} ms`);
  }
  console.log(`  pixelValues 640x480 → 3x${SIZE.height}x${SIZE.width}, median of 20: ${lines.join(", ")}`);
});

test.run();
