import assert from "node:assert/strict";
import { bar, formatDuration, Progress } from "../train/progress.ts";

/** A Progress on a hand-driven clock, collecting what it writes. */
function harness(tty: boolean, total: number) {
  let ms = 0;
  const out: string[] = [];
  const p = new Progress("epoch 2/5", total, {
    tty,
    intervalSeconds: 15,
    write: (t) => out.push(t),
    now: () => ms,
  });
  return { p, out, advance: (secs: number) => (ms += secs * 1000) };
}

Deno.test("progress on a terminal: one bar redrawn in place with steps, img/s, loss and ETA", () => {
  const { p, out, advance } = harness(true, 100);
  advance(10);
  p.update(25, 2500, 6.12345);
  assert.equal(out.length, 1);
  assert.equal(
    out[0],
    `\r\x1b[2Kepoch 2/5 [######..................] 25/100 | 250 img/s | loss 6.1235 | eta 30s`,
  );
  p.update(26, 2600, 6.0); // within 0.1 s of the last draw: skipped
  assert.equal(out.length, 1);
  advance(190);
  p.update(100, 10000, 5.5);
  assert.match(out[1], /\[#{24}\] 100\/100 \| 50 img\/s \| loss 5\.5000 \| eta 0s$/);
  p.done();
  assert.equal(out[2], "\r\x1b[2K", "the bar is cleared for the summary line");
});

Deno.test("progress in a log (not a terminal, or SLURM): a plain line per interval, no control codes", () => {
  const { p, out, advance } = harness(false, 1000);
  for (let step = 1; step <= 1000; step++) {
    advance(0.1); // 100 s in all
    p.update(step, step * 64, 1);
  }
  p.done();
  // One line per 15 s of a 100 s pass; none at the very end, where the summary line follows.
  assert.equal(out.length, 6, out.join(""));
  assert.ok(out.every((l) => l.endsWith("\n") && !l.includes("\x1b") && !l.includes("\r")));
  assert.match(out[0], /^epoch 2\/5 150\/1000 \| 640 img\/s \| loss 1\.0000 \| eta 1m25s\n$/);
});

Deno.test("progress helpers: durations and bars", () => {
  assert.deepEqual([0, 42.4, 187, 7500, -1, Infinity].map(formatDuration), [
    "0s",
    "42s",
    "3m07s",
    "2h05m",
    "?",
    "?",
  ]);
  assert.equal(bar(0, 10, 10), "[..........]");
  assert.equal(bar(5, 10, 10), "[#####.....]");
  assert.equal(bar(12, 10, 10), "[##########]");
  assert.equal(bar(1, 0, 4), "[....]");
});
