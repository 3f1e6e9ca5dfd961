/**
 * Logs after a resume are exactly those of an uninterrupted run: a run
 * stopped by SIGTERM or killed by SIGKILL at various steps (mid-epoch, on
 * an epoch's last step, at a random moment) and then resumed leaves the
 * same metrics.jsonl, line for line, and the same TensorBoard scalars as
 * one that never stopped; only wall-clock times differ.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { RunLog } from "../train/logging.ts";
import { runPython, tempDir } from "./helpers.ts";
import { missingPython, skipReason } from "./logging_helpers.ts";
import { cli, filesIn, MAIN, metricsWithoutTime, readUntil, runNameOf, tinyArgs, tinyData } from "./run_helpers.ts";

// A checkpoint after every step (the loop checks the clock once a step).
const OFTEN = ["--checkpoint-minutes", "0.00001"];
const noTensorboard = missingPython("tensorboard");

/** metrics.jsonl and (when tensorboard is there) the TensorBoard scalars of the run in `dir`. */
async function logsOf(dir: string, name: string) {
  const run = join(dir, "runs", name);
  const read: Record<string, number[][]> | null = noTensorboard ? null : JSON.parse(await runPython("tb_read.py", [run])).scalars;
  // Stage timings (time_*) are wall-clock figures: compare their steps, not their values.
  const scalars = read && Object.fromEntries(
    Object.entries(read).map(([tag, pts]) => [tag, tag.startsWith("time_") ? pts.map((p) => p[0]) : pts]),
  );
  // One event file (its name holds a time and pid), metrics.jsonl, config.json.
  const files = filesIn(run).map((f) => f.startsWith("events.out.tfevents.") ? "events.out.tfevents.*" : f);
  return { metrics: metricsWithoutTime(join(run, "metrics.jsonl")), scalars, files };
}

/** Resumes until the run finishes (rc 0 and its result line); `mayBeDone`: the run may have finished before its kill. */
async function finish(dir: string, mayBeDone = false) {
  const r = await cli(tinyArgs(dir, OFTEN));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, mayBeDone ? /resumed .* at epoch \d+, batch \d+|is finished: it trained all 2 epochs/ : /resumed .* at epoch \d+, batch \d+/);
  assert.match(r.stdout, /test accuracy of the online linear classifier/);
}

Deno.test("logs after a resume: every kill and stop gives the metrics.jsonl and TensorBoard scalars of an uninterrupted run", async () => {
  if (noTensorboard) skipReason("TensorBoard half of the resume comparison", noTensorboard);
  using root = tempDir();
  const straight = join(root.path, "straight");
  await tinyData(straight);
  const name = await runNameOf(tinyArgs(straight, OFTEN));
  const u = await cli(tinyArgs(straight, OFTEN));
  assert.equal(u.code, 0, u.stderr);
  const want = await logsOf(straight, name);
  // 2 epochs of 5 steps: per-step learning rates 0..9 and 11 per-epoch scalars each.
  assert.deepEqual(want.metrics.filter((m) => m.tag === "train_step-learning-rate").map((m) => m.step), [...Array(10).keys()]);
  assert.deepEqual(want.metrics.filter((m) => m.tag === "train_loss").map((m) => m.step), [1, 2]);

  const cases: [string, Record<string, string>][] = [
    ["SIGTERM mid-epoch", { SELFSUP_SIGTERM_AFTER_STEPS: "3" }],
    ["SIGTERM on an epoch's last step", { SELFSUP_SIGTERM_AFTER_STEPS: "5" }],
    ["SIGKILL mid-epoch", { SELFSUP_SIGKILL_AFTER_STEPS: "3" }],
    ["SIGKILL on an epoch's last step", { SELFSUP_SIGKILL_AFTER_STEPS: "5" }],
    ["SIGKILL in the second epoch", { SELFSUP_SIGKILL_AFTER_STEPS: "8" }],
  ];
  for (const [label, env] of cases) {
    const dir = join(root.path, label.replace(/\W+/g, "-"));
    Deno.mkdirSync(dir);
    Deno.symlinkSync(join(straight, "data"), join(dir, "data"));
    const stopped = await cli(tinyArgs(dir, OFTEN), env);
    if (env.SELFSUP_SIGKILL_AFTER_STEPS) assert.equal(stopped.signal, "SIGKILL", `${label}: ${stopped.stderr}`);
    else assert.equal(stopped.code, 0, `${label}: ${stopped.stderr}`);
    await finish(dir);
    const got = await logsOf(dir, name);
    assert.deepEqual(got.metrics, want.metrics, `${label}: metrics.jsonl differs from the uninterrupted run's`);
    if (got.scalars) assert.deepEqual(got.scalars, want.scalars, `${label}: TensorBoard scalars differ`);
    assert.deepEqual(got.files, want.files, `${label}: other files in the log folder`);
  }

  // A kill from outside at a random moment (a step, a test pass or a checkpoint write).
  const dir = join(root.path, "random");
  Deno.mkdirSync(dir);
  Deno.symlinkSync(join(straight, "data"), join(dir, "data"));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", MAIN, ...tinyArgs(dir, OFTEN)],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  await readUntil(reader, /steps\/epoch/);
  const delay = 500 + Math.floor(Math.random() * 4000);
  await new Promise((r) => setTimeout(r, delay));
  try {
    child.kill("SIGKILL");
  } catch { /* it finished first */ }
  await child.status;
  await reader.cancel();
  await finish(dir, true);
  const got = await logsOf(dir, name);
  assert.deepEqual(got.metrics, want.metrics, `killed after ${delay} ms: metrics.jsonl differs`);
  if (got.scalars) assert.deepEqual(got.scalars, want.scalars, `killed after ${delay} ms: TensorBoard scalars differ`);
});

Deno.test("logs of a fresh start: files of an attempt that never checkpointed are set aside, not appended to", async () => {
  using dir = tempDir();
  const old = new RunLog({ method: "simclr", logDir: dir.path, name: "r" });
  old.step(0.5, 0);
  await old.close();
  const log = new RunLog({ method: "simclr", logDir: dir.path, name: "r", continueFrom: null });
  log.step(0.25, 0);
  await log.close();
  const run = join(dir.path, "r");
  assert.deepEqual(metricsWithoutTime(join(run, "metrics.jsonl")), [{ tag: "train_step-learning-rate", step: 0, value: 0.25 }]);
  const aside = filesIn(run).filter((f) => f.startsWith("previous-"));
  assert.equal(aside.length, 1);
  assert.deepEqual(metricsWithoutTime(join(run, aside[0], "metrics.jsonl")).map((m) => m.value), [0.5]);
});

Deno.test("logs continued from a checkpoint's marks: both files are cut back to them and the event file goes on", async () => {
  using dir = tempDir();
  const first = new RunLog({ method: "simclr", logDir: dir.path, name: "r", continueFrom: null });
  first.step(0.1, 0);
  const marks = first.marks()!;
  first.step(0.2, 1); // logged after the checkpoint: must not survive a resume from it
  await first.close();
  const again = new RunLog({ method: "simclr", logDir: dir.path, name: "r", continueFrom: marks });
  again.step(0.3, 1);
  await again.close();
  const run = join(dir.path, "r");
  assert.deepEqual(metricsWithoutTime(join(run, "metrics.jsonl")).map((m) => [m.step, m.value]), [[0, 0.1], [1, 0.3]]);
  assert.equal(filesIn(run).filter((f) => f.startsWith("events.")).length, 1, "one event file");
  if (!skipReason("TensorBoard read-back of a continued event file", noTensorboard)) {
    const tb = JSON.parse(await runPython("tb_read.py", [run]));
    assert.deepEqual(tb.scalars["train_step-learning-rate"].map((p: number[]) => p[0]), [0, 1]);
    assert.ok(Math.abs(tb.scalars["train_step-learning-rate"][1][1] - 0.3) < 1e-6);
  }
});
