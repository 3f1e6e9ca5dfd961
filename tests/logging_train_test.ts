/**
 * A real (tiny) training run through the CLI, then its outputs: the
 * TensorBoard file read back by tensorboard, metrics.jsonl, the folder
 * named after the run, and a visdom server that cannot be reached.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Loader, Trainer, writeDemoDataset } from "../ffi/native.ts";
import { STEP_LR_TAG } from "../train/logging.ts";
import { STAGE_TAGS } from "../train/stages.ts";
import { runCli, runPython, tempDir, trainArgs, trainerConfig, loaderConfig } from "./helpers.ts";
import { freePort, missingPython, skipReason } from "./logging_helpers.ts";

async function tinyRun(dir: string, extra: string[] = []) {
  const data = join(dir, "data");
  await writeDemoDataset(data, { trainPerClass: 8, testPerClass: 2 });
  const args = [
    ...trainArgs(dir, data, "tiny"),
    "--arch",
    "resnet18",
    "--representation-size",
    "512",
    "--head-latent-size",
    "32",
    "--image-size-override",
    "32",
    "--no-small-stem",
    "--batch-size",
    "32",
    "--epochs",
    "2",
    "--warmup",
    "1",
    "--optimizer",
    "momentum",
    "--lr",
    "0.05",
    "--seed",
    "3",
    "--no-cuda",
    ...extra,
  ];
  const name = JSON.parse((await runCli([...args, "--print-config"])).stdout).runName as string;
  return { ...(await runCli(args)), name };
}

Deno.test({
  name: "a training run logs the reference's scalars, image grids and config under <log-dir>/<run-name>",
  ignore: skipReason("training run to TensorBoard", missingPython("tensorboard")),
  async fn() {
    using dir = tempDir();
    const r = await tinyRun(dir.path);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.name,
      /^tiny_tmaimfolder_bs32_e2_iso32_ar18_rs512_ns128_hls32_nt0\.1_cjs1_wd1e-06_l0\.05_luscos_w1_omom_nr1_s3_nc1$/,
    );
    const runDir = join(dir.path, "runs", r.name);
    assert.deepEqual([...Deno.readDirSync(join(dir.path, "runs"))].map((e) => e.name), [r.name]);
    // The same name keys the checkpoints (docs/RUNS.md).
    assert.ok(Deno.statSync(join(dir.path, "models", `${r.name}.last.json`)).isFile);

    const got = JSON.parse(await runPython("tb_read.py", [runDir, "10"]));
    const perEpoch = ["loss", "nce-loss", "linear-loss", "top1", "top5"].flatMap((
      k,
    ) => [`train_${k}`, `test_${k}`]);
    assert.deepEqual(
      Object.keys(got.scalars).sort(),
      [...perEpoch, "train_learning-rate", STEP_LR_TAG, ...Object.values(STAGE_TAGS)].sort(),
    );
    for (const tag of perEpoch) assert.deepEqual(got.scalars[tag].map((p: number[]) => p[0]), [1, 2], tag);
    // 80 images, batches of 32, last one dropped: 2 steps an epoch.
    assert.deepEqual(got.scalars[STEP_LR_TAG].map((p: number[]) => p[0]), [0, 1, 2, 3]);

    // The event file holds what the console's summary lines say.
    for (const [prefix, epoch] of [["train", 2], ["test", 2]] as const) {
      const line = r.stdout.split("\n").find((l) => l.startsWith(`${prefix}-0[Epoch ${epoch}]`))!;
      const loss = Number(/Loss: (\S+)/.exec(line)![1]);
      const logged = got.scalars[`${prefix}_loss`][epoch - 1][1];
      assert.ok(Math.abs(logged - loss) < 1e-4, `${prefix} loss ${logged} vs console ${loss}`);
    }

    assert.deepEqual(
      Object.keys(got.images).sort(),
      ["test_augmentation1", "test_augmentation2", "train_augmentation1", "train_augmentation2"],
    );
    const grid = got.images.train_augmentation1.at(-1);
    // 32 views of 32 px, 8 a row: 4 rows.
    assert.deepEqual([grid.width, grid.height, grid.step], [8 * 34 + 2, 4 * 34 + 2, 2]);
    const distinct = new Set(grid.pixels.map((p: number[]) => p.join(","))).size;
    assert.ok(distinct > 10, `the grid shows pictures, not a flat colour (${distinct} colours in row 10)`);

    const config = JSON.parse(got.texts.config[0][1]);
    assert.equal(config.runName, r.name);
    assert.equal(config.batchSize, 32);

    const lines = Deno.readTextFileSync(join(runDir, "metrics.jsonl")).trimEnd().split("\n").map((l) =>
      JSON.parse(l)
    );
    assert.equal(lines.length, 4 + 2 * 11 + 2 * Object.keys(STAGE_TAGS).length);
    assert.equal(lines.filter((l) => l.tag === "test_top1").length, 2);
  },
});

Deno.test("an unreachable visdom server does not stop training", async () => {
  using dir = tempDir();
  const r = await tinyRun(dir.path, [
    "--visdom-url",
    "http://127.0.0.1",
    "--visdom-port",
    String(freePort()),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /test-0\[Epoch 2\]/);
  const warnings = r.stderr.split("\n").filter((l) => l.startsWith("visdom:"));
  assert.equal(warnings.length, 1, r.stderr);
  assert.match(warnings[0], /cannot post to http:\/\/127\.0\.0\.1:\d+ .*training goes on without it/);
});

Deno.test("the trainer keeps the first 64 views of a pass's last batch as uint8 for the grids", async () => {
  using dir = tempDir();
  const data = join(dir.path, "data");
  await writeDemoDataset(data, { trainPerClass: 8, testPerClass: 8 });
  const common = { dataDir: data, imageSize: 32, seed: 1 };
  using train = await Loader.create(loaderConfig({
    ...common,
    split: "train",
    batchSize: 72,
    augment: true,
    dropLast: true,
  }));
  using test = await Loader.create(loaderConfig({ ...common, split: "test", batchSize: 16, augment: false }));
  using trainer = await Trainer.create(trainerConfig({
    device: "cpu",
    arch: "resnet18",
    representationSize: 512,
    headLatentSize: 16,
    nceSize: 8,
    nceTemperature: 0.1,
    numClasses: 10,
    optimizer: "sgd",
    weightDecay: 0,
    seed: 1,
  }));
  assert.equal(await trainer.views("train1"), null, "nothing before the first batch");
  train.startEpoch(0);
  await trainer.trainStep((await train.next())!, 0.01);
  const [v1, v2] = [(await trainer.views("train1"))!, (await trainer.views("train2"))!];
  assert.deepEqual([v1.n, v1.c, v1.h, v1.w, v1.data.length], [64, 3, 32, 32, 64 * 3 * 32 * 32]);
  assert.notDeepEqual(v1.data, v2.data, "two different augmentations");
  assert.ok(new Set(v1.data).size > 100, "real pictures, the full uint8 range in use");

  test.startEpoch(0);
  await trainer.evalStep((await test.next())!);
  const first = (await trainer.views("test"))!;
  assert.equal(first.n, 16, "a batch smaller than 64 is kept whole");
  test.startEpoch(0);
  await trainer.evalStep((await test.next())!);
  assert.deepEqual((await trainer.views("test"))!.data, first.data, "test images are not augmented");
});
