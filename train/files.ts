/**
 * Writing files so that a crash or a full disk never leaves a torn one,
 * and error messages that name the file and the cause on one line.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";

/** The temporary name of `path` while this process writes it (native/src/checkpoint.rs uses the same pattern). */
export function tempPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${Deno.pid}`);
}

/** The first line of an error's message. */
export function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split("\n")[0];
}

/**
 * Writes `data` to `path` atomically: temp file, fsync, rename, fsync the
 * folder. On failure the temp file is removed, `path` is as it was, and
 * the error names `path` and the cause.
 */
export function writeFileAtomically(path: string, data: string | Uint8Array): void {
  const tmp = tempPath(path);
  try {
    const f = Deno.openSync(tmp, { write: true, create: true, truncate: true });
    try {
      const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
      for (let done = 0; done < bytes.length;) done += f.writeSync(bytes.subarray(done));
      f.syncSync();
    } finally {
      f.close();
    }
    Deno.renameSync(tmp, path);
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch { /* never made */ }
    throw new Error(`cannot write ${path}: ${firstLine(e)}`);
  }
  try {
    const d = Deno.openSync(dirname(path), { read: true });
    try {
      d.syncSync();
    } finally {
      d.close();
    }
  } catch { /* some file systems cannot sync a folder */ }
}
