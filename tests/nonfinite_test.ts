/**
 * The stop on inf/NaN: a weight forced to NaN ends the run after the step
 * that met it with one line (epoch, step, the last good checkpoint, a hint
 * that fits the precision); the checkpoint written before stays the last
 * one and holds only finite values; a NaN on one replica stops both
 * replicas after the same step; the native writer refuses non-finite
 * tensors.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Trainer, writeDemoDataset } from "../ffi/native.ts";
import { readSidecar } from "../train/checkpoint.ts";
import { readSafetensors } from "../train/safetensors.ts";
import { nonFiniteMessage, stopsTheRun } from "../train/nonfinite.ts";
import { runCli, tempDir, trainerConfig } from "./helpers.ts";

/** A tiny SimCLR run on 40 images in batches of 8: 5 steps an epoch. */
function trainArgs(dir: string): string[] {
  // deno-fmt-ignore
  return [
    "train", "--data-dir", join(dir, "data"), "--model-dir", join(dir, "models"), "--log-dir", join(dir, "runs"),
    "-a", "resnet18", "--representation-size", "512", "--head-latent-size", "16", "--nce-size", "8", "--small-stem",
    "--image-size-override", "8", "--batch-size", "8", "--epochs", "3", "--warmup", "0", "--optimizer", "momentum",
    "--lr", "0.01", "--workers-per-replica", "1", "--threads", "1", "--no-cuda", "--uid", "nan",
  ];
}

/** The same run on one replica. */
function oneReplica(dir: string): string[] {
  return [...trainArgs(dir), "--num-replicas", "1"];
}

/** Every float32 value of every tensor in a safetensors file is finite. */
function allFinite(path: string): boolean {
  for (const t of readSafetensors(path).tensors.values()) {
    if (t.dtype !== "F32") continue;
    const f = new Float32Array(t.data.slice().buffer);
    if (!f.every(Number.isFinite)) return false;
  }
  return true;
}

Deno.test("which steps stop the run, and the hint for each precision", () => {
  assert.equal(stopsTheRun({ loss: 3, nonFinite: false, skipped: false }), false);
  assert.equal(stopsTheRun({ loss: NaN, nonFinite: false, skipped: false }), true);
  assert.equal(stopsTheRun({ loss: 3, nonFinite: true, skipped: false }), true);
  // A step the fp16 loss scaler skipped changed nothing.
  assert.equal(stopsTheRun({ loss: Infinity, nonFinite: false, skipped: true }), false);
  const at = { epoch: 2, step: 8 };
  const good = { path: "m/run.last.json", step: 5 };
  const fp32 = nonFiniteMessage(at, { loss: NaN, nonFinite: false }, "fp32", good);
  assert.match(
    fp32,
    /^training stopped at epoch 2, step 8: the loss became NaN; .*m\/run\.last\.json \(step 5\).*lower --lr/,
  );
  const bf16 = nonFiniteMessage(at, { loss: 1.5, nonFinite: true }, "bf16", null);
  assert.match(
    bf16,
    /weights or optimizer state became inf\/NaN .*no checkpoint had been written yet.*--precision fp32/,
  );
  assert.doesNotMatch(bf16, /^.*lower --lr \(or/);
  for (const m of [fp32, bf16]) assert.equal(m.split("\n").length, 1);
});

Deno.test("a NaN weight stops the run after that step with one line; the previous checkpoint stays, finite", async () => {
  using dir = tempDir();
  await writeDemoDataset(join(dir.path, "data"), { seed: 3, trainPerClass: 4, testPerClass: 1, size: 8 });
  // After 7 steps (epoch 2, batch 2) a NaN goes into the first parameter;
  // step 8 is the first to meet it.
  const r = await runCli(oneReplica(dir.path), { SELFSUP_POISON_AFTER_STEPS: "7" });
  assert.equal(r.code, 1, r.stdout + r.stderr);
  // Progress lines go to stderr too; the error is the last line, and one line.
  const errors = r.stderr.split("\n").filter((l) => l.startsWith("selfsup:"));
  assert.equal(errors.length, 1, r.stderr);
  const line = r.stderr.trim().split("\n").at(-1)!;
  assert.equal(line, errors[0]);
  assert.match(line, /^selfsup: training stopped at epoch 2, step 8: /);
  const side = join(dir.path, "models", readSidecarName(join(dir.path, "models")));
  assert.ok(line.includes(`${side} (step 5)`), line);
  assert.match(line, /lower --lr/);
  // Epoch 1's checkpoint is still the last one, and it is finite.
  const s = readSidecar(side)!;
  assert.equal(s.step, 5);
  assert.ok(allFinite(join(dir.path, "models", s.weights)));
  assert.match(r.stdout, /^train-0\[Epoch 1\]/m);
  assert.doesNotMatch(r.stdout, /^train-0\[Epoch 2\]/m);
});

/** The one `last` sidecar in a model folder. */
function readSidecarName(models: string): string {
  const names = [...Deno.readDirSync(models)].map((e) => e.name).filter((n) => n.endsWith(".last.json"));
  assert.equal(names.length, 1, `${names}`);
  return names[0];
}

Deno.test("a NaN in one replica's weights stops both replicas after the same step (Gloo, 2 processes)", async () => {
  using dir = tempDir();
  await writeDemoDataset(join(dir.path, "data"), { seed: 3, trainPerClass: 4, testPerClass: 1, size: 8 });
  // Rank 1 only: its next forward meets the NaN; rank 0's does not.
  const r = await runCli(["launch", "--nproc", "2", ...trainArgs(dir.path)], {
    SELFSUP_POISON_AFTER_STEPS: "2",
    SELFSUP_POISON_RANK: "1",
  });
  assert.notEqual(r.code, 0, r.stdout + r.stderr);
  // 40 images, global batch 8 over 2 replicas: 5 steps an epoch; step 3 meets the NaN.
  const stop =
    /^(\[rank 1\] )?selfsup: training stopped at epoch 1, step 3: weights or optimizer state became inf\/NaN/;
  const seen = r.stderr.split("\n").filter((l) => stop.test(l));
  assert.deepEqual(seen.map((l) => l.startsWith("[rank 1]")).sort(), [false, true], r.stderr);
  assert.doesNotMatch(r.stdout + r.stderr, /saved the last checkpoint|SIGTERM/);
});

Deno.test("the checkpoint writer refuses non-finite tensors and writes nothing", async () => {
  using dir = tempDir();
  using trainer = await Trainer.create(trainerConfig({
    arch: "resnet18",
    representationSize: 512,
    headLatentSize: 16,
    nceSize: 8,
    numClasses: 3,
    optimizer: "momentum",
    weightDecay: 0,
    seed: 1,
  }));
  const good = join(dir.path, "good.safetensors");
  await trainer.saveCheckpoint(good);
  await trainer.debugPoison("head.0.bias");
  const bad = join(dir.path, "bad.safetensors");
  await assert.rejects(
    () => trainer.saveCheckpoint(bad),
    /not writing .*bad\.safetensors: model\.head\.0\.bias holds inf or NaN/,
  );
  assert.ok(allFinite(good));
  assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name), ["good.safetensors"]);
});
