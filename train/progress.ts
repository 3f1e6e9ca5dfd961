/**
 * Console progress of a pass: one rewritten line on a terminal, a plain
 * line every 15 s otherwise (logs, SLURM).
 *
 * @module
 */
const tty = Deno.stderr.isTerminal() && !Deno.env.get("SLURM_JOB_ID");
const encoder = new TextEncoder();

export class Progress {
  #t0 = performance.now();
  #lastPrint = performance.now();
  constructor(private label: string, private total: number) {}

  update(step: number, samples: number, loss: number): void {
    const secs = (performance.now() - this.#t0) / 1000;
    const rate = samples / Math.max(secs, 1e-9);
    const eta = (this.total - step) * secs / Math.max(step, 1);
    const line = `${this.label} ${step}/${this.total} | loss ${loss.toFixed(4)} | ${rate.toFixed(0)} img/s | eta ${
      eta.toFixed(0)
    }s`;
    if (tty) {
      Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${line}`));
    } else if (performance.now() - this.#lastPrint > 15000) {
      console.error(line);
      this.#lastPrint = performance.now();
    }
  }

  done(): void {
    if (tty) Deno.stderr.writeSync(encoder.encode("\r\x1b[2K"));
  }
}
