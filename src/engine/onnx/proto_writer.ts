/**
 * ONNX protobuf encoding: ModelProto → bytes, writing back the fields proto.ts keeps verbatim (Preserved) so that a
 * parsed and re-serialized model keeps everything this code does not read.
 */
import type { AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetId, Preserved, StringStringEntry, TensorProto, TensorShape, TensorTypeProto, TypeProto, ValueInfo } from "./proto.ts";
import { WIRE_LEN, WIRE_VARINT } from "./proto.ts";

const utf8Encoder = new TextEncoder();

// ---------------------------------------------------------------------------------------------------------------
// Encoding

/** Payloads at least this long are referenced, not copied, until the final concatenation. */
const BIG_CHUNK = 4096;

class Writer {
  readonly #chunks: Uint8Array[] = [];
  #buf = new Uint8Array(256);
  #pos = 0;
  #flushed = 0;

  get length(): number {
    return this.#flushed + this.#pos;
  }

  #reserve(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.#pos + n));
    grown.set(this.#buf.subarray(0, this.#pos));
    this.#buf = grown;
  }

  #flush(): void {
    if (this.#pos === 0) return;
    this.#chunks.push(this.#buf.subarray(0, this.#pos));
    this.#flushed += this.#pos;
    this.#buf = new Uint8Array(256);
    this.#pos = 0;
  }

  varint(value: number): void {
    this.#reserve(10);
    const buf = this.#buf;
    if (value >= 0 && value < 0x80000000) {
      let v = value;
      while (v > 0x7f) {
        buf[this.#pos++] = (v & 0x7f) | 0x80;
        v >>>= 7;
      }
      buf[this.#pos++] = v;
      return;
    }
    this.varintBig(BigInt(value));
  }

  varintBig(value: bigint): void {
    this.#reserve(10);
    let v = BigInt.asUintN(64, value);
    while (v > 0x7fn) {
      this.#buf[this.#pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.#buf[this.#pos++] = Number(v);
  }

  tag(field: number, wireType: number): void {
    this.varint(field * 8 + wireType);
  }

  raw(bytes: Uint8Array): void {
    if (bytes.length >= BIG_CHUNK) {
      this.#flush();
      this.#chunks.push(bytes);
      this.#flushed += bytes.length;
      return;
    }
    this.#reserve(bytes.length);
    this.#buf.set(bytes, this.#pos);
    this.#pos += bytes.length;
  }

  lengthDelimited(field: number, bytes: Uint8Array): void {
    this.tag(field, WIRE_LEN);
    this.varint(bytes.length);
    this.raw(bytes);
  }

  string(field: number, value: string): void {
    this.lengthDelimited(field, utf8Encoder.encode(value));
  }

  message(field: number, write: (w: Writer) => void): void {
    const inner = new Writer();
    write(inner);
    this.tag(field, WIRE_LEN);
    this.varint(inner.length);
    inner.#flush();
    for (const chunk of inner.#chunks) this.raw(chunk);
  }

  finish(): Uint8Array {
    this.#flush();
    if (this.#chunks.length === 1) return this.#chunks[0]!;
    const out = new Uint8Array(this.#flushed);
    let at = 0;
    for (const chunk of this.#chunks) {
      out.set(chunk, at);
      at += chunk.length;
    }
    return out;
  }
}

type FieldWriters = Map<number, (w: Writer) => void>;

/** Writes known fields and preserved ones grouped by field number, in the order the input had them. */
function writeMessage(w: Writer, message: Preserved, known: FieldWriters): void {
  const done = new Set<number>();
  const emit = (field: number): void => {
    if (done.has(field)) return;
    done.add(field);
    known.get(field)?.(w);
    for (const raw of message.unknownFields) if (raw.fieldNumber === field) w.raw(raw.bytes);
  };
  for (const field of message.fieldOrder) emit(field);
  for (const field of [...known.keys()].sort((a, b) => a - b)) emit(field);
  for (const raw of message.unknownFields) emit(raw.fieldNumber);
}

function fields(entries: [number, ((w: Writer) => void) | false | undefined][]): FieldWriters {
  const map: FieldWriters = new Map();
  for (const [field, write] of entries) if (write) map.set(field, write);
  return map;
}

function optString(field: number, value: string | undefined) {
  return value === undefined ? undefined : (w: Writer) => w.string(field, value);
}

function optVarint(field: number, value: number | undefined) {
  return value === undefined ? undefined : (w: Writer) => (w.tag(field, WIRE_VARINT), w.varint(value));
}

function repeated<T>(field: number, values: readonly T[], write: (w: Writer, value: T) => void) {
  return values.length === 0 ? undefined : (w: Writer) => {
    for (const value of values) w.message(field, (inner) => write(inner, value));
  };
}

function writeEntry(w: Writer, m: StringStringEntry): void {
  writeMessage(w, m, fields([[1, optString(1, m.key)], [2, optString(2, m.value)]]));
}

function writeOperatorSetId(w: Writer, m: OperatorSetId): void {
  writeMessage(w, m, fields([[1, optString(1, m.domain)], [2, optVarint(2, m.version)]]));
}

function writeDimension(w: Writer, m: Dimension): void {
  writeMessage(w, m, fields([[1, optVarint(1, m.dimValue)], [2, optString(2, m.dimParam)]]));
}

function writeShape(w: Writer, m: TensorShape): void {
  writeMessage(w, m, fields([[1, repeated(1, m.dim, writeDimension)]]));
}

function writeTensorType(w: Writer, m: TensorTypeProto): void {
  const shape = m.shape;
  writeMessage(w, m, fields([[1, optVarint(1, m.elemType)], [2, shape && ((w2: Writer) => w2.message(2, (i) => writeShape(i, shape)))]]));
}

function writeType(w: Writer, m: TypeProto): void {
  const tensorType = m.tensorType;
  writeMessage(w, m, fields([[1, tensorType && ((w2: Writer) => w2.message(1, (i) => writeTensorType(i, tensorType)))]]));
}

function writeValueInfo(w: Writer, m: ValueInfo): void {
  const type = m.type;
  writeMessage(w, m, fields([[1, optString(1, m.name)], [2, type && ((w2: Writer) => w2.message(2, (i) => writeType(i, type)))]]));
}

function writeTensor(w: Writer, m: TensorProto): void {
  const dims =
    m.dims.length === 0
      ? undefined
      : m.dimsPacked
        ? (w2: Writer) => {
            const inner = new Writer();
            for (const d of m.dims) inner.varint(d);
            w2.lengthDelimited(1, inner.finish());
          }
        : (w2: Writer) => {
            for (const d of m.dims) (w2.tag(1, WIRE_VARINT), w2.varint(d));
          };
  const raw = m.rawData;
  writeMessage(
    w,
    m,
    fields([
      [1, dims],
      [2, optVarint(2, m.dataType)],
      [8, optString(8, m.name)],
      [9, raw && ((w2: Writer) => w2.lengthDelimited(9, raw))],
      [13, repeated(13, m.externalData, writeEntry)],
      [14, optVarint(14, m.dataLocation)],
    ]),
  );
}

function writeAttribute(w: Writer, m: AttributeProto): void {
  const { t, g, i } = m;
  writeMessage(
    w,
    m,
    fields([
      [1, optString(1, m.name)],
      [3, i !== undefined && ((w2: Writer) => (w2.tag(3, WIRE_VARINT), w2.varintBig(i)))],
      [5, t && ((w2: Writer) => w2.message(5, (inner) => writeTensor(inner, t)))],
      [6, g && ((w2: Writer) => w2.message(6, (inner) => writeGraph(inner, g)))],
      [11, repeated(11, m.graphs, writeGraph)],
      [20, optVarint(20, m.type)],
    ]),
  );
}

function writeNode(w: Writer, m: NodeProto): void {
  writeMessage(
    w,
    m,
    fields([
      [1, m.input.length > 0 && ((w2: Writer) => m.input.forEach((s) => w2.string(1, s)))],
      [2, m.output.length > 0 && ((w2: Writer) => m.output.forEach((s) => w2.string(2, s)))],
      [3, optString(3, m.name)],
      [4, optString(4, m.opType)],
      [5, repeated(5, m.attribute, writeAttribute)],
      [7, optString(7, m.domain)],
    ]),
  );
}

function writeGraph(w: Writer, m: GraphProto): void {
  writeMessage(
    w,
    m,
    fields([
      [1, repeated(1, m.node, writeNode)],
      [2, optString(2, m.name)],
      [5, repeated(5, m.initializer, writeTensor)],
      [11, repeated(11, m.input, writeValueInfo)],
      [12, repeated(12, m.output, writeValueInfo)],
      [13, repeated(13, m.valueInfo, writeValueInfo)],
      [15, m.sparseInitializer.length > 0 && ((w2: Writer) => m.sparseInitializer.forEach((s) => w2.lengthDelimited(15, s)))],
    ]),
  );
}

/** Serialises a ModelProto. Unchanged parts come out exactly as they were read. */
export function serializeModel(model: ModelProto): Uint8Array {
  const w = new Writer();
  const graph = model.graph;
  writeMessage(
    w,
    model,
    fields([
      [1, optVarint(1, model.irVersion)],
      [7, graph && ((w2: Writer) => w2.message(7, (inner) => writeGraph(inner, graph)))],
      [8, repeated(8, model.opsetImport, writeOperatorSetId)],
    ]),
  );
  return w.finish();
}
