/**
 * A first run as a new user makes it: a folder of unlabelled 32-px PNGs,
 * `train --data-dir DIR --epochs 2` and nothing else; then the same
 * command again (finished), with more epochs (continued), and unlabelled
 * data with a test split, a --uid run, --resume PATH and CPU replicas
 * started without a launcher.
 */
import assert from "node:assert/strict";
import { basename, join } from "node:path";
import { writeDemoDataset } from "../ffi/native.ts";
import { readSidecar } from "../train/checkpoint.ts";
import { runCli, tempDir } from "./helpers.ts";

/** `n` demo images (32x32 PNGs, several classes) moved into one flat folder `dir`. */
export async function flatFolder(dir: string, n: number): Promise<string> {
  const tmp = `${dir}.tmp`;
  await writeDemoDataset(tmp, { trainPerClass: Math.ceil(n / 10), testPerClass: 1 });
  Deno.mkdirSync(dir, { recursive: true });
  const files = [...Deno.readDirSync(join(tmp, "train"))].flatMap((c) =>
    [...Deno.readDirSync(join(tmp, "train", c.name))].map((f) => join(tmp, "train", c.name, f.name))
  ).sort().slice(0, n);
  files.forEach((f, i) => Deno.renameSync(f, join(dir, `img${String(i).padStart(3, "0")}.png`)));
  Deno.removeSync(tmp, { recursive: true });
  return dir;
}

/** The CLI run in `cwd` (where .models/ and runs/ then go). */
function cli(cwd: string, args: string[]) {
  return runCli(args, {}, cwd);
}

/** The epochs a run's output trained (from its summary lines). */
function trainedEpochs(stdout: string): number[] {
  return [...stdout.matchAll(/^train-0\[Epoch (\d+)\]/gm)].map((m) => Number(m[1]));
}

Deno.test("a first run: a flat folder of 32-px PNGs with --epochs 2 and nothing else trains and ends with a clear result", async () => {
  using dir = tempDir();
  const data = await flatFolder(join(dir.path, "photos"), 24);
  const r = await cli(dir.path, ["train", "--data-dir", data, "--epochs", "2"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^train = 24 unlabelled \| test = none \(no test\/ folder\) \| classes = none$/m);
  assert.match(r.stdout, /^no train\/ folder in .*photos: its images are the training set$/m);
  assert.match(r.stdout, /^no labels \(no class folders\): the online linear probe and accuracies are off; kNN and linear eval need a labelled folder$/m);
  assert.match(r.stdout, /^the best checkpoint follows the self-supervised loss on the training images \(no test\/\)$/m);
  assert.match(
    r.stdout,
    /^chosen for this data: --image-size-override 32 \(the data's images \(32x32\)\), --arch resnet18 \(images of 64 px or less\), --small-stem \(images of 64 px or less\), --batch-size 16 \(.*24 training images fill\)/m,
  );
  // one step of 16 an epoch; the summary line has no accuracies without labels
  assert.match(r.stdout, /^train-0\[Epoch 2\]\[16 samples\]\[[\d.]+ sec\]:\t Loss: [\d.]+$/m);
  assert.deepEqual(trainedEpochs(r.stdout), [1, 2]);
  assert.doesNotMatch(r.stdout, /Top-1|test-0\[/);
  const result = r.stdout.match(/^self-supervised loss after epoch 2: ([\d.]+) on the training images$/m);
  assert.ok(result, r.stdout);
  assert.match(r.stdout, /^use the backbone: selfsup export .*\.last\.json backbone\.safetensors/m);

  // the run's files, under a short name, in the current folder
  const sides = [...Deno.readDirSync(join(dir.path, ".models"))].map((e) => e.name).filter((n) => n.endsWith(".json")).sort();
  assert.equal(sides.length, 2, sides.join(", "));
  const name = sides[1].replace(/\.last\.json$/, "");
  assert.match(name, /^simclr-r18-photos-[0-9a-f]{8}$/);
  assert.deepEqual(sides, [`${name}.best.json`, `${name}.last.json`]);
  const config = join(dir.path, "runs", name, "config.json");
  assert.ok(Deno.statSync(config).isFile);
  assert.deepEqual(readSidecar(join(dir.path, ".models", sides[1]))!.result?.epoch, 2);

  // the same command again: finished, its last result, nothing trained
  const again = await cli(dir.path, ["train", "--data-dir", data, "--epochs", "2"]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, new RegExp(`^${name} is finished: it trained all 2 epochs \\(.*${name}\\.last\\.json\\); raise --epochs to train on`, "m"));
  assert.match(again.stdout, new RegExp(`^self-supervised loss after epoch 2: ${result[1]} on the training images$`, "m"));
  assert.deepEqual(trainedEpochs(again.stdout), []);

  // more epochs continue the same run (same name, from epoch 3)
  const more = await cli(dir.path, ["train", "--data-dir", data, "--epochs", "3"]);
  assert.equal(more.code, 0, more.stderr);
  assert.match(more.stdout, new RegExp(`^resumed ${name} at epoch 3, batch 0 \\(step 2\\) from .*${name}\\.last\\.json \\(--epochs 2 before, now 3\\)$`, "m"));
  assert.deepEqual(trainedEpochs(more.stdout), [3]);
  assert.equal([...Deno.readDirSync(join(dir.path, ".models"))].filter((e) => e.name.endsWith(".json")).length, 2);

  // the saved config goes back in with --config and names the same run
  const printed = await cli(dir.path, ["train", "--config", config, "--print-config"]);
  assert.equal(printed.code, 0, printed.stderr);
  const c = JSON.parse(printed.stdout);
  assert.equal(c.runName, name);
  assert.equal(c.sources.batchSize, `config ${config}`);

  // kNN evaluation needs labels: not these, but a labelled folder's
  const last = join(dir.path, ".models", `${name}.last.json`);
  const knn = await cli(dir.path, ["eval", "knn", "--checkpoint", last]);
  assert.equal(knn.code, 1);
  assert.equal(
    knn.stderr.trim(),
    `selfsup: eval knn needs labelled train/ and test/ folders (one sub-folder of images per class): ${data} has no class folders`,
  );
  const labelled = join(dir.path, "labelled");
  await writeDemoDataset(labelled, { trainPerClass: 2, testPerClass: 1 });
  const scored = await cli(dir.path, ["eval", "knn", "--checkpoint", last, "--data-dir", labelled, "--k", "3"]);
  assert.equal(scored.code, 0, scored.stderr);
  assert.match(scored.stdout, /^knn evaluation \(online weights, resnet18\): top-1 [\d.]+ %/m);
});

const TINY = ["--base-width", "8", "--head-latent-size", "16", "--nce-size", "8", "--workers-per-replica", "1"];

Deno.test("unlabelled train/ and test/: the test SSL loss picks the best; a --uid run continues under its name; --resume PATH", async () => {
  using dir = tempDir();
  const data = join(dir.path, "data");
  await flatFolder(join(data, "train"), 16);
  await flatFolder(join(data, "test"), 6);
  const models = join(dir.path, "models");
  const args = (epochs: number) => ["train", "--data-dir", data, "--uid", "u", "--epochs", String(epochs), "--model-dir", models, "--log-dir", join(dir.path, "runs"), ...TINY];
  const r = await cli(dir.path, args(1));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^train = 16 unlabelled \| test = 6 unlabelled \| classes = none$/m);
  assert.match(r.stdout, /^the best checkpoint follows the self-supervised loss on test\/$/m);
  assert.match(r.stdout, /^test-0\[Epoch 1\]\[6 samples\]\[[\d.]+ sec\]:\t Loss: [\d.]+$/m);
  assert.match(r.stdout, /^self-supervised loss after epoch 1: [\d.]+ on the training images, [\d.]+ on test\/$/m);
  const first = readdir(models);
  const name = first.find((n) => n.endsWith(".last.json"))!.replace(".last.json", "");
  assert.match(name, /^u_tmaimfolder_bs16_e1_/);
  const best = readSidecar(join(models, `${name}.best.json`))!;
  assert.equal(best.bestLoss, readSidecar(join(models, `${name}.last.json`))!.result!.test!.sslLoss);

  // --epochs 2 names another run with --uid; it finds this one and continues it
  const more = await cli(dir.path, args(2));
  assert.equal(more.code, 0, more.stderr);
  assert.match(more.stdout, new RegExp(`^resumed ${name} at epoch 2, batch 0 \\(step 1\\) from .* \\(--epochs 1 before, now 2\\)$`, "m"));
  assert.deepEqual(trainedEpochs(more.stdout), [2]);
  assert.deepEqual(readdir(models).map((n) => n.replace(/-\d+\.safetensors$/, "")), first.map((n) => n.replace(/-\d+\.safetensors$/, "")));

  // --resume PATH: that checkpoint's settings, position and run; flags override them
  const from = join(models, `${name}.last.json`);
  const resumed = await cli(dir.path, ["train", "--resume", from, "--epochs", "3"]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stdout, new RegExp(`^resumed ${name} at epoch 3, batch 0 \\(step 2\\) from ${from} \\(--epochs 2 before, now 3\\)$`, "m"));
  assert.deepEqual(trainedEpochs(resumed.stdout), [3]);
  // other settings branch a new run off the checkpoint
  const branch = await cli(dir.path, ["train", "--resume", from, "--epochs", "4", "--lr", "0.1"]);
  assert.equal(branch.code, 0, branch.stderr);
  assert.match(branch.stdout, /^resumed u_tmaimfolder_bs16_e4_.*_l0\.1_.* at epoch 4, batch 0 \(step 3\)/m);
  assert.deepEqual(trainedEpochs(branch.stdout), [4]);
});

Deno.test("several CPU replicas start themselves when no launcher started them", async () => {
  using dir = tempDir();
  const data = await flatFolder(join(dir.path, "flat"), 16);
  const r = await cli(dir.path, ["train", "--data-dir", data, "--num-replicas", "2", "--epochs", "1", ...TINY]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^starting 2 replicas on this machine \(one per process\), as selfsup launch --nproc 2$/m);
  assert.match(r.stdout, /^replica 0 of 2 \(torchrun\)/m);
  assert.match(r.stdout, /^\[rank 1\] replica 1 of 2 \(torchrun\)/m);
  assert.match(r.stdout, /^train-0\[Epoch 1\]\[16 samples\]/m);
});

function readdir(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => basename(e.name)).sort();
}
