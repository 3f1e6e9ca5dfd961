/**
 * One replica of the distributed tests (not a test itself): trains a few
 * steps through the library (Loader + Trainer), at a fixed learning rate,
 * and writes its per-step metrics (over all replicas) and its weights
 * before and after.
 *
 *   deno run -A tests/dist_worker.ts '<json spec>'
 *
 * Spec: { data, out, method, worldSize, rank, port, batch (per replica),
 * steps, syncBn, bnReplicas, float64, imageSize?, threads?, timeoutSecs?,
 * sleepAfterStep? }.
 */
import { trainerConfig, loaderConfig } from "./helpers.ts";
import { Loader, Trainer } from "../ffi/native.ts";

const spec = JSON.parse(Deno.args[0]);
const common = {
  dataDir: spec.data,
  batchSize: spec.batch,
  imageSize: spec.imageSize ?? 16,
  workers: 1,
  seed: 5,
  rank: spec.rank,
  worldSize: spec.worldSize,
  inMemory: "always" as const,
};
using loader = await Loader.create(loaderConfig({
  ...common,
  split: "train",
  augment: true,
  shuffle: true,
  dropLast: true,
}));
using trainer = await Trainer.create(trainerConfig({
  method: spec.method,
  // Gloo on the CPU: several replicas in one test cannot share one GPU.
  device: "cpu",
  threads: spec.threads ?? 1,
  arch: "resnet18",
  smallStem: true,
  representationSize: 512,
  headLatentSize: 32,
  nceSize: 16,
  projectionSize: 16,
  projectorWidths: "32-32-16",
  offDiagonalWeight: 0.005,
  numClasses: 10,
  optimizer: "momentum",
  weightDecay: 1e-4,
  seed: 7,
  float64: spec.float64,
  distributed: {
    worldSize: spec.worldSize,
    rank: spec.rank,
    port: spec.port,
    syncBn: spec.syncBn,
    bnReplicas: spec.bnReplicas,
    timeoutSecs: spec.timeoutSecs ?? 60,
  },
}));
await trainer.saveWeights(`${spec.out}.init.safetensors`);
const steps: number[][] = [];
let epoch = 0;
loader.startEpoch(epoch);
while (steps.length < spec.steps) {
  const batch = await loader.next();
  if (!batch) {
    loader.startEpoch(++epoch);
    continue;
  }
  const m = await trainer.trainStep(batch, 0.05, 0.99);
  steps.push([m.loss, m.sslLoss, m.linearLoss, m.top1, m.samples]);
  console.log(`step ${steps.length} loss ${m.loss}`);
  if (spec.sleepAfterStep) await new Promise((r) => setTimeout(r, spec.sleepAfterStep * 1000));
}
await trainer.saveWeights(`${spec.out}.safetensors`);
Deno.writeTextFileSync(`${spec.out}.json`, JSON.stringify({ steps }));
