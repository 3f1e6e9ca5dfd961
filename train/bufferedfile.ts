/**
 * An append-only file written in chunks: logging every step must not cost
 * a system call per step, and a reader (TensorBoard, `tail -f`) should
 * still see progress within seconds.
 *
 * @module
 */
import { dirname } from "node:path";

export class BufferedFile {
  readonly path: string;
  #file: Deno.FsFile;
  #chunks: Uint8Array[] = [];
  #bytes = 0;
  #lastFlush = performance.now();

  /** Opens `path` for appending (creating its folder); nothing is truncated. */
  constructor(path: string, private flushBytes = 1 << 16, private flushMs = 10_000) {
    this.path = path;
    Deno.mkdirSync(dirname(path), { recursive: true });
    this.#file = Deno.openSync(path, { append: true, create: true });
  }

  write(bytes: Uint8Array): void {
    this.#chunks.push(bytes);
    this.#bytes += bytes.length;
    if (this.#bytes >= this.flushBytes || performance.now() - this.#lastFlush >= this.flushMs) this.flush();
  }

  /** Hands everything written so far to the operating system. */
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
    for (let done = 0; done < all.length;) done += this.#file.writeSync(all.subarray(done));
  }

  close(): void {
    this.flush();
    this.#file.close();
  }
}
