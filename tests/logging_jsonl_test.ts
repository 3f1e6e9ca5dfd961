import assert from "node:assert/strict";
import { join } from "node:path";
import { RunLog, STEP_LR_TAG } from "../train/logging.ts";
import { tempDir } from "./helpers.ts";

interface Line {
  tag: string;
  step: number;
  value: number | null;
  time: number;
}

function lines(path: string): Line[] {
  return Deno.readTextFileSync(path).trimEnd().split("\n").map((l) => JSON.parse(l));
}

Deno.test("metrics.jsonl holds one line per logged point, beside the event file", async () => {
  using dir = tempDir();
  const before = Date.now() / 1000;
  const log = new RunLog({ method: "simclr", logDir: dir.path, name: "j" });
  log.step(0.5, 0);
  log.step(0.75, 1);
  const m = { loss: 3, sslLoss: 2, linearLoss: 1, top1: 50, top5: NaN };
  log.epoch(1, m, { ...m, loss: 4 }, 0.75);
  await log.close();

  const files = [...Deno.readDirSync(log.dir!)].map((e) => e.name).sort();
  assert.equal(files.length, 2, files.join());
  assert.match(files[0], /^events\.out\.tfevents\./);
  assert.equal(files[1], "metrics.jsonl");

  const got = lines(join(log.dir!, "metrics.jsonl"));
  assert.equal(got.length, 2 + 11);
  assert.deepEqual(got.slice(0, 2).map(({ tag, step, value }) => [tag, step, value]), [
    [STEP_LR_TAG, 0, 0.5],
    [STEP_LR_TAG, 1, 0.75],
  ]);
  const byTag = Object.fromEntries(got.slice(2).map((l) => [l.tag, l]));
  assert.equal(byTag["train_loss"].value, 3);
  assert.equal(byTag["test_loss"].value, 4);
  assert.equal(byTag["train_nce-loss"].value, 2);
  assert.equal(byTag["test_linear-loss"].value, 1);
  assert.equal(byTag["train_top1"].value, 50);
  assert.equal(byTag["train_top5"].value, null, "NaN is written as null");
  assert.equal(byTag["train_learning-rate"].value, 0.75);
  for (const l of got.slice(2)) assert.equal(l.step, 1);
  for (const l of got) assert.ok(l.time >= before - 1 && l.time <= Date.now() / 1000 + 1, `time ${l.time}`);
});

Deno.test("without a checkpoint's marks (made before they existed), a resumed run appends to metrics.jsonl beside a new event file", async () => {
  using dir = tempDir();
  for (const step of [0, 1]) {
    const log = new RunLog({ method: "simclr", logDir: dir.path, name: "again" });
    log.step(0.1, step);
    await log.close();
  }
  const run = join(dir.path, "again");
  assert.deepEqual(lines(join(run, "metrics.jsonl")).map((l) => l.step), [0, 1]);
  assert.equal([...Deno.readDirSync(run)].filter((e) => e.name.includes("tfevents")).length, 2);
});
