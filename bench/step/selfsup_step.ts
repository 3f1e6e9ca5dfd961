/**
 * selfsup's side of bench/step: a trainer (as `selfsup train` makes it)
 * stepping on one fixed batch through the bench hooks of
 * native/src/bench.rs, which time each call on the trainer's thread.
 *
 *   deno run -A bench/step/selfsup_step.ts --method simclr|byol [--arch resnet18] [--small-stem]
 *       [--batch 64] [--size 32] [--threads 2] [--device cpu|cuda] [--precision fp32|fp16|bf16]
 *       [--channels-last] [--warmup 2] [--steps 8]
 *
 * Three calls are timed, each from Deno (the awaited FFI call) and on the
 * trainer's thread:
 * - `step`: forward, backward, update and metrics on the fixed views, the
 *   same work as bench/step/torch_step.py;
 * - `train_step`: the production step on a copy of the uint8 batch, which
 *   also turns it into float views and applies the photometric ops on the
 *   device (in the reference programs, DataLoader workers do that);
 * - `round trip`: a call that does nothing on the trainer's thread.
 *
 * FFI overhead per step = Deno's time for a `step` call − the trainer
 * thread's time for it: the non-blocking call, the post to the trainer's
 * thread, the wake-up and the promise. Prints one JSON line of medians.
 * @module
 */
import { parseArgs } from "node:util";
import { Trainer, type TrainerConfig, version } from "../../ffi/native.ts";
import { check, hook } from "../../ffi/lib.ts";
import { isMethod, METHOD_NAMES } from "../../train/config.ts";
import { defaultsOf } from "../../cli/config.ts";

const { values: o } = parseArgs({
  args: Deno.args,
  options: {
    method: { type: "string" },
    arch: { type: "string", default: "resnet18" },
    "small-stem": { type: "boolean", default: false },
    batch: { type: "string", default: "64" },
    size: { type: "string", default: "32" },
    classes: { type: "string", default: "10" },
    "head-latent-size": { type: "string", default: "0" },
    threads: { type: "string", default: "2" },
    device: { type: "string", default: "cpu" },
    precision: { type: "string", default: "fp32" },
    "channels-last": { type: "boolean", default: false },
    warmup: { type: "string", default: "2" },
    steps: { type: "string", default: "8" },
  },
});
if (!isMethod(o.method)) {
  console.error(`usage: selfsup_step.ts --method ${METHOD_NAMES.join("|")} [...] (see the file's header)`);
  Deno.exit(2);
}
const method = o.method;
// The bench hooks (native/src/bench.rs): in the testing library only
// (scripts/build-testing.sh; bench.py loads it), optional in ffi/symbols.ts.
const [benchSetup, benchStep] = (() => {
  try {
    return [hook("selfsup_trainer_bench_setup"), hook("selfsup_trainer_bench_step")];
  } catch (e) {
    console.error(`selfsup_step.ts: ${(e as Error).message}`);
    Deno.exit(2);
  }
})();

const [batch, size, threads] = [Number(o.batch), Number(o.size), Number(o.threads)];
const features = ["resnet18", "resnet34"].includes(o.arch) ? 512 : 2048;
const defaults = defaultsOf(method);
const info = version(); // libtorch is loaded before anything is timed
const config: TrainerConfig = {
  // The method's defaults (its own settings among them), then the bench's.
  ...defaults,
  device: o.device as TrainerConfig["device"],
  threads,
  arch: o.arch,
  smallStem: o["small-stem"],
  baseWidth: 64,
  representationSize: features,
  headLatentSize: Number(o["head-latent-size"]) || defaults.headLatentSize,
  numClasses: Number(o.classes),
  optimizer: "lars_momentum",
  weightDecay: 1e-6,
  seed: 0,
  precision: o.precision as TrainerConfig["precision"],
  // Stated either way: selfsup's default is channels_last, PyTorch's is not.
  channelsLast: o["channels-last"],
};
using trainer = await Trainer.create(config);
check(
  await benchSetup(BigInt(trainer.id), batch, size, BigInt(Number(o.classes)), 0n),
);

const [lr, tau] = [0.3 * batch / 256, 0.996];
const metrics = new Float64Array(6), secs = new Float64Array(1);
/** One hook call: [ms awaited in Deno, ms on the trainer's thread], and the loss. */
async function call(mode: number): Promise<[number, number, number]> {
  const t0 = performance.now();
  check(await benchStep(BigInt(trainer.id), mode, lr, tau, metrics, secs));
  return [performance.now() - t0, secs[0] * 1e3, metrics[0]];
}
/** User + system CPU seconds of this process (all threads), from /proc/self/stat (ticks of 10 ms). */
function cpuSeconds(): number {
  const fields = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const [warmup, steps] = [Number(o.warmup), Number(o.steps)];
const wall: number[] = [], inside: number[] = [], over: number[] = [];
let cpu = 0, firstLoss = NaN, lastLoss = NaN;
for (let s = 0; s < warmup + steps; s++) {
  const c0 = cpuSeconds();
  const [w, n, loss] = await call(1);
  if (s === 0) firstLoss = loss;
  lastLoss = loss;
  if (s < warmup) continue;
  cpu += cpuSeconds() - c0;
  wall.push(w), inside.push(n), over.push(w - n);
}
// The production step (views made and augmented on the device), after its own warm-up call.
const full: number[] = [];
for (let s = 0; s < 1 + Math.max(1, steps >> 1); s++) {
  const [w] = await call(2);
  if (s > 0) full.push(w);
}
const trips: number[] = [];
for (let s = 0; s < 200; s++) trips.push((await call(0))[0]);

const ms = median(wall);
console.log(JSON.stringify({
  impl: "selfsup",
  method,
  arch: o.arch,
  batch,
  size,
  device: o.device,
  precision: o.precision,
  channels_last: o["channels-last"],
  threads,
  steps,
  libtorch: info.libtorch,
  ms_per_step: ms,
  img_per_s: batch / (ms / 1e3),
  ms_min: Math.min(...wall),
  ms_max: Math.max(...wall),
  native_ms_per_step: median(inside),
  ffi_overhead_us: 1e3 * median(over),
  round_trip_us: 1e3 * median(trips),
  train_step_ms: median(full),
  cpu_s_per_step: cpu / steps,
  ms_each: wall.map((t) => Math.round(t * 10) / 10),
  first_loss: firstLoss,
  last_loss: lastLoss,
}));
