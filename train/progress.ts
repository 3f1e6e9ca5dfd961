/**
 * Console progress of a pass. On a terminal: one bar, redrawn in place
 * (steps, images per second, loss, time left). In a log file or under
 * SLURM, where a redrawn line becomes thousands of lines: a plain line
 * every 15 s.
 *
 * ```ts
 * const p = new Progress("epoch 3/100", 312);
 * p.update(1, 256, 6.93);
 * p.done();
 * ```
 *
 * @module
 */
const encoder = new TextEncoder();

export interface ProgressOptions {
  /** Redraw in place (default: stderr is a terminal and not under SLURM). */
  tty?: boolean;
  /** Seconds between plain lines when not on a terminal (default 15). */
  intervalSeconds?: number;
  /** Where text goes (default: stderr). */
  write?: (text: string) => void;
  /** The clock, in milliseconds (default: performance.now). */
  now?: () => number;
}

/** Whether progress should be redrawn in place: a terminal, and not a SLURM job's captured output. */
export function onTerminal(): boolean {
  return Deno.stderr.isTerminal() && !Deno.env.get("SLURM_JOB_ID");
}

/** `42s`, `3m07s`, `2h05m`: short enough for a status line. */
export function formatDuration(secs: number): string {
  if (!Number.isFinite(secs) || secs < 0) return "?";
  const s = Math.round(secs);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** `[#####.....]`: `done` of `total` in `width` characters. */
export function bar(done: number, total: number, width = 24): string {
  const filled = total > 0 ? Math.min(width, Math.round((done / total) * width)) : 0;
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}]`;
}

export class Progress {
  #tty: boolean;
  #intervalMs: number;
  #write: (text: string) => void;
  #now: () => number;
  #t0: number;
  #lastPrint: number;
  #drawn = false;

  constructor(private label: string, private total: number, o: ProgressOptions = {}) {
    this.#tty = o.tty ?? onTerminal();
    this.#intervalMs = (o.intervalSeconds ?? 15) * 1000;
    this.#write = o.write ?? ((t) => void Deno.stderr.writeSync(encoder.encode(t)));
    this.#now = o.now ?? (() => performance.now());
    this.#t0 = this.#now();
    this.#lastPrint = this.#t0;
  }

  /** After `step` of the pass's steps, `samples` images so far, the last step's loss (if it has one). */
  update(step: number, samples: number, loss?: number): void {
    const now = this.#now();
    // A terminal is redrawn at most 10 times a second; a log gets a line per interval.
    const wait = this.#tty ? 100 : this.#intervalMs;
    if (now - this.#lastPrint < wait && step < this.total) return;
    if (!this.#tty && step >= this.total) return; // the epoch's summary line follows
    this.#lastPrint = now;
    const secs = (now - this.#t0) / 1000;
    const rate = samples / Math.max(secs, 1e-9);
    const eta = ((this.total - step) * secs) / Math.max(step, 1);
    const stats = `${step}/${this.total} | ${rate.toFixed(0)} img/s${loss === undefined ? "" : ` | loss ${loss.toFixed(4)}`} | eta ${
      formatDuration(eta)
    }`;
    if (this.#tty) {
      this.#write(`\r\x1b[2K${this.label} ${bar(step, this.total)} ${stats}`);
      this.#drawn = true;
    } else {
      this.#write(`${this.label} ${stats}\n`);
    }
  }

  /** Clears the bar so the next line starts clean. */
  done(): void {
    if (this.#drawn) this.#write("\r\x1b[2K");
    this.#drawn = false;
  }
}
