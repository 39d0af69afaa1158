/**
 * A minimal reader for the ONNX protobuf (onnx.proto, proto2; the writer is proto_writer.ts): ModelProto, GraphProto, NodeProto,
 * AttributeProto, TensorProto, ValueInfoProto and the type/shape messages they hold. Only the fields graph surgery
 * needs are decoded; every other field is kept as its original bytes and written back unchanged, in the position
 * its field number had in the input. Optional scalars keep proto2 presence (undefined = absent), so parsing and
 * serialising an unchanged model gives the input back byte for byte.
 *
 * Large payloads (raw_data) stay views into the input buffer: nothing is copied until serialisation.
 */
import { FlorenceError } from "../../errors.ts";

/** ONNX TensorProto.DataType values used here. */
export const DataType = {
  UNDEFINED: 0,
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;

/** ONNX AttributeProto.AttributeType values used here. */
export const AttributeType = {
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  GRAPHS: 10,
} as const;

/** TensorProto.DataLocation.EXTERNAL: the tensor's bytes live in another file. */
export const DATA_LOCATION_EXTERNAL = 1;

/** A field this reader does not decode: its number and its complete encoding (tag included). */
export interface RawField {
  readonly fieldNumber: number;
  readonly bytes: Uint8Array;
}

/** What every decoded message carries so that it serialises back as it was read. */
export interface Preserved {
  /** Fields not decoded, in input order. */
  unknownFields: RawField[];
  /** Field numbers in the order they first appeared in the input; empty for messages built in code. */
  fieldOrder: number[];
}

export interface StringStringEntry extends Preserved {
  key?: string;
  value?: string;
}

export interface OperatorSetId extends Preserved {
  domain?: string;
  version?: number;
}

export interface Dimension extends Preserved {
  dimValue?: number;
  dimParam?: string;
}

export interface TensorShape extends Preserved {
  dim: Dimension[];
}

export interface TensorTypeProto extends Preserved {
  elemType?: number;
  /** Absent: unknown rank. Present with no dims: a scalar. */
  shape?: TensorShape;
}

export interface TypeProto extends Preserved {
  tensorType?: TensorTypeProto;
}

export interface ValueInfo extends Preserved {
  name?: string;
  type?: TypeProto;
}

export interface TensorProto extends Preserved {
  dims: number[];
  /** Whether dims were written packed (proto2 writers normally do not). */
  dimsPacked: boolean;
  dataType?: number;
  name?: string;
  rawData?: Uint8Array;
  externalData: StringStringEntry[];
  dataLocation?: number;
}

export interface AttributeProto extends Preserved {
  name?: string;
  type?: number;
  i?: bigint;
  t?: TensorProto;
  g?: GraphProto;
  graphs: GraphProto[];
}

export interface NodeProto extends Preserved {
  input: string[];
  output: string[];
  name?: string;
  opType?: string;
  domain?: string;
  attribute: AttributeProto[];
}

export interface GraphProto extends Preserved {
  node: NodeProto[];
  name?: string;
  initializer: TensorProto[];
  /** SparseTensorProto payloads, kept encoded; `sparseTensorName` reads their names. */
  sparseInitializer: Uint8Array[];
  input: ValueInfo[];
  output: ValueInfo[];
  valueInfo: ValueInfo[];
}

export interface ModelProto extends Preserved {
  irVersion?: number;
  opsetImport: OperatorSetId[];
  graph?: GraphProto;
}

// ---------------------------------------------------------------------------------------------------------------
// Wire format

export const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
export const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

/** ONNX raw_data is little-endian; typed arrays use the host's order. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

function invalid(what: string): FlorenceError {
  return new FlorenceError("MODEL_FILE_INVALID", `not a valid ONNX protobuf: ${what}`, {
    fix: "the file is truncated or not an ONNX model; download or export it again",
  });
}

class Reader {
  readonly buf: Uint8Array;
  pos: number;
  readonly end: number;

  constructor(buf: Uint8Array, start = 0, end = buf.length) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }

  /** A varint as a JS number: exact for |v| < 2^53; int64 negatives (10-byte encodings) come back negative. */
  varint(): number {
    const buf = this.buf;
    let lo = 0;
    let hi = 0;
    let shift = 0;
    let byte: number;
    do {
      if (this.pos >= this.end) throw invalid(`varint runs past the end at byte ${this.pos}`);
      byte = buf[this.pos++]!;
      if (shift < 28) lo |= (byte & 0x7f) << shift;
      else if (shift === 28) {
        lo |= (byte & 0x0f) << 28;
        hi |= (byte & 0x7f) >>> 4;
      } else if (shift < 63) hi |= (byte & 0x7f) << (shift - 32);
      else if (shift === 63) hi |= (byte & 0x01) << 31;
      else throw invalid(`varint longer than 10 bytes at byte ${this.pos}`);
      shift += 7;
    } while (byte & 0x80);
    lo >>>= 0;
    const high = hi >>> 0;
    return high >= 0x80000000 ? (high - 0x100000000) * 0x100000000 + lo : high * 0x100000000 + lo;
  }

  varintBig(): bigint {
    let result = 0n;
    let shift = 0n;
    let byte: number;
    do {
      if (this.pos >= this.end) throw invalid(`varint runs past the end at byte ${this.pos}`);
      byte = this.buf[this.pos++]!;
      result |= BigInt(byte & 0x7f) << shift;
      shift += 7n;
      if (shift > 70n) throw invalid(`varint longer than 10 bytes at byte ${this.pos}`);
    } while (byte & 0x80);
    return BigInt.asIntN(64, result);
  }

  bytes(): Uint8Array {
    const length = this.varint();
    if (length < 0 || this.pos + length > this.end) throw invalid(`length-delimited field of ${length} bytes runs past the end at byte ${this.pos}`);
    const view = this.buf.subarray(this.pos, this.pos + length);
    this.pos += length;
    return view;
  }

  string(): string {
    const view = this.bytes();
    try {
      return utf8Decoder.decode(view);
    } catch {
      throw invalid(`a name at byte ${this.pos - view.length} is not UTF-8`);
    }
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_FIXED64:
        this.pos += 8;
        break;
      case WIRE_LEN:
        this.bytes();
        return;
      case WIRE_FIXED32:
        this.pos += 4;
        break;
      default:
        throw invalid(`unsupported wire type ${wireType} at byte ${this.pos}`);
    }
    if (this.pos > this.end) throw invalid("fixed-width field runs past the end");
  }
}

/** Reads one message's fields; `decode` handles the known ones and returns false for the rest. */
function readMessage<T extends Preserved>(buf: Uint8Array, target: T, decode: (r: Reader, field: number, wireType: number, target: T) => boolean): T {
  const r = new Reader(buf);
  let last = -1;
  while (r.pos < r.end) {
    const start = r.pos;
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field === 0) throw invalid(`field number 0 at byte ${start}`);
    if (field !== last) {
      if (!target.fieldOrder.includes(field)) target.fieldOrder.push(field);
      last = field;
    }
    if (!decode(r, field, wireType, target)) {
      r.skip(wireType);
      target.unknownFields.push({ fieldNumber: field, bytes: buf.subarray(start, r.pos) });
    }
  }
  return target;
}

function expectWire(wireType: number, expected: number, what: string): void {
  if (wireType !== expected) throw invalid(`${what} has wire type ${wireType}, expected ${expected}`);
}

function readInt64s(r: Reader, wireType: number, out: number[]): boolean {
  if (wireType === WIRE_LEN) {
    const view = r.bytes();
    const inner = new Reader(view);
    while (inner.pos < inner.end) out.push(inner.varint());
    return true;
  }
  expectWire(wireType, WIRE_VARINT, "repeated int64");
  out.push(r.varint());
  return false;
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding

function preserved(): Preserved {
  return { unknownFields: [], fieldOrder: [] };
}

function decodeEntry(buf: Uint8Array): StringStringEntry {
  return readMessage(buf, { ...preserved() } as StringStringEntry, (r, field, wt, m) => {
    if (field === 1 && wt === WIRE_LEN) m.key = r.string();
    else if (field === 2 && wt === WIRE_LEN) m.value = r.string();
    else return false;
    return true;
  });
}

function decodeOperatorSetId(buf: Uint8Array): OperatorSetId {
  return readMessage(buf, { ...preserved() } as OperatorSetId, (r, field, wt, m) => {
    if (field === 1 && wt === WIRE_LEN) m.domain = r.string();
    else if (field === 2 && wt === WIRE_VARINT) m.version = r.varint();
    else return false;
    return true;
  });
}

function decodeDimension(buf: Uint8Array): Dimension {
  return readMessage(buf, { ...preserved() } as Dimension, (r, field, wt, m) => {
    if (field === 1 && wt === WIRE_VARINT) m.dimValue = r.varint();
    else if (field === 2 && wt === WIRE_LEN) m.dimParam = r.string();
    else return false;
    return true;
  });
}

function decodeShape(buf: Uint8Array): TensorShape {
  return readMessage(buf, { ...preserved(), dim: [] } as TensorShape, (r, field, wt, m) => {
    if (field === 1 && wt === WIRE_LEN) m.dim.push(decodeDimension(r.bytes()));
    else return false;
    return true;
  });
}

function decodeTensorType(buf: Uint8Array): TensorTypeProto {
  return readMessage(buf, { ...preserved() } as TensorTypeProto, (r, field, wt, m) => {
    if (field === 1 && wt === WIRE_VARINT) m.elemType = r.varint();
    else if (field === 2 && wt === WIRE_LEN) m.shape = decodeShape(r.bytes());
    else return false;
    return true;
  });
}

function decodeType(buf: Uint8Array): TypeProto {
  return readMessage(buf, { ...preserved() } as TypeProto, (r, field, wt, m) => {
    if (field === 1 && wt === WIRE_LEN) m.tensorType = decodeTensorType(r.bytes());
    else return false;
    return true;
  });
}

function decodeValueInfo(buf: Uint8Array): ValueInfo {
  return readMessage(buf, { ...preserved() } as ValueInfo, (r, field, wt, m) => {
    if (field === 1 && wt === WIRE_LEN) m.name = r.string();
    else if (field === 2 && wt === WIRE_LEN) m.type = decodeType(r.bytes());
    else return false;
    return true;
  });
}

function decodeTensor(buf: Uint8Array): TensorProto {
  return readMessage(buf, { ...preserved(), dims: [], dimsPacked: false, externalData: [] } as TensorProto, (r, field, wt, m) => {
    if (field === 1 && (wt === WIRE_LEN || wt === WIRE_VARINT)) m.dimsPacked = readInt64s(r, wt, m.dims) || m.dimsPacked;
    else if (field === 2 && wt === WIRE_VARINT) m.dataType = r.varint();
    else if (field === 8 && wt === WIRE_LEN) m.name = r.string();
    else if (field === 9 && wt === WIRE_LEN) m.rawData = r.bytes();
    else if (field === 13 && wt === WIRE_LEN) m.externalData.push(decodeEntry(r.bytes()));
    else if (field === 14 && wt === WIRE_VARINT) m.dataLocation = r.varint();
    else return false;
    return true;
  });
}

function decodeAttribute(buf: Uint8Array): AttributeProto {
  return readMessage(buf, { ...preserved(), graphs: [] } as AttributeProto, (r, field, wt, m) => {
    if (field === 1 && wt === WIRE_LEN) m.name = r.string();
    else if (field === 20 && wt === WIRE_VARINT) m.type = r.varint();
    else if (field === 3 && wt === WIRE_VARINT) m.i = r.varintBig();
    else if (field === 5 && wt === WIRE_LEN) m.t = decodeTensor(r.bytes());
    else if (field === 6 && wt === WIRE_LEN) m.g = decodeGraph(r.bytes());
    else if (field === 11 && wt === WIRE_LEN) m.graphs.push(decodeGraph(r.bytes()));
    else return false;
    return true;
  });
}

function decodeNode(buf: Uint8Array): NodeProto {
  return readMessage(buf, { ...preserved(), input: [], output: [], attribute: [] } as NodeProto, (r, field, wt, m) => {
    if (field === 1 && wt === WIRE_LEN) m.input.push(r.string());
    else if (field === 2 && wt === WIRE_LEN) m.output.push(r.string());
    else if (field === 3 && wt === WIRE_LEN) m.name = r.string();
    else if (field === 4 && wt === WIRE_LEN) m.opType = r.string();
    else if (field === 7 && wt === WIRE_LEN) m.domain = r.string();
    else if (field === 5 && wt === WIRE_LEN) m.attribute.push(decodeAttribute(r.bytes()));
    else return false;
    return true;
  });
}

function decodeGraph(buf: Uint8Array): GraphProto {
  const graph = { ...preserved(), node: [], initializer: [], sparseInitializer: [], input: [], output: [], valueInfo: [] } as GraphProto;
  return readMessage(buf, graph, (r, field, wt, m) => {
    if (field === 1 && wt === WIRE_LEN) m.node.push(decodeNode(r.bytes()));
    else if (field === 2 && wt === WIRE_LEN) m.name = r.string();
    else if (field === 5 && wt === WIRE_LEN) m.initializer.push(decodeTensor(r.bytes()));
    else if (field === 15 && wt === WIRE_LEN) m.sparseInitializer.push(r.bytes());
    else if (field === 11 && wt === WIRE_LEN) m.input.push(decodeValueInfo(r.bytes()));
    else if (field === 12 && wt === WIRE_LEN) m.output.push(decodeValueInfo(r.bytes()));
    else if (field === 13 && wt === WIRE_LEN) m.valueInfo.push(decodeValueInfo(r.bytes()));
    else return false;
    return true;
  });
}

/** Parses a serialised ModelProto. The result holds views into `bytes`: keep `bytes` unchanged while using it. */
export function parseModel(bytes: Uint8Array): ModelProto {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) {
    throw new FlorenceError("MODEL_FILE_INVALID", `not an ONNX model: got ${bytes instanceof Uint8Array ? "0 bytes" : typeof bytes}`, {
      fix: "pass the bytes of an .onnx file (e.g. await readFile(path))",
    });
  }
  const model = readMessage(bytes, { ...preserved(), opsetImport: [] } as ModelProto, (r, field, wt, m) => {
    if (field === 1 && wt === WIRE_VARINT) m.irVersion = r.varint();
    else if (field === 8 && wt === WIRE_LEN) m.opsetImport.push(decodeOperatorSetId(r.bytes()));
    else if (field === 7 && wt === WIRE_LEN) m.graph = decodeGraph(r.bytes());
    else return false;
    return true;
  });
  if (!model.graph) throw invalid("the model has no graph (ModelProto field 7)");
  return model;
}

/** The name of an encoded SparseTensorProto (the name of its `values` tensor). */
export function sparseTensorName(payload: Uint8Array): string | undefined {
  let name: string | undefined;
  readMessage(payload, preserved(), (r, field, wt) => {
    if (field === 1 && wt === WIRE_LEN) {
      name = decodeTensor(r.bytes()).name;
      return true;
    }
    return false;
  });
  return name;
}

// ---------------------------------------------------------------------------------------------------------------
// Constructors for messages built in code

export function newNode(opType: string, inputs: string[], outputs: string[], name: string, attribute: AttributeProto[] = []): NodeProto {
  return { ...preserved(), input: inputs, output: outputs, name, opType, attribute };
}

export function intAttribute(name: string, value: number): AttributeProto {
  return { ...preserved(), name, type: AttributeType.INT, i: BigInt(value), graphs: [] };
}

export function tensorAttribute(name: string, t: TensorProto): AttributeProto {
  return { ...preserved(), name, type: AttributeType.TENSOR, t, graphs: [] };
}

export function newTensor(name: string | undefined, dataType: number, dims: number[], rawData: Uint8Array): TensorProto {
  const t: TensorProto = { ...preserved(), dims, dimsPacked: false, dataType, rawData, externalData: [] };
  if (name !== undefined) t.name = name;
  return t;
}

/** Deep-copies decoded data; Uint8Array views (raw_data, preserved fields) are shared, as they are never written. */
function deepCopy<T>(value: T): T {
  if (value instanceof Uint8Array || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => deepCopy(v)) as T;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[k] = deepCopy(v);
  return out as T;
}

export function cloneGraph(graph: GraphProto): GraphProto {
  return deepCopy(graph);
}

export function cloneNode(node: NodeProto): NodeProto {
  return deepCopy(node);
}

export function cloneTensor(tensor: TensorProto): TensorProto {
  return deepCopy(tensor);
}

export function cloneValueInfo(info: ValueInfo): ValueInfo {
  return deepCopy(info);
}

/** The element type and dims of a ValueInfo, symbolic dims as their names; undefined when not a tensor. */
export function tensorTypeOf(info: ValueInfo): { elemType: number | undefined; shape: (number | string | undefined)[] | undefined } | undefined {
  const tensorType = info.type?.tensorType;
  if (!tensorType) return undefined;
  return { elemType: tensorType.elemType, shape: tensorType.shape?.dim.map((d) => d.dimValue ?? d.dimParam) };
}

/**
 * The float32 values of a FLOAT tensor, from raw_data or float_data (field 4, kept encoded). Undefined for external
 * data or other types.
 */
export function floatValues(t: TensorProto): Float32Array | undefined {
  if (t.dataType !== DataType.FLOAT || t.dataLocation === DATA_LOCATION_EXTERNAL) return undefined;
  if (t.rawData) {
    const count = t.rawData.length >>> 2;
    const out = new Float32Array(count);
    if (LITTLE_ENDIAN) {
      new Uint8Array(out.buffer).set(t.rawData.subarray(0, count * 4));
    } else {
      const view = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
    }
    return out;
  }
  const values: number[] = [];
  for (const raw of t.unknownFields) {
    if (raw.fieldNumber !== 4) continue;
    const r = new Reader(raw.bytes);
    const tag = r.varint();
    const view = new DataView(raw.bytes.buffer, raw.bytes.byteOffset, raw.bytes.byteLength);
    if ((tag & 7) === WIRE_LEN) {
      const length = r.varint();
      for (let at = r.pos; at < r.pos + length; at += 4) values.push(view.getFloat32(at, true));
    } else if ((tag & 7) === WIRE_FIXED32) {
      values.push(view.getFloat32(r.pos, true));
    }
  }
  return Float32Array.from(values);
}

