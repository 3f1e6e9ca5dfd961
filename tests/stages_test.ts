/**
 * Where an epoch's time goes (train/stages.ts): the clock's arithmetic,
 * then real CPU runs through the CLI: the `time-` line and the `time_*`
 * scalars exist and add up, stderr carries no libtorch noise, a loader
 * slowed by heavy images shows up as waiting for data, and `--profile`
 * writes a Chrome trace and a table of operators.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeDemoDataset } from "../ffi/native.ts";
import { STAGE_TAGS, StageClock, stageScalars, stagesLine } from "../train/stages.ts";
import { python, runCli, tempDir, trainArgs } from "./helpers.ts";
import { missingPython, skipReason } from "./logging_helpers.ts";

Deno.test("stage clock: host stages, laps and device stages make the epoch's figures", async () => {
  let now = 1000;
  const clock = new StageClock(() => now);
  await clock.time("dataWait", () => {
    now += 250;
    return Promise.resolve();
  });
  await clock.time("readBack", () => {
    now += 50;
    return Promise.resolve();
  });
  now += 700; // the steps
  clock.trainDone();
  now += 400;
  clock.lap("test");
  now += 100;
  clock.lap("checkpointLog");
  const s = clock.finish({ copy: 0.01, augment: 0.1, step: 0.6, steps: 4 }, 64);
  assert.deepEqual(
    { ...s },
    {
      epoch: 1.5,
      train: 1,
      dataWait: 0.25,
      readBack: 0.05,
      test: 0.4,
      checkpointLog: 0.1,
      copy: 0.01,
      augment: 0.1,
      step: 0.6,
      imagesPerSecond: 64,
      deviceBusy: 0.7,
    },
  );
  assert.equal(
    stagesLine(0, 3, s),
    "time-0[Epoch 3][1.50 sec]: data wait 0.25 | copy 0.01 | augment 0.10 | step 0.60 | read-back 0.05 | test 0.40 | checkpoint+log 0.10 | 64.0 img/s | device busy 70%",
  );
  assert.equal(Object.keys(stageScalars(s)).length, 11);
});

/**
 * A small CPU run through the CLI on the demo data (10 classes of
 * `perClass` train images, one test image each, 24 px), its train images
 * replaced by `heavy` (an image file's bytes) when given. One intra-op thread: on a
 * busy 2-core machine, two threads' barriers made the tiny model's step
 * 15x slower.
 */
async function run(dir: string, perClass: number, extra: string[], heavy?: Uint8Array) {
  const data = join(dir, "data");
  await writeDemoDataset(data, { trainPerClass: perClass, testPerClass: 1, size: 24 });
  if (heavy) {
    for (const c of Deno.readDirSync(join(data, "train"))) {
      for (const f of Deno.readDirSync(join(data, "train", c.name))) {
        Deno.writeFileSync(join(data, "train", c.name, f.name), heavy);
      }
    }
  }
  const args = [
    ...trainArgs(dir, data, "stages"),
    "--no-cuda",
    "--arch",
    "resnet18",
    "--small-stem",
    "--base-width",
    "8",
    "--representation-size",
    "64",
    "--head-latent-size",
    "16",
    "--image-size-override",
    "16",
    "--batch-size",
    "16",
    "--warmup",
    "0",
    "--optimizer",
    "momentum",
    "--lr",
    "0.05",
    "--seed",
    "1",
    "--threads",
    "1",
    ...extra,
  ];
  const r = await runCli(args);
  assert.equal(r.code, 0, r.stderr);
  const name = JSON.parse((await runCli([...args, "--print-config"])).stdout).runName as string;
  return { ...r, runDir: join(dir, "runs", name) };
}

/**
 * A `px` x `px` JPEG of noise (written by PIL): among the slowest images to
 * decode per pixel, and equally slow everywhere.
 */
async function noiseJpeg(px: number): Promise<Uint8Array> {
  const code = "import sys, io, numpy as np, PIL.Image as I; b = io.BytesIO(); " +
    `I.fromarray(np.random.default_rng(0).integers(0, 256, (${px}, ${px}, 3)).astype("uint8")).save(b, "JPEG", quality=95); ` +
    "sys.stdout.buffer.write(b.getvalue())";
  const out = await new Deno.Command(python, { args: ["-c", code], stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return out.stdout;
}

const LINE =
  /^time-0\[Epoch (\d+)\]\[([\d.]+) sec\]: data wait ([\d.]+) \| copy ([\d.]+) \| augment ([\d.]+) \| step ([\d.]+) \| read-back ([\d.]+) \| test ([\d.]+) \| checkpoint\+log ([\d.]+) \| ([\d.]+) img\/s \| device busy (\d+)%$/;

/** The `time-0` lines of a run's stdout, as numbers by name. */
function stageLines(stdout: string) {
  return stdout.split("\n").map((l) => LINE.exec(l)).filter((m) => m !== null).map((m) => {
    const [epoch, wall, dataWait, copy, augment, step, readBack, test, checkpointLog, ips, busy] = m.slice(1)
      .map(Number);
    return { epoch, wall, dataWait, copy, augment, step, readBack, test, checkpointLog, ips, busy };
  });
}

Deno.test("a CPU run prints a stage line per epoch that adds up, logs the same figures, and nothing on stderr from libtorch", async () => {
  using dir = tempDir();
  const r = await run(dir.path, 4, ["--epochs", "2"]);
  const lines = stageLines(r.stdout);
  assert.deepEqual(lines.map((l) => l.epoch), [1, 2], r.stdout);
  const points = Deno.readTextFileSync(join(r.runDir, "metrics.jsonl")).trimEnd().split("\n").map((l) =>
    JSON.parse(l)
  );
  const at = (tag: string, epoch: number) =>
    points.find((p) => p.tag === tag && p.step === epoch)?.value as number;
  for (const l of lines) {
    const e = l.epoch;
    for (const tag of Object.values(STAGE_TAGS)) {
      assert.equal(typeof at(tag, e), "number", `${tag} at epoch ${e}`);
    }
    // The line shows the logged figures, rounded.
    assert.ok(Math.abs(at("time_epoch-s", e) - l.wall) <= 0.005 + 1e-9);
    assert.ok(Math.abs(at("time_step-s", e) - l.step) <= 0.005 + 1e-9);
    assert.ok(Math.abs(at("time_data-wait-s", e) - l.dataWait) <= 0.005 + 1e-9);
    assert.equal(Math.round(100 * at("time_device-busy", e)), l.busy);
    // On the CPU every stage of the train pass runs one after the other on the loop's path.
    const train = at("time_train-s", e);
    const inTrain = ["data-wait", "copy", "augment", "step", "read-back"].map((k) => at(`time_${k}-s`, e));
    assert.ok(inTrain.every((x) => x >= 0), `${inTrain}`);
    assert.ok(inTrain.reduce((a, b) => a + b) <= train, `train-pass stages ${inTrain} exceed its ${train} s`);
    const all = [train, at("time_test-s", e), at("time_checkpoint-log-s", e)].reduce((a, b) => a + b);
    assert.ok(
      all <= at("time_epoch-s", e) + 1e-6,
      `stages ${all} s exceed the epoch's ${at("time_epoch-s", e)} s`,
    );
    assert.ok(at("time_step-s", e) > 0 && at("time_test-s", e) > 0 && at("time_checkpoint-log-s", e) > 0);
    // 40 images, batches of 16, the last partial one dropped: 32 a pass.
    assert.ok(Math.abs(at("time_images-per-second", e) - 32 / train) < 1e-6);
  }
  const noise = r.stderr.split("\n").filter((l) => /warn|deprecat|error|^\[[WE] /i.test(l));
  assert.deepEqual(noise, [], r.stderr);
});

Deno.test({
  name: "a loader slowed by heavy images shows up as waiting for data",
  ignore: skipReason("a loader slowed by heavy images", missingPython("PIL")),
  fn: slowLoader,
});

async function slowLoader() {
  using dir = tempDir();
  // 1500 px JPEGs of noise, decoded every time by one loader thread, for a tiny model at 16 px: 2 steps of 8.
  const r = await run(dir.path, 2, [
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--workers-per-replica",
    "1",
    "--in-memory",
    "never",
    "--profile",
  ], await noiseJpeg(1500));
  const [l] = stageLines(r.stdout);
  assert.ok(l, r.stdout);
  assert.ok(
    l.dataWait > l.step && l.dataWait > l.augment,
    `data wait ${l.dataWait} s against step ${l.step} s:\n${r.stdout}`,
  );
  assert.ok(l.busy < 50, `device busy ${l.busy}% while the loader is the bottleneck`);
  // Two steps in the pass: the profile window (steps 3-7) never opens.
  assert.doesNotMatch(r.stdout, /^profile:/m);
}

Deno.test("--profile writes a Chrome trace with the stages' ranges and prints the operators by self time", async () => {
  using dir2 = tempDir();
  // Batches of 8: 5 steps, of which 3-5 are profiled.
  const p = await run(dir2.path, 4, ["--epochs", "1", "--batch-size", "8", "--profile"]);
  assert.match(p.stdout, /^profile: steps 3-5 of this run; Chrome trace .*profile\.json/m);
  assert.match(p.stdout, /^CPU operators +self ms +share +calls$/m);
  assert.match(p.stdout, /^aten::\S+ +[\d.]+ +[\d.]+% +\d+$/m);
  const trace = JSON.parse(Deno.readTextFileSync(join(p.runDir, "profile.json")));
  const names = new Set(trace.traceEvents.map((e: { name?: string }) => e.name));
  for (const stage of ["selfsup::copy", "selfsup::augment", "selfsup::step"]) {
    assert.ok(names.has(stage), stage);
  }
  const noise = p.stderr.split("\n").filter((l) => /warn|deprecat|error|^\[[WE] /i.test(l));
  assert.deepEqual(noise, [], p.stderr);
});
