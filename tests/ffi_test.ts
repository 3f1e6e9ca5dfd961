import assert from "node:assert/strict";
import { join } from "node:path";
import { NativeError } from "../ffi/lib.ts";
import { Loader, scanFolder, Trainer, version, writeDemoDataset } from "../ffi/native.ts";
import { tempDir, trainerConfig, loaderConfig } from "./helpers.ts";
import { tensorOf, writeSafetensors } from "../train/safetensors.ts";

const tiny = trainerConfig({
  device: "cpu" as const,
  arch: "resnet18",
  smallStem: false,
  representationSize: 512,
  headLatentSize: 64,
  nceSize: 32,
  nceTemperature: 0.1,
  numClasses: 10,
  optimizer: "lars_momentum",
  weightDecay: 1e-6,
  seed: 3,
});

Deno.test("version reports libtorch 2.11.0 and CUDA state", () => {
  const v = version();
  assert.equal(v.libtorch, "2.11.0");
  assert.equal(typeof v.cuda, "boolean");
  assert.ok(v.cudaDevices >= 0);
  assert.ok(v.threads >= 1);
});

Deno.test("a missing data folder is a NativeError naming the path, and the library stays usable", async () => {
  const missing = "/nonexistent/selfsup-data";
  await assert.rejects(
    () => Loader.create(loaderConfig({ dataDir: missing, split: "train", batchSize: 4, imageSize: 32, augment: true })),
    (e: Error) => e instanceof NativeError && e.message.includes(`${missing}/train`) && !e.message.includes("\n"),
  );
  assert.throws(() => scanFolder(missing), NativeError);
  assert.equal(version().libtorch, "2.11.0");
});

Deno.test("a tensor shape mismatch inside libtorch reaches TypeScript as an Error; the trainer keeps working", async () => {
  using dir = tempDir();
  using trainer = await Trainer.create(tiny);
  // Two-channel images cannot go through a 3-channel first conv.
  const bad = join(dir.path, "bad.safetensors");
  writeSafetensors(bad, [
    ["view1", tensorOf([2, 2, 32, 32], new Float32Array(2 * 2 * 32 * 32).fill(0.5))],
    ["view2", tensorOf([2, 2, 32, 32], new Float32Array(2 * 2 * 32 * 32).fill(0.5))],
    ["labels", tensorOf([2], new BigInt64Array([0n, 1n]))],
  ]);
  await assert.rejects(
    () => trainer.debugGradients(bad, join(dir.path, "out.safetensors")),
    (e: Error) => e instanceof NativeError && /channels|shape|size/i.test(e.message) && !e.message.includes("\n"),
  );
  // The same trainer still runs a real step afterwards.
  await writeDemoDataset(join(dir.path, "data"), { trainPerClass: 2, testPerClass: 1 });
  using loader = await Loader.create(loaderConfig({
    dataDir: join(dir.path, "data"),
    split: "train",
    batchSize: 8,
    imageSize: 32,
    augment: true,
    shuffle: true,
    dropLast: true,
  }));
  loader.startEpoch(0);
  const batch = await loader.next();
  assert.ok(batch);
  const m = await trainer.trainStep(batch, 0.1);
  assert.ok(Number.isFinite(m.loss) && m.loss > 0);
  assert.equal(m.samples, 8);
});

Deno.test("closed and consumed handles are errors, not crashes", async () => {
  const trainer = await Trainer.create(tiny);
  trainer.close();
  assert.throws(() => trainer.id, /closed/);
  await assert.rejects(() => trainer.saveWeights("/tmp/x.safetensors"), /closed/);
});

Deno.test("bad settings are one-line native errors", async () => {
  await assert.rejects(
    () => Trainer.create({ ...tiny, representationSize: 2048 }),
    /--representation-size 2048 does not match resnet18's 512 features/,
  );
  await assert.rejects(() => Trainer.create({ ...tiny, arch: "resnet7" }), /unknown --arch "resnet7"; choose one of/);
  await assert.rejects(() => Trainer.create({ ...tiny, optimizer: "nope" }), /unknown --optimizer/);
});
