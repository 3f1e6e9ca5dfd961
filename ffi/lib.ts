/**
 * Finding, loading and calling the native library.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { type HookName, symbols } from "./symbols.ts";

/** An error raised inside the native library, with its message. */
export class NativeError extends Error {
  override name = "NativeError";
}

type Native = Deno.DynamicLibrary<typeof symbols>["symbols"];
let lib: Deno.DynamicLibrary<typeof symbols> | undefined;
let loadedFrom = "";

/**
 * Where the library is: $SELFSUP_NATIVE_LIB, else beside the executable
 * (a `deno compile`d selfsup), else native/'s release build, else its
 * debug build.
 */
export function libraryPath(): string {
  const explicit = Deno.env.get("SELFSUP_NATIVE_LIB");
  if (explicit) return explicit;
  const candidates = [
    join(dirname(Deno.execPath()), "libselfsup_native.so"),
    ...["release", "debug"].map((p) => new URL(`../native/target/${p}/libselfsup_native.so`, import.meta.url).pathname),
  ];
  return candidates.find((p) => exists(p)) ?? candidates[1];
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/**
 * The loaded library. It is never closed: unloading libtorch (static
 * destructors, thread pools) is not safe.
 */
export function native(): Native {
  if (!lib) {
    const path = libraryPath();
    if (!exists(path)) {
      throw new Error(
        `native library not found at ${path}; run ./selfsup once (it builds native/) or set SELFSUP_NATIVE_LIB`,
      );
    }
    try {
      lib = Deno.dlopen(path, symbols);
      loadedFrom = path;
    } catch (cause) {
      throw new Error(
        `cannot load ${path}: ${(cause as Error).message.split("\n")[0]}; run through ./selfsup, which sets LD_LIBRARY_PATH for libtorch`,
        { cause },
      );
    }
  }
  return lib.symbols;
}

/**
 * A test or benchmark hook: only a library built with the cargo feature
 * `testing` has them (symbols.ts), so on the release library this is a
 * one-line error that says how to get one.
 */
export function hook<K extends HookName>(name: K): NonNullable<Native[K]> {
  const lib = native(), f = lib[name];
  if (lib.selfsup_has_hooks === null || f === null) {
    throw new Error(
      `${name} is a test hook, and ${loadedFrom} was built without them (cargo feature "testing"); build the testing library with sh scripts/build-testing.sh and set SELFSUP_NATIVE_LIB to the path it prints (./selfsup test does both)`,
    );
  }
  return f;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 bytes of a string, for (buffer, length) parameters. */
export function utf8(s: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(s) as Uint8Array<ArrayBuffer>;
}

/** Reads a string the native side writes into a caller's buffer. */
export function readText(call: (buf: Uint8Array<ArrayBuffer>, cap: bigint) => number | bigint): string {
  let cap = 4096;
  for (;;) {
    const buf = new Uint8Array(cap);
    const n = Number(check(call(buf, BigInt(cap))));
    if (n <= cap) return decoder.decode(buf.subarray(0, n));
    cap = n;
  }
}

/** Turns a native status into its value, or throws the native message. */
export function check(status: number | bigint): number {
  const v = Number(status);
  if (v >= 0) return v;
  const buf = new Uint8Array(4096);
  const n = Number(native().selfsup_last_error(BigInt(-v), buf, BigInt(buf.length)));
  const msg = n < 0 ? `native error ${-v} (message lost)` : decoder.decode(buf.subarray(0, Math.min(n, buf.length)));
  throw new NativeError(msg);
}
