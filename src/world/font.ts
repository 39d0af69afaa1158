/**
 * Words in DejaVu Sans Bold, as outlines: the world's only font (shipped in assets/fonts so that every install
 * draws the same glyphs). Glyphs are laid out by their advance widths, left to right on one baseline, without
 * kerning or ligatures (the world's words are plain upper-case ASCII).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import opentype from "opentype.js";
import { FlorenceError } from "../errors.ts";
import { packageRoot } from "../paths.ts";
import { type Box, type Polygon, polygonBox } from "./geometry.ts";

export const WORLD_FONT_FILE = "DejaVuSans-Bold.ttf";

export interface WordOutline {
  /** Closed contours, flattened (filled with the non-zero rule), baseline origin at (0, 0). */
  contours: Polygon[];
  /** The same outline with its curves, as SVG path data (baseline origin at (0, 0)). */
  pathData: string;
  /** The tight box of the ink relative to the baseline origin. */
  ink: Box;
}

export interface WorldFont {
  outline(word: string, fontSize: number): WordOutline;
}

/** Loads the world's font from `<package>/assets/fonts` (or `file`). */
export function loadWorldFont(file = join(packageRoot(), "assets", "fonts", WORLD_FONT_FILE)): WorldFont {
  let font: opentype.Font;
  try {
    const bytes = readFileSync(file);
    font = opentype.parse(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  } catch (err) {
    throw new FlorenceError("ASSET_MISSING", `cannot read the shapes world's font ${file}: ${(err as Error).message}`, {
      fix: `reinstall florence-edge (the package ships assets/fonts/${WORLD_FONT_FILE}) or install Debian's fonts-dejavu-core and pass its file`,
    });
  }
  const cache = new Map<string, WordOutline>();
  return {
    outline(word: string, fontSize: number): WordOutline {
      const key = `${word}@${fontSize}`;
      let hit = cache.get(key);
      if (!hit) {
        hit = layoutWord(font, word, fontSize);
        if (cache.size > 512) cache.clear();
        cache.set(key, hit);
      }
      return hit;
    },
  };
}

function layoutWord(font: opentype.Font, word: string, fontSize: number): WordOutline {
  const scale = fontSize / font.unitsPerEm;
  const contours: Polygon[] = [];
  const path: string[] = [];
  let penX = 0;
  for (const ch of word) {
    const glyph = font.charToGlyph(ch);
    const commands = glyph.getPath(penX, 0, fontSize).commands;
    flatten(commands, contours);
    for (const c of commands) path.push(svgCommand(c));
    penX += (glyph.advanceWidth ?? 0) * scale;
  }
  const all = contours.flat();
  if (all.length === 0) throw new FlorenceError("INVALID_ARGUMENT", `the font has no ink for ${JSON.stringify(word)}`, { fix: "use one of the world's words" });
  return { contours, pathData: path.join(""), ink: polygonBox(all) };
}

function svgCommand(c: opentype.PathCommand): string {
  const n = (v: number) => Number(v.toFixed(3));
  switch (c.type) {
    case "M":
    case "L":
      return `${c.type}${n(c.x)} ${n(c.y)}`;
    case "Q":
      return `Q${n(c.x1)} ${n(c.y1)} ${n(c.x)} ${n(c.y)}`;
    case "C":
      return `C${n(c.x1)} ${n(c.y1)} ${n(c.x2)} ${n(c.y2)} ${n(c.x)} ${n(c.y)}`;
    case "Z":
      return "Z";
  }
}

/** Curves to line segments, fine enough that no flattened point strays 0.05 px from the curve. */
function flatten(commands: readonly opentype.PathCommand[], out: Polygon[]): void {
  let current: Polygon = [];
  let x = 0;
  let y = 0;
  const close = () => {
    if (current.length >= 6) out.push(current);
    current = [];
  };
  for (const c of commands) {
    if (c.type === "M") {
      close();
      current.push(c.x, c.y);
      x = c.x;
      y = c.y;
    } else if (c.type === "L") {
      current.push(c.x, c.y);
      x = c.x;
      y = c.y;
    } else if (c.type === "Q" || c.type === "C") {
      const span = Math.hypot(c.x - x, c.y - y) + Math.hypot(c.x1 - x, c.y1 - y);
      const steps = Math.max(2, Math.ceil(Math.sqrt(span / 0.2)));
      for (let i = 1; i <= steps; i++) {
        const t = i / steps;
        const u = 1 - t;
        if (c.type === "Q") {
          current.push(u * u * x + 2 * u * t * c.x1 + t * t * c.x, u * u * y + 2 * u * t * c.y1 + t * t * c.y);
        } else {
          current.push(
            u * u * u * x + 3 * u * u * t * c.x1 + 3 * u * t * t * c.x2 + t * t * t * c.x,
            u * u * u * y + 3 * u * u * t * c.y1 + 3 * u * t * t * c.y2 + t * t * t * c.y,
          );
        }
      }
      x = c.x;
      y = c.y;
    } else {
      close();
    }
  }
  close();
}
