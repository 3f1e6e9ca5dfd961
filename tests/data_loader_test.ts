/**
 * The data pipeline as a user meets it: loaders over FFI (reports of bad
 * files, in-memory mode, views independent of workers) and the command
 * line (bad layouts, --strict, --task, the per-epoch skip report).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { NativeError } from "../ffi/lib.ts";
import { Loader, type LoaderConfig, Trainer, writeDemoDataset } from "../ffi/native.ts";
import { runCli, tempDir, trainerConfig, loaderConfig } from "./helpers.ts";

/** A small demo data set (10 classes of 32 px shapes) at `root` (which must not exist), some files broken on purpose. */
async function brokenDataSet(root: string): Promise<string[]> {
  await writeDemoDataset(root, { trainPerClass: 4, testPerClass: 2 });
  const zero = join(root, "train", "00_circle", "zero.png");
  const cut = join(root, "train", "01_square", "cut.png");
  const junk = join(root, "test", "02_triangle", "junk.jpg");
  Deno.writeFileSync(zero, new Uint8Array());
  const png = Deno.readFileSync(join(root, "train", "01_square", "00000.png"));
  Deno.writeFileSync(cut, png.subarray(0, png.length >> 1));
  Deno.writeTextFileSync(junk, "this is not a JPEG");
  return [zero, cut, junk];
}

const base = (dataDir: string): LoaderConfig =>
  loaderConfig({
    dataDir,
    split: "train",
    batchSize: 8,
    imageSize: 32,
    augment: true,
    shuffle: true,
    dropLast: true,
    seed: 4,
  });

Deno.test("unreadable images are skipped, counted and named in the loader's report; the trainer never sees them", async () => {
  using dir = tempDir();
  const data = join(dir.path, "data");
  const [zero, cut, junk] = await brokenDataSet(data);
  using trainer = await Trainer.create(trainerConfig({
    device: "cpu",
    arch: "resnet18",
    representationSize: 512,
    headLatentSize: 32,
    nceSize: 16,
    nceTemperature: 0.1,
    numClasses: 10,
    optimizer: "momentum",
    weightDecay: 0,
    seed: 1,
  }));
  using train = await Loader.create({ ...base(data), inMemory: "never" });
  train.startEpoch(0);
  const sizes = [];
  for (let b = await train.next(); b; b = await train.next()) {
    sizes.push((await trainer.trainStep(b, 0.01)).samples);
  }
  assert.deepEqual(sizes, [8, 8, 8, 8, 8], "42 files (2 unreadable): full batches, bad files replaced");
  const r = train.report();
  assert.equal(r.samples, 42);
  assert.equal(r.skipped.count, 2);
  assert.deepEqual(r.skipped.examples.map((e) => e.split(": ")[0]).sort(), [zero, cut].sort());
  assert.ok(
    r.skipped.examples.some((e) => e.includes("file is empty (0 bytes)")),
    r.skipped.examples.join("; "),
  );
  using test = await Loader.create({
    ...base(data),
    split: "test",
    augment: false,
    shuffle: false,
    dropLast: false,
  });
  test.startEpoch(0);
  let seen = 0;
  for (let b = await test.next(); b; b = await test.next()) seen += (await trainer.evalStep(b)).samples;
  assert.equal(seen, 20, "the unreadable test image is left out");
  assert.deepEqual(test.report().skipped.examples.map((e) => e.split(": ")[0]), [junk]);
});

Deno.test("the in-memory mode is chosen automatically under its budget and reported", async () => {
  using dir = tempDir();
  const data = join(dir.path, "data");
  await writeDemoDataset(data, { trainPerClass: 2, testPerClass: 1 });
  using auto = await Loader.create({ ...base(data), inMemory: "auto" });
  using tight = await Loader.create({ ...base(data), inMemory: "auto", inMemoryLimitMb: 0 });
  using never = await Loader.create({ ...base(data), inMemory: "never" });
  assert.deepEqual([auto.report().inMemory, tight.report().inMemory, never.report().inMemory], [
    true,
    false,
    false,
  ]);
  auto.startEpoch(0);
  for (let b = await auto.next(); b; b = await auto.next()) b.close();
  const r = auto.report();
  assert.ok(r.cachedImages >= 16 && r.cachedImages <= 20, `${r.cachedImages} images cached`);
  assert.ok(r.cachedBytes >= r.cachedImages * 3 * 32 * 32, `${r.cachedBytes} bytes`);
});

Deno.test("a bad loader setting is a one-line NativeError naming the flag", async () => {
  using dir = tempDir();
  const data = join(dir.path, "data");
  await writeDemoDataset(data, { trainPerClass: 2, testPerClass: 1 });
  await assert.rejects(
    () => Loader.create({ ...base(data), solarizeProb: [0, 1.5] }),
    (e: Error) =>
      e instanceof NativeError && /^--solarize-prob probability must be within \[0, 1\]/.test(e.message),
  );
  await assert.rejects(
    () => Loader.create({ ...base(data), batchSize: 64 }),
    (e: Error) =>
      e instanceof NativeError &&
      e.message.includes(`${join(data, "train")} has 20 images, fewer than one batch of 64`),
  );
});

/** Common flags of a tiny CLI run. */
function cliRun(data: string, models: string, extra: string[] = []): string[] {
  const tiny = "--num-replicas 1 --arch resnet18 --representation-size 512 --head-latent-size 32 " +
    "--image-size-override 32 --no-small-stem --batch-size 16 --epochs 1 --warmup 0 --seed 2 --no-cuda";
  return [
    "train",
    "--data-dir",
    data,
    "--model-dir",
    models,
    "--log-dir",
    join(models, "runs"),
    ...tiny.split(" "),
    ...extra,
  ];
}

Deno.test("the CLI reports skipped images once per epoch; --strict stops at the first one", async () => {
  using dir = tempDir();
  const data = join(dir.path, "data");
  const [zero, cut] = await brokenDataSet(data);
  // Batches of 21: the epoch uses all 42 training files, so it meets both bad ones.
  const ok = await runCli(
    cliRun(data, join(dir.path, "m"), ["--task", "dali_multi_augment_image_folder", "--batch-size", "21"]),
  );
  assert.equal(ok.code, 0, ok.stderr);
  const lines = ok.stdout.split("\n").filter((l) => l.includes("unreadable image"));
  assert.equal(lines.length, 2, ok.stdout);
  assert.match(lines[0], /^train: skipped 2 unreadable images in epoch 1 \(--strict stops instead\): /);
  assert.ok(lines[0].includes(`${zero}: file is empty (0 bytes)`) && lines[0].includes(cut), lines[0]);
  assert.match(lines[1], /^test: skipped 1 unreadable image in epoch 1 .*junk\.jpg: /);
  const strict = await runCli(cliRun(data, join(dir.path, "m2"), ["--strict", "--batch-size", "42"]));
  assert.equal(strict.code, 1);
  const err = strict.stderr.trim().split("\n");
  assert.equal(err.length, 1, strict.stderr);
  assert.match(err[0], /^selfsup: cannot decode .* \(--strict makes unreadable images fatal\)$/);
  assert.ok(err[0].includes(zero) || err[0].includes(cut), err[0]);
});

Deno.test("the CLI names what is wrong with a data folder in one line", async () => {
  using dir = tempDir();
  const data = join(dir.path, "data");
  await writeDemoDataset(data, { trainPerClass: 2, testPerClass: 1 });
  const one = async (extra: string[], pattern: RegExp) => {
    const r = await runCli(cliRun(data, join(dir.path, "m"), ["--debug-step", ...extra]));
    assert.equal(r.code, 1, r.stdout);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], pattern);
  };
  await one(
    ["--task", "cifar10"],
    /^selfsup: unknown --task cifar10; choose multi_augment_image_folder or dali_/,
  );
  await one(
    ["--batch-size", "32"],
    /^selfsup: .*\/data\/train has 20 images, fewer than one batch of 32 per replica/,
  );
  await one(["--blur-prob", "0.5,2"], /^selfsup: --blur-prob values must be in \[0, 1\], got 0.5,2/);
  await one(["--in-memory", "sometimes"], /^selfsup: --in-memory must be auto, always or never/);
  Deno.mkdirSync(join(data, "train", "99_empty"));
  await one([], /^selfsup: class folder .*\/data\/train\/99_empty has no images/);
  Deno.removeSync(join(data, "train", "99_empty"));
  // test/ is optional (tests/firstrun_test.ts); train/ is not, once test/ exists
  Deno.removeSync(join(data, "train"), { recursive: true });
  await one([], /^selfsup: --data-dir .*\/data has test\/ but no train\/: put the training images in .*\/data\/train$/);
});
