/**
 * An append-only file written in chunks: logging every step must not cost
 * a system call per step, and a reader (TensorBoard, `tail -f`) should
 * still see progress within seconds.
 *
 * A chunk is written whole or not at all: when a write fails (a full
 * disk), what it wrote of the chunk is cut off again, so the file always
 * ends after a complete record and {@link BufferedFile.length} is exact.
 *
 * @module
 */
import { dirname } from "node:path";
import { firstLine } from "./files.ts";

export class BufferedFile {
  readonly path: string;
  #file: Deno.FsFile;
  #chunks: Uint8Array[] = [];
  #bytes = 0;
  #lastFlush = performance.now();
  #length: number;

  /**
   * Opens `path` for appending (creating its folder). With `length`, the
   * file is first cut to that many bytes (a resumed run drops what was
   * logged after its checkpoint); nothing is cut otherwise.
   */
  constructor(path: string, private flushBytes = 1 << 16, private flushMs = 10_000, length?: number) {
    this.path = path;
    try {
      Deno.mkdirSync(dirname(path), { recursive: true });
      this.#file = Deno.openSync(path, { append: true, create: true });
      if (length !== undefined && this.#file.statSync().size > length) this.#file.truncateSync(length);
      this.#length = this.#file.statSync().size;
    } catch (e) {
      throw new Error(`cannot open ${path}: ${firstLine(e)}`);
    }
  }

  /** Bytes in the file after the last successful flush. */
  get length(): number {
    return this.#length;
  }

  write(bytes: Uint8Array): void {
    this.#chunks.push(bytes);
    this.#bytes += bytes.length;
    if (this.#bytes >= this.flushBytes || performance.now() - this.#lastFlush >= this.flushMs) this.flush();
  }

  /** Hands everything written so far to the operating system; on failure, the file is as before. */
  flush(): void {
    this.#lastFlush = performance.now();
    if (this.#bytes === 0) return;
    const all = new Uint8Array(this.#bytes);
    let at = 0;
    for (const c of this.#chunks) {
      all.set(c, at);
      at += c.length;
    }
    this.#chunks = [];
    this.#bytes = 0;
    try {
      for (let done = 0; done < all.length;) done += this.#file.writeSync(all.subarray(done));
    } catch (e) {
      try {
        this.#file.truncateSync(this.#length);
      } catch { /* the length is what a resume cuts back to anyway */ }
      throw new Error(`cannot write ${this.path}: ${firstLine(e)}`);
    }
    this.#length += all.length;
  }

  /** Flushes and waits until the bytes are on disk; returns the file's length. */
  sync(): number {
    this.flush();
    try {
      this.#file.syncSync();
    } catch (e) {
      throw new Error(`cannot sync ${this.path}: ${firstLine(e)}`);
    }
    return this.#length;
  }

  close(): void {
    try {
      this.flush();
    } finally {
      this.#file.close();
    }
  }
}
