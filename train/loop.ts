/**
 * The training policy: epochs of train and test passes over native
 * loaders, a per-step learning rate, progress and the reference's
 * per-epoch summary lines, and a clean stop on SIGINT/SIGTERM.
 *
 * @module
 */
import { join } from "node:path";
import { type Config, ConfigError } from "../cli/config.ts";
import {
  Loader,
  type LoaderConfig,
  scanFolder,
  type StepMetrics,
  type StepRow,
  Trainer,
  version,
} from "../ffi/native.ts";
import { byolTau, lrAt, scaledLr, type Schedule } from "./schedule.ts";
import { type Position, readSidecar, resume, saveCheckpoint, sidecarPath } from "./checkpoint.ts";
import { BestSaver } from "./saver.ts";
import { AgreedStop, requeueUnderSlurm, StopFlag } from "./signals.ts";
import { NonFiniteError, nonFiniteMessage, stopsTheRun } from "./nonfinite.ts";
import { Progress } from "./progress.ts";
import { RunLog } from "./logging.ts";
import { inMemoryLine, skippedLine, validSamples } from "../cli/data.ts";
import { threadsPerReplica } from "../cli/launch.ts";

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
  /** Sums over all replicas, through `sum` (e.g. Trainer.allReduce); every rank calls it. */
  async reduce(sum: (values: number[]) => Promise<number[]>): Promise<void> {
    const all = await sum([...KEYS.map((k) => this.#sums[k]), this.samples]);
    KEYS.forEach((k, i) => this.#sums[k] = all[i]);
    this.samples = all[KEYS.length];
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
  /** The `last` checkpoint's sidecar. */
  checkpoint: string;
  stopped: boolean;
  classes: string[];
}

/** The reference's per-epoch console line (REFERENCE.md §6). */
export function summaryLine(
  prefix: string,
  rank: number,
  epoch: number,
  samples: number,
  secs: number,
  m: PassMetrics,
): string {
  return `${prefix}-${rank}[Epoch ${epoch}][${samples} samples][${secs.toFixed(2)} sec]:\t Loss: ${
    m.loss.toFixed(4)
  }\tTop-1: ${m.top1.toFixed(4)}\tTop-5: ${m.top5.toFixed(4)}`;
}

/**
 * Steps between metric read-backs: each read waits for the GPU to finish
 * the steps queued so far, so on CUDA the host reads every 16 steps and
 * the GPU is never idle in between; on the CPU, where a step is done when
 * its call returns, every step. `SELFSUP_METRICS_EVERY` overrides it
 * (tests: the logs are the same for any value).
 */
export function metricsEvery(
  cuda: boolean,
  env: Record<string, string | undefined> = Deno.env.toObject(),
): number {
  const v = env.SELFSUP_METRICS_EVERY;
  if (v === undefined || v === "") return cuda ? 16 : 1;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`SELFSUP_METRICS_EVERY must be a positive integer, got ${v}`);
  }
  return n;
}

/** The console line of a pass's loss scaling (fp16): skipped steps and the last scale. */
export function scalerLine(
  rank: number,
  epoch: number,
  skipped: number,
  steps: number,
  scale: number,
): string {
  return `amp-${rank}[Epoch ${epoch}]: ${skipped} of ${steps} steps skipped (inf/NaN gradients), loss scale ${scale}`;
}

/** Trains per `cfg`, printing progress with `log`; returns per-epoch summaries. */
export async function train(cfg: Config, log: (line: string) => void = console.log): Promise<RunResult> {
  const cuda = !cfg.noCuda && version().cuda;
  if (!cuda && cfg.precision === "fp16") {
    throw new ConfigError(
      "--precision fp16 (--half) needs a GPU: libtorch's fp16 convolutions on the CPU run over 10 times slower than fp32; use --precision bf16 or fp32",
    );
  }
  const trainDir = join(cfg.dataDir, "train");
  const { classes, samples } = scanFolder(trainDir);
  const testInfo = scanFolder(join(cfg.dataDir, "test"));
  const valid = validSamples(cfg.dataDir);
  log(
    `train = ${samples} | test = ${testInfo.samples}${
      valid === null ? "" : ` | valid = ${valid} (unused)`
    } | classes = ${classes.length}`,
  );
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
  using trainLoader = await Loader.create({
    ...common,
    split: "train",
    augment: true,
    shuffle: true,
    dropLast: true,
  });
  using testLoader = await Loader.create({ ...common, split: "test", augment: false });
  const memory = inMemoryLine(cfg.inMemory, { train: trainLoader.report(), test: testLoader.report() });
  if (memory) log(memory);
  using trainer = await Trainer.create({
    method: cfg.method,
    // A replica's GPU: its local rank modulo the GPUs it sees.
    device: cuda ? (cfg.worldSize > 1 ? `cuda:${cfg.localRank % version().cudaDevices}` : "cuda") : "cpu",
    threads: cfg.threads || (cuda ? 0 : threadsPerReplica(cfg, Deno.env.toObject())),
    distributed: {
      worldSize: cfg.worldSize,
      rank: cfg.rank,
      master: cfg.master ?? "127.0.0.1",
      port: cfg.port,
      timeoutSecs: cfg.distributedTimeout,
      syncBn: cfg.convertToSyncBn,
    },
    arch: cfg.arch,
    smallStem: cfg.smallStem,
    baseWidth: cfg.baseWidth,
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
    precision: cfg.precision,
    // Tests: GradScaler settings as JSON; with fp32 they turn loss scaling on.
    lossScaler: JSON.parse(Deno.env.get("SELFSUP_LOSS_SCALER") ?? "null") ?? undefined,
  });
  const steps = cfg.debugStep ? 1 : trainLoader.length;
  const schedule: Schedule = {
    base: scaledLr(cfg.lr, cfg.optimizer, cfg.batchSizePerReplica * cfg.worldSize),
    warmupSteps: cfg.warmup * steps,
    totalSteps: cfg.epochs * steps,
    kind: cfg.lrUpdateSchedule,
  };
  log(
    `${cfg.method} | ${cuda ? "cuda" : "cpu"} | ${cfg.arch} | ${steps} steps/epoch | peak lr ${
      schedule.base.toPrecision(4)
    }` +
      (cfg.precision === "fp32" ? "" : ` | ${cfg.precision}`),
  );
  if (cfg.worldSize > 1) {
    log(
      `replica ${cfg.rank} of ${cfg.worldSize} (${cfg.launchedBy}), rendezvous ${cfg.master}:${cfg.port}, ${cfg.batchSizePerReplica} images per step each`,
    );
  }
  await using runLog = RunLog.fromConfig(cfg, (m) => console.error(m));
  runLog.config(cfg);
  if (runLog.dir) log(`logging to ${runLog.dir} (TensorBoard: tensorboard --logdir ${cfg.logDir})`);
  using signals = new StopFlag();
  // Several replicas stop only together (see AgreedStop), one alone at once.
  const stop = cfg.worldSize > 1 ? new AgreedStop(signals, (v) => trainer.allReduce(v, "max")) : signals;
  const resumed = cfg.noResume ? null : await resume(trainer, cfg);
  const pos: Position = resumed ?? { epoch: 1, batch: 0, step: 0, bestLoss: null, sinceBest: 0 };
  if (cfg.worldSize > 1) {
    // Every replica must continue from the same checkpoint (one rank 0 wrote).
    const [first, last] = [
      (await trainer.allReduce([pos.step], "min"))[0],
      (await trainer.allReduce([pos.step], "max"))[0],
    ];
    if (first !== last) {
      throw new Error(
        `the replicas resumed at different steps (${first} to ${last}): --model-dir ${cfg.modelDir} must be one folder all ranks share`,
      );
    }
  }
  if (resumed) log(`resumed ${cfg.runName} at epoch ${pos.epoch}, batch ${pos.batch} (step ${pos.step})`);
  const saver = new BestSaver(cfg.epochs, cfg.earlyStop, pos.bestLoss, pos.sinceBest);
  const save = async (kind: "last" | "best") => {
    if (cfg.rank !== 0) return;
    await saveCheckpoint(trainer, cfg, kind, {
      ...pos,
      bestLoss: saver.bestLoss,
      sinceBest: saver.sinceBest,
    });
  };
  const testPass = async (epoch: number) => {
    const t1 = performance.now();
    const testMeter = new Meter();
    // Every replica evaluates rank 0's model on its shard of the test set;
    // the sums are then taken over the replicas.
    await trainer.beginEval();
    testLoader.startEpoch(0);
    for (let b = await testLoader.next(); b; b = cfg.debugStep ? null : await testLoader.next()) {
      testMeter.add(await trainer.evalStep(b));
    }
    await testMeter.reduce((v) => trainer.allReduce(v));
    const secs = (performance.now() - t1) / 1000;
    log(summaryLine("test", cfg.rank, epoch, testMeter.samples, secs, testMeter.mean()));
    const testSkips = skippedLine("test", epoch, testLoader.report());
    if (testSkips) log(testSkips);
    return { meter: testMeter, secs };
  };
  const epochs: EpochSummary[] = [];
  let lastSave = performance.now();
  // Testing preemption: a real SIGTERM to ourselves after this many steps.
  const selfTerm = Number(Deno.env.get("SELFSUP_SIGTERM_AFTER_STEPS") ?? "0");
  const termRank = Deno.env.has("SELFSUP_SIGTERM_RANK") ? Number(Deno.env.get("SELFSUP_SIGTERM_RANK")) : null;
  // Testing the non-finite stop: a NaN into a variable (SELFSUP_POISON_VAR,
  // default the first parameter) after this many steps, on one rank or all.
  const poison = Number(Deno.env.get("SELFSUP_POISON_AFTER_STEPS") ?? "0");
  const poisonRank = Deno.env.has("SELFSUP_POISON_RANK") ? Number(Deno.env.get("SELFSUP_POISON_RANK")) : null;
  // Steps run whose metrics are still on the device: their step, batch and learning rate.
  const every = metricsEvery(cuda);
  let pending: { step: number; batch: number; lr: number }[] = [];
  while (pos.epoch <= cfg.epochs && !stop.requested) {
    const epoch = pos.epoch;
    const t0 = performance.now();
    const trainMeter = new Meter();
    const progress = new Progress(`epoch ${epoch}/${cfg.epochs}`, steps);
    const amp = { skipped: 0, steps: 0, scale: 0 };
    // Reads the pending steps' metrics back (one synchronisation) and logs
    // them step by step, exactly as if each had been read at once.
    const drain = async () => {
      if (pending.length === 0) return;
      const rows: StepRow[] = await trainer.takeMetrics(pending.length);
      rows.forEach((m, i) => {
        const at = pending[i];
        if (stopsTheRun(m)) {
          const side = sidecarPath(cfg.modelDir, cfg.runName, "last");
          const last = readSidecar(side);
          throw new NonFiniteError(
            nonFiniteMessage(
              { epoch, step: at.step + 1 },
              m,
              cfg.precision,
              last && { path: side, step: last.step },
            ),
          );
        }
        runLog.step(at.lr, at.step);
        if (m.lossScale > 0) {
          runLog.lossScale(m.lossScale, at.step);
          amp.steps++;
          amp.scale = m.lossScale;
          if (m.skipped) amp.skipped++;
        }
        trainMeter.add(m);
        progress.update(at.batch + 1, trainMeter.samples, m.loss);
      });
      pending = [];
    };
    trainLoader.startEpoch(epoch - 1, pos.batch);
    let lr = 0;
    while (pos.batch < steps && !stop.requested) {
      const batch = await trainLoader.next();
      if (!batch) break;
      lr = lrAt(schedule, pos.step);
      const tau = byolTau(cfg.baseDecay, pos.step, schedule.totalSteps);
      await trainer.trainStepDeferred(batch, lr, tau);
      pending.push({ step: pos.step, batch: pos.batch, lr });
      pos.step++;
      pos.batch++;
      if (pos.step === selfTerm && (termRank === null || termRank === cfg.rank)) {
        Deno.kill(Deno.pid, "SIGTERM");
      }
      if (pos.step === poison && (poisonRank === null || poisonRank === cfg.rank)) {
        await trainer.debugPoison(Deno.env.get("SELFSUP_POISON_VAR") ?? "");
      }
      // Every replica reads back (and agrees on a stop) after the same steps.
      if (pos.step % every === 0 || pos.batch === steps) {
        await drain();
        if (stop instanceof AgreedStop) await stop.agree();
      }
      if (cfg.checkpointMinutes > 0 && performance.now() - lastSave > cfg.checkpointMinutes * 60_000) {
        await drain();
        await save("last");
        lastSave = performance.now();
      }
    }
    await drain();
    progress.done();
    const trainSecs = (performance.now() - t0) / 1000;
    log(summaryLine("train", cfg.rank, epoch, trainMeter.samples, trainSecs, trainMeter.mean()));
    if (amp.steps > 0) {
      log(scalerLine(cfg.rank, epoch, amp.skipped, amp.steps, amp.scale));
      runLog.scalars(epoch, { "train_skipped-steps": amp.skipped, "train_loss-scale": amp.scale });
    }
    const trainSkips = skippedLine("train", epoch, trainLoader.report());
    if (trainSkips) log(trainSkips);
    if (stop.requested) break;
    const test = await testPass(epoch);
    if (cfg.knnMonitor > 0 && epoch % cfg.knnMonitor === 0) {
      const knn = await knnMonitor(trainer, cfg, common, classes.length);
      log(`knn-${cfg.rank}[Epoch ${epoch}]: Top-1: ${knn.top1.toFixed(4)}\tTop-5: ${knn.top5.toFixed(4)}`);
      runLog.scalars(epoch, { "test_knn-top1": knn.top1, "test_knn-top5": knn.top5 });
    }
    epochs.push({
      epoch,
      train: trainMeter.mean(),
      test: test.meter.mean(),
      lr,
      seconds: trainSecs + test.secs,
    });
    runLog.epoch(epoch, trainMeter.mean(), test.meter.mean(), lr);
    await runLog.augmentations(trainer, epoch);
    const verdict = saver.observe(epoch, test.meter.mean().loss);
    pos.epoch++;
    pos.batch = 0;
    if (verdict.best) await save("best");
    await save("last");
    lastSave = performance.now();
    if (verdict.stop) {
      log(
        `Early stopping is triggered: loss: ${saver.bestLoss?.toFixed(4)} (no better test loss in ${
          BestSaver.PATIENCE + 1
        } epochs)`,
      );
      const best = readSidecar(sidecarPath(cfg.modelDir, cfg.runName, "best"));
      if (best) {
        await trainer.loadCheckpoint(join(cfg.modelDir, best.weights));
        await testPass(epoch);
      }
      break;
    }
  }
  if (stop.requested) {
    await save("last");
    log(
      `saved the last checkpoint at epoch ${pos.epoch}, batch ${pos.batch}; run the same command to resume`,
    );
    if (cfg.rank === 0 && stop.signal !== "SIGINT") {
      const requeued = await requeueUnderSlurm();
      if (requeued) log(requeued);
    }
  }
  const last = sidecarPath(cfg.modelDir, cfg.runName, "last");
  if (cfg.rank === 0) log(`checkpoint: ${last}`);
  return { epochs, checkpoint: last, stopped: stop.requested, classes };
}

/**
 * The kNN monitor: frozen features of the resized train and test images,
 * classified by a 200-neighbour weighted kNN (cli/evaluate.ts explains).
 */
async function knnMonitor(
  trainer: Trainer,
  cfg: Config,
  common: Omit<LoaderConfig, "split" | "augment">,
  classes: number,
): Promise<{ top1: number; top5: number }> {
  await trainer.clearFeatures();
  for (const split of ["train", "test"] as const) {
    using loader = await Loader.create({ ...common, split, augment: false, rank: 0, worldSize: 1 });
    loader.startEpoch(0);
    for (let b = await loader.next(); b; b = cfg.debugStep ? null : await loader.next()) {
      await trainer.embed(b, split);
    }
  }
  const r = await trainer.classify(classes, { knn: { k: 200, temperature: 0.1 } });
  await trainer.clearFeatures();
  return r;
}
