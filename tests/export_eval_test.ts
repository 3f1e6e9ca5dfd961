/**
 * Self-describing exports: the metadata an export records, and `eval
 * --backbone` reading it (same score as the checkpoint it came from, at the
 * size it was trained at); `eval --checkpoint` finding its data folder.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeDemoDataset } from "../ffi/native.ts";
import { Progress } from "../train/progress.ts";
import { readSafetensors, writeSafetensors } from "../train/safetensors.ts";
import { runCli, tempDir } from "./helpers.ts";

Deno.test("an export records how to use it; eval --backbone reads that and scores as the checkpoint does", async () => {
  using dir = tempDir();
  const data = join(dir.path, "data");
  await writeDemoDataset(data, { trainPerClass: 4, testPerClass: 2 });
  const models = join(dir.path, "models");
  const r = await runCli([
    "train", "--data-dir", data, "--model-dir", models, "--log-dir", join(dir.path, "runs"), "--epochs", "1",
    "--base-width", "8", "--head-latent-size", "16", "--nce-size", "8", "--batch-size", "16", "--workers-per-replica", "1",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const last = join(models, [...Deno.readDirSync(models)].find((e) => e.name.endsWith(".last.json"))!.name);
  const out = join(dir.path, "backbone.safetensors");
  const e = await runCli(["export", last, out]);
  assert.equal(e.code, 0, e.stderr);
  assert.match(e.stdout, /^wrote \d+ resnet18 tensors \(online weights, epoch 1, 32 px, small stem\) to /);
  const meta = readSafetensors(out).metadata;
  assert.deepEqual(
    { ...meta, run: undefined },
    {
      format: "selfsup-backbone/1", method: "simclr", arch: "resnet18", smallStem: "true", baseWidth: "8", representationSize: "64",
      imageSize: "32", epoch: "1", weights: "online", run: undefined, dataDir: data,
    },
  );

  // the checkpoint finds its data folder; the export finds its backbone, size and data folder
  const fromCheckpoint = await runCli(["eval", "knn", "--checkpoint", last, "--k", "5"]);
  assert.equal(fromCheckpoint.code, 0, fromCheckpoint.stderr);
  const fromExport = await runCli(["eval", "knn", "--backbone", out, "--k", "5"]);
  assert.equal(fromExport.code, 0, fromExport.stderr);
  assert.match(fromExport.stdout, new RegExp(`^knn evaluation of ${out} \\(resnet18, small stem\\) on ${data} at 32 px$`, "m"));
  assert.match(fromExport.stdout, /^fitting 5-nearest neighbours on 40 train features, scoring 20 test images$/m);
  const score = (s: string) => s.match(/^knn evaluation \(online weights, resnet18\): (top-1 .*)$/m)?.[1];
  assert.ok(score(fromCheckpoint.stdout), fromCheckpoint.stdout);
  assert.equal(score(fromExport.stdout), score(fromCheckpoint.stdout), "same weights, same size, same score");

  // flags that contradict the metadata, and foreign weights without it, are one-line errors
  const wrong = await runCli(["eval", "knn", "--backbone", out, "--arch", "resnet50"]);
  assert.equal(wrong.code, 1);
  assert.equal(wrong.stderr, `selfsup: ${out}'s metadata says arch resnet18; drop --arch resnet50\n`);
  const bare = join(dir.path, "bare.safetensors");
  writeSafetensors(bare, readSafetensors(out).tensors);
  const noSize = await runCli(["eval", "knn", "--backbone", bare, "--arch", "resnet18", "--data-dir", data]);
  assert.equal(noSize.code, 1);
  assert.equal(noSize.stderr, `selfsup: ${bare} has no selfsup metadata: give the image size it was trained at with --image-size-override\n`);
});

Deno.test("eval's progress bar: images per second and time left, no loss", () => {
  let ms = 0;
  const out: string[] = [];
  const p = new Progress("features of train", 10, { tty: true, write: (t) => out.push(t), now: () => ms });
  ms = 2000;
  p.update(5, 1280);
  assert.equal(out[0], "\r\x1b[2Kfeatures of train [############............] 5/10 | 640 img/s | eta 2s");
});
