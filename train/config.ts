/**
 * The resolved configuration of a run as data: the {@link Config} type
 * that the command line produces and training reads, and the
 * {@link METHODS} table, the one place that knows which self-supervised
 * methods exist and what sets them apart (their defaults, their own
 * settings, their loss tag, whether they keep a momentum target).
 *
 * Adding a method: an entry here, its settings in {@link Settings} and
 * cli/flags.ts, and its native file (docs/DESIGN.md, "Adding a method").
 *
 * @module
 */

/** Where the replicas' rank and world size came from. */
export type LaunchSource = "flags" | "torchrun" | "slurm" | "slurm-array" | "single";

/** This process's place among the replicas (cli/launch.ts: flags, then torchrun's or SLURM's environment). */
export interface Launch {
  worldSize: number;
  rank: number;
  /** Index among the replicas on this node: picks the GPU (modulo the visible GPUs). */
  localRank: number;
  /** Replicas on this node (for CPU threads per replica); 1 when unknown. */
  localWorldSize: number;
  /** Rank 0's host, without a tcp:// prefix; null when nothing names it. */
  master: string | null;
  port: number;
  launchedBy: LaunchSource;
}

/** The arithmetic of the forward pass: fp32, or autocast to fp16 (with a loss scale) or bf16. */
export type Precision = "fp32" | "fp16" | "bf16";
export const PRECISIONS: Precision[] = ["fp32", "fp16", "bf16"];

/** A run's settings after defaults, method and checks. */
export interface Config extends Launch {
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
  /** Barlow Twins and VICReg: projector (VICReg's expander) widths after the backbone, `8192-8192-8192`. */
  projectorWidths: string;
  /** Barlow Twins only: λ, the weight of the cross-correlation's off-diagonal terms. */
  offDiagonalWeight: number;
  /** VICReg only: the weights λ, μ, ν of the invariance, variance and covariance terms (the authors' --sim-coeff, --std-coeff, --cov-coeff). */
  invarianceWeight: number;
  varianceWeight: number;
  covarianceWeight: number;
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
  // Derived: this process's place among the replicas (Launch), then:
  batchSizePerReplica: number;
  runName: string;
}

/** The settings a user can give (everything but the derived keys). */
export type Settings = Omit<
  Config,
  keyof Launch | "batchSizePerReplica" | "runName"
>;

/** What sets a method apart; everything else is shared. */
export interface MethodSpec {
  /** Defaults where the method differs from {@link Settings}' shared ones. */
  defaults: Partial<Settings>;
  /** Settings that belong to this method only: given with another method they are an error. */
  settings: (keyof Settings)[];
  /** The metrics' and TensorBoard's tag of the self-supervised loss. */
  lossTag: string;
  /** A momentum (target) encoder follows the online one: `--base-decay` sets its decay, `--weights target` reads it. */
  momentumTarget: boolean;
}

/**
 * The methods, in the order `--help` lists them. The first is the
 * default. SimCLR's and BYOL's defaults are the reference programs'
 * (REFERENCE.md §1).
 */
export const METHODS = {
  simclr: {
    defaults: { lr: 0.3, headLatentSize: 1024 },
    settings: ["nceSize", "nceTemperature"],
    lossTag: "nce-loss",
    momentumTarget: false,
  },
  byol: {
    defaults: { lr: 0.2, headLatentSize: 4096 },
    settings: ["projectionSize", "baseDecay", "byolLoss"],
    lossTag: "byol-loss",
    momentumTarget: true,
  },
  // Zbontar et al. 2021 and facebookresearch/barlowtwins (docs/METHODS.md).
  barlowtwins: {
    defaults: { lr: 0.2 },
    settings: ["projectorWidths", "offDiagonalWeight"],
    lossTag: "barlow-loss",
    momentumTarget: false,
  },
  // Bardes, Ponce, LeCun 2022 and facebookresearch/vicreg (docs/METHODS.md):
  // base lr 0.2 (× batch/256, LARS) and the authors' asymmetric blur and solarisation.
  vicreg: {
    defaults: { lr: 0.2, blurProb: [1.0, 0.1], solarizeProb: [0, 0.2] },
    settings: ["projectorWidths", "invarianceWeight", "varianceWeight", "covarianceWeight"],
    lossTag: "vicreg-loss",
    momentumTarget: false,
  },
} as const satisfies Record<string, MethodSpec>;

export type Method = keyof typeof METHODS;
export const METHOD_NAMES = Object.keys(METHODS) as Method[];

/** `name` is a known method. */
export function isMethod(name: unknown): name is Method {
  return typeof name === "string" && Object.hasOwn(METHODS, name);
}

/** The table entry of `method`. */
export function methodSpec(method: Method): MethodSpec {
  return METHODS[method] as MethodSpec;
}

/** The method names as a choice in a message: `simclr or byol`, `a, b or c`. */
export function methodChoices(): string {
  return METHOD_NAMES.length < 2 ? METHOD_NAMES.join("") : `${METHOD_NAMES.slice(0, -1).join(", ")} or ${METHOD_NAMES.at(-1)}`;
}

/** The methods that keep a momentum target, for messages: `byol`. */
export function targetMethods(): string {
  return METHOD_NAMES.filter((m) => methodSpec(m).momentumTarget).join(", ");
}

/** The methods whose own setting `key` is (none for a shared setting). */
export function ownersOf(key: string): Method[] {
  return METHOD_NAMES.filter((m) => (methodSpec(m).settings as string[]).includes(key));
}

/** `key` does not apply to `method`: it is only other methods' own setting. */
export function foreignTo(method: Method, key: string): boolean {
  const owners = ownersOf(key);
  return owners.length > 0 && !owners.includes(method);
}

/** A bad setting: reported as one line, never a stack trace. */
export class ConfigError extends Error {
  override name = "ConfigError";
}
