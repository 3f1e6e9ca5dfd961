/**
 * The training policy: epochs of train and test passes over native
 * loaders, a per-step learning rate, progress and the reference's
 * per-epoch summary lines, and a clean stop on SIGINT/SIGTERM.
 *
 * @module
 */
import { dirname, join, resolve } from "node:path";
import { type Config, ConfigError, methodSpec } from "./config.ts";
import { Loader, type LoaderConfig, type StepMetrics, type StepRow, Trainer, version } from "../ffi/native.ts";
import { byolTau, lrAt, type Schedule, scaledLr } from "./schedule.ts";
import { NonFiniteError, nonFiniteMessage, stopsTheRun } from "./nonfinite.ts";
import {
  abandonSave,
  type Accumulators,
  contradiction,
  type EpochResult,
  loadWeights,
  type PassMetrics,
  type Position,
  readSidecar,
  removeLeftovers,
  resume,
  saveCheckpoint,
  type Sidecar,
  sidecarPath,
} from "./checkpoint.ts";
import { RunLock } from "./runlock.ts";
import { continuingLine, findCheckpoint, finished } from "./resume.ts";
import { BestSaver } from "./saver.ts";
import { AgreedStop, requeueUnderSlurm, StopFlag } from "./signals.ts";
import { Progress } from "./progress.ts";
import { RunLog, tensorboardHint } from "./logging.ts";
import { type EpochStages, StageClock, stageScalars, stagesLine, StepProfiler } from "./stages.ts";
import { type DataLayout, dataLayout, inMemoryLine, layoutLines, loaderFolder, requireLabels, skippedLine } from "./data.ts";
import { replicaDevice, threadsPerReplica } from "./replica.ts";

const KEYS: (keyof PassMetrics)[] = ["loss", "sslLoss", "linearLoss", "top1", "top5"];

/** Sample-weighted means of step metrics over a pass. */
export class Meter {
  samples = 0;
  #sums: PassMetrics = { loss: 0, sslLoss: 0, linearLoss: 0, top1: 0, top5: 0 };
  add(m: StepMetrics): void {
    for (const k of KEYS) this.#sums[k] += m[k] * m.samples;
    this.samples += m.samples;
  }
  /** The running totals, for a checkpoint inside the pass. */
  totals(): Accumulators {
    return { ...this.#sums, samples: this.samples };
  }
  /** Continues from {@link totals}. */
  restore(t: Accumulators): void {
    for (const k of KEYS) this.#sums[k] = t[k] ?? 0;
    this.samples = t.samples ?? 0;
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
  /** Null without a test split. */
  test: PassMetrics | null;
  lr: number;
  seconds: number;
  /** Where the epoch's time went (train/stages.ts). */
  stages: EpochStages;
}

export interface RunResult {
  epochs: EpochSummary[];
  /** The `last` checkpoint's sidecar. */
  checkpoint: string;
  stopped: boolean;
  /** The training classes; none for unlabelled images. */
  classes: string[];
  /** The run's name (that of the run it continued, if it continued one). */
  runName: string;
  /** The last finished epoch's numbers, also when this call trained nothing. */
  last: EpochResult | null;
  /** The run had done all its epochs before this call: nothing was trained. */
  alreadyFinished: boolean;
}

/** Options of {@link train}. */
export interface TrainOptions {
  /** The data set's layout, when the caller has read it already. */
  layout?: DataLayout;
  /** Continue from this checkpoint (`--resume`) instead of the run's own. */
  resumeFrom?: string;
}

/**
 * The reference's per-epoch console line (REFERENCE.md §6); without
 * labels (`accuracy` false) it ends after the loss.
 */
export function summaryLine(prefix: string, rank: number, epoch: number, samples: number, secs: number, m: PassMetrics, accuracy = true): string {
  const head = `${prefix}-${rank}[Epoch ${epoch}][${samples} samples][${secs.toFixed(2)} sec]:\t Loss: ${m.loss.toFixed(4)}`;
  return accuracy ? `${head}\tTop-1: ${m.top1.toFixed(4)}\tTop-5: ${m.top5.toFixed(4)}` : head;
}

/** What "best" means for a run's data: the reference's test loss, or the self-supervised loss without labels. */
export function bestBy(l: DataLayout): { split: "train" | "test"; key: "loss" | "sslLoss"; words: string } {
  if (l.testLabelled) return { split: "test", key: "loss", words: "the test loss (SSL + probe), as the reference" };
  if (l.test) return { split: "test", key: "sslLoss", words: "the self-supervised loss on test/" };
  return { split: "train", key: "sslLoss", words: "the self-supervised loss on the training images (no test/)" };
}

/**
 * Steps between metric read-backs: each read waits for the GPU to finish
 * the steps queued so far, so on CUDA the host reads every 16 steps and
 * the GPU is never idle in between; on the CPU, where a step is done when
 * its call returns, every step. `SELFSUP_METRICS_EVERY` overrides it
 * (tests: the logs are the same for any value).
 */
export function metricsEvery(cuda: boolean, env: Record<string, string | undefined> = Deno.env.toObject()): number {
  const v = env.SELFSUP_METRICS_EVERY;
  if (v === undefined || v === "") return cuda ? 16 : 1;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`SELFSUP_METRICS_EVERY must be a positive integer, got ${v}`);
  return n;
}

/** The console line of a pass's loss scaling (fp16): skipped steps and the last scale. */
export function scalerLine(rank: number, epoch: number, skipped: number, steps: number, scale: number): string {
  return `amp-${rank}[Epoch ${epoch}]: ${skipped} of ${steps} steps skipped (inf/NaN gradients), loss scale ${scale}`;
}

/**
 * Trains per `cfg`, printing progress with `log`; returns per-epoch
 * summaries. A run continues from its last checkpoint (or `resumeFrom`);
 * one that has done all its epochs trains nothing and returns its last
 * result.
 */
export async function train(cfg: Config, log: (line: string) => void = console.log, opts: TrainOptions = {}): Promise<RunResult> {
  const cuda = !cfg.noCuda && version().cuda;
  const device = replicaDevice(cfg, version());
  if (!cuda && cfg.precision === "fp16") {
    throw new ConfigError(
      "--precision fp16 (--half) needs a GPU: libtorch's fp16 convolutions on the CPU run over 10 times slower than fp32; use --precision bf16 or fp32",
    );
  }
  const found = findCheckpoint(cfg, opts.resumeFrom);
  if (found) cfg = { ...cfg, runName: found.runName };
  const layout = opts.layout ?? dataLayout(cfg.dataDir);
  const classes = layout.labelled ? layout.train.classes : [];
  const last = sidecarPath(cfg.modelDir, cfg.runName, "last");
  // A finished run trains nothing. Several replicas first meet and check
  // that they share the checkpoint (below): a rank that looks in another
  // --model-dir must fail with the others, not wait for them alone.
  const finishedRun: RunResult | null = found && finished(found, cfg)
    ? { epochs: [], checkpoint: found.path, stopped: false, classes, runName: cfg.runName, last: found.side.result ?? null, alreadyFinished: true }
    : null;
  if (finishedRun && cfg.worldSize === 1) {
    // It still clears what killed writers left, under its lock.
    using _lock = await lockRun(cfg, null, log);
    return finishedRun;
  }
  if (cfg.knnMonitor > 0) requireLabels(layout, "--knn-monitor");
  for (const line of layoutLines(layout)) log(line);
  const best = bestBy(layout);
  if (!layout.testLabelled) log(`the best checkpoint follows ${best.words}`);
  const common = {
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
  using trainLoader = await Loader.create({ ...common, ...loaderFolder(layout.train), augment: true, shuffle: true, dropLast: true });
  using testLoader = layout.test ? await Loader.create({ ...common, ...loaderFolder(layout.test), augment: false }) : null;
  const memory = inMemoryLine(cfg.inMemory, { train: trainLoader.report(), ...(testLoader ? { test: testLoader.report() } : {}) });
  if (memory) log(memory);
  // The configuration crosses the FFI as it is (the native side reads the
  // keys it knows, a method its own settings), with this process's place.
  using trainer = await Trainer.create({
    ...cfg,
    device,
    threads: cfg.threads || (cuda ? 0 : threadsPerReplica(cfg, Deno.env.toObject())),
    distributed: {
      worldSize: cfg.worldSize,
      rank: cfg.rank,
      master: cfg.master ?? "127.0.0.1",
      port: cfg.port,
      timeoutSecs: cfg.distributedTimeout,
      syncBn: cfg.convertToSyncBn,
    },
    // Without labels every sample has label 0 and the probe one output: its
    // cross-entropy is exactly 0 and it learns nothing (the probe is off).
    numClasses: Math.max(1, classes.length),
    seed: cfg.seed ?? 0,
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
  // The momentum target's decay after step k is the schedule's at k + lead.
  const momentumLead = methodSpec(cfg.method).momentumLead ?? 0;
  log(
    `${cfg.method} | ${cuda ? "cuda" : "cpu"} | ${cfg.arch} | ${steps} steps/epoch | peak lr ${schedule.base.toPrecision(4)}` +
      (cfg.precision === "fp32" ? "" : ` | ${cfg.precision}`),
  );
  if (cfg.worldSize > 1) {
    log(`replica ${cfg.rank} of ${cfg.worldSize} (${cfg.launchedBy}), rendezvous ${cfg.master}:${cfg.port}, ${cfg.batchSizePerReplica} images per step each`);
  }
  using lock = await lockRun(cfg, trainer, log);
  // Read again under the lock: another process may have saved since findCheckpoint.
  const side = found ? readSidecar(found.path) : null;
  const why = side && contradiction(cfg, side.config);
  if (why) throw new Error(why);
  // A checkpoint of this very run (not one that --resume starts a new run from)
  // continues its logs from its marks; a fresh start sets older logs aside.
  const ownFiles = side !== null && side.config.runName === cfg.runName && resolve(dirname(found!.path)) === resolve(cfg.modelDir);
  const ownLast = ownFiles && resolve(found!.path) === resolve(last);
  await using runLog = RunLog.fromConfig(cfg, (m) => console.error(m), ownFiles ? side.logs : null);
  runLog.config(cfg);
  if (runLog.dir) log(`logging to ${runLog.dir} (TensorBoard: ${tensorboardHint(cfg.logDir)})`);
  using signals = new StopFlag(undefined, abandonSave);
  // Several replicas stop only together (see AgreedStop), one alone at once.
  const stop = cfg.worldSize > 1 ? new AgreedStop(signals, (v) => trainer.allReduce(v, "max")) : signals;
  const resumed = side ? await resume(trainer, side, dirname(found!.path)) : null;
  const pos: Position = resumed ?? { epoch: 1, batch: 0, step: 0, bestLoss: null, sinceBest: 0 };
  if (cfg.worldSize > 1) {
    // Every replica must continue from the same checkpoint (one rank 0 wrote).
    const [first, last] = [(await trainer.allReduce([pos.step], "min"))[0], (await trainer.allReduce([pos.step], "max"))[0]];
    if (first !== last) {
      throw new Error(
        `the replicas resumed at different steps (${first} to ${last}): --model-dir ${cfg.modelDir} must be one folder all ranks share`,
      );
    }
  }
  if (finishedRun) return finishedRun;
  if (found && resumed) log(continuingLine(found, cfg));
  const saver = new BestSaver(cfg.epochs, cfg.earlyStop, pos.bestLoss, pos.sinceBest);
  let result: EpochResult | null = side?.result ?? null;
  // Per kind, the checkpoint whose weights file holds the trainer's weights as they are.
  const current: Record<"last" | "best", Sidecar | null> = { last: ownLast ? side : null, best: null };
  // `train`: the epoch's running totals, when the checkpoint falls inside it.
  const save = async (kind: "last" | "best", train?: Accumulators) => {
    if (cfg.rank !== 0) return;
    const extras = { train, logs: runLog.marks(), same: current[kind], result };
    current[kind] = await saveCheckpoint(trainer, cfg, kind, { ...pos, bestLoss: saver.bestLoss, sinceBest: saver.sinceBest }, extras);
  };
  const testPass = async (epoch: number, testLoader: Loader) => {
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
    log(summaryLine("test", cfg.rank, epoch, testMeter.samples, secs, testMeter.mean(), layout.testLabelled));
    const testSkips = skippedLine("test", epoch, testLoader.report());
    if (testSkips) log(testSkips);
    return { meter: testMeter, secs };
  };
  const epochs: EpochSummary[] = [];
  let lastSave = performance.now();
  // Testing preemption and crashes: a real SIGTERM (or SIGKILL) to ourselves after this many steps.
  const selfTerm = Number(Deno.env.get("SELFSUP_SIGTERM_AFTER_STEPS") ?? "0");
  const selfKill = Number(Deno.env.get("SELFSUP_SIGKILL_AFTER_STEPS") ?? "0");
  const termRank = Deno.env.has("SELFSUP_SIGTERM_RANK") ? Number(Deno.env.get("SELFSUP_SIGTERM_RANK")) : null;
  // Steps run whose metrics are still on the device: their step, batch and learning rate.
  const every = metricsEvery(cuda);
  const pending: { step: number; batch: number; lr: number }[] = [];
  // Testing the non-finite stop: a NaN into a variable (SELFSUP_POISON_VAR,
  // default the first parameter) after this many steps, on one rank or all.
  const poison = Number(Deno.env.get("SELFSUP_POISON_AFTER_STEPS") ?? "0");
  const poisonRank = Deno.env.has("SELFSUP_POISON_RANK") ? Number(Deno.env.get("SELFSUP_POISON_RANK")) : null;
  // The totals of a checkpoint inside an epoch: that epoch's means count its batches from before the stop.
  let carried = pos.batch > 0 ? side?.train ?? null : null;
  const profiler = new StepProfiler(trainer, cfg.profile && runLog.dir ? join(runLog.dir, "profile.json") : null, log);
  while (pos.epoch <= cfg.epochs && !stop.requested) {
    const epoch = pos.epoch;
    const t0 = performance.now();
    const clock = new StageClock();
    const trainMeter = new Meter();
    const progress = new Progress(`epoch ${epoch}/${cfg.epochs}`, steps);
    const amp = { skipped: 0, steps: 0, scale: 0 };
    if (carried) {
      trainMeter.restore(carried);
      Object.assign(amp, { skipped: carried.ampSkipped ?? 0, steps: carried.ampSteps ?? 0, scale: carried.ampScale ?? 0 });
      carried = null;
    }
    const totals = () => ({ ...trainMeter.totals(), ampSkipped: amp.skipped, ampSteps: amp.steps, ampScale: amp.scale });
    // Reads the pending steps' metrics back (one synchronisation) and logs
    // them step by step, exactly as if each had been read at once. On CUDA
    // the newest `keep` steps stay queued, so the GPU has work while the
    // host waits for the older ones and logs them.
    const drain = (keep = 0) => clock.time("readBack", async () => {
      if (pending.length <= keep) return;
      const rows: StepRow[] = await trainer.takeMetrics(pending.length - keep);
      rows.forEach((m, i) => {
        const at = pending[i];
        if (stopsTheRun(m)) {
          const side = sidecarPath(cfg.modelDir, cfg.runName, "last");
          const last = readSidecar(side);
          throw new NonFiniteError(nonFiniteMessage({ epoch, step: at.step + 1 }, m, cfg.precision, last && { path: side, step: last.step }));
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
      pending.splice(0, rows.length);
    });
    trainLoader.startEpoch(epoch - 1, pos.batch);
    // The learning rate of the epoch's last step so far (a resume may start after it).
    let lr = pos.batch > 0 ? lrAt(schedule, pos.step - 1) : 0;
    while (pos.batch < steps && !stop.requested) {
      const batch = await clock.time("dataWait", () => trainLoader.next());
      if (!batch) break;
      lr = lrAt(schedule, pos.step);
      const tau = byolTau(cfg.baseDecay, pos.step + momentumLead, schedule.totalSteps);
      await profiler.beforeStep();
      await trainer.trainStepDeferred(batch, lr, tau);
      pending.push({ step: pos.step, batch: pos.batch, lr });
      pos.step++;
      pos.batch++;
      if (pos.step === selfTerm && (termRank === null || termRank === cfg.rank)) Deno.kill(Deno.pid, "SIGTERM");
      if (pos.step === selfKill) Deno.kill(Deno.pid, "SIGKILL");
      if (pos.step === poison && (poisonRank === null || poisonRank === cfg.rank)) {
        await trainer.debugPoison(Deno.env.get("SELFSUP_POISON_VAR") ?? "");
      }
      // Every replica reads back (and agrees on a stop) after the same steps.
      if (pos.step % every === 0 || pos.batch === steps) {
        await drain(pos.batch === steps || !cuda ? 0 : 1);
        if (stop instanceof AgreedStop) await stop.agree();
      }
      if (lock?.lost) throw new Error(lock.lost);
      await profiler.afterStep(drain);
      if (cfg.checkpointMinutes > 0 && performance.now() - lastSave > cfg.checkpointMinutes * 60_000) {
        await drain();
        await clock.time("checkpointLog", () => save("last", totals()));
        lastSave = performance.now();
      }
    }
    await drain();
    await profiler.afterStep(drain, true);
    clock.trainDone();
    progress.done();
    const trainSecs = (performance.now() - t0) / 1000;
    log(summaryLine("train", cfg.rank, epoch, trainMeter.samples, trainSecs, trainMeter.mean(), layout.labelled));
    if (amp.steps > 0) log(scalerLine(cfg.rank, epoch, amp.skipped, amp.steps, amp.scale));
    const trainSkips = skippedLine("train", epoch, trainLoader.report());
    if (trainSkips) log(trainSkips);
    if (stop.requested) {
      await save("last", totals());
      break;
    }
    // The epoch's training is kept before anything else can fail (the
    // epoch-end checkpoint below reuses this weights file).
    await save("last", totals());
    lastSave = performance.now();
    clock.lap("checkpointLog");
    if (amp.steps > 0) runLog.scalars(epoch, { "train_skipped-steps": amp.skipped, "train_loss-scale": amp.scale });
    const test = testLoader ? await testPass(epoch, testLoader) : null;
    if (cfg.knnMonitor > 0 && epoch % cfg.knnMonitor === 0) {
      const knn = await knnMonitor(trainer, cfg, common, layout);
      log(`knn-${cfg.rank}[Epoch ${epoch}]: Top-1: ${knn.top1.toFixed(4)}\tTop-5: ${knn.top5.toFixed(4)}`);
      runLog.scalars(epoch, { "test_knn-top1": knn.top1, "test_knn-top5": knn.top5 });
    }
    const means = { train: trainMeter.mean(), test: test?.meter.mean() ?? null };
    result = { epoch, ...means, labelled: layout.labelled };
    runLog.epoch(epoch, means.train, means.test, lr, { train: layout.labelled, test: layout.testLabelled });
    clock.lap("test");
    await runLog.augmentations(trainer, epoch);
    const verdict = saver.observe(epoch, (best.split === "test" ? means.test! : means.train)[best.key]);
    pos.epoch++;
    pos.batch = 0;
    if (verdict.best) await save("best");
    clock.lap("checkpointLog");
    // Logged before the epoch's last checkpoint, which commits them with the
    // epoch (that save reuses the weights written after training: a sidecar).
    const stages = clock.finish(await trainer.stageTimes(), trainMeter.samples);
    log(stagesLine(cfg.rank, epoch, stages));
    runLog.scalars(epoch, stageScalars(stages));
    epochs.push({ epoch, ...means, lr, seconds: trainSecs + (test?.secs ?? 0), stages });
    await save("last");
    lastSave = performance.now();
    if (verdict.stop) {
      log(`Early stopping is triggered: loss: ${saver.bestLoss?.toFixed(4)} (no better test loss in ${BestSaver.PATIENCE + 1} epochs)`);
      const bestSide = readSidecar(sidecarPath(cfg.modelDir, cfg.runName, "best"));
      if (bestSide && testLoader) {
        await loadWeights(trainer, cfg.modelDir, bestSide);
        await testPass(epoch, testLoader);
      }
      break;
    }
  }
  if (stop.requested) {
    if (pos.batch === 0) await save("last");
    log(`saved the last checkpoint at epoch ${pos.epoch}, batch ${pos.batch}; run the same command to resume`);
    if (cfg.rank === 0 && stop.signal !== "SIGINT") {
      const requeued = await requeueUnderSlurm();
      if (requeued) log(requeued);
    }
  }
  if (cfg.rank === 0) log(`checkpoint: ${last}`);
  return { epochs, checkpoint: last, stopped: stop.requested, classes, runName: cfg.runName, last: result, alreadyFinished: false };
}

/**
 * The kNN monitor: frozen features of the resized train and test images,
 * classified by a 200-neighbour weighted kNN (cli/evaluate.ts explains).
 */
async function knnMonitor(
  trainer: Trainer,
  cfg: Config,
  common: Omit<LoaderConfig, "dataDir" | "split" | "augment">,
  layout: DataLayout,
): Promise<{ top1: number; top5: number }> {
  await trainer.clearFeatures();
  for (const split of ["train", "test"] as const) {
    using loader = await Loader.create({ ...common, ...loaderFolder(layout[split]!), augment: false, rank: 0, worldSize: 1 });
    loader.startEpoch(0);
    for (let b = await loader.next(); b; b = cfg.debugStep ? null : await loader.next()) await trainer.embed(b, split);
  }
  const r = await trainer.classify(layout.train.classes.length, { knn: { k: 200, temperature: 0.1 } });
  await trainer.clearFeatures();
  return r;
}

/**
 * Takes the run's lock on rank 0 (train/runlock.ts) and clears what
 * interrupted saves left; with several replicas (`trainer` given), every
 * rank learns whether it got it, so that a second copy stops on all ranks
 * with rank 0's one-line reason.
 */
async function lockRun(cfg: Config, trainer: Trainer | null, log: (line: string) => void): Promise<RunLock | null> {
  let lock: RunLock | null = null;
  let refused: unknown = null;
  if (cfg.rank === 0) {
    try {
      lock = RunLock.acquire(cfg.modelDir, cfg.runName, log);
    } catch (e) {
      refused = e;
    }
  }
  if (trainer && cfg.worldSize > 1 && (await trainer.allReduce([refused ? 1 : 0], "max"))[0] > 0 && !refused) {
    throw new Error(`rank 0 could not take the lock of run ${cfg.runName} (its error says why)`);
  }
  if (refused) {
    lock?.release();
    throw refused;
  }
  // The holder clears what interrupted saves of this run left.
  const removed = lock ? removeLeftovers(cfg.modelDir, cfg.runName) : [];
  if (removed.length > 0) log(`removed what interrupted saves left in ${cfg.modelDir}: ${removed.join(", ")}`);
  return lock;
}
