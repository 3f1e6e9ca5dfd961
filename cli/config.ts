/**
 * The resolved configuration of a run: one plain object whose keys are
 * the long flag names in camelCase, plus what is derived from them. The
 * command line only produces it; everything downstream takes it as data.
 *
 * @module
 */
import { runName as referenceRunName } from "./runname.ts";
import { type Env, LaunchError, type LaunchSource, resolveLaunch } from "./launch.ts";

export type Method = "simclr" | "byol";
/** The arithmetic of the forward pass: fp32, or autocast to fp16 (with a loss scale) or bf16. */
export type Precision = "fp32" | "fp16" | "bf16";
export const PRECISIONS: Precision[] = ["fp32", "fp16", "bf16"];

/** A run's settings after defaults, method and checks. */
export interface Config {
  method: Method;
  task: string;
  batchSize: number;
  epochs: number;
  download: number;
  imageSizeOverride: number;
  dataDir: string;
  logDir: string;
  uid: string;
  arch: string;
  smallStem: boolean;
  /** Stem channels; stages have 1, 2, 4, 8 times as many (torchvision: 64). */
  baseWidth: number;
  representationSize: number;
  headLatentSize: number;
  /** SimCLR only. */
  nceSize: number;
  nceTemperature: number;
  /** BYOL only. */
  projectionSize: number;
  baseDecay: number;
  byolLoss: "paper" | "reference";
  weightInitialization: string | null;
  modelDir: string;
  colorJitterStrength: number;
  /** Gaussian blur probability of view 1 and view 2. */
  blurProb: [number, number];
  /** Solarisation probability of view 1 and view 2 (BYOL-style asymmetric views; the reference has none). */
  solarizeProb: [number, number];
  /** Unreadable images stop the run instead of being skipped. */
  strict: boolean;
  /** Keep decoded images in memory: when they fit (auto), always or never. */
  inMemory: "auto" | "always" | "never";
  weightDecay: number;
  polyakEma: number;
  convertToSyncBn: boolean;
  clip: number;
  lr: number;
  lrUpdateSchedule: "cosine" | "fixed";
  warmup: number;
  optimizer: string;
  earlyStop: boolean;
  visdomUrl: string | null;
  visdomPort: number | null;
  numReplicas: number;
  workersPerReplica: number;
  distributedMaster: string | null;
  distributedRank: number;
  distributedPort: number;
  /** Seconds before a rendezvous or collective that does not complete is an error. */
  distributedTimeout: number;
  debugStep: boolean;
  /** Profile a few training steps with torch's profiler (train/stages.ts). */
  profile: boolean;
  seed: number | null;
  noCuda: boolean;
  /** The reference's --half: true exactly when precision is fp16. */
  half: boolean;
  precision: Precision;
  threads: number;
  noResume: boolean;
  checkpointMinutes: number;
  knnMonitor: number;
  // Derived (cli/launch.ts: flags, then torchrun's or SLURM's environment):
  worldSize: number;
  rank: number;
  localRank: number;
  /** Replicas on this machine. */
  localWorldSize: number;
  /** Rank 0's host (no tcp://), null when nothing names it. */
  master: string | null;
  port: number;
  launchedBy: LaunchSource;
  batchSizePerReplica: number;
  runName: string;
}

/** The settings a user can give (everything but the derived keys). */
export type Settings = Omit<
  Config,
  "worldSize" | "rank" | "localRank" | "localWorldSize" | "master" | "port" | "launchedBy" | "batchSizePerReplica" | "runName"
>;

/** Flags that exist in one reference program only. */
export const METHOD_ONLY: Record<Method, (keyof Settings)[]> = {
  simclr: ["nceSize", "nceTemperature"],
  byol: ["projectionSize", "baseDecay", "byolLoss"],
};

/** Defaults where the two reference programs differ (REFERENCE.md §1). */
export const METHOD_DEFAULTS: Record<Method, Partial<Settings>> = {
  simclr: { lr: 0.3, headLatentSize: 1024 },
  byol: { lr: 0.2, headLatentSize: 4096 },
};

/** The reference programs' shared defaults (REFERENCE.md §1), SimCLR's where they differ. */
export const DEFAULTS: Settings = {
  method: "simclr",
  task: "multi_augment_image_folder",
  batchSize: 4096,
  epochs: 3000,
  download: 1,
  imageSizeOverride: 224,
  dataDir: "./.datasets",
  logDir: "./runs",
  uid: "",
  arch: "resnet50",
  smallStem: false,
  baseWidth: 64,
  representationSize: 2048,
  headLatentSize: 1024,
  nceSize: 128,
  nceTemperature: 0.1,
  projectionSize: 256,
  baseDecay: 0.996,
  byolLoss: "paper",
  weightInitialization: null,
  modelDir: ".models",
  colorJitterStrength: 1.0,
  blurProb: [0.5, 0.5],
  solarizeProb: [0, 0],
  strict: false,
  inMemory: "auto",
  weightDecay: 1e-6,
  polyakEma: 0,
  convertToSyncBn: false,
  clip: 0,
  lr: 0.3,
  lrUpdateSchedule: "cosine",
  warmup: 10,
  optimizer: "lars_momentum",
  earlyStop: false,
  visdomUrl: null,
  visdomPort: null,
  numReplicas: 8,
  workersPerReplica: 2,
  distributedMaster: null,
  distributedRank: 0,
  distributedPort: 29300,
  distributedTimeout: 600,
  debugStep: false,
  profile: false,
  seed: null,
  noCuda: false,
  half: false,
  precision: "fp32",
  threads: 0,
  noResume: false,
  checkpointMinutes: 30,
  knnMonitor: 0,
};

/**
 * The built-in demo: a ResNet-18 SimCLR on the generated 32-px shapes, on
 * CPU, in a few minutes. LARS's trust ratio (η = 0.001) moves weights by
 * about lr·η per step, far too little for ~250 steps, so the demo uses
 * SGD-momentum with a small batch (more steps per second of CPU).
 */
export const DEMO: Partial<Settings> = {
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

/** Backbones and their pooled feature width. */
export const ARCHS: Record<string, number> = {
  resnet18: 512,
  resnet34: 512,
  resnet50: 2048,
  resnet101: 2048,
  resnet152: 2048,
  wide_resnet50_2: 2048,
};
/** Pooled feature width of `arch` with its channel counts scaled to `baseWidth` (64 = torchvision's). */
export function featureSize(arch: string, baseWidth = 64): number {
  return ARCHS[arch] * baseWidth / 64;
}
export const OPTIMIZER_BASES = ["sgd", "momentum", "adam", "adamw", "rmsprop", "adadelta"];
export const WEIGHT_INITS = ["xavier_uniform", "xavier_normal", "orthogonal", "kaiming_normal", "kaiming_uniform"];
export const TASKS = ["multi_augment_image_folder", "dali_multi_augment_image_folder"];

/** A bad setting: reported as one line, never a stack trace. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (m) => "-" + m.toLowerCase());
}

function fail(msg: string): never {
  throw new ConfigError(msg);
}

/**
 * The configuration from explicitly given settings (`given`) over a base
 * (defaults, or a preset): method-dependent defaults fill what was not
 * given, a flag of the other method is an error, then every check runs.
 * Rank, world size, master and port come from the flags, else from `env`
 * (torchrun's or SLURM's variables; the CLI passes the process's).
 */
export function resolve(given: Partial<Settings>, base: Partial<Settings> = {}, env: Env = {}): Config {
  const method = given.method ?? base.method ?? DEFAULTS.method;
  if (method !== "simclr" && method !== "byol") fail(`--method must be simclr or byol, got ${method}`);
  const other: Method = method === "simclr" ? "byol" : "simclr";
  for (const key of METHOD_ONLY[other]) {
    if (given[key] !== undefined) fail(`--${kebab(key)} belongs to --method ${other}, not ${method}`);
  }
  let launch;
  try {
    launch = resolveLaunch(given, env, base, DEFAULTS);
  } catch (e) {
    throw e instanceof LaunchError ? new ConfigError(e.message) : e;
  }
  const s = {
    ...DEFAULTS,
    ...METHOD_DEFAULTS[method],
    ...base,
    ...given,
    method,
    numReplicas: launch.worldSize,
    distributedRank: launch.rank,
    distributedMaster: launch.master,
    distributedPort: launch.port,
  } as Settings;
  // --half is the reference's spelling of --precision fp16.
  if (s.half && s.precision !== "fp16") {
    if ((given.precision ?? base.precision) !== undefined) fail(`--half means --precision fp16; it contradicts --precision ${s.precision}`);
    s.precision = "fp16";
  }
  s.half = s.precision === "fp16";
  validate(s);
  return {
    ...s,
    worldSize: launch.worldSize,
    rank: launch.rank,
    localRank: launch.localRank,
    localWorldSize: launch.localWorldSize,
    master: launch.master,
    port: launch.port,
    launchedBy: launch.launchedBy,
    batchSizePerReplica: s.batchSize / s.numReplicas,
    // runName divides the batch per replica itself, as the reference names runs.
    runName: referenceRunName(s),
  };
}

function positiveInt(s: Settings, key: keyof Settings): void {
  const v = s[key] as number;
  if (!Number.isInteger(v) || v < 1) fail(`--${kebab(key)} must be a positive integer, got ${v}`);
}

/** Checks ranges and combinations; throws a ConfigError naming the flag. */
export function validate(s: Settings): void {
  for (const k of ["batchSize", "epochs", "imageSizeOverride", "numReplicas", "headLatentSize", "nceSize", "projectionSize"] as const) {
    positiveInt(s, k);
  }
  if (!TASKS.includes(s.task)) fail(`unknown --task ${s.task}; choose ${TASKS.join(" or ")}`);
  if (!(s.arch in ARCHS)) fail(`unknown --arch ${s.arch}; choose one of ${Object.keys(ARCHS).join(", ")}`);
  positiveInt(s, "baseWidth");
  const features = featureSize(s.arch, s.baseWidth);
  if (s.representationSize !== features) {
    const arch = s.baseWidth === 64 ? s.arch : `${s.arch} with --base-width ${s.baseWidth}`;
    fail(`--representation-size ${s.representationSize} does not match ${arch}'s ${features} features; use --representation-size ${features}`);
  }
  const opt = s.optimizer.trim().toLowerCase();
  const optBase = opt.includes("lars") ? opt.split("_").at(-1)! : opt;
  if (!OPTIMIZER_BASES.includes(optBase)) {
    fail(`unknown --optimizer ${s.optimizer}; choose ${OPTIMIZER_BASES.join(", ")}, or lars_<one of them>`);
  }
  if (s.weightInitialization !== null && !WEIGHT_INITS.includes(s.weightInitialization)) {
    fail(`unknown --weight-initialization ${s.weightInitialization}; choose one of ${WEIGHT_INITS.join(", ")}`);
  }
  if (!(s.nceTemperature > 0)) fail(`--nce-temperature must be > 0, got ${s.nceTemperature}`);
  if (!(s.baseDecay >= 0 && s.baseDecay <= 1)) fail(`--base-decay must be in [0, 1], got ${s.baseDecay}`);
  if (s.byolLoss !== "paper" && s.byolLoss !== "reference") fail(`--byol-loss must be paper or reference, got ${s.byolLoss}`);
  if (!(s.polyakEma >= 0 && s.polyakEma < 1)) fail(`--polyak-ema must be in [0, 1), got ${s.polyakEma}`);
  if (!(s.lr > 0)) fail(`--lr must be > 0, got ${s.lr}`);
  if (!(s.clip >= 0)) fail(`--clip must be >= 0, got ${s.clip}`);
  if (!(s.weightDecay >= 0)) fail(`--weight-decay must be >= 0, got ${s.weightDecay}`);
  if (!(s.colorJitterStrength >= 0 && s.colorJitterStrength <= 2.5)) {
    fail(`--color-jitter-strength must be in [0, 2.5] (torchvision's hue 0.2s must stay within 0.5), got ${s.colorJitterStrength}`);
  }
  for (const k of ["blurProb", "solarizeProb"] as const) {
    if (!s[k].every((p) => p >= 0 && p <= 1)) fail(`--${kebab(k)} values must be in [0, 1], got ${s[k].join(",")}`);
  }
  if (!["auto", "always", "never"].includes(s.inMemory)) fail(`--in-memory must be auto, always or never, got ${s.inMemory}`);
  if (s.lrUpdateSchedule !== "cosine" && s.lrUpdateSchedule !== "fixed") {
    fail(`--lr-update-schedule must be cosine or fixed, got ${s.lrUpdateSchedule} (the reference's "step" is not implemented there either)`);
  }
  if (!Number.isInteger(s.warmup) || s.warmup < 0) fail(`--warmup must be an integer >= 0, got ${s.warmup}`);
  if (s.warmup >= s.epochs) fail(`--warmup ${s.warmup} must be shorter than --epochs ${s.epochs}`);
  if (!Number.isInteger(s.workersPerReplica) || s.workersPerReplica < 1) {
    fail(`--workers-per-replica must be a positive integer, got ${s.workersPerReplica}`);
  }
  if (s.batchSize % s.numReplicas !== 0) {
    fail(`--batch-size ${s.batchSize} is not divisible by --num-replicas ${s.numReplicas}`);
  }
  if (!Number.isInteger(s.distributedRank) || s.distributedRank < 0 || s.distributedRank >= s.numReplicas) {
    fail(`--distributed-rank ${s.distributedRank} must be in [0, --num-replicas ${s.numReplicas})`);
  }
  if (!Number.isInteger(s.distributedPort) || s.distributedPort < 1 || s.distributedPort > 65535) {
    fail(`--distributed-port must be a port number, got ${s.distributedPort}`);
  }
  if (!(s.distributedTimeout > 0)) fail(`--distributed-timeout must be > 0 seconds, got ${s.distributedTimeout}`);
  if (s.seed !== null && (!Number.isInteger(s.seed) || s.seed < 0)) fail(`--seed must be an integer >= 0, got ${s.seed}`);
  if (!Number.isInteger(s.knnMonitor) || s.knnMonitor < 0) fail(`--knn-monitor must be an integer >= 0, got ${s.knnMonitor}`);
  if (!(s.checkpointMinutes >= 0)) fail(`--checkpoint-minutes must be >= 0, got ${s.checkpointMinutes}`);
  if (!PRECISIONS.includes(s.precision)) fail(`--precision must be fp32, fp16 or bf16, got ${s.precision}`);
}

/** What this build cannot train yet; checked when training starts, not for --print-config. */
export function checkTrainable(c: Config): void {
  if (c.worldSize > 1 && c.master === null) {
    fail(
      `--num-replicas ${c.worldSize} needs --distributed-master (rank 0's host) and a rank per process: start the replicas with ` +
        `\`selfsup launch --nproc ${c.worldSize} train …\`, torchrun or srun (slurm/run.sh), or pass --num-replicas 1`,
    );
  }
}
