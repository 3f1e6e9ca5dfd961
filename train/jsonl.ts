/**
 * `metrics.jsonl`: every logged scalar as one JSON line, for scripts that
 * would rather not parse TensorBoard files:
 *
 * ```json
 * {"tag":"train_loss","step":3,"value":4.1852,"time":1767225600.123}
 * ```
 *
 * `step` is the epoch for per-epoch tags and the global step for per-step
 * ones; `time` is seconds since the Unix epoch. Non-finite values are
 * written as `null` (JSON has no NaN).
 *
 * @module
 */
import { BufferedFile } from "./bufferedfile.ts";

const encoder = new TextEncoder();

export class MetricsFile {
  #file: BufferedFile;
  /** Appends to `path`; with `length`, cuts it to that many bytes first (see BufferedFile). */
  constructor(path: string, length?: number) {
    this.#file = new BufferedFile(path, undefined, undefined, length);
  }
  get path(): string {
    return this.#file.path;
  }
  get length(): number {
    return this.#file.length;
  }
  /** Flushes to disk; returns the file's length. */
  sync(): number {
    return this.#file.sync();
  }
  point(tag: string, step: number, value: number): void {
    const line = JSON.stringify({
      tag,
      step,
      value: Number.isFinite(value) ? value : null,
      time: Date.now() / 1000,
    });
    this.#file.write(encoder.encode(line + "\n"));
  }
  flush(): void {
    this.#file.flush();
  }
  close(): void {
    this.#file.close();
  }
}
