/**
 * Where an epoch's time goes, always measured and cheap: the loop's own
 * stages on the host clock (waiting for the loader's next batch, reading
 * metrics back and logging them, the test pass, checkpoints and logs),
 * and the device's (host→device copy, augmentations, forward + backward +
 * update) as the trainer reports them: CUDA events on a GPU, resolved
 * where the host reads metrics back anyway, or the trainer thread's wall
 * clock on the CPU. One line per epoch on the console and the same
 * figures as `time_*` scalars in the run's logs (docs/OUTPUTS.md).
 *
 * ```ts
 * const clock = new StageClock();
 * const batch = await clock.time("dataWait", () => loader.next());
 * clock.trainDone();
 * const s = clock.finish(await trainer.stageTimes(), samples);
 * log(stagesLine(0, epoch, s));
 * ```
 *
 * @module
 */
import type { DeviceStages, Trainer } from "../ffi/native.ts";

/** Stages timed by the loop on the host clock. */
export type HostStage = "dataWait" | "readBack" | "test" | "checkpointLog";

/** One epoch's figures, in seconds unless named otherwise. */
export interface EpochStages {
  /** The whole epoch: train pass, test pass, checkpoints and logs. */
  epoch: number;
  /** The train pass, from its first batch asked for to its last metrics read. */
  train: number;
  dataWait: number;
  copy: number;
  augment: number;
  step: number;
  readBack: number;
  test: number;
  checkpointLog: number;
  /** Training images per second of the train pass. */
  imagesPerSecond: number;
  /** Fraction of the train pass the device spent augmenting and stepping. */
  deviceBusy: number;
}

export class StageClock {
  #now: () => number;
  #t0: number;
  #trainEnd: number | null = null;
  #lap: number;
  #host: Record<HostStage, number> = { dataWait: 0, readBack: 0, test: 0, checkpointLog: 0 };

  /** Starts the epoch's clock. `now` is in milliseconds (default performance.now). */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
    this.#t0 = now();
    this.#lap = this.#t0;
  }

  /** Awaits `work`, adding the time to `stage`. */
  async time<T>(stage: HostStage, work: () => Promise<T>): Promise<T> {
    const t = this.#now();
    try {
      return await work();
    } finally {
      this.#host[stage] += (this.#now() - t) / 1000;
    }
  }

  /** Marks the end of the train pass. */
  trainDone(): void {
    this.#trainEnd = this.#lap = this.#now();
  }

  /** Adds the time since the train pass ended or the last lap to `stage`. */
  lap(stage: HostStage): void {
    const now = this.#now();
    this.#host[stage] += (now - this.#lap) / 1000;
    this.#lap = now;
  }

  /** The epoch's figures, given the device's stages and the train pass's images. */
  finish(device: DeviceStages, samples: number): EpochStages {
    const end = this.#now();
    const train = ((this.#trainEnd ?? end) - this.#t0) / 1000;
    return {
      epoch: (end - this.#t0) / 1000,
      train,
      ...this.#host,
      copy: device.copy,
      augment: device.augment,
      step: device.step,
      imagesPerSecond: samples / Math.max(train, 1e-9),
      deviceBusy: Math.min(1, (device.augment + device.step) / Math.max(train, 1e-9)),
    };
  }
}

/**
 * The console line, at the end of the epoch (before its last checkpoint commits it with the logs):
 * `time-0[Epoch 3][14.21 sec]: data wait 0.02 | copy 0.00 | augment 0.41 | step 12.11 | read-back 0.01 | test 0.95 | checkpoint+log 0.31 | 35.2 img/s | device busy 97%`
 */
export function stagesLine(rank: number, epoch: number, s: EpochStages): string {
  const stages: [string, number][] = [
    ["data wait", s.dataWait],
    ["copy", s.copy],
    ["augment", s.augment],
    ["step", s.step],
    ["read-back", s.readBack],
    ["test", s.test],
    ["checkpoint+log", s.checkpointLog],
  ];
  const figures = stages.map(([name, secs]) => `${name} ${secs.toFixed(2)}`).join(" | ");
  const rate = `${s.imagesPerSecond.toFixed(1)} img/s | device busy ${Math.round(100 * s.deviceBusy)}%`;
  return `time-${rank}[Epoch ${epoch}][${s.epoch.toFixed(2)} sec]: ${figures} | ${rate}`;
}

/** The per-epoch scalar tag of each figure (TensorBoard and metrics.jsonl; docs/OUTPUTS.md). */
export const STAGE_TAGS: Record<keyof EpochStages, string> = {
  epoch: "time_epoch-s",
  train: "time_train-s",
  dataWait: "time_data-wait-s",
  copy: "time_copy-s",
  augment: "time_augment-s",
  step: "time_step-s",
  readBack: "time_read-back-s",
  test: "time_test-s",
  checkpointLog: "time_checkpoint-log-s",
  imagesPerSecond: "time_images-per-second",
  deviceBusy: "time_device-busy",
};

/** The figures as per-epoch scalars, by tag. */
export function stageScalars(s: EpochStages): Record<string, number> {
  return Object.fromEntries(Object.entries(STAGE_TAGS).map(([k, tag]) => [tag, s[k as keyof EpochStages]]));
}

/** Steps before `--profile` starts (cuDNN's algorithm search, allocator warm-up), and steps profiled. */
export const PROFILE_SKIP = 2;
export const PROFILE_STEPS = 5;

/**
 * `--profile`: torch's profiler over steps PROFILE_SKIP+1 … PROFILE_SKIP+PROFILE_STEPS
 * of this run (fewer if the epoch ends first), its Chrome trace written to
 * `trace` and the table of operator self times logged.
 */
export class StepProfiler {
  #trained = 0;
  #state: "waiting" | "running" | "done";

  constructor(private trainer: Trainer, private trace: string | null, private log: (line: string) => void) {
    this.#state = trace ? "waiting" : "done";
  }

  /** Before each training step. */
  async beforeStep(): Promise<void> {
    if (this.#state === "waiting" && this.#trained === PROFILE_SKIP) {
      await this.trainer.profileStart();
      this.#state = "running";
    }
    this.#trained++;
  }

  /**
   * After a step, and at the end of each train pass (`passEnd`), once the
   * profiled steps' metrics have been read back (on a GPU: their kernels
   * are done).
   */
  async afterStep(drain: () => Promise<void>, passEnd = false): Promise<void> {
    if (this.#state !== "running" || (!passEnd && this.#trained < PROFILE_SKIP + PROFILE_STEPS)) return;
    await drain();
    const table = await this.trainer.profileStop(this.trace!);
    this.#state = "done";
    const first = PROFILE_SKIP + 1;
    this.log(
      `profile: steps ${first}-${this.#trained} of this run; Chrome trace ${this.trace} (ui.perfetto.dev or chrome://tracing)`,
    );
    this.log(table.trimEnd());
  }
}
