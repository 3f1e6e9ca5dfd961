/**
 * A real (tiny) training run through the CLI, then its outputs: the
 * TensorBoard file read back by tensorboard, metrics.jsonl, the folder
 * named after the run, and a visdom server that cannot be reached.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeDemoDataset } from "../ffi/native.ts";
import { STEP_LR_TAG } from "../train/logging.ts";
import { runCli, runPython, tempDir } from "./helpers.ts";
import { freePort, missingPython, skipReason } from "./logging_helpers.ts";

async function tinyRun(dir: string, extra: string[] = []) {
  const data = join(dir, "data");
  await writeDemoDataset(data, { trainPerClass: 8, testPerClass: 2 });
  const args = [
    "train",
    "--data-dir", data,
    "--model-dir", join(dir, "models"),
    "--log-dir", join(dir, "runs"),
    "--uid", "tiny",
    "--num-replicas", "1",
    "--arch", "resnet18",
    "--representation-size", "512",
    "--head-latent-size", "32",
    "--image-size-override", "32",
    "--batch-size", "32",
    "--epochs", "2",
    "--warmup", "1",
    "--optimizer", "momentum",
    "--lr", "0.05",
    "--seed", "3",
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
    assert.match(r.name, /^tiny_tmaimfolder_bs32_e2_iso32_ar18_rs512_ns128_hls32_nt0\.1_cjs1_wd1e-06_l0\.05_luscos_w1_omom_nr1_s3$/);
    const runDir = join(dir.path, "runs", r.name);
    assert.deepEqual([...Deno.readDirSync(join(dir.path, "runs"))].map((e) => e.name), [r.name]);
    assert.ok(Deno.statSync(join(dir.path, "models", `${r.name}.weights.safetensors`)).isFile);

    const got = JSON.parse(await runPython("tb_read.py", [runDir, "10"]));
    const perEpoch = ["loss", "nce-loss", "linear-loss", "top1", "top5"].flatMap((k) => [`train_${k}`, `test_${k}`]);
    assert.deepEqual(Object.keys(got.scalars).sort(), [...perEpoch, "train_learning-rate", STEP_LR_TAG].sort());
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

    const lines = Deno.readTextFileSync(join(runDir, "metrics.jsonl")).trimEnd().split("\n").map((l) => JSON.parse(l));
    assert.equal(lines.length, 4 + 2 * 11);
    assert.equal(lines.filter((l) => l.tag === "test_top1").length, 2);
  },
});

Deno.test("an unreachable visdom server does not stop training", async () => {
  using dir = tempDir();
  const r = await tinyRun(dir.path, ["--visdom-url", "http://127.0.0.1", "--visdom-port", String(freePort())]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /test-0\[Epoch 2\]/);
  const warnings = r.stderr.split("\n").filter((l) => l.startsWith("visdom:"));
  assert.equal(warnings.length, 1, r.stderr);
  assert.match(warnings[0], /cannot post to http:\/\/127\.0\.0\.1:\d+ .*training goes on without it/);
});
