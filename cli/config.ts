/**
 * The resolved configuration of a run: one plain object, keys = the long
 * flag names in camelCase. The command line only produces it; everything
 * downstream takes it as data.
 *
 * @module
 */

/** A run's settings after defaults and checks. */
export interface Config {
  method: "simclr";
  task: string;
  batchSize: number;
  epochs: number;
  imageSizeOverride: number;
  dataDir: string;
  uid: string;
  arch: string;
  smallStem: boolean;
  representationSize: number;
  headLatentSize: number;
  nceSize: number;
  nceTemperature: number;
  modelDir: string;
  colorJitterStrength: number;
  weightDecay: number;
  clip: number;
  lr: number;
  lrUpdateSchedule: "cosine" | "fixed";
  warmup: number;
  optimizer: string;
  numReplicas: number;
  workersPerReplica: number;
  debugStep: boolean;
  seed: number | null;
  noCuda: boolean;
  threads: number;
}

/** The reference SimCLR program's defaults (REFERENCE.md §1). */
export const DEFAULTS: Config = {
  method: "simclr",
  task: "multi_augment_image_folder",
  batchSize: 4096,
  epochs: 3000,
  imageSizeOverride: 224,
  dataDir: "./.datasets",
  uid: "",
  arch: "resnet50",
  smallStem: false,
  representationSize: 2048,
  headLatentSize: 1024,
  nceSize: 128,
  nceTemperature: 0.1,
  modelDir: ".models",
  colorJitterStrength: 1.0,
  weightDecay: 1e-6,
  clip: 0,
  lr: 0.3,
  lrUpdateSchedule: "cosine",
  warmup: 10,
  optimizer: "lars_momentum",
  numReplicas: 8,
  workersPerReplica: 2,
  debugStep: false,
  seed: null,
  noCuda: false,
  threads: 0,
};

/**
 * The built-in demo: a ResNet-18 SimCLR on the generated 32-px shapes, on
 * CPU, in a few minutes. LARS's trust ratio (η = 0.001) moves weights by
 * about lr·η per step, far too little for ~250 steps, so the demo uses
 * SGD-momentum with a small batch (more steps per second of CPU).
 */
export const DEMO: Partial<Config> = {
  dataDir: ".datasets/selfsup-demo",
  arch: "resnet18",
  representationSize: 512,
  headLatentSize: 512,
  imageSizeOverride: 32,
  batchSize: 128,
  epochs: 12,
  lr: 0.05,
  optimizer: "momentum",
  weightDecay: 5e-4,
  warmup: 1,
  numReplicas: 1,
  workersPerReplica: 2,
  seed: 0,
  noCuda: true,
  uid: "demo",
};

/** A bad setting: reported as one line, never a stack trace. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Checks what the native side cannot: combinations and ranges. */
export function validate(c: Config): Config {
  const positive: (keyof Config)[] = ["batchSize", "epochs", "imageSizeOverride", "numReplicas"];
  for (const k of positive) {
    const v = c[k] as number;
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(`--${kebab(k)} must be a positive integer, got ${v}`);
  }
  if (!(c.nceTemperature > 0)) throw new ConfigError(`--nce-temperature must be > 0, got ${c.nceTemperature}`);
  if (!(c.lr > 0)) throw new ConfigError(`--lr must be > 0, got ${c.lr}`);
  if (c.warmup < 0 || !Number.isInteger(c.warmup)) throw new ConfigError(`--warmup must be an integer >= 0`);
  if (c.warmup >= c.epochs) {
    throw new ConfigError(`--warmup ${c.warmup} must be shorter than --epochs ${c.epochs}`);
  }
  if (c.lrUpdateSchedule !== "cosine" && c.lrUpdateSchedule !== "fixed") {
    throw new ConfigError(`--lr-update-schedule must be cosine or fixed, got ${c.lrUpdateSchedule}`);
  }
  if (c.numReplicas !== 1) {
    throw new ConfigError(
      `--num-replicas ${c.numReplicas}: multi-replica training is not available yet; pass --num-replicas 1`,
    );
  }
  if (c.batchSize % c.numReplicas !== 0) {
    throw new ConfigError(`--batch-size ${c.batchSize} is not divisible by --num-replicas ${c.numReplicas}`);
  }
  return c;
}

export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (m) => "-" + m.toLowerCase());
}

/** Name keying the saved weights: the uid, method and backbone. */
export function runName(c: Config): string {
  return [c.uid, c.method, c.arch, `bs${c.batchSize}`, `e${c.epochs}`].filter((s) => s !== "").join("_");
}
