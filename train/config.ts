/**
 * The resolved configuration of a run as data: the {@link Config} type
 * that the command line produces and training reads, and the
 * {@link METHODS} table, the one place that knows which self-supervised
 * methods exist and what sets them apart (their defaults, their own
 * settings, their loss tag, whether they keep a momentum target).
 *
 * Adding a method: an entry here with its own settings (their defaults,
 * flags and checks), their types in {@link Config}, and its native file
 * (docs/DESIGN.md, "Adding a method").
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
  /** SimCLR and MoCo v3: τ of the contrastive loss (NT-Xent, InfoNCE). */
  nceTemperature: number;
  /** BYOL and MoCo v3: the output width of the projector and predictor. */
  projectionSize: number;
  /** BYOL and MoCo v3: the momentum target's decay at step 0 (cosine to 1). */
  baseDecay: number;
  /** BYOL only. */
  byolLoss: "paper" | "reference";
  /** Barlow Twins only: projector widths after the backbone, `8192-8192-8192`. */
  projectorWidths: string;
  /** Barlow Twins only: λ, the weight of the cross-correlation's off-diagonal terms. */
  offDiagonalWeight: number;
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

/** One of a method's own settings: its default, its flag and its check. */
export interface OwnSetting {
  default: string | number | boolean;
  /** commander's spelling: `--nce-size <n>`. */
  flags: string;
  /** `--help`'s line, naming the method: `SimCLR: NT-Xent temperature`. */
  help: string;
  parse?: "int" | "float";
  /** What is wrong with `v` (`must be > 0, got 0`), or null; the message gets the flag in front. */
  check?: (v: never) => string | null;
  /** It shapes the weights: a checkpoint made with another value cannot continue the run. */
  shapesModel?: boolean;
}

/** What sets a method apart; everything else is shared. */
export interface MethodSpec {
  /** Defaults where the method differs from the shared ones, or from the method that defines a setting it uses. */
  defaults: Partial<Settings>;
  /** Settings this method defines (default, flag, check) and reads. */
  own: Partial<Record<keyof Settings, OwnSetting>>;
  /** Settings of other methods that this one reads too (its default in `defaults` where it differs). */
  uses?: (keyof Settings)[];
  /** The metrics' and TensorBoard's tag of the self-supervised loss. */
  lossTag: string;
  /** A momentum (target) encoder follows the online one: `--base-decay` sets its decay, `--weights target` reads it. */
  momentumTarget: boolean;
  /**
   * The update that follows step k uses the decay schedule at step k +
   * `momentumLead` (0 when absent, as BYOL). MoCo v3's code updates its
   * momentum encoder at the start of the next step with that step's
   * momentum: 1 (docs/METHODS.md).
   */
  momentumLead?: number;
}

const positive = (v: number) => v > 0 ? null : `must be > 0, got ${v}`;
const positiveInt = (v: number) => Number.isInteger(v) && v > 0 ? null : `must be a positive integer, got ${v}`;
const nonNegative = (v: number) => v >= 0 ? null : `must be >= 0, got ${v}`;

/**
 * The methods, in the order `--help` lists them. The first is the
 * default. SimCLR's and BYOL's defaults are the reference programs'
 * (REFERENCE.md §1); the others' are their papers' (docs/METHODS.md). The
 * native side has no defaults: the whole configuration crosses the FFI.
 */
export const METHODS = {
  simclr: {
    defaults: { lr: 0.3, headLatentSize: 1024 },
    own: {
      nceSize: { default: 128, flags: "--nce-size <n>", help: "SimCLR: projection output width", parse: "int", check: positiveInt, shapesModel: true },
      nceTemperature: { default: 0.1, flags: "--nce-temperature <t>", help: "SimCLR, MoCo v3: temperature τ of the contrastive loss (NT-Xent, InfoNCE)", parse: "float", check: positive },
    },
    lossTag: "nce-loss",
    momentumTarget: false,
  },
  byol: {
    defaults: { lr: 0.2, headLatentSize: 4096 },
    own: {
      projectionSize: {
        default: 256,
        flags: "--projection-size <n>",
        help: "BYOL, MoCo v3: projector and predictor output width",
        parse: "int",
        check: positiveInt,
        shapesModel: true,
      },
      baseDecay: {
        default: 0.996,
        flags: "--base-decay <tau>",
        help: "BYOL, MoCo v3: base decay of the momentum target, cosine to 1 over the run",
        parse: "float",
        check: (v: number) => v >= 0 && v <= 1 ? null : `must be in [0, 1], got ${v}`,
      },
      byolLoss: {
        default: "paper",
        flags: "--byol-loss <kind>",
        help: "BYOL: paper (per-sample 2-2cos) or reference (whole-batch norms)",
        check: (v: string) => v === "paper" || v === "reference" ? null : `must be paper or reference, got ${v}`,
      },
    },
    lossTag: "byol-loss",
    momentumTarget: true,
  },
  // Chen, Xie, He 2021 and facebookresearch/moco-v3, the ResNet-50 100-epoch
  // recipe with BYOL's asymmetric blur and solarisation (docs/METHODS.md);
  // LARS, weight decay 1e-6 and 10 warm-up epochs are the shared defaults.
  mocov3: {
    defaults: {
      lr: 0.6,
      epochs: 100,
      headLatentSize: 4096,
      nceTemperature: 1.0,
      baseDecay: 0.99,
      blurProb: [1.0, 0.1],
      solarizeProb: [0, 0.2],
    },
    own: {},
    uses: ["projectionSize", "nceTemperature", "baseDecay"],
    lossTag: "moco-loss",
    momentumTarget: true,
    momentumLead: 1,
  },
  // Zbontar et al. 2021 and facebookresearch/barlowtwins (docs/METHODS.md).
  barlowtwins: {
    defaults: { lr: 0.2 },
    own: {
      projectorWidths: {
        default: "8192-8192-8192",
        flags: "--projector-widths <w-w-w>",
        help: "Barlow Twins: projector widths after the backbone, joined by -",
        check: (v: string) => /^[1-9]\d*(-[1-9]\d*)*$/.test(v) ? null : `must be widths joined by -, such as 8192-8192-8192, got ${v}`,
        shapesModel: true,
      },
      offDiagonalWeight: {
        default: 0.005,
        flags: "--off-diagonal-weight <lambda>",
        help: "Barlow Twins: weight λ of the cross-correlation's off-diagonal terms",
        parse: "float",
        check: nonNegative,
      },
    },
    lossTag: "barlow-loss",
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

/** The methods that keep a momentum target, for messages: `byol, mocov3`. */
export function targetMethods(): string {
  return METHOD_NAMES.filter((m) => methodSpec(m).momentumTarget).join(", ");
}

/** The settings method `m` defines or uses (not the shared ones). */
export function settingsOf(m: Method): string[] {
  const spec = methodSpec(m);
  return [...Object.keys(spec.own), ...(spec.uses ?? [])];
}

/** Every method's own settings, each once (where it is defined), in METHODS' order. */
export function ownSettings(): [key: keyof Settings, setting: OwnSetting][] {
  return METHOD_NAMES.flatMap((m) => Object.entries(methodSpec(m).own) as [keyof Settings, OwnSetting][]);
}

/** The methods whose own setting `key` is (none for a shared setting). */
export function ownersOf(key: string): Method[] {
  return METHOD_NAMES.filter((m) => settingsOf(m).includes(key));
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
