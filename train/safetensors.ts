/**
 * Reading and writing safetensors files (a little-endian u64 header
 * length, a JSON header of name → {dtype, shape, data_offsets}, then the
 * raw bytes), enough to rename tensors without touching their data.
 *
 * @module
 */
import { firstLine, writeFileAtomically } from "./files.ts";

/** One tensor: its dtype name as safetensors spells it, shape, raw bytes. */
export interface RawTensor {
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

type Header = Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] } | Record<string, string>>;

/** The header's length and JSON, from the file's first bytes (`head`) and its size. */
function parseHeader(path: string, head: Uint8Array, size: number): { n: number; header: Header } {
  const fail = (why: string): never => {
    throw new Error(`${path} is not a safetensors file (${why})`);
  };
  if (head.length < 8) fail("too short");
  const n = Number(new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true));
  if (8 + n > size || 8 + n > head.length) fail("header runs past the end");
  try {
    return { n, header: JSON.parse(new TextDecoder().decode(head.subarray(8, 8 + n))) };
  } catch {
    return fail("unreadable header");
  }
}

/** Names and shapes of a file's tensors, reading its header only (not the tensor data). */
export function readShapes(path: string): Map<string, number[]> {
  using f = Deno.openSync(path);
  const size = f.statSync().size;
  const fill = (buf: Uint8Array) => {
    for (let at = 0; at < buf.length;) at += f.readSync(buf.subarray(at)) ?? buf.length;
  };
  const first = new Uint8Array(Math.min(size, 8));
  fill(first);
  const n = first.length === 8 ? Number(new DataView(first.buffer).getBigUint64(0, true)) : 0;
  const head = new Uint8Array(Math.min(size, 8 + n));
  head.set(first);
  fill(head.subarray(first.length));
  const { header } = parseHeader(path, head, size);
  return new Map(Object.entries(header).filter(([k]) => k !== "__metadata__").map(([k, t]) => [k, (t as { shape: number[] }).shape]));
}

/** Every tensor of a file, by name (plus the optional string metadata). */
export function readSafetensors(path: string): { tensors: Map<string, RawTensor>; metadata: Record<string, string> } {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (e) {
    throw new Error(`cannot read ${path}: ${firstLine(e)}`);
  }
  return parseSafetensors(bytes, path);
}

/** The tensors of safetensors `bytes` read from `path` (named in errors). */
export function parseSafetensors(bytes: Uint8Array, path: string): { tensors: Map<string, RawTensor>; metadata: Record<string, string> } {
  const fail = (why: string): never => {
    throw new Error(`${path} is not a safetensors file (${why})`);
  };
  const { n, header } = parseHeader(path, bytes, bytes.length);
  const body = bytes.subarray(8 + n);
  const tensors = new Map<string, RawTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = info as Record<string, string>;
      continue;
    }
    const t = info as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const [lo, hi] = t.data_offsets;
    if (!(lo <= hi && hi <= body.length)) fail(`${name} lies outside the file: truncated?`);
    tensors.set(name, { dtype: t.dtype, shape: t.shape, data: body.subarray(lo, hi) });
  }
  return { tensors, metadata };
}

/** Writes tensors (in the given order) and optional metadata, atomically. */
export function writeSafetensors(path: string, tensors: Iterable<[string, RawTensor]>, metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    chunks.push(t.data);
    offset += t.data.length;
  }
  let h = JSON.stringify(header);
  h += " ".repeat((8 - (h.length % 8)) % 8);
  const hb = new TextEncoder().encode(h);
  const out = new Uint8Array(8 + hb.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let o = 8 + hb.length;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  writeFileAtomically(path, out);
}

/** A float32 or int64 array as a tensor. */
export function tensorOf(shape: number[], data: Float32Array | BigInt64Array): RawTensor {
  return {
    dtype: data instanceof Float32Array ? "F32" : "I64",
    shape,
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
}
