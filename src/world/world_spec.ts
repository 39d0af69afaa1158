/**
 * The shapes world, v1 (`shared/shapes-world.md`): every constant of the contract, in one place.
 * Geometry, colours, words and ranges here are the spec's; nothing else in src/world/ restates them.
 */
export const WORLD_VERSION = 1;

/** W × H of every image the world draws. */
export const IMAGE_SIZES: ReadonlyArray<readonly [number, number]> = [[640, 480], [480, 640], [768, 768], [1280, 720], [320, 240]];

export const SHAPE_NAMES = ["circle", "square", "triangle", "star"] as const;
export type ShapeName = (typeof SHAPE_NAMES)[number];

/** Exact sRGB fills. */
export const COLOURS = {
  red: [220, 40, 40],
  green: [40, 170, 60],
  blue: [40, 90, 220],
  yellow: [240, 200, 40],
  purple: [150, 60, 190],
  orange: [250, 130, 30],
} as const satisfies Record<string, readonly [number, number, number]>;
export type ColourName = keyof typeof COLOURS;
export const COLOUR_NAMES = Object.keys(COLOURS) as ColourName[];

export const WORDS = [
  "STOP", "EXIT", "OPEN", "PARK", "GATE", "DOOR", "SHOP", "CAFE", "TAXI", "HOTEL", "POLICE", "BUS", "TRAIN", "BANK", "PUSH", "PULL",
  "WAIT", "SLOW", "LEFT", "RIGHT", "NORTH", "SOUTH", "EAST", "WEST", "ZONE", "AREA", "DOCK", "LOAD", "FIRE", "WATER", "POWER", "GAS",
] as const;

export const SHAPES_PER_IMAGE = [1, 4] as const;
export const WORDS_PER_IMAGE = [0, 2] as const;
/** Shape size d as a fraction of min(W, H). */
export const SHAPE_SIZE = [0.08, 0.35] as const;
/** Font size as a fraction of H. */
export const FONT_SIZE = [0.05, 0.11] as const;
export const GREY_RANGE = [30, 225] as const;
export const NOISE_SIGMA = 8;
/** The boxes of any two objects are at least this far apart (pixels). */
export const MIN_GAP = 6;
/** Every box lies at least this far inside the image (pixels). */
export const MIN_MARGIN = 4;
export const JPEG_QUALITY = [80, 95] as const;
/** A star's inner radius as a fraction of d (its outer radius is d / 2). */
export const STAR_INNER = 0.2;
/** Words are black where the background's grey under them is above this, else white. */
export const WORD_INK_THRESHOLD = 128;
/** The spec asks for 24 or more points on a circle's ground-truth polygon. */
export const CIRCLE_POLYGON_POINTS = 32;
