import assert from "node:assert/strict";
import { join } from "node:path";
import { EventWriter } from "../train/tensorboard.ts";
import { RunLog, STEP_LR_TAG } from "../train/logging.ts";
import { augmentationGrid, type ImageBatch, pngOf } from "../train/images.ts";
import { runPython, tempDir } from "./helpers.ts";
import { METRICS, missingPython, skipReason } from "./logging_helpers.ts";

interface ReadBack {
  scalars: Record<string, [number, number][]>;
  images: Record<
    string,
    { step: number; width: number; height: number; decoded: [number, number, string]; pixels: number[][] }[]
  >;
  texts: Record<string, [number, string, string][]>;
}

async function readBack(logdir: string, row = 0): Promise<ReadBack> {
  return JSON.parse(await runPython("tb_read.py", [logdir, String(row)]));
}

const noTensorboard = missingPython("tensorboard.backend.event_processing.event_accumulator");

Deno.test({
  name: "TensorBoard reads back our scalars, images and text with their steps and values",
  ignore: skipReason("TensorBoard round trip", noTensorboard),
  async fn() {
    using dir = tempDir();
    const w = new EventWriter(dir.path);
    const values = [4.25, 0, -1.5, 1e-6, 123456.789];
    values.forEach((v, i) => w.scalar("train_loss", v, i * 1000));
    // A 2x2 red/blue test card, repeated 3 times: the grid places and scales it.
    const card = new Uint8Array([200, 10, 200, 10, 0, 0, 0, 0, 10, 200, 10, 200]);
    const batch: ImageBatch = { n: 3, c: 3, h: 2, w: 2, data: new Uint8Array([...card, ...card, ...card]) };
    const grid = augmentationGrid(batch);
    w.image("train_augmentation1", pngOf(grid), grid.width, grid.height, 7);
    w.text("config", '    {\n      "lr": 0.3\n    }', 0);
    w.close();

    const got = await readBack(dir.path, 2);
    assert.deepEqual(got.scalars.train_loss, values.map((v, i) => [i * 1000, Math.fround(v)]));
    const [img] = got.images.train_augmentation1;
    assert.equal(img.step, 7);
    // make_grid: 3 images of 2 px in one row, 2 px of padding around each.
    assert.deepEqual([img.width, img.height], [3 * 4 + 2, 4 + 2]);
    assert.deepEqual(img.decoded, [14, 6, "RGB"]);
    // Row 2 (the first below the padding): each image scaled from its own 0..200 to 0..255.
    assert.deepEqual(img.pixels.slice(0, 6), [[0, 0, 0], [0, 0, 0], [255, 0, 12], [12, 0, 255], [0, 0, 0], [
      0,
      0,
      0,
    ]]);
    assert.deepEqual(got.texts.config, [[0, '    {\n      "lr": 0.3\n    }', "text"]]);
  },
});

Deno.test({
  name: "TensorBoard's reader checks our CRCs: a flipped byte loses the record",
  ignore: skipReason("TensorBoard CRC check", noTensorboard),
  async fn() {
    using dir = tempDir();
    const w = new EventWriter(dir.path);
    w.scalar("a_b", 1, 1);
    w.scalar("a_b", 2, 2);
    w.close();
    const bytes = Deno.readFileSync(w.path);
    bytes[bytes.length - 6] ^= 0xff; // inside the last record's data
    Deno.writeFileSync(w.path, bytes);
    const got = await readBack(dir.path);
    assert.deepEqual(got.scalars.a_b, [[1, 1]]);
  },
});

Deno.test({
  name: "a RunLog writes the reference's tags per epoch, the per-step LR, image grids and the config",
  ignore: skipReason("RunLog to TensorBoard", noTensorboard),
  async fn() {
    using dir = tempDir();
    const log = new RunLog({ method: "simclr", logDir: dir.path, name: "run_a" });
    log.config({ lr: 0.3, arch: "resnet18" });
    for (let s = 0; s < 6; s++) log.step(0.1 * s, s);
    const views: ImageBatch = { n: 70, c: 3, h: 80, w: 80, data: new Uint8Array(70 * 3 * 80 * 80).fill(9) };
    log.epoch(1, METRICS(5), METRICS(6), 0.25);
    log.images("train", [views, views], 1);
    log.images("test", [views, views], 1);
    log.epoch(2, METRICS(4), METRICS(5), 0.5);
    await log.close();

    assert.equal(log.dir, join(dir.path, "run_a"));
    const got = await readBack(log.dir!);
    const perEpoch = ["loss", "nce-loss", "linear-loss", "top1", "top5"].flatMap((
      k,
    ) => [`train_${k}`, `test_${k}`]);
    assert.deepEqual(
      Object.keys(got.scalars).sort(),
      [...perEpoch, "train_learning-rate", STEP_LR_TAG].sort(),
    );
    assert.deepEqual(got.scalars["train_nce-loss"], [[1, 4], [2, 3]]);
    assert.deepEqual(got.scalars["test_top5"], [[1, 120], [2, 100]]);
    assert.deepEqual(got.scalars["train_learning-rate"], [[1, 0.25], [2, 0.5]]);
    assert.deepEqual(got.scalars[STEP_LR_TAG].map(([s]) => s), [0, 1, 2, 3, 4, 5]);
    assert.equal(got.scalars[STEP_LR_TAG][3][1], Math.fround(0.1 * 3));
    assert.deepEqual(
      Object.keys(got.images).sort(),
      ["test_augmentation1", "test_augmentation2", "train_augmentation1", "train_augmentation2"],
    );
    // 64 of the 70 images, shrunk to 64 px, 8 per row.
    const img = got.images.train_augmentation1[0];
    assert.deepEqual([img.width, img.height, img.step], [8 * 66 + 2, 8 * 66 + 2, 1]);
    const [[step, text, plugin]] = got.texts.config;
    assert.equal(step, 0);
    assert.equal(plugin, "text");
    assert.deepEqual(JSON.parse(text), { runName: "run_a", lr: 0.3, arch: "resnet18" });
    assert.deepEqual(JSON.parse(Deno.readTextFileSync(join(log.dir!, "config.json"))), JSON.parse(text));
  },
});

Deno.test({
  name: "a BYOL RunLog names its loss byol-loss",
  ignore: skipReason("BYOL tags", noTensorboard),
  async fn() {
    using dir = tempDir();
    const log = new RunLog({ method: "byol", logDir: dir.path, name: "b" });
    log.epoch(1, METRICS(1), METRICS(2), 0.1);
    await log.close();
    const got = await readBack(log.dir!);
    assert.ok("train_byol-loss" in got.scalars && "test_byol-loss" in got.scalars);
    assert.ok(!("train_nce-loss" in got.scalars));
  },
});

Deno.test("a RunLog on a rank other than 0 writes nothing", async () => {
  using dir = tempDir();
  const log = new RunLog({ method: "simclr", logDir: dir.path, name: "r1", rank: 1 });
  log.config({});
  log.step(0.1, 0);
  log.epoch(1, METRICS(1), METRICS(1), 0.1);
  await log.close();
  assert.equal(log.dir, null);
  assert.deepEqual([...Deno.readDirSync(dir.path)], []);
});
