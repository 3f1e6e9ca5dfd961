/**
 * The training policy: epochs of train and test passes over native
 * loaders, a per-step learning rate, progress and the reference's
 * per-epoch summary lines, and a clean stop on SIGINT/SIGTERM.
 *
 * @module
 */
import { join } from "node:path";
import type { Config } from "../cli/config.ts";
import { Loader, scanFolder, type StepMetrics, Trainer, version } from "../ffi/native.ts";
import { byolTau, lrAt, type Schedule, scaledLr } from "./schedule.ts";
import { Progress } from "./progress.ts";
import { RunLog } from "./logging.ts";
import { inMemoryLine, skippedLine, validSamples } from "../cli/data.ts";

/** Means of a pass: loss, SSL loss, classifier loss, top-1 and top-5 (%). */
export type PassMetrics = Omit<StepMetrics, "samples">;
const KEYS: (keyof PassMetrics)[] = ["loss", "sslLoss", "linearLoss", "top1", "top5"];

/** Sample-weighted means of step metrics over a pass. */
export class Meter {
  samples = 0;
  #sums: PassMetrics = { loss: 0, sslLoss: 0, linearLoss: 0, top1: 0, top5: 0 };
  add(m: StepMetrics): void {
    for (const k of KEYS) this.#sums[k] += m[k] * m.samples;
    this.samples += m.samples;
  }
  mean(): PassMetrics {
    const n = Math.max(1, this.samples);
    return Object.fromEntries(KEYS.map((k) => [k, this.#sums[k] / n])) as PassMetrics;
  }
}

export interface EpochSummary {
  epoch: number;
  train: PassMetrics;
  test: PassMetrics;
  lr: number;
  seconds: number;
}

export interface RunResult {
  epochs: EpochSummary[];
  weights: string;
  stopped: boolean;
  classes: string[];
}

/** The reference's per-epoch console line (REFERENCE.md §6). */
export function summaryLine(prefix: string, rank: number, epoch: number, samples: number, secs: number, m: PassMetrics): string {
  return `${prefix}-${rank}[Epoch ${epoch}][${samples} samples][${secs.toFixed(2)} sec]:\t Loss: ${
    m.loss.toFixed(4)
  }\tTop-1: ${m.top1.toFixed(4)}\tTop-5: ${m.top5.toFixed(4)}`;
}

/** Stops the loop between steps on SIGINT/SIGTERM (a second SIGINT exits at once). */
class StopFlag {
  requested = false;
  #handlers: [Deno.Signal, () => void][] = [];
  constructor() {
    for (const sig of ["SIGINT", "SIGTERM"] as Deno.Signal[]) {
      const h = () => {
        if (this.requested && sig === "SIGINT") Deno.exit(130);
        this.requested = true;
        console.error(`\n${sig}: finishing the current step, then saving and exiting`);
      };
      Deno.addSignalListener(sig, h);
      this.#handlers.push([sig, h]);
    }
  }
  [Symbol.dispose](): void {
    for (const [s, h] of this.#handlers) Deno.removeSignalListener(s, h);
  }
}

/** Trains per `cfg`, printing progress with `log`; returns per-epoch summaries. */
export async function train(cfg: Config, log: (line: string) => void = console.log): Promise<RunResult> {
  const trainDir = join(cfg.dataDir, "train");
  const { classes, samples } = scanFolder(trainDir);
  const testInfo = scanFolder(join(cfg.dataDir, "test"));
  const valid = validSamples(cfg.dataDir);
  log(`train = ${samples} | test = ${testInfo.samples}${valid === null ? "" : ` | valid = ${valid} (unused)`} | classes = ${classes.length}`);
  const common = {
    dataDir: cfg.dataDir,
    batchSize: cfg.batchSize / cfg.numReplicas,
    imageSize: cfg.imageSizeOverride,
    workers: cfg.workersPerReplica,
    seed: cfg.seed ?? 0,
    colorJitterStrength: cfg.colorJitterStrength,
    blurProb: cfg.blurProb,
    solarizeProb: cfg.solarizeProb,
    strict: cfg.strict,
    inMemory: cfg.inMemory,
    pinMemory: !cfg.noCuda && version().cuda,
    rank: cfg.rank,
    worldSize: cfg.worldSize,
  };
  using trainLoader = await Loader.create({ ...common, split: "train", augment: true, shuffle: true, dropLast: true });
  using testLoader = await Loader.create({ ...common, split: "test", augment: false });
  const memory = inMemoryLine(cfg.inMemory, { train: trainLoader.report(), test: testLoader.report() });
  if (memory) log(memory);
  const cuda = !cfg.noCuda && version().cuda;
  using trainer = await Trainer.create({
    method: cfg.method,
    device: cuda ? "cuda" : "cpu",
    threads: cfg.threads,
    arch: cfg.arch,
    smallStem: cfg.smallStem,
    representationSize: cfg.representationSize,
    headLatentSize: cfg.headLatentSize,
    nceSize: cfg.nceSize,
    nceTemperature: cfg.nceTemperature,
    projectionSize: cfg.projectionSize,
    byolLoss: cfg.byolLoss,
    numClasses: classes.length,
    optimizer: cfg.optimizer,
    weightDecay: cfg.weightDecay,
    clip: cfg.clip,
    polyakEma: cfg.polyakEma,
    weightInitialization: cfg.weightInitialization,
    seed: cfg.seed ?? 0,
  });
  const steps = cfg.debugStep ? 1 : trainLoader.length;
  const schedule: Schedule = {
    base: scaledLr(cfg.lr, cfg.optimizer, cfg.batchSizePerReplica * cfg.worldSize),
    warmupSteps: cfg.warmup * steps,
    totalSteps: cfg.epochs * steps,
    kind: cfg.lrUpdateSchedule,
  };
  log(`${cfg.method} | ${cuda ? "cuda" : "cpu"} | ${cfg.arch} | ${steps} steps/epoch | peak lr ${schedule.base.toPrecision(4)}`);
  await using runLog = RunLog.fromConfig(cfg, (m) => console.error(m));
  runLog.config(cfg);
  if (runLog.dir) log(`logging to ${runLog.dir} (TensorBoard: tensorboard --logdir ${cfg.logDir})`);
  using stop = new StopFlag();
  const epochs: EpochSummary[] = [];
  let step = 0;
  for (let epoch = 1; epoch <= cfg.epochs && !stop.requested; epoch++) {
    const t0 = performance.now();
    const trainMeter = new Meter();
    const progress = new Progress(`epoch ${epoch}/${cfg.epochs}`, steps);
    trainLoader.startEpoch(epoch - 1);
    let lr = 0;
    for (let i = 0; i < steps && !stop.requested; i++) {
      const batch = await trainLoader.next();
      if (!batch) break;
      lr = lrAt(schedule, step);
      runLog.step(lr, step);
      const tau = byolTau(cfg.baseDecay, step++, schedule.totalSteps);
      const m = await trainer.trainStep(batch, lr, tau);
      if (!Number.isFinite(m.loss)) throw new Error(`the loss became ${m.loss} at step ${step}; lower --lr`);
      trainMeter.add(m);
      progress.update(i + 1, trainMeter.samples, m.loss);
    }
    progress.done();
    const trainSecs = (performance.now() - t0) / 1000;
    log(summaryLine("train", 0, epoch, trainMeter.samples, trainSecs, trainMeter.mean()));
    const trainSkips = skippedLine("train", epoch, trainLoader.report());
    if (trainSkips) log(trainSkips);
    if (stop.requested) break;
    const t1 = performance.now();
    const testMeter = new Meter();
    testLoader.startEpoch(0);
    for (let b = await testLoader.next(); b; b = cfg.debugStep ? null : await testLoader.next()) {
      testMeter.add(await trainer.evalStep(b));
    }
    const testSecs = (performance.now() - t1) / 1000;
    log(summaryLine("test", 0, epoch, testMeter.samples, testSecs, testMeter.mean()));
    const testSkips = skippedLine("test", epoch, testLoader.report());
    if (testSkips) log(testSkips);
    epochs.push({ epoch, train: trainMeter.mean(), test: testMeter.mean(), lr, seconds: trainSecs + testSecs });
    runLog.epoch(epoch, trainMeter.mean(), testMeter.mean(), lr);
    await runLog.augmentations(trainer, epoch);
  }
  const weights = join(cfg.modelDir, `${cfg.runName}.weights.safetensors`);
  await saveAtomically(trainer, weights);
  log(`weights saved to ${weights}`);
  return { epochs, weights, stopped: stop.requested, classes };
}

/** Writes to a temporary name, then renames: a crash never leaves a torn file. */
async function saveAtomically(trainer: Trainer, path: string): Promise<void> {
  await Deno.mkdir(join(path, ".."), { recursive: true });
  const tmp = `${path}.tmp-${Deno.pid}`;
  await trainer.saveWeights(tmp);
  const f = await Deno.open(tmp, { read: true });
  try {
    await f.sync();
  } finally {
    f.close();
  }
  await Deno.rename(tmp, path);
}
