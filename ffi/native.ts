/**
 * Typed handles over the native library: {@link Trainer}, {@link Loader},
 * {@link Batch}, plus free functions. Each handle owns one native object
 * and frees it in `close()` (or at the end of a `using` block).
 *
 * ```ts
 * using loader = await Loader.create({ dataDir: "data", split: "train", batchSize: 64, imageSize: 32, augment: true });
 * loader.startEpoch(0);
 * for (let b = await loader.next(); b; b = await loader.next()) b.close();
 * ```
 *
 * @module
 */
import { check, hook, native, readText, utf8 } from "./lib.ts";
import { type DebugOp, METRICS, STEP_ROW } from "./symbols.ts";

/** What the native library reports about itself and libtorch. */
export interface VersionInfo {
  selfsup: string;
  libtorch: string;
  cuda: boolean;
  cudaDevices: number;
  threads: number;
}

export function version(): VersionInfo {
  return JSON.parse(readText((b, c) => native().selfsup_version(b, c)));
}

/** Writes the built-in demo data set (an ImageFolder) to `path`, which must not exist. */
export async function writeDemoDataset(
  path: string,
  opts: { seed?: number; trainPerClass?: number; testPerClass?: number; size?: number } = {},
): Promise<void> {
  const p = utf8(path);
  check(
    await native().selfsup_demo_dataset(
      p,
      BigInt(p.length),
      BigInt(opts.seed ?? 0),
      opts.trainPerClass ?? 300,
      opts.testPerClass ?? 100,
      opts.size ?? 32,
    ),
  );
}

/** What a scan of an image folder finds (native/src/data/imagefolder.rs). */
export interface FolderScan {
  /** Class names (sorted sub-folder names); none for a folder of unlabelled images. */
  classes: string[];
  samples: number;
  /** Width and height of a typical image (the median of a few headers), or null when none could be read. */
  imageSize: [number, number] | null;
}

/** Classes, image count and typical image size of an ImageFolder split, or of a folder of unlabelled images. */
export function scanFolder(path: string): FolderScan {
  const p = utf8(path);
  return JSON.parse(readText((b, c) => native().selfsup_scan_folder(p, BigInt(p.length), b, c)));
}

abstract class Handle {
  #id: number;
  protected constructor(id: number) {
    this.#id = id;
  }
  /** The native id; throws once closed. */
  get id(): number {
    if (this.#id === 0) throw new Error(`${this.constructor.name} is closed`);
    return this.#id;
  }
  get closed(): boolean {
    return this.#id === 0;
  }
  /** Marks the handle as consumed by a native call that took ownership. */
  protected release(): number {
    const id = this.id;
    this.#id = 0;
    return id;
  }
  close(): void {
    if (this.#id !== 0) native().selfsup_free(BigInt(this.release()));
  }
  [Symbol.dispose](): void {
    this.close();
  }
}

/** One batch in native memory, consumed by a training or evaluation step. */
export class Batch extends Handle {
  constructor(id: number) {
    super(id);
  }
  /** @internal hands the id to a consuming native call. */
  take(): number {
    return this.release();
  }
}

/** Settings of a loader; see native/src/data/loader.rs. */
export interface LoaderConfig {
  /** The folder holding the split, and the split's folder in it (train, test, valid; any folder of images). */
  dataDir: string;
  split: string;
  batchSize: number;
  imageSize: number;
  augment: boolean;
  workers?: number;
  seed?: number;
  shuffle?: boolean;
  dropLast?: boolean;
  rank?: number;
  worldSize?: number;
  /** The run's augmentation settings (no defaults on the native side); read for training views. */
  colorJitterStrength: number;
  /** Gaussian blur probability of view 1 and view 2. */
  blurProb: [number, number];
  /** Solarisation probability of view 1 and view 2. */
  solarizeProb: [number, number];
  prefetch?: number;
  /** Unreadable images are fatal instead of skipped. */
  strict?: boolean;
  /** Keep decoded images in memory: when they fit the budget (auto), always or never. */
  inMemory?: "auto" | "always" | "never";
  /** Budget for decoded images of all loaders, MiB (default: a quarter of RAM). */
  inMemoryLimitMb?: number;
  /** Page-locked batches for asynchronous copies to CUDA. */
  pinMemory?: boolean;
}

/** What a loader says about its split and its current pass. */
export interface LoaderReport {
  samples: number;
  classes: number;
  inMemory: boolean;
  cachedImages: number;
  cachedBytes: number;
  /** Unreadable files met in the current pass: how many, and "path: reason" of the first few. */
  skipped: { epoch: number; count: number; examples: string[] };
}

/** Batches of an ImageFolder split, made by native worker threads. */
export class Loader extends Handle {
  static async create(config: LoaderConfig): Promise<Loader> {
    const j = utf8(JSON.stringify(config));
    return new Loader(check(await native().selfsup_loader_new(j, BigInt(j.length))));
  }
  /** Batches per epoch on this replica. */
  get length(): number {
    return check(native().selfsup_loader_len(BigInt(this.id)));
  }
  /** Starts an epoch's batches, from batch `firstBatch` on (a resumed run skips those it trained on). */
  startEpoch(epoch: number, firstBatch = 0): void {
    check(native().selfsup_loader_start_epoch(BigInt(this.id), BigInt(epoch), BigInt(firstBatch)));
  }
  /** The next batch, or null at the end of the epoch. */
  async next(): Promise<Batch | null> {
    const id = check(await native().selfsup_loader_next(BigInt(this.id)));
    return id === 0 ? null : new Batch(id);
  }
  /** Sizes, in-memory state and the unreadable files of the current pass. */
  report(): LoaderReport {
    return JSON.parse(readText((b, c) => native().selfsup_loader_report(BigInt(this.id), b, c)));
  }
}

/** Writes Fashion-MNIST's four IDX files (plain or .gz) in `source` as an ImageFolder at `out`; returns the image count. */
export async function writeFashionMnist(source: string, out: string): Promise<number> {
  const s = utf8(source), o = utf8(out);
  return check(await native().selfsup_fashion_mnist(s, BigInt(s.length), o, BigInt(o.length)));
}

/** Images as uint8, N×C×H×W, row-major. */
export interface Views {
  n: number;
  c: number;
  h: number;
  w: number;
  data: Uint8Array;
}

/** Metrics of one step (means over its batch). */
export interface StepMetrics {
  loss: number;
  sslLoss: number;
  linearLoss: number;
  top1: number;
  top5: number;
  samples: number;
}

function metricsOf(m: Float64Array): StepMetrics {
  return { loss: m[0], sslLoss: m[1], linearLoss: m[2], top1: m[3], top5: m[4], samples: m[5] };
}

/** A deferred step's metrics, with the loss scaler's view of it. */
export interface StepRow extends StepMetrics {
  /** The loss scale the step used; 0 without a loss scaler (fp32, bf16). */
  lossScale: number;
  /** The scaler skipped the update: the gradients held an inf or NaN. */
  skipped: boolean;
  /** After the step a weight, buffer or optimizer state held an inf or NaN, on some replica. */
  nonFinite: boolean;
}

/** Seconds of the training steps on the device (the CPU: the trainer's thread), by stage. */
export interface DeviceStages {
  /** The batches' host→device copies. */
  copy: number;
  /** Views from the uint8 batches and the photometric augmentations. */
  augment: number;
  /** Forward, backward, update (with DDP's all-reduces). */
  step: number;
  /** Steps counted. */
  steps: number;
}

/** Which weights features come from: the live ones, the Polyak average, or BYOL's target. */
export type FeatureWeights = "online" | "polyak" | "target";

/** A linear classifier on standardised features, or a weighted kNN. */
export type Classifier =
  | { linear: { epochs: number; lr: number; weightDecay: number; batchSize: number; seed?: number } }
  | { knn: { k: number; temperature: number } };

/** Settings of a trainer; see native/src/trainer.rs and model.rs. */
/**
 * How a trainer takes part in data-parallel training (native/src/dist):
 * rank `rank` of `worldSize`, meeting at `master`:`port`. Rank 0's weights
 * reach every replica, gradients are averaged (DDP), SimCLR's negatives
 * come from every replica; omitted: one replica.
 */
export interface DistributedConfig {
  worldSize: number;
  rank: number;
  /** Rank 0's host, without tcp:// (default 127.0.0.1). */
  master?: string;
  port?: number;
  /** Rendezvous and every collective fail after this many seconds (default 600). */
  timeoutSecs?: number;
  /** BatchNorm statistics over all replicas (--convert-to-sync-bn). */
  syncBn?: boolean;
  /** DDP's bucket size for gradient all-reduces, MiB (default 25). */
  bucketCapMb?: number;
  /** Tests only, at world size 1: BatchNorm statistics as this many replicas without SyncBN would compute them. */
  bnReplicas?: number;
}

/**
 * A trainer's settings: a run's configuration as it is (train/config.ts
 * `Config`; the native side reads the keys below and the method's own
 * settings, and ignores the rest), with this process's device, threads
 * and place among the replicas, and the data's class count. No setting has
 * a default on the native side.
 */
export interface TrainerConfig {
  /** A method name (train/config.ts METHODS lists them; the native side refuses others). */
  method: string;
  /** "cpu", "cuda" or "cuda:<index>" (default cpu). */
  device?: "cpu" | "cuda" | `cuda:${number}`;
  distributed?: DistributedConfig;
  /** Tests only: weights and views in float64 (exact comparisons across replica counts). */
  float64?: boolean;
  threads?: number;
  arch: string;
  smallStem?: boolean;
  /** Stem channels, stages 1/2/4/8 times (torchvision's: 64). */
  baseWidth: number;
  representationSize: number;
  headLatentSize: number;
  numClasses: number;
  optimizer: string;
  weightDecay: number;
  clip?: number;
  polyakEma?: number;
  weightInitialization?: string | null;
  seed?: number;
  /** fp32; fp16: autocast and a dynamic loss scale; bf16: autocast. */
  precision: "fp32" | "fp16" | "bf16";
  /**
   * The loss scaler's settings (torch.amp.GradScaler's defaults: 65536,
   * 2, 0.5, 2000). Given with fp32 it scales fp32 gradients (tests).
   */
  lossScaler?: { initScale?: number; growthFactor?: number; backoffFactor?: number; growthInterval?: number };
  /** Conv weights and views channels_last (default: on, except with float64). */
  channelsLast?: boolean;
  /** The method's own settings (METHODS: `nceSize`, `projectionSize`, ...), and keys the native side ignores. */
  [setting: string]: unknown;
}

/** A model and its optimizer, owned by one native thread. */
export class Trainer extends Handle {
  static async create(config: TrainerConfig): Promise<Trainer> {
    const j = utf8(JSON.stringify(config));
    return new Trainer(check(await native().selfsup_trainer_new(j, BigInt(j.length))));
  }

  /** One optimisation step on `batch` (consumed) at learning rate `lr`; `tau` is the momentum target's decay (BYOL, MoCo v3). */
  async trainStep(batch: Batch, lr: number, tau = 1): Promise<StepMetrics> {
    const m = new Float64Array(METRICS);
    check(await native().selfsup_trainer_train_step(BigInt(this.id), BigInt(batch.take()), lr, tau, m));
    return metricsOf(m);
  }

  /**
   * A training step whose metrics stay on the device (no host
   * synchronisation), to be read with {@link takeMetrics}.
   */
  async trainStepDeferred(batch: Batch, lr: number, tau = 1): Promise<void> {
    check(await native().selfsup_trainer_train_step(BigInt(this.id), BigInt(batch.take()), lr, tau, null));
  }

  /**
   * The rows of the oldest `count` deferred steps not taken yet, in step
   * order. The host waits for the last of them only; newer steps keep the
   * device busy meanwhile.
   */
  async takeMetrics(count: number): Promise<StepRow[]> {
    const m = new Float64Array(Math.max(1, count) * STEP_ROW);
    const n = check(await native().selfsup_trainer_take_metrics(BigInt(this.id), m, BigInt(count)));
    return Array.from({ length: n }, (_, i) => {
      const r = m.subarray(i * STEP_ROW, (i + 1) * STEP_ROW);
      return { ...metricsOf(r), lossScale: r[6], skipped: r[7] !== 0, nonFinite: r[8] !== 0 };
    });
  }

  /**
   * Seconds the training steps read back since the last call spent in
   * their batch's host→device copy, the augmentations, and forward +
   * backward + update: CUDA events on a GPU, wall clocks of the trainer's
   * thread on the CPU.
   */
  async stageTimes(): Promise<DeviceStages> {
    const t = new Float64Array(4);
    check(await native().selfsup_trainer_stage_times(BigInt(this.id), t));
    return { copy: t[0], augment: t[1], step: t[2], steps: t[3] };
  }

  /** Starts torch's profiler on the trainer's thread (its operators; on a GPU also kernels and copies). */
  async profileStart(): Promise<void> {
    check(native().selfsup_profile_prepare());
    check(await native().selfsup_trainer_profile(BigInt(this.id), null, 0n, null, 0n));
  }

  /** Stops the profiler, writes its Chrome trace to `path`; returns a table of the top operators by self time. */
  async profileStop(path: string): Promise<string> {
    const p = utf8(path), table = new Uint8Array(16 << 10);
    const n = check(await native().selfsup_trainer_profile(BigInt(this.id), p, BigInt(p.length), table, BigInt(table.length)));
    return new TextDecoder().decode(table.subarray(0, Math.min(n, table.length)));
  }

  /** Before a test pass, on every rank: rank 0's BatchNorm buffers everywhere (DDP's broadcast). */
  async beginEval(): Promise<void> {
    check(await native().selfsup_trainer_begin_eval(BigInt(this.id)));
  }

  /** `values` summed (or max/min) over the replicas; every rank must call it. Unchanged with one replica. */
  async allReduce(values: number[], op: "sum" | "max" | "min" = "sum"): Promise<number[]> {
    const v = new Float64Array(values);
    check(await native().selfsup_trainer_all_reduce(BigInt(this.id), v, BigInt(v.length), { sum: 0, max: 1, min: 2 }[op]));
    return [...v];
  }

  /** Loss and classifier metrics of a test batch (consumed), no update. */
  async evalStep(batch: Batch): Promise<StepMetrics> {
    const m = new Float64Array(METRICS);
    check(await native().selfsup_trainer_eval_step(BigInt(this.id), BigInt(batch.take()), m));
    return metricsOf(m);
  }

  /**
   * The first min(64, B) views of the last train batch (`train1`,
   * `train2`) or test batch (`test`), uint8 N×C×H×W as the model saw
   * them; null before the first such batch. For the log's image grids.
   */
  async views(which: "train1" | "train2" | "test"): Promise<Views | null> {
    const index = { train1: 0, train2: 1, test: 2 }[which];
    const dims = new BigInt64Array(4);
    const n = check(await native().selfsup_trainer_views(BigInt(this.id), index, dims, null, 0n));
    if (n === 0) return null;
    const data = new Uint8Array(n);
    check(await native().selfsup_trainer_views(BigInt(this.id), index, dims, data, BigInt(n)));
    const [N, C, H, W] = [...dims].map(Number);
    return { n: N, c: C, h: H, w: W, data };
  }

  /** Every parameter and buffer, by name, as safetensors. */
  async saveWeights(path: string): Promise<void> {
    const p = utf8(path);
    check(await native().selfsup_trainer_save_weights(BigInt(this.id), p, BigInt(p.length)));
  }

  async loadWeights(path: string): Promise<void> {
    const p = utf8(path);
    check(await native().selfsup_trainer_load_weights(BigInt(this.id), p, BigInt(p.length)));
  }

  /**
   * Everything needed to resume (weights, BYOL target, optimizer and
   * Polyak state), written atomically; returns the file's SHA-256 (hex).
   * Refused before writing when the folder lacks the space.
   */
  async saveCheckpoint(path: string): Promise<string> {
    const p = utf8(path);
    const digest = new Uint8Array(64);
    check(await native().selfsup_trainer_save_checkpoint(BigInt(this.id), p, BigInt(p.length), digest));
    return new TextDecoder().decode(digest);
  }

  /**
   * Restores a checkpoint. With `sha256` the file must have that checksum;
   * a file holding NaN or infinity is refused either way.
   */
  async loadCheckpoint(path: string, sha256 = ""): Promise<void> {
    const p = utf8(path);
    const h = utf8(sha256);
    check(await native().selfsup_trainer_load_checkpoint(BigInt(this.id), p, BigInt(p.length), h, BigInt(h.length)));
  }

  /** An export's backbone (torchvision key names) into the online backbone. */
  async loadBackbone(path: string): Promise<void> {
    const p = utf8(path);
    check(await native().selfsup_trainer_load_backbone(BigInt(this.id), p, BigInt(p.length)));
  }

  /** Frozen-backbone features of a test-mode `batch` (consumed) into the train or test set. */
  async embed(batch: Batch, set: "train" | "test", weights: FeatureWeights = "online"): Promise<void> {
    const w = ["online", "polyak", "target"].indexOf(weights);
    check(await native().selfsup_trainer_embed(BigInt(this.id), BigInt(batch.take()), set === "train" ? 0n : 1n, BigInt(w)));
  }

  async clearFeatures(): Promise<void> {
    check(await native().selfsup_trainer_embed(BigInt(this.id), 0n, -1n, 0n));
  }

  /** Test-set top-1/top-5 (%) of a classifier fitted on the embedded train features. */
  async classify(classes: number, how: Classifier): Promise<{ top1: number; top5: number }> {
    const j = utf8(JSON.stringify(how));
    const out = new Float64Array(2);
    check(await native().selfsup_trainer_classify(BigInt(this.id), BigInt(classes), j, BigInt(j.length), out));
    return { top1: out[0], top5: out[1] };
  }

  // The test hooks (the testing library only: native/src/hooks.rs).

  /** Eval features of `images` in `input` (safetensors) into `output` as "features". */
  async debugFeatures(input: string, output: string): Promise<void> {
    const i = utf8(input), o = utf8(output);
    check(await hook("selfsup_trainer_debug_features")(BigInt(this.id), i, BigInt(i.length), o, BigInt(o.length)));
  }

  /** Tests of the non-finite stop: a NaN into variable `name` (default: the first parameter) of this replica. */
  async debugPoison(name = ""): Promise<void> {
    const n = utf8(name);
    check(await hook("selfsup_trainer_debug_poison")(BigInt(this.id), n, BigInt(n.length)));
  }

  /**
   * Loss and gradients for the views in `input` (safetensors: view1, view2,
   * labels) into `output`; with the scalars lr and tau in `input` the
   * step's update follows.
   */
  async debugGradients(input: string, output: string): Promise<void> {
    const i = utf8(input), o = utf8(output);
    check(await hook("selfsup_trainer_debug_gradients")(BigInt(this.id), i, BigInt(i.length), o, BigInt(o.length)));
  }
}

/** Parity tests (a hook: the testing library only): one piece of selfsup (native/src/debug.rs, data/debug.rs; `what` names its symbol) on files or tensors. */
export async function debugRun(what: DebugOp, spec: unknown, input: string, output: string): Promise<void> {
  const s = utf8(JSON.stringify(spec)), i = utf8(input), o = utf8(output);
  check(await hook(`selfsup_debug_${what}`)(s, BigInt(s.length), i, BigInt(i.length), o, BigInt(o.length)));
}
