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
  if (bytes.length < 8) fail("too short");
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (8 + n > bytes.length) fail("header runs past the end");
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] } | Record<string, string>>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  } catch {
    return fail("unreadable header");
  }
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
