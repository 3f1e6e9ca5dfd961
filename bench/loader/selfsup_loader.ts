/**
 * selfsup's side of the loader benchmark: the native loader over an
 * ImageFolder, as training uses it (each image decoded once, two
 * RandomResizedCrops resized to --size, per-view flip/jitter/blur
 * parameters drawn), from disk (no in-memory mode).
 *
 *   deno run -A bench/loader/selfsup_loader.ts <data-dir> --workers W [--batch 64] [--size 224] [--epochs 2]
 *
 * Prints one JSON line: {"samples", "seconds", "samples_per_s", "cpu_seconds"}
 * (CPU time of all the process's threads while loading; Deno's start-up excluded).
 * @module
 */
import { DEFAULTS } from "../../cli/config.ts";
import { parseArgs } from "node:util";
import { Loader, version } from "../../ffi/native.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    workers: { type: "string" },
    batch: { type: "string", default: "64" },
    size: { type: "string", default: "224" },
    epochs: { type: "string", default: "2" },
  },
});
if (positionals.length !== 1 || !values.workers) {
  console.error("usage: selfsup_loader.ts <data-dir> --workers W [--batch 64] [--size 224] [--epochs 2]");
  Deno.exit(2);
}
/** User + system CPU time of this process (all threads), from /proc/self/stat (clock ticks of 10 ms). */
function cpuSeconds(): number {
  const fields = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

version(); // loads libtorch before timing, as torchvision's script imports torch before it starts
const batchSize = Number(values.batch);
const t0 = performance.now(), cpu0 = cpuSeconds();
using loader = await Loader.create({
  dataDir: positionals[0],
  split: "train",
  batchSize,
  imageSize: Number(values.size),
  augment: true,
  shuffle: true,
  dropLast: true,
  workers: Number(values.workers),
  inMemory: "never",
  seed: 0,
  colorJitterStrength: DEFAULTS.colorJitterStrength,
  blurProb: DEFAULTS.blurProb,
  solarizeProb: DEFAULTS.solarizeProb,
});
let samples = 0;
for (let epoch = 0; epoch < Number(values.epochs); epoch++) {
  loader.startEpoch(epoch);
  for (let b = await loader.next(); b; b = await loader.next()) {
    b.close();
    samples += batchSize;
  }
}
const seconds = (performance.now() - t0) / 1000;
console.log(
  JSON.stringify({ samples, seconds, samples_per_s: samples / seconds, cpu_seconds: cpuSeconds() - cpu0 }),
);
