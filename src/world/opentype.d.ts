// The part of opentype.js (which ships no type declarations) that the world's font module uses.
declare module "opentype.js" {
  namespace opentype {
    type PathCommand =
      | { type: "M" | "L"; x: number; y: number }
      | { type: "Q"; x1: number; y1: number; x: number; y: number }
      | { type: "C"; x1: number; y1: number; x2: number; y2: number; x: number; y: number }
      | { type: "Z" };
    interface Path {
      commands: PathCommand[];
    }
    interface Glyph {
      advanceWidth?: number;
      getPath(x: number, y: number, fontSize: number): Path;
    }
    interface Font {
      unitsPerEm: number;
      charToGlyph(ch: string): Glyph;
    }
  }
  const opentype: { parse(buffer: ArrayBuffer): opentype.Font };
  export default opentype;
}
