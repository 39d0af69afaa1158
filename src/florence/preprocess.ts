/**
 * Florence-2's image processor settings and pixel_values, as Hugging Face transformers 5.17 computes them:
 * resize (see resize.ts) → rescale × rescale_factor → normalise with image_mean / image_std → float32 CHW.
 *
 * The float arithmetic follows each HF backend exactly:
 *   - "pil" (CLIPImageProcessorPil): x = float32(u8 · rescale_factor computed in float64), then
 *     float32((x − mean) / std) in float32.
 *   - "torchvision" (CLIPImageProcessor, the default of Florence2Processor.from_pretrained): rescale is fused into
 *     normalise, float32((u8 − mean′) / std′) with mean′ = float32(mean · float32(1 / rescale_factor)), likewise std′.
 * Every uint8 level maps to one float, so a 3 × 256 table per call replaces per-pixel arithmetic.
 */
import { FlorenceError, describeValue } from "../errors.ts";
import { isRecord, readBoolean, reject, type Where } from "../validate.ts";
import {
  type RgbImage,
  type ResampleFilter,
  type ResizeCache,
  createResizeCache,
  levelsToPlanes,
  resampleRgbInCache,
} from "./resize.ts";

export type ImageSize = { height: number; width: number };

export type ImageProcessorConfig = {
  size: ImageSize;
  /** PIL resampling code: 1 lanczos, 2 bilinear, 3 bicubic (Florence-2), 4 box, 5 hamming. */
  resample: number;
  doResize: boolean;
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
  /** Informational: decodeImage always converts to RGB (PIL convert("RGB")), which is what Florence-2 needs. */
  doConvertRgb: boolean;
  doCenterCrop: boolean;
  cropSize: ImageSize;
};

/** "pil" and "torchvision" are exact; "fast" expects an image already resized by image.ts resizeWithSharp. */
export type ResizeMode = "pil" | "torchvision" | "fast";

export type PixelValuesOptions = {
  /** Which HF backend to reproduce; default "pil". */
  resize?: ResizeMode;
  /** Coefficient tables and scratch buffers to reuse across frames (see createResizeCache). */
  cache?: ResizeCache;
  /**
   * With a `cache` and no output array: return a view into the cache's kernel memory rather than a new array, which
   * saves allocating and copying 3 × H × W floats per frame. The view is valid until the cache is next used.
   */
  view?: boolean;
};

const RESAMPLE_FILTERS: Record<number, ResampleFilter> = { 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming" };

// CLIPImageProcessor's class defaults, which HF uses for keys a config file leaves out (or sets to null).
const OPENAI_CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

// The processor config's wording on the shared checks (validate.ts): `<file>: "size" must be …, got …`.
function setting(source: string, key: string, fix?: string): Where {
  return { name: `${source}: "${key}"`, code: "CONFIG_INVALID", separator: " ", fix };
}

function configError(source: string, key: string, problem: string, value: unknown, fix: string): never {
  return reject(setting(source, key), problem, { value, fix });
}

function readFlag(settings: Record<string, unknown>, key: string, fallback: boolean, source: string): boolean {
  return readBoolean(setting(source, key, `set "${key}" to true or false`), settings[key] ?? undefined, fallback);
}

function readSize(settings: Record<string, unknown>, key: string, fallback: ImageSize, source: string): ImageSize {
  const value = settings[key];
  if (value === undefined || value === null) return fallback;
  const fix = `set "${key}" to {"height": 768, "width": 768} (florence-edge supports explicit height and width only)`;
  if (!isRecord(value)) configError(source, key, "must be an object with height and width", value, fix);
  const { height, width } = value;
  for (const side of [height, width]) {
    if (typeof side !== "number" || !Number.isInteger(side) || side < 1 || side > 16384) {
      configError(source, key, "must have integer height and width from 1 to 16384", value, fix);
    }
  }
  return { height: height as number, width: width as number };
}

function readTriple(
  settings: Record<string, unknown>,
  key: string,
  fallback: [number, number, number],
  source: string,
  nonZero: boolean,
): [number, number, number] {
  const value = settings[key];
  if (value === undefined || value === null) return fallback;
  const fix = `set "${key}" to three numbers, one per RGB channel`;
  const list = typeof value === "number" ? [value, value, value] : value;
  if (!Array.isArray(list) || list.length !== 3) configError(source, key, "must be a number or a list of 3 numbers", value, fix);
  for (const item of list) {
    if (typeof item !== "number" || !Number.isFinite(item) || (nonZero && item === 0)) {
      configError(source, key, nonZero ? "must hold finite non-zero numbers" : "must hold finite numbers", value, fix);
    }
  }
  return [list[0] as number, list[1] as number, list[2] as number];
}

/**
 * Reads the image processor settings from processor_config.json (HF-native, nested under "image_processor") or
 * preprocessor_config.json (flat, Microsoft / onnx-community form). `source` names the file in error messages.
 */
export function parseImageProcessorConfig(json: unknown, source: string): ImageProcessorConfig {
  if (!isRecord(json)) {
    throw new FlorenceError("CONFIG_INVALID", `${source}: expected a JSON object, got ${describeValue(json)}`, {
      fix: "use the processor_config.json or preprocessor_config.json shipped with the model",
    });
  }
  const nested = json["image_processor"];
  if (nested !== undefined && !isRecord(nested)) {
    configError(source, "image_processor", "must be an object", nested, "restore the model's processor_config.json");
  }
  const settings = nested ?? json;

  const resample = settings["resample"] ?? 3;
  if (typeof resample !== "number" || !(resample in RESAMPLE_FILTERS)) {
    configError(source, "resample", "must be a PIL resampling code 1 to 5 (3 = bicubic; nearest is not supported)",
      resample, 'set "resample" to 3');
  }

  const rescaleFactor = settings["rescale_factor"] ?? 1 / 255;
  if (typeof rescaleFactor !== "number" || !Number.isFinite(rescaleFactor) || rescaleFactor <= 0) {
    configError(source, "rescale_factor", "must be a positive number", rescaleFactor,
      'set "rescale_factor" to 0.00392156862745098 (1/255)');
  }

  const size = settings["size"];
  if (size === undefined || size === null) {
    configError(source, "size", "is missing", size, 'add "size": {"height": 768, "width": 768}');
  }

  return {
    size: readSize(settings, "size", { height: 768, width: 768 }, source),
    resample,
    doResize: readFlag(settings, "do_resize", true, source),
    doRescale: readFlag(settings, "do_rescale", true, source),
    rescaleFactor,
    doNormalize: readFlag(settings, "do_normalize", true, source),
    imageMean: readTriple(settings, "image_mean", OPENAI_CLIP_MEAN, source, false),
    imageStd: readTriple(settings, "image_std", OPENAI_CLIP_STD, source, true),
    doConvertRgb: readFlag(settings, "do_convert_rgb", true, source),
    doCenterCrop: readFlag(settings, "do_center_crop", true, source),
    cropSize: readSize(settings, "crop_size", { height: 224, width: 224 }, source),
  };
}

function invalidArgument(message: string, fix: string): FlorenceError {
  return new FlorenceError("INVALID_ARGUMENT", message, { fix });
}

/** The float32 value HF gives each uint8 level of each channel, laid out channel × 256. */
function levelTable(config: ImageProcessorConfig, mode: ResizeMode): Float32Array {
  const table = new Float32Array(3 * 256);
  const f = Math.fround;
  const factor = config.rescaleFactor;
  for (let c = 0; c < 3; c++) {
    const mean = f(config.imageMean[c]!);
    const std = f(config.imageStd[c]!);
    for (let v = 0; v < 256; v++) {
      let value: number;
      if (mode === "torchvision") {
        if (config.doRescale && config.doNormalize) {
          const inverse = f(1 / factor);
          value = f(f(v - f(mean * inverse)) / f(std * inverse));
        } else if (config.doNormalize) {
          value = f(f(v - mean) / std);
        } else if (config.doRescale) {
          value = f(v * f(factor));
        } else {
          value = v;
        }
      } else {
        const scaled = config.doRescale ? f(v * factor) : v;
        value = config.doNormalize ? f(f(scaled - mean) / std) : scaled;
      }
      table[c * 256 + v] = value;
    }
  }
  return table;
}

/** Output height and width of pixelValues for an image of the given size. */
export function pixelValuesSize(config: ImageProcessorConfig, image: { width: number; height: number }): ImageSize {
  const resized = config.doResize ? config.size : { height: image.height, width: image.width };
  return config.doCenterCrop ? config.cropSize : resized;
}

/**
 * HF `pixel_values[0]` for one decoded RGB image: float32, channel-major (3 × H × W). Writes into `out` when given
 * (it must have exactly 3 × H × W elements) so a camera loop allocates nothing per frame.
 */
export function pixelValues(
  rgb: RgbImage,
  config: ImageProcessorConfig,
  options: PixelValuesOptions = {},
  out?: Float32Array,
): Float32Array {
  const mode = options.resize ?? "pil";
  if (mode !== "pil" && mode !== "torchvision" && mode !== "fast") {
    throw invalidArgument(`pixelValues: resize must be "pil", "torchvision" or "fast", got ${describeValue(mode)}`,
      'use "pil" (transformers 4.x / CLIPImageProcessorPil) or "torchvision" (transformers 5 default)');
  }
  if (!Number.isInteger(rgb.width) || !Number.isInteger(rgb.height) || rgb.width < 1 || rgb.height < 1 ||
    rgb.data.length < rgb.width * rgb.height * 3) {
    throw invalidArgument(`pixelValues: image is not ${rgb.width}x${rgb.height} HWC RGB (${rgb.data.length} bytes)`,
      "pass the RgbImage returned by decodeImage");
  }
  const cache = options.cache ?? createResizeCache();

  let image = rgb;
  if (config.doResize && (rgb.width !== config.size.width || rgb.height !== config.size.height)) {
    if (mode === "fast") {
      throw invalidArgument(
        `pixelValues: resize "fast" needs the image already at ${config.size.width}x${config.size.height}, got ${rgb.width}x${rgb.height}`,
        "call resizeWithSharp(image, width, height) from image.ts first (it is asynchronous), or use resize \"pil\"",
      );
    }
    const filter = RESAMPLE_FILTERS[config.resample];
    if (!filter || (mode === "torchvision" && filter !== "bicubic" && filter !== "bilinear")) {
      throw new FlorenceError("CONFIG_INVALID", `resample ${config.resample} is not supported with resize "${mode}"`, {
        fix: 'use resample 3 (bicubic), or resize "pil" for lanczos, box and hamming',
      });
    }
    image = resampleRgbInCache(rgb, config.size.width, config.size.height, mode, filter, cache);
  }

  let top = 0;
  let left = 0;
  let height = image.height;
  let width = image.width;
  if (config.doCenterCrop) {
    const crop = config.cropSize;
    if (crop.height > image.height || crop.width > image.width) {
      throw new FlorenceError("CONFIG_INVALID",
        `center crop ${crop.width}x${crop.height} is larger than the ${image.width}x${image.height} image`, {
          fix: 'set "do_center_crop" to false (Florence-2 does not crop) or a crop_size no larger than size',
        });
    }
    // HF: (H - h) // 2 (numpy) and int((H - h) / 2.0) (torchvision) agree for non-negative sizes.
    top = Math.floor((image.height - crop.height) / 2);
    left = Math.floor((image.width - crop.width) / 2);
    height = crop.height;
    width = crop.width;
  }

  const plane = width * height;
  if (out && out.length !== 3 * plane) {
    throw invalidArgument(`pixelValues: output has ${out.length} elements, needs 3 × ${height} × ${width} = ${3 * plane}`,
      "allocate new Float32Array(3 * height * width) once and reuse it");
  }
  const target = out ?? (options.view && options.cache ? null : new Float32Array(3 * plane));
  return levelsToPlanes(image, { top, left, width, height }, levelTable(config, mode), target, cache);
}
